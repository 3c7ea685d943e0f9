"""The HTTP surface: auth, JSON errors, bad input gets a 4xx and changes nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

from solverfleet.collector import CollectorSettings, create_app
from solverfleet.settings import SettingsError
from tests.support.collector import AppHarness, key_config, make_app, sqlite_url, team_config

SECRET = key_config("alice-web")["secret"]


pytest_plugins = ["tests.support.collector"]


@pytest.fixture
def h(fast_dir: Path) -> AppHarness:
    harness = make_app(sqlite_url(fast_dir / "c.db"))
    harness.apply(team_config())
    return harness


def state(h: AppHarness) -> tuple:
    return (h.summary(), h.admin("GET", "/admin/v1/keys").get_json(), h.sync()["config_version"])


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/admin/v1/keys"),
        ("POST", "/admin/v1/apply"),
        ("GET", "/admin/v1/summary"),
        ("POST", "/agent/v1/sync"),
        ("POST", "/agent/v1/usage"),
        ("POST", "/agent/v1/release"),
    ],
)
def test_tokens_are_required_and_not_interchangeable(h: AppHarness, method: str, path: str):
    wrong = h.fleet_token if path.startswith("/admin") else h.admin_token
    for token in (None, "nope"):
        response = h.call(method, path, token, json={})
        assert response.status_code == 401
        assert response.get_json()["error"] == "unauthorized"
        assert response.headers["WWW-Authenticate"] == "Bearer"
    # The other surface's token is known but has the wrong role (tests/unit/test_auth_roles.py).
    response = h.call(method, path, wrong, json={})
    assert response.status_code == 403
    assert response.get_json()["error"] == "forbidden"


def test_health_needs_no_token(h: AppHarness) -> None:
    assert h.call("GET", "/healthz", None).get_json() == {"ok": True}
    assert h.call("GET", "/readyz", None).status_code == 200


@pytest.mark.parametrize(
    ("path", "body", "status", "code"),
    [
        ("/admin/v1/keys/alice-web/topup", b"{not json", 400, "bad_json"),
        ("/admin/v1/keys/alice-web/topup", b"", 400, "bad_json"),
        ("/admin/v1/keys/alice-web/topup", b"[1, 2]", 400, "invalid"),
        ("/admin/v1/keys/alice-web/topup", b'{"amount": NaN}', 400, "bad_json"),
        ("/admin/v1/keys/alice-web/topup", b'{"amount": "-1.00"}', 400, "invalid_amount"),
        ("/admin/v1/keys/alice-web/topup", b'{"amount": "0"}', 400, "invalid_amount"),
        ("/admin/v1/keys/alice-web/topup", b'{"amount": "0.0000001"}', 400, "invalid_amount"),
        ("/admin/v1/keys/alice-web/topup", b'{"amount": 1.5}', 400, "invalid_amount"),
        ("/admin/v1/keys/alice-web/topup", b'{"amount": "1e400"}', 400, "invalid_amount"),
        ("/admin/v1/keys/alice-web/topup", b'{"amount": "abc"}', 400, "invalid_amount"),
        ("/admin/v1/keys/alice-web/topup", b"{}", 400, "invalid_amount"),
        ("/admin/v1/keys/alice-web/topup", b'{"amount": "1", "colour": 1}', 400, "unknown_field"),
        ("/admin/v1/keys/alice-web/topup", b'{"amount": "1", "reason": 7}', 400, "invalid"),
        ("/admin/v1/keys/nobody/topup", b'{"amount": "1.00"}', 404, "not_found"),
        ("/admin/v1/keys/nobody/deactivate", b"", 404, "not_found"),
        ("/admin/v1/users/nobody/activate", b"", 404, "not_found"),
        ("/admin/v1/keys/alice-web/deactivate", b'{"x": 1}', 400, "unknown_field"),
        ("/admin/v1/apply", b'{"users": [{"id": "bob", "colour": 1}]}', 400, "invalid_config"),
        (
            "/admin/v1/apply",
            b'{"users": [{"id": "bob", "api_key": "ENV:BOB"}]}',
            400,
            "invalid_config",
        ),
        ("/admin/v1/apply?dry_run=maybe", b"{}", 400, "invalid"),
        ("/agent/v1/sync", b"{}", 403, "forbidden"),  # admin token on the agent surface
    ],
)
def test_bad_admin_input_is_a_4xx_and_changes_nothing(
    h: AppHarness, path: str, body: bytes, status: int, code: str
) -> None:
    before = state(h)
    response = h.admin("POST", path, data=body, content_type="application/json")
    assert response.status_code == status, response.get_data()
    payload = response.get_json()
    assert payload["error"] == code and payload["message"]
    assert state(h) == before


def test_invalid_config_lists_every_problem_with_paths(h: AppHarness) -> None:
    config = team_config()
    config["users"][0]["keys"][0]["ip_allowlist"] = ["10.0.0.0/33"]
    config["users"][0]["keys"][0]["balance"] = "-3"
    response = h.admin("POST", "/admin/v1/apply", json=config)
    assert response.status_code == 400
    errors = response.get_json()["errors"]
    assert any(e.startswith("users[0].keys[0].ip_allowlist[0]:") for e in errors)
    assert any(e.startswith("users[0].keys[0].balance:") for e in errors)


def test_oversized_body_is_413(h: AppHarness) -> None:
    before = state(h)
    big = b'{"amount": "1.00", "reason": "' + b"x" * (1024 * 1024) + b'"}'
    response = h.admin("POST", "/admin/v1/keys/alice-web/topup", data=big)
    assert response.status_code == 413
    assert response.get_json() == {
        "error": "too_large",
        "message": "request body over 1048576 bytes"
        " (collector setting admin_max_body, SOLVERFLEET_ADMIN_MAX_BODY)",
    }
    assert state(h) == before
    # the agent surface allows bigger bodies (5,000 events), still JSON errors past its limit
    response = h.agent("POST", "/agent/v1/usage", data=b" " * (2 * 1024 * 1024))
    assert response.status_code == 400


def test_unknown_route_and_method_are_json(h: AppHarness) -> None:
    response = h.admin("GET", "/admin/v1/nothing")
    assert response.status_code == 404 and response.get_json()["error"] == "not_found"
    response = h.admin("GET", "/admin/v1/apply")
    assert response.status_code == 405 and response.get_json()["error"]


def test_apply_through_the_route_accepts_the_seed_format(h: AppHarness) -> None:
    seed = {"users": [{"id": "bob", "api_key": "sk_bob_secret_123", "daily_limit": 5}]}
    dry = h.admin("POST", "/admin/v1/apply?dry_run=1", json=seed).get_json()
    assert {"kind": "key", "id": "bob"} in dry["created"] and dry["dry_run"] is True
    assert "bob" not in {k["id"] for k in h.admin("GET", "/admin/v1/keys").get_json()["keys"]}
    result = h.admin("POST", "/admin/v1/apply", json=seed).get_json()
    assert {"kind": "user", "id": "bob"} in result["created"]
    assert result["secrets"] == {}


def test_keys_never_show_secrets(h: AppHarness) -> None:
    listing = h.admin("GET", "/admin/v1/keys").get_data(as_text=True)
    one = h.admin("GET", "/admin/v1/keys/alice-web").get_data(as_text=True)
    assert SECRET not in listing + one
    assert "secret" not in listing + one
    key = h.admin("GET", "/admin/v1/keys/alice-web").get_json()
    assert set(key) == {
        "id",
        "user_id",
        "account",
        "project",
        "environment",
        "balance",
        "allowed_types",
        "cpm",
        "ip_allowlist",
        "active",
        "expires_at",
        "refill",
        "leased",
    }
    assert (key["balance"], key["leased"]) == ("10.00", "0.00")


def test_topup_and_flags_through_http(h: AppHarness) -> None:
    response = h.admin(
        "POST", "/admin/v1/keys/alice-web/topup", json={"amount": "2.50", "reason": "invoice 7"}
    )
    assert response.status_code == 200
    body = response.get_json()
    assert (body["key"], body["balance"]) == ("alice-web", "12.50")
    assert isinstance(body["transaction_id"], int)
    assert h.admin("POST", "/admin/v1/keys/alice-web/deactivate").get_json() == {
        "key": "alice-web",
        "active": False,
    }
    assert h.admin("POST", "/admin/v1/users/alice/deactivate").get_json() == {
        "user": "alice",
        "active": False,
    }
    users = h.admin("GET", "/admin/v1/users").get_json()["users"]
    assert users[0]["id"] == "alice" and users[0]["active"] is False


def test_usage_limit_is_checked(h: AppHarness) -> None:
    for bad in ("0", "-1", "x", "100000"):
        response = h.admin("GET", f"/admin/v1/usage?limit={bad}")
        assert response.status_code == 400


@pytest.mark.parametrize(
    "body",
    [
        [],
        {"agent_id": ""},
        {"agent_id": "a1", "reset": "yes"},
        {"agent_id": "a1", "config_version": "7"},
        {"agent_id": "a1", "leases": [{"kind": "gold"}]},
        {"agent_id": "a1", "leases": [{"kind": "balance", "key_id": "k", "want_micros": -5}]},
        {"agent_id": "a1", "leases": [{"kind": "cpm", "key_id": "k", "want": 1}]},
        {"agent_id": "a1", "leases": [{"kind": "daily", "user_id": "u", "day": "23/11/2026"}]},
        {"agent_id": "a1", "watch": "alice-web"},
        {"agent_id": "a1", "stats": {"in_flight": "many"}},
    ],
)
def test_bad_sync_is_400(h: AppHarness, body) -> None:
    response = h.agent("POST", "/agent/v1/sync", json=body)
    assert response.status_code == 400
    assert response.get_json()["error"] == "invalid"


def test_unknown_protocol_fields_are_ignored(h: AppHarness) -> None:
    # forward compatibility: a newer agent may send fields this collector does not know
    response = h.agent("POST", "/agent/v1/sync", json={"agent_id": "a1", "hello": 1})
    assert response.status_code == 200


def test_settings_from_environment(tmp_path: Path) -> None:
    env = {
        "SOLVERFLEET_DB": sqlite_url(tmp_path / "env.db"),
        "SOLVERFLEET_FLEET_TOKEN": "f",
        "SOLVERFLEET_ADMIN_TOKEN": "a",
        "SOLVERFLEET_LEASE_TTL": "30",
        "SOLVERFLEET_REFILL_RUNNER": "0",  # no refill thread outliving the test's database
        "SOLVERFLEET_REFILL_POLL_INTERVAL": "2.5",
    }
    settings = CollectorSettings.load(env=env)
    assert (settings.lease_ttl, settings.db) == (30.0, env["SOLVERFLEET_DB"])
    assert (settings.refill_runner, settings.refill_poll_interval) == (False, 2.5)
    assert create_app(settings).test_client().get("/readyz").status_code == 200
    with pytest.raises(SettingsError):
        CollectorSettings.load(env={"SOLVERFLEET_FLEET_TOKEN": "f"})
    with pytest.raises(SettingsError):
        CollectorSettings.load(env={**env, "SOLVERFLEET_ADMIN_TOKEN": ""})
    assert CollectorSettings.load(env={**env, "SOLVERFLEET_APPLY_MAX_BODY": "2048"}).apply_max_body
    for value in ("0", "1023", str(2**31)):
        with pytest.raises(SettingsError, match="admin_max_body must be from 1024"):
            CollectorSettings.load(env={**env, "SOLVERFLEET_ADMIN_MAX_BODY": value})


@pytest.mark.parametrize("depth", [50, 900, 100_000])
def test_deeply_nested_json_is_a_400(h: AppHarness, depth: int) -> None:
    body = b'{"users": ' + b"[" * depth + b"]" * depth + b"}"
    for path, call in (("/admin/v1/apply", h.admin), ("/agent/v1/usage", h.agent)):
        response = call("POST", path, data=body)
        assert response.status_code == 400, (path, depth)


def test_apply_has_its_own_larger_body_limit(tmp_path) -> None:
    from tests.support.collector import make_app, sqlite_url

    h = make_app(sqlite_url(tmp_path / "c.db"), admin_max_body=2048, apply_max_body=8192)
    padding = {"account": "acme", "users": [], "prices": {"turnstile": "0.002"}}
    fits = {**padding, "note": "x" * 4000}  # over admin_max_body, under apply_max_body
    response = h.admin("POST", "/admin/v1/apply?dry_run=1", json=fits)
    assert response.status_code != 413, response.get_json()
    response = h.admin("POST", "/admin/v1/apply", json={**padding, "note": "x" * 9000})
    assert response.status_code == 413
    assert "apply_max_body" in response.get_json()["message"]
    response = h.admin("POST", "/admin/v1/keys", json={"user_id": "u", "note": "x" * 3000})
    assert response.status_code == 413
    assert "admin_max_body" in response.get_json()["message"]
