"""`solverfleet apply` and `keys`/`users` as a user runs them: a subprocess against the real
collector under gunicorn (LocalStack with no agents)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from solverfleet_dev.localstack import LocalStack

EXAMPLES = Path(__file__).resolve().parents[2] / "dev" / "src" / "solverfleet_dev" / "examples"
CLI = [sys.executable, "-c", "from solverfleet.cli import main; main()"]


@pytest.fixture
def stack(tmp_path):
    with LocalStack(tmp_path / "stack", agents=0, worker_latency_ms="0") as running:
        yield running


def cli(stack, *args, env=None, check=True):
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("SOLVERFLEET_")}
    full_env.update(
        {
            "SOLVERFLEET_COLLECTOR": stack.collector_url,
            "SOLVERFLEET_TOKEN": stack.admin_token,
            "COLUMNS": "200",
            **(env or {}),
        }
    )
    result = subprocess.run([*CLI, *args], env=full_env, capture_output=True, text=True, timeout=60)
    if check:
        assert result.returncode == 0, result.stdout + result.stderr
    return result


def keys_by_id(stack):
    listed = json.loads(cli(stack, "keys", "list", "--format", "json").stdout)["keys"]
    return {k["id"]: k for k in listed}


def test_apply_is_idempotent_and_shows_secrets_once(stack):
    first = cli(stack, "apply", str(EXAMPLES / "team.yaml"))
    rows = [line.split() for line in first.stdout.splitlines() if line.startswith("  ")]
    secrets = {r[0]: r[1] for r in rows if len(r) == 2 and r[1].startswith("sk_")}
    assert set(secrets) == {
        "alice-web",
        "alice-staging",
        "bob-scraper",
        "ci-bot-main",
        "ci-bot-office",
        "mallory-old",
    }
    assert "14 created" in first.stdout

    second = cli(stack, "apply", str(EXAMPLES / "team.yaml"))
    assert "Nothing changed: all 14 objects already match" in second.stdout
    assert "sk_" not in second.stdout

    keys = keys_by_id(stack)
    assert keys["alice-web"]["balance"] == "25.00"
    assert keys["bob-scraper"]["balance"] == "0.005"
    assert keys["alice-web"]["ip_allowlist"] == ["127.0.0.0/8", "::1/128"]
    assert "sk_" not in json.dumps(keys)  # the API never returns secrets


def test_changes_are_reported_and_dry_run_changes_nothing(stack, tmp_path):
    cli(stack, "apply", str(EXAMPLES / "team.yaml"))
    changed = tmp_path / "team.yaml"
    changed.write_text((EXAMPLES / "team.yaml").read_text().replace("cpm: 6 ", "cpm: 60 "))

    dry = cli(stack, "apply", str(changed), "--dry-run")
    assert "changed" in dry.stdout and "ci-bot-main" in dry.stdout
    assert "Dry run: nothing was changed." in dry.stdout
    assert keys_by_id(stack)["ci-bot-main"]["cpm"] == 6

    real = cli(stack, "apply", str(changed))
    row = next(line for line in real.stdout.splitlines() if "ci-bot-main" in line)
    assert "changed" in row and "cpm" in row
    assert keys_by_id(stack)["ci-bot-main"]["cpm"] == 60


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "users:\n  - id: eve\n    keys: [{id: eve-1, ip_allowlist: [10.0.0.0/33]}]\n",
            "users[0].keys[0].ip_allowlist[0]: not a CIDR: '10.0.0.0/33'",
        ),
        ("users:\n  - id: eve\n    colour: red\n", "users[0].colour: unknown field"),
        (
            "users:\n  - id: eve\n    keys: [{id: eve-1, balance: '-5.00'}]\n",
            "users[0].keys[0].balance: amount must not be negative",
        ),
        (
            "users:\n  - id: eve\n    keys: [{id: eve-1, secret: 'ENV:SF_TEST_UNSET_VAR'}]\n",
            "SF_TEST_UNSET_VAR",
        ),
    ],
    ids=["bad-cidr", "unknown-field", "negative-balance", "unresolved-env"],
)
def test_invalid_config_changes_nothing(stack, tmp_path, text, message):
    bad = tmp_path / "bad.yaml"
    bad.write_text(text)
    result = cli(stack, "apply", str(bad), check=False)
    assert result.returncode == 2
    assert result.stderr.startswith(f"error: {bad}: ")
    assert message in result.stderr
    assert keys_by_id(stack) == {}


def test_seed_format_with_env_secrets(stack):
    env = {
        "CAPTCHAAI_KEY_ALICE": "sk_alice-seed-0123456789",
        "CAPTCHAAI_KEY_BOB": "sk_bob-seed-0123456789",
        "CAPTCHAAI_KEY_CI": "sk_ci-seed-0123456789",
    }
    result = cli(stack, "apply", str(EXAMPLES / "team-seed.json"), env=env)
    assert "sk_" not in result.stdout  # secrets it was given are never printed
    keys = keys_by_id(stack)
    assert sorted(keys) == ["alice", "bob", "ci"]
    assert {k["balance"] for k in keys.values()} == {"0.00"}
    users = json.loads(cli(stack, "users", "list", "--format", "json").stdout)["users"]
    assert {u["id"]: u["daily_limit"] for u in users} == {"alice": 1000, "bob": 200, "ci": 5000}

    missing = cli(stack, "apply", str(EXAMPLES / "team-seed.json"), check=False)
    assert missing.returncode == 2
    assert "CAPTCHAAI_KEY_ALICE is not set" in missing.stderr


def test_topup_activate_deactivate(stack):
    cli(stack, "apply", str(EXAMPLES / "team.yaml"))
    topup = cli(stack, "keys", "topup", "alice-web", "10.005", "--reason", "test")
    assert topup.stdout.startswith("Topped up alice-web by 10.005: balance now 35.005")
    assert keys_by_id(stack)["alice-web"]["balance"] == "35.005"

    deactivated = cli(stack, "keys", "deactivate", "alice-web").stdout.strip()
    assert deactivated == "key alice-web: deactivated"
    assert keys_by_id(stack)["alice-web"]["active"] is False
    assert cli(stack, "keys", "activate", "alice-web").stdout.strip() == "key alice-web: active"
    assert cli(stack, "users", "deactivate", "bob").stdout.strip() == "user bob: deactivated"
    users = json.loads(cli(stack, "users", "list", "--format", "json").stdout)["users"]
    assert {u["id"]: u["active"] for u in users}["bob"] is False

    account = users[0]["account"]
    created = cli(stack, "users", "create", "dave", "--account", account, "--format", "csv")
    assert created.stdout.splitlines()[1] == f"dave,,{account},user,,yes"
    again = cli(stack, "users", "create", "dave", "--account", account, check=False)
    assert again.returncode == 1 and "already exists" in again.stderr

    unknown = cli(stack, "keys", "topup", "nope", "1", check=False)
    assert unknown.returncode == 1 and unknown.stderr.startswith("error: ")
    assert "nope" in unknown.stderr

    wrong_token = cli(stack, "keys", "list", env={"SOLVERFLEET_TOKEN": "wrong"}, check=False)
    assert wrong_token.returncode == 1 and wrong_token.stderr.startswith("error: ")
