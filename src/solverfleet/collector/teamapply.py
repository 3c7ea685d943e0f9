"""Applying a team config: all of it in one transaction, or none of it.

``POST /admin/v1/apply`` lands here. The document is validated by ``teamconfig.parse_micros``
(amounts come out as integer micros), then accounts, prices, users and keys are created or
updated to match it; what changed bumps the config version once (see ``accounts``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from solverfleet import keyhash, teamconfig
from solverfleet.captchatypes import DEFAULT_TYPE
from solverfleet.collector import accounts, audit, configdelta, keys, prices
from solverfleet.collector.notify import notifications
from solverfleet.collector.problems import ConfigInvalid, Conflict
from solverfleet.collector.store import Database, Tx, marks
from solverfleet.money import format_micros

# Items in any one array of a team config body (users, keys); bounded by apply_max_body too.
MAX_ITEMS = 100_000

OPENING_REASON = "opening balance (team config)"
_KEY_SETTINGS = (
    "project",
    "environment",
    "allowed_types",
    "cpm",
    "ip_allowlist",
    "active",
    "expires_at",
    "refill",
)


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
    guard: Callable[[Tx], None] | None = None,
) -> dict:
    """Validate a team config and apply it in one transaction: all of it or none of it.

    ``config`` goes through ``teamconfig.parse_micros`` (with no environment: ``ENV:`` values
    are refused, the CLI resolves them); an invalid one raises ``ConfigInvalid``, changing
    nothing. Amounts come out of it as micros and CIDRs in canonical form already.
    Creates and updates; never deletes (a user or key absent from the file is left alone).
    A key's ``balance`` is its opening balance, applied only when the key is created (as a
    ledger transaction); later changes go through top-ups, so re-applying the same file never
    refills spent credit. With ``dry_run`` the same work is done and then rolled back.
    A key's ``secret`` is applied when the key is created and when the file's secret changes
    (``config_secret_hash``), so re-applying a file never undoes an API rotation; keys the
    file does not declare (e.g. made with ``POST /admin/v1/keys``) are left alone.
    ``actor`` is recorded on the opening-balance ledger transactions and on the audit rows:
    one per created or changed object (at most ``audit.MAX_TRAIL``) and a summary. ``guard``
    runs in the same transaction (the request's Idempotency-Key record). A file that declares
    a deleted key (``keys.delete``) is refused whole (409 ``key_deleted``): a deleted key is
    never brought back by an apply. ``expires_at`` and ``refill`` are the file's like the limits.
    """
    cfg = _parse(config)
    stamp = int(time.time() * 1000) if now_ms is None else now_ms

    def work(tx: Tx) -> dict:
        result = _apply(tx, cfg, now_ms=stamp, dry_run=dry_run, actor=actor)
        if dry_run:
            raise _DryRun(result)
        if guard is not None:
            guard(tx)
        return result

    try:
        return db.transaction(work)
    except _DryRun as done:
        return done.result


def _parse(config: Any) -> dict:
    try:
        return teamconfig.parse_micros(config, env=None)
    except teamconfig.TeamConfigError as exc:
        raise ConfigInvalid(exc.errors) from None


def _apply(tx: Tx, cfg: dict, *, now_ms: int, dry_run: bool, actor: str | None) -> dict:
    created: list[dict] = []
    changed: list[dict] = []
    unchanged: list[dict] = []
    secrets: dict[str, str] = {}
    trail = audit.Trail()

    def note(kind: str, ident: str, fields: list[str] | None) -> None:
        if fields is None:
            created.append({"kind": kind, "id": ident})
        elif fields:
            changed.append({"kind": kind, "id": ident, "fields": fields})
        else:
            unchanged.append({"kind": kind, "id": ident})

    account = cfg["account"]
    fields = _apply_account(tx, account, cfg["low_balance_alert"], now_ms, trail)
    if prices.apply_aliases(tx, account, cfg["type_aliases"]) and fields is not None:
        fields.append("type_aliases")
    note("account", account, fields)
    # A file's prices are its account's, unless it says they are everyone's.
    scope = None if cfg["prices_scope"] == "global" else account
    wanted = dict(cfg["prices"])
    if cfg["default_price"] is not None:
        wanted[DEFAULT_TYPE] = cfg["default_price"]
    for type_, price_fields, before in prices.apply_prices(tx, scope, wanted, now_ms):
        name = "default_price" if type_ == DEFAULT_TYPE else type_
        note("price", name, price_fields)
        after = {"price": _money(wanted[type_]), "scope": "global" if scope is None else "account"}
        if price_fields is None:
            trail.add("price.create", "price", name, account, None, after)
        elif price_fields:
            trail.add("price.update", "price", name, account, {"price": _money(before)}, after)

    users = cfg["users"]
    user_rows = accounts.locked_rows(tx, "users", accounts.USER_COLUMNS, [u["id"] for u in users])
    existing_users = {r["id"]: r for r in user_rows}
    keys = [(user["id"], key) for user in users for key in user["keys"]]
    key_rows = accounts.locked_rows(
        tx, "api_keys", accounts.KEY_COLUMNS, [k["id"] for _, k in keys]
    )
    existing_keys = {r["id"]: accounts.key_row(r) for r in key_rows}
    _refuse_other_accounts(account, existing_users, existing_keys)  # rolls back all of it
    deleted = sorted(k for k, r in existing_keys.items() if r["deleted_ms"] is not None)
    if deleted:
        # Never brought back silently: the file must drop the key (or give it a new id).
        raise Conflict(
            f"key(s) {', '.join(map(repr, deleted))} were deleted; remove them from the file"
            " (a deleted key's id is not reused)",
            "key_deleted",
        )
    hashes = _secret_hashes(tx, keys, existing_keys, secrets)

    for user in users:
        note("user", user["id"], _apply_user(tx, user, account, existing_users, now_ms, trail))
    for user_id, key in keys:
        fields = _apply_key(
            tx, key, user_id, account, hashes[key["id"]], existing_keys, now_ms, actor, trail
        )
        note("key", key["id"], fields)

    version = accounts.config_version(tx)
    if created or changed:
        version = accounts.bump_version(tx, _config_changes(account, [*created, *changed]))
        counts = {"created": len(created), "changed": len(changed), "config_version": version}
        trail.write(tx, actor, ("config.apply", "account", account, account, counts), now_ms)
    return {
        "created": created,
        "changed": changed,
        "unchanged": unchanged,
        # Generated secrets are shown once; a dry run stores nothing, so it shows none.
        "secrets": {} if dry_run else secrets,
        "config_version": version,
        "dry_run": dry_run,
    }


def _config_changes(account: str, noted: list[dict]) -> list[tuple[str, str]]:
    """What agents must fetch again (configdelta): an account's or price's change re-sends the
    price section (which holds the account's prices and type aliases)."""
    kinds = {"key": configdelta.KEY, "user": configdelta.USER}
    return [
        (kinds[n["kind"]], n["id"]) if n["kind"] in kinds else (configdelta.PRICING, account)
        for n in noted
    ]


def _refuse_other_accounts(account: str, users: dict[str, dict], keys: dict[str, dict]) -> None:
    """A file applies to its own account: a user or key id another account owns is refused
    (all of them named), never moved."""
    theirs = [
        f"{kind} {ident!r} (account {row['account']!r})"
        for kind, rows in (("user", users), ("key", keys))
        for ident, row in rows.items()
        if row["account"] != account
    ]
    if theirs:
        raise Conflict(
            f"this file is for account {account!r}, but these belong to another account: "
            + ", ".join(theirs),
            "owned_by_another_account",
        )


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
        in_wanted = marks(len(wanted))
        owners = tx.all(
            f"SELECT id, secret_hash FROM api_keys WHERE secret_hash IN ({in_wanted})"
            f" UNION ALL SELECT id, previous_secret_hash FROM api_keys"
            f" WHERE previous_secret_hash IN ({in_wanted})",
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
    in_ids = marks(len(ids))
    return dict(tx.all(f"SELECT id, config_secret_hash FROM api_keys WHERE id IN ({in_ids})", ids))


def _money(micros: int | None) -> str | None:
    return None if micros is None else format_micros(int(micros))


def _hooks(urls: list[str]) -> list[str]:
    # Scheme, host and port only: webhook paths and queries often carry tokens.
    return sorted(notifications.redact(url) for url in urls)


def _apply_account(
    tx: Tx, account: str, alert: dict | None, now_ms: int, trail: audit.Trail
) -> list[str] | None:
    enabled = 1 if alert and alert["enabled"] else 0
    threshold = alert["threshold"] if alert else None
    # The file is the whole truth about its account's webhooks: absent ones are removed.
    webhooks = alert["webhooks"] if alert else []
    want = {
        "low_balance_enabled": bool(enabled),
        "low_balance_threshold": _money(threshold),
        "webhooks": _hooks([w["url"] for w in webhooks]),
    }
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
        trail.add("account.create", "account", account, account, None, want)
        return None
    fields = []
    # Read under the account's row lock (taken above): the webhooks another apply left.
    old_urls = tx.all(
        "SELECT url FROM notification_targets WHERE account = ?" + tx.dialect.for_update,
        (account,),
    )
    have = {
        "low_balance_enabled": bool(row[0]),
        "low_balance_threshold": _money(row[1]),
        "webhooks": _hooks([url for (url,) in old_urls]),
    }
    if (row[0], row[1]) != (enabled, threshold):
        settings = {"low_balance_enabled": enabled, "low_balance_threshold_micros": threshold}
        accounts.update_row(tx, "accounts", account, settings, now_ms)
        fields.append("low_balance_alert")
    if notifications.apply_targets(tx, account, webhooks, now_ms=now_ms):
        fields.append("webhooks")
    if fields:
        before, after = audit.changes(have, want)
        if "webhooks" in fields and "webhooks" not in after:
            after["webhook_signing"] = "replaced"  # same hosts, a new signing value
        trail.add("account.update", "account", account, account, before, after)
    return fields


def _apply_user(
    tx: Tx, user: dict, account: str, existing: dict[str, dict], now_ms: int, trail: audit.Trail
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
        trail.add(
            "user.create", "user", user["id"], account, None, {**want, "active": user["active"]}
        )
        return None
    fields = [name for name, value in want.items() if row[name] != value]
    if fields:
        accounts.update_row(tx, "users", user["id"], {f: want[f] for f in fields}, now_ms)
        flag = {"active": bool}
        before = {f: flag.get(f, lambda v: v)(row[f]) for f in fields}
        after = {f: flag.get(f, lambda v: v)(want[f]) for f in fields}
        trail.add("user.update", "user", user["id"], account, before, after)
    return fields


def _apply_key(
    tx: Tx,
    key: dict,
    user_id: str,
    account: str,
    secret_hash: str | None,
    existing: dict[str, dict],
    now_ms: int,
    actor: str | None,
    trail: audit.Trail,
) -> list[str] | None:
    want = {"user_id": user_id, "account": account, **{f: key[f] for f in _KEY_SETTINGS}}
    # The file's own secret, remembered so that only a change in the file replaces it.
    declared = secret_hash if key["secret"] is not None else None
    row = existing.get(key["id"])
    if row is None:
        accounts.insert_key(
            tx,
            key,
            user_id=user_id,
            account=account,
            secret_hash=secret_hash,
            reason=OPENING_REASON,
            now_ms=now_ms,
            actor=actor,
            config_secret_hash=declared,
        )
        trail.add("key.create", "key", key["id"], account, None, keys.audit_view(key, user_id))
        return None
    fields = [name for name, value in want.items() if accounts.key_field(name, row) != value]
    before = {f: accounts.key_field(f, row) for f in fields}
    after = {f: want[f] for f in fields}
    columns: dict[str, Any] = {}
    for name in fields:
        columns.update(accounts.key_columns(name, want[name], now_ms))
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
            columns["secret_hash"] = secret_hash
            after["credential"] = "replaced by the file's"  # which one is never recorded
    if columns:
        accounts.update_row(tx, "api_keys", key["id"], columns, now_ms)
    if before or after:
        trail.add("key.update", "key", key["id"], account, before, after)
    return fields
