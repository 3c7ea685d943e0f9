"""The few reads only the dashboard needs (everything else comes from the admin API's query
functions): accounts with their alert settings and key totals, credit leased per key, and how
recently usage arrived. Plain functions, database in, dicts out; money as exact strings."""

from __future__ import annotations

from typing import Any

from solverfleet.collector.store import Database, Tx
from solverfleet.money import format_micros


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
