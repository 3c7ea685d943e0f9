"""The native API: ``/solve``, ``/balance``, ``/healthz``, ``/readyz``, and for this host's
loopback only ``/admin/drain`` and ``/admin/status`` (the fleet health report's figures).

Every failure is JSON ``{"error": code, "message": text}``. The solve path: readiness ->
size -> authenticate -> body -> admit (may wait once for a lease) -> worker -> spool the usage
event -> commit or release the hold -> answer. The event is on disk before the answer leaves.
"""

from __future__ import annotations

import ipaddress
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from flask import Blueprint, Flask, Response, current_app, jsonify, request
from werkzeug.exceptions import HTTPException

from solverfleet import jsonbody
from solverfleet.agent import precheck, ratelimit
from solverfleet.agent.clientip import client_ip
from solverfleet.agent.keystore import Key, Snapshot, User
from solverfleet.agent.lifecycle import Agent
from solverfleet.agent.settings import MAX_BODY_BYTES
from solverfleet.agent.solvepath import (
    admit_waiting,
    authenticate,
    balance_micros,
    spool_event,
    usage_event,
)
from solverfleet.agent.usage import new_id
from solverfleet.money import CURRENCY, format_micros
from solverfleet.obs.logjson import current_request_id
from solverfleet.textcheck import text_problem

log = logging.getLogger(__name__)
bp = Blueprint("agent", __name__)
MAX_URL = 4096
MAX_TYPE = 64
ErrorHook = Callable[[BaseException], Response | None]


def _agent() -> Agent:
    return current_app.extensions["solverfleet.agent"]


def error(code: str, message: str, status: int, retry_after: int | None = None) -> Response:
    resp = jsonify(error=code, message=message)
    resp.status_code = status
    if retry_after is None and status == 429:
        retry_after = 1  # every 429 says when to come back (RFC 6585); 1 s if nothing better
    if retry_after is not None:
        resp.headers["Retry-After"] = str(retry_after)
    return resp


def _deny(decision: precheck.Decision) -> Response:
    assert decision.code is not None
    return error(decision.code, decision.message, decision.status, decision.retry_after)


def _secret() -> str | None:
    auth = request.headers.get("Authorization", "")
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip() or None
    return request.headers.get("X-API-Key", "").strip() or None


@dataclass(slots=True)
class SolveBody:
    type: str
    url: str
    params: dict[str, Any]

    def for_worker(self) -> dict[str, Any]:
        return {"type": self.type, "url": self.url, "params": self.params}


def _parse_body() -> SolveBody | str:
    """The solve body, or a message saying what is wrong with it."""
    try:
        data = jsonbody.loads(request.get_data(cache=False))
    except jsonbody.BodyError as exc:
        return f"body must be a JSON object ({exc})"
    if not isinstance(data, dict):
        return "body must be a JSON object"
    slug, url, params = data.get("type"), data.get("url"), data.get("params", {})
    if not isinstance(slug, str) or not slug or len(slug) > MAX_TYPE:
        return f"field 'type' must be a captcha type slug (1-{MAX_TYPE} characters)"
    if text_problem(slug):
        return f"field 'type' {text_problem(slug)}"
    if (
        not isinstance(url, str)
        or len(url) > MAX_URL
        or not url.lower().startswith(("http://", "https://"))
    ):
        return f"field 'url' must be an http(s) URL of at most {MAX_URL} characters"
    if text_problem(url):  # a URL is one line: no tab, newline or NUL to log or render
        return f"field 'url' {text_problem(url)}"
    if params is None:
        params = {}
    if not isinstance(params, dict):
        return "field 'params' must be a JSON object"
    return SolveBody(slug, url, params)


@bp.post("/solve")
def solve() -> Response:
    agent = _agent()
    started = time.monotonic()
    request_id = current_request_id() or new_id()  # obs.web took the caller's, if well-formed
    with agent.tracking():
        resp = _solve(agent, started, request_id)
    resp.headers["X-Request-ID"] = request_id
    return resp


def _solve(agent: Agent, started: float, request_id: str) -> Response:
    code, message = agent.readiness()
    snap = agent.keystore.snapshot
    if code is not None or snap is None:
        return error(code or "not_ready", message, 503)
    if (request.content_length or 0) > MAX_BODY_BYTES:
        return error("too_large", f"body is over {MAX_BODY_BYTES} bytes", 413)
    secret = _secret()
    ip = client_ip(request.remote_addr, request.headers.get("X-Forwarded-For"), agent.trusted)
    auth = authenticate(agent.bans, snap, secret, ip)
    if isinstance(auth, precheck.Decision):
        return _deny(auth)
    assert secret is not None
    resp, refused = _admitted(agent, snap, secret, auth, ip, started, request_id)
    # The key's CPM / daily budgets as they stand after this call (ratelimit.py).
    limits = ratelimit.headers(
        agent.limiter, *auth, agent.clock(), offline=agent.offline, refused=refused
    )
    resp.headers.update(limits)
    return resp


