"""The dashboard's blueprint and what every page shares: the access guard, security headers,
HTML error pages and template helpers.

The guard is closed by default: every endpoint needs a live admin session except the ones in
``OPEN``, and every POST a valid CSRF token, so a new page is never open by accident.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Blueprint, Response, g, make_response, redirect, render_template, request, url_for
from werkzeug.exceptions import HTTPException

from solverfleet.collector.context import current
from solverfleet.collector.dashboard import sessions
from solverfleet.collector.problems import Invalid, Problem
from solverfleet.collector.reporting.timerange import iso
from solverfleet.collector.store import StoreError, StoreUnavailable

log = logging.getLogger(__name__)

bp = Blueprint(
    "dashboard",
    __name__,
    url_prefix="/dashboard",
    template_folder="templates",
    static_folder="static",
)

OPEN = frozenset({"dashboard.login_form", "dashboard.login", "dashboard.static"})
MAX_FORM = 16 * 1024  # the largest form is a token and a CSRF field
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self';"
    " form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'"
)


@bp.before_request
def _guard() -> Response | None:
    request.max_content_length = MAX_FORM
    if request.endpoint not in OPEN:
        g.dashboard_admin = sessions.current_admin()
        if g.dashboard_admin is None:
            # No session, an expired one, or its token revoked: back to the login, nothing done.
            return redirect(
                url_for("dashboard.login_form"), 303 if request.method == "POST" else 302
            )
    if request.method == "POST":
        sessions.check_csrf()
    return None


@bp.after_request
def _headers(response: Response) -> Response:
    response.headers["Content-Security-Policy"] = CSP
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Referrer-Policy"] = "same-origin"
    if request.endpoint != "dashboard.static":
        # Balances and solves: never kept by a browser or a proxy cache.
        response.headers["Cache-Control"] = "no-store"
    return response


def refreshing() -> bool:
    """This request is ``dashboard.js`` re-reading a live page (it swaps the ``data-live``
    elements the answer has and keeps the others as they are)."""
    return request.headers.get("X-Dashboard-Refresh") == "1"


def render(template: str, status: int = 200, /, **context: Any) -> Response:
    return make_response(render_template(f"dashboard/{template}", **context), status)


def error_page(status: int, code: str, message: str) -> Response:
    return render(
        "error.html", status, title=f"Error {status}", status=status, code=code, message=message
    )


@bp.errorhandler(Problem)
def _problem(exc: Problem) -> Response:
    return error_page(exc.status, exc.code, exc.message)


@bp.errorhandler(HTTPException)
def _http(exc: HTTPException) -> Response:
    code = "too_large" if exc.code == 413 else (exc.name or "error").lower().replace(" ", "_")
    return error_page(exc.code or 500, code, exc.description or exc.name)


@bp.errorhandler(StoreError)
def _store(exc: StoreError) -> Response:
    log.warning("dashboard: database error: %s", exc)
    response = error_page(503, "unavailable", "The database did not answer; nothing was changed.")
    if isinstance(exc, StoreUnavailable):
        response.headers["Retry-After"] = "1"
    return response


@bp.errorhandler(Exception)
def _unexpected(exc: Exception) -> Response:
    log.exception("dashboard: unhandled error on %s %s", request.method, request.path)
    return error_page(500, "internal", "Internal error; nothing was changed.")


@bp.context_processor
def _helpers() -> dict[str, Any]:
    now_ms = current().now_ms()

    def utc(ms: int | float | None) -> str:
        return "" if ms is None else iso(int(ms)).replace("T", " ")[:19] + " UTC"

    def ago(ms: int | float | None) -> str:
        if ms is None:
            return "never"
        seconds = max(0.0, (now_ms - ms) / 1000)
        if seconds < 60:
            return f"{seconds:.1f} s ago"
        if seconds < 3600:
            return f"{seconds / 60:.0f} min ago"
        return f"{seconds / 3600:.1f} h ago"

    return {
        "admin": g.get("dashboard_admin"),
        "csrf_token": sessions.csrf_token,
        "now_ms": now_ms,
        "utc": utc,
        "ago": ago,
    }


MAX_PARAM = 256


def query_args(allowed: tuple[str, ...]) -> dict[str, str]:
    """The query string's values by name: strict like the admin API's (an unknown, repeated
    or overlong parameter is ``Invalid``: a 400)."""
    args = request.args
    unknown = sorted(set(args) - set(allowed))
    if unknown:
        raise Invalid(f"unknown query parameter(s): {', '.join(unknown)}", "unknown_parameter")
    repeated = sorted(name for name in args if len(args.getlist(name)) > 1)
    if repeated:
        raise Invalid(f"query parameter given twice: {', '.join(repeated)}")
    too_long = sorted(name for name, value in args.items() if len(value) > MAX_PARAM)
    if too_long:
        raise Invalid(f"query parameter too long: {', '.join(too_long)}")
    # Forms send empty fields: empty means "no filter".
    return {name: value.strip() for name, value in args.items() if value.strip()}
