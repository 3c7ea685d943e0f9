"""The fleet health report: the host probe (real loopback HTTP), the controller's verdicts
(solverfleet.fleethealth.rules, which health.yml's filter plugin loads by path) and table (a
filter plugin, imported from its file), the balancer's runtime API answers (captured from
HAProxy 2.6) and the collector's readiness figures."""

from __future__ import annotations

import copy
import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest
from flask import Flask, jsonify

from solverfleet.collector.store import StoreError
from solverfleet.fleethealth import probe
from solverfleet.fleethealth import rules as health
from solverfleet.process import free_port
from tests.support.collector import make_app, sqlite_url
from tests.support.fake_collector import Served

REPO = Path(__file__).resolve().parents[2]
SHOW_STAT = (Path(__file__).parent / "data" / "haproxy_show_stat.csv").read_text()
SOLVERS = ["solver1", "solver2", "solver3"]


def _plugin(name: str) -> ModuleType:
    path = REPO / "playbooks" / "filter_plugins" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"_plugin_{name}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclass-free, but keep imports resolvable
    spec.loader.exec_module(module)
    return module


table = _plugin("solverfleet_health_table")


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


# ---- findings as the plays register them --------------------------------------------------------


def agent_status(**overrides) -> dict:
    status = {
        "agent_id": "solver1", "node_id": 101, "version": "0.1.0", "instance": "i-1",
        "uptime_s": 500.0, "ready": True, "reason": None, "message": "", "draining": False,
        "in_flight": 2, "spool_backlog": 0,
        "leases": {"keys": 3, "held_micros": 1_500_000, "available_micros": 1_496_000,
                   "in_flight_micros": 4000, "cpm_tokens": 10, "daily_tokens": 40},
        "collector": {"online": True, "last_sync_age_s": 0.2, "last_ship_age_s": 1.5,
                      "shipped": 120},
    }  # fmt: skip
    status.update(overrides)
    return status


def colour_found(name: str, port: int, *, release: str | None = "0.1.0", agent=None, error=None):
    return {
        "port": port, "link": f"/opt/solverfleet/{'current' if name == 'blue' else name}",
        "link_exists": release is not None, "release": release,
        "target": f"/opt/solverfleet/releases/{release}" if release else None, "link_error": None,
        "agent": agent, "agent_error": error,
    }  # fmt: skip


def probe_output(host: str, **changes) -> dict:
    out = {
        "schema": 1, "hostname": host, "time": "2026-11-23T10:00:00+00:00",
        "system": {"cpu_percent": 12.0, "cpu_count": 2, "load_avg": [0.5, 0.4, 0.3],
                   "memory": {"total_bytes": 8 << 30, "available_bytes": 6 << 30,
                              "used_percent": 25.0},
                   "disks": {"/": {"total_bytes": 100 << 30, "free_bytes": 60 << 30,
                                   "used_percent": 40.0}}},
        "colours": {
            "blue": colour_found("blue", 8600, agent=agent_status(agent_id=host)),
            "green": colour_found("green", 8601, release=None, error="connection refused"),
        },
        "worker": {"url": "http://127.0.0.1:8500/healthz", "checked": True, "ok": True,
                   "error": None, "release": "0.1.0"},
        "colour_state": {"present": False, "active": "blue", "switches": 0, "last": None,
                         "error": None},
    }  # fmt: skip
    out.update(changes)
    return out


def command_result(data: dict) -> dict:
    return {"rc": 0, "stdout": json.dumps(data), "stderr": "", "changed": False, "failed": False}


def show_stat(**statuses: str) -> str:
    """The captured answer with server statuses set, e.g. ``solverfleet_agents__solver2="DOWN"``;
    by default every blue server UP, every green one DOWN (green never deployed)."""
    lines = SHOW_STAT.splitlines()
    header = lines[0][2:].split(",")
    at = header.index("status")
    out = [lines[0]]
    for line in lines[1:]:
        fields = line.split(",")
        if len(fields) > at and fields[1] not in ("FRONTEND", "BACKEND"):
            blue = fields[0] == "solverfleet_agents"
            fields[at] = statuses.get(f"{fields[0]}__{fields[1]}", "UP" if blue else "DOWN")
        out.append(",".join(fields))
    return "\n".join(out) + "\n"


