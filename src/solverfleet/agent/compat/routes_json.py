"""The JSON task protocol: ``/createTask``, ``/getTaskResult``, ``/getBalance`` and the reports
(docs/PROTOCOLS.md).

The same tasks as ``in.php`` (the agent's task store, solve.py's lifecycle and billing: one
charge, on first delivery); only the words differ (tasks_json.py). Every answer is HTTP 200
JSON with ``errorId`` 0 or the error's published number (tasks_json.ERROR_IDS), like the
services these clients were written for; even a wrong method, a body over 1 MiB or an
internal error on these paths is an error answer.
The body is read as JSON whatever its content type (some clients send none).
"""

from __future__ import annotations

import json
import logging
import re
from decimal import Decimal
from typing import Any

from flask import Blueprint, Response, current_app, request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from solverfleet import jsonbody
from solverfleet.agent import precheck
from solverfleet.agent.clientip import client_ip, in_nets, parse_ip
from solverfleet.agent.compat import answers, forward, options, persist, tasks_json
from solverfleet.agent.compat import solve as compat_solve
from solverfleet.agent.compat.methods import parse_task
from solverfleet.agent.lifecycle import Agent
from solverfleet.agent.solvepath import authenticate, balance_micros
from solverfleet.money import format_micros

log = logging.getLogger(__name__)
bp = Blueprint("compat_json", __name__)
REPORTS = {  # path -> reported as good
    "/reportIncorrectRecaptcha": False,
    "/reportCorrectRecaptcha": True,
    "/reportIncorrectImageCaptcha": False,
}
PATHS = ("/createTask", "/getTaskResult", "/getBalance", *REPORTS)
_KEY = re.compile(r"[\x21-\x7e]{1,256}").fullmatch  # as in.php's key
MAX_TASK_ID = 10**20 - 1  # 1-20 digits, as res.php's id


def _agent() -> Agent:
    return current_app.extensions["solverfleet.agent"]


def _answer(body: dict[str, Any]) -> Response:
    return Response(json.dumps(body, separators=(",", ":")), 200, mimetype="application/json")


def fail(text: str) -> Response:
    return _answer(tasks_json.error_body(text))


def _ip(agent: Agent) -> str:
    return client_ip(request.remote_addr, request.headers.get("X-Forwarded-For"), agent.trusted)


def _body() -> dict[str, Any] | None:
    """The request's JSON object; None if the body is not one."""
    raw = request.get_data(cache=False) or b"null"
    if jsonbody.depth(raw) > jsonbody.MAX_DEPTH:  # before parsing deeply; fields are checked
        return None  # by the in.php parser the task is turned into (text, numbers)
    try:
        body = json.loads(raw)
    except ValueError:  # also bad UTF-8
        return None
    return body if isinstance(body, dict) else None


def _authenticate(agent: Agent, body: dict[str, Any], *, allowlist: bool) -> Any:
    """``(key, user, secret)`` or an error answer; ``allowlist``: check the key's IP list here
    (createTask leaves it to admission, as in.php does)."""
    secret = body.get("clientKey")
    well_formed = isinstance(secret, str) and bool(_KEY(secret))
    ip = _ip(agent)
    auth = authenticate(agent.bans, agent.keystore.snapshot, secret if well_formed else None, ip)
    if isinstance(auth, precheck.Decision):
        return fail(answers.refusal_text(auth.code))
    key, user = auth
    if allowlist and key.ip_allowlist is not None and not in_nets(parse_ip(ip), key.ip_allowlist):
        return fail(answers.IP_NOT_ALLOWED)
    return key, user, secret


def _task_id(body: dict[str, Any]) -> str | None:
    """taskId as our id text: an integer (clients parse ours as one) or a string of digits."""
    value = body.get("taskId")
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_TASK_ID:
        return str(value)
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 20:
        return value
    return None


@bp.post("/createTask")
def create_task() -> Response:
    agent = _agent()
    with agent.tracking():  # like /solve: drain waits for an admission in progress
        return _create_task(agent)


