"""``solverfleet agents list|forget`` against the admin API (a recording stand-in)."""

from __future__ import annotations

import json
import time

from click.testing import CliRunner

from solverfleet.cli import main

pytest_plugins = ["tests.support.fakeadmin"]

AGENT = {
    "agent_id": "solver/3",
    "instance": "i-1",
    "release": "1.2.3",
    "last_seen": None,  # set per test: 400 s before it runs
    "in_flight": 0,
    "spool_backlog": 12,
    "leases": "quarantined",
}


def run(fake, *args):
    env = {"SOLVERFLEET_COLLECTOR": fake.url, "SOLVERFLEET_TOKEN": "tok", "COLUMNS": "200"}
    return CliRunner().invoke(main, list(args), env=env)


def test_agents_list_shows_a_quarantined_agent(fake_admin):
    # Seen 400 s before the call, not before collection (which may take a while).
    seen = {**AGENT, "last_seen": time.time() - 400}
    fake_admin.answer("GET", "/admin/v1/agents", {"agents": [seen]})
    result = run(fake_admin, "agents", "list")
    assert result.exit_code == 0, result.output
    line = next(x for x in result.stdout.splitlines() if "solver/3" in x)
    for text in ("1.2.3", "400 s ago", "12", "quarantined"):
        assert text in line
    as_json = run(fake_admin, "agents", "list", "--format", "json")
    listed = json.loads(as_json.stdout)["agents"]
    assert [(a["agent_id"], a["leases"], a["spool_backlog"]) for a in listed] == [
        ("solver/3", "quarantined", 12)
    ]


def test_agents_forget_names_what_returned_and_encodes_the_id(fake_admin):
    path = "/admin/v1/agents/solver%2F3"
    fake_admin.answer("DELETE", path, {"agent_id": "solver/3", "returned_micros": 7000, "keys": 2})
    result = run(fake_admin, "agents", "forget", "solver/3")
    assert result.exit_code == 0, result.output
    assert (fake_admin.requests[0].method, fake_admin.requests[0].path) == ("DELETE", path)
    assert "0.007 of 2 key(s) back in the pool" in result.stdout.replace("\n", " ")


def test_agents_forget_a_live_agent_shows_the_collectors_reason(fake_admin):
    reason = {"error": "agent_alive", "message": "agent a1 synced within lease_ttl (300 s)"}
    fake_admin.answer("DELETE", "/admin/v1/agents/a1", reason, status=409)
    result = run(fake_admin, "agents", "forget", "a1")
    assert result.exit_code == 1
    assert "synced within lease_ttl" in result.output
