"""Log in with an admin credential, log out.

The credential is checked by ``auth.identify``, exactly as a bearer token on the admin API:
the ``admin_token`` setting or a live stored admin token. User and service tokens are refused.
The token itself is neither stored nor logged nor echoed back into the form.
"""

from __future__ import annotations

import logging

from flask import Response, flash, redirect, request, url_for

from solverfleet.collector import auth
from solverfleet.collector.dashboard import sessions
from solverfleet.collector.dashboard.base import bp, render
from solverfleet.collector.problems import Forbidden, Unauthorized

log = logging.getLogger(__name__)
MAX_TOKEN = 512


def _refused(status: int, message: str) -> Response:
    log.warning("dashboard login refused", extra={"peer": request.remote_addr, "status": status})
    return render("login.html", status, title="Log in", error=message)


@bp.get("/login")
def login_form() -> Response:
    if sessions.current_admin() is not None:
        return redirect(url_for("dashboard.overview"))
    return render("login.html", title="Log in", error=None)


@bp.post("/login")
def login() -> Response:
    # The guard has checked the form's CSRF token (made when the login form was shown).
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
    sessions.log_in(who, token)
    log.info("dashboard login", extra={"actor": who.actor, "peer": request.remote_addr})
    return redirect(url_for("dashboard.overview"), 303)


@bp.post("/logout")
def logout() -> Response:
    sessions.log_out()
    flash("Logged out.")
    return redirect(url_for("dashboard.login_form"), 303)
