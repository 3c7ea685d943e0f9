"""The OpenAPI descriptions: valid 3.1, equal to the apps' routes, and true of real answers."""

from __future__ import annotations

import io

import pytest
import yaml
from openapi_spec_validator import validate

from solverfleet.agent import agent_of
from solverfleet.agent import create_app as create_agent
from tests.support.collector import event, key_config, team_config, user_config
from tests.support.fake_collector import (  # noqa: F401
    agent_app,
    agent_settings,
    fake_collector,
    fake_worker,
    standard_setup,
)
from tests.support.openapi import Spec, routes

pytest_plugins = ["tests.support.collector"]
PACKAGES = ["solverfleet.agent", "solverfleet.collector"]
FORWARDED = {"X-Forwarded-For": "203.0.113.9"}


@pytest.fixture
def bare_agent(tmp_path):
    """An agent that never reaches a collector: not ready."""
    app = create_agent(
        agent_settings(tmp_path, "http://127.0.0.1:9", collector_timeout=0.2),
        start_background=False,
    )
    yield app
    agent_of(app).close()


class _StrictLoader(yaml.SafeLoader):
    """Refuses a repeated key (plain YAML keeps the last one silently: a path described
    twice would lose one description)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep)


@pytest.mark.parametrize("package", PACKAGES)
def test_description_is_valid_openapi_31(package):
    from importlib import resources

    text = resources.files(package).joinpath("openapi.yaml").read_text()
    doc = yaml.load(text, Loader=_StrictLoader)
    assert doc == Spec.of(package).doc
    assert doc["openapi"].startswith("3.1.")
    validate(doc)  # the official 3.1 schema, $refs and path parameters


def _compare(app, package):
    documented, served = Spec.of(package).operations(), routes(app)
    assert not served - documented, f"routes without a description: {sorted(served - documented)}"
    assert not documented - served, f"described, not served: {sorted(documented - served)}"


def test_agent_description_matches_its_routes(bare_agent):
    _compare(bare_agent, "solverfleet.agent")


def test_collector_description_matches_its_routes(collector_app):
    _compare(collector_app.app, "solverfleet.collector")


def test_routes_helper_sees_a_missing_description(bare_agent):
    # The comparison itself can fail: a route added without a description is caught.
    bare_agent.add_url_rule("/extra/<int:n>", "extra", lambda n: "", methods=["PUT"])
    assert ("PUT", "/extra/{n}") in routes(bare_agent)
    with pytest.raises(AssertionError, match="without a description"):
        _compare(bare_agent, "solverfleet.agent")


@pytest.mark.parametrize("package", PACKAGES)
def test_served_document_is_the_packaged_yaml(package, bare_agent, collector_app):
    from importlib import resources

    app = bare_agent if package.endswith("agent") else collector_app.app
    resp = app.test_client().get("/openapi.json")
    assert resp.status_code == 200 and resp.mimetype == "application/json"
    text = resources.files(package).joinpath("openapi.yaml").read_text()
    assert resp.get_json() == yaml.safe_load(text)


def test_spec_check_rejects_an_undocumented_answer(bare_agent):
    spec = Spec.of("solverfleet.agent")
    resp = bare_agent.test_client().get("/healthz")
    spec.check("GET", "/healthz", resp)
    resp.status_code = 418
    with pytest.raises(AssertionError, match="not documented"):
        spec.check("GET", "/healthz", resp)
    resp = bare_agent.test_client().get("/readyz")  # 503 error body, checked as /healthz 200
    resp.status_code = 200
    with pytest.raises(Exception, match="ok"):
        spec.check("GET", "/healthz", resp)


# ---- real answers against the description --------------------------------------------------


def test_agent_answers_match_the_description(agent_app):  # noqa: F811
    app, secrets = agent_app
    spec = Spec.of("solverfleet.agent")
    c = app.test_client()
    ok = {"Authorization": f"Bearer {secrets['alice-web']}"}
    body = {"type": "turnstile", "url": "https://shop.example/", "params": {}}
    calls = [
        ("POST", "/solve", dict(json=body, headers=ok), 200),
        ("POST", "/solve", dict(json=body, headers={"X-API-Key": "sk_nope"}), 401),
        ("POST", "/solve", dict(json={"type": "turnstile"}, headers=ok), 400),
        ("POST", "/solve", dict(json={**body, "type": "nope"}, headers=ok), 400),
        ("POST", "/solve", dict(json=body, headers=_auth(secrets, "alice-off")), 403),
        ("POST", "/solve", dict(json=body, headers=_auth(secrets, "alice-poor")), 200),
        ("POST", "/solve", dict(json=body, headers=_auth(secrets, "alice-poor")), 402),
        (
            "POST",
            "/solve",
            dict(json={**body, "params": {"fake": {"status": 500}}}, headers=ok),
            502,
        ),
        ("GET", "/balance", dict(headers=ok), 200),
        ("GET", "/balance", dict(), 401),
        ("GET", "/healthz", dict(), 200),
        ("GET", "/readyz", dict(), 200),
        ("GET", "/metrics", dict(), 200),
        ("GET", "/metrics", dict(headers=FORWARDED), 403),
        ("GET", "/openapi.json", dict(), 200),
        ("GET", "/admin/status", dict(), 200),
        ("GET", "/admin/status", dict(headers=FORWARDED), 403),
        ("POST", "/admin/drain", dict(headers=FORWARDED), 403),
        ("GET", "/in.php", dict(query_string={"key": secrets["alice-web"]}), 200),
        ("GET", "/in.php", dict(query_string={"key": "x", "json": "1"}), 200),
        (
            "POST",
            "/in.php",
            dict(data={"key": secrets["alice-web"], "method": "post", "file": (_png(), "c.png")}),
            200,
        ),
        (
            "GET",
            "/res.php",
            dict(query_string={"key": secrets["alice-web"], "action": "getbalance", "json": "1"}),
            200,
        ),
        (
            "POST",
            "/res.php",
            dict(data={"key": secrets["alice-web"], "action": "get", "id": "1"}),
            200,
        ),
        ("POST", "/admin/drain", dict(), 200),  # last: the agent drains
        ("POST", "/solve", dict(json=body, headers=ok), 503),
    ]
    for method, path, kwargs, status in calls:
        resp = c.open(path, method=method, **kwargs)
        assert resp.status_code == status, (method, path, resp.get_data(as_text=True))
        spec.check(method, path, resp)


def _auth(secrets, key_id):
    return {"Authorization": f"Bearer {secrets[key_id]}"}


def _png() -> io.BytesIO:
    return io.BytesIO(b"\x89PNG\r\n\x1a\n" + bytes(200))


def test_collector_answers_match_the_description(collector_app):
    h, spec = collector_app, Spec.of("solverfleet.collector")
    config = team_config([user_config("alice", [key_config("alice-web", balance="5.00")])])

    def call(method, path, status, token="admin", **kwargs):
        token = {"admin": h.admin_token, "fleet": h.fleet_token}.get(token, token)
        resp = h.call(method, path, token, **kwargs)
        assert resp.status_code == status, (method, path, resp.get_json())
        spec.check(method, path, resp)
        return resp.get_json()

    call("POST", "/admin/v1/apply?dry_run=1", 200, json=config)
    call("POST", "/admin/v1/apply", 200, json=config)
    call("POST", "/admin/v1/apply", 400, json={"users": "nope"})
    call("POST", "/admin/v1/apply", 401, token="wrong", json=config)
    call("GET", "/admin/v1/keys", 200)
    call("GET", "/admin/v1/keys/alice-web", 200)
    call("GET", "/admin/v1/keys/nobody", 404)
    call("POST", "/admin/v1/keys/alice-web/topup", 200, json={"amount": "1.50", "reason": "t"})
    call("POST", "/admin/v1/keys/alice-web/topup", 400, json={"amount": "-1"})
    call("POST", "/admin/v1/keys/alice-web/deactivate", 200)
    call("POST", "/admin/v1/keys/alice-web/activate", 200)
    call("POST", "/admin/v1/users/alice/deactivate", 200)
    call("POST", "/admin/v1/users/alice/activate", 200)
    call("GET", "/admin/v1/users", 200)
    grants = call(
        "POST",
        "/agent/v1/sync",
        200,
        token="fleet",
        json={
            "agent_id": "a1",
            "instance": "i1",
            "reset": True,
            "config_version": None,
            "leases": [{"kind": "balance", "key_id": "alice-web", "want_micros": 100000}],
        },
    )
    assert grants["config"] is not None
    call("POST", "/agent/v1/sync", 400, token="fleet", json={"agent_id": 5})
    call("POST", "/agent/v1/sync", 401, token="wrong", json={"agent_id": "a1"})
    call("POST", "/agent/v1/sync", 403, token="admin", json={"agent_id": "a1"})
    call(
        "POST",
        "/agent/v1/usage",
        200,
        token="fleet",
        json={"agent_id": "a1", "events": [event(key_id="alice-web", agent_id="a1")]},
    )
    call("POST", "/agent/v1/usage", 400, token="fleet", json={"agent_id": "a1", "events": 3})
    call(
        "POST",
        "/agent/v1/release",
        200,
        token="fleet",
        json={
            "agent_id": "a1",
            "instance": "i1",
            "leases": [{"kind": "balance", "key_id": "alice-web", "return_micros": 0}],
        },
    )
    call("GET", "/admin/v1/usage?limit=5", 200)
    call("GET", "/admin/v1/usage?limit=0", 400)
    call("GET", "/admin/v1/summary", 200)
    call("GET", "/admin/v1/agents", 200)
    page = call("GET", "/admin/v1/audit?limit=2", 200)
    assert page["count"] == 2 and page["next_cursor"]
    call("GET", f"/admin/v1/audit?cursor={page['next_cursor']}&action=key.topup", 200)
    call("GET", "/admin/v1/audit?limit=1001", 400)
    call("GET", "/healthz", 200, token=None)
    call("GET", "/readyz", 200, token=None)
    call("GET", "/metrics", 200, token=None)
    call("GET", "/metrics", 401, token=None, headers=FORWARDED)
    call("GET", "/metrics", 200, headers=FORWARDED)
    call("GET", "/openapi.json", 200, token=None)
