"""Fuzzing both apps' Flask test clients with hostile values (tests/support/hostile.py) in
every field of every body, query and path: never a 5xx, and a refused call changes nothing.
Small example counts keep this in seconds; derandomized so a failure reproduces."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from solverfleet.textcheck import text_problem
from tests.support.collector import event, key_config, make_app, sqlite_url, team_config
from tests.support.fake_collector import fake_collector, fake_worker  # noqa: F401
from tests.support.hostile import as_url_part, hostile_number, hostile_text, hostile_value, query
from tests.unit.test_agent_app import BODY, env, ready  # noqa: F401

pytestmark = pytest.mark.unit
fuzz = settings(
    derandomize=True,
    deadline=None,
    max_examples=300,  # 1-4 s a test in process; enough to find the past 500s again
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# (method, path, body): every admin and agent-protocol body a caller can send; a hostile
# value replaces one field at a time.
COLLECTOR_BODIES: list[tuple[str, str, dict[str, Any]]] = [
    ("POST", "/admin/v1/keys/alice-web/topup", {"amount": "1.00", "reason": "r"}),
    ("PATCH", "/admin/v1/keys/alice-web", {"project": "p", "environment": "e",
                                           "allowed_types": ["turnstile"], "cpm": 5,
                                           "ip_allowlist": ["10.0.0.0/8"],
                                           "expires_at": None, "refill": None}),
    ("POST", "/admin/v1/keys", {"user_id": "alice", **key_config("alice-2")}),
    ("POST", "/admin/v1/keys/alice-web/rotate", {"grace_seconds": 60}),
    ("POST", "/admin/v1/tokens", {"role": "user", "user_id": "alice", "label": "l"}),
    ("POST", "/admin/v1/apply?dry_run=1", team_config()),
    ("POST", "/agent/v1/sync", {"agent_id": "a1", "instance": "i", "release": "r",
                                "config_version": 1, "watch": ["alice-web"],
                                "leases": [{"kind": "balance", "key_id": "alice-web",
                                            "want": 1000}]}),
    ("POST", "/agent/v1/release", {"agent_id": "a1", "instance": "i", "leases": []}),
    ("POST", "/agent/v1/usage", {"agent_id": "a1", "events": [event()]}),
]  # fmt: skip
COLLECTOR_QUERIES: list[tuple[str, tuple[str, ...]]] = [
    ("/admin/v1/usage", ("key_id", "limit")),
    ("/admin/v1/audit", ("limit", "cursor", "actor", "since", "until")),
    ("/admin/v1/log", ("limit", "cursor", "key_id", "since", "until")),
    ("/admin/v1/reports/team", ("since", "until")),
    ("/admin/v1/keys/alice-web/transactions", ("limit",)),
]
COLLECTOR_PATHS = [
    ("GET", "/admin/v1/keys/{}"),
    ("POST", "/admin/v1/keys/{}/deactivate"),
    ("POST", "/admin/v1/users/{}/activate"),
    ("POST", "/admin/v1/tokens/{}/revoke"),
    ("GET", "/dashboard/keys/{}"),
]


@pytest.fixture(scope="module")
def collector(tmp_path_factory):
    h = make_app(sqlite_url(tmp_path_factory.mktemp("fuzz") / "c.db"))
    h.apply(team_config())
    return h


def _state(h) -> tuple:
    """What a refused call must leave as it was: keys (balances, leases), users, tokens,
    usage totals, and the audit log (every admin change writes one)."""
    return tuple(
        h.admin("GET", path).get_data()
        for path in ("/admin/v1/keys", "/admin/v1/users", "/admin/v1/tokens",
                     "/admin/v1/summary", "/admin/v1/audit?limit=1")
    )  # fmt: skip


def _replace(body: Any, path: list, value: Any) -> Any:
    if not path:
        return value
    copy = dict(body) if isinstance(body, dict) else list(body)
    copy[path[0]] = _replace(copy[path[0]], path[1:], value)
    return copy


def _get(body: Any, path: list) -> Any:
    for step in path:
        body = body[step]
    return body


def _leaves(body: Any, path: list | None = None) -> list[list]:
    """Every field path in ``body``, containers included (a hostile list for a list too)."""
    path = path or []
    items = body.items() if isinstance(body, dict) else enumerate(body)
    found = [path] if path else []
    if isinstance(body, dict | list):
        for k, v in items:
            found += _leaves(v, [*path, k]) if isinstance(v, dict | list) else [[*path, k]]
    return found


def _hostile_for(data, original: Any) -> Any:
    """A hostile value for a field: anything, or (for text) the valid value with a hostile
    tail, which passes the format checks and so reaches the code behind them."""
    if isinstance(original, str) and data.draw(st.booleans()):
        return original + data.draw(hostile_text)
    return data.draw(hostile_value)


def _check(h, resp, before: tuple) -> tuple:
    assert resp.status_code < 500, resp.get_data(as_text=True)
    after = _state(h)
    if resp.status_code >= 400:
        assert after == before, resp.get_json()
    return after


@fuzz
@given(data=st.data())
def test_collector_bodies_never_5xx_and_refusals_change_nothing(collector, data) -> None:
    h = collector
    method, path, body = data.draw(st.sampled_from(COLLECTOR_BODIES))
    field = data.draw(st.sampled_from(_leaves(body)))
    value = _hostile_for(data, _get(body, field))
    new_key = data.draw(hostile_text) if data.draw(st.booleans()) and field else None
    changed = _replace(body, field, value)
    if new_key is not None and isinstance(changed, dict):
        changed = {**changed, new_key: value}  # an unknown (hostile) field name
    before = _state(h)
    call = h.agent if path.startswith("/agent") else h.admin
    raw = json.dumps(changed)  # ensure_ascii: lone surrogates travel as \\ud800 escapes
    resp = call(method, path, data=raw, content_type="application/json")
    _check(h, resp, before)


@fuzz
@given(data=st.data())
def test_collector_queries_never_5xx(collector, data) -> None:
    h = collector
    before = _state(h)
    path, names = data.draw(st.sampled_from(COLLECTOR_QUERIES))
    fields = {n: data.draw(st.one_of(hostile_text, hostile_number)) for n in names}
    _check(h, h.admin("GET", f"{path}?{query(fields)}"), before)


@fuzz
@given(data=st.data())
def test_collector_path_segments_never_5xx(collector, data) -> None:
    h = collector
    before = _state(h)
    method, template = data.draw(st.sampled_from(COLLECTOR_PATHS))
    value = data.draw(st.one_of(hostile_text, hostile_number, hostile_text.map("alice".__add__)))
    _check(h, h.admin(method, template.format(as_url_part(value) or "x")), before)


# ---- the agent: /solve and the 2captcha-style surface -----------------------------------------

COMPAT_FIELDS = ("method", "sitekey", "pageurl", "json", "soft_id", "body", "action", "data",
                 "textinstructions", "proxy", "userAgent", "min_score", "header_acao")  # fmt: skip
RES_FIELDS = ("action", "id", "ids", "json")


def _spooled(agent) -> list:
    """Count what the agent writes to its spool (what it charges) from here on."""
    appended: list = []
    original = agent.spool.append

    def append(event):
        appended.append(event)
        return original(event)

    agent.spool.append = append
    return appended


@fuzz
@given(data=st.data())
def test_agent_solve_never_5xx_and_refusals_charge_nothing(ready, data) -> None:  # noqa: F811
    spooled = getattr(ready, "fuzz_spooled", None) or _spooled(ready.agent)
    ready.fuzz_spooled = spooled
    field = data.draw(st.sampled_from(["type", "url", "params", "params.x", "extra"]))
    value = _hostile_for(data, BODY.get(field))
    body: dict[str, Any] = {**BODY, "params": {}}
    if field == "params.x":
        body["params"] = {"x": value}
    else:
        body[field] = value
    count = len(spooled)
    resp = ready.client.post(
        "/solve", data=json.dumps(body), content_type="application/json",
        headers={"X-API-Key": ready.secrets["alice-web"]},
    )  # fmt: skip
    assert resp.status_code < 500, resp.get_data(as_text=True)
    if resp.status_code >= 400:
        assert len(spooled) == count
    _assert_clean(spooled[count:])


def _assert_clean(events: list[dict]) -> None:
    """What the agent charged and will log, ship and show holds only valid text."""
    for e in events:
        for name, value in e.items():
            if isinstance(value, str):
                assert text_problem(value, multiline=name != "url") is None, (name, value)


@fuzz
@given(data=st.data())
def test_agent_compat_never_5xx_and_errors_charge_nothing(ready, data) -> None:  # noqa: F811
    spooled = getattr(ready, "fuzz_spooled", None) or _spooled(ready.agent)
    ready.fuzz_spooled = spooled
    page = data.draw(st.sampled_from(["/in.php", "/res.php"]))
    names = COMPAT_FIELDS if page == "/in.php" else RES_FIELDS
    fields: dict[str, Any] = (
        {"method": "turnstile", "sitekey": "0x4A", "pageurl": BODY["url"]}
        if page == "/in.php"
        else {"action": "get", "id": "1"}
    )
    name = data.draw(st.sampled_from(names))
    fields[name] = _hostile_for(data, fields.get(name, ""))
    if isinstance(fields[name], list | dict):
        fields[name] = json.dumps(fields[name])
    fields["key"] = ready.secrets["alice-web"]
    count = len(spooled)
    if data.draw(st.booleans()):
        resp = ready.client.get(f"{page}?{query(fields)}")
    else:
        resp = ready.client.post(page, data=query(fields),
                                 content_type="application/x-www-form-urlencoded")  # fmt: skip
    assert resp.status_code == 200, resp.get_data(as_text=True)  # the protocol's rule
    text = resp.get_data(as_text=True)
    if "ERROR" in text:
        assert len(spooled) == count, text
    _assert_clean(spooled[count:])
