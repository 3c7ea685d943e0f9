"""Team config parsing: both formats, the normalized form, defaults, canonical values, and the
file loader. Refusals are in test_teamconfig_errors.py, properties in
test_teamconfig_properties.py (and test_properties.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from solverfleet.teamconfig import TeamConfigError, load_file, loads, parse
from tests.support.teamconfig import with_key

EXAMPLES = Path(__file__).resolve().parents[2] / "dev" / "src" / "solverfleet_dev" / "examples"
SECRET = "sk_alice-secret-from-env-0123456789"

ISSUE_YAML = """\
account: acme
low_balance_alert: {enabled: true, threshold: "5.00"}
prices: {recaptcha-v2: "0.003", turnstile: "0.002", image-to-text: "0.001"}
users:
  - id: alice
    email: alice@example.com
    role: admin               # admin | user | service
    daily_limit: 1000         # successful solves per UTC day
    active: true
    keys:
      - id: alice-web
        secret: ENV:CAPTCHAAI_KEY_ALICE   # optional: generated if absent
        project: web
        environment: prod
        balance: "25.00"      # opening balance, used only when the key is created
        allowed_types: [recaptcha-v2, turnstile]   # absent: every priced type
        cpm: 120              # absent: no ceiling
        ip_allowlist: [127.0.0.0/8]                # absent: any address
        active: true
