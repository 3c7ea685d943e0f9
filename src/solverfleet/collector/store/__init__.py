"""The collector's storage: connections and transactions (db), what differs between SQLite and
MySQL (dialect), tables (schema), migrations."""

from solverfleet.collector.store.db import (
    Database,
    StoreError,
    StoreFull,
    StoreUnavailable,
    Tx,
    UrlError,
    parse_url,
)
from solverfleet.collector.store.dialect import chunks, marks
from solverfleet.collector.store.migrations import MIGRATIONS, current_version, migrate

__all__ = [
    "MIGRATIONS",
    "Database",
    "StoreError",
    "StoreFull",
    "StoreUnavailable",
    "Tx",
    "UrlError",
    "chunks",
    "current_version",
    "marks",
    "migrate",
    "parse_url",
]
