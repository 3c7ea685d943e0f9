"""Roles through a real collector (gunicorn, two worker processes; SQLite and MariaDB): a user
token sees its own data only, a service token drives the fleet protocol only, and a revoked
token is refused by every worker from the next request on. The full route-by-role matrix runs
in-process in tests/unit/test_auth_roles.py."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.collector import CollectorProcess, key_config, team_config, user_config

pytest_plugins = ["tests.support.collector", "tests.support.mariadb"]
pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


@pytest.fixture
def proc(collector_db_url: str, tmp_path: Path) -> Iterator[CollectorProcess]:
    collector = CollectorProcess(collector_db_url, tmp_path, workers=2, threads=4).start()
    try:
        yield collector
    finally:
        collector.stop()


def test_roles_hold_across_collector_workers(proc: CollectorProcess) -> None:
    config = team_config(
        [
            user_config("alice", [key_config("alice-web")]),
            user_config("bob", [key_config("bob-web")]),
        ]
    )
    assert proc.admin("POST", "/admin/v1/apply", json=config).status_code == 200
    made = proc.admin("POST", "/admin/v1/tokens", json={"role": "user", "user_id": "alice"})
    assert made.status_code == 201
    alice, alice_id = made.json()["secret"], made.json()["token"]["id"]
    service = proc.admin("POST", "/admin/v1/tokens", json={"role": "service"}).json()["secret"]

    # Several requests each: with two workers, both processes answer some of them.
    for _ in range(6):
        keys = proc.request("GET", "/admin/v1/keys", alice)
        assert [k["id"] for k in keys.json()["keys"]] == ["alice-web"]
        assert proc.request("GET", "/admin/v1/keys/bob-web", alice).status_code == 404
        topup = proc.request(
            "POST", "/admin/v1/keys/alice-web/topup", alice, json={"amount": "1.00"}
        )
        assert topup.status_code == 403
        sync = proc.request("POST", "/agent/v1/sync", service, json={"agent_id": "roles-1"})
        assert sync.status_code == 200
        assert proc.request("GET", "/admin/v1/keys", service).status_code == 403
        assert proc.request("GET", "/admin/v1/keys", None).status_code == 401

    assert proc.admin("POST", f"/admin/v1/tokens/{alice_id}/revoke").status_code == 200
    for _ in range(10):
        refused = proc.request("GET", "/admin/v1/keys", alice)
        assert (refused.status_code, refused.json()["error"]) == (401, "unauthorized")
    # The bootstrap credentials from the settings are untouched by all of this.
    assert proc.admin("GET", "/admin/v1/keys").status_code == 200
    assert proc.agent("POST", "/agent/v1/sync", json={"agent_id": "roles-2"}).status_code == 200
