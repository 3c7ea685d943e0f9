"""`solverfleet keys create|set` with expiry and refill, and `solverfleet keys delete`, against
a fake admin API: what each command sends, prints, and refuses before sending."""

from __future__ import annotations

import pytest

from tests.unit.test_cli_keys_tokens import KEY, run

pytest_plugins = ["tests.support.fakeadmin"]


def test_keys_create_sends_expiry_and_refill(fake_admin):
    fake_admin.answer("POST", "/admin/v1/keys", {"key": KEY, "secret": "sk_new_secret"}, 201)
    result = run(
        fake_admin, "keys", "create", "alice", "--expires-at", "2026-12-31T00:00:00Z",
        "--refill", "5", "--refill-interval", "monthly", "--refill-day", "31",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert fake_admin.requests[0].body == {
        "user_id": "alice",
        "expires_at": "2026-12-31T00:00:00Z",
        "refill": {"amount": "5.00", "interval": "monthly", "day": 31},
    }


def test_keys_set_refill_defaults_to_daily_and_clears(fake_admin):
    fake_admin.answer("PATCH", "/admin/v1/keys/alice-ci", {"key": KEY, "changed": ["refill"]})
    assert run(fake_admin, "keys", "set", "alice-ci", "--refill", "2.5").exit_code == 0
    assert fake_admin.requests[0].body == {
        "refill": {"amount": "2.50", "interval": "daily", "day": None}
    }
    result = run(fake_admin, "keys", "set", "alice-ci", "--no-refill", "--no-expiry")
    assert result.exit_code == 0, result.output
    assert fake_admin.requests[1].body == {"expires_at": None, "refill": None}


@pytest.mark.parametrize(
    "args",
    [
        ["--refill", "0"],
        ["--refill", "1e3"],
        ["--refill-day", "3"],  # without --refill
        ["--refill", "1", "--refill-day", "3"],  # daily
        ["--refill", "1", "--refill-interval", "monthly", "--refill-day", "32"],
        ["--refill", "1", "--no-refill"],
        ["--expires-at", "2026-12-31T00:00:00Z", "--no-expiry"],
    ],
)
def test_keys_set_refuses_bad_refill_or_contradictions(fake_admin, args):
    result = run(fake_admin, "keys", "set", "alice-ci", *args)
    assert result.exit_code == 2, result.output
    assert fake_admin.requests == []


def test_keys_delete_asks_unless_yes(fake_admin):
    answer = {"key": "alice-ci", "deleted": True, "balance": "2.50"}
    fake_admin.answer("DELETE", "/admin/v1/keys/alice-ci", answer)
    declined = run(fake_admin, "keys", "delete", "alice-ci")  # no input: the prompt aborts
    assert declined.exit_code == 1 and fake_admin.requests == []
    result = run(fake_admin, "keys", "delete", "alice-ci", "--yes")
    assert result.exit_code == 0, result.output
    assert fake_admin.requests[0].method == "DELETE"
    assert result.stdout == "Deleted alice-ci (balance at deletion 2.50).\n"


def test_keys_delete_unknown_key_is_an_error(fake_admin):
    fake_admin.answer(
        "DELETE", "/admin/v1/keys/nobody", {"error": "not_found", "message": "no such key"}, 404
    )
    result = run(fake_admin, "keys", "delete", "nobody", "--yes")
    assert result.exit_code != 0 and "no such key" in result.output
