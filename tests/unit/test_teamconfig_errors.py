"""Team config refusals: every one names its path, ``ENV:`` references that do not resolve,
values from the environment and secrets never echoed, every problem reported at once."""

from __future__ import annotations

import pytest

from solverfleet.teamconfig import TeamConfigError, parse
from tests.support.teamconfig import errors_of, key, one_error, with_key

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


def test_deep_nesting_is_an_error_not_a_crash():
    deep: list = []
    for _ in range(5000):
        deep = [deep]
    errors = errors_of({"users": deep})
    assert any("nested too deeply" in e for e in errors)


@pytest.mark.parametrize(
    "data",
    [
        {"users": [{"id": "u1\n", "keys": [key()]}]},
        {"users": [{"id": "u1", "email": "a@b.example\n", "keys": [key()]}]},
        with_key(id="k1\n"),
        with_key(secret="s" * 31 + "\n"),
        with_key(allowed_types=["turnstile\n"], prices={"turnstile": "0.001"}),
        {"prices": {"turnstile\n": "0.001"}},
    ],
)
def test_a_trailing_newline_is_refused_not_kept(data):
    # "$" in a pattern matches before a final newline: every field is matched whole.
    assert errors_of(data)