def lb_found(stat: str | None = None, live: str | None = None, colour: dict | None = None) -> dict:
    return {
        "changed": False,
        "stat": show_stat() if stat is None else stat,
        "stat_error": None,
        "map": f"0x5584bf7a30f0 live {live}\n\n" if live else "",
        "map_error": None,
        "colour_text": None if colour is None else json.dumps(colour),
        "colour_error": None,
    }


def collector_found(ready_status: int = 200) -> dict:
    ready = {"status": ready_status, "msg": "OK", "url": "http://127.0.0.1:8400/readyz"}
    ready["json"] = (
        {"ok": True, "db": "reachable", "db_ping_ms": 0.7}
        if ready_status == 200
        else {"error": "unavailable", "message": "database unreachable"}
    )
    live = {
        "status": 200,
        "json": {"ok": True},
        "msg": "OK",
        "url": "http://127.0.0.1:8400/healthz",
    }
    return {"healthz": live, "readyz": ready}


def healthy_findings() -> dict:
    return {
        "solvers": {h: command_result(probe_output(h)) for h in SOLVERS},
        "collectors": {"collector1": collector_found()},
        "lbs": {"lb1": lb_found()},
    }


def report_of(findings: dict, **options) -> dict:
    return health.health_report(findings, options, now="2026-11-23T10:00:00+00:00")


# ---- verdicts -----------------------------------------------------------------------------------


def test_healthy_fleet():
    report = report_of(healthy_findings())
    assert report["healthy"] is True, report["unhealthy"]
    assert (report["unhealthy"], report["warnings"]) == ([], [])
    assert report["active_colour"] == "blue"
    assert set(report["hosts"]) == {"lb1", "collector1", *SOLVERS}
    solver = report["hosts"]["solver1"]
    assert list(solver["colours"]) == ["blue"]  # green never deployed: not shown
    blue = solver["colours"]["blue"]
    assert (blue["release"], blue["ready"], blue["lb"], blue["in_flight"]) == (
        "0.1.0", True, "UP", 2,
    )  # fmt: skip
    assert blue["leases"]["held_micros"] == 1_500_000
    assert report["hosts"]["collector1"]["db"] == "reachable"
    assert report["hosts"]["lb1"]["backends"]["solverfleet_agents"]["up"] == 3
    json.dumps(report)  # the JSON file


def test_stopped_active_agent_is_named():
    findings = healthy_findings()
    data = probe_output("solver2")
    data["colours"]["blue"] = colour_found("blue", 8600, error="connection refused")
    findings["solvers"]["solver2"] = command_result(data)
    findings["lbs"]["lb1"] = lb_found(show_stat(solverfleet_agents__solver2="DOWN"))
    report = report_of(findings)
    assert report["healthy"] is False
    assert report["unhealthy"] == [
        "lb1: sees solver2 DOWN in solverfleet_agents (blue, active): "
        "L4CON Layer4 connection problem",
        "solver2: agent blue (active, port 8600) not answering: connection refused",
    ]  # fmt: skip
    assert report["hosts"]["solver1"]["healthy"] and not report["hosts"]["solver2"]["healthy"]
    text = table.health_table(report)
    assert "UNHEALTHY (2)" in text
    assert "FAIL solver2: agent blue (active, port 8600) not answering" in text
    row = next(ln for ln in text.splitlines() if ln.startswith("solver2"))
    assert "down" in row and row.rstrip().endswith("FAIL")


