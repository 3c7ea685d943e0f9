"""The dashboard's one state change: switch a key off or on.

It is ``accounts.set_active``, the code path of ``POST /admin/v1/keys/<id>/deactivate`` and
``/activate``: it bumps the config version in the same transaction, so every agent refuses
(or accepts) the key from its next sync, about ``sync_interval`` (0.25 s) later. The guard has
already checked the admin session and the form's CSRF token.
"""

from __future__ import annotations

import logging

from flask import Response, flash, redirect, request, url_for

from solverfleet.collector import accounts
from solverfleet.collector.context import current
from solverfleet.collector.dashboard import sessions
from solverfleet.collector.dashboard.base import bp
from solverfleet.collector.problems import Invalid

log = logging.getLogger(__name__)
FIELDS = frozenset({sessions.CSRF_FIELD})


def _set_active(key_id: str, active: bool) -> Response:
    unknown = sorted(set(request.form) - FIELDS)
    if unknown:
        raise Invalid(f"unknown form field(s): {', '.join(unknown)}", "unknown_field")
    c = current()
    actor = sessions.admin().actor
    # 404 page if unknown; the audit row is written in the same transaction as the switch.
    accounts.set_active(
        c.db, "key", key_id, active, now_ms=c.now_ms(), actor=actor, via="dashboard"
    )
    log.info(
        "dashboard: key %s",
        "activated" if active else "deactivated",
        extra={"key_id": key_id, "actor": actor},
    )
    if active:
        flash(f"Key {key_id} is active: agents accept it from their next sync (about a second).")
    else:
        flash(
            f"Key {key_id} is deactivated: agents refuse it from their next sync (about a second)."
        )
    return redirect(url_for("dashboard.key", key_id=key_id), 303)


@bp.post("/keys/<key_id>/deactivate")
def deactivate_key(key_id: str) -> Response:
    return _set_active(key_id, False)


@bp.post("/keys/<key_id>/activate")
def activate_key(key_id: str) -> Response:
    return _set_active(key_id, True)
