"""Key lifecycle through the admin API: create, change limits, rotate with a grace, ledger.

Fields are checked by the team-config key validator (``teamconfig.parse_key``), so a key made or
changed here obeys exactly the rules of one written in a team config file. Every change agents
must see bumps the config version in the same transaction (see ``accounts``). Secrets are
generated here, returned once and stored only as hashes.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Any

from solverfleet import keyhash, teamconfig
from solverfleet.captchatypes import canonical
from solverfleet.collector import accounts, audit, configdelta, prices
from solverfleet.collector.problems import ConfigInvalid, Conflict, Invalid, NotFound
from solverfleet.collector.store import Database, Tx
from solverfleet.money import format_micros

# A key's team-config fields, with its owner instead of a secret (secrets are generated here).
CREATE_FIELDS = ("user_id", *(f for f in teamconfig.KEY_FIELDS if f != "secret"))
LIMIT_FIELDS = (
    "project",
    "environment",
    "allowed_types",
    "cpm",
    "ip_allowlist",
    "expires_at",
    "refill",
)
MAX_GRACE_SECONDS = 30 * 86400
OPENING_REASON = "opening balance (key created)"


class KeyInvalid(ConfigInvalid):
    """Key fields that fail the team-config rules; ``errors`` name the fields."""

    code = "invalid"


def validate(
    fields: dict[str, Any],
    *,
    user_id: Any,
    priced: list[str] | None,
    aliases: dict[str, str] | None = None,
) -> dict:
    """One key's fields (``id`` included), normalized as in a team config (balance in micros,
    ``allowed_types`` by canonical slug), or ``KeyInvalid`` naming the request's fields (``cpm:
    ...``, ``user_id: ...``). ``priced``: the types the key's account may allow (None: any)."""
    try:
        key = teamconfig.parse_key(fields, user_id=user_id, prices=priced)
    except teamconfig.TeamConfigError as exc:
        raise KeyInvalid(exc.errors) from None
    if key["allowed_types"] is not None:
        slugs = [canonical(t, aliases) for t in key["allowed_types"]]
        key["allowed_types"] = list(dict.fromkeys(slugs))
    return key


def _context(tx: Tx, user_id: Any) -> tuple:
    """What validating a key of ``user_id`` depends on: its account's priced types and
    aliases (as ``(priced, aliases)``), read cheaply."""
    row = (
        tx.one("SELECT account FROM users WHERE id = ?", (user_id,))
        if isinstance(user_id, str)
        else None
    )
    account = None if row is None else row[0]
    return prices.priced_types(tx, account), prices.read_aliases(tx).get(account or "")


def _prevalidate(db: Database, fields: dict[str, Any], user_id: Any) -> tuple[tuple, dict]:
    """``validate`` before the write transaction (it can be slow on large lists, and a write
    transaction must stay short: agents sync through the same database); returns the context
    it used, which ``_validated`` re-reads inside the transaction."""
    context = db.read(lambda tx: _context(tx, user_id))
    priced, aliases = context
    return context, validate(fields, user_id=user_id, priced=priced, aliases=aliases)


def _validate_in(tx: Tx, fields: dict[str, Any], user_id: Any) -> dict:
    """``validate`` against the prices and aliases of ``user_id``'s account, inside ``tx``."""
    priced, aliases = _context(tx, user_id)
    return validate(fields, user_id=user_id, priced=priced, aliases=aliases)


def _validated(tx: Tx, early: tuple[tuple, dict], fields: dict[str, Any], user_id: Any) -> dict:
    """The key ``_prevalidate`` made, or validated again if prices or aliases changed since
    (rare: only then is the slow work inside the transaction)."""
    context, key = early
    now = _context(tx, user_id)
    if now == context:
        return key
    return validate(fields, user_id=user_id, priced=now[0], aliases=now[1])


def _new_id(user_id: Any) -> str:
    base = user_id[:110] if isinstance(user_id, str) else "key"
    return f"{base}-{secrets.token_hex(4)}"


def audit_view(key: dict, user_id: str) -> dict:
    """A new key's fields as its audit row shows them: no secret, money as a decimal."""
    view = {f: key[f] for f in LIMIT_FIELDS}
    return {
        "user_id": user_id,
        **view,
        "active": key["active"],
        "balance": format_micros(key["balance"]),
    }


# --- create -----------------------------------------------------------------------------------