def _admitted(
    agent: Agent,
    snap: Snapshot,
    secret: str,
    auth: tuple[Key, User],
    ip: str,
    started: float,
    request_id: str,
) -> tuple[Response, str | None]:
    """The answer to an authenticated call, and the refusal code if admission refused it."""
    body = _parse_body()
    if isinstance(body, str):
        return error("bad_request", body, 400), None
    decision = admit_waiting(agent, snap, secret, *auth, body.type, ip)
    if not decision.allowed:
        return _deny(decision), decision.code
    body.type = decision.slug or body.type  # an alias: the worker and the log see the slug
    hold = decision.hold
    assert hold is not None and decision.key is not None and decision.user is not None
    try:
        return _call_and_record(agent, decision, body, ip, started, request_id), None
    finally:
        agent.limiter.release(hold)  # no-op once committed; frees the hold on any failure


def _call_and_record(
    agent: Agent,
    decision: precheck.Decision,
    body: SolveBody,
    ip: str,
    started: float,
    request_id: str,
) -> Response:
    hold = decision.hold
    assert hold is not None and decision.key is not None and decision.user is not None
    outcome = agent.worker.solve(body.for_worker(), request_id)
    duration_ms = int((time.monotonic() - started) * 1000)
    event = usage_event(
        agent.settings.agent_id, decision, request_id=request_id, slug=body.type, url=body.url,
        ok=outcome.ok, error=outcome.error, message=outcome.message, source_ip=ip,
        duration_ms=duration_ms,
    )  # fmt: skip
    if not spool_event(agent.spool, event):
        return error("not_ready", "usage could not be recorded; this call is not charged", 503)
    if not outcome.ok:
        status = 504 if outcome.error == "worker_timeout" else 502
        return error(outcome.error or "worker_failed", outcome.message or "worker failed", status)
    agent.limiter.commit(hold)
    return jsonify(
        status="success",
        result=outcome.result,
        cost=format_micros(decision.price),
        duration_ms=duration_ms,
        request_id=request_id,
    )


@bp.get("/balance")
def balance() -> Response:
    agent = _agent()
    snap = agent.keystore.snapshot
    if snap is None:
        return error("not_ready", "no key data from the collector yet", 503)
    ip = client_ip(request.remote_addr, request.headers.get("X-Forwarded-For"), agent.trusted)
    auth = authenticate(agent.bans, snap, _secret(), ip)
    if isinstance(auth, precheck.Decision):
        return _deny(auth)
    key = auth[0]
    total = balance_micros(agent, key)
    return jsonify(key=key.id, balance=format_micros(total), currency=CURRENCY)


@bp.get("/healthz")
def healthz() -> Response:
    return jsonify(status="ok")


@bp.get("/readyz")
def readyz() -> Response:
    agent = _agent()
    code, message = agent.readiness()
    if code is not None:
        return error(code, message, 503)
    return jsonify(status="ready", **agent.stats())


def _local_admin() -> bool:
    """A loopback peer that no proxy forwarded: only someone on this host."""
    if any(h in request.headers for h in ("X-Forwarded-For", "Forwarded", "X-Real-IP")):
        return False
    try:
        return ipaddress.ip_address(request.remote_addr or "").is_loopback
    except ValueError:
        return False


@bp.post("/admin/drain")
def drain() -> Response:
    if not _local_admin():
        return error("forbidden", "drain is accepted from this host's loopback only", 403)
    agent = _agent()
    agent.begin_drain()
    return jsonify(status="draining", in_flight=agent.in_flight)


@bp.get("/admin/status")
def admin_status() -> Response:
    if not _local_admin():
        return error("forbidden", "status is served to this host's loopback only", 403)
    return jsonify(_agent().status())


def register_errors(app: Flask, surfaces: tuple[ErrorHook, ...] = ()) -> None:
    """JSON errors for the native API; each of ``surfaces`` may answer first (its own paths,
    its own protocol) by returning a response instead of None."""

    def own_answer(exc: BaseException) -> Response | None:
        for hook in surfaces:
            answer = hook(exc)
            if answer is not None:
                return answer
        return None

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Response:
        answer = own_answer(exc)
        if answer is not None:
            return answer
        if exc.code == 413:
            return error("too_large", f"body is over {MAX_BODY_BYTES} bytes", 413)
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.code or 0, "bad_request")
        return error(code, exc.description or code, exc.code or 400)

    @app.errorhandler(Exception)
    def internal_error(exc: Exception) -> Response:
        answer = own_answer(exc)
        if answer is not None:
            return answer
        log.exception("unhandled error")
        return error("internal", "internal error", 500)