"""

ISSUE_NORMALIZED = {
    "account": "acme",
    "low_balance_alert": {"enabled": True, "threshold": "5.00", "webhooks": []},
    "prices": {"recaptcha-v2": "0.003", "turnstile": "0.002", "image-to-text": "0.001"},
    "default_price": None,
    "type_aliases": {},
    "prices_scope": "account",
    "users": [
        {
            "id": "alice",
            "email": "alice@example.com",
            "role": "admin",
            "daily_limit": 1000,
            "active": True,
            "keys": [
                {
                    "id": "alice-web",
                    "secret": SECRET,
                    "project": "web",
                    "environment": "prod",
                    "balance": "25.00",
                    "allowed_types": ["recaptcha-v2", "turnstile"],
                    "cpm": 120,
                    "ip_allowlist": ["127.0.0.0/8"],
                    "active": True,
                    "expires_at": None,
                    "refill": None,
                }
            ],
        }
    ],
}

ENV = {"CAPTCHAAI_KEY_ALICE": SECRET}


# --- accepted input -------------------------------------------------------------------------


def test_issue_example_normalizes_exactly():
    assert parse(yaml.safe_load(ISSUE_YAML), env=ENV) == ISSUE_NORMALIZED


def test_yaml_and_json_files_give_the_same_result(tmp_path):
    as_yaml = tmp_path / "team.yaml"
    as_yaml.write_text(ISSUE_YAML)
    as_json = tmp_path / "team.json"
    as_json.write_text(json.dumps(yaml.safe_load(ISSUE_YAML), indent=2))
    assert load_file(as_yaml, env=ENV) == load_file(as_json, env=ENV) == ISSUE_NORMALIZED


def test_seed_format_is_one_key_per_user():
    user = {"id": "alice", "api_key": "ENV:CAPTCHAAI_KEY_ALICE", "daily_limit": 1000}
    seed = {"users": [{**user, "role": "admin"}]}
    assert parse(seed, env=ENV) == {
        "account": "default",
        "low_balance_alert": None,
        "prices": {},
        "default_price": "0.003",  # the seed manager's default, made explicit
        "type_aliases": {},
        "prices_scope": "account",
        "users": [
            {
                "id": "alice",
                "email": None,
                "role": "admin",
                "daily_limit": 1000,
                "active": True,
                "keys": [
                    {
                        "id": "alice",
                        "secret": SECRET,
                        "project": None,
                        "environment": None,
                        "balance": "0",
                        "allowed_types": None,
                        "cpm": None,
                        "ip_allowlist": None,
                        "active": True,
                        "expires_at": None,
                        "refill": None,
                    }
                ],
            }
        ],
    }


def test_defaults_for_absent_and_null_values():
    config = parse({"users": [{"id": "u", "email": None, "keys": [{"id": "k", "cpm": None}]}]})
    user = config["users"][0]
    assert user == {
        "id": "u",
        "email": None,
        "role": "user",
        "daily_limit": None,
        "active": True,
        "keys": [
            {
                "id": "k",
                "secret": None,
                "project": None,
                "environment": None,
                "balance": "0",
                "allowed_types": None,
                "cpm": None,
                "ip_allowlist": None,
                "active": True,
                "expires_at": None,
                "refill": None,
            }
        ],
    }
    assert parse({}) == {
        "account": "default",
        "low_balance_alert": None,
        "prices": {},
        "default_price": None,  # our own format: no default price unless given
        "type_aliases": {},
        "prices_scope": "account",
        "users": [],
    }


def test_alert_defaults():
    assert parse({"low_balance_alert": {}})["low_balance_alert"] == {
        "enabled": True,
        "threshold": "0",
        "webhooks": [],
    }


def test_normalized_form_parses_to_itself():
    # The collector re-parses what the CLI sends, with env=None.
    assert parse(ISSUE_NORMALIZED) == ISSUE_NORMALIZED


def test_examples_parse(monkeypatch):
    team = load_file(EXAMPLES / "team.yaml", env={})
    assert team["account"] == "acme"
    keys = [k for u in team["users"] for k in u["keys"]]
    assert all(k["secret"] is None for k in keys)  # generated by the collector
    assert any(k["ip_allowlist"] and k["cpm"] for k in keys)
    for name in ("CAPTCHAAI_KEY_ALICE", "CAPTCHAAI_KEY_BOB", "CAPTCHAAI_KEY_CI"):
        monkeypatch.setenv(name, f"sk_{name.lower()}")
    seed = load_file(EXAMPLES / "team-seed.json")  # env defaults to os.environ
    assert [u["keys"][0]["secret"] for u in seed["users"]] == [
        "sk_captchaai_key_alice",
        "sk_captchaai_key_bob",
        "sk_captchaai_key_ci",
    ]


def test_seed_and_full_users_mix():
    config = parse(
        {
            "users": [
                {"id": "a", "api_key": "sk_aaaaaaaaaaaa"},
                {"id": "b", "keys": [{"id": "b-1"}]},
            ]
        }
    )
    assert [[k["id"] for k in u["keys"]] for u in config["users"]] == [["a"], ["b-1"]]


def test_amounts_are_canonical_strings():
    config = parse(with_key(balance=25), env=None)
    assert config["users"][0]["keys"][0]["balance"] == "25.00"
    prices = parse({"prices": {"a": "0.0030", "b": "0", "c": " 7.5 "}})["prices"]
    assert prices == {"a": "0.003", "b": "0", "c": "7.50"}


def test_cidrs_are_canonical():
    config = parse(with_key(ip_allowlist=["127.0.0.1", "10.0.0.0/8", "2001:DB8::/32"]))
    assert config["users"][0]["keys"][0]["ip_allowlist"] == [
        "127.0.0.1/32",
        "10.0.0.0/8",
        "2001:db8::/32",
    ]


def test_allowed_types_unchecked_without_prices():
    config = parse(with_key(allowed_types=["anything"]))
    assert config["users"][0]["keys"][0]["allowed_types"] == ["anything"]


def test_yaml_flow_mapping_that_is_not_json():
    assert loads("{users: [{id: a}]}") == {"users": [{"id": "a"}]}


# --- files ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty document"),
        ("   \n", "empty document"),
        ('{"users": [}', "invalid JSON at line 1 column 12: Expecting value"),
        (
            '{\n  "users": [\n    {"id": "a" "role": "x"}\n  ]\n}',
            "invalid JSON at line 3 column 16",
        ),
        ("users:\n  - id: a\n   bad: [", "invalid YAML at line"),
        ("users: []\nusers: []\n", "duplicate key 'users' at line 2 column 1"),
        ('{"users": [], "users": []}', "duplicate key 'users'"),
        ("just a string", "(top level): a team config must be a mapping, not a string"),
    ],
)
def test_file_errors(tmp_path, text, message):
    path = tmp_path / "team.yaml"
    path.write_text(text)
    with pytest.raises(TeamConfigError) as info:
        load_file(path, env={})
    assert str(info.value).startswith(f"{path}: ")
    assert message in str(info.value)


def test_missing_and_binary_files(tmp_path):
    with pytest.raises(TeamConfigError, match="cannot read: No such file"):
        load_file(tmp_path / "nope.yaml")
    binary = tmp_path / "team.bin"
    binary.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(TeamConfigError, match="not UTF-8"):
        load_file(binary)


def test_load_file_prefixes_each_problem(tmp_path):
    path = tmp_path / "t.yaml"
    path.write_text("users: [{id: u, role: x, daily_limit: -1}]")
    with pytest.raises(TeamConfigError) as info:
        load_file(path)
    assert all(e.startswith(f"{path}: users[0].") for e in info.value.errors)
