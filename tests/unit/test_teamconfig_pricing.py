"""Team config price section: the seed format's defaults, default_price, type aliases, scope."""

from __future__ import annotations

import pytest

from solverfleet.teamconfig import TeamConfigError, parse, parse_micros

SECRET = "sk_seed_secret_123"


def seed_user(user_id: str = "alice", **extra) -> dict:
    return {"id": user_id, "api_key": SECRET + user_id, **extra}


def errors(data: dict) -> list[str]:
    with pytest.raises(TeamConfigError) as info:
        parse(data)
    return info.value.errors


def test_seed_format_without_limits_gets_the_seed_managers_defaults():
    config = parse_micros({"users": [seed_user("alice"), seed_user("bob", daily_limit=7)]})
    assert [u["daily_limit"] for u in config["users"]] == [500, 7]
    assert config["default_price"] == 3000  # 0.003 per call, for any type
    assert parse({"users": [seed_user()]})["default_price"] == "0.003"


def test_seed_format_explicit_null_turns_a_default_off():
    config = parse({"users": [seed_user(daily_limit=None)], "default_price": None})
    assert config["users"][0]["daily_limit"] is None
    assert config["default_price"] is None
    assert parse({"users": [seed_user()], "default_price": "0.01"})["default_price"] == "0.01"


def test_our_format_has_no_magic_defaults():
    own = {"users": [{"id": "alice", "keys": [{"id": "k"}]}]}
    config = parse(own)
    assert config["users"][0]["daily_limit"] is None and config["default_price"] is None
    # A file mixing both user forms is not the seed's format: no defaults either.
    mixed = parse({"users": [seed_user(), {"id": "bob", "keys": []}]})
    assert mixed["default_price"] is None and mixed["users"][0]["daily_limit"] is None
    assert parse({**own, "default_price": "0.0025"})["default_price"] == "0.0025"


def test_normalized_seed_config_parses_to_itself():
    once = parse({"users": [seed_user()], "type_aliases": {"ts": "turnstile"}})
    assert parse(once) == once


def test_an_alias_prices_and_allows_its_canonical_type():
    config = parse(
        {
            "prices": {"cloudflare-turnstile": "0.002", "cf": "0.004"},
            "type_aliases": {"cf": "hcaptcha"},
            "users": [
                {
                    "id": "alice",
                    "keys": [{"id": "k", "allowed_types": ["cloudflare-turnstile", "turnstile"]}],
                }
            ],
        }
    )
    assert config["prices"] == {"turnstile": "0.002", "hcaptcha": "0.004"}
    assert config["users"][0]["keys"][0]["allowed_types"] == ["turnstile"]


def test_default_price_lets_any_type_be_allowed():
    data = {"prices": {"turnstile": "0.002"}, "users": [{"id": "a", "keys": [{"id": "k"}]}]}
    data["users"][0]["keys"][0]["allowed_types"] = ["geetest"]
    assert any("has no price" in e for e in errors(data))
    config = parse({**data, "default_price": "0.003"})
    assert config["users"][0]["keys"][0]["allowed_types"] == ["geetest"]


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        ({"prices": {"turnstile": "1", "cloudflare-turnstile": "2"}}, "both price 'turnstile'"),
        ({"type_aliases": {"cloudflare-turnstile": "x"}}, "built-in alias of 'turnstile'"),
        ({"type_aliases": {"a": "b", "b": "c"}}, "'b' is an alias itself"),
        ({"type_aliases": {"a": "cloudflare-turnstile"}}, "is an alias itself"),
        ({"type_aliases": {"a": "a"}}, "cannot name itself"),
        ({"type_aliases": {"a b": "x"}}, "not a captcha type name"),
        ({"type_aliases": ["a"]}, "must be a mapping"),
        ({"prices_scope": "world"}, "must be one of account, global"),
        ({"default_price": 0.003}, "not a float"),
        ({"default_price": "-1"}, "default_price"),
    ],
)
def test_bad_price_sections_are_refused_with_their_path(data, fragment):
    assert any(fragment in e for e in errors(data)), errors(data)


def test_prices_scope_defaults_to_the_account():
    assert parse({})["prices_scope"] == "account"
    assert parse({"prices_scope": "global"})["prices_scope"] == "global"
