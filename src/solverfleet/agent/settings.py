"""Agent settings: the fields of ARCHITECTURE.md's settings table plus a few tuning knobs.

Loaded with ``solverfleet.settings.load_settings(AgentSettings)`` (YAML file named by
``SOLVERFLEET_CONFIG``, then ``SOLVERFLEET_<FIELD>`` variables). This module stays import-light:
gunicorn's master imports it through ``gunicorn_conf`` before the worker patches with gevent.
"""

from __future__ import annotations

import ipaddress
import socket
import zlib
from dataclasses import dataclass, field

from solverfleet.money import MoneyError, to_micros
from solverfleet.settings import SettingsError, load_settings
from solverfleet.tls import check_ca_file, check_readable_file, check_tls_pair

MAX_BODY_BYTES = 1024 * 1024


@dataclass(frozen=True)
class AgentSettings:
    collector_url: str
    fleet_token: str = field(default="", repr=False)  # a secret: never in a repr, a log line
    # ... or a file holding it (a host's own credential, 0600): read at start and again when
    # it changes, so a rotated credential is used from the next sync on.
    fleet_token_file: str = ""
    worker_url: str = "http://127.0.0.1:8500"
    agent_id: str = field(default_factory=socket.gethostname)
    state_dir: str = "/var/lib/solverfleet/agent"
    trusted_proxies: tuple[str, ...] = ()
    worker_timeout: float = 30.0
    sync_interval: float = 0.25
    offline_grace: float = 60.0  # must stay below the collector's lease_ttl (300 s)
    offline_allowance: str = "0"
    drain_grace: float = 30.0
    # Beyond the table: tuning knobs with safe defaults.
    lease_wait: float = 1.0  # s a request waits for its first lease
    bind: str = "0.0.0.0:8600"  # gunicorn_conf only; `gunicorn -b` overrides it
    collector_timeout: float = 5.0  # s per collector HTTP call
    ship_timeout: float = 10.0  # s SIGTERM spends flushing the spool
    lease_calls: int = 20  # a balance lease covers at least this many calls
    lease_seconds: float = 5.0  # ... or this many seconds of observed spend
    lease_idle: float = 60.0  # s without demand before a lease is given back
    # The 2captcha-style surface (in.php/res.php, see docs/PROTOCOLS.md).
    node_id: int = 0  # 1..999, leading digits of task ids (LB routes res.php by it); 0 = derive
    compat_result_ttl: float = 600.0  # s a finished task's result stays fetchable
    compat_max_tasks: int = 10_000  # pending + finished tasks kept in memory; over it: no slot
    # res.php anywhere (docs/PROTOCOLS.md): the address other agents fetch this agent's tasks
    # from (https://host:port; verified with collector_ca_file); empty: not registered.
    advertise_url: str = ""
    peer_timeout: float = 3.0  # s per request to another agent
    # Pingbacks (agent/compat/pingback.py): addresses outside the public internet are refused
    # unless in one of these CIDRs; each POST has this timeout, is retried this many times,
    # waiting pingback_backoff s, doubling (at most 60 s) between attempts.
    pingback_allow_cidrs: tuple[str, ...] = ()
    pingback_timeout: float = 5.0
    pingback_retries: int = 4
    pingback_backoff: float = 2.0
    # Brute force (bans.py): this many unknown keys within ban_window s from one address (IPv6:
    # one /64) ban it for ban_duration s; at most ban_max_ips addresses tracked. 0 = off.
    ban_threshold: int = 5
    ban_window: float = 60.0
    ban_duration: float = 300.0
    ban_max_ips: int = 100_000
    # Peers (CIDRs) served /metrics, and only when no proxy forwarded the request.
    metrics_allow: tuple[str, ...] = ("127.0.0.0/8", "::1/128")
    # TLS (docs/ARCHITECTURE.md, "Settings"). Serve HTTPS with this PEM certificate (chain) and
    # unencrypted PEM key; both or neither. Empty: plain HTTP (loopback-only setups, tests).
    tls_cert_file: str = ""
    tls_key_file: str = ""
    # PEM CA bundle that verifies an https collector_url; empty: the system trust store.
    collector_ca_file: str = ""

    def __post_init__(self) -> None:
        for name in ("collector_url", "worker_url"):
            url = getattr(self, name)
            if not url.startswith(("http://", "https://")):
                raise SettingsError(f"{name}: must be an http(s) URL, got {url!r}")
            object.__setattr__(self, name, url.rstrip("/"))
        if self.fleet_token and self.fleet_token_file:
            raise SettingsError("fleet_token, fleet_token_file: give one of them, not both")
        if self.fleet_token_file:
            check_readable_file("fleet_token_file", self.fleet_token_file)
            with open(self.fleet_token_file) as fh:
                object.__setattr__(self, "fleet_token", fh.read().strip())
            if not self.fleet_token:
                raise SettingsError(f"fleet_token_file: {self.fleet_token_file} is empty")
        if not self.fleet_token:
            raise SettingsError("fleet_token: must not be empty (or give fleet_token_file)")
        if not self.agent_id:
            raise SettingsError("agent_id: must not be empty")
        for name in ("worker_timeout", "sync_interval", "collector_timeout", "lease_seconds"):
            if getattr(self, name) <= 0:
                raise SettingsError(f"{name}: must be > 0")
        for name in ("offline_grace", "drain_grace", "lease_wait", "ship_timeout", "lease_idle"):
            if getattr(self, name) < 0:
                raise SettingsError(f"{name}: must be >= 0")
        if self.node_id == 0:  # stable per agent_id, so a restart keeps its task-id prefix
            object.__setattr__(self, "node_id", 1 + zlib.crc32(self.agent_id.encode()) % 999)
        if not 1 <= self.node_id <= 999:
            raise SettingsError("node_id: must be 1..999 (or 0 to derive it from agent_id)")
        url = self.advertise_url.rstrip("/")
        object.__setattr__(self, "advertise_url", url)
        scheme, _, rest = url.partition("://")
        if url and (scheme not in ("http", "https") or not rest or any(c in rest for c in "/?#@ ")):
            raise SettingsError(f"advertise_url: must be http(s)://host[:port], got {url!r}")
        if scheme == "http" and self.tls_cert_file:  # this agent serves only https
            raise SettingsError("advertise_url: must be https:// when tls_cert_file is set")
        if self.peer_timeout <= 0:
            raise SettingsError("peer_timeout: must be > 0")
        if self.compat_result_ttl <= 0:
            raise SettingsError("compat_result_ttl: must be > 0")
        if self.compat_max_tasks < 1:
            raise SettingsError("compat_max_tasks: must be >= 1")
        if self.pingback_timeout <= 0 or self.pingback_backoff <= 0:
            raise SettingsError("pingback_timeout, pingback_backoff: must be > 0")
        if not 0 <= self.pingback_retries <= 10:
            raise SettingsError("pingback_retries: must be 0..10")
        if self.ban_threshold < 0:
            raise SettingsError("ban_threshold: must be >= 0 (0 turns bans off)")
        for name in ("ban_window", "ban_duration"):
            if getattr(self, name) <= 0:
                raise SettingsError(f"{name}: must be > 0")
        if self.ban_max_ips < 1:
            raise SettingsError("ban_max_ips: must be >= 1")
        if self.lease_calls < 1:
            raise SettingsError("lease_calls: must be >= 1")
        try:
            to_micros(self.offline_allowance)
        except MoneyError as exc:
            raise SettingsError(f"offline_allowance: {exc}") from None
        for name in ("trusted_proxies", "metrics_allow", "pingback_allow_cidrs"):
            for cidr in getattr(self, name):
                try:
                    ipaddress.ip_network(cidr, strict=False)
                except ValueError:
                    raise SettingsError(f"{name}: not a CIDR: {cidr!r}") from None
        check_tls_pair(self.tls_cert_file, self.tls_key_file)
        if self.collector_ca_file:
            check_ca_file("collector_ca_file", self.collector_ca_file)

    @property
    def offline_allowance_micros(self) -> int:
        return to_micros(self.offline_allowance)


def load(**overrides: object) -> AgentSettings:
    return load_settings(AgentSettings, overrides=overrides or None)
