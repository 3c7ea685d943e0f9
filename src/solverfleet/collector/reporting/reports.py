"""Read-only views for operators, the dashboard and tests: plain functions, database in, dicts out.

- ``usage``, ``summary``, ``agents``: the raw usage tail, exactly-once totals, the fleet.
- ``team_report``, ``projects_report``, ``keys_report``, ``stats_report``: spend and quality over
  a ``TimeRange`` (``None``: all time; the admin API defaults to today). The solve log itself is
  in ``solvelog``. Each reads the time-leading covering index (``usageindex``): a range costs
  what is in it; all time is one pass over the index.

Every report takes an optional ``user_id`` that scopes it to one user's data (a ``user``
token's view). "Solves" are successful calls (the billed ones); ``failed`` are calls the worker
failed; the 2captcha surface's report_good/report_bad verdicts are in the log but in no count.
Money leaves as exact decimal strings (``format_micros``); sums are integer micros in SQL.
"""

from __future__ import annotations

from collections.abc import Iterable
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

from solverfleet.collector import voiding
from solverfleet.collector.ingest import FIELDS
from solverfleet.collector.reporting.timerange import DAY_MS, HOUR_MS, TimeRange, day_start, iso
from solverfleet.collector.reporting.usageindex import USAGE_REPORT_INDEX, source
from solverfleet.collector.store import Database, Tx
from solverfleet.money import format_micros

MAX_LIMIT = 1_000


def usage(
    db: Database, *, key_id: str | None, limit: int, user_id: str | None = None
) -> list[dict]:
    """Newest first (by time, then id: the solve log's order and indexes); with ``user_id``,
    only that user's events (a user token's scope)."""
    columns = ", ".join(FIELDS)
    clauses = [(c, v) for c, v in (("key_id", key_id), ("user_id", user_id)) if v is not None]
    where = "WHERE " + " AND ".join(f"{c} = ?" for c, _ in clauses) + " " if clauses else ""
    params = [v for _, v in clauses]

    def read(tx: Tx) -> list[dict]:
        return tx.dicts(
            f"SELECT {columns} FROM usage_events {where}ORDER BY ts_ms DESC, id DESC LIMIT ?",
            (*params, limit),
        )

    out = []
    for row in db.read(read):
        row["type"] = row.pop("captcha_type")
        row["cost"] = format_micros(int(row["cost_micros"]))
        out.append(row)
    return out


def summary(db: Database) -> dict:
    """Totals that show exactly-once at a glance: events, successes, usage, per-key balances."""

    def read(tx: Tx) -> dict:
        events, successes, used = tx.one(
            "SELECT COUNT(*), SUM(CASE WHEN status = 'success' THEN 1 ELSE 0 END),"
            " SUM(cost_micros) FROM usage_events"
        ) or (0, 0, 0)
        keys = {
            kid: {"balance_micros": int(bal), "leased_micros": 0, "successes": 0}
            for kid, bal in tx.all("SELECT id, balance_micros FROM api_keys")
        }
        for kid, held in tx.all(
            "SELECT key_id, SUM(held_micros) FROM lease_balance GROUP BY key_id"
        ):
            if kid in keys:
                keys[kid]["leased_micros"] = int(held or 0)
        for kid, n in tx.all(
            "SELECT key_id, COUNT(*) FROM usage_events WHERE status = 'success' GROUP BY key_id"
        ):
            if kid in keys:
                keys[kid]["successes"] = int(n)
        return {
            "events": int(events or 0),
            "successes": int(successes or 0),
            "usage_micros": int(used or 0),
            "keys": keys,
        }

    return db.read(read)


LEASE_STATES = {0: "none", voiding.HOLDS: "held", voiding.QUARANTINED: "quarantined"}


def agents(db: Database) -> list[dict]:
    rows = db.read(
        lambda tx: tx.dicts(
            "SELECT agent_id, instance, release_ver, last_seen_ms, in_flight, spool_backlog,"
            " holds, node_id, advertise_url FROM agents ORDER BY agent_id"
        )
    )
    return [
        {
            "agent_id": r["agent_id"],
            "instance": r["instance"],
            "release": r["release_ver"],
            "last_seen": int(r["last_seen_ms"]) / 1000,
            "in_flight": r["in_flight"],
            "spool_backlog": r["spool_backlog"],
            # quarantined: silent past lease_ttl; its leases wait for it (collector/voiding.py)
            "leases": LEASE_STATES.get(int(r["holds"]), "held"),
            # res.php anywhere (collector/peers.py): a node id twice among live agents is a
            # misconfiguration their logs name too.
            "node_id": r["node_id"],
            "advertise_url": r["advertise_url"],
        }
        for r in rows
    ]


# --- reports over a time range ----------------------------------------------------------------

_SOLVES = "SUM(CASE WHEN status = 'success' THEN 1 ELSE 0 END)"
_FAILED = "SUM(CASE WHEN status = 'failed' THEN 1 ELSE 0 END)"
_COST = "SUM(cost_micros)"
_CALLS = "status IN ('success', 'failed')"
PERCENTILES = (50, 95)


