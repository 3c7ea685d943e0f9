"""Stateful generated requests: sequences that follow the descriptions' OpenAPI links.

schemathesis builds a Hypothesis state machine from the links (a created key's id feeds its
get, patch, delete, top-up, rotate, flag and ledger calls; a created user's id its flags and a
new key; a created token's id its revocation; a created task's id its result and reports)
and sends each step in-process to the WSGI app, with the same checks as the stateless run.
Each run must have followed links: linked calls answered 200 for ids that an earlier step
created, so a run that never chains cannot pass.

Deterministic (derandomized, no example database) and bounded in examples and steps.
"""

from __future__ import annotations

import base64
import random
from collections import Counter

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from hypothesis.stateful import run_state_machine_as_test
from schemathesis.generation import GenerationMode

from solverfleet import keyhash
from solverfleet.collector import keys, tokens
from tests.integration.test_schemathesis import CHECKS, JSON_TASK
from tests.support.collector import key_config, make_app, sqlite_url, team_config, user_config
from tests.support.fake_collector import (  # noqa: F401
    agent_app,
    agent_settings,
    fake_collector,
    fake_worker,
    standard_setup,
)

pytestmark = pytest.mark.integration

SETTINGS = settings(
    max_examples=100,
    stateful_step_count=10,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)
LOOPBACK = {"environ_base": {"REMOTE_ADDR": "127.0.0.1"}}


def _machine(schema, fresh, credentials, deepen, produce, consume):
    """The schema's state machine with credentials, loopback, the stateless run's checks, and a
    tally of linked calls: `produce(case, response)` returns the id a call created (or None),
    `consume(case, response)` the id a call used with success (or None); a 2xx for a produced
    id counts.

    `fresh()` gives each scenario a new app state: Hypothesis replays scenarios, and one that
    met rows of an earlier scenario would draw differently (a flaky strategy)."""
    produced: set = set()
    linked: Counter = Counter()

    class Machine(schema.as_state_machine()):
        def setup(self):
            produced.clear()
            fresh()

        def before_call(self, case):
            headers = {k: v for k, v in (case.headers or {}).items() if k != "Authorization"}
            headers.update(credentials(case))
            case.headers = headers
            deepen(case, produced)

        def get_call_kwargs(self, case):
            return LOOPBACK

        def after_call(self, response, case):
            super().after_call(response, case)
            used = consume(case, response)
            if used is not None and used in produced and response.status_code < 300:
                linked[case.operation.label] += 1
            new = produce(case, response)
            if new is not None:
                produced.add(new)

        def validate_response(self, response, case, additional_checks=None, **kwargs):
            case.validate_response(response, checks=CHECKS)

    return Machine, linked


def _links_only(schema):
    """The described links only, not the ones schemathesis would infer (this tests ours), and
    valid requests only: chains start from things that got created; broken requests are the
    stateless run's (test_schemathesis), one step each."""
    schema.config.phases.stateful.inference.algorithms = []
    schema.config.generation.update(modes=[GenerationMode.POSITIVE])


# ---- collector -----------------------------------------------------------------------------

COLLECTOR_PRODUCERS = {
    ("POST", "/admin/v1/keys"): ("key", "id"),
    ("POST", "/admin/v1/users"): ("user", "id"),
    ("POST", "/admin/v1/tokens"): ("token", "id"),
}
# Each family of links, by what the linked operations' labels contain, and how many distinct
# linked operations of it must have answered a created id (which ones depends on the draws).
COLLECTOR_LINKED = {"{key_id}": 7, "{user_id}": 2, "{token_id}": 1, "POST /admin/v1/keys": 1}


def _assert_followed(linked: Counter, families: dict[str, int]) -> None:
    for family, least in families.items():
        followed = [label for label in linked if family in label]
        assert len(followed) >= least, f"{family}: links followed {followed}; all: {linked}"


class _SeededSecrets:
    """`secrets` for the collector's modules, the same in every scenario: generated key ids and
    secrets come back in answers, and schemathesis feeds answers into later draws."""

    def __init__(self):
        self.random = random.Random()

    def token_hex(self, nbytes):
        return self.random.randbytes(nbytes).hex()

    def token_urlsafe(self, nbytes):
        return base64.urlsafe_b64encode(self.random.randbytes(nbytes)).rstrip(b"=").decode()


