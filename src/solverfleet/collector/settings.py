"""Collector settings (docs/ARCHITECTURE.md, "Settings"): YAML file + SOLVERFLEET_* variables."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from solverfleet.collector.store.db import UrlError, parse_url
from solverfleet.settings import SettingsError, load_settings
from solverfleet.tls import check_ca_file, check_tls_pair

MIN_BODY, MAX_BODY = 1024, 1024**3  # bounds of the body-size settings


@dataclass(frozen=True)
class CollectorSettings:
    fleet_token: str
    admin_token: str
    # The fleet token being rotated out, accepted beside fleet_token until agents move on.
    fleet_token_previous: str = ""
    # Per-host credentials: refuse the shared fleet_token and unbound service tokens on
    # /agent/v1, so every agent must use a service token bound to its own agent id.
    require_agent_credentials: bool = False
    db: str = "sqlite:///solverfleet.db"
    lease_ttl: float = 300.0  # must exceed every agent's offline_grace (60 s)
    # Peers (CIDRs) served /metrics without the admin token, when no proxy forwarded them.
    metrics_allow: tuple[str, ...] = ("127.0.0.0/8", "::1/128")
    # Low-balance webhooks (collector/notifications.py): background sender, retry schedule.
    notify_sender: bool = True  # off in in-process tests, which drive delivery step by step
    notify_poll_interval: float = 1.0  # s between looks for due deliveries
    notify_timeout: float = 5.0  # s per webhook POST
    notify_backoff_base: float = 10.0  # s before the 2nd attempt; doubles per attempt
    notify_backoff_max: float = 3600.0  # s, cap on one wait
    notify_max_attempts: int = 10
    # Automatic key refills (collector/refill.py): a background pass every this many seconds.
    refill_runner: bool = True  # off in in-process tests, which call run_once with any time
    refill_poll_interval: float = 5.0
    # Largest admin API request body, and the larger one a team config apply may send (a file
    # of 100,000 keys is about 20 MiB of JSON). Past it: 413 naming the setting.
    admin_max_body: int = 1024 * 1024
    apply_max_body: int = 64 * 1024 * 1024
    # Signs the dashboard login form's cookie (CSRF, flash messages; sessions are server-side);
    # empty: a random one per process.
    dashboard_secret: str = field(default="", repr=False)
    # Serve HTTPS (gunicorn_conf) with this PEM certificate (chain) and unencrypted PEM key;
    # both or neither. Empty: plain HTTP, for a collector reached only over loopback.
    tls_cert_file: str = ""
    tls_key_file: str = ""

    def __post_init__(self) -> None:
        # Refuse to start wide open: an empty token would let anyone in.
        if not self.fleet_token:
            raise SettingsError("fleet_token must not be empty (SOLVERFLEET_FLEET_TOKEN)")
        previous = self.fleet_token_previous
        if previous and previous in (self.fleet_token, self.admin_token):
            raise SettingsError("fleet_token_previous must differ from fleet_token and admin_token")
        if not self.admin_token:
            raise SettingsError("admin_token must not be empty (SOLVERFLEET_ADMIN_TOKEN)")
        if not self.lease_ttl > 0:
            raise SettingsError("lease_ttl must be a positive number of seconds")
        for cidr in self.metrics_allow:
            try:
                ipaddress.ip_network(cidr, strict=False)
            except ValueError:
                raise SettingsError(f"metrics_allow: not a CIDR: {cidr!r}") from None
        for name in (
            "notify_poll_interval",
            "notify_timeout",
            "notify_backoff_base",
            "refill_poll_interval",
        ):
            if not getattr(self, name) > 0:
                raise SettingsError(f"{name} must be a positive number of seconds")
        for name in ("admin_max_body", "apply_max_body"):
            if not MIN_BODY <= getattr(self, name) <= MAX_BODY:
                raise SettingsError(f"{name} must be from {MIN_BODY} to {MAX_BODY} bytes")
        if not self.notify_backoff_max >= self.notify_backoff_base:
            raise SettingsError("notify_backoff_max must be at least notify_backoff_base")
        if not 1 <= self.notify_max_attempts <= 100:
            raise SettingsError("notify_max_attempts must be a whole number from 1 to 100")
        if self.dashboard_secret and len(self.dashboard_secret) < 32:
            raise SettingsError("dashboard_secret must be at least 32 characters (or empty)")
        check_tls_pair(self.tls_cert_file, self.tls_key_file)
        self._check_db_tls()

    def _check_db_tls(self) -> None:
        """A database reached over the network is reached over verified TLS, nothing less."""
        try:
            url = parse_url(self.db)
        except UrlError as exc:
            raise SettingsError(f"db: {exc}") from None
        if url.beyond_loopback and not url.ssl_ca:
            raise SettingsError(
                f"db: {url.host} is beyond loopback: add ?ssl_ca=/path/to/ca.pem to the URL "
                "(TLS, verified against that CA and the host name)"
            )
        if url.ssl_ca:
            check_ca_file("db ssl_ca", url.ssl_ca)

    @classmethod
    def load(
        cls, *, env: Mapping[str, str] | None = None, overrides: Mapping[str, Any] | None = None
    ) -> CollectorSettings:
        try:
            return load_settings(cls, env=env, overrides=overrides)
        except TypeError as exc:  # a required field is missing
            raise SettingsError(str(exc)) from None
