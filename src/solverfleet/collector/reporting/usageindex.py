"""Which index a solve-log or report query reads, named in the SQL instead of left to chance.

Both planners choose badly here without help. SQLite keeps no statistics on time ranges and
prefers any index that yields the GROUP BY order, even one that makes it fetch every row;
MariaDB picks the (user_id, ts_ms) index for an all-time per-user sum and then reads a million
rows one by one. Measured at a million rows (docs/BENCHMARKS.md), those plans are ten to a
thousand times slower than reading the covering index the query was written for. So the
query names its index: ``INDEXED BY`` on SQLite, ``FORCE INDEX`` on MySQL/MariaDB.

A database without the index (an operator dropped it, or a benchmark's baseline) gets the
plain table name, so the query still runs, only slower.
"""

from __future__ import annotations

from solverfleet.collector.store import Tx
from solverfleet.collector.store.schema import (
    USAGE_KEY_INDEX,
    USAGE_REPORT_INDEX,
    USAGE_USER_INDEX,
)

__all__ = ["USAGE_KEY_INDEX", "USAGE_REPORT_INDEX", "USAGE_USER_INDEX", "source"]


def source(tx: Tx, index: str) -> str:
    """``usage_events`` with a hint to read ``index``, when that index exists."""
    if not _exists(tx, index):
        return "usage_events"
    if tx.dialect.name == "mysql":
        return f"usage_events FORCE INDEX ({index})"
    return f"usage_events INDEXED BY {index}"


def _exists(tx: Tx, index: str) -> bool:
    # Asked every time (microseconds on SQLite, one round trip on MySQL): a cache keyed by
    # connection could outlive the database it was about.
    if tx.dialect.name == "mysql":
        return tx.one("SHOW INDEX FROM usage_events WHERE Key_name = ?", (index,)) is not None
    query = "SELECT 1 FROM sqlite_master WHERE type = 'index' AND name = ?"
    return tx.one(query, (index,)) is not None
