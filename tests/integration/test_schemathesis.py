"""Generated requests against the agent's and the collector's OpenAPI descriptions.

schemathesis draws requests from each described operation — valid ones and ones that break the
description — and sends them in-process to the WSGI app (the agent with a fake collector and a
real tiny worker on loopback, the collector on a real SQLite file). Every answer must be no 5xx
and documented: status code, media type, headers and JSON body. Most cases carry valid
credentials, and half of them known key/user ids, so the deep paths run; the rest carry none, an
inactive key or another role's token.

Integration, not chaos: this is bad input, not fault injection. Deterministic (derandomized
Hypothesis, no example database), ≥1,000 cases per app.
"""

from __future__ import annotations

import math
from collections import Counter

import pytest
import schemathesis
from flask import Flask, jsonify
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup, ServerError
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from solverfleet.agent.compat import routes_json
from tests.support.collector import key_config, make_app, sqlite_url, team_config, user_config
from tests.support.fake_collector import (  # noqa: F401
    agent_app,
    agent_settings,
    fake_collector,
    fake_worker,
    standard_setup,
)

pytestmark = pytest.mark.integration

CASES_PER_APP = 1000
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]
# Drains the agent for good (every later call is a documented 503): covered in test_openapi.
SKIPPED = {("POST", "/admin/drain")}
JSON_TASK_PATHS = routes_json.PATHS
JSON_TASK = {"type": "TurnstileTaskProxyless", "websiteURL": "https://shop.example/",
             "websiteKey": "0x4AAAAAAA"}  # fmt: skip


def _run(schema, credentials, deepen) -> Counter:
    """Send generated cases for every operation; returns answers per (method, path, status)."""
    operations = [
        result.ok()
        for result in schema.get_all_operations()
        if (result.ok().method.upper(), result.ok().path) not in SKIPPED
    ]
    # The full share in each mode: small operations run out of distinct inputs early, so the
    # total is asserted by the caller rather than assumed.
    per_run = math.ceil(CASES_PER_APP / len(operations))
    sent: Counter = Counter()
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            try:
                _runner(operation, mode, per_run, credentials, deepen, sent)()
            except Unsatisfiable:
                # Nothing in this operation can break its description (no parameters, no body).
                assert mode is GenerationMode.NEGATIVE, operation.label
    return sent


def _runner(operation, mode, examples, credentials, deepen, sent):
    @settings(
        max_examples=examples,
        deadline=None,
        derandomize=True,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(mode), who=st.sampled_from(credentials), deep=st.booleans())
    def run(case, who, deep):
        headers = {
            k: v for k, v in (case.headers or {}).items() if k not in ("Authorization", "X-API-Key")
        }
        headers.update(who(case))
        case.headers = headers
        if deep:
            deepen(case)
        # schemathesis' WSGI client sets no peer address; loopback reaches /metrics and /admin.
        response = case.call(environ_base={"REMOTE_ADDR": "127.0.0.1"})
        case.validate_response(response, checks=CHECKS)
        sent[(operation.method.upper(), operation.path, response.status_code)] += 1

    return run


def _report(sent: Counter, deep: set[tuple[str, str, int]]) -> int:
    """Enough cases, and the credentialed ones reached past authentication."""
    total = sum(sent.values())
    assert total >= CASES_PER_APP, f"only {total} cases: {sorted(sent.items())}"
    missing = {answer for answer in deep if not sent[answer]}
    assert not missing, f"never answered: {sorted(missing)}"
    return total


# ---- agent ---------------------------------------------------------------------------------


