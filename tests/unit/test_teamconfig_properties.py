"""Team config properties: ``ENV:`` references, canonical networks and amounts, refusals of
what is out of range, and parse being idempotent and complete on any valid config. More
properties (any input, any text) are in test_properties.py."""

from __future__ import annotations

import ipaddress
import json
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from solverfleet import teamconfig
from solverfleet.money import to_micros
from solverfleet.teamconfig import TeamConfigError, parse
from tests.support.teamconfig import amounts, configs, networks, one_error, with_key

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
