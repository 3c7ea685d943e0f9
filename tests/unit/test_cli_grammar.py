"""One CLI grammar: ``--format table|json|csv`` on every listing, secrets on one unbroken line,
the collector URL's scheme hint, and the exit codes (0 ok, 1 the collector said no, 2 usage,
3 the collector cannot be reached)."""

from __future__ import annotations

import csv
import io
import json

import pytest
from click.testing import CliRunner

from solverfleet.cli import common, main
from solverfleet.process import free_port

pytest_plugins = ["tests.support.fakeadmin"]
pytestmark = pytest.mark.unit

KEY = {
    "id": "alice-ci",
    "user_id": "alice",
    "account": "acme",
    "project": "ci",
    "environment": None,
    "balance": "2.5",
    "allowed_types": ["turnstile", "recaptcha-v2"],
    "cpm": 30,
    "ip_allowlist": None,
    "active": True,
    "expires_at": None,
}
TOKEN = {"id": 4, "role": "admin", "user_id": "alice", "agent_id": None, "label": "laptop",
         "created": 1765555555.0, "created_by": "bootstrap", "last_used": None,
         "revoked": None}  # fmt: skip
# Every listing command, the route it reads and an answer holding one item.
LISTINGS = [
    (["keys", "list"], "/admin/v1/keys", {"keys": [KEY]}),
    (["keys", "show", "alice-ci"], "/admin/v1/keys/alice-ci", KEY),
    (["users", "list"], "/admin/v1/users", {"users": [{"id": "alice", "role": "admin"}]}),
    (["tokens", "list"], "/admin/v1/tokens", {"tokens": [TOKEN]}),
    (
        ["keys", "transactions", "alice-ci"],
        "/admin/v1/keys/alice-ci/transactions",
        {"key": "alice-ci", "transactions": [{"id": 1, "created": 1765555555.0, "amount": "2.5"}]},
    ),
    (
        ["agents", "list"],
        "/admin/v1/agents",
        {"agents": [{"agent_id": "a1", "last_seen": 1765555555.0, "leases": "held"}]},
    ),
]


def run(fake, *args, columns="200", **env):
    env = {"SOLVERFLEET_COLLECTOR": fake.url, "SOLVERFLEET_TOKEN": "tok", "COLUMNS": columns, **env}
    return CliRunner().invoke(main, list(args), env=env)


@pytest.mark.parametrize(("args", "path", "answer"), LISTINGS, ids=lambda v: str(v))
def test_every_listing_speaks_table_json_and_csv(fake_admin, args, path, answer):
    fake_admin.answer("GET", path.split("?")[0], answer)
    for fmt in ("table", "json", "csv"):
        result = run(fake_admin, *args, "--format", fmt)
        assert result.exit_code == 0, (fmt, result.output)
        if fmt == "json":
            assert json.loads(result.stdout) == json.loads(json.dumps(answer))
        if fmt == "csv":
            rows = list(csv.reader(io.StringIO(result.stdout)))
            assert len(rows) == 2 and len(rows[0]) == len(rows[1])  # a header, one row per item
    assert run(fake_admin, *args, "--json").exit_code == 2  # no --json variants


def test_csv_values_are_plain_money_decimal_and_times_iso_utc(fake_admin):
    fake_admin.answer("GET", "/admin/v1/keys", {"keys": [KEY]})
    fake_admin.answer("GET", "/admin/v1/tokens", {"tokens": [TOKEN]})
    keys = list(
        csv.DictReader(io.StringIO(run(fake_admin, "keys", "list", "--format", "csv").stdout))
    )
    assert keys[0]["balance"] == "2.50" and keys[0]["allowed_types"] == "turnstile,recaptcha-v2"
    assert keys[0]["ip_allowlist"] == "" and keys[0]["active"] == "yes"
    assert (keys[0]["project"], keys[0]["environment"]) == ("ci", "")
    tokens = list(
        csv.DictReader(io.StringIO(run(fake_admin, "tokens", "list", "--format", "csv").stdout))
    )
    assert tokens[0]["created"] == "2025-12-12T16:05:55Z" and tokens[0]["last_used"] == ""


