"""The admin dashboard: HTML pages under ``/dashboard/`` on the collector (docs/ARCHITECTURE.md,
"Dashboard").

Server-rendered Jinja templates (autoescaped) with one stylesheet and one small script served
from this package: no CDN, no inline script or style, so the Content-Security-Policy is
``default-src 'self'``. Pages: accounts and keys with balances, a key with its switch, usage
reports, the solve log, notifications, the fleet, the audit log. Login takes an admin
credential; server-side sessions and CSRF are in ``sessions``, the access guard in ``base``.
"""

from __future__ import annotations

import secrets
from typing import Any

from flask import Flask

from solverfleet.collector.context import Collector
from solverfleet.collector.dashboard import (  # noqa: F401 (routes)
    actions,
    chartviews,
    login,
    pages,
    sessions,
)
from solverfleet.collector.dashboard.base import bp
from solverfleet.collector.dashboard.loginlimit import LoginLimiter
from solverfleet.textcheck import scrub


def _scrubbed(value: Any) -> Any:
    # Exactly str: Markup (already safe HTML) is a subclass and passes unchanged.
    return scrub(value, multiline=True) if type(value) is str else value


def register(app: Flask, collector: Collector) -> None:
    """Serve the dashboard on ``app``; its form cookie is signed with ``dashboard_secret``."""
    secret = collector.settings.dashboard_secret
    sessions.configure(app, secret or secrets.token_urlsafe(32))
    # Rows stored before text was checked may hold NULs or escapes: never into the HTML raw.
    app.jinja_env.finalize = _scrubbed
    app.extensions[login.LIMITER] = LoginLimiter(collector.db)
    app.register_blueprint(bp)
