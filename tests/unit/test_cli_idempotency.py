"""The CLI's Idempotency-Key: sent on every POST that moves money or creates something (a fresh
uuid4, or --idempotency-key), reused on the client's own retries, never on other calls; a
replayed answer without its secret is explained, not printed as "None"."""

from __future__ import annotations

import uuid

import pytest
from click.testing import CliRunner

from solverfleet import adminclient
from solverfleet.cli import main

pytest_plugins = ["tests.support.fakeadmin"]

HEADER = "Idempotency-Key"
TOPUP = "/admin/v1/keys/alice-web/topup"
KEY = {"id": "alice-ci", "user_id": "alice", "balance": "0.00"}
TOKEN = {"id": 4, "role": "admin", "user_id": "root", "agent_id": None}
CALLS = [
    (
        ["keys", "topup", "alice-web", "1.00"],
        "POST",
        TOPUP,
        {"key": "alice-web", "balance": "2.00"},
    ),
    (["keys", "create", "alice"], "POST", "/admin/v1/keys", {"key": KEY, "secret": "sk_x"}),
    (
        ["keys", "rotate", "alice-web"],
        "POST",
        "/admin/v1/keys/alice-web/rotate",
        {"key": "alice-web", "secret": "sk_y", "grace_seconds": 0, "previous_valid_until": None},
    ),
    (
        ["tokens", "create", "--role", "admin", "--user", "root"],
        "POST",
        "/admin/v1/tokens",
        {"token": TOKEN, "secret": "sft_z"},
    ),
]


def run(fake, *args):
    env = {"SOLVERFLEET_COLLECTOR": fake.url, "SOLVERFLEET_TOKEN": "tok", "COLUMNS": "200"}
    return CliRunner().invoke(main, list(args), env=env)


@pytest.fixture(autouse=True)
def no_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(adminclient.time, "sleep", lambda seconds: None)


@pytest.mark.parametrize(("args", "method", "path", "answer"), CALLS)
def test_each_command_sends_a_fresh_uuid4_key(fake_admin, args, method, path, answer) -> None:
    fake_admin.answer(method, path, answer)
    for _ in range(2):
        result = run(fake_admin, *args)
        assert result.exit_code == 0, result.output
    sent = [r.headers.get(HEADER) for r in fake_admin.requests]
    assert len(sent) == 2 and sent[0] != sent[1]
    assert all(uuid.UUID(key).version == 4 for key in sent)


@pytest.mark.parametrize(("args", "method", "path", "answer"), CALLS)
def test_idempotency_key_option_is_sent(fake_admin, args, method, path, answer) -> None:
    fake_admin.answer(method, path, answer)
    result = run(fake_admin, *args, "--idempotency-key", "order-42")
    assert result.exit_code == 0, result.output
    assert fake_admin.requests[0].headers[HEADER] == "order-42"


def test_apply_sends_a_key(fake_admin, tmp_path) -> None:
    file = tmp_path / "team.yaml"
    file.write_text(
        "account: acme\nprices: {turnstile: '0.002'}\nusers:\n"
        "  - {id: alice, email: alice@example.com, role: user, keys: []}\n"
    )
    fake_admin.answer(
        "POST", "/admin/v1/apply", {"created": [], "changed": [], "unchanged": [], "secrets": {}}
    )
    result = run(fake_admin, "apply", str(file), "--idempotency-key", "apply-1")
    assert result.exit_code == 0, result.output
    assert fake_admin.requests[0].headers[HEADER] == "apply-1"


@pytest.mark.parametrize(
    ("status", "answer"),
    [
        (503, {"error": "unavailable", "message": "database unavailable, retry later"}),
        (409, {"error": "idempotency_key_in_progress", "message": "still being processed"}),
    ],
)
def test_retries_reuse_the_same_key(fake_admin, status, answer) -> None:
    fake_admin.answer("POST", TOPUP, answer, status)
    result = run(fake_admin, "keys", "topup", "alice-web", "1.00")
    assert result.exit_code == 1
    keys = {r.headers[HEADER] for r in fake_admin.requests}
    assert len(fake_admin.requests) == 1 + adminclient.DEFAULT_RETRIES and len(keys) == 1


def test_a_reused_key_409_and_reads_are_not_retried(fake_admin) -> None:
    fake_admin.answer(
        "POST", TOPUP, {"error": "idempotency_key_reused", "message": "different request"}, 409
    )
    result = run(fake_admin, "keys", "topup", "alice-web", "1.00", "--idempotency-key", "k")
    assert result.exit_code == 1 and "different request" in result.output
    fake_admin.answer("GET", "/admin/v1/keys", {"error": "unavailable", "message": "x"}, 503)
    assert run(fake_admin, "keys", "list").exit_code == 1
    assert [r.method for r in fake_admin.requests] == ["POST", "GET"]
    assert HEADER not in fake_admin.requests[1].headers


def test_a_replayed_create_explains_the_missing_secret(fake_admin) -> None:
    withheld = "a one-time secret is shown only in the first answer"
    fake_admin.answer(
        "POST", "/admin/v1/keys", {"key": KEY, "secret": None, "secret_withheld": withheld}, 201
    )
    result = run(fake_admin, "keys", "create", "alice", "--idempotency-key", "k")
    assert result.exit_code == 0, result.output
    assert f"Secret: not shown: {withheld}" in result.stdout
    assert "None" not in result.stdout
