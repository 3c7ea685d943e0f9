"""Team config parsing: both formats, the normalized form, every refusal with its path."""

from __future__ import annotations

import ipaddress
import json
from decimal import Decimal
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from solverfleet import teamconfig
from solverfleet.money import to_micros
from solverfleet.teamconfig import TeamConfigError, load_file, loads, parse

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
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
                }
            ],
        }
    ],
}

ENV = {"CAPTCHAAI_KEY_ALICE": SECRET}


def errors_of(data, env=None) -> list[str]:
    with pytest.raises(TeamConfigError) as info:
        parse(data, env=env)
    return info.value.errors


def one_error(data, env=None) -> str:
    errors = errors_of(data, env)
    assert len(errors) == 1, errors
    return errors[0]


def key(**fields):
    return {"id": "k1", **fields}


def with_key(prices=None, **fields):
    config = {"users": [{"id": "u1", "keys": [key(**fields)]}]}
    if prices is not None:
        config["prices"] = prices
    return config


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
            }
        ],
    }
    assert parse({}) == {"account": "default", "low_balance_alert": None, "prices": {}, "users": []}


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


# --- refusals -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"acount": "x"}, "acount: unknown field (did you mean 'account'?)"),
        (
            {"low_balance_alert": {"threshold": "1", "level": 2}},
            "low_balance_alert.level: unknown field",
        ),
        ({"users": [{"id": "u", "name": "x"}]}, "users[0].name: unknown field"),
        (
            {"users": [{"id": "u", "api_key": "sk_aaaaaaaaa", "project": "p"}]},
            "users[0].project: unknown field",
        ),
        (with_key(scret="x"), "users[0].keys[0].scret: unknown field (did you mean 'secret'?)"),
        (
            with_key(ip_allowlist=["10.0.0.0/33"]),
            "users[0].keys[0].ip_allowlist[0]: not a CIDR: '10.0.0.0/33'",
        ),
        (
            with_key(ip_allowlist=["10.0.0.1/8"]),
            "users[0].keys[0].ip_allowlist[0]: host bits set in '10.0.0.1/8' "
            "(did you mean 10.0.0.0/8?)",
        ),
        (
            with_key(ip_allowlist=["localhost"]),
            "users[0].keys[0].ip_allowlist[0]: not a CIDR: 'localhost'",
        ),
        (with_key(ip_allowlist=[10]), "users[0].keys[0].ip_allowlist[0]: not a CIDR: 10"),
        (with_key(ip_allowlist="10.0.0.0/8"), "users[0].keys[0].ip_allowlist: must be a list"),
        (with_key(ip_allowlist=["10.0.0.0/8", "10.0.0.0/8"]), "ip_allowlist[1]: duplicate network"),
        (with_key(balance="-1"), "users[0].keys[0].balance: amount must not be negative"),
        (
            with_key(balance="0.0000001"),
            "users[0].keys[0].balance: amount '0.0000001' has more than 6 decimal places",
        ),
        (
            with_key(balance=2.5),
            "users[0].keys[0].balance: "
            'must be a decimal string such as "2.5" (quoted), not a float',
        ),
        (with_key(balance="1e3"), "users[0].keys[0].balance: not a decimal amount: '1e3'"),
        (with_key(balance="NaN"), "not a decimal amount"),
        (
            with_key(balance=True),
            "users[0].keys[0].balance: amount must be a decimal string, not bool",
        ),
        (with_key(balance="9" * 40), "users[0].keys[0].balance: amount '" + "9" * 40 + "' is out"),
        ({"prices": {"t": "-0.001"}}, "prices.t: amount must not be negative"),
        ({"prices": {"bad type": "1"}}, "prices.bad type: not a captcha type name"),
        ({"prices": ["t"]}, "prices: must be a mapping"),
        (
            {"low_balance_alert": {"threshold": 5.0}},
            "low_balance_alert.threshold: must be a decimal string",
        ),
        (
            {"low_balance_alert": {"enabled": "yes"}},
            "low_balance_alert.enabled: must be true or false",
        ),
        (
            {"users": [{"id": "u", "role": "root"}]},
            "users[0].role: unknown role 'root' (one of admin, user, service)",
        ),
        ({"users": [{"id": "u", "role": ["admin"]}]}, "users[0].role: unknown role"),
        (
            {"users": [{"id": "u"}, {"id": "u"}]},
            "users[1].id: duplicate user id 'u' (also users[0])",
        ),
        (
            {"users": [{"id": "a", "keys": [{"id": "k"}]}, {"id": "b", "keys": [{"id": "k"}]}]},
            "users[1].keys[0].id: duplicate key id 'k' (also users[0].keys[0].id)",
        ),
        (
            {"users": [{"id": "k", "api_key": "sk_aaaaaaaaa"}, {"id": "b", "keys": [{"id": "k"}]}]},
            "users[1].keys[0].id: duplicate key id 'k' (also users[0].id)",
        ),
        (
            {"users": [{"id": "u", "daily_limit": 1.5}]},
            "users[0].daily_limit: must be a whole number, not 1.5",
        ),
        (
            {"users": [{"id": "u", "daily_limit": "100"}]},
            "users[0].daily_limit: must be a whole number, not '100'",
        ),
        (
            {"users": [{"id": "u", "daily_limit": True}]},
            "users[0].daily_limit: must be a whole number",
        ),
        (
            {"users": [{"id": "u", "daily_limit": -1}]},
            "users[0].daily_limit: must not be negative: -1",
        ),
        (with_key(cpm=-5), "users[0].keys[0].cpm: must not be negative: -5"),
        (with_key(cpm="120"), "users[0].keys[0].cpm: must be a whole number"),
        (with_key(cpm=10**12), "users[0].keys[0].cpm: too large"),
        (
            with_key({"t": "1"}, allowed_types=["t", "x"]),
            "users[0].keys[0].allowed_types[1]: type 'x' has no price (priced: t)",
        ),
        (with_key(allowed_types=["t", "t"]), "allowed_types[1]: duplicate type 't'"),
        (with_key(allowed_types="t"), "users[0].keys[0].allowed_types: must be a list"),
        (
            with_key(secret=12345678),
            "users[0].keys[0].secret: a secret must be a string, not a number",
        ),
        (with_key(secret=["x"]), "users[0].keys[0].secret: a secret must be a string, not a list"),
        (
            with_key(secret="short"),
            "users[0].keys[0].secret: a secret must have 8 to 512 characters",
        ),
        (with_key(secret="has a space in it"), "a secret must be printable ASCII without spaces"),
        ({"users": [{"id": "u", "api_key": 5}]}, "users[0].api_key: a secret must be a string"),
        (
            {"users": [{"id": "u", "api_key": "sk_aaaaaaaaa", "keys": []}]},
            "users[0]: give either api_key",
        ),
        ({"users": [{"email": "a@b.c"}]}, "users[0].id: required"),
        ({"users": [{"id": "a/b"}]}, "users[0].id: not a valid id: 'a/b'"),
        ({"users": [{"id": 42}]}, "users[0].id: must be a string, not a number"),
        ({"users": [{"id": "u", "email": "nope"}]}, "users[0].email: not an email address: 'nope'"),
        ({"users": [{"id": "u", "active": "no"}]}, "users[0].active: must be true or false"),
        ({"users": [{"id": "u", "keys": {"id": "k"}}]}, "users[0].keys: must be a list of keys"),
        ({"users": [{"id": "u", "keys": ["k"]}]}, "users[0].keys[0]: a key must be a mapping"),
        ({"users": {"id": "u"}}, "users: must be a list of users"),
        ({"users": ["u"]}, "users[0]: a user must be a mapping"),
        ({"account": ""}, "account: not a valid id: ''"),
        (["users"], "(top level): a team config must be a mapping, not a list"),
        (with_key(project=""), "users[0].keys[0].project: must be 1 to 128 printable characters"),
        (with_key(environment=3), "users[0].keys[0].environment: must be a string"),
    ],
)
def test_refusals_name_the_path(data, message):
    assert message in one_error(data)


