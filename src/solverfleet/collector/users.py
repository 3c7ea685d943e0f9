"""Creating a user through the admin API (``POST /admin/v1/users``).

Fields are checked by the team-config user validator (``teamconfig.parse_user``), so a user made
here obeys exactly the rules of one written in a team config file. The account must exist
already (a team config creates accounts, with their alerts and prices).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from solverfleet import teamconfig
from solverfleet.collector import accounts, audit, configdelta
from solverfleet.collector.problems import ConfigInvalid, Conflict, Invalid
from solverfleet.collector.store import Database, Tx

CREATE_FIELDS = teamconfig.parser.USER_CREATE_FIELDS


class UserInvalid(ConfigInvalid):
    code = "invalid"


def create(
    db: Database,
    data: dict[str, Any],
    *,
    now_ms: int,
    actor: str | None = None,
    guard: Callable[[Tx], None] | None = None,
) -> dict:
    """A new user: ``{"user": {...}}`` as ``accounts.list_users`` shows it. ``guard`` runs in
    the same transaction (the request's Idempotency-Key record)."""
    try:
        user = teamconfig.parse_user(data)
    except teamconfig.TeamConfigError as exc:
        raise UserInvalid(exc.errors) from None

    def work(tx: Tx) -> None:
        if tx.one("SELECT id FROM accounts WHERE id = ?", (user["account"],)) is None:
            raise Invalid(
                f"account {user['account']!r} does not exist (a team config creates it:"
                " solverfleet apply)",
                "unknown_account",
            )
        if tx.one("SELECT id FROM users WHERE id = ?", (user["id"],)) is not None:
            raise Conflict(f"user {user['id']!r} already exists", "user_exists")
        row = {f: user[f] for f in ("account", "email", "role", "daily_limit")}
        tx.execute(
            "INSERT INTO users (id, account, email, role, daily_limit, active, updated_ms)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (user["id"], *row.values(), 1 if user["active"] else 0, now_ms),
        )
        accounts.bump_version(tx, [(configdelta.USER, user["id"])])
        after = {**row, "active": user["active"]}
        audit.record(
            tx, actor, "user.create", "user", user["id"], user["account"], None, after,
            now_ms=now_ms,
        )  # fmt: skip
        if guard is not None:
            guard(tx)

    db.transaction(work)
    created = [u for u in accounts.list_users(db) if u["id"] == user["id"]]
    return {"user": created[0]}