@pytest.mark.parametrize(
    ("args", "path", "answer"),
    [
        (["keys", "create", "alice"], "/admin/v1/keys", {"key": KEY, "secret": "sk_" + "x" * 60}),
        (
            ["keys", "rotate", "alice-ci"],
            "/admin/v1/keys/alice-ci/rotate",
            {"key": "alice-ci", "secret": "sk_" + "x" * 60, "previous_valid_until": None},
        ),
        (
            ["tokens", "create", "--role", "admin"],
            "/admin/v1/tokens",
            {"token": TOKEN, "secret": "sft_" + "x" * 60},
        ),
    ],
)
def test_a_secret_stays_on_one_unbroken_line_in_a_narrow_terminal(
    fake_admin, monkeypatch, args, path, answer
):
    # The console is made at import; a 40-column terminal is set on it, as COLUMNS=40 would.
    monkeypatch.setattr(common.console, "width", 40)
    fake_admin.answer("POST", path, answer, 201)
    result = run(fake_admin, *args, columns="40")
    assert result.exit_code == 0, result.output
    line = next(x for x in result.stdout.splitlines() if "shown once" in x)
    assert line.endswith(": " + answer["secret"])


def test_collector_without_a_scheme_is_a_usage_error_with_a_hint(fake_admin):
    result = run(fake_admin, "keys", "list", "--collector", "127.0.0.1:8400")
    assert result.exit_code == 2
    assert "did you mean https://127.0.0.1:8400?" in result.stderr
    assert fake_admin.requests == []


def test_exit_codes(fake_admin):
    fake_admin.answer("GET", "/admin/v1/keys", {"keys": []})
    assert run(fake_admin, "keys", "list").exit_code == 0
    fake_admin.answer("GET", "/admin/v1/keys/nope", {"error": "not_found", "message": "no"}, 404)
    assert run(fake_admin, "keys", "show", "nope").exit_code == 1  # the collector said no
    fake_admin.answer("GET", "/admin/v1/users", {"error": "boom"}, 500)
    assert run(fake_admin, "users", "list").exit_code == 1
    assert run(fake_admin, "keys", "list", "--format", "xml").exit_code == 2  # usage
    gone = run(fake_admin, "keys", "list", SOLVERFLEET_COLLECTOR=f"http://127.0.0.1:{free_port()}")
    assert gone.exit_code == 3 and "cannot reach the collector" in gone.stderr


def test_a_tls_failure_is_cannot_reach(fake_admin):
    # The fake speaks plain HTTP: a TLS handshake with it fails before any answer.
    host = fake_admin.url.split("://", 1)[1]
    result = run(fake_admin, "keys", "list", SOLVERFLEET_COLLECTOR=f"https://{host}")
    assert result.exit_code == 3, result.output
    assert fake_admin.requests == []


def test_users_create_sends_the_fields_and_shows_the_user(fake_admin):
    user = {"id": "dave", "account": "acme", "email": None, "role": "service",
            "daily_limit": 50, "active": False}  # fmt: skip
    fake_admin.answer("POST", "/admin/v1/users", {"user": user}, 201)
    result = run(
        fake_admin, "users", "create", "dave", "--account", "acme", "--role", "service",
        "--daily-limit", "50", "--inactive", "--format", "csv",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    sent = fake_admin.requests[0]
    assert sent.body == {"id": "dave", "account": "acme", "role": "service",
                         "daily_limit": 50, "active": False}  # fmt: skip
    assert sent.headers["Idempotency-Key"]
    assert result.stdout.splitlines() == ["id,email,account,role,daily_limit,active",
                                          "dave,,acme,service,50,no"]  # fmt: skip
    assert run(fake_admin, "users", "create", "eve", "--role", "boss").exit_code == 2
