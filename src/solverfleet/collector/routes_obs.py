"""``/metrics`` (Prometheus text) and ``/openapi.json`` on the collector.

``/metrics`` answers a peer inside ``metrics_allow`` (default: loopback) whose request no
proxy forwarded, or anyone presenting an admin-role bearer token; others get 401 (no or an
unknown token) or 403 (a user or service token).
``/openapi.json`` is public: it describes the API, not its data.
"""

from __future__ import annotations

from flask import Blueprint, Flask, Response, current_app, jsonify

from solverfleet.collector import auth, metrics
from solverfleet.collector.context import Collector
from solverfleet.obs import web

bp = Blueprint("obs", __name__)
REGISTRY = "solverfleet.metrics"
ALLOW = "solverfleet.metrics_allow"


def register(app: Flask, collector: Collector) -> None:
    app.extensions[REGISTRY] = metrics.registry_for(collector.db, lambda: collector.clock())
    app.extensions[ALLOW] = web.parse_nets(collector.settings.metrics_allow)
    web.install(app, metrics.HTTP_REQUESTS)
    app.register_blueprint(bp)


@bp.get("/metrics")
def metrics_page() -> Response:
    if not web.peer_allowed(current_app.extensions[ALLOW]):
        auth.check()  # an admin-role token (401 without one, 403 for user/service tokens)
    return web.metrics_response(current_app.extensions[REGISTRY])


@bp.get("/openapi.json")
def openapi() -> Response:
    return jsonify(web.openapi_document("solverfleet.collector"))
