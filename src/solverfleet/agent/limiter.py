"""The agent's limiter: credit leases and holds, checked and taken on the hot path.

Every number here is a slice the collector granted to this agent, so N agents together never
spend more than the key has. A passing pre-check *holds* the price (and a daily token); the
outcome commits (success) or releases (failure) the hold, so in-flight calls can never
overspend a lease. CPM tokens are consumed on admission: every worker call counts.

Shipping and syncing never overlap (one fleet loop), so every sync answer (``held``) and every
ack line up. One lock guards all state; nothing inside it does I/O or yields, so it is safe
under threads and gevent alike. The hot path (``admit``) is a few dict lookups and integer
operations; talking leases with the collector lives in negotiation.py.
"""

from __future__ import annotations

import threading

from solverfleet.agent.keystore import Key, User
from solverfleet.agent.leases import (
    BALANCE,
    CPM,
    DAILY,
    REFUSALS,
    BalanceLease,
    CountLease,
    Hold,
    Refusal,
    day_num,
    day_str,
)
from solverfleet.agent.negotiation import LeaseNegotiation, unconsumed

__all__ = ["BALANCE", "CPM", "DAILY", "Hold", "Limiter", "Refusal", "day_num", "day_str"]


class Limiter(LeaseNegotiation):
    def __init__(self, *, lease_calls: int = 20, lease_seconds: float = 5.0) -> None:
        self._lock = threading.Lock()
        self.lease_calls = lease_calls
        self.lease_seconds = lease_seconds
        self.balance: dict[str, BalanceLease] = {}
        self.cpm: dict[tuple[str, int], CountLease] = {}
        self.daily: dict[tuple[str, int], CountLease] = {}
        self._asked: dict[tuple[str, str, int], int] = {}  # (kind, id, period) -> want
        self._urgent: set[tuple[str, str, int]] = set()
        self._mark_time: float | None = None
        self._pruned = (-1, -1)  # (window, day) of the last pruning
        self._returning: list[str] = []
        self._unsure: set[str] = set()
        self._handbacks: list[dict] = []

    # ---- hot path -------------------------------------------------------------------------

    def admit(
        self, key: Key, user: User, price: int, now: float, offline: bool, allowance: int
    ) -> Hold | Refusal:
        """Check CPM, daily and balance in that order; on success take a token and hold.

        The hottest code in the agent: the balance lease caches references to the key's
        current CPM and daily leases so a call costs one dict lookup, not three.
        """
        with self._lock:
            bal = self.balance.get(key.id)
            if bal is None:
                bal = self.balance[key.id] = BalanceLease()
            # Note demand on every lease this call needs before refusing on any of them, so
            # one sync fetches all the missing ones.
            bal.last_demand = now
            bal.price = price
            cpm_lease = daily_lease = None
            if key.cpm is not None:
                window = int(now // 60)
                if bal.cpm_period == window:
                    cpm_lease = bal.cpm_ref
                else:
                    cpm_lease = self.cpm.get((key.id, window))
                    if cpm_lease is None:
                        cpm_lease = self.cpm[key.id, window] = CountLease()
                    bal.cpm_period, bal.cpm_ref = window, cpm_lease
                cpm_lease.last_demand = now
                cpm_lease.demand += 1
            if user.daily_limit is not None:
                day = int(now // 86400)
                if bal.daily_period == day and bal.daily_user == user.id:
                    daily_lease = bal.daily_ref
                else:
                    daily_lease = self.daily.get((user.id, day))
                    if daily_lease is None:
                        daily_lease = self.daily[user.id, day] = CountLease()
                    bal.daily_period, bal.daily_user, bal.daily_ref = day, user.id, daily_lease
                daily_lease.last_demand = now
                daily_lease.demand += 1
            cpm_left = daily_left = 0
            if cpm_lease is not None:
                ceiling = key.cpm
                cpm_left = cpm_lease.available(ceiling, offline and not cpm_lease.answered)
                if cpm_left < 1:
                    wait = not offline and not cpm_lease.exhausted(ceiling)
                    return REFUSALS[CPM, wait]
            if daily_lease is not None:
                limit = user.daily_limit
                daily_left = daily_lease.available(limit, offline and not daily_lease.answered)
                if daily_left < 1:
                    wait = not offline and not daily_lease.exhausted(limit)
                    return REFUSALS[DAILY, wait]
            available = bal.held - bal.unacked - bal.holds
            if available < price:
                # Unmet demand counts toward the refill size, so a burst is sized by what it
                # asked for rather than by the trickle the old lease let through.
                bal.demand += price
                if not offline:
                    return REFUSALS[BALANCE, not (bal.answered and bal.starved)]
                if price - available > allowance:  # overdraft past the offline allowance
                    return REFUSALS[BALANCE, False]
            low = (available - price) * 2 < self.lease_calls * price
            if cpm_lease is not None:
                cpm_lease.used += 1
                low = low or (cpm_left - 1) * 8 < key.cpm  # type: ignore[operator]
            if daily_lease is not None:
                daily_lease.holds += 1
                low = low or (daily_left - 1) * 8 < user.daily_limit  # type: ignore[operator]
            bal.holds += price
            bal.demand += price
            return Hold(bal, daily_lease, price, low)

    def commit(self, hold: Hold) -> None:
        """The call succeeded and its usage event is spooled: spend the hold."""
        self._settle(hold, spent=True)

    def release(self, hold: Hold) -> None:
        """The call failed (or was never recorded): give the hold back, nothing is charged."""
        self._settle(hold, spent=False)

    def _settle(self, hold: Hold, spent: bool) -> None:
        with self._lock:
            if hold.done:  # a hold settles once: release after commit is a no-op
                return
            hold.done = True
            hold.balance.holds -= hold.price
            if spent:
                hold.balance.unacked += hold.price
            if hold.daily is not None:
                hold.daily.holds -= 1
                if spent:
                    hold.daily.used += 1

    # ---- views ----------------------------------------------------------------------------

    def remainder(self, key_id: str) -> int:
        """This agent's unspent lease for a key (in-flight holds not yet spent)."""
        with self._lock:
            bal = self.balance.get(key_id)
            return 0 if bal is None else bal.held - bal.unacked

    def unacked(self, key_id: str) -> int:
        with self._lock:
            bal = self.balance.get(key_id)
            return 0 if bal is None else bal.unacked

    def leased_keys(self) -> list[str]:
        with self._lock:
            return [k for k, b in self.balance.items() if b.held or b.unacked or b.holds]

    def summary(self, now: float) -> dict[str, int]:
        """What this agent holds now, for the operator's status page (never the hot path):
        keys with a balance lease, their micros, and unconsumed CPM (this minute) and daily
        (today) tokens."""
        window, today = int(now // 60), int(now // 86400)
        keys = held = available = holds = 0
        with self._lock:
            for bal in self.balance.values():
                if bal.held or bal.unacked or bal.holds:
                    keys += 1
                held += bal.held
                available += max(0, bal.held - bal.unacked - bal.holds)
                holds += bal.holds
            cpm = sum(_tokens(lease) for (_, w), lease in self.cpm.items() if w == window)
            daily = sum(_tokens(lease) for (_, d), lease in self.daily.items() if d == today)
        return {
            "keys": keys,
            "held_micros": held,
            "available_micros": available,
            "in_flight_micros": holds,
            "cpm_tokens": cpm,
            "daily_tokens": daily,
        }

    # ---- fleet loop side (the rest is in negotiation.py) ------------------------------------

    def acked(self, spends: list[tuple[str, int]]) -> None:
        """The collector stored these successes (key id, cost) of this process."""
        with self._lock:
            for key_id, cost in spends:
                bal = self.balance.get(key_id)
                if bal is not None and cost:
                    bal.unacked -= cost
                    bal.held = max(0, bal.held - cost)


def _tokens(lease: CountLease) -> int:
    return max(0, unconsumed(lease))