class _Tally:
    """Counts and integer micros of one report row (or the TOTAL row)."""

    __slots__ = ("cost_micros", "failed", "solves")

    def __init__(self) -> None:
        self.solves = self.failed = self.cost_micros = 0

    def add(self, solves: Any, failed: Any, cost: Any) -> _Tally:
        # SUM is NULL over no rows, and a DECIMAL on MySQL: int() of either is exact.
        self.solves += int(solves or 0)
        self.failed += int(failed or 0)
        self.cost_micros += int(cost or 0)
        return self

    def as_dict(self) -> dict[str, Any]:
        return {
            "solves": self.solves,
            "failed": self.failed,
            "cost": format_micros(self.cost_micros),
        }


def _where(
    period: TimeRange, user_id: str | None, extra: Iterable[str] = ()
) -> tuple[str, list[Any]]:
    clauses, bounds = period.where()
    params: list[Any] = list(bounds)
    if user_id is not None:
        clauses.append("user_id = ?")
        params.append(user_id)
    clauses.extend(extra)
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), params


def _ordered(keys: Iterable[Any]) -> list[Any]:
    """Names in order, ``None`` (no user, no project) last."""
    return sorted(keys, key=lambda k: (k is None, k or ""))


def team_report(
    db: Database, period: TimeRange | None = None, *, now_ms: int, user_id: str | None = None
) -> dict[str, Any]:
    """Per user: solves, failed, cost in the range, today's solves (UTC day of ``now_ms``) and
    daily limit; every user is listed, spent or not, and a ``total``."""
    period = period or TimeRange()
    today = TimeRange(day_start(now_ms), day_start(now_ms) + DAY_MS)

    def read(tx: Tx) -> tuple[list[tuple], list[tuple], list[tuple]]:
        src = source(tx, USAGE_REPORT_INDEX)
        where, params = _where(period, user_id)
        spent = tx.all(
            f"SELECT user_id, {_SOLVES}, {_FAILED}, {_COST} FROM {src}{where} GROUP BY user_id",
            params,
        )
        where, params = _where(today, user_id, ["status = 'success'"])
        daily = tx.all(f"SELECT user_id, COUNT(*) FROM {src}{where} GROUP BY user_id", params)
        only = (" WHERE id = ?", [user_id]) if user_id is not None else ("", [])
        users = tx.all(f"SELECT id, email, daily_limit, active FROM users{only[0]}", only[1])
        return spent, daily, users

    spent, daily, users = db.read(read)
    known = {uid: (email, limit, active) for uid, email, limit, active in users}
    tallies = {uid: _Tally().add(s, f, c) for uid, s, f, c in spent}
    today_solves = {uid: int(n) for uid, n in daily}
    total, total_today = _Tally(), 0
    rows = []
    for uid in _ordered(set(known) | set(tallies) | set(today_solves)):
        tally = tallies.get(uid, _Tally())
        email, limit, active = known.get(uid, (None, None, None))
        total.add(tally.solves, tally.failed, tally.cost_micros)
        total_today += today_solves.get(uid, 0)
        rows.append(
            {
                "user_id": uid,
                "email": email,
                **tally.as_dict(),
                "today": today_solves.get(uid, 0),
                "daily_limit": None if limit is None else int(limit),
                "active": None if active is None else bool(active),
            }
        )
    return {
        **period.as_dict(),
        "today": iso(today.since_ms or 0)[:10],
        "users": rows,
        "total": {**total.as_dict(), "today": total_today},
    }


def projects_report(
    db: Database, period: TimeRange | None = None, *, user_id: str | None = None
) -> dict[str, Any]:
    """Spend by project, by environment and by (project, environment) pair, with a total."""
    period = period or TimeRange()
    where, params = _where(period, user_id)

    def read(tx: Tx) -> list[tuple]:
        return tx.all(
            f"SELECT project, environment, {_SOLVES}, {_FAILED}, {_COST}"
            f" FROM {source(tx, USAGE_REPORT_INDEX)}{where} GROUP BY project, environment",
            params,
        )

    rows = db.read(read)
    projects: dict[str | None, _Tally] = {}
    environments: dict[str | None, _Tally] = {}
    total = _Tally()
    pairs = []
    for project, environment, solves, failed, cost in sorted(
        rows, key=lambda r: (r[0] is None, r[0] or "", r[1] is None, r[1] or "")
    ):
        pair = _Tally().add(solves, failed, cost)
        pairs.append({"project": project, "environment": environment, **pair.as_dict()})
        for index, name in ((projects, project), (environments, environment)):
            index.setdefault(name, _Tally()).add(solves, failed, cost)
        total.add(solves, failed, cost)
    return {
        **period.as_dict(),
        "projects": [{"project": p, **projects[p].as_dict()} for p in _ordered(projects)],
        "environments": [
            {"environment": e, **environments[e].as_dict()} for e in _ordered(environments)
        ],
        "pairs": pairs,
        "total": total.as_dict(),
    }


