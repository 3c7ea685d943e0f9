"""The few reads only the dashboard needs (everything else comes from the admin API's query
functions): accounts with their alert settings and key totals, credit leased per key, and how
recently usage arrived. Plain functions, database in, dicts out; money as exact strings."""

from __future__ import annotations

from typing import Any

from solverfleet.collector.store import Database, Tx
from solverfleet.money import format_micros, to_micros


def accounts(db: Database) -> list[dict[str, Any]]:
    """Every account: low-balance settings, webhook count, keys, active keys, summed balance."""

    def read(tx: Tx) -> tuple[list[tuple], list[tuple], list[tuple]]:
        settings = tx.all(
            "SELECT id, low_balance_enabled, low_balance_threshold_micros FROM accounts"
        )
        totals = tx.all(
            "SELECT account, COUNT(*), SUM(active), SUM(balance_micros) FROM api_keys"
            " WHERE deleted_ms IS NULL GROUP BY account"
        )
        hooks = tx.all("SELECT account, COUNT(*) FROM notification_targets GROUP BY account")
        return settings, totals, hooks

    settings, totals, hooks = db.read(read)
    alert = {a: (bool(enabled), threshold) for a, enabled, threshold in settings}
    keys = {a: (int(n), int(active or 0), int(balance or 0)) for a, n, active, balance in totals}
    webhooks = {a: int(n) for a, n in hooks}
    out = []
    for account in sorted(set(alert) | set(keys)):
        enabled, threshold = alert.get(account, (False, None))
        n, active, balance = keys.get(account, (0, 0, 0))
        out.append(
            {
                "account": account,
                "alert_enabled": enabled,
                "threshold": None if threshold is None else format_micros(int(threshold)),
                "webhooks": webhooks.get(account, 0),
                "key_count": n,
                "active_keys": active,
                "balance": format_micros(balance),
            }
        )
    return out


def leased_by_key(db: Database) -> dict[str, str]:
    """Credit agents hold as balance leases, per key (keys without a lease are absent)."""
    rows = db.read(
        lambda tx: tx.all("SELECT key_id, SUM(held_micros) FROM lease_balance GROUP BY key_id")
    )
    return {key_id: format_micros(int(held or 0)) for key_id, held in rows}


def newest_usage_ms(db: Database) -> int | None:
    """When the newest usage event was stored (``received_ms``), or None before any."""
    # By primary key, not MAX(received_ms): one index probe however long the log is.
    row = db.read(
        lambda tx: tx.one("SELECT received_ms FROM usage_events ORDER BY id DESC LIMIT 1")
    )
    return None if row is None else int(row[0])


def key_flags(db: Database, keys: list[dict[str, Any]]) -> dict[str, dict[str, str | None]]:
    """Per key, what should stand out: ``state`` is the effective one (``inactive (user)`` for
    an active key of a deactivated user: agents refuse it), ``level`` is ``zero`` at or below
    zero, ``low`` at or below the account's low-balance threshold (when its alert is on)."""

    def read(tx: Tx) -> tuple[list[tuple], list[tuple]]:
        users = tx.all("SELECT id, active FROM users")
        limits = tx.all(
            "SELECT id, low_balance_threshold_micros FROM accounts WHERE low_balance_enabled = 1"
        )
        return users, limits

    users, limits = db.read(read)
    user_active = {user_id: bool(active) for user_id, active in users}
    threshold = {a: int(t) for a, t in limits if t is not None}
    flags = {}
    for key in keys:
        if not key["active"]:
            state = "inactive"
        elif not user_active.get(key["user_id"], True):
            state = "inactive (user)"
        else:
            state = "active"
        balance = to_micros(key["balance"], allow_negative=True)
        limit = threshold.get(key["account"])
        level = (
            "zero" if balance <= 0 else ("low" if limit is not None and balance <= limit else None)
        )
        flags[key["id"]] = {"state": state, "level": level}
    return flags


# Blue-green: an agent's id is its host name plus its colour's suffix (``solverfleet_colours``,
# roles/solverfleet_common/defaults/main/colours.json: blue has none, green ``-green``). The
# table is not installed on a collector host, so the suffixes are named here.
COLOUR_SUFFIXES = (("-green", "green"), ("-blue", "blue"))
OK_WITHIN_S = 5.0  # 20 syncs of 0.25 s: later than that an agent is behind


def agent_health(agent: dict[str, Any], *, now_ms: int, lease_ttl: float) -> dict[str, str]:
    """``health``: ok (synced within ``OK_WITHIN_S``), stale (later, but within ``lease_ttl``:
    it keeps its leases), silent (past ``lease_ttl``: its leases are reclaimed or wait for it);
    ``colour`` from the agent id's suffix."""
    age_s = (now_ms - agent["last_seen_ms"]) / 1000
    health = "ok" if age_s <= OK_WITHIN_S else ("stale" if age_s <= lease_ttl else "silent")
    colour = next(
        (name for suffix, name in COLOUR_SUFFIXES if agent["agent_id"].endswith(suffix)), "blue"
    )
    return {"health": health, "colour": colour}
