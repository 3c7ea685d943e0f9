"""The solve log: every call that reached a solver worker, one ``usage_events`` row each.

Filtered by user, key, project, environment, type, status and time; newest first by the time
of the call (``ts_ms``, ties broken by row id); paged with an opaque cursor carrying the
(ts_ms, id) of the last row shown. A page asks for rows strictly after that position, so rows
stored while someone pages never repeat or hide rows of the pages to come: a new call sorts
before the cursor and shows on a fresh first page; an older call shipped late (an agent's
spool after an outage) lands in its place in time and shows once, on a later page.

Which calls are in it is the agent's rule (agent/usage.py): every call admitted by the
pre-check and handed to the worker, success or failure (worker error, timeout), plus the
2captcha surface's ``report_good``/``report_bad`` verdicts. Calls the pre-check refused
(401/402/403/429, bad bodies) reached no worker, cost nothing and are not logged: logging them
would let any client flood the spool and the collector with unauthenticated junk.

A page is two reads: the ids, from an index that holds every filter column (no row is fetched
to be filtered out), then those rows by primary key.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field
from typing import Any

from solverfleet.collector.ingest import FIELDS, STATUSES
from solverfleet.collector.problems import Invalid
from solverfleet.collector.reporting.timerange import TimeRange, iso
from solverfleet.collector.reporting.usageindex import (
    USAGE_KEY_INDEX,
    USAGE_REPORT_INDEX,
    USAGE_USER_INDEX,
    source,
)
from solverfleet.collector.store import Database, Tx, marks
from solverfleet.money import format_micros

DEFAULT_LIMIT = 100
MAX_LIMIT = 1_000
_CURSOR_PREFIX = "v1:"
# Filter name -> column.
FILTERS = {
    "user": "user_id",
    "key": "key_id",
    "project": "project",
    "environment": "environment",
    "type": "captcha_type",
    "status": "status",
}


@dataclass(frozen=True)
class LogFilter:
    user: str | None = None
    key: str | None = None
    project: str | None = None
    environment: str | None = None
    type: str | None = None
    status: str | None = None
    range: TimeRange = field(default_factory=TimeRange)

    def __post_init__(self) -> None:
        if self.status is not None and self.status not in STATUSES:
            raise Invalid(
                f"status: unknown status {self.status!r} (one of {', '.join(STATUSES)})",
                "invalid_status",
            )


def encode_cursor(ts_ms: int, row_id: int) -> str:
    raw = f"{_CURSOR_PREFIX}{ts_ms}:{row_id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[int, int]:
    """The (ts_ms, id) a cursor carries; 400 ``invalid_cursor`` for anything else."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        ts_text, row_text = raw.removeprefix(_CURSOR_PREFIX).split(":")
        ts_ms, row_id = int(ts_text), int(row_text)
    except (binascii.Error, ValueError):
        ts_ms = row_id = -1
    # Canonical form only: the decoder skips stray characters, the comparison does not.
    if not 0 <= ts_ms < 2**63 or not 0 < row_id < 2**63 or encode_cursor(ts_ms, row_id) != cursor:
        raise Invalid("cursor: not a cursor from a page of this log", "invalid_cursor")
    return ts_ms, row_id


def check_limit(limit: int) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
        raise Invalid(f"limit must be a whole number from 1 to {MAX_LIMIT}", "invalid_limit")
    return limit


def solve_log(
    db: Database,
    filters: LogFilter | None = None,
    *,
    limit: int = DEFAULT_LIMIT,
    cursor: str | None = None,
    user_id: str | None = None,
) -> dict[str, Any]:
    """One page: ``{"events": [...], "count": n, "next_cursor": str | None}``.

    ``user_id`` scopes the log to one user's calls (a ``user`` token's view) on top of any
    filter; ``next_cursor`` is ``None`` on the last page.
    """
    filters = filters or LogFilter()
    check_limit(limit)
    clauses, bounds = filters.range.where()
    params: list[Any] = list(bounds)
    for name, column in FILTERS.items():
        value = getattr(filters, name)
        if value is not None:
            clauses.append(f"{column} = ?")
            params.append(value)
    if user_id is not None:
        clauses.append("user_id = ?")
        params.append(user_id)
    if cursor is not None:
        ts_ms, row_id = decode_cursor(cursor)
        clauses.append("ts_ms <= ? AND (ts_ms < ? OR id < ?)")
        params += [ts_ms, ts_ms, row_id]
    where = f"WHERE {' AND '.join(clauses)} " if clauses else ""
    # One key's or one user's calls: their own index, in time order. Otherwise the report
    # index, which holds every filter column.
    if filters.key is not None:
        index = USAGE_KEY_INDEX
    elif filters.user is not None or user_id is not None:
        index = USAGE_USER_INDEX
    else:
        index = USAGE_REPORT_INDEX
    columns = ", ".join(("id", *FIELDS))

    def read(tx: Tx) -> list[dict[str, Any]]:
        ids = tx.all(
            f"SELECT id FROM {source(tx, index)} {where}ORDER BY ts_ms DESC, id DESC LIMIT ?",
            (*params, limit + 1),  # one more than shown: tells whether a next page exists
        )
        if not ids:
            return []
        rows = tx.dicts(
            f"SELECT {columns} FROM usage_events WHERE id IN ({marks(len(ids))})",
            [r[0] for r in ids],
        )
        return sorted(rows, key=lambda r: (int(r["ts_ms"]), int(r["id"])), reverse=True)

    rows = db.read(read)
    more = len(rows) > limit
    events = [_event(row) for row in rows[:limit]]
    last = events[-1] if events else None
    return {
        "events": events,
        "count": len(events),
        "next_cursor": encode_cursor(last["ts_ms"], last["id"]) if more and last else None,
    }


def _event(row: dict[str, Any]) -> dict[str, Any]:
    ts_ms = int(row["ts_ms"])
    duration = row["duration_ms"]
    return {
        "id": int(row["id"]),
        "ts": iso(ts_ms),
        "ts_ms": ts_ms,
        "event_id": row["event_id"],
        "request_id": row["request_id"],
        "agent_id": row["agent_id"],
        "key_id": row["key_id"],
        "user_id": row["user_id"],
        "user_email": row["user_email"],
        "account": row["account"],
        "project": row["project"],
        "environment": row["environment"],
        "type": row["captcha_type"],
        "url": row["url"],
        "status": row["status"],
        "error": row["error"],
        "message": row["message"],
        "source_ip": row["source_ip"],
        "duration_ms": None if duration is None else int(duration),
        "cost": format_micros(int(row["cost_micros"])),
        "soft_id": None if row["soft_id"] is None else int(row["soft_id"]),
    }