def test_idle_colour_down_is_a_warning_and_active_green_is_judged():
    findings = healthy_findings()
    for host in SOLVERS:
        data = probe_output(host)
        data["colours"]["green"] = colour_found("green", 8601, release="0.2.0",
                                                agent=agent_status(version="0.2.0"))  # fmt: skip
        findings["solvers"][host] = command_result(data)
    # solver3's idle (green) agent is down: a warning while blue is live.
    data = json.loads(findings["solvers"]["solver3"]["stdout"])
    data["colours"]["green"]["agent"], data["colours"]["green"]["agent_error"] = None, "timed out"
    findings["solvers"]["solver3"] = command_result(data)
    green_down = {"solverfleet_agents_green__solver3": "DOWN",
                  "solverfleet_agents_green__solver1": "UP",
                  "solverfleet_agents_green__solver2": "UP"}  # fmt: skip
    findings["lbs"]["lb1"] = lb_found(show_stat(**green_down))
    report = report_of(findings)
    assert report["healthy"] is True, report["unhealthy"]
    assert "solver3: agent green (idle, port 8601) not answering: timed out" in report["warnings"]
    assert any(w.startswith("lb1: sees solver3 DOWN in solverfleet_agents_green") for w in
               report["warnings"])  # fmt: skip
    assert list(report["hosts"]["solver1"]["colours"]) == ["blue", "green"]

    # The same fleet with green live (HAProxy's map) fails on solver3, everywhere it shows.
    record = {"active": "green", "history": []}
    findings["lbs"]["lb1"] = lb_found(show_stat(**green_down), live="solverfleet_agents_green",
                                      colour=record)  # fmt: skip
    for host in SOLVERS:
        data = json.loads(findings["solvers"][host]["stdout"])
        data["colour_state"] = health.parse_colour_state(json.dumps(record))
        findings["solvers"][host] = command_result(data)
    report = report_of(findings)
    assert report["active_colour"] == "green"
    assert report["unhealthy"] == [
        "lb1: sees solver3 DOWN in solverfleet_agents_green (green, active): "
        "L4CON Layer4 connection problem",
        "solver3: agent green (active, port 8601) not answering: timed out",
    ]


def test_active_green_without_a_green_agent_fails():
    findings = healthy_findings()
    findings["lbs"]["lb1"] = lb_found(live="solverfleet_agents_green",
                                      colour={"active": "green", "history": []})  # fmt: skip
    for host in SOLVERS:
        data = probe_output(host)
        data["colour_state"] = {**data["colour_state"], "active": "green", "present": True}
        findings["solvers"][host] = command_result(data)
    report = report_of(findings)
    problems = report["hosts"]["solver1"]["problems"]
    assert "agent green (active, port 8601): release link /opt/solverfleet/green is missing" in (
        problems
    )
    assert "agent green (active, port 8601) not answering: connection refused" in problems
    assert (
        "lb1: no agent UP in solverfleet_agents_green: the active colour serves nothing"
        in (report["unhealthy"])
    )


def test_colour_disagreements_fail():
    findings = healthy_findings()
    # HAProxy serves green, the balancer's record says blue; solver1 records green.
    findings["lbs"]["lb1"] = lb_found(live="solverfleet_agents_green",
                                      colour={"active": "blue", "history": []})  # fmt: skip
    data = probe_output("solver1")
    data["colour_state"] = {**data["colour_state"], "active": "green", "present": True}
    findings["solvers"]["solver1"] = command_result(data)
    report = report_of(findings)
    assert "lb1: colour state records blue as active, HAProxy serves green" in report["unhealthy"]
    assert (
        "solver2: colour state records blue as active, the balancer serves green"
        in (report["unhealthy"])
    )
    assert not any(p.startswith("solver1: colour state") for p in report["unhealthy"])


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ("", (None, None)),
        ("\n\n", (None, None)),
        ("Unknown map identifier. Please use #<id> or <file>.\n\n", (None, None)),
        ("0x5584bf7a30f0 live solverfleet_agents_green\n\n", ("solverfleet_agents_green", None)),
        ("0x55 other solverfleet_agents\n", (None, None)),
    ],
)
def test_live_map_answers(answer, expected):
    assert health.parse_live_map(answer) == expected


