"""Collector settings (docs/ARCHITECTURE.md, "Settings"): YAML file + SOLVERFLEET_* variables."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from solverfleet.settings import SettingsError, load_settings


@dataclass(frozen=True)
class CollectorSettings:
    fleet_token: str
    admin_token: str
    db: str = "sqlite:///solverfleet.db"
    lease_ttl: float = 300.0  # must exceed every agent's offline_grace (60 s)

    def __post_init__(self) -> None:
        # Refuse to start wide open: an empty token would let anyone in.
        if not self.fleet_token:
            raise SettingsError("fleet_token must not be empty (SOLVERFLEET_FLEET_TOKEN)")
        if not self.admin_token:
            raise SettingsError("admin_token must not be empty (SOLVERFLEET_ADMIN_TOKEN)")
        if not self.lease_ttl > 0:
            raise SettingsError("lease_ttl must be a positive number of seconds")

    @classmethod
    def load(
        cls, *, env: Mapping[str, str] | None = None, overrides: Mapping[str, Any] | None = None
    ) -> CollectorSettings:
        try:
            return load_settings(cls, env=env, overrides=overrides)
        except TypeError as exc:  # a required field is missing
            raise SettingsError(str(exc)) from None
