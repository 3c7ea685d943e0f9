"""Solve log and reports end to end: real agents, worker and collector, SQLite and MariaDB.

Calls that reach the worker are in the log whatever their outcome, with the seed's fields, the
agent host and the request id the client saw; calls the pre-check refused are not.
"""

from __future__ import annotations

import datetime as dt

import pytest
import requests

from solverfleet.collector.reporting.reports import nearest_rank
from solverfleet.process import wait_until
from tests.support.fleet import auth, key, new_secret, solve, team, user

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]


def _log(stack, **params) -> dict:
    with stack.admin_client() as admin:
        return admin.solve_log(**params)


def _report(stack, name: str, **params) -> dict:
    with stack.admin_client() as admin:
        return admin.report(name, **params)


def test_log_and_reports_show_every_call_that_reached_the_worker(fleet_factory):
    stack = fleet_factory(agents=2)
    alice, bob = new_secret("alice"), new_secret("bob")
    config = team(
        user(
            "alice",
            key("alice-web", alice, "1.00", project="web", environment="prod"),
            daily_limit=50,
        ),
        user("bob", key("bob-ci", bob, "0.015", project="ci", environment="staging")),
    )
    with stack.admin_client() as admin:
        admin.apply(config)
    stack.wait_for_key(alice)
    stack.wait_for_key(bob)
    first, second = stack.agent_url(0), stack.agent_url(1)

    calls = {}  # request id -> (agent index, response)
    for index, agent, secret, params in (
        (0, first, alice, {}),
        (0, first, alice, {"demo": {"fail": True}}),
        (1, second, alice, {}),
        (1, second, bob, {}),
    ):
        response = solve(agent, secret, url=f"https://shop.test/{len(calls)}", **params)
        calls[response.headers["X-Request-ID"]] = (index, response)
    assert [r.status_code for _, r in calls.values()] == [200, 502, 200, 200]
    # Refused by the pre-check: no worker call, nothing owed, not in the log.
    assert solve(second, bob).status_code == 402
    refused = requests.post(
        f"{second}/solve", json={"type": "turnstile", "url": "https://x.test/"},
        headers=auth("sk_test-never-issued-0000"), timeout=10,
    )  # fmt: skip
    assert refused.status_code == 401

    wait_until(lambda: _log(stack)["count"] >= 4, timeout=15, what="the calls in the log")
    log = _log(stack)
    assert log["count"] == 4 and log["next_cursor"] is None
    by_request = {e["request_id"]: e for e in log["events"]}
    assert set(by_request) == set(calls)
    for request_id, (index, response) in calls.items():
        entry = by_request[request_id]
        owner = "alice" if entry["key_id"] == "alice-web" else "bob"
        assert entry["agent_id"] == stack.agent_id(index)
        assert (entry["user_id"], entry["user_email"]) == (owner, f"{owner}@example.test")
        assert (entry["type"], entry["source_ip"]) == ("turnstile", "127.0.0.1")
        assert entry["url"].startswith("https://shop.test/")
        assert isinstance(entry["duration_ms"], int) and entry["duration_ms"] >= 0
        assert entry["account"] == "acme"
        if response.status_code == 200:
            assert (entry["status"], entry["cost"], entry["error"]) == ("success", "0.01", None)
            assert response.json()["cost"] == "0.01"
        else:
            assert (entry["status"], entry["cost"], entry["error"]) == (
                "failed",
                "0.00",
                "worker_failed",
            )
            assert entry["message"]
    assert [e["key_id"] for e in _log(stack, user="bob")["events"]] == ["bob-ci"]
    failed = _log(stack, status="failed", project="web", since="1h")["events"]
    assert [(e["key_id"], e["agent_id"]) for e in failed] == [("alice-web", stack.agent_id(0))]

    today = dt.datetime.now(dt.UTC).date().isoformat()
    solved = [e for e in log["events"] if e["status"] == "success"]
    solved_today = sum(e["ts"].startswith(today) for e in solved)
    team_report = _report(stack, "team", since="all")
    assert [(u["user_id"], u["solves"], u["failed"], u["cost"]) for u in team_report["users"]] == [
        ("alice", 2, 1, "0.02"),
        ("bob", 1, 0, "0.01"),
    ]
    assert team_report["users"][0]["daily_limit"] == 50
    assert team_report["total"] == {"solves": 3, "failed": 1, "cost": "0.03", "today": solved_today}

    keys = {k["key_id"]: k for k in _report(stack, "keys", since="1h")["keys"]}
    assert (keys["alice-web"]["cost"], keys["alice-web"]["balance"]) == ("0.02", "0.98")
    assert (keys["bob-ci"]["cost"], keys["bob-ci"]["balance"]) == ("0.01", "0.005")

    projects = _report(stack, "projects", since="1h")
    assert [(p["project"], p["solves"], p["cost"]) for p in projects["projects"]] == [
        ("ci", 1, "0.01"),
        ("web", 2, "0.02"),
    ]
    assert [e["environment"] for e in projects["environments"]] == ["prod", "staging"]

    stats = _report(stack, "stats", since="all")
    durations: dict[int, int] = {}
    for e in log["events"]:
        durations[e["duration_ms"]] = durations.get(e["duration_ms"], 0) + 1
    [turnstile] = stats["types"]
    assert turnstile == {
        "type": "turnstile", "calls": 4, "solves": 3, "failed": 1, "success_rate": "75.00",
        "p50_ms": nearest_rank(durations, 50), "p95_ms": nearest_rank(durations, 95),
    }  # fmt: skip
    assert sum(h["solves"] for h in stats["hourly"]) == 3
