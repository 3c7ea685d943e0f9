"""The filters behind playbooks/team.yml (playbooks/filter_plugins/solverfleet_team.py)."""

from __future__ import annotations

import importlib.util
from collections import UserString
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

_PATH = Path(__file__).resolve().parents[2] / "playbooks" / "filter_plugins" / "solverfleet_team.py"
_SPEC = importlib.util.spec_from_file_location("solverfleet_team_filter", _PATH)
team = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(team)

SECRET = "sk-unit-0123456789abcdef"


def config(**key):
    return {
        "account": "acme",
        "prices": {"turnstile": "0.002"},
        "users": [
            {
                "id": "dana",
                "keys": [
                    {"id": "dana-web", "secret": "ENV:UNIT_DANA_KEY", "balance": "1.00", **key},
                    {"id": "dana-gen"},
                ],
            },
            {"id": "seed", "api_key": None},
        ],
    }


@pytest.fixture(params=["teamconfig", "without solverfleet"])
def resolve(request, monkeypatch):
    """team_resolve on a controller with the solverfleet package, and on one without it."""
    if request.param != "teamconfig":
        monkeypatch.setattr(team, "teamconfig", None)
    return team.team_resolve


def test_resolves_env_references_from_the_given_environment(resolve) -> None:
    out = resolve(config(), env={"UNIT_DANA_KEY": SECRET})
    assert out["errors"] == [] and out["message"] == ""
    key = out["config"]["users"][0]["keys"][0]
    assert key["secret"] == SECRET
    assert out["without_secret"] == ["dana-gen", "seed"]


def test_unset_and_empty_references_are_named_and_nothing_is_returned(resolve) -> None:
    bad = config(project="ENV:")
    out = resolve(bad, env={})
    assert out["config"] is None and out["without_secret"] == []
    assert "users[0].keys[0].secret: environment variable UNIT_DANA_KEY is not set" in out["errors"]
    assert "users[0].keys[0].project: empty ENV: reference" in out["errors"]
    assert out["message"].startswith("solverfleet_team: 2 problem(s); nothing was sent")
    assert "\n  users[0].keys[0].secret: environment variable UNIT_DANA_KEY" in out["message"]


def test_resolves_from_the_process_environment_by_default(resolve, monkeypatch) -> None:
    monkeypatch.setenv("UNIT_DANA_KEY", SECRET)
    assert resolve(config())["config"]["users"][0]["keys"][0]["secret"] == SECRET


def test_a_config_that_is_not_a_mapping_is_refused(resolve) -> None:
    out = resolve([config()], env={})
    assert out["config"] is None
    assert out["errors"] == ["(top level): a team config must be a mapping, not a list"]


def test_with_solverfleet_the_whole_config_is_validated_without_showing_secrets() -> None:
    short = "sk-1"  # too short for a secret; its value must not appear in the message
    out = team.team_resolve(config(ip_allowlist=["10.0.0.0/33"]), env={"UNIT_DANA_KEY": short})
    assert out["config"] is None
    assert "users[0].keys[0].ip_allowlist[0]: not a CIDR: '10.0.0.0/33'" in out["errors"]
    assert any("secret must have 8 to 512 characters" in e for e in out["errors"]), out
    assert short not in out["message"]
    ok = team.team_resolve(config(), env={"UNIT_DANA_KEY": SECRET})["config"]
    assert ok["users"][0]["keys"][1]["balance"] == "0"  # normalized, as the CLI sends it


def test_templated_values_become_plain_python_values() -> None:
    class Tagged(UserString):  # stands in for Ansible's tagged strings
        pass

    plain = team._plain({Tagged("a"): [Tagged("x"), True, 3, 1.5, None, ("t",)]})
    assert plain == {"a": ["x", True, 3, 1.5, None, ["t"]]}
    assert type(next(iter(plain))) is str and type(plain["a"][0]) is str


def test_summary_lists_created_and_changed_objects() -> None:
    answer = {
        "created": [{"kind": "key", "id": "dana-web"}],
        "changed": [{"kind": "user", "id": "dana", "fields": ["daily_limit", "email"]}],
        "unchanged": [{"kind": "account", "id": "acme"}],
        "secrets": {"dana-web": SECRET},
        "config_version": 7,
    }
    lines = team.team_summary(answer)
    assert lines == [
        "1 created, 1 changed, 1 unchanged (config version 7)",
        "created: key dana-web",
        "changed: user dana (daily_limit, email)",
    ]
    assert team.team_summary(answer, dry_run=True) == [
        "would create 1, change 1; 1 unchanged",
        "would create: key dana-web",
        "would change: user dana (daily_limit, email)",
    ]
    assert SECRET not in "".join(lines)
    quiet = {"created": [], "changed": [], "unchanged": [{}, {}], "config_version": 7}
    assert team.team_summary(quiet) == [
        "nothing changed: all 2 objects already match (config version 7)"
    ]


def test_refusal_messages() -> None:
    invalid = {
        "status": 400,
        "json": {"error": "invalid_config", "message": "a; b", "errors": ["a", "b"]},
    }
    assert team.team_refusal(invalid, "dry run") == (
        "the collector refused the dry run: 400 invalid_config: 2 problems:\n  a\n  b\n"
        "Nothing was applied."
    )
    unauthorized = {"status": 401, "json": {"error": "unauthorized", "message": "bad token"}}
    assert "401 unauthorized: bad token (solverfleet_admin_token is not" in team.team_refusal(
        unauthorized
    )
    down = {"status": -1, "url": "http://127.0.0.1:8400/admin/v1/apply", "msg": "refused"}
    assert team.team_refusal(down) == (
        "no answer from the collector at http://127.0.0.1:8400/admin/v1/apply: refused\n"
        "Nothing was applied."
    )
    html = {"status": 502, "url": "u", "msg": "Bad Gateway", "content": "<html>"}
    assert team.team_refusal(html).startswith("HTTP 502 from the collector at u: Bad Gateway")
