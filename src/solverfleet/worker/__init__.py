"""Demo solver worker: a stand-in backend with configurable latency and failure rate.

Serve it with gunicorn and the gevent worker::

    gunicorn -c python:solverfleet.worker.gunicorn_conf 'solverfleet.worker:create_app()'

Settings come from ``SOLVERFLEET_LATENCY_MS``, ``SOLVERFLEET_FAILURE_RATE`` and
``SOLVERFLEET_SEED`` (or a ``SOLVERFLEET_CONFIG`` YAML file).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from solverfleet.worker.settings import WorkerSettings

if TYPE_CHECKING:
    from flask import Flask

__all__ = ["WorkerSettings", "create_app"]


def create_app(settings: WorkerSettings | None = None) -> Flask:
    # Flask is imported on first use, so `solverfleet` CLI commands that only need the
    # settings class do not pay for it.
    from solverfleet.worker.app import create_app as build

    return build(settings)
