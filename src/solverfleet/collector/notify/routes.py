"""``GET /admin/v1/notifications``: stored low-balance notifications and deferred crossings.

The query logic is in ``notifications`` (db in, dicts out) for the dashboard to reuse.
"""

from __future__ import annotations

import re

from flask import Blueprint, Flask, jsonify, request

from solverfleet.collector import auth
from solverfleet.collector.context import Collector, current
from solverfleet.collector.errors import bad_request
from solverfleet.collector.notify import notifications, sender
from solverfleet.collector.reporting.timerange import parse_time

bp = Blueprint("notifications", __name__, url_prefix="/admin/v1")

PARAMS = ("account", "since", "limit")
_LIMIT = re.compile(r"[0-9]{1,7}").fullmatch


def register(app: Flask, collector: Collector) -> None:
    """The blueprint, and the sender thread (unless ``notify_sender`` is off)."""
    app.register_blueprint(bp)
    sender.attach(app, collector)


@bp.before_request
def _guard() -> None:
    auth.check()


def _args() -> dict[str, str]:
    # Strict, like every admin query: a typo must not silently widen what is listed.
    unknown = sorted(set(request.args) - set(PARAMS))
    if unknown:
        raise bad_request(
            f"unknown query parameter(s): {', '.join(unknown)} (allowed: {', '.join(PARAMS)})",
            "unknown_parameter",
        )
    repeated = sorted(name for name in request.args if len(request.args.getlist(name)) > 1)
    if repeated:
        raise bad_request(f"query parameter given twice: {', '.join(repeated)}")
    return {name: value for name, value in request.args.items() if value != ""}


@bp.get("/notifications")
@auth.roles("admin", "user")
def list_notifications():
    """Newest first; ``since`` as in reports (a date, a UTC time, 30m/24h/7d, today)."""
    args = _args()
    account = args.get("account")
    if account is not None and len(account) > 128:
        raise bad_request("account must be at most 128 characters")
    c = current()
    since_ms = parse_time(args["since"], c.now_ms(), name="since") if "since" in args else None
    raw = args.get("limit", "100")
    if not _LIMIT(raw) or not 1 <= int(raw) <= notifications.MAX_LIMIT:
        raise bad_request(f"limit must be a whole number from 1 to {notifications.MAX_LIMIT}")
    scope = auth.scope()
    found = notifications.list_notifications(
        c.db, account=account, since_ms=since_ms, limit=int(raw), user_id=scope
    )
    return jsonify(
        {
            "notifications": found,
            "count": len(found),
            "deferred": notifications.deferred(c.db, account=account, user_id=scope),
        }
    )
