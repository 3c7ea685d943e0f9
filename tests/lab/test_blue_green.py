"""playbooks/blue_green.yml and rollback.yml on the shared lab fleet, under load through the
balancer with `retries 0`: the switch to the new colour fails no request, usage at the collector
equals the successes clients saw, the old colour keeps running, rolling_update.yml refuses while
green is live, and rollback brings the previous release back into service. The module ends with
blue live again, as it found the fleet.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support.ansible import PlaybookRun, run_playbook
from tests.support.labfleet import (
    AGENT_PORT,
    SKIP,
    Fleet,
    admin_get,
    apply_key,
    finish_load,
    haproxy_command,
    settled_successes,
    solve,
    start_load,
    wait_for_response,
    wait_in_flight,
    wait_usage_equals,
)

pytestmark = [pytest.mark.lab, pytest.mark.skipif(SKIP is not None, reason=str(SKIP))]

GREEN_PORT = 8601
RELEASE = "0.0.0-green"


def live_backend(fleet: Fleet) -> str:
    out = haproxy_command(fleet, "show map /etc/haproxy/solverfleet-colour.map")
    lives = [line.split()[2] for line in out.splitlines() if len(line.split()) == 3]
    assert len(lives) == 1, out
    return lives[0]


def colour_state(fleet: Fleet, host: str) -> dict:
    out = fleet.lab.ssh(host, ["cat", "/var/lib/solverfleet/colour.json"], check=True).stdout
    return json.loads(out)


def link(fleet: Fleet, host: str, name: str) -> str:
    return fleet.lab.ssh(host, ["readlink", f"/opt/solverfleet/{name}"], check=True).stdout.strip()


def serving_agents(fleet: Fleet, n: int = 6) -> set[str]:
    """The agents that served the newest ``n`` usage events, after ``n`` fresh solves."""
    for _ in range(n):
        assert solve(fleet).status == 200
    newest = admin_get(fleet, f"usage?key_id=alice-lab&limit={n}").json()["events"]
    return {e["agent_id"] for e in newest}


def switch_under_load(fleet: Fleet, tmp_path: Path, playbook: str, port: int) -> PlaybookRun:
    """Run a colour switch while clients hold 2 s solves on the live colour (``port``); assert
    no client saw a failure and the collector holds exactly the successes they saw."""
    before = settled_successes(fleet)
    stop = tmp_path / f"stop-{playbook}"
    load = start_load(fleet, stop, latency_ms=2000)
    try:
        wait_in_flight(fleet, port=port)
        run = run_playbook(
            fleet.lab, playbook, extra_vars={**fleet.extra, "solverfleet_release": RELEASE}
        )
    finally:
        result = finish_load(load, stop)
    run.assert_ok()
    counts = result.get("counts", {})
    assert counts.get("200", 0) > 20, result
    assert set(counts) == {"200"}, result
    assert wait_usage_equals(fleet, before + counts["200"]) == before + counts["200"]
    for secret in (fleet.fleet_token, fleet.admin_token, fleet.api_key):
        assert secret not in run.output
    print(f"\n{playbook} {run.seconds:.1f}s under load: {counts}")
    return run


@pytest.mark.timeout(900)
def test_blue_green_switch_and_rollback_under_load(fleet: Fleet, tmp_path: Path) -> None:
    lab, lb = fleet.lab, fleet.host("lb").name
    apply_key(fleet)
    wait_for_response(lambda: solve(fleet), lambda r: r.status == 200, timeout=15, what="/solve")
    assert live_backend(fleet) == "solverfleet_agents"
    blue_release = {h.name: link(fleet, h.name, "current") for h in fleet.solvers}

    # Switch: green gets the new release beside blue, then takes the traffic.
    switch_under_load(fleet, tmp_path, "blue_green.yml", AGENT_PORT)
    assert live_backend(fleet) == "solverfleet_agents_green"
    for host in fleet.solvers:
        assert link(fleet, host.name, "green").endswith("/" + RELEASE)
        assert link(fleet, host.name, "current") == blue_release[host.name]  # blue untouched
        # The old colour keeps running for rollback.
        ready = fleet.get(f"{fleet.agent_url(host.address, AGENT_PORT)}/readyz")
        assert ready.status == 200, (host.name, ready)
    for name in [lb] + [h.name for h in fleet.solvers]:
        state = colour_state(fleet, name)
        assert state["active"] == "green", (name, state)
        last = state["history"][-1]
        assert (last["colour"], last["previous"], last["action"]) == ("green", "blue", "switch")
        assert last["release"] == RELEASE, (name, state)
    assert {a.endswith("-green") for a in serving_agents(fleet)} == {True}
    # The map file holds the switch too, so an HAProxy reload keeps it.
    assert (
        "solverfleet_agents_green"
        in lab.ssh(lb, ["cat", "/etc/haproxy/solverfleet-colour.map"], check=True).stdout
    )

    # A rolling update would update the idle blue agents: refused, nothing changed.
    refused = run_playbook(lab, "rolling_update.yml", extra_vars={**fleet.extra})
    assert refused.returncode != 0
    assert "Ship releases with playbooks/blue_green.yml" in refused.output, refused.tail()
    assert live_backend(fleet) == "solverfleet_agents_green"

    # Rollback: blue (previous release, still running) takes the traffic again, no install.
    run = switch_under_load(fleet, tmp_path, "rollback.yml", GREEN_PORT)
    assert "Install" not in " ".join(run.changed_tasks()), run.changed_tasks()
    assert live_backend(fleet) == "solverfleet_agents"
    for host in fleet.solvers:
        assert link(fleet, host.name, "current") == blue_release[host.name]
    for name in [lb] + [h.name for h in fleet.solvers]:
        last = colour_state(fleet, name)["history"][-1]
        assert (last["colour"], last["previous"], last["action"]) == ("blue", "green", "rollback")
        assert last["release"] == Path(blue_release[fleet.solvers[0].name]).name
    assert {a.endswith("-green") for a in serving_agents(fleet)} == {False}
