"""Who is calling: the socket peer, or X-Forwarded-For when the peer is a trusted proxy.

Also turns address strings into ``(version, int)`` pairs, cached, so the pre-check's allowlist
test is integer arithmetic instead of ``ipaddress`` object churn.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable, Sequence

Net = tuple[int, int, int]  # (version, network int, mask int)
_CACHE: dict[str, tuple[int, int] | None] = {}
_CACHE_MAX = 65536


def parse_ip(text: str) -> tuple[int, int] | None:
    """``"10.1.2.3" -> (4, 167838211)``; IPv4-mapped IPv6 counts as IPv4; junk -> None."""
    hit = _CACHE.get(text)
    if hit is not None or text in _CACHE:
        return hit
    value: tuple[int, int] | None
    try:
        value = (4, int.from_bytes(socket.inet_pton(socket.AF_INET, text), "big"))
    except (OSError, ValueError):  # ValueError: an embedded NUL (a header can carry one)
        try:
            addr = ipaddress.IPv6Address(text.split("%", 1)[0])
        except ValueError:
            value = None
        else:
            mapped = addr.ipv4_mapped
            value = (4, int(mapped)) if mapped else (6, int(addr))
    if len(_CACHE) >= _CACHE_MAX:  # bounded: attackers choose source addresses
        _CACHE.clear()
    _CACHE[text] = value
    return value


def parse_nets(cidrs: Iterable[str]) -> tuple[Net, ...]:
    """CIDR strings -> integer ranges; raises ValueError on a bad CIDR."""
    nets = []
    for cidr in cidrs:
        net = ipaddress.ip_network(cidr.strip(), strict=False)
        nets.append((net.version, int(net.network_address), int(net.netmask)))
    return tuple(nets)


def in_nets(ip: tuple[int, int] | None, nets: Sequence[Net]) -> bool:
    if ip is None:
        return False
    version, value = ip
    for net_version, network, mask in nets:
        if net_version == version and value & mask == network:
            return True
    return False


def client_ip(remote_addr: str | None, forwarded_for: str | None, trusted: Sequence[Net]) -> str:
    """The first untrusted hop, walking X-Forwarded-For right to left from the socket peer.

    Only a trusted peer's header is believed; a hop that is not an IP address ends the walk at
    the proxy that wrote it, so a client cannot smuggle an address past our proxies.
    """
    current = remote_addr or ""
    if not forwarded_for or not trusted or not in_nets(parse_ip(current), trusted):
        return current
    for hop in reversed(forwarded_for.split(",")):
        hop = hop.strip()
        if parse_ip(hop) is None:
            return current
        current = hop
        if not in_nets(parse_ip(current), trusted):
            return current
    return current
