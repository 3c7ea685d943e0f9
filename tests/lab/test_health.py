"""playbooks/health.yml on the shared deployed fleet (tests.support.labfleet): healthy, it exits 0
and its JSON holds real figures for every host; with the live colour's agent stopped on one
solver host, it exits non-zero and names that host and its agent. The agent is started again
and the module waits until it is ready and UP in HAProxy, so the fleet is left healthy."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.support.ansible import run_playbook
from tests.support.labfleet import SKIP, Fleet, haproxy_command, wait_for_response

pytestmark = [pytest.mark.lab, pytest.mark.skipif(SKIP is not None, reason=str(SKIP))]

# What blue_green.yml deploys per colour (solverfleet_colours, roles/solverfleet_common).
SERVICES = {"blue": "solverfleet-agent", "green": "solverfleet-agent-green"}
PORTS = {"blue": 8600, "green": 8601}
BACKENDS = {"blue": "solverfleet_agents", "green": "solverfleet_agents_green"}


def health(fleet: Fleet, out: Path):
    run = run_playbook(
        fleet.lab, "health.yml", extra_vars={**fleet.extra, "solverfleet_health_json": str(out)}
    )
    assert out.exists(), run.tail()
    return run, json.loads(out.read_text())


def wait_up_in_haproxy(fleet: Fleet, host: str, backend: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        state = haproxy_command(fleet, f"show servers state {backend}")
        rows = [ln.split() for ln in state.splitlines() if not ln.startswith("#")]
        # srv_op_state 2 = running, srv_admin_state 0 = neither maintenance nor drain
        if any(len(f) > 6 and f[3] == host and (f[5], f[6]) == ("2", "0") for f in rows):
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{host} not UP in {backend} after {timeout}s:\n{state}")
        time.sleep(0.5)


@pytest.mark.timeout(900)
def test_health_report_names_a_stopped_agent(fleet: Fleet, tmp_path: Path) -> None:
    solvers = [h.name for h in fleet.solvers]
    run, report = health(fleet, tmp_path / "healthy.json")
    run.assert_ok()
    assert report["healthy"] is True, report["unhealthy"]
    assert report["unhealthy"] == []
    active = report["active_colour"]
    assert active in SERVICES
    hosts = report["hosts"]
    assert set(hosts) == {h.name for h in fleet.lab.hosts}
    for name in solvers:
        entry = hosts[name]
        assert entry["healthy"] and entry["role"] == "solver", entry
        agent = entry["colours"][active]
        assert agent["ready"] is True and agent["release"], agent
        assert agent["version"] and agent["lb"].startswith("UP"), agent
        assert agent["in_flight"] >= 0 and agent["spool_backlog"] >= 0
        assert agent["last_sync_age_s"] is not None and agent["last_sync_age_s"] < 10
        assert set(agent["leases"]) >= {"keys", "held_micros", "cpm_tokens", "daily_tokens"}
        system = entry["system"]
        assert system["memory"]["total_bytes"] > 0 and system["memory"]["used_percent"] > 0
        assert system["cpu_count"] >= 1 and system["disks"]["/"]["total_bytes"] > 0
        assert entry["worker"]["ok"] is True
    collector = hosts[fleet.host("collector").name]
    assert (collector["alive"], collector["db"]) == (True, "reachable")
    lb = hosts[fleet.host("lb").name]
    assert lb["backends"][BACKENDS[active]]["up"] == len(solvers), lb
    assert "fleet: HEALTHY" in run.output

    victim, address = fleet.solvers[1].name, fleet.solvers[1].address  # solver2
    fleet.lab.service(victim, "stop", SERVICES[active])
    try:
        run, report = health(fleet, tmp_path / "stopped.json")
    finally:
        fleet.lab.service(victim, "start", SERVICES[active])
        wait_for_response(
            lambda: fleet.get(f"{fleet.agent_url(address, PORTS[active])}/readyz"),
            lambda r: r.status == 200,
            timeout=90,
            what=f"{victim} agent ready again",
        )
        wait_up_in_haproxy(fleet, victim, BACKENDS[active])
    assert run.returncode != 0, run.tail()
    assert report["healthy"] is False
    named = f"{victim}: agent {active} (active, port {PORTS[active]}) not answering"
    assert any(p.startswith(named) for p in report["unhealthy"]), report["unhealthy"]
    assert named in run.output
    assert not report["hosts"][victim]["healthy"]
    assert report["hosts"][victim]["colours"][active]["up"] is False
    others = [h for h in solvers if h != victim]
    assert all(report["hosts"][h]["healthy"] for h in others), report["unhealthy"]
    # Nothing unhealthy but the stopped agent (and HAProxy's view of it).
    assert all(victim in p for p in report["unhealthy"]), report["unhealthy"]
    for secret in (fleet.fleet_token, fleet.admin_token):
        assert secret not in run.output
    print(f"\nhealth.yml {run.seconds:.1f}s; unhealthy: {report['unhealthy']}")
