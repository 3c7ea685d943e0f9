"""`solverfleet keys ...` / `users ...` and the admin client against a fake admin API."""

from __future__ import annotations

from decimal import Decimal

import pytest
from click.testing import CliRunner

from solverfleet.adminclient import AdminClient, AdminError
from solverfleet.cli import main

pytest_plugins = ["tests.support.fakeadmin"]

KEY = {
    "id": "alice-web",
    "user_id": "alice",
    "account": "acme",
    "project": "web",
    "environment": "prod",
    "balance": "25.5",
    "allowed_types": ["turnstile"],
    "cpm": 120,
    "ip_allowlist": ["127.0.0.0/8"],
    "active": True,
}


def run(fake, *args):
    env = {"SOLVERFLEET_COLLECTOR": fake.url, "SOLVERFLEET_TOKEN": "tok", "COLUMNS": "200"}
    return CliRunner().invoke(main, list(args), env=env)


def test_topup_sends_a_canonical_decimal_string(fake_admin):
    answer = {"key": "alice-web", "balance": "35.5", "transaction_id": 7}
    fake_admin.answer("POST", "/admin/v1/keys/alice-web/topup", answer)
    result = run(fake_admin, "keys", "topup", "alice-web", "10", "--reason", "invoice 42")
    assert result.exit_code == 0, result.output
    assert fake_admin.requests[0].body == {"amount": "10.00", "reason": "invoice 42"}
    assert result.stdout == "Topped up alice-web by 10.00: balance now 35.50 (transaction 7).\n"


@pytest.mark.parametrize("amount", ["0", "-5", "1.0000001", "ten", "1e3", "nan"])
def test_topup_refuses_bad_amounts_before_sending(fake_admin, amount):
    result = run(fake_admin, "keys", "topup", "alice-web", "--", amount)
    assert result.exit_code == 2
    assert "AMOUNT" in result.stderr
    assert fake_admin.requests == []


def test_unknown_key_is_an_error_message(fake_admin):
    body = {"error": "not_found", "message": "key 'nope' does not exist"}
    fake_admin.answer("POST", "/admin/v1/keys/nope/topup", body, status=404)
    result = run(fake_admin, "keys", "topup", "nope", "1.00")
    assert result.exit_code == 1
    assert result.stderr == "error: key 'nope' does not exist\n"


def test_non_json_error_names_the_status(fake_admin):
    fake_admin.answer("POST", "/admin/v1/keys/k/deactivate", b"<h1>Bad Gateway</h1>", status=502)
    result = run(fake_admin, "keys", "deactivate", "k")
    assert result.exit_code == 1
    assert result.stderr == "error: the collector answered HTTP 502\n"


@pytest.mark.parametrize(
    ("kind", "ident", "action", "active", "printed"),
    [
        ("keys", "k1", "deactivate", False, "key k1: deactivated"),
        ("keys", "k1", "activate", True, "key k1: active"),
        ("users", "bob", "deactivate", False, "user bob: deactivated"),
        ("users", "bob", "activate", True, "user bob: active"),
    ],
)
def test_activate_and_deactivate(fake_admin, kind, ident, action, active, printed):
    path = f"/admin/v1/{kind}/{ident}/{action}"
    fake_admin.answer("POST", path, {kind[:-1]: ident, "active": active})
    result = run(fake_admin, kind, action, ident)
    assert result.exit_code == 0, result.output
    assert [(r.method, r.path) for r in fake_admin.requests] == [("POST", path)]
    assert result.stdout.strip() == printed


def test_ids_are_quoted_in_paths(fake_admin):
    fake_admin.answer("POST", "/admin/v1/keys/a%2Fb%20c/activate", {"key": "a/b c", "active": True})
    result = run(fake_admin, "keys", "activate", "a/b c")
    assert result.exit_code == 0, result.output
    assert fake_admin.requests[0].path == "/admin/v1/keys/a%2Fb%20c/activate"


def test_keys_list_table_shows_money_from_strings(fake_admin):
    other = {**KEY, "id": "bob-1", "balance": "-0.003", "allowed_types": None, "active": False}
    fake_admin.answer("GET", "/admin/v1/keys", {"keys": [KEY, other]})
    result = run(fake_admin, "keys", "list")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    alice = next(line for line in lines if "alice-web" in line)
    bob = next(line for line in lines if "bob-1" in line)
    assert "25.50" in alice and "127.0.0.0/8" in alice and "yes" in alice
    assert "-0.003" in bob and "all" in bob and "no" in bob


def test_keys_list_json_keeps_decimals_exact(fake_admin):
    # Even a float-looking number from the server stays exact (parsed as Decimal).
    body = '{"keys": [{"id": "k", "balance": 0.1000000000000000055511151231257827}]}'
    fake_admin.answer("GET", "/admin/v1/keys", body.encode())
    result = run(fake_admin, "keys", "list", "--format", "json")
    assert result.exit_code == 0, result.output
    assert '"balance": 0.1000000000000000055511151231257827' in result.stdout  # as sent


def test_users_list(fake_admin):
    users = [
        {"id": "alice", "email": "a@example.com", "account": "acme", "role": "admin",
         "daily_limit": 1000, "active": True},
        {"id": "bot", "email": None, "account": "acme", "role": "service",
         "daily_limit": None, "active": False},
    ]  # fmt: skip
    fake_admin.answer("GET", "/admin/v1/users", {"users": users})
    result = run(fake_admin, "users", "list")
    assert result.exit_code == 0, result.output
    bot = next(line for line in result.stdout.splitlines() if "bot" in line)
    assert "service" in bot and "none" in bot and "no" in bot


def test_client_parses_decimals_and_raises_clear_errors(fake_admin):
    fake_admin.answer("GET", "/admin/v1/summary", b'{"usage_micros": 5, "x": 1.5}')
    fake_admin.answer("GET", "/admin/v1/agents", b"not json")
    with AdminClient(fake_admin.url, "tok", timeout=5) as client:
        assert client.summary() == {"usage_micros": 5, "x": Decimal("1.5")}
        with pytest.raises(AdminError, match="not JSON"):
            client.agents()
        with pytest.raises(AdminError) as info:
            client.get_key("missing")
        assert info.value.status == 404 and info.value.code == "not_found"


def test_client_needs_url_and_token():
    with pytest.raises(AdminError, match="collector URL"):
        AdminClient("", "tok")
    with pytest.raises(AdminError, match="admin token"):
        AdminClient("http://127.0.0.1:1", "")
