"""X-Forwarded-For is believed only from trusted proxies, walked right to left."""

from __future__ import annotations

import pytest

from solverfleet.agent.clientip import client_ip, in_nets, parse_ip, parse_nets

LB = parse_nets(["198.51.100.0/24", "127.0.0.1/32", "fd00::/8"])


@pytest.mark.parametrize(
    ("peer", "xff", "trusted", "expected"),
    [
        ("203.0.113.9", None, LB, "203.0.113.9"),  # direct client
        ("203.0.113.9", "1.2.3.4", LB, "203.0.113.9"),  # untrusted peer: header ignored
        ("198.51.100.2", "203.0.113.9", LB, "203.0.113.9"),  # via our LB
        ("198.51.100.2", "1.2.3.4, 203.0.113.9", LB, "203.0.113.9"),  # client forged the left
        ("198.51.100.2", "203.0.113.9, 198.51.100.7", LB, "203.0.113.9"),  # two proxies of ours
        ("198.51.100.2", "198.51.100.7, 127.0.0.1", LB, "198.51.100.7"),  # all trusted: leftmost
        ("198.51.100.2", "evil, 203.0.113.9", LB, "203.0.113.9"),
        ("198.51.100.2", "203.0.113.9, junk", LB, "198.51.100.2"),  # our proxy wrote junk
        ("fd00::1", "2001:db8::7", LB, "2001:db8::7"),
        ("198.51.100.2", "203.0.113.9", (), "198.51.100.2"),  # no trusted proxies configured
    ],
)
def test_client_ip(peer, xff, trusted, expected):
    assert client_ip(peer, xff, trusted) == expected


def test_parse_ip_and_membership():
    nets = parse_nets(["10.0.0.0/8", "2001:db8::/32"])
    assert in_nets(parse_ip("10.9.9.9"), nets)
    assert in_nets(parse_ip("::ffff:10.0.0.1"), nets)  # IPv4-mapped counts as IPv4
    assert in_nets(parse_ip("2001:db8:1::1"), nets)
    assert not in_nets(parse_ip("11.0.0.1"), nets)
    assert not in_nets(parse_ip("garbage"), nets)
    assert parse_ip("garbage") is None


def test_bad_cidr_is_an_error():
    with pytest.raises(ValueError):
        parse_nets(["10.0.0.0/33"])
