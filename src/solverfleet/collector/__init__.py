"""The collector: source of truth for accounts, users, keys, balances, leases and usage.

``create_app()`` is the application factory gunicorn runs (``solverfleet.collector:create_app()``);
settings come from ``SOLVERFLEET_*`` variables or the YAML file named by ``SOLVERFLEET_CONFIG``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from flask import Flask

from solverfleet.collector import (
    dashboard,
    errors,
    refill,
    routes_admin,
    routes_agent,
    routes_health,
    routes_obs,
)
from solverfleet.collector.context import EXTENSION, Collector
from solverfleet.collector.notify import routes as notify_routes
from solverfleet.collector.reporting import routes as reporting_routes
from solverfleet.collector.settings import CollectorSettings
from solverfleet.collector.store import Database, StoreUnavailable, migrate

__all__ = ["Collector", "CollectorSettings", "create_app"]
log = logging.getLogger(__name__)
STARTUP_WAIT = 20.0  # s; below gunicorn's default worker timeout (30 s)


def _migrate_when_reachable(db: Database) -> list[int]:
    # The database may be starting alongside us (same supervisor, same boot): wait a little
    # rather than crash-looping; past the deadline, fail loudly.
    deadline = time.monotonic() + STARTUP_WAIT
    while True:
        try:
            return migrate(db)
        except StoreUnavailable as exc:
            if time.monotonic() >= deadline:
                raise
            log.warning("database not reachable yet (%s); retrying", exc)
            time.sleep(1.0)


def create_app(
    settings: CollectorSettings | None = None, *, clock: Callable[[], float] | None = None
) -> Flask:
    settings = settings or CollectorSettings.load()
    db = Database(settings.db)
    applied = _migrate_when_reachable(db)  # before serving: every worker sees the schema
    if applied:
        log.info("applied schema migrations %s to %s", applied, db.url.redacted())
    db.close()  # the migration connection belonged to this (possibly pre-fork) thread

    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = routes_agent.MAX_BODY
    app.json.sort_keys = False
    app.extensions[EXTENSION] = collector = Collector(settings, db, clock or time.time)
    errors.register(app)
    app.register_blueprint(routes_health.bp)
    app.register_blueprint(routes_agent.bp)
    app.register_blueprint(routes_admin.bp)
    app.register_blueprint(reporting_routes.bp)
    notify_routes.register(app, collector)  # + the webhook sender thread
    refill.attach(app, collector)  # + the key refill thread
    dashboard.register(app, collector)  # HTML pages under /dashboard/, session secret
    routes_obs.register(app, collector)  # /metrics, /openapi.json, request ids
    return app
