"""``POST /admin/v1/users``: a user made through the admin API obeys the team config's rules, is
audited, and is created once per Idempotency-Key."""

from __future__ import annotations

import pytest

from tests.support.collector import AppHarness, team_config

pytest_plugins = ["tests.support.collector", "tests.support.mariadb"]


@pytest.fixture
def h(collector_app: AppHarness) -> AppHarness:
    collector_app.apply(team_config())  # account acme with user alice
    return collector_app


def create(h: AppHarness, body: object, key: str | None = None):
    headers = {} if key is None else {"Idempotency-Key": key}
    return h.call("POST", "/admin/v1/users", h.admin_token, json=body, headers=headers)


def test_create_a_user_audited_and_once_per_idempotency_key(h: AppHarness) -> None:
    body = {"id": "dave", "account": "acme", "email": "dave@example.com", "daily_limit": 50}
    first = create(h, body, key="k1")
    assert first.status_code == 201, first.get_json()
    user = first.get_json()["user"]
    assert user == {"id": "dave", "account": "acme", "email": "dave@example.com",
                    "role": "user", "daily_limit": 50, "active": True}  # fmt: skip
    again = create(h, body, key="k1")
    assert (again.status_code, again.get_json()) == (201, first.get_json())
    assert create(h, body).status_code == 409  # a new request for the same id
    listed = h.admin("GET", "/admin/v1/users").get_json()["users"]
    assert [u["id"] for u in listed] == ["alice", "dave"]
    entries = h.admin("GET", "/admin/v1/audit?action=user.create").get_json()["entries"]
    created = [e for e in entries if e["target_id"] == "dave"]
    assert len(created) == 1 and created[0]["after"]["daily_limit"] == 50


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ({"id": "dave", "account": "acme", "role": "boss"}, "role: unknown role 'boss'"),
        ({"id": "dave", "account": "acme", "daily_limit": -1}, "daily_limit: must not be neg"),
        ({"account": "acme"}, "id: required"),
        ({"id": "dave", "account": "acme", "keys": []}, "unknown field"),
        ({"id": "dave", "account": "nosuch"}, "account 'nosuch' does not exist"),
        ({"id": "alice", "account": "acme"}, "user 'alice' already exists"),
    ],
)
def test_bad_users_are_refused_and_change_nothing(h: AppHarness, body: dict, error: str) -> None:
    before = h.admin("GET", "/admin/v1/users").get_json()
    response = create(h, body)
    assert 400 <= response.status_code < 500
    assert error in response.get_json()["message"]
    assert h.admin("GET", "/admin/v1/users").get_json() == before