def test_unexpected_map_answer_and_unknown_backend_fail():
    findings = healthy_findings()
    findings["lbs"]["lb1"]["map"] = "Permission denied.\n"
    assert report_of(findings)["hosts"]["lb1"]["problems"][0].startswith("colour map unreadable")
    findings["lbs"]["lb1"] = lb_found(live="solverfleet_agents_red")
    assert (
        "lb1: HAProxy serves solverfleet_agents_red, which is no colour's backend"
        in (report_of(findings)["unhealthy"])
    )


def test_captured_show_stat_parses():
    rows = health.parse_show_stat(SHOW_STAT)
    seen = health.backends(rows)
    assert set(seen) == {"solverfleet_agents", "solverfleet_agents_green"}
    blue = seen["solverfleet_agents"]["servers"]
    assert {s: r["status"] for s, r in blue.items()} == {
        "solver1": "UP", "solver2": "DOWN", "solver3": "DRAIN",
    }  # fmt: skip
    assert blue["solver2"]["check_desc"] == "Layer4 connection problem"
    assert health.parse_show_stat("") == health.parse_show_stat("Unknown command\n") == []


def test_drained_server_in_the_live_backend_fails():
    findings = healthy_findings()
    findings["lbs"]["lb1"] = lb_found(show_stat(solverfleet_agents__solver3="DRAIN"))
    assert report_of(findings)["unhealthy"] == [
        "lb1: sees solver3 DRAIN in solverfleet_agents (blue, active): L7OK Layer7 check passed"
    ]


@pytest.mark.parametrize(
    ("status", "problem"),
    [
        ({"ready": False, "reason": "not_ready",
          "message": "collector unreachable for longer than offline_grace"},
         "agent blue (active, port 8600) not ready: not_ready: collector unreachable for longer "
         "than offline_grace"),
        ({"collector": {"online": False, "last_sync_age_s": 42.0, "last_ship_age_s": 1.0,
                        "shipped": 1}},
         "agent blue (active, port 8600): no sync with the collector for 42 s"),
        ({"spool_backlog": 7, "collector": {"online": True, "last_sync_age_s": 0.1,
                                            "last_ship_age_s": 300.0, "shipped": 1}},
         "agent blue (active, port 8600): 7 usage events not shipped for 300 s"),
        ({"spool_backlog": 7, "uptime_s": 90.0,
          "collector": {"online": True, "last_sync_age_s": 0.1, "last_ship_age_s": None,
                        "shipped": 0}},
         "agent blue (active, port 8600): 7 usage events not shipped for 90 s"),
    ],
)  # fmt: skip
def test_agent_problems(status, problem):
    findings = healthy_findings()
    data = probe_output("solver1")
    data["colours"]["blue"]["agent"] = agent_status(**status)
    findings["solvers"]["solver1"] = command_result(data)
    report = report_of(findings)
    assert report["unhealthy"] == [f"solver1: {problem}"]


def test_thresholds_are_options():
    findings = healthy_findings()
    data = probe_output("solver1")
    data["colours"]["blue"]["agent"] = agent_status(spool_backlog=50)  # shipping, just busy
    data["system"]["disks"]["/"]["used_percent"] = 90.0
    data["system"]["memory"]["used_percent"] = 98.0
    data["system"]["cpu_percent"] = 99.0  # a moment's figure: never judged
    data["system"]["load_avg"] = [4.0, 1.0, 1.0]
    findings["solvers"]["solver1"] = command_result(data)
    report = report_of(findings, spool_backlog_warn=50)
    assert report["unhealthy"] == ["solver1: memory 98% used"]
    assert report["warnings"] == [
        "solver1: agent blue (active, port 8600): spool backlog 50",
        "solver1: disk / 90% full", "solver1: load average 4.0 on 2 CPUs",
    ]  # fmt: skip
    report = report_of(findings, disk_fail_percent=90, memory_fail_percent=99, load_warn_per_cpu=3)
    assert report["unhealthy"] == ["solver1: disk / 90% full"]
    assert not any("load" in w for w in report["warnings"])


