"""The per-host agent: enforces per-key limits in memory and meters usage for the collector.

Run it as ``gunicorn -c python:solverfleet.agent.gunicorn_conf 'solverfleet.agent:create_app()'``.
Imports stay inside ``create_app`` so that gunicorn's master, which imports this package for
the config module, loads nothing that gevent has to patch later in the worker.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from flask import Flask

    from solverfleet.agent.settings import AgentSettings


def create_app(settings: AgentSettings | None = None, *, start_background: bool = True) -> Flask:
    """The agent's Flask app; ``start_background=False`` leaves the fleet loop to the caller."""
    from flask import Flask

    from solverfleet.agent import compat, routes, routes_obs
    from solverfleet.agent.lifecycle import Agent
    from solverfleet.agent.settings import MAX_BODY_BYTES, load

    settings = settings or load()
    agent = Agent(settings)
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.extensions["solverfleet.agent"] = agent
    app.register_blueprint(routes.bp)
    registry = routes_obs.register(app, agent)  # /metrics, /openapi.json, request ids
    compat.register(app, agent, registry)  # in.php / res.php, createTask / getTaskResult
    # A surface with its own protocol answers its paths' errors first; JSON errors otherwise.
    routes.register_errors(app, surfaces=compat.protocol_errors)
    if start_background:
        agent.start()
    return app


def agent_of(app: Flask):
    """The ``Agent`` behind an app made by ``create_app``."""
    return app.extensions["solverfleet.agent"]
