"""Accounts, users, keys and the balance ledger: rows, top-ups, flags and reads.

Every change that agents must see (users, keys, prices, limits, active flags, top-ups) bumps
``config_state.version`` in the same transaction, so an agent never sees a new version
without the change, or the change without a new version. Applying a team config is
``teamapply``; the admin API's key lifecycle is ``keys``.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Iterable
from typing import Any

from solverfleet.collector import audit, configdelta, periods, prices, reclaim
from solverfleet.collector.problems import Invalid, NotFound
from solverfleet.collector.store import Database, Tx, marks
from solverfleet.money import MAX_AMOUNT_MICROS, format_micros
from solverfleet.teamconfig.fields import format_time, parse_time

KEY_COLUMNS = (
    "id, user_id, account, secret_hash, project, environment, balance_micros, allowed_types, "
    "cpm, ip_allowlist, active, expires_at_ms, refill_amount_micros, refill_interval, "
    "refill_day, deleted_ms"
)
# Live keys only: a deleted key is a tombstone (keys.delete) that no read or change finds.
LIVE = "deleted_ms IS NULL"
REFILL_COLUMNS = ("refill_amount_micros", "refill_interval", "refill_day")
USER_COLUMNS = "id, account, email, role, daily_limit, active"


# --- config version ---------------------------------------------------------------------------


def config_version(tx: Tx) -> int:
    return int(tx.scalar("SELECT version FROM config_state WHERE id = 1", default=0))


def bump_version(tx: Tx, changes: Iterable[tuple[str, str]]) -> int:
    """A new config version, with what it changed logged for sync deltas: ``changes`` are
    (kind, ident) pairs, see ``configdelta.record``."""
    tx.execute("UPDATE config_state SET version = version + 1 WHERE id = 1")
    version = config_version(tx)
    configdelta.record(tx, version, changes)
    return version


# --- rows -------------------------------------------------------------------------------------


def _json_list(value: list | None) -> str | None:
    return None if value is None else json.dumps(value)


def key_column(name: str, value: Any) -> Any:
    """A key's field as its ``api_keys`` column holds it: lists as JSON text, flags as 0/1."""
    if name in ("allowed_types", "ip_allowlist"):
        return _json_list(value)
    if name == "active":
        return 1 if value else 0
    return value


def key_columns(name: str, value: Any, now_ms: int) -> dict[str, Any]:
    """A key's field (as ``teamconfig`` normalizes it) as the ``api_keys`` columns holding it.

    A refill schedule also sets ``refilled_period`` to the period already under way, so the
    first refill is at the next 00:00 UTC boundary of the schedule, never at once.
    """
    if name == "expires_at":
        return {"expires_at_ms": None if value is None else parse_time(value)}
    if name == "refill":
        if value is None:
            return {**dict.fromkeys(REFILL_COLUMNS), "refilled_period": None}
        period = periods.current_period(value["interval"], value["day"], now_ms)
        return {
            "refill_amount_micros": value["amount"],
            "refill_interval": value["interval"],
            "refill_day": value["day"],
            "refilled_period": period,
        }
    return {name: key_column(name, value)}


def refill_of(row: dict[str, Any]) -> dict | None:
    """A row's refill schedule, as ``teamconfig`` normalizes it (amount in micros), or None."""
    if row.get("refill_interval") is None:
        return None
    day = row["refill_day"]
    return {
        "amount": int(row["refill_amount_micros"]),
        "interval": row["refill_interval"],
        "day": None if day is None else int(day),
    }


def key_field(name: str, row: dict[str, Any]) -> Any:
    """A key's field, as ``teamconfig`` normalizes it, read back from its row (``key_row``)."""
    if name == "expires_at":
        ms = row["expires_at_ms"]
        return None if ms is None else format_time(int(ms))
    if name == "refill":
        return refill_of(row)
    return row[name]


def _list(text: str | None) -> list | None:
    return None if text is None else json.loads(text)


def key_row(row: dict[str, Any]) -> dict[str, Any]:
    """A key as stored, with JSON columns decoded and flags as bools."""
    return {
        **row,
        "allowed_types": _list(row["allowed_types"]),
        "ip_allowlist": _list(row["ip_allowlist"]),
        "active": bool(row["active"]),
    }


