"""Lease records: what this agent holds of a key's balance, a key's CPM window, a user's day.

Balance leases mirror the collector: ``held`` is the collector's lease remainder (it drops by
each success the collector ingests), ``unacked`` is this process's committed spend the
collector has not acknowledged yet, ``holds`` the in-flight calls; so
``available = held - unacked - holds``.

Count leases (CPM, daily) count tokens: ``granted`` sums the sync answers' ``granted`` deltas,
``used`` is local; the collector's ``held`` only caps what we believe (it drops to zero if the
collector reclaimed the lease). That works whether or not the collector decrements a daily
lease when it ingests a success.
"""

from __future__ import annotations

import datetime as dt

_EPOCH = dt.date(1970, 1, 1)
_DAY_CACHE: dict[int, str] = {}


def day_str(day: int) -> str:
    text = _DAY_CACHE.get(day)
    if text is None:
        text = _DAY_CACHE[day] = (_EPOCH + dt.timedelta(days=day)).isoformat()
    return text


def day_num(text: str) -> int:
    return (dt.date.fromisoformat(text) - _EPOCH).days


class Refusal:
    """Why admission failed; ``wait`` means a sync may still bring the missing lease."""

    __slots__ = ("code", "wait")

    def __init__(self, code: str, wait: bool) -> None:
        self.code = code
        self.wait = wait

    def __repr__(self) -> str:
        return f"Refusal({self.code!r}, wait={self.wait})"


CPM = "cpm_exceeded"
DAILY = "daily_limit_reached"
BALANCE = "insufficient_balance"
REFUSALS = {
    (code, wait): Refusal(code, wait) for code in (CPM, DAILY, BALANCE) for wait in (False, True)
}


class BalanceLease:
    __slots__ = (
        "answered",
        "cpm_period",
        "cpm_ref",
        "daily_period",
        "daily_ref",
        "daily_user",
        "demand",
        "demand_mark",
        "held",
        "holds",
        "last_demand",
        "price",
        "rate",
        "starved",
        "unacked",
    )

    def __init__(self) -> None:
        self.held = 0  # collector's lease remainder, as of the last answer and acks
        self.unacked = 0  # committed by this process, not yet acknowledged by the collector
        self.holds = 0  # in-flight calls
        self.answered = False  # the collector answered a request for this lease
        self.starved = False  # ... and the last answer granted nothing
        self.last_demand = 0.0
        self.price = 0
        self.demand = 0  # micros admitted, ever (for the refill rate)
        self.demand_mark = 0
        self.rate = 0.0  # micros/s, decaying max
        # Hot-path cache: this key's CPM lease for cpm_period, its user's daily lease.
        self.cpm_period = -1
        self.cpm_ref: CountLease | None = None
        self.daily_period = -1
        self.daily_user = ""
        self.daily_ref: CountLease | None = None

    @property
    def available(self) -> int:
        return self.held - self.unacked - self.holds


class CountLease:
    __slots__ = (
        "answered",
        "demand",
        "demand_mark",
        "granted",
        "held",
        "holds",
        "last_demand",
        "rate",
        "returned",
        "starved",
        "used",
    )

    def __init__(self) -> None:
        self.granted = 0  # sum of grants this process received
        self.returned = 0
        self.used = 0  # tokens consumed (CPM: admitted calls; daily: successes)
        self.holds = 0  # daily tokens of in-flight calls
        self.held = 0  # collector's view of this lease
        self.answered = False
        self.starved = False
        self.last_demand = 0.0
        self.demand = 0
        self.demand_mark = 0
        self.rate = 0.0

    def available(self, ceiling: int, fallback: bool) -> int:
        """Tokens left; ``fallback`` (offline, never answered) enforces the ceiling locally."""
        cap = ceiling - self.used  # a lowered ceiling applies at once
        if fallback:
            return cap - self.holds
        unconsumed = self.granted - self.returned - self.used
        if self.held < unconsumed:  # the collector reclaimed part of the lease
            unconsumed = self.held
        return (cap if cap < unconsumed else unconsumed) - self.holds

    def exhausted(self, ceiling: int) -> bool:
        """No sync can help: the collector said the pool is empty, or the ceiling is ours."""
        return (self.answered and self.starved) or self.granted - self.returned >= ceiling


class Hold:
    __slots__ = ("balance", "daily", "done", "low", "price")

    def __init__(
        self, balance: BalanceLease, daily: CountLease | None, price: int, low: bool
    ) -> None:
        self.balance = balance
        self.daily = daily
        self.price = price
        self.done = False
        self.low = low  # a lease ran low: the caller should trigger a refill (off this path)