def create(
    db: Database,
    data: dict[str, Any],
    *,
    now_ms: int,
    actor: str | None = None,
    guard: Callable[[Tx], None] | None = None,
) -> dict:
    """A new key for an existing user: ``{"key": {...}, "secret": "sk_..."}`` (shown once).

    ``data`` holds ``CREATE_FIELDS``; ``user_id`` is required, ``id`` is generated when absent.
    The opening ``balance`` is a ledger transaction made by ``actor``. ``guard`` runs in the
    same transaction (the request's Idempotency-Key record).
    """
    user_id = data.get("user_id")
    if user_id is None:
        raise Invalid("user_id is required", "invalid")
    fields = {k: v for k, v in data.items() if k != "user_id"}
    if fields.get("id") is None:
        fields["id"] = _new_id(user_id)
    secret = keyhash.generate_secret()
    early = _prevalidate(db, fields, user_id)

    def work(tx: Tx) -> str:
        key = _validated(tx, early, fields, user_id)
        user = tx.one("SELECT account FROM users WHERE id = ?" + tx.dialect.for_update, (user_id,))
        if user is None:
            raise Invalid(f"user {user_id!r} does not exist", "unknown_user")
        found = tx.one("SELECT deleted_ms FROM api_keys WHERE id = ?", (key["id"],))
        if found is not None:
            if found[0] is not None:
                raise Conflict(
                    f"key {key['id']!r} was deleted; its id is not reused", "key_deleted"
                )
            raise Conflict(f"key {key['id']!r} already exists", "key_exists")
        accounts.insert_key(
            tx,
            key,
            user_id=user_id,
            account=user[0],
            secret_hash=keyhash.hash_secret(secret),
            reason=OPENING_REASON,
            now_ms=now_ms,
            actor=actor,
        )
        accounts.bump_version(tx, [(configdelta.KEY, key["id"])])
        audit.record(
            tx,
            actor,
            "key.create",
            "key",
            key["id"],
            user[0],
            None,
            audit_view(key, user_id),
            now_ms=now_ms,
        )
        if guard is not None:
            guard(tx)
        return key["id"]

    key_id = db.transaction(work)
    return {"key": accounts.get_key(db, key_id), "secret": secret}


# --- limits -----------------------------------------------------------------------------------


def update_limits(
    db: Database, key_id: str, data: dict[str, Any], *, now_ms: int, actor: str | None = None
) -> dict:
    """Change some of ``LIMIT_FIELDS`` (null lifts a limit, clears an expiry or a refill):
    ``{"key": {...}, "changed": [...]}``.

    Agents see the change on their next sync (about ``sync_interval`` later).
    """
    unknown = sorted(set(data) - set(LIMIT_FIELDS))
    if unknown:
        raise Invalid(f"unknown field(s): {', '.join(unknown)}", "unknown_field")
    if not data:
        raise Invalid(f"nothing to change: give any of {', '.join(LIMIT_FIELDS)}", "invalid")
    owner = db.read(lambda tx: tx.one("SELECT user_id FROM api_keys WHERE id = ?", (key_id,)))
    fields = {**data, "id": key_id}
    # Validated before the transaction (see _prevalidate); a key of an unknown id is a 404.
    early = _prevalidate(db, fields, owner[0]) if owner is not None else None

    def work(tx: Tx) -> list[str]:
        rows = tx.dicts(
            f"SELECT {accounts.KEY_COLUMNS} FROM api_keys WHERE id = ? AND {accounts.LIVE}"
            + tx.dialect.for_update,
            (key_id,),
        )
        if not rows:
            raise NotFound(f"key {key_id!r} does not exist")
        row = accounts.key_row(rows[0])
        if early is None or row["user_id"] != owner[0]:
            key = _validate_in(tx, fields, row["user_id"])
        else:
            key = _validated(tx, early, fields, row["user_id"])
        changed = [f for f in LIMIT_FIELDS if f in data and key[f] != accounts.key_field(f, row)]
        if changed:
            values: dict[str, Any] = {}
            for f in changed:
                values.update(accounts.key_columns(f, key[f], now_ms))
            accounts.update_row(tx, "api_keys", key_id, values, now_ms)
            accounts.bump_version(tx, [(configdelta.KEY, key_id)])
            before = {f: accounts.key_field(f, row) for f in changed}
            audit.record(
                tx,
                actor,
                "key.update",
                "key",
                key_id,
                row["account"],
                before,
                {f: key[f] for f in changed},
                now_ms=now_ms,
            )
        return changed

    changed = db.transaction(work)
    return {"key": accounts.get_key(db, key_id), "changed": changed}


# --- rotation ---------------------------------------------------------------------------------


def grace_seconds(value: Any) -> int:
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_GRACE_SECONDS:
        raise Invalid(
            f"grace_seconds must be a whole number from 0 to {MAX_GRACE_SECONDS}", "invalid_grace"
        )
    return value


