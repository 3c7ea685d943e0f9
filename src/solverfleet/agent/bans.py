"""Brute-force protection: an address that presents too many unknown keys is refused a while.

After ``threshold`` unknown keys within ``window`` seconds, an address is banned for
``duration`` seconds; a banned address is refused before its key is even looked up, so it
cannot keep guessing. IPv4 counts per address, IPv6 per /64 (one host's customary allocation:
counting single /128s would let a client rotate addresses for free).

Memory is bounded: ``max_ips`` entries in all, strike counters and bans together. Counters go
first when full (the one whose last failure is oldest), and a ban is evicted only when the
table holds nothing but bans (then the oldest, the nearest to expiry). So flooding the table
with distinct addresses washes out other addresses' *counters*, never a ban; evicting a ban
takes ``max_ips`` fresh bans, each earned with ``threshold`` unknown keys from its own address.

Never banned: loopback (someone on this host: the operator, the lab's own probes) and the
trusted proxies themselves (an address the client-IP walk stops at when a proxy sent no
``X-Forwarded-For``; banning it would refuse every client behind that proxy).
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable

from solverfleet.agent import metrics
from solverfleet.agent.clientip import Net, in_nets, parse_ip, parse_nets

log = logging.getLogger(__name__)
Key = tuple[int, int] | str
LOOPBACK = parse_nets(("127.0.0.0/8", "::1/128"))


def ban_key(ip: str) -> Key:
    """What an address counts as: ``(4, address)``, ``(6, /64 prefix)``, or the raw text."""
    parsed = parse_ip(ip)
    if parsed is None:
        return ip  # not an address (an odd peer): still counted, by its text
    return parsed if parsed[0] == 4 else (6, parsed[1] >> 64)


class BanList:
    def __init__(
        self,
        threshold: int,
        window: float,
        duration: float,
        max_ips: int,
        clock: Callable[[], float],
        exempt: tuple[Net, ...] = (),
    ) -> None:
        self.threshold = threshold  # 0: off
        self.window = window
        self.duration = duration
        self.max_ips = max_ips
        self._clock = clock
        self.exempt = LOOPBACK + tuple(exempt)
        # Both dicts keep insertion order: strikes by last failure, bans by expiry.
        self._strikes: dict[Key, list[float]] = {}
        self._bans: dict[Key, float] = {}
        self._lock = threading.Lock()  # failures only; the check reads without it

    def __len__(self) -> int:
        return len(self._strikes) + len(self._bans)

    @property
    def banned_count(self) -> int:
        return len(self._bans)

    def retry_after(self, ip: str) -> int | None:
        """Seconds until this address may call again, or None when it is not banned."""
        if not self._bans:  # the common case: nobody banned, no parsing, no lookup
            return None
        key = ban_key(ip)
        until = self._bans.get(key)
        if until is None:
            return None
        left = until - self._clock()
        if left <= 0:
            with self._lock:  # a failure may have re-banned it meanwhile
                if self._bans.get(key) == until:
                    del self._bans[key]
            return None
        return max(1, math.ceil(left))

    def failed(self, ip: str) -> bool:
        """Count one unknown key from ``ip``; True when this one got it banned."""
        if self.threshold <= 0 or in_nets(parse_ip(ip), self.exempt):
            return False
        key = ban_key(ip)
        now = self._clock()
        with self._lock:
            if self._bans.get(key, 0.0) > now:
                return False
            cutoff = now - self.window
            times = [t for t in self._strikes.pop(key, ()) if t > cutoff]
            times.append(now)
            if len(times) < self.threshold:
                self._strikes[key] = times  # re-inserted: now the newest
                self._make_room(now)
                return False
            self._bans.pop(key, None)  # an expired ban: re-insert at the end (expiry order)
            self._bans[key] = now + self.duration
            self._make_room(now)
        metrics.IP_BANS.inc()
        log.warning(
            "address banned after %d unknown keys within %g s",
            self.threshold,
            self.window,
            extra={"client_ip": ip, "ban_seconds": self.duration},
        )
        return True

    def _make_room(self, now: float) -> None:
        bans = self._bans
        while bans:  # expired bans first (the oldest expires first)
            first = next(iter(bans))
            if bans[first] > now:
                break
            del bans[first]
        while len(self._strikes) + len(bans) > self.max_ips:
            if self._strikes:
                del self._strikes[next(iter(self._strikes))]
            else:
                del bans[next(iter(bans))]
