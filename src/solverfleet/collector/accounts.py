"""Accounts, users, keys, prices and the balance ledger.

Every change that agents must see (users, keys, prices, limits, active flags, top-ups) bumps
``config_state.version`` in the same transaction, so an agent never sees a new version
without the change, or the change without a new version.
"""

from __future__ import annotations

import json
import time
from typing import Any

from solverfleet import keyhash, teamconfig
from solverfleet.collector.notify import notifications
from solverfleet.collector.problems import ConfigInvalid, Conflict, Invalid, NotFound
from solverfleet.collector.store import Database, Tx
from solverfleet.money import MAX_AMOUNT_MICROS, format_micros, to_micros

OPENING_REASON = "opening balance (team config)"
KEY_COLUMNS = (
    "id, user_id, account, secret_hash, project, environment, balance_micros, allowed_types, "
    "cpm, ip_allowlist, active"
)
USER_COLUMNS = "id, account, email, role, daily_limit, active"


# --- config version ---------------------------------------------------------------------------


def config_version(tx: Tx) -> int:
    return int(tx.scalar("SELECT version FROM config_state WHERE id = 1", default=0))


def bump_version(tx: Tx) -> int:
    tx.execute("UPDATE config_state SET version = version + 1 WHERE id = 1")
    return config_version(tx)


# --- rows -------------------------------------------------------------------------------------


def _json_list(value: list | None) -> str | None:
    return None if value is None else json.dumps(value)


def _list(text: str | None) -> list | None:
    return None if text is None else json.loads(text)


def _key_row(row: dict[str, Any]) -> dict[str, Any]:
    """A key as stored, with JSON columns decoded and flags as bools."""
    return {
        **row,
        "allowed_types": _list(row["allowed_types"]),
        "ip_allowlist": _list(row["ip_allowlist"]),
        "active": bool(row["active"]),
    }


def _user_row(row: dict[str, Any]) -> dict[str, Any]:
    return {**row, "active": bool(row["active"])}


def _in(n: int) -> str:
    return ", ".join("?" for _ in range(n))


def _locked(tx: Tx, table: str, columns: str, ids: list[str]) -> list[dict[str, Any]]:
    # Sorted ids, one statement: row locks are always taken in the same order (no deadlocks).
    if not ids:
        return []
    ids = sorted(set(ids))
    return tx.dicts(
        f"SELECT {columns} FROM {table} WHERE id IN ({_in(len(ids))}) ORDER BY id"
        + tx.dialect.for_update,
        ids,
    )


# --- apply ------------------------------------------------------------------------------------


class _DryRun(Exception):
    def __init__(self, result: dict) -> None:
        super().__init__("dry run")
        self.result = result


def apply_config(
    db: Database,
    config: Any,
    dry_run: bool = False,
    *,
    now_ms: int | None = None,
    actor: str | None = None,
) -> dict:
    """Validate a team config and apply it in one transaction: all of it or none of it.

    ``config`` goes through ``teamconfig.parse`` (with no environment: ``ENV:`` values are
    refused, the CLI resolves them); an invalid one raises ``ConfigInvalid``, changing nothing.
    Amounts are stored as micros; CIDRs come out of ``parse`` in canonical form already.
    Creates and updates; never deletes (a user or key absent from the file is left alone).
    A key's ``balance`` is its opening balance, applied only when the key is created (as a
    ledger transaction); later changes go through top-ups, so re-applying the same file never
    refills spent credit. With ``dry_run`` the same work is done and then rolled back.
    A key's ``secret`` is applied when the key is created and when the file's secret changes
    (``config_secret_hash``), so re-applying a file never undoes an API rotation; keys the
    file does not declare (e.g. made with ``POST /admin/v1/keys``) are left alone.
    ``actor`` is recorded on the opening-balance ledger transactions.
    """
    cfg = _parse(config)
    stamp = int(time.time() * 1000) if now_ms is None else now_ms

    def work(tx: Tx) -> dict:
        result = _apply(tx, cfg, now_ms=stamp, dry_run=dry_run, actor=actor)
        if dry_run:
            raise _DryRun(result)
        return result

    try:
        return db.transaction(work)
    except _DryRun as done:
        return done.result


def _parse(config: Any) -> dict:
    try:
        return teamconfig.parse(config, env=None)
    except teamconfig.TeamConfigError as exc:
        raise ConfigInvalid(exc.errors) from None


