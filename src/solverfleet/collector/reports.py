"""Read-only views for operators and tests: usage log, exactly-once summary, agents."""

from __future__ import annotations

from solverfleet.collector.ingest import FIELDS
from solverfleet.collector.store import Database, Tx
from solverfleet.money import format_micros

MAX_LIMIT = 1_000


def usage(db: Database, *, key_id: str | None, limit: int) -> list[dict]:
    """Newest first."""
    columns = ", ".join(FIELDS)
    where, params = ("WHERE key_id = ? ", [key_id]) if key_id else ("", [])

    def read(tx: Tx) -> list[dict]:
        return tx.dicts(
            f"SELECT {columns} FROM usage_events {where}ORDER BY id DESC LIMIT ?", (*params, limit)
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


def agents(db: Database) -> list[dict]:
    rows = db.read(
        lambda tx: tx.dicts(
            "SELECT agent_id, instance, release_ver, last_seen_ms, in_flight, spool_backlog"
            " FROM agents ORDER BY agent_id"
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
        }
        for r in rows
    ]
