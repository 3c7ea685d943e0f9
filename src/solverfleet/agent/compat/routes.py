"""The 2captcha-style surface: ``/in.php`` and ``/res.php`` (docs/PROTOCOLS.md).

Existing client libraries speak it unchanged. Every answer is HTTP 200: ``OK|...``,
``CAPCHA_NOT_READY``, a bare balance or an ``ERROR_*`` text, or with ``json=1`` the same as
``{"status": 0|1, "request": "..."}``. Limits, holds and usage events are the native ones
(solvepath.py via solve.py); only the words differ.
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any

from flask import Blueprint, Response, current_app, g, request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from solverfleet.agent import precheck
from solverfleet.agent.clientip import client_ip, in_nets, parse_ip
from solverfleet.agent.compat import answers, forward, options, persist, pingback_actions
from solverfleet.agent.compat import solve as compat_solve
from solverfleet.agent.compat.methods import MAX_IMAGE, parse_task
from solverfleet.agent.lifecycle import Agent
from solverfleet.agent.solvepath import authenticate, balance_micros
from solverfleet.money import format_micros
from solverfleet.textcheck import text_problem

log = logging.getLogger(__name__)
bp = Blueprint("compat", __name__)
PATHS = ("/in.php", "/res.php")
METHODS = ["GET", "POST"]
MAX_IDS = 100  # ids per action=get
_KEY = re.compile(r"[\x21-\x7e]{1,256}").fullmatch  # printable ASCII, no spaces
_ID = re.compile(r"[0-9]{1,20}").fullmatch
_ONE_LINE = frozenset(
    {"key", "id", "ids", "action", "method", "pageurl", "json", "soft_id", "pingback", "addr"}
)


def _agent() -> Agent:
    return current_app.extensions["solverfleet.agent"]


def reply(text: str, ok: bool, *, prefixed: bool = True) -> Response:
    """One protocol answer. ``ok`` answers are ``OK|text`` (bare when not ``prefixed``)."""
    if getattr(g, "compat_json", False):
        return _json({"status": 1 if ok else 0, "request": text})
    return _acao(Response(f"OK|{text}" if ok and prefixed else text, 200, mimetype="text/plain"))


def _json(body: dict[str, Any]) -> Response:
    """A ``json=1`` answer (get2 and get_pingback add to the usual two fields)."""
    return _acao(
        Response(json.dumps(body, separators=(",", ":")), 200, mimetype="application/json")
    )


def _acao(resp: Response) -> Response:
    if getattr(g, "compat_acao", False):
        resp.headers["Access-Control-Allow-Origin"] = "*"
    return resp


def fail(text: str) -> Response:
    return reply(text, False)


def _fields() -> dict[str, str]:
    """Query and form values, first value of each name (a form value wins over the query)."""
    fields: dict[str, str] = {}
    for source in (request.form, request.args):
        for name in source:
            fields.setdefault(name, source.get(name, ""))
    return fields


def _bad_text(fields: dict[str, str]) -> bool:
    """Any field (or name) that is not valid text; only free text may hold tabs and newlines
    (a base64 ``body`` is often wrapped), ids, keys and URLs are one line."""
    return any(
        text_problem(name) or text_problem(value, multiline=name not in _ONE_LINE)
        for name, value in fields.items()
    )


def _flags(fields: dict[str, str]) -> None:
    g.compat_json = fields.get("json", "").strip() == "1"
    g.compat_acao = fields.get("header_acao", "").strip() == "1"


def _authenticate(agent: Agent, fields: dict[str, str]) -> tuple[Any, Any, str] | Response:
    secret = fields.get("key", "").strip()
    well_formed = bool(_KEY(secret))
    snap = agent.keystore.snapshot
    auth = authenticate(agent.bans, snap, secret if well_formed else None, _ip(agent))
    if isinstance(auth, precheck.Decision):
        if auth.code == "invalid_key" and not well_formed:
            return fail(answers.WRONG_USER_KEY)
        return fail(answers.refusal_text(auth.code))
    return auth[0], auth[1], secret


def _ip(agent: Agent) -> str:
    return client_ip(request.remote_addr, request.headers.get("X-Forwarded-For"), agent.trusted)


@bp.route("/in.php", methods=METHODS)
def in_php() -> Response:
    agent = _agent()
    with agent.tracking():  # like /solve: drain waits for an admission in progress
        return _in_php(agent)


def _in_php(agent: Agent) -> Response:
    try:
        fields = _fields()
        upload = request.files.get("file")
        files = {"file": upload.read(MAX_IMAGE + 1)} if upload is not None else {}
    except RequestEntityTooLarge:
        _flags(dict(request.args.items()))
        return fail(answers.TOO_BIG_CAPTCHA_FILESIZE)
    _flags(fields)
    if _bad_text(fields):
        return fail(answers.BAD_PARAMETERS)
    code, _ = agent.readiness()
    if code is not None:
        return fail(answers.NO_SLOT)  # draining or not ready: the LB retries elsewhere
    auth = _authenticate(agent, fields)
    if isinstance(auth, Response):
        return auth
    key, user, secret = auth
    spec = parse_task(fields, files)
    if isinstance(spec, str):
        return fail(spec)
    snap = agent.keystore.snapshot
    assert snap is not None
    refused = options.apply(spec, snap, key, user, fields.get("soft_id"),
                            fields.get("pingback", "").strip(), json=False)  # fmt: skip
    if refused is not None:
        return fail(refused)
    ok, text = compat_solve.submit(agent, snap, secret, key, user, spec, _ip(agent))
    return reply(text, ok)


@bp.route("/res.php", methods=METHODS)
def res_php() -> Response:
    agent = _agent()
    fields = _fields()
    _flags(fields)
    if _bad_text(fields):
        return fail(answers.BAD_PARAMETERS)
    unready = forward.unready(agent, request.headers)
    if unready is not None:
        return unready
    auth = _authenticate(agent, fields)
    if isinstance(auth, Response):
        return auth
    key = auth[0]
    if key.ip_allowlist is not None and not in_nets(parse_ip(_ip(agent)), key.ip_allowlist):
        return fail(answers.IP_NOT_ALLOWED)
    compat_solve.sweep(agent)
    persist.ensure(agent)
    action = fields.get("action", "").strip().lower()
    if action == "getbalance":
        return reply(format_micros(balance_micros(agent, key)), True, prefixed=False)
    if action == "get" and fields.get("ids", "").strip():
        return _get_many(agent, key, fields)
    if action in ("get", "get2", "reportgood", "reportbad") and _ID(fields.get("id", "").strip()):
        elsewhere = forward.res_one(agent, fields, request.headers, _ip(agent))
        if isinstance(elsewhere, forward.Reply):
            return _passed_on(elsewhere)
        if elsewhere is not None:
            return fail(elsewhere)
    if action == "get":
        return _get_one(agent, key, fields.get("id", ""))
    if action == "get2":
        return _get_one(agent, key, fields.get("id", ""), with_price=True)
    if action in pingback_actions.ACTIONS:
        ok, answer = pingback_actions.run(agent, key, auth[1], action, fields.get("addr", ""))
        if isinstance(answer, list):
            return _listed(answer)
        return reply(answer, ok, prefixed=False)
    if action in ("reportgood", "reportbad"):
        task_id = fields.get("id", "").strip()
        if not _ID(task_id):
            return fail(answers.WRONG_ID_FORMAT)
        task = compat_solve.find(agent.tasks, key, task_id)
        if task is None:
            return fail(answers.WRONG_ID)
        text = compat_solve.report(agent, task, good=action == "reportgood")
        return reply(text, text == answers.REPORT_OK, prefixed=False)
    return fail(answers.EMPTY_ACTION)


def _get_one(agent: Agent, key: Any, task_id: str, *, with_price: bool = False) -> Response:
    task_id = task_id.strip()
    if not _ID(task_id):
        return fail(answers.WRONG_ID_FORMAT)
    task = compat_solve.find(agent.tasks, key, task_id)
    if task is None:
        return fail(_missing(agent))
    ok, text = compat_solve.deliver(agent, task)
    if ok and with_price:  # get2: OK|answer|price ({"request", "price"} with json=1)
        price = format_micros(task.decision.price)
        if getattr(g, "compat_json", False):
            return _json({"status": 1, "request": text, "price": price})
        return reply(f"{text}|{price}", True)
    return reply(text, ok)


def _listed(urls: list[str]) -> Response:
    """get_pingback: ``OK|url1|url2`` (``OK|`` when none); with json=1 a list in ``request``."""
    if getattr(g, "compat_json", False):
        return _json({"status": 1, "request": urls})
    return reply("|".join(urls), True)


def _missing(agent: Agent) -> str:
    """The answer for an id not here: unknown, or, while stopping, maybe handed over to the
    next process (persist.py), so the client polls again."""
    return answers.NOT_READY if agent.tasks.handed_over else answers.WRONG_ID


def _passed_on(owner: forward.Reply) -> Response:
    """The owning agent's answer to a forwarded request, as this agent's own."""
    resp = Response(owner.body, 200, content_type=owner.mimetype)
    if getattr(g, "compat_acao", False):
        resp.headers["Access-Control-Allow-Origin"] = "*"
    return resp


def _get_many(agent: Agent, key: Any, fields: dict[str, str]) -> Response:
    """``ids=1,2,3`` -> ``answer1|CAPCHA_NOT_READY|ERROR_...``, one slot per id, in order;
    other agents' ids are fetched from them (forward.py)."""
    wanted = [part.strip() for part in fields["ids"].split(",")]
    if len(wanted) > MAX_IDS:
        return fail(answers.BAD_PARAMETERS)
    if not all(_ID(task_id) for task_id in wanted):
        return fail(answers.WRONG_ID_FORMAT)
    elsewhere = forward.res_many(agent, fields, request.headers, wanted, _ip(agent))
    slots = []
    for task_id in wanted:
        if task_id in elsewhere:
            slots.append(elsewhere[task_id])
            continue
        task = compat_solve.find(agent.tasks, key, task_id)
        slot = _missing(agent) if task is None else compat_solve.deliver(agent, task)[1]
        slots.append(slot)
    return reply("|".join(slots), True, prefixed=False)


def protocol_error(exc: BaseException) -> Response | None:
    """On this surface a framework error is a protocol text with HTTP 200, never a 4xx/5xx;
    ``None`` for every other path."""
    if request.path not in PATHS:
        return None
    if not hasattr(g, "compat_json"):
        _flags(dict(request.args.items()))
    if isinstance(exc, RequestEntityTooLarge) and request.path == "/in.php":
        return fail(answers.TOO_BIG_CAPTCHA_FILESIZE)
    if isinstance(exc, HTTPException):
        return fail(answers.BAD_PARAMETERS)
    log.error("unhandled error on %s (%s)", request.path, type(exc).__name__, exc_info=exc)
    return fail(answers.NO_SLOT)
