"""The fleet health report: the controller's verdicts (solverfleet.fleethealth.rules, which
health.yml's filter plugin loads by path) and table (a filter plugin, imported from its file), on
the balancer's runtime API answers (captured from HAProxy 2.6). The host probe and the
collector's readiness: test_fleethealth_probe.py."""

from __future__ import annotations

import copy
import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest

from solverfleet.fleethealth import probe
from solverfleet.fleethealth import rules as health
from tests.support.healthfindings import (
    SHOW_STAT,
    SOLVERS,
    agent_status,
    collector_found,
    colour_found,
    command_result,
    healthy_findings,
    lb_found,
    probe_output,
    report_of,
    show_stat,
)

REPO = Path(__file__).resolve().parents[2]


def _plugin(name: str) -> ModuleType:
    path = REPO / "playbooks" / "filter_plugins" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"_plugin_{name}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclass-free, but keep imports resolvable
    spec.loader.exec_module(module)
    return module


table = _plugin("solverfleet_health_table")


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
