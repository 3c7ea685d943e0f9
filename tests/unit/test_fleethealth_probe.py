"""The fleet health probe on a solver host (real loopback HTTP stand-ins for the agent and the
worker) and the collector's readiness figures the report reads."""

from __future__ import annotations

import json

import pytest
from flask import Flask, jsonify

from solverfleet.collector.store import StoreError
from solverfleet.fleethealth import probe
from solverfleet.fleethealth import rules as health
from solverfleet.process import free_port
from tests.support.collector import make_app, sqlite_url
from tests.support.fake_collector import Served
from tests.support.healthfindings import agent_status

# ---- the probe, on the host ---------------------------------------------------------------------


def _agent_app(status: int = 200, body: dict | None = None, admin: bool = True) -> Flask:
    app = Flask("agent_stand_in")
    body = body or agent_status()

    if admin:

        @app.get("/admin/status")
        def admin_status():
            return jsonify(body), status

    @app.get("/readyz")
    def readyz():
        return jsonify(error="draining", message="this agent is draining"), 503

    return app


@pytest.fixture
def served():
    started: list[Served] = []

    def serve(app: Flask) -> Served:
        started.append(Served(app))
        return started[-1]

    yield serve
    for server in started:
        server.stop()


def test_colour_argument_parsing():
    assert probe.parse_colour("green:8601:/opt/x:y") == probe.Colour("green", 8601, "/opt/x:y")
    for bad in ("blue", "blue:86x:/opt", "blue:0:/opt", ":8600:/opt", "blue:8600:"):
        with pytest.raises(Exception, match=r"expected|port"):
            probe.parse_colour(bad)


def test_agent_status_answered(served):
    server = served(_agent_app())
    assert probe.agent_status(server.port, 2) == {"agent": agent_status(), "agent_error": None}


def test_agent_without_admin_status_is_read_from_readyz(served):
    server = served(_agent_app(admin=False))
    found = probe.agent_status(server.port, 2)
    assert found["agent_error"] is None
    assert found["agent"]["partial"] is True
    assert (found["agent"]["ready"], found["agent"]["reason"]) == (False, "draining")


def test_agent_errors(served):
    assert probe.agent_status(free_port(), 2) == {
        "agent": None,
        "agent_error": "connection refused",
    }
    server = served(_agent_app(status=403, body={"error": "forbidden", "message": "no"}))
    assert probe.agent_status(server.port, 2) == {
        "agent": None,
        "agent_error": "/admin/status answered 403",
    }


def test_worker_health(served, tmp_path):
    app = Flask("worker_stand_in")
    app.get("/healthz")(lambda: jsonify(status="ok"))
    server = served(app)
    release = tmp_path / "releases" / "0.3.0"
    release.mkdir(parents=True)
    (tmp_path / "worker").symlink_to(release)
    ok = probe.worker_health(f"{server.url}/healthz", str(tmp_path / "worker"), 2)
    assert ok == {"url": f"{server.url}/healthz", "checked": True, "ok": True, "error": None,
                  "release": "0.3.0"}  # fmt: skip
    down = probe.worker_health(f"http://127.0.0.1:{free_port()}/healthz", "", 2)
    assert (down["ok"], down["error"], down["release"]) == (False, "connection refused", None)
    assert probe.worker_health("", "", 2)["checked"] is False


def test_release_links(tmp_path):
    release = tmp_path / "releases" / "0.1.0"
    release.mkdir(parents=True)
    (tmp_path / "current").symlink_to(release)
    (tmp_path / "dangling").symlink_to(tmp_path / "releases" / "gone")
    assert probe.release_of(str(tmp_path / "current")) == {
        "link_exists": True, "release": "0.1.0", "target": str(release), "link_error": None,
    }  # fmt: skip
    missing = probe.release_of(str(tmp_path / "green"))
    assert (missing["link_exists"], missing["release"]) == (False, None)
    dangling = probe.release_of(str(tmp_path / "dangling"))
    assert dangling["link_exists"] is True and "not a directory" in dangling["link_error"]


def test_colour_state_file(tmp_path):
    path = tmp_path / "colour.json"
    assert probe.colour_state(str(path))["active"] == "blue"  # missing: blue, no history
    entry = {"colour": "green", "previous": "blue", "release": "0.2.0",
             "at": "2026-11-23T10:00:00Z", "action": "switch"}  # fmt: skip
    path.write_text(json.dumps({"active": "green", "history": [entry]}))
    assert probe.colour_state(str(path)) == {
        "present": True, "active": "green", "switches": 1, "last": entry, "error": None,
    }  # fmt: skip
    for bad in ("{not json", '{"history": []}', '{"active": 3}', "[]"):
        path.write_text(bad)
        state = probe.colour_state(str(path))
        assert state["active"] is None and "not valid colour state" in state["error"], bad
    # Both sides of the report read colour.json the same way.
    assert health.parse_colour_state(None) == probe.colour_state(str(tmp_path / "none.json"))


def test_probe_prints_real_figures(served, tmp_path, capsys):
    release = tmp_path / "releases" / "0.1.0"
    release.mkdir(parents=True)
    (tmp_path / "current").symlink_to(release)
    agent = served(_agent_app())
    code = probe.main([
        "--colour", f"blue:{agent.port}:{tmp_path / 'current'}",
        "--colour", f"green:{free_port()}:{tmp_path / 'green'}",
        "--worker-url", "", "--worker-link", "", "--colour-file", str(tmp_path / "colour.json"),
        "--disk", str(tmp_path), "--disk", str(tmp_path / "nope"), "--cpu-interval", "0.05",
    ])  # fmt: skip
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert out["schema"] == probe.SCHEMA == health.PROBE_SCHEMA
    system = out["system"]
    assert system["memory"]["total_bytes"] > 0 and 0 <= system["memory"]["used_percent"] <= 100
    assert system["cpu_count"] >= 1 and 0 <= system["cpu_percent"] <= 100
    assert system["disks"][str(tmp_path)]["total_bytes"] > 0
    assert "error" in system["disks"][str(tmp_path / "nope")]
    blue, green = out["colours"]["blue"], out["colours"]["green"]
    assert (blue["release"], blue["agent"], blue["agent_error"]) == ("0.1.0", agent_status(), None)
    assert (green["link_exists"], green["agent"], green["agent_error"]) == (
        False, None, "connection refused",
    )  # fmt: skip
    assert out["colour_state"]["active"] == "blue"


# ---- the collector's readiness ------------------------------------------------------------------


def test_collector_readiness_reports_the_database(tmp_path, monkeypatch):
    harness = make_app(sqlite_url(tmp_path / "c.db"))
    client = harness.app.test_client()
    body = client.get("/readyz").get_json()
    assert (body["ok"], body["db"]) == (True, "reachable")
    assert isinstance(body["db_ping_ms"], float) and body["db_ping_ms"] >= 0
    assert client.get("/healthz").get_json() == {"ok": True}

    def down() -> None:
        raise StoreError("connection refused")

    monkeypatch.setattr(harness.db, "ping", down)
    resp = client.get("/readyz")
    assert resp.status_code == 503
    assert resp.get_json() == {"error": "unavailable", "message": "database unreachable"}
    assert client.get("/healthz").status_code == 200
