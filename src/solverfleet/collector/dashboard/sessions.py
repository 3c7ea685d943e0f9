"""Dashboard sessions: who logged in, for how long, and the per-session CSRF token.

The session lives in Flask's signed cookie (HttpOnly, SameSite=Strict, path ``/dashboard``;
Secure when the request came over HTTPS). It holds *who* logged in — ``bootstrap`` with a
keyed fingerprint of the ``admin_token`` setting, or a stored token's id — never a token:
the cookie is signed, not encrypted. Each request checks it again (the setting unchanged,
the stored token still live and an admin), so revoking a token ends its dashboard sessions
at once; a session also ends ``MAX_AGE_MS`` after login and when the signing secret changes
(a collector without ``dashboard_secret`` makes a new one at every start).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from flask import Flask, current_app, g, request, session
from flask.sessions import SecureCookieSessionInterface

from solverfleet.collector import tokens
from solverfleet.collector.auth import Principal
from solverfleet.collector.context import current
from solverfleet.collector.problems import Invalid, NotFound

COOKIE = "solverfleet_dashboard"
MAX_AGE_MS = 12 * 3600 * 1000
CSRF_FIELD = "csrf"


@dataclass(frozen=True)
class Admin:
    """The admin a dashboard session speaks for."""

    actor: str  # as in ledger rows: "bootstrap" or "token:<id>"
    label: str  # shown in the page header


class _Cookies(SecureCookieSessionInterface):
    def get_cookie_secure(self, app: Flask) -> bool:
        # Secure whenever the browser reached us over HTTPS, also through a TLS-terminating
        # proxy; a forged header can only make the cookie stricter, never weaker.
        forwarded = request.headers.get("X-Forwarded-Proto", "").strip().lower()
        return bool(
            app.config["SESSION_COOKIE_SECURE"] or request.is_secure or forwarded == "https"
        )


def configure(app: Flask, secret: str) -> None:
    app.secret_key = secret
    app.session_interface = _Cookies()
    app.config.update(
        SESSION_COOKIE_NAME=COOKIE,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Strict",
        SESSION_COOKIE_PATH="/dashboard",
        PERMANENT_SESSION_LIFETIME=timedelta(milliseconds=MAX_AGE_MS),
    )


def _fingerprint(token: str) -> str:
    key = current_app.secret_key
    key_bytes = key.encode() if isinstance(key, str) else bytes(key)
    return hmac.new(key_bytes, token.encode(), hashlib.sha256).hexdigest()


def csrf_token() -> str:
    """This session's CSRF token (made on first use: the login form gets one too)."""
    token = session.get(CSRF_FIELD)
    if not isinstance(token, str) or not token:
        token = session[CSRF_FIELD] = secrets.token_urlsafe(32)
    return token


def check_csrf() -> None:
    expected = session.get(CSRF_FIELD)
    given = request.form.get(CSRF_FIELD, "")
    if (
        not isinstance(expected, str)
        or not expected
        or not hmac.compare_digest(given.encode(), expected.encode())
    ):
        raise Invalid(
            "The form's security token is missing or stale (CSRF check). Reload the page and"
            " try again; nothing was changed.",
            "csrf_failed",
        )


def log_in(who: Principal, token: str) -> None:
    """Start a fresh session for an admin ``who`` who presented ``token``."""
    session.clear()  # nothing from before the login survives it (no session fixation)
    session["who"] = {
        "token_id": who.token_id,
        "fp": _fingerprint(token) if who.token_id is None else None,
        "since": current().now_ms(),
    }
    session[CSRF_FIELD] = secrets.token_urlsafe(32)


def log_out() -> None:
    session.clear()


def current_admin() -> Admin | None:
    """The admin of this request's session if it is still valid, else None (session emptied)."""
    who = _check(session.get("who"))
    if who is None and "who" in session:
        session.clear()
    return who


def _check(who: Any) -> Admin | None:
    if not isinstance(who, dict):
        return None
    c = current()
    since = who.get("since")
    if not isinstance(since, int) or not 0 <= c.now_ms() - since < MAX_AGE_MS:
        return None
    token_id = who.get("token_id")
    if token_id is None:
        fp = who.get("fp")
        if not isinstance(fp, str) or not hmac.compare_digest(
            fp, _fingerprint(c.settings.admin_token)
        ):
            return None  # the admin_token setting changed since this login
        return Admin("bootstrap", "admin token (settings)")
    if not isinstance(token_id, int):
        return None
    try:
        token = tokens.get(c.db, token_id)
    except NotFound:
        return None
    if not token["active"] or token["role"] != "admin":
        return None
    label = f"admin token {token_id}" + (f" ({token['label']})" if token["label"] else "")
    return Admin(f"token:{token_id}", label)


def admin() -> Admin:
    """The checked admin of this request (set by the guard)."""
    return g.dashboard_admin
