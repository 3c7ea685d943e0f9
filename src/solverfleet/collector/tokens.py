"""Bearer tokens for the admin API (roles admin, user) and the fleet protocol (service).

A token is shown once, when it is created; only its sha256 is stored, so a copy of the
database lets nobody in. Tokens are 32 random bytes, so a fast hash is enough (as for API keys).
The settings' ``admin_token`` and ``fleet_token`` are not stored here: they stay valid as the
bootstrap admin and service credentials (``collector.auth``).

A service token may be bound to one agent id (``agent_id``): it then speaks for that agent only,
and the collector checks the agent's usage against what it was granted (docs/ARCHITECTURE.md,
"Per-host credentials"). Revoking it cuts off that one host.

An admin or user token may speak for a user (``user_id``; a user token must). That user's role
in the team config is the highest role the token may have (``ROLE_CAP``): an ``admin`` user may
hold admin and user tokens, a ``user`` only user tokens, a ``service`` user no admin-API token.
It is checked when the token is made (403 ``role_above_user``) and again on every use, so
lowering a user's role in the team config also lowers what their tokens can do.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from solverfleet.collector import audit
from solverfleet.collector.problems import Forbidden, Invalid, NotFound
from solverfleet.collector.store import Database, Tx
from solverfleet.keyhash import hash_secret
from solverfleet.teamconfig import ROLES

TOKEN_PREFIX = "sft_"
# last_used is a heartbeat, not an audit trail: one write a minute per token at most.
TOUCH_EVERY_MS = 60_000
MAX_LABEL = 128
COLUMNS = "id, role, user_id, agent_id, label, created_ms, created_by, last_used_ms, revoked_ms"
MAX_AGENT_ID = 128
CACHE_S = 0.05  # longest TokenCache answers without the store (another process's revocation)
CACHE_ENTRIES = 10_000
# Admin-API roles by rank, and the highest rank a token of a user with each team-config role
# may have (a service user is for the fleet, not the admin API).
RANK = {"user": 1, "admin": 2}
ROLE_CAP = {"admin": 2, "user": 1, "service": 0}


@dataclass(frozen=True)
class Found:
    """A live token that matched: who it speaks for."""

    id: int
    role: str
    user_id: str | None
    user_active: bool
    agent_id: str | None = None  # a service token bound to one agent
    user_role: str | None = None  # the team-config role of the token's user

    @property
    def above_user(self) -> bool:
        """A token whose role is above its user's (the user's role was lowered since)."""
        return self.user_id is not None and not within_cap(self.role, self.user_role)


def within_cap(token_role: str, user_role: str | None) -> bool:
    return RANK.get(token_role, 99) <= ROLE_CAP.get(user_role or "", 0)


def cap_problem(token_role: str, user_id: str, user_role: str) -> Forbidden:
    allowed = [r for r, rank in RANK.items() if rank <= ROLE_CAP.get(user_role, 0)]
    may = " or ".join(allowed) + " tokens" if allowed else "no admin API tokens"
    return Forbidden(
        f"user {user_id!r} has the role {user_role!r} in the team config, so their tokens may "
        f"have at most that role ({may}), not {token_role}",
        "role_above_user",
    )


def generate() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def _seconds(ms: Any) -> float | None:
    return None if ms is None else int(ms) / 1000


def public(row: dict[str, Any]) -> dict[str, Any]:
    """A token as the API shows it: never the token, never its hash."""
    return {
        "id": int(row["id"]),
        "role": row["role"],
        "user_id": row["user_id"],
        "agent_id": row["agent_id"],
        "label": row["label"],
        "created": _seconds(row["created_ms"]),
        "created_by": row["created_by"],
        "last_used": _seconds(row["last_used_ms"]),
        "revoked": _seconds(row["revoked_ms"]),
        "active": row["revoked_ms"] is None,
    }


def check_agent_id(role: Any, agent_id: Any) -> str | None:
    """An agent binding is for service tokens only: 1 to 128 printable characters, no spaces."""
    if agent_id is None:
        return None
    if role != "service":
        raise Invalid(f"agent_id is only for service tokens, not {role} tokens", "invalid")
    if (
        not isinstance(agent_id, str)
        or not 0 < len(agent_id) <= MAX_AGENT_ID
        or not agent_id.isprintable()
        or any(c.isspace() for c in agent_id)
    ):
        raise Invalid(
            f"agent_id must be 1 to {MAX_AGENT_ID} printable characters without spaces", "invalid"
        )
    return agent_id


def check_request(role: Any, user_id: Any, label: Any) -> tuple[str, str | None, str | None]:
    """Validate a create request's fields (types and combinations); 400 on any problem."""
    if role not in ROLES:
        raise Invalid(f"role must be one of {', '.join(ROLES)}", "invalid_role")
    if role == "user" and (not isinstance(user_id, str) or not user_id):
        raise Invalid("a user token needs the user_id of an existing user", "invalid")
    if role == "service" and user_id is not None:
        raise Invalid("user_id is only for admin and user tokens, not service tokens", "invalid")
    if user_id is not None and (not isinstance(user_id, str) or not user_id):
        raise Invalid("user_id must be the id of an existing user", "invalid")
    if label is not None and (
        not isinstance(label, str)
        or not label.strip()
        or len(label) > MAX_LABEL
        or not label.isprintable()
    ):
        raise Invalid(f"label must be 1 to {MAX_LABEL} printable characters", "invalid")
    return role, user_id, label