def test_unresolved_env_reference():
    error = one_error(with_key(secret="ENV:SF_NOT_SET"), env={})
    assert error == "users[0].keys[0].secret: environment variable SF_NOT_SET is not set"


def test_env_none_refuses_any_env_reference():
    error = one_error(with_key(secret="ENV:CAPTCHAAI_KEY_ALICE"))
    assert error == (
        "users[0].keys[0].secret: ENV:CAPTCHAAI_KEY_ALICE is not resolved (no environment here)"
    )
    assert one_error({"account": "ENV:"}, env={}) == "account: empty ENV: reference"


def test_env_references_resolve_anywhere():
    env = {"ACCOUNT": "acme", "BAL": "3.5", "CIDR": "10.1.0.0/16"}
    data = {"account": "ENV:ACCOUNT", **with_key(balance="ENV:BAL", ip_allowlist=["ENV:CIDR"])}
    config = parse(data, env=env)
    assert config["account"] == "acme"
    assert config["users"][0]["keys"][0]["balance"] == "3.50"
    assert config["users"][0]["keys"][0]["ip_allowlist"] == ["10.1.0.0/16"]


def test_values_from_env_are_not_echoed_in_errors():
    env = {"BAL": "-7.77777", "KEY": "sk_ has a space, secret!"}
    errors = errors_of(with_key(balance="ENV:BAL", secret="ENV:KEY"), env=env)
    text = "\n".join(errors)
    assert "7.77777" not in text and "has a space" not in text
    assert "users[0].keys[0].balance: invalid amount" in text
    assert "(value of ENV:KEY)" in text


