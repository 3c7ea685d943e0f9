"""JSON log lines with request ids: the formatter, the request-id rule, the Flask hooks and
gunicorn's access lines."""

from __future__ import annotations

import datetime as dt
import io
import json
import logging

import pytest

from solverfleet.agent import agent_of
from solverfleet.agent import create_app as create_agent
from solverfleet.obs import logjson
from solverfleet.obs.gunicornlog import JsonLogger
from solverfleet.obs.logjson import JsonFormatter, accept_request_id
from solverfleet.process import wait_until
from tests.support.collector import make_app, sqlite_url
from tests.support.fake_collector import (  # noqa: F401
    agent_settings,
    fake_collector,
    fake_worker,
    standard_setup,
)

pytest_plugins = ["tests.support.collector"]


@pytest.fixture
def captured():
    """JSON lines written through the ``solverfleet`` logger, parsed."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("solverfleet")
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)

    def lines() -> list[dict]:
        return [json.loads(line) for line in stream.getvalue().splitlines()]

    yield lines
    logger.removeHandler(handler)
    logger.setLevel(old_level)


def test_one_json_object_per_line_with_extras_and_exception(captured):
    log = logging.getLogger("solverfleet.test")
    log.info("shipped %d events", 3, extra={"agent_id": "a1", "batch": [1, 2]})
    try:
        raise ValueError("boom\nsecond line")
    except ValueError:
        log.exception("failed")
    first, second = captured()
    assert first["msg"] == "shipped 3 events" and first["level"] == "INFO"
    assert first["logger"] == "solverfleet.test"
    assert (first["agent_id"], first["batch"]) == ("a1", [1, 2])
    assert "request_id" not in first  # outside a request
    assert dt.datetime.strptime(first["ts"], "%Y-%m-%dT%H:%M:%S.%fZ")
    assert second["level"] == "ERROR" and "ValueError: boom" in second["exc"]


def test_request_id_from_the_context(captured):
    token = logjson.REQUEST_ID.set("req-1")
    try:
        logging.getLogger("solverfleet.x").warning("inside")
    finally:
        logjson.REQUEST_ID.reset(token)
    logging.getLogger("solverfleet.x").warning("outside")
    inside, outside = captured()
    assert inside["request_id"] == "req-1" and "request_id" not in outside


@pytest.mark.parametrize(
    ("text", "leaked"),
    [
        ("Authorization: Bearer sk_live_abcdef0123", "sk_live_abcdef0123"),
        ("GET /in.php?key=sk_live_abc&method=post", "sk_live_abc"),
        ("token=tok_123 and secret=s3cr3t", "s3cr3t"),
        ("mysql://sf:hunter2@db:3306/sf", "hunter2"),
    ],
)
def test_secret_looking_text_is_scrubbed(captured, text, leaked):
    logging.getLogger("solverfleet.x").error("%s", text)
    [line] = captured()
    assert leaked not in json.dumps(line) and "[redacted]" in line["msg"]


@pytest.mark.parametrize(
    ("header", "kept"),
    [
        ("lb-abc-123", True),
        ("a" * 64, True),
        ("a" * 65, False),
        ("has space", False),
        ("new\nline", False),
        ('{"json": 1}', False),
        ("", False),
        (None, False),
    ],
)
def test_request_id_header_is_kept_only_when_well_formed(header, kept):
    got = accept_request_id(header)
    if kept:
        assert got == header
    else:
        assert got != header and len(got) == 32 and int(got, 16) >= 0


def test_collector_echoes_or_makes_request_ids_and_logs_them(fast_dir, captured):
    h = make_app(sqlite_url(fast_dir / "c.db"))

    def noisy():
        logging.getLogger("solverfleet.collector.test").warning("inside a request")
        return {"ok": True}

    h.app.add_url_rule("/_noisy", "noisy", noisy)
    c = h.app.test_client()
    resp = c.get("/_noisy", headers={"X-Request-Id": "trace-42"})
    assert resp.headers["X-Request-Id"] == "trace-42"
    generated = c.get("/healthz", headers={"X-Request-Id": "bad id!"}).headers["X-Request-Id"]
    assert generated != "bad id!" and len(generated) == 32
    assert c.get("/nope").headers["X-Request-Id"]  # also on errors
    assert c.get("/admin/v1/keys").status_code == 401
    [line] = [entry for entry in captured() if entry["msg"] == "inside a request"]
    assert line["request_id"] == "trace-42"
    assert logjson.REQUEST_ID.get() is None  # nothing leaks past the request


def test_solve_reuses_the_request_id_in_its_usage_event(tmp_path, fake_collector, fake_worker):  # noqa: F811
    secrets = standard_setup(fake_collector)
    app = create_agent(agent_settings(tmp_path, fake_collector.url, fake_worker.url))
    try:
        c = app.test_client()
        wait_until(lambda: c.get("/readyz").status_code == 200, timeout=10, what="ready")
        auth = {"Authorization": f"Bearer {secrets['alice-web']}"}
        body = {"type": "turnstile", "url": "https://shop.example/"}
        given = c.post("/solve", json=body, headers={**auth, "X-Request-Id": "client-7"})
        made = c.post("/solve", json=body, headers=auth)
        assert given.headers["X-Request-Id"] == given.json["request_id"] == "client-7"
        assert made.headers["X-Request-Id"] == made.json["request_id"]
        wait_until(lambda: len(fake_collector.successes()) == 2, timeout=10, what="shipped")
        shipped = {e["request_id"] for e in fake_collector.successes()}
        assert shipped == {"client-7", made.json["request_id"]}
    finally:
        agent_of(app).shutdown(drain_grace=0, ship_timeout=1)
        agent_of(app).close()


class _Resp:
    status = "200 OK"
    headers = [("Content-Type", "text/plain"), ("X-Request-Id", "rid-9")]
    sent = 12


def _gunicorn_logger(accesslog: str | None) -> JsonLogger:
    from gunicorn.config import Config

    cfg = Config()
    if accesslog is not None:
        cfg.set("accesslog", accesslog)
    return JsonLogger(cfg)


def test_gunicorn_access_lines_are_json_without_query_or_headers(tmp_path):
    path = tmp_path / "access.log"
    logger = _gunicorn_logger(str(path))
    environ = {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": "/res.php",
        "QUERY_STRING": "key=sk_live_secret&action=getbalance",
        "RAW_URI": "/res.php?key=sk_live_secret&action=getbalance",
        "REMOTE_ADDR": "127.0.0.1",
        "HTTP_AUTHORIZATION": "Bearer sk_live_other",
    }
    logger.access(_Resp(), None, environ, dt.timedelta(milliseconds=3))
    for handler in logger.access_log.handlers:
        handler.flush()
    text = path.read_text()
    assert "sk_live" not in text
    line = json.loads(text.splitlines()[-1])
    assert line["msg"] == "GET /res.php 200" and line["logger"] == "gunicorn.access"
    assert (line["path"], line["status"], line["request_id"]) == ("/res.php", 200, "rid-9")
    assert line["duration_ms"] == 3.0 and line["bytes"] == 12


def test_gunicorn_access_lines_are_off_unless_asked_for():
    assert not _gunicorn_logger(None).access_log_enabled
