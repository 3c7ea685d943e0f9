"""Log in with an admin credential, log out.

The credential is checked by ``auth.identify``, exactly as a bearer token on the admin API:
the ``admin_token`` setting or a live stored admin token. User and service tokens are refused.
The token itself is neither stored nor logged nor echoed back into the form. Refused logins
are limited per client address (``loginlimit``): too many get 429 with Retry-After.
"""

from __future__ import annotations

import logging

from flask import Response, current_app, flash, redirect, request, url_for

from solverfleet.collector import auth
from solverfleet.collector.context import current
from solverfleet.collector.dashboard import sessions
from solverfleet.collector.dashboard.base import bp, render
from solverfleet.collector.dashboard.loginlimit import LoginLimiter
from solverfleet.collector.problems import Forbidden, Unauthorized

log = logging.getLogger(__name__)
MAX_TOKEN = 512
LIMITER = "solverfleet_dashboard_logins"


def _limiter() -> LoginLimiter:
    return current_app.extensions[LIMITER]


def _address() -> str:
    return request.remote_addr or "unknown"


def _refused(status: int, message: str) -> Response:
    log.warning("dashboard login refused", extra={"peer": request.remote_addr, "status": status})
    _limiter().failed(_address(), current().now_ms())
    return render("login.html", status, title="Log in", error=message)


@bp.get("/login")
def login_form() -> Response:
    if sessions.current_admin() is not None:
        return redirect(url_for("dashboard.overview"))
    return render("login.html", title="Log in", error=None)


@bp.post("/login")
def login() -> Response:
    # The guard has checked the form's CSRF token (made when the login form was shown).
    wait_s = _limiter().retry_after_s(_address(), current().now_ms())
    if wait_s:
        response = render(
            "login.html",
            429,
            title="Log in",
            error=f"Too many failed logins from this address; try again in {wait_s} s.",
        )
        response.headers["Retry-After"] = str(wait_s)
        return response
    token = request.form.get("token", "").strip()
    if not token:
        return render("login.html", 400, title="Log in", error="Enter an admin token.")
    if len(token) > MAX_TOKEN or not token.isprintable():
        return _refused(400, "That is not a token.")
    try:
        who = auth.identify(token)
    except Unauthorized:
        return _refused(401, "Unknown or revoked token.")
    except Forbidden as exc:
        return _refused(403, exc.message)
    if who.role != "admin":
        return _refused(403, f"The dashboard needs an admin token; this is a {who.role} token.")
    _limiter().succeeded(_address())
    response = redirect(url_for("dashboard.overview"), 303)
    sessions.log_in(response, who)
    log.info("dashboard login", extra={"actor": who.actor, "peer": request.remote_addr})
    return response


@bp.post("/logout")
def logout() -> Response:
    flash("Logged out.")
    response = redirect(url_for("dashboard.login_form"), 303)
    sessions.log_out(response)
    return response
