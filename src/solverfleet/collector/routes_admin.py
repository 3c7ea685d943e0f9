"""The admin API (``/admin/v1/*``), authenticated with the admin token.

Every bad input is a 4xx JSON error and changes nothing: bodies are parsed and checked in
full before the single transaction that applies them.
"""

from __future__ import annotations

from flask import Blueprint, jsonify, request

from solverfleet.collector import accounts, auth, reports
from solverfleet.collector.context import current
from solverfleet.collector.errors import bad_request, read_object
from solverfleet.money import MoneyError, to_micros

MAX_BODY = 1024 * 1024

bp = Blueprint("admin", __name__, url_prefix="/admin/v1")


@bp.before_request
def _guard() -> None:
    request.max_content_length = MAX_BODY
    auth.require(current().settings.admin_token, "admin")


def _flag(name: str) -> bool:
    value = request.args.get(name, "0").lower()
    if value in ("1", "true", "yes"):
        return True
    if value in ("0", "false", "no", ""):
        return False
    raise bad_request(f"query parameter {name} must be 0 or 1")


@bp.post("/apply")
def apply():
    dry_run = _flag("dry_run")
    data = read_object()
    c = current()  # apply_config validates (400 invalid_config with every error) before writing
    return jsonify(accounts.apply_config(c.db, data, dry_run=dry_run, now_ms=c.now_ms()))


@bp.get("/keys")
def keys():
    return jsonify({"keys": accounts.list_keys(current().db)})


@bp.get("/keys/<key_id>")
def key(key_id: str):
    return jsonify(accounts.get_key(current().db, key_id))


@bp.post("/keys/<key_id>/topup")
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
    return jsonify(accounts.topup(c.db, key_id, micros, reason, now_ms=c.now_ms()))


def _set_active(kind: str, ident: str, active: bool):
    # These actions take no body; a body with fields in it is a mistake worth reporting.
    if request.get_data(cache=True).strip():
        read_object(())
    c = current()
    return jsonify(accounts.set_active(c.db, kind, ident, active, now_ms=c.now_ms()))


@bp.post("/keys/<key_id>/deactivate")
def deactivate_key(key_id: str):
    return _set_active("key", key_id, False)


@bp.post("/keys/<key_id>/activate")
def activate_key(key_id: str):
    return _set_active("key", key_id, True)


@bp.post("/users/<user_id>/deactivate")
def deactivate_user(user_id: str):
    return _set_active("user", user_id, False)


@bp.post("/users/<user_id>/activate")
def activate_user(user_id: str):
    return _set_active("user", user_id, True)


@bp.get("/users")
def users():
    return jsonify({"users": accounts.list_users(current().db)})


@bp.get("/usage")
def usage():
    key_id = request.args.get("key_id") or None
    raw = request.args.get("limit", "100")
    if not raw.isdigit() or not 1 <= int(raw) <= reports.MAX_LIMIT:
        raise bad_request(f"limit must be a whole number from 1 to {reports.MAX_LIMIT}")
    events = reports.usage(current().db, key_id=key_id, limit=int(raw))
    return jsonify({"events": events, "count": len(events)})


@bp.get("/summary")
def summary():
    return jsonify(reports.summary(current().db))


@bp.get("/agents")
def agents():
    return jsonify({"agents": reports.agents(current().db)})
