"""``RateLimit-*`` headers on ``/solve`` (draft-ietf-httpapi-ratelimit-headers), from the
agent's own leases: no I/O, a few dict reads.

Two policies can apply to a call: the key's calls-per-minute ceiling (window 60 s, resets at
each UTC minute) and its user's daily limit (window 86400 s, resets at 00:00 UTC).
``RateLimit-Limit``/``-Remaining``/``-Reset`` describe the most constraining one: the fewest
calls remaining, and on a tie the later reset. ``RateLimit-Policy`` lists every policy that
applies (``30;w=60, 500;w=86400``). No policy (no CPM, no daily limit): no headers.

``Remaining`` is the limit less what this agent used (and holds) in the window, except when
the collector's pool is known to be empty (it granted nothing, or every token is ours): then it
is only what our own lease has left; on the 429 of that policy it is 0. Exact with one agent;
with several it can overstate by what the others used in the window (leases are shared out on
demand, so counting only our lease would understate and make clients wait for nothing). A
positive value is not a promise: a refusal is a 429 with ``Retry-After``.
"""

from __future__ import annotations

import math

from solverfleet.agent.keystore import Key, User
from solverfleet.agent.leases import CountLease
from solverfleet.agent.limiter import CPM, DAILY, Limiter

MINUTE = 60
DAY = 86400


def _left(lease: CountLease | None, ceiling: int, offline: bool, refused: bool) -> int:
    if refused:
        return 0
    if lease is None:
        return ceiling  # nothing used here in this window yet
    if offline or lease.exhausted(ceiling):  # no more to come from the pool
        return max(0, lease.available(ceiling, offline and not lease.answered))
    return max(0, ceiling - lease.used - lease.holds)


def headers(
    limiter: Limiter,
    key: Key,
    user: User,
    now: float,
    *,
    offline: bool = False,
    refused: str | None = None,
) -> dict[str, str]:
    """The headers for a ``/solve`` answer to ``key`` at ``now`` (unix seconds); ``refused``:
    the refusal code of this answer, if any (``cpm_exceeded`` shows 0 left for the CPM)."""
    policies = []  # (remaining, reset, limit, window)
    if key.cpm is not None:
        lease = limiter.cpm.get((key.id, int(now // MINUTE)))
        reset = max(1, math.ceil(MINUTE - now % MINUTE))
        left = _left(lease, key.cpm, offline, refused == CPM)
        policies.append((left, reset, key.cpm, MINUTE))
    if user.daily_limit is not None:
        lease = limiter.daily.get((user.id, int(now // DAY)))
        reset = max(1, math.ceil(DAY - now % DAY))
        limit = user.daily_limit
        policies.append((_left(lease, limit, offline, refused == DAILY), reset, limit, DAY))
    if not policies:
        return {}
    remaining, reset, limit, _ = min(policies, key=lambda p: (p[0], -p[1]))
    return {
        "RateLimit-Limit": str(limit),
        "RateLimit-Remaining": str(remaining),
        "RateLimit-Reset": str(reset),
        "RateLimit-Policy": ", ".join(f"{p[2]};w={p[3]}" for p in policies),
    }