def _apply(tx: Tx, cfg: dict, *, now_ms: int, dry_run: bool, actor: str | None) -> dict:
    created: list[dict] = []
    changed: list[dict] = []
    unchanged: list[dict] = []
    secrets: dict[str, str] = {}

    def note(kind: str, ident: str, fields: list[str] | None) -> None:
        if fields is None:
            created.append({"kind": kind, "id": ident})
        elif fields:
            changed.append({"kind": kind, "id": ident, "fields": fields})
        else:
            unchanged.append({"kind": kind, "id": ident})

    account = cfg["account"]
    note("account", account, _apply_account(tx, account, cfg["low_balance_alert"], now_ms))
    for type_, price in cfg["prices"].items():
        note("price", type_, _apply_price(tx, type_, to_micros(price), now_ms))

    users = cfg["users"]
    existing_users = {
        r["id"]: r for r in _locked(tx, "users", USER_COLUMNS, [u["id"] for u in users])
    }
    keys = [(user["id"], key) for user in users for key in user["keys"]]
    existing_keys = {
        r["id"]: _key_row(r)
        for r in _locked(tx, "api_keys", KEY_COLUMNS, [k["id"] for _, k in keys])
    }
    hashes = _secret_hashes(tx, keys, existing_keys, secrets)

    for user in users:
        note("user", user["id"], _apply_user(tx, user, account, existing_users, now_ms))
    for user_id, key in keys:
        fields = _apply_key(
            tx, key, user_id, account, hashes[key["id"]], existing_keys, now_ms, actor
        )
        note("key", key["id"], fields)

    version = config_version(tx)
    if created or changed:
        version = bump_version(tx)
    return {
        "created": created,
        "changed": changed,
        "unchanged": unchanged,
        # Generated secrets are shown once; a dry run stores nothing, so it shows none.
        "secrets": {} if dry_run else secrets,
        "config_version": version,
        "dry_run": dry_run,
    }


def _secret_hashes(
    tx: Tx, keys: list[tuple[str, dict]], existing: dict[str, dict], generated: dict[str, str]
) -> dict[str, str | None]:
    """The secret hash each key should end up with (None = keep), refusing reused secrets.

    An existing key keeps its secret unless the file's secret differs from the one the file
    declared last time: an API rotation since then is not undone by re-applying the file.
    """
    declared = _config_secret_hashes(tx, [k["id"] for _, k in keys if k["id"] in existing])
    hashes: dict[str, str | None] = {}
    for _, key in keys:
        if key["secret"] is not None:
            digest = keyhash.hash_secret(key["secret"])
            keep = key["id"] in existing and declared.get(key["id"]) == digest
            hashes[key["id"]] = None if keep else digest
        elif key["id"] in existing:
            hashes[key["id"]] = None
        else:
            generated[key["id"]] = keyhash.generate_secret()
            hashes[key["id"]] = keyhash.hash_secret(generated[key["id"]])
    wanted = [h for h in hashes.values() if h is not None]
    if len(set(wanted)) != len(wanted):
        raise Conflict("two keys in this config have the same secret", "secret_reused")
    if wanted:
        # A secret still inside another key's rotation grace counts as that key's too.
        marks = _in(len(wanted))
        owners = tx.all(
            f"SELECT id, secret_hash FROM api_keys WHERE secret_hash IN ({marks})"
            f" UNION ALL SELECT id, previous_secret_hash FROM api_keys"
            f" WHERE previous_secret_hash IN ({marks})",
            [*wanted, *wanted],
        )
        for owner, digest in owners:
            mine = [kid for kid, h in hashes.items() if h == digest]
            if mine and mine[0] != owner:
                raise Conflict(
                    f"the secret of key {mine[0]!r} is already used by another key", "secret_reused"
                )
    return hashes


def _config_secret_hashes(tx: Tx, ids: list[str]) -> dict[str, str | None]:
    if not ids:
        return {}
    return dict(
        tx.all(f"SELECT id, config_secret_hash FROM api_keys WHERE id IN ({_in(len(ids))})", ids)
    )


