"""`solverfleet log` and `solverfleet report` as a user runs them: a subprocess against a real
collector under gunicorn, fed usage over the fleet protocol (exact, chosen costs and times)."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import time
import uuid

import pytest
import requests

from solverfleet_dev.localstack import LocalStack
from tests.support.collector import event, key_config, team_config, user_config

CLI = [sys.executable, "-c", "from solverfleet.cli import main; main()"]
NOW = time.time()


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    with LocalStack(tmp_path_factory.mktemp("stack"), agents=0, worker_latency_ms="0") as running:
        config = team_config(
            [
                user_config(
                    "alice",
                    [key_config("alice-web", "5.00", project="web", environment="prod")],
                    daily_limit=100,
                ),
                user_config("bob", [key_config("bob-ci", "1.00", project="ci")]),
            ]
        )
        with running.admin_client() as admin:
            admin.apply(config)
        calls = [
            _ev("alice-web", "alice", 100_000, 300, duration_ms=120),
            _ev("alice-web", "alice", 200_000, 200, duration_ms=80, url="https://shop.test/a,b"),
            _ev("bob-ci", "bob", 1, 100, duration_ms=40, project="ci", soft_id=4242),
            _ev("bob-ci", "bob", 0, 50, duration_ms=900, project="ci", status="failed"),
            _ev("alice-web", "alice", 7, 40 * 86_400, duration_ms=60),  # 40 days ago
        ]
        response = requests.post(
            f"{running.collector_url}/agent/v1/usage",
            json={"agent_id": "solver1", "events": calls},
            headers={"Authorization": f"Bearer {running.fleet_token}"},
            timeout=30,
        )
        assert response.json() == {"accepted": 5, "duplicates": 0}
        yield running


def _ev(key, user, cost, ago_s, *, project="web", status="success", **extra):
    environment = "prod" if key == "alice-web" else None
    return event(
        key, user_id=user, cost=cost, ts=NOW - ago_s, status=status, agent_id="solver1",
        project=project, environment=environment, **extra,
    )  # fmt: skip


def cli(stack, *args, check=True):
    env = {k: v for k, v in os.environ.items() if not k.startswith("SOLVERFLEET_")}
    env.update(
        {
            "SOLVERFLEET_COLLECTOR": stack.collector_url,
            "SOLVERFLEET_TOKEN": stack.admin_token,
            "COLUMNS": "220",
        }
    )
    result = subprocess.run([*CLI, *args], env=env, capture_output=True, text=True, timeout=60)
    if check:
        assert result.returncode == 0, result.stdout + result.stderr
    return result


def rows(text: str) -> list[dict]:
    return list(csv.DictReader(io.StringIO(text)))


def test_log_pages_filters_and_formats(stack):
    everything = json.loads(cli(stack, "log", "--format", "json").stdout)
    assert everything["count"] == 5 and everything["next_cursor"] is None

    first = cli(stack, "log", "--limit", "2")
    assert "2 call(s), newest first" in first.stdout
    cursor = first.stdout.split("more: --cursor ")[1].split()[0]
    rest = json.loads(cli(stack, "log", "--cursor", cursor, "--format", "json").stdout)
    firsts = json.loads(cli(stack, "log", "--limit", "2", "--format", "json").stdout)["events"]
    assert [e["id"] for e in firsts + rest["events"]] == [e["id"] for e in everything["events"]]

    paged = json.loads(cli(stack, "log", "--all", "--limit", "2", "--format", "json").stdout)
    assert paged["events"] == everything["events"] and paged["next_cursor"] is None

    table = cli(stack, "log", "--user", "bob").stdout
    assert "bob-ci" in table and "alice-web" not in table and "worker_error" in table
    assert "soft id" in table and "4242" in table

    args = ("--status", "success", "--since", "1d", "--format", "csv")
    listed = rows(cli(stack, "log", *args).stdout)
    assert sorted(r["cost"] for r in listed) == ["0.000001", "0.10", "0.20"]
    assert {r["url"] for r in listed} >= {"https://shop.test/a,b"}  # quoted, not split
    assert listed[0]["agent_id"] == "solver1" and listed[0]["source_ip"] == "203.0.113.9"
    assert {r["cost"]: r["soft_id"] for r in listed}["0.000001"] == "4242"


def test_log_bad_input_is_the_collectors_clear_message(stack):
    for args, message in (
        (("--status", "done"), "unknown status 'done'"),
        (("--since", "last tuesday"), "since: not a time"),
        (("--cursor", "not-a-cursor"), "not a cursor"),
        (("--since", "2025-12-02", "--until", "2025-12-01"), "since must be before until"),
    ):
        result = cli(stack, "log", *args, check=False)
        assert result.returncode == 1, result.stdout
        assert result.stderr.startswith("error: ") and message in result.stderr
    assert cli(stack, "log", "--limit", "0", check=False).returncode == 2  # click's own check


def cells(line: str) -> list[str]:
    """The cells of one rich table row."""
    return [c.strip() for c in line.strip().strip("│").split("│")]


def test_team_report_table_csv_json(stack):
    as_json = json.loads(cli(stack, "report", "team", "--since", "all", "--format", "json").stdout)
    # "today" is the collector's UTC day: count what falls in it rather than assume.
    today = sum(
        e["status"] == "success" and e["ts"].startswith(as_json["today"])
        for e in json.loads(cli(stack, "log", "--format", "json").stdout)["events"]
    )
    assert today >= 2  # only the call of 40 days ago is surely not today

    table = cli(stack, "report", "team", "--since", "all").stdout
    assert "Team report, all time" in table
    total = cells(next(line for line in table.splitlines() if "TOTAL" in line))
    assert total == ["TOTAL", "", "4", "1", "0.300008", str(today), ""]

    report = rows(cli(stack, "report", "team", "--since", "all", "--format", "csv").stdout)
    assert [(r["user"], r["solves"], r["failed"], r["cost"], r["daily_limit"]) for r in report] == [
        ("alice", "3", "0", "0.300007", "100"),
        ("bob", "1", "1", "0.000001", ""),
        ("TOTAL", "4", "1", "0.300008", ""),
    ]
    assert report[-1]["today"] == str(today)

    recent = json.loads(cli(stack, "report", "team", "--since", "7d", "--format", "json").stdout)
    assert recent["total"] == {"solves": 3, "failed": 1, "cost": "0.300001", "today": today}

    default = json.loads(cli(stack, "report", "team", "--format", "json").stdout)
    assert default["since"] == as_json["today"] + "T00:00:00.000Z"  # today, unless told
    assert default["total"]["solves"] == today


def test_projects_keys_and_stats_reports(stack):
    projects = rows(cli(stack, "report", "projects", "--since", "all", "--format", "csv").stdout)
    assert [(r["dimension"], r["name"], r["cost"]) for r in projects] == [
        ("project", "ci", "0.000001"),
        ("project", "web", "0.300007"),
        ("environment", "prod", "0.300007"),
        ("environment", "", "0.000001"),
        ("total", "", "0.300008"),
    ]
    assert "Cost by environment" in cli(stack, "report", "projects").stdout

    keys = cli(stack, "report", "keys", "--since", "all").stdout
    web = next(line for line in keys.splitlines() if "alice-web" in line)
    assert "0.300007" in web and "4.699993" in web  # cost, balance now (5.00 - 0.300007)

    stats = json.loads(cli(stack, "report", "stats", "--since", "1d", "--format", "json").stdout)
    assert stats["total"]["success_rate"] == "75.00"
    assert (stats["total"]["p50_ms"], stats["total"]["p95_ms"]) == (80, 900)
    table = cli(stack, "report", "stats", "--since", "all").stdout
    assert "Solve stats by type" in table and "Solves per UTC hour" in table
    hourly = rows(cli(stack, "report", "stats", "--since=all", "--format=csv", "--hourly").stdout)
    assert sum(int(h["solves"]) for h in hourly) == 4


def test_report_without_a_collector_is_a_clear_error(stack):
    env = {k: v for k, v in os.environ.items() if not k.startswith("SOLVERFLEET_")}
    result = subprocess.run(
        [*CLI, "report", "team", "--collector", "http://127.0.0.1:9", "--token", uuid.uuid4().hex],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 3 and "cannot reach the collector" in result.stderr