def _user_row(row: dict[str, Any]) -> dict[str, Any]:
    return {**row, "active": bool(row["active"])}


def locked_rows(tx: Tx, table: str, columns: str, ids: list[str]) -> list[dict[str, Any]]:
    # Sorted ids, one statement: row locks are always taken in the same order (no deadlocks).
    if not ids:
        return []
    ids = sorted(set(ids))
    return tx.dicts(
        f"SELECT {columns} FROM {table} WHERE id IN ({marks(len(ids))}) ORDER BY id"
        + tx.dialect.for_update,
        ids,
    )


def ledger_entry(
    tx: Tx,
    key_id: str,
    amount: int,
    after: int,
    reason: str,
    now_ms: int,
    actor: str | None = None,
) -> int:
    return tx.insert(
        "INSERT INTO transactions"
        " (key_id, amount_micros, balance_after_micros, reason, created_ms, actor)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        (key_id, amount, after, reason, now_ms, actor),
    )


def insert_key(
    tx: Tx,
    key: dict,
    *,
    user_id: str,
    account: str,
    secret_hash: str,
    reason: str,
    now_ms: int,
    actor: str | None = None,
    config_secret_hash: str | None = None,
) -> None:
    """Store a new key (fields as ``teamconfig`` normalizes them, ``balance`` in micros).

    A non-zero opening balance is a ledger transaction with ``reason``, made by ``actor``.
    """
    opening = key["balance"]
    terms = {
        **key_columns("expires_at", key.get("expires_at"), now_ms),
        **key_columns("refill", key.get("refill"), now_ms),
    }
    tx.execute(
        f"INSERT INTO api_keys ({KEY_COLUMNS}, updated_ms, config_secret_hash, refilled_period)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            key["id"],
            user_id,
            account,
            secret_hash,
            key["project"],
            key["environment"],
            opening,
            key_column("allowed_types", key["allowed_types"]),
            key["cpm"],
            key_column("ip_allowlist", key["ip_allowlist"]),
            key_column("active", key["active"]),
            terms["expires_at_ms"],
            *(terms[c] for c in REFILL_COLUMNS),
            None,  # deleted_ms
            now_ms,
            config_secret_hash,
            terms["refilled_period"],
        ),
    )
    if opening:
        ledger_entry(tx, key["id"], opening, opening, reason, now_ms, actor)


