"""Liveness (the process answers) and readiness (the database answers)."""

from __future__ import annotations

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
    try:
        current().db.ping()
    except StoreError:
        return error_response(503, "unavailable", "database unreachable")
    return jsonify({"ok": True})