def keys_report(
    db: Database, period: TimeRange | None = None, *, user_id: str | None = None
) -> dict[str, Any]:
    """Per key: owner, project, environment, spend in the range and balance now; every key is
    listed, spent or not, and a ``total``."""
    period = period or TimeRange()

    def read(tx: Tx) -> tuple[list[tuple], list[tuple]]:
        src = source(tx, USAGE_REPORT_INDEX)
        where, params = _where(period, user_id)
        spent = tx.all(
            f"SELECT key_id, {_SOLVES}, {_FAILED}, {_COST} FROM {src}{where} GROUP BY key_id",
            params,
        )
        only = (" WHERE user_id = ?", [user_id]) if user_id is not None else ("", [])
        keys = tx.all(
            "SELECT id, user_id, project, environment, balance_micros, active"
            f" FROM api_keys{only[0]}",
            only[1],
        )
        return spent, keys

    spent, keys = db.read(read)
    tallies = {kid: _Tally().add(s, f, c) for kid, s, f, c in spent}
    known = {k[0]: k[1:] for k in keys}
    total = _Tally()
    rows = []
    for kid in _ordered(set(known) | set(tallies)):
        tally = tallies.get(kid, _Tally())
        owner, project, environment, balance, active = known.get(kid, (None,) * 5)
        total.add(tally.solves, tally.failed, tally.cost_micros)
        rows.append(
            {
                "key_id": kid,
                "user_id": owner,
                "project": project,
                "environment": environment,
                **tally.as_dict(),
                "balance": None if balance is None else format_micros(int(balance)),
                "active": None if active is None else bool(active),
            }
        )
    return {**period.as_dict(), "keys": rows, "total": total.as_dict()}


def stats_report(
    db: Database, period: TimeRange | None = None, *, user_id: str | None = None
) -> dict[str, Any]:
    """Per captcha type: calls, solves, failed, success rate (percent, 2 decimals) and exact
    nearest-rank p50/p95 of ``duration_ms`` over all calls; a ``total`` over every type; and
    ``hourly``: solves and failures per UTC hour that had any (oldest first)."""
    period = period or TimeRange()
    where, params = _where(period, user_id, [_CALLS])

    def read(tx: Tx) -> tuple[list[tuple], list[tuple]]:
        src = source(tx, USAGE_REPORT_INDEX)
        # Counts per distinct duration: an exact histogram, a few thousand rows at most,
        # so percentiles are exact without shipping every row or dialect-specific SQL.
        by_duration = tx.all(
            f"SELECT captcha_type, duration_ms, {_SOLVES}, {_FAILED} FROM {src}{where}"
            " GROUP BY captcha_type, duration_ms",
            params,
        )
        hourly = tx.all(
            f"SELECT ts_ms - ts_ms % {HOUR_MS} AS hour_ms, {_SOLVES}, {_FAILED}"
            f" FROM {src}{where} GROUP BY hour_ms ORDER BY hour_ms",
            params,
        )
        return by_duration, hourly

    by_duration, hourly = db.read(read)
    types: dict[str | None, dict[str, Any]] = {}
    everything = _stats_acc()
    for slug, duration, solves, failed in by_duration:
        acc = types.setdefault(slug, _stats_acc())
        for target in (acc, everything):
            target["solves"] += int(solves or 0)
            target["failed"] += int(failed or 0)
            if duration is not None:
                n = int(solves or 0) + int(failed or 0)
                hist = target["durations"]
                hist[int(duration)] = hist.get(int(duration), 0) + n
    return {
        **period.as_dict(),
        "types": [{"type": slug, **_stats_row(types[slug])} for slug in _ordered(types)],
        "total": _stats_row(everything),
        "hourly": [
            {"hour": iso(int(hour)), "solves": int(s or 0), "failed": int(f or 0)}
            for hour, s, f in hourly
        ],
    }


def _stats_acc() -> dict[str, Any]:
    return {"solves": 0, "failed": 0, "durations": {}}


def _stats_row(acc: dict[str, Any]) -> dict[str, Any]:
    calls = acc["solves"] + acc["failed"]
    rate = None
    if calls:
        exact = Decimal(acc["solves"] * 100) / Decimal(calls)
        rate = str(exact.quantize(Decimal("0.01"), rounding=ROUND_HALF_EVEN))
    row: dict[str, Any] = {
        "calls": calls,
        "solves": acc["solves"],
        "failed": acc["failed"],
        "success_rate": rate,
    }
    for pct in PERCENTILES:
        row[f"p{pct}_ms"] = nearest_rank(acc["durations"], pct)
    return row


def nearest_rank(histogram: dict[int, int], pct: int) -> int | None:
    """The ``pct``-th percentile of the values counted in ``histogram`` (value -> count) by the
    nearest-rank rule: the smallest value whose cumulative count reaches ceil(pct/100 * n).
    ``None`` when nothing was counted. Integer arithmetic only."""
    if not 0 < pct <= 100:
        raise ValueError(f"percentile must be in (0, 100], got {pct}")
    n = sum(histogram.values())
    if n == 0:
        return None
    rank = max(1, -(-pct * n // 100))
    seen = 0
    for value in sorted(histogram):
        seen += histogram[value]
        if seen >= rank:
            return value
    raise AssertionError("unreachable: rank <= n")
