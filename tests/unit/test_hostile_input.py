"""Issue 17 section 1: hostile input gets a clear 4xx, fast, and changes nothing. One test (or
parametrized set) per class: deep nesting, invalid text, numbers out of range, YAML bombs,
quadratic work. The fuzzers that look for the next one are in test_hostile_fuzz.py."""

from __future__ import annotations

import time

import pytest

from solverfleet import jsonbody, safeyaml, teamconfig
from solverfleet.process import wait_until
from solverfleet.settings import SettingsError
from tests.support.collector import event, team_config
from tests.support.fake_collector import fake_collector, fake_worker  # noqa: F401
from tests.unit.test_agent_app import BODY, env, ready  # noqa: F401
from tests.unit.test_team_filter import team

pytestmark = pytest.mark.unit
pytest_plugins = ["tests.support.collector", "tests.support.mariadb"]

DEEP = 100_000
BOMB = "\n".join(
    ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    + [
        f"{c}: &{c} [{', '.join([f'*{p}'] * 9)}]"
        for p, c in zip("abcdefgh", "bcdefghi", strict=True)
    ]
)


def _deep(levels: int) -> str:
    return '{"a":' * levels + "1" + "}" * levels


def _balance(h) -> str:
    return h.admin("GET", "/admin/v1/keys/alice-web").get_json()["balance"]


def _error(response, status: int, fragment: str) -> None:
    assert response.status_code == status, response.get_data(as_text=True)
    assert fragment in response.get_json()["message"], response.get_json()


# ---- deep nesting ----------------------------------------------------------------------------


def test_deep_params_on_solve_are_a_400_naming_the_limit(ready) -> None:  # noqa: F811
    started = time.monotonic()
    raw = '{"type":"turnstile","url":"https://shop.example/","params":' + _deep(DEEP) + "}"
    key = ready.secrets["alice-web"]
    resp = ready.client.post(
        "/solve", data=raw, content_type="application/json", headers={"X-API-Key": key}
    )
    assert resp.status_code == 400, resp.get_data(as_text=True)
    assert "32 levels" in resp.json["message"]
    assert time.monotonic() - started < 2


@pytest.mark.parametrize("path", ["/admin/v1/keys/alice-web/topup", "/agent/v1/sync"])
def test_deep_bodies_at_the_collector_are_a_400_naming_the_limit(collector_app, path) -> None:
    h = collector_app
    h.apply(team_config())
    call = h.admin if path.startswith("/admin") else h.agent
    resp = call("POST", path, data=_deep(DEEP), content_type="application/json")
    _error(resp, 400, "deeper than 32 levels")
    assert _balance(h) == "10.00"


def test_deep_bodies_at_the_worker_are_a_400() -> None:
    from solverfleet.worker import WorkerSettings, create_app

    client = create_app(WorkerSettings(latency_ms="0")).test_client()
    raw = '{"type":"turnstile","params":' + _deep(DEEP) + "}"
    resp = client.post("/work", data=raw, content_type="application/json")
    assert resp.status_code == 400 and "32 levels" in resp.json["message"]


def test_depth_scan_ignores_brackets_inside_strings() -> None:
    assert jsonbody.loads('{"a": "[[[[{{{{\\"]]"}', max_depth=1) == {"a": '[[[[{{{{"]]'}
    with pytest.raises(jsonbody.BodyError, match="deeper than 2"):
        jsonbody.loads("[[[1]]]", max_depth=2)


# ---- text that is not valid text -------------------------------------------------------------


@pytest.mark.parametrize("reason", ["\ud800", "a\x00b", "bell\x07", "\x85next"])
def test_topup_reason_must_be_valid_text(collector_app, reason) -> None:
    h = collector_app
    h.apply(team_config())
    resp = h.admin(
        "POST", "/admin/v1/keys/alice-web/topup", json={"amount": "1.00", "reason": reason}
    )
    _error(resp, 400, "reason: contains a")
    assert _balance(h) == "10.00"


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/admin/v1/keys/alice%00web", 404),  # no id holds one: names nothing
        ("/admin/v1/usage?key_id=alice%00web", 400),
        ("/admin/v1/audit?actor=%01", 400),
    ],
)
def test_control_characters_in_paths_and_queries_are_a_4xx(collector_app, path, status) -> None:
    _error(collector_app.admin("GET", path), status, "control character")


