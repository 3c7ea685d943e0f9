"""The collector's storage: connections and dialects (db), tables (schema), migrations."""

from solverfleet.collector.store.db import (
    Database,
    StoreError,
    StoreUnavailable,
    Tx,
    UrlError,
    parse_url,
)
from solverfleet.collector.store.migrations import MIGRATIONS, current_version, migrate

__all__ = [
    "MIGRATIONS",
    "Database",
    "StoreError",
    "StoreUnavailable",
    "Tx",
    "UrlError",
    "current_version",
    "migrate",
    "parse_url",
]