def update_row(tx: Tx, table: str, ident: str, values: dict[str, Any], now_ms: int) -> None:
    """Set ``values`` (column -> value) and ``updated_ms`` on ``table``'s row ``ident``.

    A changed limit re-cuts the fleet's leases of it in the same transaction (reclaim.py).
    """
    sets = ", ".join(f"{column} = ?" for column in values)
    tx.execute(
        f"UPDATE {table} SET {sets}, updated_ms = ? WHERE id = ?",
        (*values.values(), now_ms, ident),
    )
    if table == "api_keys" and "cpm" in values:
        reclaim.order_all(tx, reclaim.CPM, ident, str(now_ms // 60_000 - 2))
    elif table == "users" and "daily_limit" in values:
        yesterday = dt.datetime.fromtimestamp(now_ms / 1000 - 86_400, dt.UTC).date()
        reclaim.order_all(tx, reclaim.DAILY, ident, yesterday.isoformat())


# --- top-ups and flags ------------------------------------------------------------------------


def lock_live_key(tx: Tx, key_id: str, columns: str) -> tuple:
    """``columns`` of a key that is not deleted, its row locked; NotFound otherwise."""
    row = tx.one(
        f"SELECT {columns} FROM api_keys WHERE id = ? AND {LIVE}" + tx.dialect.for_update,
        (key_id,),
    )
    if row is None:
        raise NotFound(f"key {key_id!r} does not exist")
    return row


def topup(
    db: Database,
    key_id: str,
    amount_micros: int,
    reason: str,
    *,
    now_ms: int,
    actor: str | None = None,
    guard: Callable[[Tx], None] | None = None,
) -> dict:
    """Add credit to a key as a ledger transaction (why: ``reason``, who: ``actor``); returns
    the new balance and the transaction's id. ``guard`` runs in the same transaction (the
    request's Idempotency-Key record, ``collector.idempotency``)."""
    if isinstance(amount_micros, bool) or not isinstance(amount_micros, int) or amount_micros <= 0:
        raise Invalid("amount must be greater than zero", "invalid_amount")
    if amount_micros > MAX_AMOUNT_MICROS:
        raise Invalid("amount too large", "invalid_amount")

    def work(tx: Tx) -> dict:
        row = lock_live_key(tx, key_id, "balance_micros, account")
        balance = row[0] + amount_micros
        tx.execute("UPDATE api_keys SET balance_micros = ? WHERE id = ?", (balance, key_id))
        txn = ledger_entry(tx, key_id, amount_micros, balance, reason, now_ms, actor)
        bump_version(tx, [(configdelta.KEY, key_id)])
        audit.record(
            tx,
            actor,
            "key.topup",
            "key",
            key_id,
            row[1],
            {"balance": format_micros(int(row[0]))},
            {
                "balance": format_micros(balance),
                "amount": format_micros(amount_micros),
                "reason": reason,
                "transaction_id": txn,
            },
            now_ms=now_ms,
        )
        if guard is not None:
            guard(tx)
        return {"key": key_id, "balance": format_micros(balance), "transaction_id": txn}

    return db.transaction(work)


def set_active(
    db: Database,
    kind: str,
    ident: str,
    active: bool,
    *,
    now_ms: int,
    actor: str | None = None,
    via: str = "api",
) -> dict:
    """(De)activate a ``"key"`` or ``"user"``; bumps the config version and writes an audit
    row (``via``: api or dashboard) if it changed."""
    table = {"key": "api_keys", "user": "users"}[kind]
    live = f" AND {LIVE}" if kind == "key" else ""

    def work(tx: Tx) -> dict:
        row = tx.one(
            f"SELECT active, account FROM {table} WHERE id = ?{live}" + tx.dialect.for_update,
            (ident,),
        )
        if row is None:
            raise NotFound(f"{kind} {ident!r} does not exist")
        if bool(row[0]) != active:
            update_row(tx, table, ident, {"active": 1 if active else 0}, now_ms)
            bump_version(tx, [(configdelta.KEY if kind == "key" else configdelta.USER, ident)])
            verb = "activate" if active else "deactivate"
            audit.record(
                tx,
                actor,
                f"{kind}.{verb}",
                kind,
                ident,
                row[1],
                {"active": not active},
                {"active": active, "via": via},
                now_ms=now_ms,
            )
        return {kind: ident, "active": active}

    return db.transaction(work)


# --- reads ------------------------------------------------------------------------------------


def _public_key(row: dict[str, Any]) -> dict[str, Any]:
    key = key_row(row)
    return {
        "id": key["id"],
        "user_id": key["user_id"],
        "account": key["account"],
        "project": key["project"],
        "environment": key["environment"],
        "balance": format_micros(int(key["balance_micros"])),
        "allowed_types": key["allowed_types"],
        "cpm": key["cpm"],
        "ip_allowlist": key["ip_allowlist"],
        "active": key["active"],
        "expires_at": key_field("expires_at", key),
        "refill": _public_refill(refill_of(key)),
    }


def _public_refill(schedule: dict | None) -> dict | None:
    return None if schedule is None else {**schedule, "amount": format_micros(schedule["amount"])}


def list_keys(db: Database, *, user_id: str | None = None) -> list[dict]:
    """Every key, or only ``user_id``'s (a user token's scope)."""
    where, params = f"WHERE {LIVE} ", ()
    if user_id is not None:
        where, params = f"WHERE {LIVE} AND user_id = ? ", (user_id,)
    rows = db.read(
        lambda tx: tx.dicts(f"SELECT {KEY_COLUMNS} FROM api_keys {where}ORDER BY id", params)
    )
    return [_public_key(r) for r in rows]


def get_key(db: Database, key_id: str, *, user_id: str | None = None) -> dict:
    """One key; with ``user_id``, another user's key is ``NotFound`` like a missing one."""

    def read(tx: Tx) -> tuple[list[dict], int]:
        rows = tx.dicts(f"SELECT {KEY_COLUMNS} FROM api_keys WHERE id = ? AND {LIVE}", (key_id,))
        if user_id is not None:
            rows = [r for r in rows if r["user_id"] == user_id]
        leased = tx.scalar(
            "SELECT SUM(held_micros) FROM lease_balance WHERE key_id = ?", (key_id,), default=0
        )
        return rows, int(leased)

    rows, leased = db.read(read)
    if not rows:
        raise NotFound(f"key {key_id!r} does not exist")
    return {**_public_key(rows[0]), "leased": format_micros(leased)}


def list_users(db: Database) -> list[dict]:
    rows = db.read(lambda tx: tx.dicts(f"SELECT {USER_COLUMNS} FROM users ORDER BY id"))
    return [_user_row(r) for r in rows]


def _among(column: str, ids: list[str] | None) -> tuple[str, list[str]]:
    """A ``WHERE`` part limiting ``column`` to ``ids`` (None: every row), and its params."""
    if ids is None:
        return "1 = 1", []
    return f"{column} IN ({marks(len(ids))})", ids


def agent_users(tx: Tx, ids: list[str] | None = None) -> list[dict]:
    """Users as agents see them: all, or those among ``ids`` (at most ``chunks``' size)."""
    where, params = _among("id", ids)
    return [
        {
            "id": r["id"],
            "email": r["email"],
            "role": r["role"],
            "daily_limit": None if r["daily_limit"] is None else int(r["daily_limit"]),
            "active": bool(r["active"]),
            "account": r["account"],
        }
        for r in tx.dicts(f"SELECT {USER_COLUMNS} FROM users WHERE {where} ORDER BY id", params)
    ]


def agent_keys(
    tx: Tx, ids: list[str] | None = None, *, after: str | None = None, limit: int | None = None
) -> list[dict]:
    """Live keys as agents see them, by id: all, or those among ``ids`` (at most ``chunks``'
    size); with ``after`` and ``limit``, one page of them (a paged snapshot)."""
    where, params = _among("id", ids)
    if after is not None:
        where, params = f"{where} AND id > ?", [*params, after]
    page = "" if limit is None else f" LIMIT {int(limit)}"
    keys = []
    for r in tx.dicts(
        f"SELECT {KEY_COLUMNS}, previous_secret_hash, previous_until_ms FROM api_keys"
        f" WHERE {LIVE} AND {where} ORDER BY id{page}",
        params,
    ):
        key = key_row(r)
        # Set by a rotation; agents accept that secret until then, by their own clock.
        grace = (
            {
                "previous_secret_hash": r["previous_secret_hash"],
                "previous_until_ms": int(r["previous_until_ms"]),
            }
            if r["previous_secret_hash"] and r["previous_until_ms"] is not None
            else {}
        )
        keys.append(
            {
                "id": key["id"],
                "secret_hash": key["secret_hash"],
                "user_id": key["user_id"],
                "account": key["account"],
                "project": key["project"],
                "environment": key["environment"],
                "allowed_types": key["allowed_types"],
                "cpm": None if key["cpm"] is None else int(key["cpm"]),
                "ip_allowlist": key["ip_allowlist"],
                "active": key["active"],
                "balance_micros": int(key["balance_micros"]),
                # Agents refuse the key from then on by their own clock, without a sync.
                "expires_at_ms": None if r["expires_at_ms"] is None else int(r["expires_at_ms"]),
                **grace,
            }
        )
    return keys


def agent_pricing(tx: Tx) -> dict:
    """Prices (global and per account; "*" is a default price) and type aliases."""
    return {**prices.read_prices(tx), "type_aliases": prices.read_aliases(tx)}


def snapshot(tx: Tx) -> dict:
    """Everything an agent needs to decide locally (the ``config`` of a sync answer)."""
    return {**agent_pricing(tx), "users": agent_users(tx), "keys": agent_keys(tx)}