def test_agent_survives_generated_requests(agent_app):  # noqa: F811
    app, secrets = agent_app
    good = secrets["alice-web"]
    schema = schemathesis.openapi.from_wsgi("/openapi.json", app)

    credentials = [
        lambda case: {"Authorization": f"Bearer {good}"},
        lambda case: {"X-API-Key": good},
        lambda case: {"X-API-Key": secrets["alice-off"]},
        lambda case: {},
    ]

    def deepen(case):
        # A known type and a plain URL get past validation to the worker and the ledger.
        if case.operation.path == "/solve" and isinstance(case.body, dict):
            case.body.update(type="turnstile", url="https://shop.example/")
        # The 2captcha protocol carries the key as a parameter, not a header.
        if case.operation.path in ("/in.php", "/res.php"):
            target = case.query if case.operation.method.upper() == "GET" else case.body
            if isinstance(target, dict):
                target["key"] = good
        # So does the JSON task protocol, in its body; a valid task reaches admission.
        if case.operation.path in JSON_TASK_PATHS and isinstance(case.body, dict):
            case.body["clientKey"] = good
            if case.operation.path == "/createTask":
                case.body["task"] = dict(JSON_TASK)

    deep = {("POST", "/solve", 200), ("GET", "/balance", 200), ("GET", "/admin/status", 200)}
    total = _report(_run(schema, credentials, deepen), deep)
    print(f"agent: {total} generated cases")


# ---- collector -----------------------------------------------------------------------------


def test_collector_survives_generated_requests(tmp_path):
    harness = make_app(sqlite_url(tmp_path / "collector.db"))
    try:
        harness.apply(
            team_config(
                [
                    user_config("alice", [key_config("alice-web", balance="5.00")]),
                    user_config("bob", [key_config("bob-web", balance="1.00")]),
                ]
            )
        )
        user_token = harness.admin(
            "POST", "/admin/v1/tokens", json={"role": "user", "user_id": "alice", "label": "fuzz"}
        ).get_json()["secret"]
        schema = schemathesis.openapi.from_wsgi("/openapi.json", harness.app)

        def role(case):
            return harness.fleet_token if case.operation.path.startswith("/agent/") else None

        credentials = [
            lambda case: {"Authorization": f"Bearer {role(case) or harness.admin_token}"},
            lambda case: {"Authorization": f"Bearer {role(case) or user_token}"},
            lambda case: {"Authorization": f"Bearer {harness.admin_token}"},
            lambda case: {},
        ]

        def deepen(case):
            params = case.path_parameters or {}
            if "key_id" in params:
                # Deletes go to bob's key: alice's must live on for the other deep answers.
                delete = case.operation.method.upper() == "DELETE"
                params["key_id"] = "bob-web" if delete else "alice-web"
            if "user_id" in params:
                params["user_id"] = "alice"
            if isinstance(case.body, dict) and "user_id" in case.body:
                case.body["user_id"] = "alice"
            if isinstance(case.query, dict) and "key_id" in case.query:
                case.query["key_id"] = "alice-web"

        deep = {
            ("POST", "/admin/v1/keys", 201),
            ("POST", "/admin/v1/keys/{key_id}/topup", 200),
            ("DELETE", "/admin/v1/keys/{key_id}", 200),
            ("POST", "/admin/v1/apply", 200),
            ("GET", "/admin/v1/log", 200),
            ("POST", "/agent/v1/sync", 200),
            ("POST", "/agent/v1/usage", 200),
        }
        total = _report(_run(schema, credentials, deepen), deep)
        print(f"collector: {total} generated cases")
    finally:
        harness.db.close()


# ---- the harness itself can fail ---------------------------------------------------------


def test_a_server_error_fails_the_run():
    app = Flask("broken")

    @app.get("/boom")
    def boom():
        return jsonify(error="internal", message="boom"), 500

    document = {
        "openapi": "3.1.0",
        "info": {"title": "broken", "version": "1"},
        "paths": {
            "/boom": {
                "get": {
                    "responses": {
                        "500": {
                            "description": "documented, and still a server error",
                            "content": {"application/json": {"schema": {"type": "object"}}},
                        }
                    }
                }
            }
        },
    }
    schema = schemathesis.openapi.from_dict(document)
    schema.app = app  # in-process, like from_wsgi
    with pytest.raises(FailureGroup) as failed:
        _run(schema, [lambda case: {}], lambda case: None)
    assert [type(e) for e in failed.value.exceptions] == [ServerError]
