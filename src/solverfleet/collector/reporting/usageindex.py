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
    # Asked every time (microseconds on SQLite, one round trip on MySQL): a cache keyed by
    # connection could outlive the database it was about.
    if index not in tx.index_names("usage_events"):
        return "usage_events"
    return tx.dialect.index_hint("usage_events", index)