def test_secrets_are_never_echoed():
    bad = "sk_abc def-this-is-secret"
    text = str(TeamConfigError(errors_of(with_key(secret=bad))))
    assert "this-is-secret" not in text


def test_every_problem_is_reported_at_once():
    errors = errors_of(
        {"users": [{"id": "u", "role": "x", "daily_limit": -1, "keys": [key(cpm=-1)]}]}
    )
    assert errors == [
        "users[0].role: unknown role 'x' (one of admin, user, service)",
        "users[0].daily_limit: must not be negative: -1",
        "users[0].keys[0].cpm: must not be negative: -1",
    ]
    message = str(TeamConfigError(errors))
    assert message.startswith("3 problems:\n")


def test_unpriced_type_is_checked_against_valid_prices_only():
    # Broken prices are reported once; allowed_types is not blamed for them.
    errors = errors_of(with_key({"t": "-1"}, allowed_types=["t"]))
    assert errors == ["prices.t: amount must not be negative: '-1'"]


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


# --- properties -----------------------------------------------------------------------------

# Derandomized: the same examples every run (a CI failure reproduces locally); no deadline, so a
# slow machine cannot fail a test on timing alone.
prop = settings(derandomize=True, deadline=None, max_examples=150)

env_names = st.from_regex(r"[A-Z_][A-Z0-9_]{0,30}", fullmatch=True)
secrets = st.text(
    alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=8, max_size=80
)


@prop
@given(name=env_names, secret=secrets, other=env_names)
def test_env_reference_resolves_to_its_value(name, secret, other):
    config = parse(with_key(secret=f"ENV:{name}"), env={name: secret})
    assert config["users"][0]["keys"][0]["secret"] == secret
    if other != name:
        error = one_error(with_key(secret=f"ENV:{other}"), env={name: secret})
        assert error == f"users[0].keys[0].secret: environment variable {other} is not set"
    assert "is not resolved" in one_error(with_key(secret=f"ENV:{name}"), env=None)


@prop
@given(name=env_names, tail=st.text(max_size=80))
def test_a_secret_from_env_is_never_in_an_error(name, tail):
    secret = "zq~" + tail  # a marker no message contains, so a hit is a real leak
    env = {name: secret}
    for data in (with_key(secret=f"ENV:{name}"), with_key(secret=f"ENV:{name}", cpm=-1)):
        try:
            parse(data, env=env)
        except TeamConfigError as exc:
            assert "zq~" not in str(exc)


networks = st.one_of(
    st.tuples(st.ip_addresses(v=4), st.integers(0, 32)),
    st.tuples(st.ip_addresses(v=6), st.integers(0, 128)),
).map(lambda t: ipaddress.ip_network(f"{t[0]}/{t[1]}", strict=False))


@prop
@given(network=networks)
def test_any_network_is_accepted_canonically(network):
    config = parse(with_key(ip_allowlist=[str(network)]))
    assert config["users"][0]["keys"][0]["ip_allowlist"] == [str(network)]


