"""JSON errors everywhere: ``{"error": code, "message": text}``, never an HTML page or a 500
for the caller's mistakes."""

from __future__ import annotations

import json
import logging
from typing import Any

from flask import Flask, Response, g, jsonify, request
from werkzeug.exceptions import HTTPException
from werkzeug.routing import IntegerConverter

from solverfleet import jsonbody
from solverfleet.collector.problems import ConfigInvalid, Invalid, NotFound, Problem
from solverfleet.collector.store import StoreError, StoreFull, StoreUnavailable
from solverfleet.textcheck import INT64_MAX, text_problem

log = logging.getLogger(__name__)


def bad_request(message: str, code: str = "invalid") -> Invalid:
    return Invalid(message, code)


def error_response(status: int, code: str, message: str) -> Response:
    response = jsonify({"error": code, "message": message})
    response.status_code = status
    if status == 401:
        response.headers["WWW-Authenticate"] = "Bearer"
    return response


def _too_large() -> str:
    """413's message: the limit, and the setting that raises it where there is one."""
    limit = request.max_content_length
    text = "request body too large" if limit is None else f"request body over {limit} bytes"
    setting = g.get("body_limit_setting")
    if setting:
        text += f" (collector setting {setting}, SOLVERFLEET_{setting.upper()})"
    return text


def read_json(max_items: int = jsonbody.MAX_ITEMS, *, text: bool = True) -> Any:
    """The request body as JSON; 400 for empty, non-UTF-8, malformed or hostile bodies (too
    deep, invalid text, huge numbers: ``jsonbody``), 413 if too big."""
    raw = request.get_data(cache=False)  # raises 413 past max_content_length
    if not raw.strip():
        raise bad_request("request body must be a JSON document", "bad_json")
    try:
        return jsonbody.loads(raw, max_items=max_items, text=text)
    except jsonbody.BodyError as exc:
        raise bad_request(str(exc), "bad_json") from None


def read_object(
    allowed: tuple[str, ...] | None = None, max_items: int = jsonbody.MAX_ITEMS
) -> dict[str, Any]:
    """A JSON object body; with ``allowed``, any other field is a 400."""
    data = read_json(max_items)
    if not isinstance(data, dict):
        raise bad_request("request body must be a JSON object")
    if allowed is not None:
        unknown = sorted(set(data) - set(allowed))
        if unknown:
            raise bad_request(f"unknown field(s): {', '.join(unknown)}", "unknown_field")
    return data


class _Int64(IntegerConverter):
    """``<int:...>`` that cannot overflow the store: a larger id is a 404 like a missing one."""

    def __init__(self, url_map: Any, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("max", INT64_MAX)
        super().__init__(url_map, *args, **kwargs)


def _check_text() -> None:
    """Path segments, query values and form fields are one-line text (``textcheck``): a path
    segment that is not names nothing (404), a query or form value is a 400."""
    pairs = [("path", *item) for item in (request.view_args or {}).items()]
    pairs += [("query", *item) for item in request.args.items(multi=True)]
    if request.mimetype == "application/x-www-form-urlencoded":
        pairs += [("form", *item) for item in request.form.items(multi=True)]
    for where, name, value in pairs:
        problem = text_problem(name) or (isinstance(value, str) and text_problem(value))
        if problem and where == "path":  # no id can hold one: it names nothing, like 1e30
            raise NotFound(f"no such {name}: it {problem}")
        if problem:
            raise bad_request(f"{where} parameter {name[:64]!r}: {problem}")


def register(app: Flask) -> None:
    """Error handlers, the bounded ``int`` converter and the text check; call before any
    blueprint is registered (rules bind their converters when added)."""
    app.url_map.converters["int"] = _Int64
    app.before_request(_check_text)

    @app.errorhandler(Problem)
    def _problem(exc: Problem) -> Response:
        response = error_response(exc.status, exc.code, exc.message)
        if isinstance(exc, ConfigInvalid):
            response.set_data(
                json.dumps({"error": exc.code, "message": exc.message, "errors": exc.errors})
            )
        return response

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> Response:
        code = (exc.name or "error").lower().replace(" ", "_")
        message = exc.description or exc.name
        if exc.code == 413:
            code, message = "too_large", _too_large()
        return error_response(exc.code or 500, code, message)

    @app.errorhandler(StoreFull)
    def _full(exc: StoreFull) -> Response:
        log.error("database full: %s", exc)
        response = error_response(
            503, "store_full", "database disk full, nothing was changed; retry later"
        )
        response.headers["Retry-After"] = "5"
        return response

    @app.errorhandler(StoreUnavailable)
    def _unavailable(exc: StoreUnavailable) -> Response:
        log.warning("database unavailable: %s", exc)
        response = error_response(503, "unavailable", "database unavailable, retry later")
        response.headers["Retry-After"] = "1"
        return response

    @app.errorhandler(StoreError)
    def _store_error(exc: StoreError) -> Response:
        log.error("database error: %s", exc)
        return error_response(503, "store_error", "database error, nothing was changed")

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return error_response(500, "internal", "internal error, nothing was changed")
