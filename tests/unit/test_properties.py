"""Properties of the parsers that face hostile input: the team config (any data, any text),
``ENV:`` references, the agent's CIDR allowlist matching, and the in.php parameters.

test_teamconfig*.py and test_agent_compat_methods.py hold the example-based tests and the first
properties (canonical CIDRs and amounts, JSON round trip, the parser never raising); these add
what they do not cover. Derandomized: the same examples every run, so a CI failure reproduces.
"""

from __future__ import annotations

import ipaddress
import re

import yaml
from flask import Flask
from hypothesis import given, settings
from hypothesis import strategies as st
from werkzeug.datastructures import MultiDict

from solverfleet.agent.clientip import client_ip, in_nets, parse_ip, parse_nets
from solverfleet.agent.compat.answers import BAD_PARAMETERS, GOOGLEKEY, PAGEURL, PARSE_ERRORS
from solverfleet.agent.compat.methods import TaskSpec, parse_task
from solverfleet.agent.compat.routes import _fields
from solverfleet.teamconfig import MAX_ERRORS, TeamConfigError, loads, parse
from tests.support.teamconfig import configs, networks, with_key

prop = settings(derandomize=True, deadline=None, max_examples=200)

# ---- team config: any input -----------------------------------------------------------------

FIELD_NAMES = ["account", "prices", "users", "low_balance_alert", "id", "email", "role",
               "daily_limit", "active", "keys", "secret", "balance", "allowed_types", "cpm",
               "ip_allowlist", "project", "environment", "enabled", "threshold", "webhooks",
               "url", "api_key"]  # fmt: skip
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(),
    st.text(max_size=20),
    st.sampled_from(["ENV:", "ENV:X", "1.5", "-1", "10.0.0.0/8", "10.0.0.1/8", "turnstile"]),
)
keys_ = st.one_of(st.sampled_from(FIELD_NAMES), st.text(max_size=8), st.integers(-3, 3))
junk = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(keys_, inner, max_size=5)),
    max_leaves=30,
)