@prop
@given(address=st.ip_addresses(), data=st.data())
def test_host_bits_are_refused_with_a_suggestion(address, data):
    prefix = data.draw(st.integers(0, address.max_prefixlen))
    network = ipaddress.ip_network(f"{address}/{prefix}", strict=False)
    text = f"{address}/{prefix}"
    if network.network_address == address:
        parse(with_key(ip_allowlist=[text]))
    else:
        assert f"(did you mean {network}?)" in one_error(with_key(ip_allowlist=[text]))


@prop
@given(address=st.ip_addresses(), extra=st.integers(1, 1000))
def test_prefix_too_long_is_not_a_cidr(address, extra):
    text = f"{address}/{address.max_prefixlen + extra}"
    assert one_error(with_key(ip_allowlist=[text])).endswith(f"not a CIDR: '{text}'")


amounts = st.decimals(min_value=0, max_value=10**9, places=6, allow_nan=False)


@prop
@given(amount=amounts)
def test_exact_amounts_round_trip(amount):
    text = format(amount, "f")
    canonical = parse(with_key(balance=text))["users"][0]["keys"][0]["balance"]
    assert to_micros(canonical) == to_micros(text)
    assert parse(with_key(balance=canonical))["users"][0]["keys"][0]["balance"] == canonical


@prop
@given(amount=amounts.filter(lambda d: d > 0))
def test_negative_amounts_are_refused(amount):
    error = one_error({"prices": {"t": format(-amount, "f")}})
    assert error.startswith("prices.t: amount must not be negative")


@prop
@given(amount=amounts, extra=st.integers(1, 9))
def test_more_than_six_places_is_refused(amount, extra):
    text = format(amount, "f") + ("0" if "." in format(amount, "f") else ".000000") + str(extra)
    assert "more than 6 decimal places" in one_error(with_key(balance=text))


@prop
@given(value=st.floats(allow_nan=True, allow_infinity=True))
def test_floats_are_refused(value):
    assert "not a float" in one_error(with_key(balance=value))


ids = st.from_regex(r"[a-z0-9][a-z0-9_.-]{0,10}", fullmatch=True)
types = st.sampled_from(["recaptcha-v2", "turnstile", "image-to-text"])


@st.composite
def configs(draw):
    user_ids = draw(st.lists(ids, unique=True, max_size=4))
    key_ids = iter(draw(st.lists(ids, unique=True, min_size=12, max_size=12)))
    prices = draw(st.dictionaries(types, amounts.map(lambda d: format(d, "f")), max_size=3))
    users = []
    for uid in user_ids:
        user = {"id": uid}
        if draw(st.booleans()):
            user["role"] = draw(st.sampled_from(teamconfig.ROLES))
        if draw(st.booleans()):
            user["daily_limit"] = draw(st.integers(0, 10**6))
        keys = []
        for _ in range(draw(st.integers(0, 3))):
            k = {"id": next(key_ids)}
            if draw(st.booleans()):
                k["balance"] = format(draw(amounts), "f")
            if prices and draw(st.booleans()):
                k["allowed_types"] = draw(st.lists(st.sampled_from(sorted(prices)), unique=True))
            if draw(st.booleans()):
                k["ip_allowlist"] = [
                    str(n) for n in draw(st.lists(networks, max_size=2, unique=True))
                ]
            if draw(st.booleans()):
                k["cpm"] = draw(st.integers(0, 10**6))
            keys.append(k)
        user["keys"] = keys
        users.append(user)
    return {"account": draw(ids), "prices": prices, "users": users}


@settings(derandomize=True, deadline=None, max_examples=60)
@given(config=configs())
def test_parse_is_idempotent_and_complete(config):
    once = parse(config)
    assert parse(once) == once
    assert parse(json.loads(json.dumps(once))) == once
    for user in once["users"]:
        assert set(user) == {"id", "email", "role", "daily_limit", "active", "keys"}
        for k in user["keys"]:
            assert set(k) == set(teamconfig.KEY_FIELDS)
            assert isinstance(k["balance"], str)
            Decimal(k["balance"])


def test_deep_nesting_is_an_error_not_a_crash():
    deep: list = []
    for _ in range(5000):
        deep = [deep]
    errors = errors_of({"users": deep})
    assert any("nested too deeply" in e for e in errors)
