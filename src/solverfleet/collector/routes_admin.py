"""The admin API (``/admin/v1/*``): team config, keys, users, usage, fleet, tokens.

Every route is for admins unless marked ``@auth.roles("admin", "user")``; a user token sees
only its own data (``auth.scope()``), and another user's key answers 404 like a missing one.
Every bad input is a 4xx JSON error and changes nothing: bodies are parsed and checked in
full before the single transaction that applies them.

The POSTs that move money or create something honour an ``Idempotency-Key`` header
(``@idempotent``; ``collector.idempotency``): each passes ``guard()`` to its change, which
records the key in the change's own transaction.
"""

from __future__ import annotations

from flask import Blueprint, g, jsonify, request

from solverfleet.collector import accounts, audit, auth, keys, leases, teamapply, tokens, users
from solverfleet.collector.context import current
from solverfleet.collector.errors import bad_request, read_object
from solverfleet.collector.idempotency import guard, idempotent
from solverfleet.collector.problems import Conflict, NotFound
from solverfleet.collector.reporting import reports
from solverfleet.collector.reporting.timerange import parse_range
from solverfleet.money import MoneyError, to_micros

AUDIT_PARAMS = (*audit.FILTERS, "since", "until", "limit", "cursor")

bp = Blueprint("admin", __name__, url_prefix="/admin/v1")


@bp.before_request
def _guard() -> None:
    setting = "apply_max_body" if request.endpoint == "admin.apply" else "admin_max_body"
    request.max_content_length = getattr(current().settings, setting)
    g.body_limit_setting = setting  # named by the 413, so the operator knows what to raise
    auth.check()


def _flag(name: str) -> bool:
    value = request.args.get(name, "0").lower()
    if value in ("1", "true", "yes"):
        return True
    if value in ("0", "false", "no", ""):
        return False
    raise bad_request(f"query parameter {name} must be 0 or 1")


def _limit(default: int = 100) -> int:
    raw = request.args.get("limit", str(default))
    digits = raw.isascii() and raw.isdigit() and len(raw) <= 9
    if not digits or not 1 <= int(raw) <= reports.MAX_LIMIT:
        raise bad_request(f"limit must be a whole number from 1 to {reports.MAX_LIMIT}")
    return int(raw)


def _no_body() -> None:
    # Actions that take no body: a body with fields in it is a mistake worth reporting.
    if request.get_data(cache=True).strip():
        read_object(())


def _optional_object(allowed: tuple[str, ...]) -> dict:
    return read_object(allowed) if request.get_data(cache=True).strip() else {}


@bp.get("/whoami")
@auth.roles("admin", "user")
def whoami():
    who = auth.principal()
    return jsonify({"role": who.role, "user_id": who.user_id, "token_id": who.token_id})


@bp.post("/apply")
@idempotent
def apply():
    dry_run = _flag("dry_run")
    data = read_object(max_items=teamapply.MAX_ITEMS)
    c = current()  # apply_config validates (400 invalid_config with every error) before writing
    result = teamapply.apply_config(
        c.db,
        data,
        dry_run=dry_run,
        now_ms=c.now_ms(),
        actor=auth.principal().actor,
        guard=guard(),
    )
    return jsonify(result)


# --- keys -------------------------------------------------------------------------------------


@bp.get("/keys")
@auth.roles("admin", "user")
def list_keys():
    return jsonify({"keys": accounts.list_keys(current().db, user_id=auth.scope())})


@bp.post("/keys")
@idempotent
def create_key():
    data = read_object(keys.CREATE_FIELDS)
    c = current()
    created = keys.create(
        c.db, data, now_ms=c.now_ms(), actor=auth.principal().actor, guard=guard()
    )
    return jsonify(created), 201


@bp.get("/keys/<key_id>")
@auth.roles("admin", "user")
def key(key_id: str):
    return jsonify(accounts.get_key(current().db, key_id, user_id=auth.scope()))


@bp.patch("/keys/<key_id>")
def update_key(key_id: str):
    data = read_object(keys.LIMIT_FIELDS)
    c = current()
    actor = auth.principal().actor
    return jsonify(keys.update_limits(c.db, key_id, data, now_ms=c.now_ms(), actor=actor))


@bp.delete("/keys/<key_id>")
def delete_key(key_id: str):
    _no_body()
    c = current()
    actor = auth.principal().actor
    return jsonify(keys.delete(c.db, key_id, now_ms=c.now_ms(), actor=actor))


@bp.post("/keys/<key_id>/rotate")
@idempotent
def rotate_key(key_id: str):
    data = _optional_object(("grace_seconds",))
    grace = keys.grace_seconds(data.get("grace_seconds"))
    c = current()
    actor = auth.principal().actor
    return jsonify(keys.rotate(c.db, key_id, grace, now_ms=c.now_ms(), actor=actor, guard=guard()))


@bp.get("/keys/<key_id>/transactions")
@auth.roles("admin", "user")
def key_transactions(key_id: str):
    rows = keys.transactions(current().db, key_id, user_id=auth.scope(), limit=_limit())
    return jsonify({"key": key_id, "transactions": rows})