def _paths(value, path=""):
    """Every location in ``value``, named the way the parser names them."""
    yield path
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _paths(v, f"{path}.{k}" if path else str(k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _paths(v, f"{path}[{i}]")


def _assert_path_qualified(errors, data):
    assert 1 <= len(errors) <= MAX_ERRORS
    known = set(_paths(data))
    for error in errors:
        where, sep, message = error.partition(": ")
        # A key holding ": " splits early; "(top level)" is how the parser names the root.
        while where not in known | {"(top level)"} and sep and ": " in message:
            more, sep, message = message.partition(": ")
            where = f"{where}: {more}"
        # A location in the input, or a required field missing under one.
        parent = re.sub(r"(\.[^.\[]*|\[\d+\])$", "", where)
        assert where == "(top level)" or where in known or parent in known, (error, known)
        assert message.strip(), error


def _mutated(config, data):
    """``config`` with one node swapped for junk: mostly valid, wrong in one place."""
    paths = [p for p in _paths(config) if p]
    if not paths:
        return config
    target = data.draw(st.sampled_from(paths))
    replacement = data.draw(junk)

    def walk(value, path=""):
        if path == target:
            return replacement
        if isinstance(value, dict):
            return {k: walk(v, f"{path}.{k}" if path else str(k)) for k, v in value.items()}
        if isinstance(value, list):
            return [walk(v, f"{path}[{i}]") for i, v in enumerate(value)]
        return value

    return walk(config)


def _parse_or_error(data, env=None):
    try:
        out = parse(data, env=env)
    except TeamConfigError as exc:
        _assert_path_qualified(exc.errors, data)
        return None
    assert isinstance(out, dict)
    assert parse(out) == out  # whatever it accepts is already normalized
    return out


@prop
@given(data=junk)
def test_any_data_gives_a_config_or_a_path_qualified_error(data):
    _parse_or_error(data, env={"X": "value-of-x"})


@settings(derandomize=True, deadline=None, max_examples=150)
@given(config=configs(), data=st.data())
def test_a_config_wrong_in_one_place_is_refused_there(config, data):
    _parse_or_error(_mutated(config, data))


@prop
@given(text=st.one_of(st.text(max_size=200), junk.map(lambda d: yaml.safe_dump(d)[:-3])))
def test_any_text_loads_to_data_or_a_clear_error(text):
    try:
        data = loads(text)
    except TeamConfigError as exc:
        assert len(exc.errors) == 1 and exc.errors[0]
        return
    _parse_or_error(data)


@settings(derandomize=True, deadline=None, max_examples=60)
@given(config=configs(), flow=st.booleans())
def test_a_valid_config_round_trips_through_yaml_text(config, flow):
    once = parse(config)
    text = yaml.safe_dump(once, default_flow_style=flow, sort_keys=False)
    assert parse(loads(text)) == once


# ---- ENV: references ------------------------------------------------------------------------

env_names = st.from_regex(r"[A-Z_][A-Z0-9_]{0,20}", fullmatch=True)
env_secrets = st.text(
    alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=8, max_size=40
)


@prop
@given(
    names=st.lists(env_names, min_size=1, max_size=5, unique=True),
    values=st.lists(env_secrets, min_size=5, max_size=5),
    present=st.lists(st.booleans(), min_size=5, max_size=5),
)
def test_every_missing_env_name_is_reported_at_its_path(names, values, present):
    env = {n: v for n, v, p in zip(names, values, present, strict=False) if p}
    keys = [{"id": f"k{i}", "secret": f"ENV:{n}"} for i, n in enumerate(names)]
    data = {"users": [{"id": "u1", "keys": keys}]}
    missing = [i for i, n in enumerate(names) if n not in env]
    if not missing:
        out = parse(data, env=env)
        assert [k["secret"] for k in out["users"][0]["keys"]] == [env[n] for n in names]
        return
    try:
        parse(data, env=env)
    except TeamConfigError as exc:
        assert exc.errors == [
            f"users[0].keys[{i}].secret: environment variable {names[i]} is not set"
            for i in missing
        ]
        for value in env.values():
            assert value not in str(exc)  # a resolved secret is never echoed
    else:
        raise AssertionError("missing ENV: names were accepted")


@prop
@given(name=env_names, network=networks)
def test_env_values_are_validated_like_literals(name, network):
    # An ENV: value is checked as if written in place; only its message hides it.
    direct = parse(with_key(ip_allowlist=[str(network)]))
    via_env = parse(with_key(ip_allowlist=[f"ENV:{name}"]), env={name: str(network)})
    assert via_env == direct


# ---- the agent's allowlist vs ipaddress -----------------------------------------------------

v4 = st.ip_addresses(v=4)
v6 = st.ip_addresses(v=6)
mapped = v4.map(lambda a: ipaddress.IPv6Address(f"::ffff:{a}"))
addresses = st.one_of(v4, v6, mapped)


def _truth(address, nets) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address.version == n.version and address in n for n in nets)


@prop
@given(
    nets=st.lists(networks, max_size=4),
    address=addresses,
    near=st.booleans(),
    data=st.data(),
)
def test_allowlist_matching_agrees_with_ipaddress(nets, address, near, data):
    if near and nets:
        # Often an address inside, or just outside, one of the networks: the edges matter.
        net = data.draw(st.sampled_from(nets))
        offset = data.draw(st.sampled_from([-1, 0, 1, net.num_addresses - 1, net.num_addresses]))
        value = int(net.network_address) + offset
        if 0 <= value < 2**net.max_prefixlen:
            address = (
                ipaddress.ip_address(value) if net.version == 4 else ipaddress.IPv6Address(value)
            )
    parsed = parse_nets([str(n) for n in nets])
    assert in_nets(parse_ip(str(address)), parsed) == _truth(address, nets)


@prop
@given(nets=st.lists(networks, min_size=1, max_size=3), text=st.text(max_size=30))
def test_junk_addresses_never_match(nets, text):
    try:
        ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        assert parse_ip(text) is None
        assert not in_nets(parse_ip(text), parse_nets([str(n) for n in nets]))


@prop
@given(network=networks, address=addresses)
def test_team_config_cidrs_mean_the_same_to_the_agent(network, address):
    # The collector stores the canonical form; the agent matches on it.
    stored = parse(with_key(ip_allowlist=[str(network)]))["users"][0]["keys"][0]["ip_allowlist"]
    assert in_nets(parse_ip(str(address)), parse_nets(stored)) == _truth(address, [network])


# ---- in.php parameters ----------------------------------------------------------------------

sitekeys = st.from_regex(r"[A-Za-z0-9_.:-]{1,40}", fullmatch=True)
pageurls = st.builds(
    lambda scheme, host: f"{scheme}://{host}.example/",
    st.sampled_from(["http", "https", "HTTPS"]),
    st.from_regex(r"[a-z0-9]{1,12}", fullmatch=True),
)
TOKEN_METHODS = {
    # method -> (slug, field carrying the site key, error when that field is bad)
    "userrecaptcha": ("recaptcha-v2", "googlekey", GOOGLEKEY),
    "hcaptcha": ("hcaptcha", "sitekey", BAD_PARAMETERS),
    "turnstile": ("turnstile", "sitekey", BAD_PARAMETERS),
    "funcaptcha": ("funcaptcha", "publickey", BAD_PARAMETERS),
}
padding = st.sampled_from(["", " ", "\t", "\n "])


@prop
@given(
    method=st.sampled_from(sorted(TOKEN_METHODS)),
    case=st.sampled_from([str.lower, str.upper, str.title]),
    sitekey=sitekeys,
    url=pageurls,
    pad=padding,
    extra=st.dictionaries(
        st.text(max_size=8).filter(lambda k: k != "version"), st.text(max_size=8), max_size=3
    ),
)
def test_token_methods_map_per_the_table(method, case, sitekey, url, pad, extra):
    slug, key_field, _ = TOKEN_METHODS[method]
    fields = {**extra, "method": pad + case(method) + pad, key_field: pad + sitekey + pad,
              "pageurl": url + pad}  # fmt: skip
    result = parse_task(fields)
    assert isinstance(result, TaskSpec), result
    assert (result.slug, result.url, result.params["sitekey"]) == (slug, url, sitekey)
    # Only the table's optional parameters travel to the worker, never e.g. the API key.
    assert set(result.params) - {"sitekey"} <= set(extra)
    assert "key" not in result.params


@prop
@given(
    method=st.sampled_from(sorted(TOKEN_METHODS)),
    sitekey=st.one_of(st.just(""), st.text(max_size=20)),
    url=st.one_of(pageurls, st.text(max_size=20)),
)
def test_a_bad_site_key_is_reported_before_a_bad_url(method, sitekey, url):
    _, key_field, key_error = TOKEN_METHODS[method]
    result = parse_task({"method": method, key_field: sitekey, "pageurl": url})
    key_ok = re.fullmatch(r"[A-Za-z0-9_.:-]{1,256}", sitekey.strip()) is not None
    url_ok = url.strip().lower().startswith(("http://", "https://"))
    if not key_ok:
        assert result == key_error
    elif not url_ok:
        assert result == PAGEURL
    else:
        assert isinstance(result, TaskSpec)


@prop
@given(
    fields=st.dictionaries(st.text(max_size=12), st.text(max_size=30), max_size=8),
    method=st.text(max_size=15),
)
def test_unknown_methods_are_bad_parameters(fields, method):
    known = {"userrecaptcha", "hcaptcha", "turnstile", "funcaptcha", "geetest", "post", "base64"}
    fields = {**fields, "method": method}
    result = parse_task(fields)
    if method.strip().lower() not in known:
        assert result == BAD_PARAMETERS
    else:
        assert isinstance(result, TaskSpec) or result in PARSE_ERRORS


def test_a_nul_in_an_address_is_junk_not_a_crash():
    # Regression: socket.inet_pton raises ValueError (not OSError) on an embedded NUL, so a
    # trusted proxy's X-Forwarded-For hop "\x00" made the agent answer 500.
    assert parse_ip("1.2.3.4\x00") is None
    trusted = parse_nets(["10.0.0.0/8"])
    assert client_ip("10.0.0.1", "203.0.113.7, \x00", trusted) == "10.0.0.1"


names = st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\x00"), max_size=8)
values = st.lists(
    st.text(alphabet=st.characters(codec="utf-8"), max_size=12), min_size=1, max_size=3
)


@prop
@given(
    query=st.dictionaries(names, values, max_size=4),
    form=st.dictionaries(names, values, max_size=4),
)
def test_in_php_fields_take_the_first_value_and_the_form_wins(query, form):
    app = Flask("fields")
    with app.test_request_context(
        "/in.php", method="POST", query_string=_multi(query), data=_multi(form)
    ):
        fields = _fields()
    expected = {name: vs[0] for name, vs in query.items()}
    expected.update({name: vs[0] for name, vs in form.items()})
    assert fields == expected


def _multi(values_by_name):
    return MultiDict([(name, v) for name, vs in values_by_name.items() for v in vs])
