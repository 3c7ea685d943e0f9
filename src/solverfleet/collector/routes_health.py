"""Liveness (the process answers) and readiness (the database answers, and how fast)."""

from __future__ import annotations

import time

from flask import Blueprint, jsonify

from solverfleet.collector.context import current
from solverfleet.collector.errors import error_response
from solverfleet.collector.store import StoreError

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz():
    return jsonify({"ok": True})


@bp.get("/readyz")
def readyz():
    started = time.monotonic()
    try:
        current().db.ping()
    except StoreError:
        return error_response(503, "unavailable", "database unreachable")
    ping_ms = round((time.monotonic() - started) * 1000, 1)
    return jsonify({"ok": True, "db": "reachable", "db_ping_ms": ping_ms})
