"""The fleet protocol (``/agent/v1/*``), for service credentials (the fleet token or a
stored service token).

A service token bound to an agent id speaks for that agent only: a sync, usage or release
naming another agent is refused whole (403 ``agent_mismatch``, nothing changes), and its usage
is checked against what that agent was granted (``ingest``: refused events are answered, not
stored). With ``require_agent_credentials`` only bound tokens are accepted here.
"""

from __future__ import annotations

from flask import Blueprint, jsonify, request

from solverfleet.collector import auth, ingest, leases, metrics, pingbacks, protocol
from solverfleet.collector.context import current
from solverfleet.collector.errors import read_json
from solverfleet.collector.problems import Forbidden

# 5,000 events with long URLs can exceed the admin API's 1 MiB; still bounded.
MAX_BODY = 32 * 1024 * 1024

bp = Blueprint("agent", __name__, url_prefix="/agent/v1")


@bp.before_request
def _guard() -> None:
    request.max_content_length = MAX_BODY
    who = auth.check(auth.FLEET)  # the fleet_token or a stored service token
    if (
        request.endpoint is not None
        and who.agent_id is None
        and current().settings.require_agent_credentials
    ):
        raise Forbidden(
            "this collector requires a service token bound to the calling agent"
            " (solverfleet tokens create --role service --agent AGENT_ID)",
            "agent_credential_required",
        )


@bp.post("/sync")
def sync():
    c = current()
    req = protocol.sync_request(read_json(protocol.MAX_WATCH))
    auth.same_agent(req.agent_id)
    answer = leases.sync(
        c.db,
        req,
        now_ms=c.now_ms(),
        ttl_ms=c.ttl_ms,
        heartbeats=c.heartbeats,
        view=c.idle_view,
        delta_cache=c.deltas,
    )
    metrics.count_grants(answer)
    return jsonify(answer)


@bp.post("/usage")
def usage():
    agent_id, rows = ingest.parse_batch(read_json(ingest.MAX_GROUP_EVENTS, text=False))
    bound = auth.principal().agent_id
    auth.same_agent(agent_id, *(row[ingest.AGENT] for row in rows))
    # Answered only after the commit; an exception here means nothing was committed.
    # A bound agent's events are checked against its grants (the unbound fleet token may
    # act for any agent, so checking it would prove nothing; it is the bootstrap path).
    result = (
        current().writer.submit(rows, verify=bound is not None)
        if rows
        else ingest.IngestResult(0, 0)
    )
    answer: dict = {"accepted": result.accepted, "duplicates": result.duplicates}
    if result.refused:
        # Refused events are final: answered 200 so the agent's spool moves on (a retry
        # would be refused again), listed so the agent can keep them for an operator.
        answer["refused"] = result.refused
    return jsonify(answer)


@bp.post("/release")
def release():
    c = current()
    req = protocol.release_request(read_json())
    auth.same_agent(req.agent_id)
    return jsonify({"returned": leases.release(c.db, req, now_ms=c.now_ms())})


@bp.post("/pingbacks")
def pingback_change():
    """A key owner's pingback URLs changed through an agent (res.php add_pingback/del_pingback);
    answers the owner's URLs after the change."""
    c = current()
    agent_id, owner, action, url = pingbacks.parse(read_json())
    auth.same_agent(agent_id)
    return jsonify({"urls": pingbacks.change(c.db, owner, action, url, c.now_ms())})
