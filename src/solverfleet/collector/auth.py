"""Who is calling, and may they: bearer token -> ``Principal`` -> role check per route.

Roles (docs/ARCHITECTURE.md, "Access"): ``admin`` may use the whole admin API; ``user`` may
read its own keys, usage, log and reports (routes marked with ``roles("admin", "user")``, their
queries scoped by ``scope()``); ``service`` may use the fleet protocol (``/agent/v1``) only.
The settings' ``admin_token`` is always an admin and ``fleet_token`` always a service; other
tokens are stored hashed (``collector.tokens``). A stored service token may be bound to one
agent id (``Principal.agent_id``); ``same_agent`` refuses a bound caller that names another agent.

Each blueprint runs ``check()`` before every request. A route without a ``roles`` mark is
open to the blueprint's default roles only (admin on the admin API), so a new route is never
open to users by accident. No or an unknown token: 401; a known token with the wrong role: 403.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from flask import current_app, g, request

from solverfleet.collector.context import current
from solverfleet.collector.problems import Forbidden, Unauthorized
from solverfleet.keyhash import tokens_equal

F = TypeVar("F", bound=Callable)
ADMIN = ("admin",)
FLEET = ("service",)
_MARK = "solverfleet_roles"


@dataclass(frozen=True)
class Principal:
    role: str  # admin | user | service
    user_id: str | None = None  # for role user
    token_id: int | None = None  # None: a token from the settings (bootstrap)
    agent_id: str | None = None  # for role service: the one agent this token speaks for

    @property
    def actor(self) -> str:
        """Who did it, as recorded with ledger transactions and created tokens."""
        return "bootstrap" if self.token_id is None else f"token:{self.token_id}"


def bearer() -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip() or None


def _identify() -> Principal:
    token = bearer()
    if token is None:
        raise Unauthorized("missing bearer token (Authorization: Bearer <token>)")
    return identify(token)


def identify(token: str) -> Principal:
    """Who ``token`` speaks for (also the dashboard's login); 401 unknown/revoked, 403 disabled."""
    c = current()
    if tokens_equal(token, c.settings.admin_token):
        return Principal("admin")
    if tokens_equal(token, c.settings.fleet_token):
        return Principal("service")
    if c.settings.fleet_token_previous and tokens_equal(token, c.settings.fleet_token_previous):
        return Principal("service")  # a fleet token rotation in progress
    found = c.tokens.lookup(token, now_ms=c.now_ms())
    if found is None:
        raise Unauthorized("unknown or revoked bearer token")
    if found.user_id is not None and not found.user_active:
        raise Forbidden("the user of this token is deactivated", "user_disabled")
    if found.above_user:
        raise Forbidden(
            f"this {found.role} token's user {found.user_id!r} now has the role "
            f"{found.user_role!r} in the team config, below the token's role",
            "role_above_user",
        )
    return Principal(found.role, found.user_id, found.id, found.agent_id)


def principal() -> Principal:
    """The caller of this request (authenticated once per request)."""
    who = g.get("solverfleet_principal")
    if who is None:
        who = g.solverfleet_principal = _identify()
    return who


def same_agent(*agent_ids: str | None) -> None:
    """403 ``agent_mismatch`` if the caller is bound to an agent and any id names another."""
    bound = principal().agent_id
    if bound is None:
        return
    for agent_id in agent_ids:
        if agent_id is not None and agent_id != bound:
            raise Forbidden(
                f"this service token is bound to agent {bound!r}, not {agent_id!r}",
                "agent_mismatch",
            )


def scope() -> str | None:
    """The user whose data this request may see: a user token's user, None for admins."""
    who = principal()
    return who.user_id if who.role == "user" else None


def roles(*allowed: str) -> Callable[[F], F]:
    """Mark a view function with the roles that may call it (beside its blueprint's default)."""

    def mark(fn: F) -> F:
        setattr(fn, _MARK, frozenset(allowed))
        return fn

    return mark


def allowed_roles(endpoint: str, default: tuple[str, ...] = ADMIN) -> frozenset[str]:
    view = current_app.view_functions.get(endpoint)
    return getattr(view, _MARK, frozenset(default))


def check(default: tuple[str, ...] = ADMIN) -> Principal:
    """Authenticate and authorize this request; call from a blueprint's ``before_request``."""
    who = principal()
    if request.endpoint is None:  # no route matched: let Flask answer 404/405
        return who
    allowed = allowed_roles(request.endpoint, default)
    if who.role not in allowed:
        if who.role == "service":
            message = "a service token may only call the fleet protocol (/agent/v1)"
        elif allowed == frozenset(FLEET):
            message = "the fleet protocol needs a service token"
        else:
            message = f"this needs the {' or '.join(sorted(allowed))} role, not {who.role}"
        raise Forbidden(message)
    return who
