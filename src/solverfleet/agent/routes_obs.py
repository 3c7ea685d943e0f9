"""``/metrics`` (Prometheus text, for allowed peers only) and ``/openapi.json`` on the agent.

The agent's port is what HAProxy forwards paying clients to, so ``/metrics`` answers only a
peer inside ``metrics_allow`` (default: loopback) whose request no proxy forwarded; anyone
else gets 403. ``/openapi.json`` describes the public API and is served to everyone.
"""

from __future__ import annotations

from flask import Blueprint, Flask, Response, current_app, jsonify
from prometheus_client import CollectorRegistry

from solverfleet.agent import gauges, metrics
from solverfleet.agent.lifecycle import Agent
from solverfleet.agent.routes import error
from solverfleet.obs import web

bp = Blueprint("obs", __name__)
REGISTRY = "solverfleet.metrics"
ALLOW = "solverfleet.metrics_allow"


def register(app: Flask, agent: Agent) -> CollectorRegistry:
    """Serve /metrics and /openapi.json; returns the app's registry for surfaces to add to."""
    registry = app.extensions[REGISTRY] = gauges.registry_for(agent)
    app.extensions[ALLOW] = web.parse_nets(agent.settings.metrics_allow)
    web.install(app, metrics.HTTP_REQUESTS)
    app.register_blueprint(bp)
    return registry


@bp.get("/metrics")
def metrics_page() -> Response:
    if not web.peer_allowed(current_app.extensions[ALLOW]):
        return error("forbidden", "metrics are served to the addresses in metrics_allow", 403)
    return web.metrics_response(current_app.extensions[REGISTRY])


@bp.get("/openapi.json")
def openapi() -> Response:
    return jsonify(web.openapi_document("solverfleet.agent"))
