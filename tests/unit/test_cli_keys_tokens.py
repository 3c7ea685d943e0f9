"""`solverfleet keys create|set|rotate|transactions` and `solverfleet tokens ...` against a fake
admin API: what each command sends, what it prints, and what it refuses before sending."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from solverfleet.cli import main

pytest_plugins = ["tests.support.fakeadmin"]

KEY = {
    "id": "alice-ci",
    "user_id": "alice",
    "account": "acme",
    "project": "ci",
    "environment": None,
    "balance": "2.5",
    "allowed_types": ["turnstile", "recaptcha-v2"],
    "cpm": 30,
    "ip_allowlist": ["10.0.0.0/8"],
    "active": True,
    "leased": "0.00",
}


def run(fake, *args):
    env = {"SOLVERFLEET_COLLECTOR": fake.url, "SOLVERFLEET_TOKEN": "tok", "COLUMNS": "200"}
    return CliRunner().invoke(main, list(args), env=env)


def test_keys_create_sends_the_limits_and_prints_the_secret_once(fake_admin):
    fake_admin.answer("POST", "/admin/v1/keys", {"key": KEY, "secret": "sk_new_secret"}, 201)
    result = run(
        fake_admin,
        "keys",
        "create",
        "alice",
        "--id",
        "alice-ci",
        "--project",
        "ci",
        "--types",
        "turnstile, recaptcha-v2",
        "--cpm",
        "30",
        "--ips",
        "10.0.0.0/8",
        "--balance",
        "2.5",
    )
    assert result.exit_code == 0, result.output
    assert fake_admin.requests[0].body == {
        "user_id": "alice",
        "id": "alice-ci",
        "project": "ci",
        "balance": "2.50",
        "allowed_types": ["turnstile", "recaptcha-v2"],
        "cpm": 30,
        "ip_allowlist": ["10.0.0.0/8"],
    }
    assert result.stdout == (
        "Created key alice-ci for alice (balance 2.50).\n"
        "Secret (shown once, store it now): sk_new_secret\n"
    )


def test_keys_create_json_and_inactive(fake_admin):
    fake_admin.answer("POST", "/admin/v1/keys", {"key": KEY, "secret": "sk_x"}, 201)
    result = run(fake_admin, "keys", "create", "alice", "--inactive", "--format", "json")
    assert result.exit_code == 0, result.output
    assert fake_admin.requests[0].body == {"user_id": "alice", "active": False}
    assert json.loads(result.stdout)["secret"] == "sk_x"


@pytest.mark.parametrize("balance", ["-1", "1e3", "1.0000001", "ten"])
def test_keys_create_refuses_bad_balances_before_sending(fake_admin, balance):
    result = run(fake_admin, "keys", "create", "alice", "--balance", balance)
    assert result.exit_code == 2
    assert fake_admin.requests == []


def test_keys_create_shows_the_servers_field_errors(fake_admin):
    body = {"error": "invalid", "message": "cpm: must not be negative: -1", "errors": ["x"]}
    fake_admin.answer("POST", "/admin/v1/keys", body, 400)
    result = run(fake_admin, "keys", "create", "alice", "--types", "nope")
    assert result.exit_code == 1
    assert result.stderr == "error: cpm: must not be negative: -1\n"


def test_keys_set_sends_only_what_was_asked(fake_admin):
    answer = {"key": KEY, "changed": ["cpm", "ip_allowlist"]}
    fake_admin.answer("PATCH", "/admin/v1/keys/alice-ci", answer)
    result = run(fake_admin, "keys", "set", "alice-ci", "--cpm", "12", "--any-ip", "--no-project")
    assert result.exit_code == 0, result.output
    assert fake_admin.requests[0].method == "PATCH"
    assert fake_admin.requests[0].body == {"project": None, "cpm": 12, "ip_allowlist": None}
    assert result.stdout == "alice-ci: changed cpm, ip_allowlist.\n"


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["--cpm", "5", "--no-cpm"],
        ["--types", "turnstile", "--all-types"],
        ["--cpm", "-1"],
    ],
)
def test_keys_set_refuses_nothing_or_contradictions(fake_admin, args):
    result = run(fake_admin, "keys", "set", "alice-ci", *args)
    assert result.exit_code == 2, result.output
    assert fake_admin.requests == []


def test_keys_rotate_with_grace(fake_admin):
    answer = {
        "key": "alice-web",
        "secret": "sk_rotated",
        "grace_seconds": 3600,
        "previous_valid_until": 1765559155.0,
    }
    fake_admin.answer("POST", "/admin/v1/keys/alice-web/rotate", answer)
    result = run(fake_admin, "keys", "rotate", "alice-web", "--grace", "3600")
    assert result.exit_code == 0, result.output
    assert fake_admin.requests[0].body == {"grace_seconds": 3600}
    assert result.stdout == (
        "Rotated alice-web.\n"
        "New secret (shown once, store it now): sk_rotated\n"
        "The old secret works until 2025-12-12T17:05:55Z (3600 s).\n"
    )


def test_keys_rotate_without_grace_says_so(fake_admin):
    answer = {"key": "k", "secret": "sk_r", "grace_seconds": 0, "previous_valid_until": None}
    fake_admin.answer("POST", "/admin/v1/keys/k/rotate", answer)
    result = run(fake_admin, "keys", "rotate", "k")
    assert result.exit_code == 0, result.output
    assert fake_admin.requests[0].body == {"grace_seconds": 0}
    assert result.stdout.endswith("The old secret is refused from now on.\n")
    assert run(fake_admin, "keys", "rotate", "k", "--grace", "-5").exit_code == 2
    assert len(fake_admin.requests) == 1


def test_keys_transactions_table(fake_admin):
    rows = [
        {
            "id": 9,
            "amount": "1.5",
            "balance_after": "11.5",
            "reason": "invoice 42",
            "actor": "token:3",
            "created": 1765555555.0,
        }
    ]
    fake_admin.answer(
        "GET", "/admin/v1/keys/alice-web/transactions", {"key": "alice-web", "transactions": rows}
    )
    result = run(fake_admin, "keys", "transactions", "alice-web", "--limit", "5")
    assert result.exit_code == 0, result.output
    assert fake_admin.requests[0].query == {"limit": ["5"]}
    line = next(x for x in result.stdout.splitlines() if "invoice 42" in x)
    for text in ("9", "2025-12-12 16:05:55Z", "1.50", "11.50", "token:3"):
        assert text in line


TOKEN = {
    "id": 4,
    "role": "user",
    "user_id": "alice",
    "label": "alice laptop",
    "created": 1765555555.0,
    "created_by": "bootstrap",
    "last_used": None,
    "revoked": None,
    "active": True,
}


def test_tokens_create_prints_the_token_once(fake_admin):
    fake_admin.answer("POST", "/admin/v1/tokens", {"token": TOKEN, "secret": "sft_abc"}, 201)
    result = run(
        fake_admin, "tokens", "create", "--role", "user", "--user", "alice", "--label", "laptop"
    )
    assert result.exit_code == 0, result.output
    assert fake_admin.requests[0].body == {"role": "user", "user_id": "alice", "label": "laptop"}
    assert result.stdout == (
        "Created user token 4 for user alice.\nToken (shown once, store it now): sft_abc\n"
    )


@pytest.mark.parametrize(
    "args",
    [["--role", "user"], ["--role", "service", "--user", "alice"], ["--role", "root"], []],
)
def test_tokens_create_refuses_bad_combinations_before_sending(fake_admin, args):
    result = run(fake_admin, "tokens", "create", *args)
    assert result.exit_code == 2, result.output
    assert fake_admin.requests == []


def test_tokens_list_and_revoke(fake_admin):
    revoked = {**TOKEN, "id": 5, "role": "service", "user_id": None, "revoked": 1765555600.0}
    fake_admin.answer("GET", "/admin/v1/tokens", {"tokens": [TOKEN, revoked]})
    listed = run(fake_admin, "tokens", "list")
    assert listed.exit_code == 0, listed.output
    lines = listed.stdout.splitlines()
    assert "2 token(s)" in lines[0]
    alice = next(x for x in lines if "alice laptop" in x)
    assert "active" in alice and "2025-12-12 16:05:55Z" in alice
    service = next(x for x in lines if "service" in x)
    assert "active" not in service and "2025-12-12 16:06:40Z" in service

    fake_admin.answer("POST", "/admin/v1/tokens/5/revoke", {"token": revoked})
    result = run(fake_admin, "tokens", "revoke", "5")
    assert result.exit_code == 0, result.output
    assert result.stdout == "token 5: revoked\n"
    assert run(fake_admin, "tokens", "revoke", "zero").exit_code == 2


def test_tokens_create_service_bound_to_an_agent_and_listed(fake_admin):
    bound = {**TOKEN, "id": 6, "role": "service", "user_id": None, "agent_id": "host-1"}
    fake_admin.answer("POST", "/admin/v1/tokens", {"token": bound, "secret": "sft_h1"}, 201)
    result = run(fake_admin, "tokens", "create", "--role", "service", "--agent", "host-1")
    assert result.exit_code == 0, result.output
    assert fake_admin.requests[0].body == {"role": "service", "agent_id": "host-1"}
    assert result.stdout.startswith("Created service token 6 bound to agent host-1.\n")
    refused = run(fake_admin, "tokens", "create", "--role", "admin", "--agent", "host-1")
    assert refused.exit_code == 2 and len(fake_admin.requests) == 1
    fake_admin.answer("GET", "/admin/v1/tokens", {"tokens": [bound]})
    listed = run(fake_admin, "tokens", "list")
    assert listed.exit_code == 0, listed.output
    assert "host-1" in next(x for x in listed.stdout.splitlines() if "service" in x)
