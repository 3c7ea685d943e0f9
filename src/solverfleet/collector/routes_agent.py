"""The fleet protocol (``/agent/v1/*``), for service credentials (the fleet token or a
stored service token)."""

from __future__ import annotations

from flask import Blueprint, jsonify, request

from solverfleet.collector import auth, ingest, leases, metrics, protocol
from solverfleet.collector.context import current
from solverfleet.collector.errors import read_json

# 5,000 events with long URLs can exceed the admin API's 1 MiB; still bounded.
MAX_BODY = 32 * 1024 * 1024

bp = Blueprint("agent", __name__, url_prefix="/agent/v1")


@bp.before_request
def _guard() -> None:
    request.max_content_length = MAX_BODY
    auth.check(auth.FLEET)  # the fleet_token or a stored service token


@bp.post("/sync")
def sync():
    c = current()
    req = protocol.sync_request(read_json())
    answer = leases.sync(c.db, req, now_ms=c.now_ms(), ttl_ms=c.ttl_ms)
    metrics.count_grants(answer)
    return jsonify(answer)


@bp.post("/usage")
def usage():
    _, rows = ingest.parse_batch(read_json())
    # Answered only after the commit; an exception here means nothing was committed.
    result = current().writer.submit(rows) if rows else ingest.IngestResult(0, 0)
    return jsonify({"accepted": result.accepted, "duplicates": result.duplicates})


@bp.post("/release")
def release():
    c = current()
    req = protocol.release_request(read_json())
    return jsonify({"returned": leases.release(c.db, req, now_ms=c.now_ms())})
