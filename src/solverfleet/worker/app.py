"""The demo solver worker: answers ``POST /work`` after a delay with an opaque token, or fails.

It solves nothing. Latency and failures are drawn from the settings; a request can override
both with ``params.demo = {"latency_ms": N, "fail": bool}`` so tests can make one call slow or
failing on purpose. Under gunicorn's gevent worker ``time.sleep`` yields, so thousands of
delayed calls wait concurrently in one process.
"""

from __future__ import annotations

import random
import secrets
import threading
import time
from typing import Any

from flask import Flask, jsonify, request
from werkzeug.exceptions import HTTPException

from solverfleet import jsonbody
from solverfleet.settings import load_settings
from solverfleet.worker.settings import WorkerSettings

MAX_DEMO_LATENCY_MS = 600_000  # a "hanging" call still ends, after 10 minutes at most
_DEMO_FIELDS = {"latency_ms", "fail"}


class BadRequest(ValueError):
    pass


class Counters:
    """Success/failure counts, safe across threads and greenlets."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.success = 0
        self.failure = 0

    def add(self, ok: bool) -> None:
        with self._lock:
            if ok:
                self.success += 1
            else:
                self.failure += 1

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return {"success": self.success, "failure": self.failure}


class Behaviour:
    """Draws each call's latency and outcome from the settings (seeded if asked)."""

    def __init__(self, settings: WorkerSettings) -> None:
        self.low, self.high = settings.latency_range()
        self.failure_rate = float(settings.failure_rate)
        self._rng = random.Random(settings.seed)
        self._lock = threading.Lock()

    def draw(self) -> tuple[int, bool]:
        with self._lock:
            latency = self._rng.randint(self.low, self.high)
            fail = self.failure_rate > 0 and self._rng.random() < self.failure_rate
        return latency, fail


def _body() -> Any:
    """The request body as JSON within jsonbody's limits (a deep body is no RecursionError)."""
    try:
        return jsonbody.loads(request.get_data(cache=False))
    except jsonbody.BodyError as exc:
        raise BadRequest(f"body must be a JSON object ({exc})") from None


def parse_work(body: Any) -> dict | None:
    """Validate the solve body; return the ``params.demo`` override (or None)."""
    if not isinstance(body, dict):
        raise BadRequest("body must be a JSON object with type, url and params")
    if not isinstance(body.get("type"), str) or not body["type"]:
        raise BadRequest("type must be a non-empty string")
    if "url" in body and body["url"] is not None and not isinstance(body["url"], str):
        raise BadRequest("url must be a string")
    params = body.get("params")
    if params is None:
        return None
    if not isinstance(params, dict):
        raise BadRequest("params must be an object")
    demo = params.get("demo")
    if demo is None:
        return None
    if not isinstance(demo, dict) or set(demo) - _DEMO_FIELDS:
        raise BadRequest("params.demo must be an object with latency_ms and/or fail")
    latency = demo.get("latency_ms")
    if latency is not None and (
        isinstance(latency, bool)
        or not isinstance(latency, int)
        or not 0 <= latency <= MAX_DEMO_LATENCY_MS
    ):
        raise BadRequest(f"params.demo.latency_ms must be an integer in 0..{MAX_DEMO_LATENCY_MS}")
    if "fail" in demo and not isinstance(demo["fail"], bool):
        raise BadRequest("params.demo.fail must be true or false")
    return demo


def create_app(settings: WorkerSettings | None = None) -> Flask:
    settings = settings if settings is not None else load_settings(WorkerSettings)
    behaviour = Behaviour(settings)
    counters = Counters()
    app = Flask("solverfleet.worker")
    app.config["SOLVERFLEET_SETTINGS"] = settings
    app.extensions["solverfleet_worker_counters"] = counters

    @app.post("/work")
    def work():
        try:
            demo = parse_work(_body())
        except BadRequest as exc:
            return jsonify(error="bad_request", message=str(exc)), 400
        latency, fail = behaviour.draw()
        if demo is not None:
            latency = demo.get("latency_ms", latency)
            fail = demo.get("fail", fail)
        if latency:
            time.sleep(latency / 1000)
        counters.add(not fail)
        if fail:
            return jsonify(error="worker_failed"), 500
        return jsonify(result="demo-" + secrets.token_urlsafe(24))

    @app.get("/stats")
    def stats():
        return jsonify(counters.snapshot())

    @app.get("/healthz")
    def healthz():
        return jsonify(status="ok")

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        # JSON for 404/405 too, so clients never have to parse HTML.
        code = (exc.name or "error").lower().replace(" ", "_")
        return jsonify(error=code, message=exc.description), exc.code

    return app
