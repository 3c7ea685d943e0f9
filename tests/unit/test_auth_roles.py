"""Admin API and fleet protocol access by role, through the real Flask app (both stores).

The matrix lists every route of the app: a route added without an entry here fails
``test_every_route_has_a_matrix_entry``, so nobody ships a route whose access is unchecked.
A user token on another user's resource answers 404, like a resource that does not exist.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from solverfleet.collector.store import StoreUnavailable
from solverfleet.keyhash import hash_secret
from tests.support.collector import (
    AppHarness,
    event,
    key_config,
    make_app,
    sqlite_url,
    team_config,
    user_config,
)

pytest_plugins = ["tests.support.collector", "tests.support.mariadb"]

ADMIN = "admin only"
USER = "admin and user (own data)"
SERVICE = "service only"
PUBLIC = "no token needed"
DASHBOARD = "dashboard session only: a bearer token opens nothing (tests/unit/test_dashboard.py)"

CONFIG = team_config(
    [
        user_config("alice", [key_config("alice-web")]),
        user_config("bob", [key_config("bob-web")]),
        user_config("carol", [key_config("carol-web")]),
    ]
)


@dataclass(frozen=True)
class Route:
    access: str
    path: str  # for user routes with a resource: the user's own
    body: Any = None
    ok: int = 200
    other: str | None = None  # the same route on another user's resource


MATRIX: dict[tuple[str, str], Route] = {
    ("GET", "/healthz"): Route(PUBLIC, "/healthz"),
    ("GET", "/readyz"): Route(PUBLIC, "/readyz"),
    ("GET", "/metrics"): Route(PUBLIC, "/metrics"),  # from loopback; see routes_obs
    ("GET", "/openapi.json"): Route(PUBLIC, "/openapi.json"),
    ("GET", "/static/<path:filename>"): Route(PUBLIC, "/static/nothing.txt", ok=404),
    ("POST", "/agent/v1/sync"): Route(SERVICE, "/agent/v1/sync", {"agent_id": "m1"}),
    ("POST", "/agent/v1/usage"): Route(
        SERVICE, "/agent/v1/usage", {"agent_id": "m1", "events": []}
    ),
    ("POST", "/agent/v1/release"): Route(SERVICE, "/agent/v1/release", {"agent_id": "m1"}),
    ("POST", "/agent/v1/pingbacks"): Route(
        SERVICE, "/agent/v1/pingbacks", {"agent_id": "m1", "owner": "u:x", "action": "del_all"}
    ),
    ("GET", "/admin/v1/whoami"): Route(USER, "/admin/v1/whoami"),
    ("POST", "/admin/v1/apply"): Route(ADMIN, "/admin/v1/apply?dry_run=1", CONFIG),
    ("GET", "/admin/v1/keys"): Route(USER, "/admin/v1/keys"),
    ("POST", "/admin/v1/keys"): Route(ADMIN, "/admin/v1/keys", {"user_id": "carol"}, 201),
    ("GET", "/admin/v1/keys/<key_id>"): Route(
        USER, "/admin/v1/keys/alice-web", other="/admin/v1/keys/bob-web"
    ),
    ("PATCH", "/admin/v1/keys/<key_id>"): Route(ADMIN, "/admin/v1/keys/carol-web", {"cpm": 5}),
    # A missing key: every admin caller gets past the role check to the same 404 (a real delete
    # would answer the first admin only); test_collector_key_terms.py deletes for real.
    ("DELETE", "/admin/v1/keys/<key_id>"): Route(ADMIN, "/admin/v1/keys/nobody", ok=404),
    ("POST", "/admin/v1/keys/<key_id>/rotate"): Route(
        ADMIN, "/admin/v1/keys/carol-web/rotate", {"grace_seconds": 0}
    ),
    ("GET", "/admin/v1/keys/<key_id>/transactions"): Route(
        USER,
        "/admin/v1/keys/alice-web/transactions",
        other="/admin/v1/keys/bob-web/transactions",
    ),
    ("POST", "/admin/v1/keys/<key_id>/topup"): Route(
        ADMIN, "/admin/v1/keys/carol-web/topup", {"amount": "1.00", "reason": "matrix"}
    ),
    ("POST", "/admin/v1/keys/<key_id>/deactivate"): Route(
        ADMIN, "/admin/v1/keys/carol-web/deactivate"
    ),
    ("POST", "/admin/v1/keys/<key_id>/activate"): Route(ADMIN, "/admin/v1/keys/carol-web/activate"),
    ("GET", "/admin/v1/users"): Route(ADMIN, "/admin/v1/users"),
    # An unknown account: every admin caller gets past the role check to the same 400 (a real
    # create would answer the first admin only); test_collector_users.py creates for real.
    ("POST", "/admin/v1/users"): Route(
        ADMIN, "/admin/v1/users", {"id": "dave", "account": "nosuch"}, ok=400
    ),
    ("POST", "/admin/v1/users/<user_id>/deactivate"): Route(
        ADMIN, "/admin/v1/users/carol/deactivate"
    ),
    ("POST", "/admin/v1/users/<user_id>/activate"): Route(ADMIN, "/admin/v1/users/carol/activate"),
    ("GET", "/admin/v1/usage"): Route(USER, "/admin/v1/usage"),
    ("GET", "/admin/v1/summary"): Route(ADMIN, "/admin/v1/summary"),
    ("GET", "/admin/v1/agents"): Route(ADMIN, "/admin/v1/agents"),
    ("DELETE", "/admin/v1/agents/<agent_id>"): Route(ADMIN, "/admin/v1/agents/nobody", ok=404),
    ("POST", "/admin/v1/tokens"): Route(ADMIN, "/admin/v1/tokens", {"role": "service"}, 201),
    ("GET", "/admin/v1/tokens"): Route(ADMIN, "/admin/v1/tokens"),
    ("POST", "/admin/v1/tokens/<int:token_id>/revoke"): Route(
        ADMIN, "/admin/v1/tokens/{scratch}/revoke"
    ),
    ("GET", "/admin/v1/log"): Route(USER, "/admin/v1/log"),
    ("GET", "/admin/v1/reports/team"): Route(USER, "/admin/v1/reports/team"),
    ("GET", "/admin/v1/reports/projects"): Route(USER, "/admin/v1/reports/projects"),
    ("GET", "/admin/v1/reports/keys"): Route(USER, "/admin/v1/reports/keys"),
    ("GET", "/admin/v1/reports/stats"): Route(USER, "/admin/v1/reports/stats"),
    ("GET", "/admin/v1/notifications"): Route(USER, "/admin/v1/notifications"),
    ("GET", "/admin/v1/audit"): Route(ADMIN, "/admin/v1/audit"),
    # Without a dashboard session: the login page (GET) or back to it, nothing done (POST).
    ("GET", "/dashboard/login"): Route(DASHBOARD, "/dashboard/login"),
    ("POST", "/dashboard/login"): Route(DASHBOARD, "/dashboard/login", ok=400),  # no CSRF token
    ("POST", "/dashboard/logout"): Route(DASHBOARD, "/dashboard/logout", ok=303),
    ("GET", "/dashboard/static/<path:filename>"): Route(
        DASHBOARD, "/dashboard/static/dashboard.css"
    ),
    ("GET", "/dashboard/"): Route(DASHBOARD, "/dashboard/", ok=302),
    ("GET", "/dashboard/keys/<key_id>"): Route(DASHBOARD, "/dashboard/keys/carol-web", ok=302),
    ("POST", "/dashboard/keys/<key_id>/deactivate"): Route(
        DASHBOARD, "/dashboard/keys/carol-web/deactivate", ok=303
    ),
    ("POST", "/dashboard/keys/<key_id>/activate"): Route(
        DASHBOARD, "/dashboard/keys/carol-web/activate", ok=303
    ),
    ("GET", "/dashboard/usage"): Route(DASHBOARD, "/dashboard/usage", ok=302),
    ("GET", "/dashboard/activity"): Route(DASHBOARD, "/dashboard/activity", ok=302),
    ("GET", "/dashboard/solves"): Route(DASHBOARD, "/dashboard/solves", ok=302),
    ("GET", "/dashboard/notifications"): Route(DASHBOARD, "/dashboard/notifications", ok=302),
    ("GET", "/dashboard/fleet"): Route(DASHBOARD, "/dashboard/fleet", ok=302),
    ("GET", "/dashboard/audit"): Route(DASHBOARD, "/dashboard/audit", ok=302),
}


def app_routes(h: AppHarness) -> set[tuple[str, str]]:
    return {
        (method, rule.rule)
        for rule in h.app.url_map.iter_rules()
        for method in rule.methods - {"HEAD", "OPTIONS"}
    }


@dataclass
class Callers:
    tokens: dict[str, str | None]  # caller name -> bearer token (None: no header)
    scratch: int  # a token id the revoke route may revoke


def new_token(h: AppHarness, **body: Any) -> dict:
    response = h.admin("POST", "/admin/v1/tokens", json=body)
    assert response.status_code == 201, response.get_json()
    return response.get_json()


@pytest.fixture
def callers(collector_app: AppHarness) -> Callers:
    h = collector_app
    h.apply(CONFIG)
    revoked = new_token(h, role="admin")
    assert h.admin("POST", f"/admin/v1/tokens/{revoked['token']['id']}/revoke").status_code == 200
    return Callers(
        tokens={
            "no token": None,
            "unknown token": "sft_this-token-was-never-issued",
            "revoked token": revoked["secret"],
            "admin (bootstrap)": h.admin_token,
            "admin (stored)": new_token(h, role="admin")["secret"],
            "user alice": new_token(h, role="user", user_id="alice")["secret"],
            "service (fleet_token)": h.fleet_token,
            "service (stored)": new_token(h, role="service")["secret"],
        },
        scratch=new_token(h, role="service", label="scratch")["token"]["id"],
    )


def expected(route: Route, caller: str) -> int:
    if route.access in (PUBLIC, DASHBOARD):
        return route.ok
    if caller in ("no token", "unknown token", "revoked token"):
        return 401
    role = caller.split()[0]
    allowed = {ADMIN: {"admin"}, USER: {"admin", "user"}, SERVICE: {"service"}}[route.access]
    return route.ok if role in allowed else 403


def test_every_route_has_a_matrix_entry(tmp_path) -> None:
    h = make_app(sqlite_url(tmp_path / "c.db"))
    routes = app_routes(h)
    assert sorted(routes - set(MATRIX)) == [], "new routes need a role-matrix entry"
    assert sorted(set(MATRIX) - routes) == [], "matrix entries for routes that are gone"


@pytest.mark.parametrize("route", sorted(MATRIX), ids=lambda r: f"{r[0]} {r[1]}")
def test_role_matrix(collector_app: AppHarness, callers: Callers, route: tuple[str, str]) -> None:
    h = collector_app
    spec = MATRIX[route]
    method = route[0]
    path = spec.path.format(scratch=callers.scratch)
    for caller, token in callers.tokens.items():
        response = h.call(method, path, token, json=spec.body)
        want = expected(spec, caller)
        assert response.status_code == want, (caller, response.get_data(as_text=True)[:300])
        if want in (401, 403):
            assert response.get_json()["error"] in ("unauthorized", "forbidden")
        if spec.other is not None and want == spec.ok:
            # Another user's resource: admins see it; a user token gets 404, as if absent.
            other = h.call(method, spec.other, token, json=spec.body)
            assert other.status_code == (404 if caller == "user alice" else spec.ok), caller
            if caller == "user alice":
                assert other.get_json()["error"] == "not_found"


# --- what a user token sees -------------------------------------------------------------------


@pytest.fixture
def alice(callers: Callers, collector_app: AppHarness) -> str:
    h = collector_app
    h.usage(
        [
            event("alice-web", user_id="alice"),
            event("alice-web", user_id="alice", status="failed", cost=0),
            event("bob-web", user_id="bob"),
            event("carol-web", user_id="carol"),
        ]
    )
    token = callers.tokens["user alice"]
    assert token is not None
    return token


def test_a_user_token_sees_only_its_own_keys_and_usage(collector_app: AppHarness, alice: str):
    h = collector_app

    def get(path: str) -> Any:
        response = h.call("GET", path, alice)
        assert response.status_code == 200, (path, response.get_json())
        return response.get_json()

    me = get("/admin/v1/whoami")
    assert (me["role"], me["user_id"], type(me["token_id"])) == ("user", "alice", int)
    assert [k["id"] for k in get("/admin/v1/keys")["keys"]] == ["alice-web"]
    assert {e["user_id"] for e in get("/admin/v1/usage")["events"]} == {"alice"}
    assert get("/admin/v1/usage")["count"] == 2
    assert get("/admin/v1/usage?key_id=bob-web")["events"] == []
    assert {e["user_id"] for e in get("/admin/v1/log")["events"]} == {"alice"}
    assert [u["user_id"] for u in get("/admin/v1/reports/team")["users"]] == ["alice"]
    assert [k["key_id"] for k in get("/admin/v1/reports/keys")["keys"]] == ["alice-web"]
    assert get("/admin/v1/reports/projects")["total"]["solves"] == 1
    assert get("/admin/v1/reports/stats")["total"]["calls"] == 2
    # The same queries as an admin see everyone.
    assert h.admin("GET", "/admin/v1/usage").get_json()["count"] == 4
    assert len(h.admin("GET", "/admin/v1/reports/keys").get_json()["keys"]) == 3


def test_another_users_key_looks_like_a_missing_one(collector_app: AppHarness, alice: str):
    h = collector_app
    for path in ("/admin/v1/keys/{}", "/admin/v1/keys/{}/transactions"):
        theirs = h.call("GET", path.format("bob-web"), alice)
        missing = h.call("GET", path.format("no-such-key"), alice)
        assert theirs.status_code == missing.status_code == 404
        assert theirs.get_json()["error"] == missing.get_json()["error"] == "not_found"
        assert "does not exist" in theirs.get_json()["message"]


def test_a_deactivated_users_token_is_refused(collector_app: AppHarness, alice: str) -> None:
    h = collector_app
    h.admin("POST", "/admin/v1/users/alice/deactivate")
    response = h.call("GET", "/admin/v1/keys", alice)
    assert response.status_code == 403
    assert response.get_json()["error"] == "user_disabled"
    h.admin("POST", "/admin/v1/users/alice/activate")
    assert h.call("GET", "/admin/v1/keys", alice).status_code == 200


# --- tokens -----------------------------------------------------------------------------------


def test_tokens_are_stored_hashed_shown_once_and_revocable(collector_app: AppHarness) -> None:
    h = collector_app
    h.apply(CONFIG)
    created = new_token(h, role="user", user_id="bob", label="bob's laptop")
    secret, token = created["secret"], created["token"]
    assert secret.startswith("sft_")
    assert token == {
        "id": token["id"],
        "role": "user",
        "user_id": "bob",
        "agent_id": None,
        "label": "bob's laptop",
        "created": h.clock.now,
        "created_by": "bootstrap",
        "last_used": None,
        "revoked": None,
        "active": True,
    }
    rows = h.db.read(lambda tx: tx.all("SELECT token_hash FROM api_tokens"))
    assert rows == [(hash_secret(secret),)]
    listed = h.admin("GET", "/admin/v1/tokens")
    assert secret not in listed.get_data(as_text=True)
    assert hash_secret(secret) not in listed.get_data(as_text=True)

    assert h.call("GET", "/admin/v1/keys", secret).status_code == 200
    revoked = h.admin("POST", f"/admin/v1/tokens/{token['id']}/revoke").get_json()["token"]
    assert (revoked["active"], revoked["revoked"]) == (False, h.clock.now)
    refused = h.call("GET", "/admin/v1/keys", secret)
    assert refused.status_code == 401 and refused.get_json()["error"] == "unauthorized"
    h.clock.advance(5)
    again = h.admin("POST", f"/admin/v1/tokens/{token['id']}/revoke").get_json()["token"]
    assert again["revoked"] == revoked["revoked"]  # the first revocation time stays
    assert h.admin("POST", "/admin/v1/tokens/999/revoke").status_code == 404


def test_last_used_is_kept_without_a_write_per_request(collector_app: AppHarness) -> None:
    h = collector_app
    created = new_token(h, role="admin")

    def last_used() -> float | None:
        return h.admin("GET", "/admin/v1/tokens").get_json()["tokens"][0]["last_used"]

    h.call("GET", "/admin/v1/summary", created["secret"])
    first = h.clock.now
    assert last_used() == first
    h.clock.advance(30)
    h.call("GET", "/admin/v1/summary", created["secret"])
    assert last_used() == first  # within a minute: not written again
    h.clock.advance(31)
    h.call("GET", "/admin/v1/summary", created["secret"])
    assert last_used() == h.clock.now


def test_tokens_record_who_created_them(collector_app: AppHarness) -> None:
    h = collector_app
    ops = new_token(h, role="admin", label="ops")
    made = h.call("POST", "/admin/v1/tokens", ops["secret"], json={"role": "service"})
    assert made.get_json()["token"]["created_by"] == f"token:{ops['token']['id']}"


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({}, "invalid_role"),
        ({"role": "root"}, "invalid_role"),
        ({"role": "user"}, "invalid"),
        ({"role": "user", "user_id": "zed"}, "unknown_user"),
        ({"role": "service", "user_id": "alice"}, "invalid"),
        ({"role": "admin", "user_id": 5}, "invalid"),
        ({"role": "admin", "label": ""}, "invalid"),
        ({"role": "admin", "label": "x" * 129}, "invalid"),
        ({"role": "admin", "label": 5}, "invalid"),
        ({"role": "admin", "secret": "mine"}, "unknown_field"),
    ],
)
def test_bad_token_requests_are_400_and_create_nothing(
    collector_app: AppHarness, body: dict, code: str
) -> None:
    h = collector_app
    h.apply(CONFIG)
    response = h.admin("POST", "/admin/v1/tokens", json=body)
    assert response.status_code == 400, response.get_json()
    assert response.get_json()["error"] == code
    assert h.db.read(lambda tx: tx.scalar("SELECT COUNT(*) FROM api_tokens")) == 0


def test_a_stored_service_token_drives_the_fleet_protocol(collector_app: AppHarness) -> None:
    h = collector_app
    h.apply(CONFIG)
    service = new_token(h, role="service")["secret"]
    response = h.call("POST", "/agent/v1/sync", service, json={"agent_id": "a9"})
    assert response.status_code == 200
    assert response.get_json()["config"]["keys"]
    admin_try = h.call("GET", "/admin/v1/keys", service)
    assert admin_try.status_code == 403
    assert "fleet protocol" in admin_try.get_json()["message"]


def test_store_outage_while_authenticating_is_a_503(tmp_path, monkeypatch) -> None:
    h = make_app(sqlite_url(tmp_path / "c.db"))

    def broken(fn: Any) -> Any:
        raise StoreUnavailable("database is down")

    monkeypatch.setattr(h.db, "read", broken)
    response = h.call("GET", "/admin/v1/keys", "sft_some-stored-token")
    assert response.status_code == 503
    assert response.get_json()["error"] == "unavailable"
    # The bootstrap tokens need no database to be recognised.
    assert h.call("GET", "/admin/v1/whoami", h.admin_token).status_code == 200


def test_a_fleet_token_rotation_accepts_the_previous_token_until_it_is_removed(tmp_path) -> None:
    url = sqlite_url(tmp_path / "c.db")
    rotating = make_app(url, fleet_token_previous="old-fleet-token")
    for token in ("fleet-token", "old-fleet-token"):
        response = rotating.call("POST", "/agent/v1/sync", token, json={"agent_id": "a1"})
        assert response.status_code == 200, (token, response.get_json())
    assert rotating.call("GET", "/admin/v1/keys", "old-fleet-token").status_code == 403
    rotating.db.close()
    done = make_app(url)  # the rotation is over: the old token is unknown again
    response = done.call("POST", "/agent/v1/sync", "old-fleet-token", json={"agent_id": "a1"})
    assert response.status_code == 401
    done.db.close()


@pytest.mark.parametrize("previous", ["fleet-token", "admin-token"])
def test_the_previous_fleet_token_must_be_a_different_token(tmp_path, previous: str) -> None:
    from solverfleet.settings import SettingsError

    with pytest.raises(SettingsError, match="fleet_token_previous"):
        make_app(sqlite_url(tmp_path / "c.db"), fleet_token_previous=previous)
