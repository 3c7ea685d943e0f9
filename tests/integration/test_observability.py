"""Real agent + collector processes: JSON log lines with request ids, /metrics, and no secret
in any log line or metrics output, through successes, refusals and protocol errors."""

from __future__ import annotations

import json

import pytest
import requests

from solverfleet.process import wait_until
from tests.support.fleet import auth, key, new_secret, solve, team, user

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]
# Access lines on too: they are where a query-string API key (in.php) would leak.
ACCESS_LOG = {"GUNICORN_CMD_ARGS": "--access-logfile -"}
FIELDS = {"ts", "level", "logger", "msg", "pid"}


def _compat(agent: str, page: str, **params) -> str:
    resp = requests.get(f"{agent}/{page}", params=params, timeout=10)
    assert resp.status_code == 200
    return resp.text


def _json_lines(path) -> list[dict]:
    lines = []
    for raw in path.read_text().splitlines():
        if not raw.strip() or raw.startswith("=== solverfleet local:"):
            continue  # blank, or the launcher's own restart marker
        try:
            lines.append(json.loads(raw))
        except ValueError:
            pytest.fail(f"{path.name}: not a JSON line: {raw!r}")
    return lines


def test_json_logs_and_metrics_never_show_a_secret(fleet_factory):
    stack = fleet_factory(agents=1, extra_agent_env=ACCESS_LOG, extra_collector_env=ACCESS_LOG)
    rich, poor, unknown = new_secret("rich"), new_secret("poor"), new_secret("unknown")
    config = team(
        user("alice", key("alice-web", rich, "1.00")),
        user("bob", key("bob-web", poor, "0.005")),
    )
    with stack.admin_client() as admin:
        admin.apply(config)
    stack.wait_for_key(rich)
    stack.wait_for_key(poor)
    agent, collector = stack.agent_url(0), stack.collector_url

    # Native API: a success with the caller's request id, then refusals.
    body = {"type": "turnstile", "url": "https://shop.example/", "params": {}}
    ok = requests.post(
        f"{agent}/solve",
        json=body,
        headers={**auth(rich), "X-Request-Id": "obs-solve-1"},
        timeout=30,
    )
    assert ok.status_code == 200 and ok.headers["X-Request-Id"] == "obs-solve-1", ok.text
    assert solve(agent, poor).status_code == 402
    assert solve(agent, unknown).status_code == 401
    assert requests.get(f"{agent}/balance", headers=auth(unknown), timeout=5).status_code == 401

    # 2captcha surface: the key travels in the query string.
    task = _compat(
        agent,
        "in.php",
        key=rich,
        method="turnstile",
        sitekey="0x4AAA",
        pageurl="https://shop.example/",
    )
    assert task.startswith("OK|"), task
    answer = wait_until(
        lambda: (
            (t := _compat(agent, "res.php", key=rich, action="get", id=task[3:]))
            != "CAPCHA_NOT_READY"
            and t
        ),
        timeout=15,
        what="in.php answer",
    )
    assert answer.startswith("OK|"), answer
    assert _compat(agent, "res.php", key=unknown, action="getbalance").startswith("ERROR_")
    assert (
        _compat(
            agent,
            "in.php",
            key=poor,
            method="turnstile",
            sitekey="0x4AAA",
            pageurl="https://shop.example/",
        )
        == "ERROR_ZERO_BALANCE"
    )

    # JSON task protocol: the key travels in the body, also in one that is no JSON.
    for body in ({"clientKey": rich}, {"clientKey": unknown, "task": {"type": "x"}}):
        answer = requests.post(f"{agent}/getBalance", json=body, timeout=5).json()
        assert answer["errorId"] == (0 if body["clientKey"] == rich else 1), answer
    broken = requests.post(f"{agent}/createTask", data=f'{{"clientKey": "{rich}"', timeout=5)
    assert broken.json()["errorCode"] == "ERROR_BAD_PARAMETERS"

    # Collector: wrong credentials, then the admin's own view.
    wrong = requests.get(f"{collector}/admin/v1/keys", headers=auth(unknown), timeout=5)
    assert wrong.status_code == 401
    fleet_as_admin = requests.get(
        f"{collector}/admin/v1/keys", headers=auth(stack.fleet_token), timeout=5
    )
    assert fleet_as_admin.status_code in (401, 403)
    with stack.admin_client() as admin:
        wait_until(lambda: admin.summary()["successes"] == 2, timeout=20, what="usage shipped")

    metrics = {
        "agent": requests.get(f"{agent}/metrics", timeout=5),
        "collector": requests.get(f"{collector}/metrics", timeout=5),
    }
    for name, resp in metrics.items():
        assert resp.status_code == 200, (name, resp.text)
    forwarded = {"X-Forwarded-For": "203.0.113.9"}
    assert requests.get(f"{agent}/metrics", headers=forwarded, timeout=5).status_code == 403
    assert 'solverfleet_agent_solves_total{status="success",type="turnstile"} 2.0' in (
        metrics["agent"].text
    )
    assert "solverfleet_collector_usage_events_total" in metrics["collector"].text

    stack.stop()  # shutdown lines too
    logs = {path.name: path for path in stack.log_dir.glob("*.log")}
    assert {"agent-0.log", "collector.log"} <= set(logs)
    for name in ("agent-0.log", "collector.log"):
        lines = _json_lines(logs[name])
        assert lines, name
        for line in lines:
            assert set(line) >= FIELDS, (name, line)
    agent_lines = _json_lines(logs["agent-0.log"])
    [solve_line] = [x for x in agent_lines if x.get("request_id") == "obs-solve-1"]
    assert (solve_line["path"], solve_line["status"]) == ("/solve", 200)
    assert any(x.get("path") == "/in.php" for x in agent_lines)
    collector_lines = _json_lines(logs["collector.log"])
    assert any(x.get("path") == "/agent/v1/usage" and x.get("request_id") for x in collector_lines)

    secrets = {
        "key secret": rich,
        "poor key secret": poor,
        "unknown key secret": unknown,
        "fleet token": stack.fleet_token,
        "admin token": stack.admin_token,
    }
    outputs = {name: path.read_text() for name, path in logs.items()}
    outputs.update({f"{name} /metrics": resp.text for name, resp in metrics.items()})
    for what, secret in secrets.items():
        for where, text in outputs.items():
            assert secret not in text, f"the {what} appears in {where}"
