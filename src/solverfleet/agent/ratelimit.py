"""``RateLimit-*`` headers on ``/solve`` (draft-ietf-httpapi-ratelimit-headers), from the
agent's own leases: no I/O, a few dict reads.

Two policies can apply to a call: the key's calls-per-minute ceiling (window 60 s, resets at
each UTC minute) and its user's daily limit (window 86400 s, resets at 00:00 UTC).
``RateLimit-Limit``/``-Remaining``/``-Reset`` describe the most constraining one: the fewest
calls remaining, and on a tie the later reset. ``RateLimit-Policy`` lists every policy that
applies (``30;w=60, 500;w=86400``). No policy (no CPM, no daily limit): no headers.

``Remaining`` is what this agent can admit now without asking the collector: the tokens of its
own lease for the window, capped by the limit less what it used. It never overstates what the
fleet has left; another agent may hold more, and this agent fetches more when it runs low.
"""

from __future__ import annotations

import math

from solverfleet.agent.keystore import Key, User
from solverfleet.agent.limiter import Limiter

MINUTE = 60
DAY = 86400


def _left(lease, ceiling: int, offline: bool) -> int:
    if lease is None:
        return 0
    return max(0, lease.available(ceiling, offline and not lease.answered))


def headers(
    limiter: Limiter, key: Key, user: User, now: float, *, offline: bool = False
) -> dict[str, str]:
    """The headers for a ``/solve`` answer to ``key`` at ``now`` (unix seconds)."""
    policies = []  # (remaining, reset, limit, window)
    if key.cpm is not None:
        lease = limiter.cpm.get((key.id, int(now // MINUTE)))
        reset = max(1, math.ceil(MINUTE - now % MINUTE))
        policies.append((_left(lease, key.cpm, offline), reset, key.cpm, MINUTE))
    if user.daily_limit is not None:
        lease = limiter.daily.get((user.id, int(now // DAY)))
        reset = max(1, math.ceil(DAY - now % DAY))
        limit = user.daily_limit
        policies.append((_left(lease, limit, offline), reset, limit, DAY))
    if not policies:
        return {}
    remaining, reset, limit, _ = min(policies, key=lambda p: (p[0], -p[1]))
    return {
        "RateLimit-Limit": str(limit),
        "RateLimit-Remaining": str(remaining),
        "RateLimit-Reset": str(reset),
        "RateLimit-Policy": ", ".join(f"{p[2]};w={p[3]}" for p in policies),
    }