def test_collector_follows_links(tmp_path, monkeypatch):
    current: dict = {}
    scenarios = iter(range(1_000_000))
    seeded = _SeededSecrets()
    for module in (keyhash, keys, tokens):
        monkeypatch.setattr(module, "secrets", seeded)

    def fresh():
        seeded.random.seed(0)
        if "harness" in current:
            current["harness"].db.close()
        number = next(scenarios)
        harness = make_app(sqlite_url(tmp_path / f"collector-{number}.db"))
        harness.apply(team_config([user_config("alice", [key_config("alice-web")])]))
        current.update(harness=harness, users=iter(range(1_000_000)))

    def app(environ, start_response):
        return current["harness"].app(environ, start_response)

    fresh()
    try:
        # Only the linked resources: the stateless run covers the rest, and here every step
        # spent elsewhere is one less chance to follow a link.
        schema = schemathesis.openapi.from_wsgi("/openapi.json", app).include(
            path_regex=r"^/admin/v1/(keys|users|tokens)"
        )
        _links_only(schema)

        def credentials(case):
            harness = current["harness"]
            fleet = case.operation.path.startswith("/agent/")
            return {
                "Authorization": f"Bearer {harness.fleet_token if fleet else harness.admin_token}"
            }

        def deepen(case, produced):
            body = case.body if isinstance(case.body, dict) else None
            if body is None:
                return
            # A fresh, well-formed user in the team's account: its id then feeds the links.
            if (case.method.upper(), case.path) == ("POST", "/admin/v1/users"):
                body.update(id=f"user{next(current['users'])}", account="acme")
            # A key for a user that exists; a user created by an earlier step stays.
            create_key = (case.method.upper(), case.path) == ("POST", "/admin/v1/keys")
            if create_key and body.get("user_id") not in produced:
                body["user_id"] = "alice"

        def produce(case, response):
            field = COLLECTOR_PRODUCERS.get((case.method.upper(), case.path))
            if field is None or response.status_code != 201:
                return None
            kind, name = field
            return response.json()[kind][name]

        def consume(case, response):
            params = case.path_parameters or {}
            for name in ("key_id", "user_id", "token_id"):
                if name in params:
                    return params[name]
            if (case.method.upper(), case.path) == ("POST", "/admin/v1/keys"):
                return case.body.get("user_id") if isinstance(case.body, dict) else None
            return None

        machine, linked = _machine(schema, fresh, credentials, deepen, produce, consume)
        run_state_machine_as_test(machine, settings=SETTINGS)
        print(f"collector linked calls: {sorted(linked.items())}")
        _assert_followed(linked, COLLECTOR_LINKED)
    finally:
        current["harness"].db.close()


def _json(response) -> dict:
    """The answer's JSON object, or {} (these protocols also answer text)."""
    try:
        answer = response.json()
    except ValueError:
        return {}
    return answer if isinstance(answer, dict) else {}


# ---- agent ---------------------------------------------------------------------------------

AGENT_LINKED = {"/getTaskResult": 1, "/report": 3, "/res.php": 1}


def test_agent_follows_links(agent_app):  # noqa: F811
    app, secrets = agent_app
    good = secrets["alice-web"]
    # The task protocols only; the agent's state (tasks, balances) outlives a scenario, and
    # nothing a scenario draws depends on it.
    schema = schemathesis.openapi.from_wsgi("/openapi.json", app).include(
        path_regex=r"^/(createTask|getTaskResult|report|in\.php|res\.php)"
    )
    _links_only(schema)

    def deepen(case, produced):
        # A valid key and task, so tasks get created and their ids feed the links.
        if isinstance(case.body, dict) and case.operation.path != "/createTask":
            case.body["clientKey"] = good
        if case.operation.path == "/createTask":
            case.body = {"clientKey": good, "task": dict(JSON_TASK)}
        if case.operation.path in ("/in.php", "/res.php"):
            case.query = {**(case.query or {}), "key": good, "json": "1"}
        if case.operation.path == "/res.php":
            case.query.setdefault("action", "get")
        if case.operation.path == "/in.php":
            case.query.update(method="turnstile", pageurl="https://shop.example/", sitekey="0x4A")

    def produce(case, response):
        answer = _json(response)
        if case.operation.path == "/createTask" and answer.get("errorId") == 0:
            return answer["taskId"]
        if case.operation.path == "/in.php" and answer.get("status") == 1:
            return int(answer["request"])
        return None

    def consume(case, response):
        answer = _json(response)
        if case.operation.path == "/res.php":
            value = (case.query or {}).get("id")
            found = answer.get("status") == 1 or answer.get("request") == "CAPCHA_NOT_READY"
        elif isinstance(case.body, dict) and case.operation.path != "/createTask":
            value = case.body.get("taskId")
            # A report answers "no such task" until the answer was delivered, which depends on
            # the worker's timing: a report counts for carrying the created id.
            report = case.operation.path.startswith("/report")
            found = report or answer.get("errorCode") != "ERROR_NO_SUCH_CAPCHA_ID"
        else:
            return None
        return int(value) if found and str(value).isdigit() else None

    machine, linked = _machine(schema, lambda: None, lambda case: {}, deepen, produce, consume)
    run_state_machine_as_test(machine, settings=SETTINGS)
    print(f"agent linked calls: {sorted(linked.items())}")
    _assert_followed(linked, AGENT_LINKED)
