"""`solverfleet apply` against a fake admin API: validation first, one POST, clear output."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from solverfleet.cli import main

pytest_plugins = ["tests.support.fakeadmin"]

TOKEN = "admin-token-for-tests"
SECRET = "sk_generated-secret-0123456789abcdef"

TEAM = """\
account: acme
prices: {turnstile: "0.002"}
users:
  - id: alice
    role: admin
    keys:
      - id: alice-web
        balance: "25"
        allowed_types: [turnstile]
"""

CREATED = {
    "created": [{"kind": "user", "id": "alice"}, {"kind": "key", "id": "alice-web"}],
    "changed": [{"kind": "price", "id": "turnstile", "fields": ["price"]}],
    "unchanged": [{"kind": "account", "id": "acme"}],
    "secrets": {"alice-web": SECRET},
}
UNCHANGED = {
    "created": [],
    "changed": [],
    "unchanged": [{"kind": "user", "id": "alice"}, {"kind": "key", "id": "alice-web"}],
    "secrets": {},
}


@pytest.fixture
def team(tmp_path):
    path = tmp_path / "team.yaml"
    path.write_text(TEAM)
    return path


def run(fake, *args, env=None):
    env = {"SOLVERFLEET_COLLECTOR": fake.url, "SOLVERFLEET_TOKEN": TOKEN, **(env or {})}
    return CliRunner().invoke(main, list(args), env=env)


def test_apply_posts_the_normalized_config_and_prints_secrets_once(fake_admin, team):
    fake_admin.answer("POST", "/admin/v1/apply", CREATED)
    result = run(fake_admin, "apply", str(team))
    assert result.exit_code == 0, result.output
    [req] = fake_admin.requests
    assert req.headers["Authorization"] == f"Bearer {TOKEN}"
    assert req.query == {}
    key = req.body["users"][0]["keys"][0]
    assert key["balance"] == "25.00" and key["secret"] is None and key["cpm"] is None
    assert req.body["account"] == "acme" and req.body["low_balance_alert"] is None
    out = result.stdout
    assert "created" in out and "changed" in out and "left alone" in out
    assert out.count(SECRET) == 1
    assert "Shown once" in out
    assert SECRET not in result.stderr


def test_second_apply_says_nothing_changed(fake_admin, team):
    fake_admin.answer("POST", "/admin/v1/apply", UNCHANGED)
    result = run(fake_admin, "apply", str(team))
    assert result.exit_code == 0
    assert "Nothing changed: all 2 objects already match" in result.stdout
    assert "Generated" not in result.stdout


def test_dry_run_asks_for_a_dry_run_and_prints_no_secret(fake_admin, team):
    fake_admin.answer("POST", "/admin/v1/apply", CREATED)
    result = run(fake_admin, "apply", str(team), "--dry-run")
    assert result.exit_code == 0
    assert fake_admin.requests[0].query == {"dry_run": ["1"]}
    assert SECRET not in result.output
    assert "Dry run: nothing was changed." in result.stdout
    assert "1 secret(s) will be generated" in result.stdout


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("users: [{id: alice, role: boss}]", "users[0].role: unknown role 'boss'"),
        ('{"users": [}', "invalid JSON at line 1"),
        ("users:\n  - id: a\n    keys: [{id: k, balance: 2.5}]", "not a float"),
        ("users: [{id: a, api_key: 'ENV:SF_TEST_UNSET_VAR'}]", "SF_TEST_UNSET_VAR is not set"),
        ("usrs: []", "usrs: unknown field (did you mean 'users'?)"),
    ],
)
def test_invalid_config_exits_2_and_sends_nothing(fake_admin, tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    result = run(fake_admin, "apply", str(path))
    assert result.exit_code == 2
    assert result.stderr.startswith("error: ")
    assert message in result.stderr
    assert str(path) in result.stderr
    assert fake_admin.requests == []


def test_missing_file_exits_2(fake_admin, tmp_path):
    result = run(fake_admin, "apply", str(tmp_path / "nope.yaml"))
    assert result.exit_code == 2
    assert "cannot read" in result.stderr
    assert fake_admin.requests == []


def test_env_references_resolve_from_the_environment(fake_admin, tmp_path):
    path = tmp_path / "seed.json"
    path.write_text(json.dumps({"users": [{"id": "alice", "api_key": "ENV:SF_TEST_KEY"}]}))
    fake_admin.answer("POST", "/admin/v1/apply", UNCHANGED)
    result = run(fake_admin, "apply", str(path), env={"SF_TEST_KEY": "sk_from-the-environment"})
    assert result.exit_code == 0, result.output
    key = fake_admin.requests[0].body["users"][0]["keys"][0]
    assert key == {**key, "id": "alice", "secret": "sk_from-the-environment", "balance": "0"}
    assert "sk_from-the-environment" not in result.output  # given secrets are never echoed


def test_collector_refusal_is_shown_as_error(fake_admin, team):
    body = {"error": "config_invalid", "message": "users[0].keys[0].id: already used"}
    fake_admin.answer("POST", "/admin/v1/apply", body, status=400)
    result = run(fake_admin, "apply", str(team))
    assert result.exit_code == 1
    assert result.stderr == "error: users[0].keys[0].id: already used\n"


def test_wrong_token(fake_admin, team):
    fake_admin.answer("POST", "/admin/v1/apply", b"<html>no</html>", status=401)
    result = run(fake_admin, "apply", str(team))
    assert result.exit_code == 1
    assert "refused the admin token" in result.stderr


def test_unreachable_collector(team):
    from solverfleet.process import free_port

    url = f"http://127.0.0.1:{free_port()}"
    result = CliRunner().invoke(main, ["apply", str(team), "--collector", url, "--token", "t"])
    assert result.exit_code == 3  # cannot reach it
    assert result.stderr.startswith(f"error: cannot reach the collector at {url}")


def test_no_token_is_a_usage_error(fake_admin, team):
    result = CliRunner().invoke(
        main, ["apply", str(team), "--collector", fake_admin.url], env={"SOLVERFLEET_TOKEN": None}
    )
    assert result.exit_code == 2
    assert "no admin token" in result.stderr
    assert fake_admin.requests == []


def test_stack_file_supplies_url_and_token(fake_admin, team, tmp_path):
    (tmp_path / "stack.json").write_text(
        json.dumps({"collector": fake_admin.url, "admin_token": "from-stack", "agents": []})
    )
    fake_admin.answer("POST", "/admin/v1/apply", UNCHANGED)
    result = CliRunner().invoke(
        main,
        ["apply", str(team), "--stack", str(tmp_path)],
        env={"SOLVERFLEET_TOKEN": None, "SOLVERFLEET_COLLECTOR": None},
    )
    assert result.exit_code == 0, result.output
    assert fake_admin.requests[0].headers["Authorization"] == "Bearer from-stack"
