"""Shared by the team config unit tests (tests/unit/test_teamconfig*.py, test_properties.py):
how a refusal is read, a one-key config builder, and Hypothesis strategies for networks,
amounts and whole valid configs."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import strategies as st

from solverfleet import teamconfig
from solverfleet.teamconfig import TeamConfigError, parse


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


networks = st.one_of(
    st.tuples(st.ip_addresses(v=4), st.integers(0, 32)),
    st.tuples(st.ip_addresses(v=6), st.integers(0, 128)),
).map(lambda t: ipaddress.ip_network(f"{t[0]}/{t[1]}", strict=False))

amounts = st.decimals(min_value=0, max_value=10**9, places=6, allow_nan=False)

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
