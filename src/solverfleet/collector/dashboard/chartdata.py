"""What the dashboard's charts show, read from the store: solves and spend per hour (the last
48) or per UTC day (the last 30) for the fleet or one account, user, key or project, and a
key's balance at the end of each day. The per-type success rate and p50/p95 latency come from
``reports.stats_report`` (exact percentiles from a per-duration histogram) over the usage
page's range.

Sums and bucketing are done in SQL (``ts_ms - ts_ms % width``: integer arithmetic, the same
on SQLite and MariaDB), on the time-leading covering report index; every query is bounded by
its grain's range, so it returns at most 48 or 30 rows whatever the log holds. Money stays
integer micros here; the page formats it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from solverfleet.collector.reporting.timerange import DAY_MS, HOUR_MS, iso
from solverfleet.collector.reporting.usageindex import USAGE_REPORT_INDEX, source
from solverfleet.collector.store import Database, Tx


@dataclass(frozen=True)
class Grain:
    name: str
    width_ms: int
    buckets: int

    def window(self, now_ms: int) -> tuple[int, int]:
        """[since, until): the bucket holding ``now_ms`` and the ``buckets - 1`` before it."""
        until = now_ms - now_ms % self.width_ms + self.width_ms
        return until - self.buckets * self.width_ms, until

    def label(self, start_ms: int) -> str:
        text = iso(start_ms)  # 2026-12-06T17:00:00Z
        return text[:10] if self.width_ms == DAY_MS else text[:13].replace("T", " ") + ":00"


HOURLY = Grain("hourly", HOUR_MS, 48)
DAILY = Grain("daily", DAY_MS, 30)
GRAINS = {g.name: g for g in (HOURLY, DAILY)}
SCOPES = ("account", "user", "key", "project")


@dataclass(frozen=True)
class Bucket:
    start_ms: int
    label: str
    solves: int
    cost_micros: int


def _scope(scope: dict[str, str]) -> tuple[list[str], list[Any]]:
    unknown = set(scope) - set(SCOPES)
    if unknown:
        raise ValueError(f"unknown chart scope: {sorted(unknown)}")
    clauses, params = [], []
    if "account" in scope:
        # By the account's keys, not usage_events.account: key_id is in the covering index.
        clauses.append("key_id IN (SELECT id FROM api_keys WHERE account = ?)")
        params.append(scope["account"])
    for name, column in (("user", "user_id"), ("key", "key_id"), ("project", "project")):
        if name in scope:
            clauses.append(f"{column} = ?")
            params.append(scope[name])
    return clauses, params


def activity(db: Database, grain: Grain, now_ms: int, **scope: str) -> list[Bucket]:
    """Solves and spend per bucket, oldest first, every bucket of the window (zeros too)."""
    since, until = grain.window(now_ms)
    clauses, params = _scope(scope)
    where = " AND ".join(["ts_ms >= ?", "ts_ms < ?", *clauses])
    width = int(grain.width_ms)  # a constant of this module, never from a request

    def read(tx: Tx) -> list[tuple]:
        return tx.all(
            f"SELECT ts_ms - ts_ms % {width} AS bucket,"
            " SUM(CASE WHEN status = 'success' THEN 1 ELSE 0 END), SUM(cost_micros)"
            f" FROM {source(tx, USAGE_REPORT_INDEX)} WHERE {where} GROUP BY bucket",
            (since, until, *params),
        )

    found = {int(b): (int(s or 0), int(c or 0)) for b, s, c in db.read(read)}
    out = []
    for start in range(since, until, grain.width_ms):
        solves, cost = found.get(start, (0, 0))
        out.append(Bucket(start, grain.label(start), solves, cost))
    return out


def balance_history(db: Database, key_id: str, grain: Grain, now_ms: int) -> list[Bucket]:
    """The key's balance at the end of each bucket (the last one: now), oldest first, in
    ``cost_micros``, from the bucket of its opening ledger row on; empty when the key does
    not exist.

    Walked back from the balance now: before a bucket, the balance was higher by what was
    spent in it and lower by what the ledger added in it (top-ups, refills, corrections). A
    solve is debited when the collector stores it, charted at its solve time: an event an
    agent spooled across a bucket's end moves by one bucket, the totals stay exact.
    """
    since, until = grain.window(now_ms)
    width = int(grain.width_ms)

    def read(tx: Tx) -> tuple[tuple | None, tuple | None, list[tuple], list[tuple]]:
        balance = tx.one("SELECT balance_micros FROM api_keys WHERE id = ?", (key_id,))
        # The key's first ledger row is its opening balance: no point before that day.
        opened = tx.one(
            "SELECT created_ms FROM transactions WHERE key_id = ? ORDER BY id LIMIT 1", (key_id,)
        )
        spent = tx.all(
            f"SELECT ts_ms - ts_ms % {width} AS bucket, SUM(cost_micros)"
            f" FROM {source(tx, USAGE_REPORT_INDEX)}"
            " WHERE ts_ms >= ? AND key_id = ? AND status = 'success' GROUP BY bucket",
            (since, key_id),
        )
        # The key's ledger rows (transactions_key): top-ups and refills, a few a month.
        added = tx.all(
            f"SELECT created_ms - created_ms % {width} AS bucket, SUM(amount_micros)"
            " FROM transactions WHERE key_id = ? AND created_ms >= ? GROUP BY bucket",
            (key_id, since),
        )
        return balance, opened, spent, added

    balance, opened, spent, added = db.read(read)
    if balance is None:
        return []
    # Later than ``until`` (a clock ahead of ours) counts into the last bucket.
    change: dict[int, int] = {}
    last = until - width
    for bucket, cost in spent:
        start = min(int(bucket), last)
        change[start] = change.get(start, 0) - int(cost or 0)
    for bucket, amount in added:
        start = min(int(bucket), last)
        change[start] = change.get(start, 0) + int(amount or 0)
    level = int(balance[0])
    out = []
    for start in range(last, since - 1, -width):
        out.append(Bucket(start, grain.label(start), 0, level))
        level -= change.get(start, 0)
    out.reverse()
    if opened is not None and opened[0] is not None:
        first = int(opened[0]) - int(opened[0]) % width
        out = [b for b in out if b.start_ms >= first] or out[-1:]
    return out