def test_agent_protocol_ids_are_one_line(collector_app) -> None:
    h = collector_app
    h.apply(team_config())
    body = {"agent_id": "a1\n", "instance": "i", "leases": []}
    _error(h.agent("POST", "/agent/v1/sync", json=body), 400, "agent_id: contains a control")
    body = {"agent_id": "a1", "instance": "i", "watch": ["alice-web\x00"]}
    _error(h.agent("POST", "/agent/v1/sync", json=body), 400, "control character")


def test_usage_text_is_kept_but_never_raw(collector_app) -> None:
    # An event is already charged: its text is cleaned, not refused (the spool must move on).
    h = collector_app
    h.apply(team_config())
    assert h.usage([event(url="https://x/\x00<b>", message="one\ntwo\x1b[31m")])["accepted"] == 1
    row = h.admin("GET", "/admin/v1/usage").get_json()["events"][0]
    assert row["url"] == "https://x/\ufffd<b>" and row["message"] == "one\ntwo\ufffd[31m"


@pytest.mark.parametrize(
    "url", ["https://shop.example/\x00", "https://shop.example/\n", "https://shop.example/\ud800"]
)
def test_solve_url_with_control_characters_is_refused_and_not_charged(ready, url) -> None:  # noqa: F811
    resp = ready.solve(body={**BODY, "url": url})
    assert resp.status_code == 400, resp.get_data(as_text=True)
    assert resp.json["error"] == "bad_request" or resp.json["message"]
    assert ready.solve().status_code == 200  # a good call after it: the only event shipped
    wait_until(lambda: ready.collector.events, timeout=10, what="the good event")
    assert [e["url"] for e in ready.collector.events.values()] == [BODY["url"]]


@pytest.mark.parametrize(
    "query",
    ["method=turnstile&sitekey=0x4A&pageurl=https://shop.example/%00", "method=turn%01stile"],
)
def test_compat_fields_with_control_characters_are_bad_parameters(ready, query) -> None:  # noqa: F811
    key = ready.secrets["alice-web"]
    resp = ready.client.get(f"/in.php?key={key}&{query}")
    assert resp.get_data(as_text=True) == "ERROR_BAD_PARAMETERS"
    resp = ready.client.get(f"/res.php?key={key}&action=get&id=1%00")
    assert resp.get_data(as_text=True) == "ERROR_BAD_PARAMETERS"


@pytest.mark.parametrize(
    ("email", "problem"),
    [
        ("a\x00@b.example", "a control character (U+0000)"),
        ("a\ud800@b.example", "a lone surrogate (U+D800)"),
    ],
)
def test_team_config_text_must_be_valid(email, problem) -> None:
    config = team_config()
    config["users"][0]["email"] = email
    with pytest.raises(teamconfig.TeamConfigError) as caught:
        teamconfig.parse(config)
    assert caught.value.errors == [f"users[0].email: contains {problem} at position 1"]


# ---- numbers out of range --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("POST", "/admin/v1/tokens/99999999999999999999999/revoke", 404),
        ("POST", "/admin/v1/tokens/9223372036854775808/revoke", 404),
        ("GET", "/admin/v1/audit?cursor=9999999999999999999", 400),
        ("GET", "/admin/v1/audit?limit=" + "9" * 5000, 400),
        ("GET", "/admin/v1/usage?limit=%C2%B2", 400),  # "²".isdigit(), but int() refuses it
    ],
)
def test_out_of_range_numbers_in_urls_are_a_4xx(collector_app, method, path, status) -> None:
    resp = collector_app.admin(method, path)
    assert resp.status_code == status, resp.get_data(as_text=True)