def _apply_account(tx: Tx, account: str, alert: dict | None, now_ms: int) -> list[str] | None:
    enabled = 1 if alert and alert["enabled"] else 0
    threshold = to_micros(alert["threshold"]) if alert else None
    # The file is the whole truth about its account's webhooks: absent ones are removed.
    webhooks = alert["webhooks"] if alert else []
    row = tx.one(
        "SELECT low_balance_enabled, low_balance_threshold_micros FROM accounts WHERE id = ?"
        + tx.dialect.for_update,
        (account,),
    )
    if row is None:
        tx.execute(
            "INSERT INTO accounts (id, low_balance_enabled, low_balance_threshold_micros,"
            " updated_ms) VALUES (?, ?, ?, ?)",
            (account, enabled, threshold, now_ms),
        )
        notifications.apply_targets(tx, account, webhooks, now_ms=now_ms)
        return None
    fields = []
    if (row[0], row[1]) != (enabled, threshold):
        tx.execute(
            "UPDATE accounts SET low_balance_enabled = ?, low_balance_threshold_micros = ?,"
            " updated_ms = ? WHERE id = ?",
            (enabled, threshold, now_ms, account),
        )
        fields.append("low_balance_alert")
    if notifications.apply_targets(tx, account, webhooks, now_ms=now_ms):
        fields.append("webhooks")
    return fields


def _apply_price(tx: Tx, type_: str, micros: int, now_ms: int) -> list[str] | None:
    current = tx.one(
        "SELECT price_micros FROM prices WHERE type = ?" + tx.dialect.for_update, (type_,)
    )
    if current is None:
        tx.execute("INSERT INTO prices (type, price_micros) VALUES (?, ?)", (type_, micros))
        return None
    if current[0] == micros:
        return []
    tx.execute(
        "UPDATE prices SET price_micros = ?, previous_price_micros = ?, changed_ms = ?"
        " WHERE type = ?",
        (micros, current[0], now_ms, type_),
    )
    return ["price"]


def _apply_user(
    tx: Tx, user: dict, account: str, existing: dict[str, dict], now_ms: int
) -> list[str] | None:
    want = {
        "account": account,
        "email": user["email"],
        "role": user["role"],
        "daily_limit": user["daily_limit"],
        "active": 1 if user["active"] else 0,
    }
    row = existing.get(user["id"])
    if row is None:
        tx.execute(
            "INSERT INTO users (id, account, email, role, daily_limit, active, updated_ms)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (user["id"], *want.values(), now_ms),
        )
        return None
    fields = [name for name, value in want.items() if row[name] != value]
    if fields:
        sets = ", ".join(f"{name} = ?" for name in fields)
        tx.execute(
            f"UPDATE users SET {sets}, updated_ms = ? WHERE id = ?",
            (*(want[f] for f in fields), now_ms, user["id"]),
        )
    return fields


def _apply_key(
    tx: Tx,
    key: dict,
    user_id: str,
    account: str,
    secret_hash: str | None,
    existing: dict[str, dict],
    now_ms: int,
    actor: str | None = None,
) -> list[str] | None:
    want = {
        "user_id": user_id,
        "account": account,
        "project": key["project"],
        "environment": key["environment"],
        "allowed_types": key["allowed_types"],
        "cpm": key["cpm"],
        "ip_allowlist": key["ip_allowlist"],
        "active": key["active"],
    }
    row = existing.get(key["id"])
    stored = {**want, "allowed_types": _json_list(want["allowed_types"])}
    stored["ip_allowlist"] = _json_list(want["ip_allowlist"])
    stored["active"] = 1 if want["active"] else 0
    # The file's own secret, remembered so that only a change in the file replaces it.
    declared = secret_hash if key["secret"] is not None else None
    if row is None:
        opening = to_micros(key["balance"])
        tx.execute(
            f"INSERT INTO api_keys ({KEY_COLUMNS}, updated_ms, config_secret_hash)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                key["id"],
                user_id,
                account,
                secret_hash,
                stored["project"],
                stored["environment"],
                opening,
                stored["allowed_types"],
                stored["cpm"],
                stored["ip_allowlist"],
                stored["active"],
                now_ms,
                declared,
            ),
        )
        if opening:
            ledger_entry(tx, key["id"], opening, opening, OPENING_REASON, now_ms, actor)
        return None
    fields = [name for name, value in want.items() if row[name] != value]
    if secret_hash is not None:
        tx.execute("UPDATE api_keys SET config_secret_hash = ? WHERE id = ?", (declared, key["id"]))
        if secret_hash != row["secret_hash"]:
            # A new secret from the file replaces the key's at once (no grace, unlike rotate).
            tx.execute(
                "UPDATE api_keys SET previous_secret_hash = NULL, previous_until_ms = NULL"
                " WHERE id = ?",
                (key["id"],),
            )
            fields.append("secret")
            stored["secret_hash"] = secret_hash
    if fields:
        columns = ["secret_hash" if f == "secret" else f for f in fields]
        sets = ", ".join(f"{col} = ?" for col in columns)
        tx.execute(
            f"UPDATE api_keys SET {sets}, updated_ms = ? WHERE id = ?",
            (*(stored[c] for c in columns), now_ms, key["id"]),
        )
    return fields


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