@bp.post("/keys/<key_id>/topup")
@idempotent
def topup(key_id: str):
    data = read_object(("amount", "reason"))
    if "amount" not in data:
        raise bad_request("amount is required", "invalid_amount")
    try:
        micros = to_micros(data["amount"])
    except (MoneyError, ArithmeticError) as exc:
        raise bad_request(f"amount: {exc}", "invalid_amount") from None
    reason = data.get("reason", "top-up")
    if not isinstance(reason, str) or not reason.strip() or len(reason) > 255:
        raise bad_request("reason must be a string of 1 to 255 characters")
    c = current()
    result = accounts.topup(
        c.db,
        key_id,
        micros,
        reason,
        now_ms=c.now_ms(),
        actor=auth.principal().actor,
        guard=guard(),
    )
    return jsonify(result)


def _set_active(kind: str, ident: str, active: bool):
    _no_body()
    c = current()
    actor = auth.principal().actor
    return jsonify(accounts.set_active(c.db, kind, ident, active, now_ms=c.now_ms(), actor=actor))


@bp.post("/keys/<key_id>/deactivate")
def deactivate_key(key_id: str):
    return _set_active("key", key_id, False)


@bp.post("/keys/<key_id>/activate")
def activate_key(key_id: str):
    return _set_active("key", key_id, True)


# --- users, usage, fleet ----------------------------------------------------------------------


@bp.post("/users/<user_id>/deactivate")
def deactivate_user(user_id: str):
    return _set_active("user", user_id, False)


@bp.post("/users/<user_id>/activate")
def activate_user(user_id: str):
    return _set_active("user", user_id, True)


@bp.get("/users")
def list_users():
    return jsonify({"users": accounts.list_users(current().db)})


@bp.post("/users")
@idempotent
def create_user():
    data = read_object(users.CREATE_FIELDS)
    c = current()
    created = users.create(
        c.db, data, now_ms=c.now_ms(), actor=auth.principal().actor, guard=guard()
    )
    return jsonify(created), 201


@bp.get("/usage")
@auth.roles("admin", "user")
def usage():
    key_id = request.args.get("key_id") or None
    events = reports.usage(current().db, key_id=key_id, limit=_limit(), user_id=auth.scope())
    return jsonify({"events": events, "count": len(events)})


@bp.get("/summary")
def summary():
    return jsonify(reports.summary(current().db))


@bp.get("/agents")
def agents():
    return jsonify({"agents": reports.agents(current().db)})


@bp.delete("/agents/<agent_id>")
def forget_agent(agent_id: str):
    """The agent's host is gone for good: return what its leases held to the pool."""
    _no_body()
    c = current()
    actor = auth.principal().actor
    try:
        done = leases.forget(c.db, agent_id, now_ms=c.now_ms(), ttl_ms=c.ttl_ms, actor=actor)
    except leases.AgentAlive:
        raise Conflict(
            f"agent {agent_id} synced within lease_ttl ({c.settings.lease_ttl:g} s): stop it"
            " first; a live agent keeps spending what it holds",
            "agent_alive",
        ) from None
    if done is None:
        raise NotFound(f"no agent {agent_id}")
    return jsonify(done)


# --- tokens -----------------------------------------------------------------------------------


@bp.post("/tokens")
@idempotent
def create_token():
    data = read_object(("role", "user_id", "label", "agent_id"))
    c = current()
    created = tokens.create(
        c.db,
        role=data.get("role"),
        user_id=data.get("user_id"),
        label=data.get("label"),
        agent_id=data.get("agent_id"),
        now_ms=c.now_ms(),
        actor=auth.principal().actor,
        guard=guard(),
    )
    return jsonify(created), 201


@bp.get("/tokens")
def list_tokens():
    return jsonify({"tokens": tokens.list_tokens(current().db)})


@bp.post("/tokens/<int:token_id>/revoke")
def revoke_token(token_id: int):
    _no_body()
    c = current()
    actor = auth.principal().actor
    return jsonify({"token": tokens.revoke(c.db, token_id, now_ms=c.now_ms(), actor=actor)})


# --- audit log --------------------------------------------------------------------------------


@bp.get("/audit")
def audit_log():
    """Admin changes newest first; filters as in ``audit.AuditFilter``, paged by ``cursor``."""
    args = request.args
    unknown = sorted(set(args) - set(AUDIT_PARAMS))
    if unknown:  # strict, like every admin query: a typo must not widen what is listed
        raise bad_request(
            f"unknown query parameter(s): {', '.join(unknown)}"
            f" (allowed: {', '.join(AUDIT_PARAMS)})",
            "unknown_parameter",
        )
    repeated = sorted(name for name in args if len(args.getlist(name)) > 1)
    if repeated:
        raise bad_request(f"query parameter given twice: {', '.join(repeated)}")
    given = {name: value for name, value in args.items() if value != ""}
    c = current()
    filters = audit.AuditFilter(
        **{name: given.get(name) for name in audit.FILTERS},
        range=parse_range(given.get("since"), given.get("until"), c.now_ms()),
    )
    limit = audit.check_limit(given.get("limit", audit.DEFAULT_LIMIT))
    return jsonify(audit.list_entries(c.db, filters, limit=limit, cursor=given.get("cursor")))