def rotate(
    db: Database,
    key_id: str,
    grace: int,
    *,
    now_ms: int,
    actor: str | None = None,
    guard: Callable[[Tx], None] | None = None,
) -> dict:
    """Give the key a new secret (returned once). The old one keeps working on every agent for
    ``grace`` seconds, then is refused everywhere. Rotating again ends an earlier grace now.
    ``guard`` runs in the same transaction (the request's Idempotency-Key record)."""
    grace = grace_seconds(grace)
    secret = keyhash.generate_secret()
    until_ms = now_ms + grace * 1000 if grace else None

    def work(tx: Tx) -> None:
        row = accounts.lock_live_key(tx, key_id, "secret_hash, account")
        tx.execute(
            "UPDATE api_keys SET secret_hash = ?, previous_secret_hash = ?,"
            " previous_until_ms = ?, updated_ms = ? WHERE id = ?",
            (keyhash.hash_secret(secret), row[0] if grace else None, until_ms, now_ms, key_id),
        )
        accounts.bump_version(tx, [(configdelta.KEY, key_id)])
        # Which secret is never recorded: only that it changed, and the old one's grace.
        after = {"rotated": True, "grace_seconds": grace, "previous_valid_until_ms": until_ms}
        audit.record(tx, actor, "key.rotate", "key", key_id, row[1], None, after, now_ms=now_ms)
        if guard is not None:
            guard(tx)

    db.transaction(work)
    return {
        "key": key_id,
        "secret": secret,
        "grace_seconds": grace,
        "previous_valid_until": None if until_ms is None else until_ms / 1000,
    }


# --- delete -----------------------------------------------------------------------------------


def _tombstone_hash() -> str:
    # Fills the NOT NULL, UNIQUE secret column of a deleted key. Not hex, so it can never equal
    # the sha256 of any secret: nothing authenticates as a deleted key, and no new key collides.
    return "deleted:" + secrets.token_hex(28)


def delete(db: Database, key_id: str, *, now_ms: int, actor: str | None = None) -> dict:
    """Delete a key: its secret (and a rotated-out one in grace) stops working on every agent at
    their next sync, the hashes are purged, its balance leases are voided, and a tombstone keeps
    its id, owner and balance so the usage log, the ledger and reports still name it. A deleted
    key's id is never reused (create and team config apply refuse it: 409 ``key_deleted``)."""

    def work(tx: Tx) -> dict:
        row = accounts.lock_live_key(tx, key_id, "balance_micros, account")
        tx.execute(
            "UPDATE api_keys SET deleted_ms = ?, active = 0, secret_hash = ?,"
            " previous_secret_hash = NULL, previous_until_ms = NULL, config_secret_hash = NULL,"
            " refill_amount_micros = NULL, refill_interval = NULL, refill_day = NULL,"
            " refilled_period = NULL, updated_ms = ? WHERE id = ?",
            (now_ms, _tombstone_hash(), now_ms, key_id),
        )
        # Voided like a stale agent's (leases.py): the grant totals stay, so usage an agent
        # spent from the lease before the delete is still accepted when its spool ships it.
        tx.execute(
            "UPDATE lease_balance SET held_micros = 0 WHERE key_id = ? AND held_micros <> 0",
            (key_id,),
        )
        accounts.bump_version(tx, [(configdelta.KEY, key_id)])
        balance = format_micros(int(row[0]))
        after = {"deleted": True, "balance": balance}
        audit.record(tx, actor, "key.delete", "key", key_id, row[1], None, after, now_ms=now_ms)
        return {"key": key_id, "deleted": True, "balance": balance}

    return db.transaction(work)


# --- ledger -----------------------------------------------------------------------------------


def transactions(
    db: Database, key_id: str, *, user_id: str | None = None, limit: int = 100
) -> list[dict]:
    """The key's ledger (opening balance, top-ups) newest first, with who and why.

    With ``user_id`` (a user token's scope), another user's key is ``NotFound``.
    """

    def read(tx: Tx) -> tuple[tuple | None, list[dict]]:
        owner = tx.one("SELECT user_id FROM api_keys WHERE id = ?", (key_id,))
        rows = tx.dicts(
            "SELECT id, amount_micros, balance_after_micros, reason, actor, created_ms"
            " FROM transactions WHERE key_id = ? ORDER BY id DESC LIMIT ?",
            (key_id, limit),
        )
        return owner, rows

    owner, rows = db.read(read)
    if owner is None or (user_id is not None and owner[0] != user_id):
        raise NotFound(f"key {key_id!r} does not exist")
    return [
        {
            "id": int(r["id"]),
            "amount": format_micros(int(r["amount_micros"])),
            "balance_after": format_micros(int(r["balance_after_micros"])),
            "reason": r["reason"],
            "actor": r["actor"],
            "created": int(r["created_ms"]) / 1000,
        }
        for r in rows
    ]