@pytest.mark.parametrize(
    ("result", "problem"),
    [
        ({"unreachable": True, "msg": "Failed to connect to the host via ssh: refused\n"},
         "unreachable: Failed to connect to the host via ssh: refused"),
        ({"rc": 1, "stderr": "Traceback...\nModuleNotFoundError: No module named 'x'"},
         "probe failed (exit 1): ModuleNotFoundError: No module named 'x'"),
        ({"rc": 2, "stderr": "", "msg": "[Errno 2] No such file or directory: b'/opt/x'"},
         "probe failed (exit 2): [Errno 2] No such file or directory: b'/opt/x'"),
        ({"rc": 0, "stdout": "hello"}, "probe printed no JSON: hello"),
        ({}, "not probed (the host failed or was skipped before the probe)"),
    ],
)  # fmt: skip
def test_probe_failures_are_named(result, problem):
    findings = healthy_findings()
    findings["solvers"]["solver2"] = result
    report = report_of(findings)
    assert report["unhealthy"] == [f"solver2: {problem}"]
    assert "FAIL" in table.health_table(report)


def test_worker_down_fails():
    findings = healthy_findings()
    worker = {"url": "http://127.0.0.1:8500/healthz", "checked": True, "ok": False,
              "error": "connection refused", "release": "0.1.0"}  # fmt: skip
    findings["solvers"]["solver1"] = command_result(probe_output("solver1", worker=worker))
    assert report_of(findings)["unhealthy"] == [
        "solver1: worker not answering at http://127.0.0.1:8500/healthz: connection refused"
    ]


def test_collector_findings():
    findings = healthy_findings()
    findings["collectors"]["collector1"] = collector_found(503)
    assert report_of(findings)["unhealthy"] == [
        "collector1: database unreachable (collector /readyz: database unreachable)"
    ]
    down = {"status": -1, "url": "http://127.0.0.1:8400/healthz",
            "msg": "Status code was -1 and not [200]: Request failed: "
                   "<urlopen error [Errno 111] Connection refused>"}  # fmt: skip
    findings["collectors"]["collector1"] = {"healthz": down, "readyz": down}
    assert report_of(findings)["unhealthy"] == [
        f"collector1: collector not answering /healthz: {down['msg']}"
    ]
    findings["collectors"]["collector1"] = {"healthz": {"unreachable": True, "msg": "ssh: timeout"}}
    assert report_of(findings)["unhealthy"] == ["collector1: unreachable: ssh: timeout"]


def test_balancer_failures():
    findings = healthy_findings()
    findings["lbs"]["lb1"] = {**lb_found(), "stat": "", "stat_error": "/run/haproxy/admin.sock: "
                              "No such file or directory"}  # fmt: skip
    report = report_of(findings)
    assert report["unhealthy"] == [
        "lb1: HAProxy runtime API: /run/haproxy/admin.sock: No such file or directory"
    ]
    assert report["active_colour"] is None  # unknown, not guessed
    assert report["hosts"]["solver1"]["active_colour"] == "blue"  # the host's own record
    findings["lbs"]["lb1"] = {**lb_found(), "colour_text": "{oops"}
    assert report_of(findings)["unhealthy"][0].startswith("lb1: colour state unreadable")
    findings["lbs"]["lb1"] = lb_found(show_stat().replace("solverfleet_agents,solver3,", "x,y,"))
    assert report_of(findings)["unhealthy"] == [
        "lb1: solver3 is not a server of solverfleet_agents (blue, active)"
    ]


