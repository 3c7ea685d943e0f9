"""Solve log and reports on the admin API: ``GET /admin/v1/log`` and ``/admin/v1/reports/*``.

Thin: parse and check the query string (unknown or repeated parameters are a 400, so a typo
never silently widens a query), call the plain functions in ``solvelog`` and ``reports``.
"""

from __future__ import annotations

from flask import Blueprint, jsonify, request

from solverfleet.collector import auth
from solverfleet.collector.context import current
from solverfleet.collector.errors import bad_request
from solverfleet.collector.reporting import reports, solvelog
from solverfleet.collector.reporting.timerange import TimeRange, day_start, parse_range

MAX_BODY = 1024 * 1024
RANGE = ("since", "until")
LOG_PARAMS = (*solvelog.FILTERS, *RANGE, "limit", "cursor")

bp = Blueprint("reports", __name__, url_prefix="/admin/v1")


@bp.before_request
def _guard() -> None:
    request.max_content_length = MAX_BODY
    auth.check()  # admin, or a user token where a route allows it (scoped by _scope)


def _scope() -> str | None:
    """The user whose data alone this request may see; ``None``: everyone's (admin)."""
    return auth.scope()


def _args(allowed: tuple[str, ...]) -> dict[str, str]:
    args = request.args
    unknown = sorted(set(args) - set(allowed))
    if unknown:
        raise bad_request(
            f"unknown query parameter(s): {', '.join(unknown)} (allowed: {', '.join(allowed)})",
            "unknown_parameter",
        )
    repeated = sorted(name for name in args if len(args.getlist(name)) > 1)
    if repeated:
        raise bad_request(f"query parameter given twice: {', '.join(repeated)}", "invalid")
    return {name: value for name, value in args.items() if value != ""}


def _range(args: dict[str, str], *, today_by_default: bool = True) -> TimeRange:
    """Reports cover today (UTC) unless told otherwise: a range is read from an index in
    time order, so a day stays fast however long the log grows; ``since=all`` is everything
    and costs one pass over the index (one to two seconds per million calls)."""
    now_ms = current().now_ms()
    default = day_start(now_ms) if today_by_default else None
    return parse_range(args.get("since"), args.get("until"), now_ms, default_since=default)


@bp.get("/log")
@auth.roles("admin", "user")
def log():
    args = _args(LOG_PARAMS)
    raw = args.get("limit", str(solvelog.DEFAULT_LIMIT))
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 6:
        raise bad_request(
            f"limit must be a whole number from 1 to {solvelog.MAX_LIMIT}", "invalid_limit"
        )
    filters = solvelog.LogFilter(
        **{name: args.get(name) for name in solvelog.FILTERS},
        range=_range(args, today_by_default=False),
    )
    page = solvelog.solve_log(
        current().db, filters, limit=int(raw), cursor=args.get("cursor"), user_id=_scope()
    )
    return jsonify(page)


@bp.get("/reports/team")
@auth.roles("admin", "user")
def team():
    args = _args(RANGE)
    c = current()
    return jsonify(reports.team_report(c.db, _range(args), now_ms=c.now_ms(), user_id=_scope()))


@bp.get("/reports/projects")
@auth.roles("admin", "user")
def projects():
    args = _args(RANGE)
    return jsonify(reports.projects_report(current().db, _range(args), user_id=_scope()))


@bp.get("/reports/keys")
@auth.roles("admin", "user")
def keys():
    args = _args(RANGE)
    return jsonify(reports.keys_report(current().db, _range(args), user_id=_scope()))


@bp.get("/reports/stats")
@auth.roles("admin", "user")
def stats():
    args = _args(RANGE)
    return jsonify(reports.stats_report(current().db, _range(args), user_id=_scope()))
