"""Dashboard sessions, held server-side in ``dashboard_sessions`` (schema version 14).

The cookie ``solverfleet_dashboard`` carries a random 256-bit session id (HttpOnly,
SameSite=Strict, path ``/dashboard``; Secure when the request came over HTTPS); the table keeps
only its sha256, the token id that logged in, the session's CSRF token and its times. Each
request reads that one row joined to the token (one primary-key read), so logout (the row is
deleted), revoking the token, deactivating its user and the 12 h limit end a session at once,
and a copied cookie is dead after logout.

Flask's signed cookie (``solverfleet_dashboard_form``) still exists, with no authority: it holds
the login form's CSRF token and flash messages only.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from flask import Flask, Response, g, request, session
from flask.sessions import SecureCookieSessionInterface

from solverfleet.collector import tokens
from solverfleet.collector.auth import Principal
from solverfleet.collector.context import current
from solverfleet.collector.problems import Invalid
from solverfleet.collector.store import Tx
from solverfleet.keyhash import hash_secret

COOKIE = "solverfleet_dashboard"
FORM_COOKIE = "solverfleet_dashboard_form"
PATH = "/dashboard"
MAX_AGE_MS = 12 * 3600 * 1000
SEEN_EVERY_MS = 60_000  # last_seen_ms is a heartbeat: one write a minute per session at most
CSRF_FIELD = "csrf"


@dataclass(frozen=True)
class Admin:
    """The admin a dashboard session speaks for."""

    actor: str  # as in ledger rows: "bootstrap" or "token:<id>"
    label: str  # shown in the page header
    csrf: str  # this session's CSRF token


def _secure() -> bool:
    # Secure whenever the browser reached us over HTTPS, also through a TLS-terminating
    # proxy; a forged header can only make the cookie stricter, never weaker.
    forwarded = request.headers.get("X-Forwarded-Proto", "").strip().lower()
    return request.is_secure or forwarded == "https"


class _FormCookie(SecureCookieSessionInterface):
    def get_cookie_secure(self, app: Flask) -> bool:
        return bool(app.config["SESSION_COOKIE_SECURE"] or _secure())


def configure(app: Flask, secret: str) -> None:
    app.secret_key = secret
    app.session_interface = _FormCookie()
    app.config.update(
        SESSION_COOKIE_NAME=FORM_COOKIE,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Strict",
        SESSION_COOKIE_PATH=PATH,
    )


def _admin_fp(session_id: str, admin_token: str) -> str:
    return hmac.new(session_id.encode(), admin_token.encode(), hashlib.sha256).hexdigest()


def csrf_token() -> str:
    """The CSRF token for this page's forms: the session's, or the login form's."""
    who = g.get("dashboard_admin")
    if who is not None:
        return who.csrf
    token = session.get(CSRF_FIELD)
    if not isinstance(token, str) or not token:
        token = session[CSRF_FIELD] = secrets.token_urlsafe(32)
    return token


def check_csrf() -> None:
    who = g.get("dashboard_admin")
    expected = who.csrf if who is not None else session.get(CSRF_FIELD)
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


def log_in(response: Response, who: Principal) -> None:
    """Store a fresh session for the admin ``who`` and set its cookie on ``response``."""
    c = current()
    now = c.now_ms()
    session_id = secrets.token_urlsafe(32)  # 256 bits
    fp = _admin_fp(session_id, c.settings.admin_token) if who.token_id is None else None

    def work(tx: Tx) -> None:
        tx.execute("DELETE FROM dashboard_sessions WHERE expires_ms <= ?", (now,))
        tx.execute(
            "INSERT INTO dashboard_sessions (id_hash, token_id, admin_fp, csrf, created_ms,"
            " last_seen_ms, expires_ms) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                hash_secret(session_id),
                who.token_id,
                fp,
                secrets.token_urlsafe(32),
                now,
                now,
                now + MAX_AGE_MS,
            ),
        )

    c.db.transaction(work)
    session.clear()  # nothing from before the login survives it
    response.set_cookie(
        COOKIE,
        session_id,
        max_age=MAX_AGE_MS // 1000,
        path=PATH,
        secure=_secure(),
        httponly=True,
        samesite="Strict",
    )


def log_out(response: Response) -> None:
    """Delete this request's session: its cookie, wherever copied, is dead from now on."""
    session_id = request.cookies.get(COOKIE)
    if session_id:
        digest = hash_secret(session_id)
        current().db.transaction(
            lambda tx: tx.execute("DELETE FROM dashboard_sessions WHERE id_hash = ?", (digest,))
        )
    response.delete_cookie(COOKIE, path=PATH, secure=_secure(), httponly=True, samesite="Strict")


def current_admin() -> Admin | None:
    """The admin of this request's session if it is still valid, else None."""
    session_id = request.cookies.get(COOKIE)
    if not session_id or len(session_id) > 64:
        return None
    c = current()
    now = c.now_ms()
    digest = hash_secret(session_id)
    row = c.db.read(
        lambda tx: tx.one(
            "SELECT s.token_id, s.admin_fp, s.csrf, s.last_seen_ms, s.expires_ms,"
            " t.revoked_ms, t.role, t.label, t.user_id, u.active, u.role"
            " FROM dashboard_sessions s LEFT JOIN api_tokens t ON t.id = s.token_id"
            " LEFT JOIN users u ON u.id = t.user_id WHERE s.id_hash = ?",
            (digest,),
        )
    )
    if row is None:
        return None
    token_id, fp, csrf, last_seen, expires, revoked, role, label, user_id, user_active, urole = row
    if not now < int(expires):
        return None
    if token_id is None:
        if not isinstance(fp, str) or not hmac.compare_digest(
            fp, _admin_fp(session_id, c.settings.admin_token)
        ):
            return None  # the admin_token setting changed since this login
        who = Admin("bootstrap", "admin token (settings)", csrf)
    else:
        if role != "admin" or revoked is not None:
            return None  # revoked (or never an admin token): the session ends with it
        if user_id is not None and (not user_active or not tokens.within_cap(role, urole)):
            return None  # its user was deactivated or lowered below admin
        text = f"admin token {token_id}" + (f" ({label})" if label else "")
        who = Admin(f"token:{token_id}", text, csrf)
    if now - int(last_seen) >= SEEN_EVERY_MS:
        c.db.transaction(
            lambda tx: tx.execute(
                "UPDATE dashboard_sessions SET last_seen_ms = ? WHERE id_hash = ?", (now, digest)
            )
        )
    return who


def admin() -> Admin:
    """The checked admin of this request (set by the guard)."""
    return g.dashboard_admin