def create(
    db: Database,
    *,
    role: Any,
    user_id: Any = None,
    label: Any = None,
    agent_id: Any = None,
    now_ms: int,
    actor: str | None = None,
    guard: Callable[[Tx], None] | None = None,
) -> dict:
    """A new token: ``{"token": public fields, "secret": the token}`` (shown this once).

    A token for a user may not have a role above the user's (403 ``role_above_user``).
    ``guard`` runs in the same transaction (the request's Idempotency-Key record)."""
    role, user_id, label = check_request(role, user_id, label)
    agent_id = check_agent_id(role, agent_id)
    secret = generate()

    def work(tx: Tx) -> int:
        account = None
        if user_id is not None:
            user = tx.one("SELECT role, account FROM users WHERE id = ?", (user_id,))
            if user is None:
                raise Invalid(f"user {user_id!r} does not exist", "unknown_user")
            if not within_cap(role, user[0]):
                raise cap_problem(role, user_id, user[0])
            account = user[1]
        token_id = tx.insert(
            "INSERT INTO api_tokens"
            " (role, user_id, agent_id, label, token_hash, created_ms, created_by)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (role, user_id, agent_id, label, hash_secret(secret), now_ms, actor),
        )
        after = {"role": role, "user_id": user_id, "agent_id": agent_id, "label": label}
        audit.record(
            tx, actor, "token.create", "token", token_id, account, None, after, now_ms=now_ms
        )
        if guard is not None:
            guard(tx)
        return token_id

    token_id = db.transaction(work)
    return {"token": get(db, token_id), "secret": secret}


def get(db: Database, token_id: int) -> dict:
    rows = db.read(
        lambda tx: tx.dicts(f"SELECT {COLUMNS} FROM api_tokens WHERE id = ?", (token_id,))
    )
    if not rows:
        raise NotFound(f"token {token_id} does not exist")
    return public(rows[0])


def list_tokens(db: Database, *, user_id: str | None = None) -> list[dict]:
    """Every token (revoked ones too, marked), oldest first; or only ``user_id``'s."""
    where, params = ("WHERE user_id = ? ", (user_id,)) if user_id is not None else ("", ())
    rows = db.read(
        lambda tx: tx.dicts(f"SELECT {COLUMNS} FROM api_tokens {where}ORDER BY id", params)
    )
    return [public(r) for r in rows]


def revoke(db: Database, token_id: int, *, now_ms: int, actor: str | None = None) -> dict:
    """Revoke a token: refused from the next request on. Revoking twice keeps the first time."""

    def work(tx: Tx) -> None:
        row = tx.one(
            "SELECT revoked_ms, role, label FROM api_tokens WHERE id = ?" + tx.dialect.for_update,
            (token_id,),
        )
        if row is None:
            raise NotFound(f"token {token_id} does not exist")
        if row[0] is None:
            tx.execute("UPDATE api_tokens SET revoked_ms = ? WHERE id = ?", (now_ms, token_id))
            audit.record(
                tx,
                actor,
                "token.revoke",
                "token",
                token_id,
                None,
                {"active": True, "role": row[1], "label": row[2]},
                {"active": False, "revoked_ms": now_ms},
                now_ms=now_ms,
            )

    db.transaction(work)
    return get(db, token_id)


def lookup(db: Database, secret: str, *, now_ms: int) -> Found | None:
    """The live token ``secret`` is, or None (unknown or revoked)."""
    digest = hash_secret(secret)
    row = db.read(
        lambda tx: tx.one(
            "SELECT t.id, t.role, t.user_id, t.revoked_ms, t.last_used_ms, u.active, t.agent_id,"
            " u.role"
            " FROM api_tokens t LEFT JOIN users u ON u.id = t.user_id WHERE t.token_hash = ?",
            (digest,),
        )
    )
    if row is None or row[3] is not None:
        return None
    token_id, role, user_id, _, last_used, user_active, agent_id, user_role = row
    if last_used is None or now_ms - int(last_used) >= TOUCH_EVERY_MS:
        db.transaction(
            lambda tx: tx.execute(
                "UPDATE api_tokens SET last_used_ms = ? WHERE id = ?", (now_ms, token_id)
            )
        )
    return Found(int(token_id), role, user_id, bool(user_active), agent_id, user_role)


class TokenCache:
    """Live tokens as last looked up, so an agent's sync with its own credential reads nothing
    when the rest of the answer needs no store either (heartbeat.IdleView). An entry holds while
    this process commits no write (a revocation, a user change here) and for at most
    ``CACHE_S``: a token revoked through another collector process stops within that. Unknown
    tokens are not kept."""

    def __init__(self, db: Database, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.db = db
        self.monotonic = monotonic
        self._lock = threading.Lock()
        # digest -> (writes, when, when by the collector's clock, found)
        self._found: dict[str, tuple[int, float, int, Found]] = {}

    def lookup(self, secret: str, *, now_ms: int) -> Found | None:
        digest = hash_secret(secret)
        writes, now = self.db.writes, self.monotonic()
        with self._lock:
            hit = self._found.get(digest)
        if (
            hit is not None
            and hit[0] == writes
            and 0 <= now - hit[1] < CACHE_S
            and 0 <= now_ms - hit[2] < CACHE_S * 1000  # last_used stays as fresh as before
        ):
            return hit[3]
        found = lookup(self.db, secret, now_ms=now_ms)
        with self._lock:
            if found is None:
                self._found.pop(digest, None)
            else:
                if len(self._found) >= CACHE_ENTRIES:
                    self._found.clear()
                self._found[digest] = (writes, now, now_ms, found)  # writes read before
        return found