@pytest.mark.parametrize("amount", [10**30, -(10**30), 1e999])
def test_out_of_range_numbers_in_bodies_are_a_400(collector_app, amount) -> None:
    h = collector_app
    h.apply(team_config())
    raw = '{"amount": %s, "reason": "x"}' % ("1e999" if amount == 1e999 else amount)
    resp = h.admin(
        "POST", "/admin/v1/keys/alice-web/topup", data=raw, content_type="application/json"
    )
    _error(resp, 400, "out of range")
    assert _balance(h) == "10.00"


# ---- YAML bombs ------------------------------------------------------------------------------


def test_alias_bomb_team_file_is_refused_fast(tmp_path) -> None:
    path = tmp_path / "team.yaml"
    path.write_text(BOMB)
    started = time.monotonic()
    with pytest.raises(teamconfig.TeamConfigError, match="aliases"):
        teamconfig.load_file(path, env={})
    assert time.monotonic() - started < 1


def test_deep_team_files_are_refused_not_a_crash() -> None:
    for text in ("[" * DEEP + "]" * DEEP, "a:\n" + "- [" * 50 + "]" * 50, "[" * DEEP):
        with pytest.raises(teamconfig.TeamConfigError, match=r"nested deeper|invalid"):
            teamconfig.loads(text)


def test_settings_file_refuses_aliases(tmp_path) -> None:
    from solverfleet.collector.settings import CollectorSettings

    path = tmp_path / "collector.yaml"
    path.write_text("fleet_token: &t abcdefgh\nadmin_token: *t\n")
    with pytest.raises(SettingsError, match="aliases"):
        CollectorSettings.load(env={"SOLVERFLEET_CONFIG": str(path)})


def test_oversized_yaml_is_refused_before_parsing() -> None:
    with pytest.raises(safeyaml.YamlRefused, match="over 10 bytes"):
        safeyaml.load("a: 12345678901", max_bytes=10)


def test_team_filter_refuses_an_expanded_alias_bomb() -> None:
    # Ansible's loader keeps aliases as shared references: a 9**9-value walk.
    value: list = ["lol"] * 9
    for _ in range(8):
        value = [value] * 9
    started = time.monotonic()
    answer = team.team_resolve({"account": "acme", "users": value}, env={})
    assert answer["config"] is None and "more than" in answer["errors"][0]
    assert time.monotonic() - started < 5


# ---- quadratic work --------------------------------------------------------------------------


def test_huge_allowlist_is_refused_fast_and_a_full_one_is_linear(collector_app) -> None:
    h = collector_app
    h.apply(team_config())
    cidrs = [f"10.{i // 65536 % 256}.{i // 256 % 256}.{i % 256}/32" for i in range(50_000)]
    started = time.monotonic()
    resp = h.admin("PATCH", "/admin/v1/keys/alice-web", json={"ip_allowlist": cidrs})
    _error(resp, 400, "ip_allowlist: more than 10000 items")  # any array in an admin body
    resp = h.admin("PATCH", "/admin/v1/keys/alice-web", json={"ip_allowlist": cidrs[:5000]})
    _error(resp, 400, "at most 1000 entries")  # an allowlist's own cap
    assert time.monotonic() - started < 2
    resp = h.admin("PATCH", "/admin/v1/keys/alice-web", json={"ip_allowlist": cidrs[:1000]})
    assert resp.status_code == 200, resp.get_json()
    resp = h.admin("PATCH", "/admin/v1/keys/alice-web", json={"ip_allowlist": cidrs[:2] * 2})
    _error(resp, 400, "duplicate network")


def test_any_array_in_an_admin_body_is_capped(collector_app) -> None:
    h = collector_app
    h.apply(team_config())
    body = {"amount": "1.00", "reason": "x", "junk": [0] * 10_001}
    resp = h.admin("POST", "/admin/v1/keys/alice-web/topup", json=body)
    _error(resp, 400, "more than 10000 items")