def _create_task(agent: Agent) -> Response:
    try:
        body = _body()
    except RequestEntityTooLarge:
        return fail(answers.TOO_BIG_CAPTCHA_FILESIZE)
    if body is None:
        return fail(answers.BAD_PARAMETERS)
    code, _ = agent.readiness()
    if code is not None:
        return fail(answers.NO_SLOT)  # draining or not ready: the LB retries elsewhere
    auth = _authenticate(agent, body, allowlist=False)
    if isinstance(auth, Response):
        return auth
    key, user, secret = auth
    fields = tasks_json.to_fields(body.get("task"))
    if isinstance(fields, str):
        return fail(fields)
    spec = parse_task(fields)
    if isinstance(spec, str):
        return fail(spec)
    snap = agent.keystore.snapshot
    assert snap is not None
    refused = options.apply(spec, snap, key, user, body.get("softId"), body.get("callbackUrl"),
                            json=True)  # fmt: skip
    if refused is not None:
        return fail(refused)
    ok, text = compat_solve.submit(agent, snap, secret, key, user, spec, _ip(agent))
    if not ok:
        # After parsing, BAD_PARAMETERS only means the type is not priced or not allowed.
        return fail(tasks_json.TASK_NOT_SUPPORTED if text == answers.BAD_PARAMETERS else text)
    return _answer({"errorId": 0, "taskId": int(text)})


def _caller(agent: Agent) -> tuple[dict, Any] | Response:
    """The body and the authenticated key (``_authenticate``'s answer), or the error answer."""
    body = _body()
    if body is None:
        return fail(answers.BAD_PARAMETERS)
    unready = forward.unready(agent, request.headers)
    if unready is not None:
        return unready
    auth = _authenticate(agent, body, allowlist=True)
    if isinstance(auth, Response):
        return auth
    return body, auth


def _callers_task(agent: Agent) -> Any:
    """The caller's task its body names (``taskId``), or the error answer (a Response)."""
    caller = _caller(agent)
    if isinstance(caller, Response):
        return caller
    body, auth = caller
    task_id = _task_id(body)
    if task_id is None:
        return fail(answers.WRONG_ID_FORMAT)
    compat_solve.sweep(agent)
    persist.ensure(agent)
    elsewhere = forward.json_task(agent, body, task_id, request.path, request.headers, _ip(agent))
    if isinstance(elsewhere, forward.Reply):  # the owning agent's answer, as our own
        return Response(elsewhere.body, 200, content_type=elsewhere.mimetype)
    if elsewhere == answers.NOT_READY:
        return _answer({"errorId": 0, "status": "processing"})
    if elsewhere is not None:
        return fail(elsewhere)
    task = compat_solve.find(agent.tasks, auth[0], task_id)
    if task is None and agent.tasks.handed_over and request.path == "/getTaskResult":
        return _answer({"errorId": 0, "status": "processing"})  # stopping: maybe handed over
    return fail(answers.WRONG_ID) if task is None else task


@bp.post("/getTaskResult")
def get_task_result() -> Response:
    agent = _agent()
    task = _callers_task(agent)
    if isinstance(task, Response):
        return task
    ok, text = compat_solve.deliver(agent, task)
    if not ok:
        if text == answers.NOT_READY:
            return _answer({"errorId": 0, "status": "processing"})
        return fail(text)
    return _answer({
        "errorId": 0,
        "status": "ready",
        "solution": tasks_json.solution(task.spec.slug, text),
        "cost": format_micros(task.decision.price),
        "ip": task.source_ip,
        "solveCount": 1,
    })  # fmt: skip


@bp.post("/getBalance")
def get_balance() -> Response:
    agent = _agent()
    caller = _caller(agent)
    if isinstance(caller, Response):
        return caller
    auth = caller[1]
    # A JSON number, as the protocol has it; the exact decimal text (micros have 6 places).
    balance = Decimal(format_micros(balance_micros(agent, auth[0])))
    return _answer({"errorId": 0, "balance": float(balance)})


def _report() -> Response:
    agent = _agent()
    task = _callers_task(agent)
    if isinstance(task, Response):
        return task
    text = compat_solve.report(agent, task, good=REPORTS[request.path])
    if text != answers.REPORT_OK:
        return fail(text)
    return _answer({"errorId": 0, "status": "success"})


for _path in REPORTS:
    bp.add_url_rule(_path, endpoint=_path.lstrip("/"), view_func=_report, methods=["POST"])


def protocol_error(exc: BaseException) -> Response | None:
    """On these paths a framework error is an error answer (HTTP 200); ``None`` for
    every other path."""
    if request.path not in PATHS:
        return None
    if isinstance(exc, RequestEntityTooLarge):
        return fail(answers.TOO_BIG_CAPTCHA_FILESIZE)
    if isinstance(exc, HTTPException):
        return fail(answers.BAD_PARAMETERS)
    log.error("unhandled error on %s (%s)", request.path, type(exc).__name__, exc_info=exc)
    return fail(answers.NO_SLOT)
