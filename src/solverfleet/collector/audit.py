"""The audit log: who changed what, when, from which value to which (docs/ARCHITECTURE.md,
"Audit log").

Every admin change calls ``record(tx, ...)`` inside the transaction that makes the change, so
the change and its row commit or roll back together (a dry run or a refused request leaves no
row). ``before``/``after`` hold the changed fields only. They are redacted here, whatever the
caller passes: a field named like a secret, hash, token or password is dropped, and a value
that looks like a key secret, a bearer token or a sha256 digest is replaced, so no credential
ever reaches the table, the API or the dashboard. Each side is bounded (``MAX_JSON``).

Reads (``GET /admin/v1/audit``, ``solverfleet audit``, the dashboard's page) are newest first
by row id, filtered by actor, action, target, account and time, paged by a cursor that is the
id of the last row shown.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from typing import Any

from solverfleet.collector.problems import Invalid
from solverfleet.collector.reporting.timerange import TimeRange, iso
from solverfleet.collector.store import Database, Tx
from solverfleet.keyhash import SECRET_PREFIX
from solverfleet.textcheck import INT64_MAX

DEFAULT_LIMIT = 100
MAX_LIMIT = 1_000
MAX_JSON = 8_192  # characters per side of one row; larger values keep only their field names
MAX_TRAIL = 500  # per-object rows one team config apply writes (the summary row counts all)
MAX_ID = 128
REDACTED = "[redacted]"
# Field names dropped wherever they appear (nested too): the defensive net under every caller.
_SENSITIVE_NAME = re.compile(r"secret|hash|token|passw|private|api_?key", re.IGNORECASE)
# Values that are credentials whatever their field: key secrets, bearer tokens, sha256 digests.
_TOKEN_PREFIX = "sft_"  # collector.tokens.TOKEN_PREFIX (not imported: tokens imports us)
_DIGEST = re.compile(r"[0-9a-fA-F]{64}").fullmatch
FILTERS = ("actor", "action", "target_type", "target_id", "account")


def redact(value: Any) -> Any:
    """``value`` with every secret-like field dropped and secret-like string replaced."""
    if isinstance(value, dict):
        return {str(k): redact(v) for k, v in value.items() if not _SENSITIVE_NAME.search(str(k))}
    if isinstance(value, list | tuple):
        return [redact(v) for v in value]
    if isinstance(value, str) and (
        value.startswith((SECRET_PREFIX, _TOKEN_PREFIX)) or _DIGEST(value)
    ):
        return REDACTED
    return value


def _encode(value: dict[str, Any] | None) -> str | None:
    if value is None:
        return None
    clean = redact(value)
    text = json.dumps(clean, sort_keys=True, separators=(",", ":"), default=str)
    if len(text) <= MAX_JSON:
        return text
    # Too big to keep whole (a huge allowlist): say which fields, not what they held.
    names = sorted(clean)[:100] if isinstance(clean, dict) else []
    return json.dumps({"truncated": True, "fields": names}, separators=(",", ":"))


def changes(before: dict[str, Any], after: dict[str, Any]) -> tuple[dict, dict]:
    """The fields whose values differ, as (before, after) with only those fields."""
    names = [n for n in after if before.get(n) != after[n]]
    names += [n for n in before if n not in after]
    return {n: before.get(n) for n in names}, {n: after.get(n) for n in names}


def record(
    tx: Tx,
    actor: str | None,
    action: str,
    target_type: str,
    target_id: Any = None,
    account: str | None = None,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
    *,
    now_ms: int | None = None,
) -> int:
    """Write one audit row in ``tx`` (the change's own transaction); returns its id.

    ``actor``: ``Principal.actor`` ("bootstrap" or "token:<id>"; None is recorded as
    "system"), never a token. ``action``: ``<target_type>.<verb>`` (``key.topup``).
    ``before``/``after``: the changed fields (None: the object did not / no longer exists).
    """
    stamp = int(time.time() * 1000) if now_ms is None else int(now_ms)
    return tx.insert(
        "INSERT INTO audit_log (ts_ms, actor, action, target_type, target_id, account,"
        " before_json, after_json) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (
            stamp,
            redact(actor or "system")[:160],
            action[:64],
            target_type[:32],
            None if target_id is None else redact(str(target_id))[:MAX_ID],
            None if account is None else str(account)[:MAX_ID],
            _encode(before),
            _encode(after),
        ),
    )


@dataclass
class Trail:
    """The rows of one change to many objects (a team config apply): at most ``limit`` are
    written one per object; ``write`` adds a summary row that counts them all."""

    limit: int = MAX_TRAIL
    rows: list[tuple] = field(default_factory=list)
    total: int = 0

    def add(
        self,
        action: str,
        target_type: str,
        target_id: Any,
        account: str | None,
        before: dict | None,
        after: dict | None,
    ) -> None:
        self.total += 1
        if len(self.rows) < self.limit:
            self.rows.append((action, target_type, target_id, account, before, after))

    def write(
        self, tx: Tx, actor: str | None, summary: tuple[str, str, Any, str | None, dict], now_ms
    ) -> None:
        for row in self.rows:
            record(tx, actor, *row, now_ms=now_ms)
        action, target_type, target_id, account, after = summary
        after = {**after, "objects": self.total, "objects_recorded": len(self.rows)}
        record(tx, actor, action, target_type, target_id, account, None, after, now_ms=now_ms)


# --- reads ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AuditFilter:
    actor: str | None = None
    action: str | None = None
    target_type: str | None = None
    target_id: str | None = None
    account: str | None = None
    range: TimeRange = field(default_factory=TimeRange)

    def __post_init__(self) -> None:
        for name in FILTERS:
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or len(value) > MAX_ID):
                raise Invalid(f"{name} must be at most {MAX_ID} characters", "invalid")


def check_limit(raw: Any) -> int:
    text = str(raw)
    digits = text.isascii() and text.isdigit() and len(text) <= 9  # int() of 5000 digits fails
    if not digits or not 1 <= int(text) <= MAX_LIMIT:
        raise Invalid(f"limit must be a whole number from 1 to {MAX_LIMIT}", "invalid_limit")
    return int(text)


def decode_cursor(cursor: str) -> int:
    """The row id a cursor carries (rows older than it come next); 400 for anything else."""
    digits = cursor.isascii() and cursor.isdigit() and len(cursor) <= 19
    if not digits or not 1 <= int(cursor) <= INT64_MAX:
        raise Invalid("cursor: not a cursor from a page of the audit log", "invalid_cursor")
    return int(cursor)


def _decode(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def entry(row: dict[str, Any]) -> dict[str, Any]:
    ts_ms = int(row["ts_ms"])
    return {
        "id": int(row["id"]),
        "ts": iso(ts_ms),
        "ts_ms": ts_ms,
        "actor": row["actor"],
        "action": row["action"],
        "target_type": row["target_type"],
        "target_id": row["target_id"],
        "account": row["account"],
        # Redacted again on the way out: rows written by older code are no exception.
        "before": redact(_decode(row["before_json"])),
        "after": redact(_decode(row["after_json"])),
    }


def list_entries(
    db: Database,
    filters: AuditFilter | None = None,
    *,
    limit: int = DEFAULT_LIMIT,
    cursor: str | None = None,
) -> dict[str, Any]:
    """One page, newest first: ``{"entries": [...], "count": n, "next_cursor": str | None}``."""
    filters = filters or AuditFilter()
    limit = check_limit(limit)
    clauses, bounds = filters.range.where()
    params: list[Any] = list(bounds)
    for name in FILTERS:
        value = getattr(filters, name)
        if value is not None:
            clauses.append(f"{name} = ?")
            params.append(value)
    if cursor is not None:
        clauses.append("id < ?")
        params.append(decode_cursor(cursor))
    where = f"WHERE {' AND '.join(clauses)} " if clauses else ""
    rows = db.read(
        lambda tx: tx.dicts(
            "SELECT id, ts_ms, actor, action, target_type, target_id, account, before_json,"
            f" after_json FROM audit_log {where}ORDER BY id DESC LIMIT ?",
            (*params, limit + 1),  # one more than shown: tells whether a next page exists
        )
    )
    more = len(rows) > limit
    entries = [entry(r) for r in rows[:limit]]
    return {
        "entries": entries,
        "count": len(entries),
        "next_cursor": str(entries[-1]["id"]) if more and entries else None,
    }