def test_missing_groups():
    report = report_of({"solvers": {}, "collectors": {}, "lbs": {}})
    assert report["unhealthy"] == [
        "fleet: no solver host in the inventory",
        "fleet: no collector host in the inventory",
    ]
    findings = healthy_findings()
    del findings["lbs"]
    report = report_of(findings)
    assert report["healthy"] is True and report["active_colour"] is None
    assert report["warnings"] == [
        "fleet: no balancer in the inventory (nothing checks what HAProxy sees)"
    ]


def test_report_does_not_change_its_input():
    findings = healthy_findings()
    before = copy.deepcopy(findings)
    report_of(findings)
    assert findings == before


def test_default_colours_follow_the_agent_role():
    assert health.default_colours("/srv/sf/") == [
        {"name": "blue", "port": 8600, "link": "/srv/sf/current", "backend": "solverfleet_agents"},
        {"name": "green", "port": 8601, "link": "/srv/sf/green",
         "backend": "solverfleet_agents_green"},
    ]  # fmt: skip
    agent_colours = {"green": {"port": "9601", "release_link": "green", "suffix": "-green"},
                     "blue": {"port": 9600, "release_link": "current", "suffix": ""}}  # fmt: skip
    colours = health.default_colours("/opt/solverfleet", agent_colours)
    assert [(c["name"], c["port"]) for c in colours] == [("blue", 9600), ("green", 9601)]
    assert health.DEFAULT_OPTIONS["colours"] == health.default_colours("/opt/solverfleet")


def test_probe_arguments():
    colours = [{"name": "blue", "port": 8600, "link": "/opt/solverfleet/current"},
               {"name": "green", "port": "8601", "link": "/opt/solverfleet/green"}]  # fmt: skip
    assert health.probe_args(colours, ["/", "/var/lib/solverfleet"]) == [
        "--colour", "blue:8600:/opt/solverfleet/current",
        "--colour", "green:8601:/opt/solverfleet/green",
        "--disk", "/", "--disk", "/var/lib/solverfleet",
    ]  # fmt: skip
    args = probe.parser().parse_args(health.probe_args(colours, ["/"]))
    assert [c.port for c in args.colour] == [8600, 8601]


# ---- the table ----------------------------------------------------------------------------------


def _cells(header: str, line: str) -> dict[str, str]:
    """A table row cut at the header's column starts (cells may hold spaces)."""
    starts = [header.index(c) for c in table.COLUMNS]
    ends = [*starts[1:], None]
    return {c: line[a:b].strip() for c, a, b in zip(table.COLUMNS, starts, ends, strict=True)}


def test_table_shows_every_host_and_figures():
    lines = table.health_table(report_of(healthy_findings())).splitlines()
    assert lines[0].split() == table.COLUMNS
    rows = [_cells(lines[0], ln) for ln in lines[1:6]]
    assert [r["HOST"] for r in rows] == ["lb1", "collector1", *SOLVERS]
    assert rows[2] == {
        "HOST": "solver1", "ROLE": "solver", "COLOUR": "blue*", "RELEASE": "0.1.0",
        "AGENT": "ready", "LB": "UP", "INFL": "2", "SPOOL": "0", "LEASES": "3k 1.50",
        "SYNC": "0.2s", "SHIP": "1.5s", "WORKER": "up", "CPU": "12%", "MEM": "25%",
        "DISK": "40%", "STATUS": "ok",
    }  # fmt: skip
    assert rows[0]["COLOUR"] == "blue*" and rows[0]["LB"] == "3/3* 0/3"
    assert rows[1]["WORKER"] == "db reachable 0.7ms" and rows[1]["AGENT"] == "up"
    assert lines[6] == "fleet: HEALTHY; active colour blue"


@pytest.mark.parametrize(
    ("micros", "text"),
    [(0, "0.00"), (1_500_000, "1.50"), (2000, "0.002"), (25_000_000, "25.00"), (-3000, "-0.003"),
     (1, "0.000001")],
)  # fmt: skip
def test_money_in_the_table_is_exact(micros, text):
    assert table._money(micros) == text


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