# --- top-ups and flags ------------------------------------------------------------------------


def topup(
    db: Database,
    key_id: str,
    amount_micros: int,
    reason: str,
    *,
    now_ms: int,
    actor: str | None = None,
) -> dict:
    """Add credit to a key as a ledger transaction (why: ``reason``, who: ``actor``); returns
    the new balance and the transaction's id."""
    if isinstance(amount_micros, bool) or not isinstance(amount_micros, int) or amount_micros <= 0:
        raise Invalid("amount must be greater than zero", "invalid_amount")
    if amount_micros > MAX_AMOUNT_MICROS:
        raise Invalid("amount too large", "invalid_amount")

    def work(tx: Tx) -> dict:
        row = tx.one(
            "SELECT balance_micros FROM api_keys WHERE id = ?" + tx.dialect.for_update, (key_id,)
        )
        if row is None:
            raise NotFound(f"key {key_id!r} does not exist")
        balance = row[0] + amount_micros
        tx.execute("UPDATE api_keys SET balance_micros = ? WHERE id = ?", (balance, key_id))
        txn = ledger_entry(tx, key_id, amount_micros, balance, reason, now_ms, actor)
        bump_version(tx)
        return {"key": key_id, "balance": format_micros(balance), "transaction_id": txn}

    return db.transaction(work)


def set_active(db: Database, kind: str, ident: str, active: bool, *, now_ms: int) -> dict:
    """(De)activate a ``"key"`` or ``"user"``; bumps the config version if it changed."""
    table = {"key": "api_keys", "user": "users"}[kind]

    def work(tx: Tx) -> dict:
        row = tx.one(f"SELECT active FROM {table} WHERE id = ?" + tx.dialect.for_update, (ident,))
        if row is None:
            raise NotFound(f"{kind} {ident!r} does not exist")
        if bool(row[0]) != active:
            tx.execute(
                f"UPDATE {table} SET active = ?, updated_ms = ? WHERE id = ?",
                (1 if active else 0, now_ms, ident),
            )
            bump_version(tx)
        return {kind: ident, "active": active}

    return db.transaction(work)


# --- reads ------------------------------------------------------------------------------------


def _public_key(row: dict[str, Any]) -> dict[str, Any]:
    key = _key_row(row)
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
    }


def list_keys(db: Database, *, user_id: str | None = None) -> list[dict]:
    """Every key, or only ``user_id``'s (a user token's scope)."""
    where, params = ("WHERE user_id = ? ", (user_id,)) if user_id is not None else ("", ())
    rows = db.read(
        lambda tx: tx.dicts(f"SELECT {KEY_COLUMNS} FROM api_keys {where}ORDER BY id", params)
    )
    return [_public_key(r) for r in rows]


def get_key(db: Database, key_id: str, *, user_id: str | None = None) -> dict:
    """One key; with ``user_id``, another user's key is ``NotFound`` like a missing one."""

    def read(tx: Tx) -> tuple[list[dict], int]:
        rows = tx.dicts(f"SELECT {KEY_COLUMNS} FROM api_keys WHERE id = ?", (key_id,))
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


def snapshot(tx: Tx) -> dict:
    """Everything an agent needs to decide locally (the ``config`` of a sync answer)."""
    prices = {t: int(p) for t, p in tx.all("SELECT type, price_micros FROM prices ORDER BY type")}
    users = [
        {
            "id": r["id"],
            "email": r["email"],
            "role": r["role"],
            "daily_limit": None if r["daily_limit"] is None else int(r["daily_limit"]),
            "active": bool(r["active"]),
            "account": r["account"],
        }
        for r in tx.dicts(f"SELECT {USER_COLUMNS} FROM users ORDER BY id")
    ]
    keys = []
    for r in tx.dicts(
        f"SELECT {KEY_COLUMNS}, previous_secret_hash, previous_until_ms FROM api_keys ORDER BY id"
    ):
        key = _key_row(r)
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
                **grace,
            }
        )
    return {"prices": prices, "users": users, "keys": keys}
