"""Talking leases with the collector: what to ask for, what to give back, applying answers.

A mixin of ``Limiter`` (it works on the limiter's leases under the limiter's lock). Busy leases
are topped up before they run dry, sized by demand (``lease_calls`` calls or
``lease_seconds`` of observed spend); idle or revoked ones are returned so other agents can use
them; an answer that grants nothing marks the lease starved, so the hot path refuses at once
instead of waiting for a sync that cannot help, unless the collector is reclaiming slack from
other agents for it (then the hot path waits, bounded, for the next grant). A reclaim order
from the collector (another agent is short, or a limit changed) hands the lease's unspent part
back at once; it is returned, with ``settle``, in the next sync.
"""

from __future__ import annotations

import math
import threading
from itertools import chain, islice
from typing import Any

from solverfleet.agent.keystore import Key, Snapshot, User
from solverfleet.agent.leases import BalanceLease, CountLease, day_num, day_str

DEMAND_RECENT = 10.0  # s: a lease with demand this recent is kept topped up
RATE_PERIOD = 1.0  # s over which demand rates are measured
MAX_LEASES_PER_SYNC = 5000  # the collector refuses more than 10,000 in one sync


class LeaseNegotiation:
    _lock: threading.Lock
    balance: dict[str, BalanceLease]
    cpm: dict[tuple[str, int], CountLease]
    daily: dict[tuple[str, int], CountLease]
    lease_calls: int
    lease_seconds: float
    _asked: dict[tuple[str, str, int], int]
    _urgent: set[tuple[str, str, int]]  # asks made when the lease could not serve one call
    _mark_time: float | None
    _pruned: tuple[int, int]
    _returning: list[str]  # balance returns in the request being built / in flight
    _unsure: set[str]  # keys whose return's fate is unknown (the sync failed)
    _handbacks: list[dict[str, Any]]  # answers to reclaim orders, for the next sync

    def lease_requests(self, snap: Snapshot, now: float, idle_after: float) -> list[dict[str, Any]]:
        """The ``leases`` list of the next sync: refills for busy leases, returns for idle ones.

        Returned amounts leave the local lease at once, so a return can never be spent twice.
        """
        with self._lock:
            # Rates are measured over >= 1 s: triggered rounds come at any spacing.
            elapsed = 0.0
            if self._mark_time is None or now < self._mark_time:
                self._mark_time = now
            elif now - self._mark_time >= RATE_PERIOD:
                elapsed, self._mark_time = now - self._mark_time, now
            self._asked = {}
            self._urgent = set()
            self._returning = []
            handbacks = self._handbacks[:MAX_LEASES_PER_SYNC]
            del self._handbacks[:MAX_LEASES_PER_SYNC]
            # A lease handed back is not asked for again in the same sync: the grant would
            # undo the return the starved agent is waiting for.
            handed = {(h["kind"], h.get("key_id") or h.get("user_id")) for h in handbacks}
            self._returning = [h["key_id"] for h in handbacks if h["kind"] == "balance"]
            # Lazily, so items past the cap are never produced (returns deduct when produced);
            # they come in the next round.
            items = chain(
                handbacks,
                self._balance_requests(snap, now, elapsed, idle_after, handed),
                self._count_requests(snap, now, elapsed, idle_after, handed),
            )
            return list(islice(items, MAX_LEASES_PER_SYNC))

    def _balance_requests(
        self, snap: Snapshot, now: float, elapsed: float, idle_after: float, handed: set
    ):
        # A return whose sync failed may or may not have reached the collector: ask for the
        # lease's true size (want 0) rather than guess; the answer's held_micros settles it.
        for key_id in sorted(self._unsure):
            if key_id in self.balance:
                yield {"kind": "balance", "key_id": key_id, "want_micros": 0,
                       "min_micros": 0, "return_micros": 0}  # fmt: skip
        for key_id, bal in self.balance.items():
            if ("balance", key_id) in handed:
                continue
            recent = now - bal.last_demand <= DEMAND_RECENT
            available = bal.held - bal.unacked - bal.holds
            if not recent and available <= 0:
                continue  # quiet and empty: the common case among many keys, keep it cheap
            if elapsed:
                _update_rate(bal, elapsed)
            key = snap.keys.get(key_id)
            if key is None or not key.active or now - bal.last_demand > idle_after:
                if available > 0:
                    bal.held -= available
                    self._returning.append(key_id)
                    yield {"kind": "balance", "key_id": key_id, "want_micros": 0,
                           "min_micros": 0, "return_micros": available}  # fmt: skip
                continue
            if not recent or not bal.price:
                continue
            # Also at least what is in flight now: in a burst the lease doubles each round
            # instead of trailing the rate estimate.
            target = max(
                self.lease_calls * bal.price, int(bal.rate * self.lease_seconds), bal.holds
            )
            if bal.answered and bal.starved and 0 < available < bal.price:
                # A sliver the pool could not complete: give it back, so that with several
                # agents each holding part of the last call's price, one of them can get it all.
                bal.held -= available
                self._returning.append(key_id)
                yield {"kind": "balance", "key_id": key_id, "want_micros": 0,
                       "min_micros": 0, "return_micros": available}  # fmt: skip
                continue
            if available < bal.price or available * 2 < target:
                want = target - available
                # The least grant worth having: what one more call lacks. A plain `price` would
                # strand a remainder below one price for good: the collector refuses the
                # sliver that would complete it, so the key's last call could never be spent.
                least = bal.price - available if 0 < available < bal.price else bal.price
                self._asked["balance", key_id, 0] = want
                item = {"kind": "balance", "key_id": key_id, "want_micros": want,
                        "min_micros": least, "return_micros": 0}  # fmt: skip
                yield self._mark_urgent(item, ("balance", key_id, 0), available < bal.price)

    def _count_requests(
        self, snap: Snapshot, now: float, elapsed: float, idle_after: float, handed: set
    ):
        window, today = int(now // 60), int(now // 86400)
        if window != self._pruned[0]:  # old windows and days go once, when the period turns
            for ident in [i for i in self.cpm if i[1] < window]:
                del self.cpm[ident]
        for (key_id, period), lease in self.cpm.items():
            if now - lease.last_demand > DEMAND_RECENT or ("cpm", key_id) in handed:
                continue  # CPM leases are never returned: nothing to do without demand
            if elapsed:
                _update_rate(lease, elapsed)
            key = snap.keys.get(key_id)
            if key is None or key.cpm is None or not key.active:
                continue
            want = self._count_want(lease, key.cpm, starved_stops=True)
            if want:
                self._asked["cpm", key_id, period] = want
                item = {"kind": "cpm", "key_id": key_id, "window": period, "want": want}
                yield self._mark_urgent(
                    item, ("cpm", key_id, period), lease.available(key.cpm, False) < 1
                )
        if today != self._pruned[1]:
            for ident in [i for i, lease in self.daily.items() if i[1] < today and not lease.holds]:
                del self.daily[ident]
        self._pruned = (window, today)
        for (user_id, period), lease in self.daily.items():
            if ("daily", user_id) in handed:
                continue
            recent = now - lease.last_demand <= DEMAND_RECENT
            unconsumed = lease.granted - lease.returned - lease.used
            if lease.held < unconsumed:
                unconsumed = lease.held
            unconsumed -= lease.holds
            if not recent and unconsumed <= 0:
                continue
            if elapsed:
                _update_rate(lease, elapsed)
            user = snap.users.get(user_id)
            limit = None if user is None or not user.active else user.daily_limit
            if limit is None or now - lease.last_demand > idle_after:
                if unconsumed > 0:
                    lease.returned += unconsumed
                    lease.held -= unconsumed
                    yield {"kind": "daily", "user_id": user_id, "day": day_str(period),
                           "want": 0, "return": unconsumed}  # fmt: skip
                continue
            want = self._count_want(lease, limit, starved_stops=False) if recent else 0
            if want:
                self._asked["daily", user_id, period] = want
                item = {"kind": "daily", "user_id": user_id, "day": day_str(period),
                        "want": want, "return": 0}  # fmt: skip
                yield self._mark_urgent(
                    item, ("daily", user_id, period), lease.available(limit, False) < 1
                )

    def _mark_urgent(self, item: dict[str, Any], asked: tuple, urgent: bool) -> dict[str, Any]:
        """An ask made when the lease cannot serve one more call is *urgent*: only such an ask
        makes the collector reclaim slack from other agents (a routine refill taking back what
        a waiting agent was just granted would bounce it between them), and only its zero grant
        means starvation."""
        if urgent:
            self._urgent.add(asked)
            item["urgent"] = True
        return item

    def _count_want(self, lease: CountLease, ceiling: int, starved_stops: bool) -> int:
        if lease.granted - lease.returned >= ceiling or (starved_stops and lease.starved):
            return 0  # CPM pools never grow within a window; daily pools can (returns)
        available = lease.available(ceiling, False)
        target = min(ceiling, max(1, ceiling // 4, math.ceil(lease.rate * self.lease_seconds)))
        if available >= 1 and available * 2 >= target:
            return 0
        return max(1, min(target - available, ceiling - (lease.granted - lease.returned)))

    def apply_grants(self, grants: list[dict[str, Any]]) -> None:
        """Take the collector's answer to ``lease_requests`` (``held*`` is authoritative)."""
        with self._lock:
            asked, self._asked = self._asked, {}
            urgent, self._urgent = self._urgent, set()
            for grant in grants:
                kind = grant.get("kind")
                if kind == "balance":
                    key_id = grant["key_id"]
                    bal = self.balance.get(key_id)
                    if bal is None:
                        bal = self.balance[key_id] = BalanceLease()
                    bal.held = int(grant["held_micros"])
                    self._unsure.discard(key_id)
                    granted = int(grant.get("granted_micros") or 0)
                    if asked.pop(("balance", key_id, 0), 0):
                        bal.answered = True
                        bal.starved = _starved(grant, granted, ("balance", key_id, 0), urgent)
                    elif granted > 0:
                        bal.starved = False
                elif kind in ("cpm", "daily"):
                    if kind == "cpm":
                        ident = (grant["key_id"], int(grant["window"]))
                        table = self.cpm
                    else:
                        ident = (grant["user_id"], day_num(grant["day"]))
                        table = self.daily
                    lease = table.get(ident)
                    if lease is None:
                        lease = table[ident] = CountLease()
                    granted = int(grant.get("granted") or 0)
                    lease.granted += granted
                    lease.held = int(grant["held"])
                    if asked.pop((kind, ident[0], ident[1]), 0):
                        lease.answered = True
                        lease.starved = _starved(grant, granted, (kind, *ident), urgent)
            # Asked but not answered: the collector has nothing for it (unknown key, ...).
            for kind, ident, period in asked:
                lease = (
                    self.balance.get(ident)
                    if kind == "balance"
                    else (self.cpm if kind == "cpm" else self.daily).get((ident, period))
                )
                if lease is not None:
                    lease.answered = True
                    lease.starved = True

    def reclaim(self, orders: list[dict[str, Any]]) -> bool:
        """The collector's reclaim orders: take each lease's unspent part out of use now, to be
        returned (with ``settle``) in the next sync. True when there were orders."""
        with self._lock:
            for order in orders:
                kind = order.get("kind")
                if kind == "balance":
                    key_id = str(order["key_id"])
                    amount = 0
                    bal = self.balance.get(key_id)
                    if bal is not None:
                        amount = max(bal.held - bal.unacked - bal.holds, 0)
                        bal.held -= amount
                        bal.starved = False  # still answered: never the offline fallback
                    self._handbacks.append(
                        {
                            "kind": kind,
                            "key_id": key_id,
                            "want_micros": 0,
                            "min_micros": 0,
                            "return_micros": amount,
                            "settle": True,
                        }
                    )
                elif kind in ("cpm", "daily"):
                    if kind == "cpm":
                        ident = (str(order["key_id"]), int(order["window"]))
                        lease = self.cpm.get(ident)
                        item = {"kind": kind, "key_id": ident[0], "window": ident[1]}
                    else:
                        ident = (str(order["user_id"]), day_num(str(order["day"])))
                        lease = self.daily.get(ident)
                        item = {"kind": kind, "user_id": ident[0], "day": day_str(ident[1])}
                    amount = 0
                    if lease is not None:
                        amount = max(unconsumed(lease), 0)
                        lease.returned += amount
                        lease.held -= amount
                        lease.starved = False
                    self._handbacks.append({**item, "want": 0, "return": amount, "settle": True})
        return bool(orders)

    def refresh(self, old: Snapshot | None, new: Snapshot) -> None:
        """New key data: a lease the old data starved may be servable now (a top-up, a raised
        limit, a reactivation), so the next call waits for a sync instead of refusing."""
        if old is None:
            return
        with self._lock:
            self._drop_unlimited(old, new)
            for key_id, bal in self.balance.items():
                if bal.starved and _changed(old.keys.get(key_id), new.keys.get(key_id)):
                    bal.starved = False
            for (key_id, _), lease in self.cpm.items():
                if lease.starved and _changed(old.keys.get(key_id), new.keys.get(key_id)):
                    lease.starved = False
            for (user_id, _), lease in self.daily.items():
                if lease.starved and _changed(old.users.get(user_id), new.users.get(user_id)):
                    lease.starved = False

    def _drop_unlimited(self, old: Snapshot, new: Snapshot) -> None:
        """A limit set where there was none: tokens taken while unlimited were never recorded
        by the collector, so no reclaim can reach them. Drop those leases; the new limit counts
        from here, with leases the collector records."""
        # Only keys and users this agent holds leases of: never a walk over every key.
        keys = {k for k, _ in self.cpm if _now_limited(old.keys.get(k), new.keys.get(k))}
        users = {u for u, _ in self.daily if _now_limited(old.users.get(u), new.users.get(u))}
        if not keys and not users:
            return
        for ident in [i for i in self.cpm if i[0] in keys]:
            del self.cpm[ident]
        for ident in [i for i in self.daily if i[0] in users]:
            del self.daily[ident]
        for key_id, bal in self.balance.items():  # the hot path's cached references
            if key_id in keys:
                bal.cpm_period, bal.cpm_ref = -1, None
            if bal.daily_user in users:
                bal.daily_period, bal.daily_ref = -1, None

    def sync_failed(self) -> None:
        with self._lock:
            self._asked = {}
            self._urgent = set()
            self._unsure.update(self._returning)
            self._returning = []

    def release_all(self, now: float) -> list[dict[str, Any]]:
        """Everything unspent, for ``/agent/v1/release`` at shutdown; zeroes the local leases."""
        today = int(now // 86400)
        out: list[dict[str, Any]] = []
        with self._lock:
            for key_id, bal in self.balance.items():
                available = bal.held - bal.unacked - bal.holds
                if available > 0:
                    bal.held -= available
                    out.append({"kind": "balance", "key_id": key_id, "return_micros": available})
            for (user_id, period), lease in self.daily.items():
                left = unconsumed(lease)
                if period == today and left > 0:
                    lease.returned += left
                    lease.held -= left
                    day = day_str(period)
                    out.append({"kind": "daily", "user_id": user_id, "day": day, "return": left})
        return out


def _starved(grant: dict, granted: int, asked: tuple, urgent: set) -> bool:
    """Whether an answer means no sync can help now. Only an ask made when the lease could not
    serve one more call counts: a top-up refused while calls could still be served says
    nothing about the pool by the time they are spent. Nor does a reclaim under way."""
    return granted <= 0 and asked in urgent and not grant.get("reclaiming")


def unconsumed(lease: CountLease) -> int:
    """Tokens of a count lease neither used nor held by a call in flight (the collector's
    ``held`` caps what we believe)."""
    return min(lease.granted - lease.returned - lease.used, lease.held) - lease.holds


def _now_limited(old: Key | User | None, new: Key | User | None) -> bool:
    """A CPM ceiling (key) or daily limit (user) is set where the old data had none."""
    if old is None or new is None:
        return False
    if isinstance(old, Key) and isinstance(new, Key):
        return old.cpm is None and new.cpm is not None
    return old.daily_limit is None and new.daily_limit is not None  # type: ignore[union-attr]


def _changed(old: Key | User | None, new: Key | User | None) -> bool:
    """What a lease's pool depends on differs between two snapshots' records."""
    if old is None or new is None:
        return new is not None
    if isinstance(old, Key) and isinstance(new, Key):
        return (old.balance_micros, old.cpm, old.active) != (
            new.balance_micros,
            new.cpm,
            new.active,
        )
    return (old.daily_limit, old.active) != (new.daily_limit, new.active)  # type: ignore[union-attr]


def _update_rate(lease: BalanceLease | CountLease, elapsed: float) -> None:
    """Demand per second: rises at once with a burst, decays slowly after it."""
    if elapsed <= 0:
        return
    instant = (lease.demand - lease.demand_mark) / elapsed
    lease.demand_mark = lease.demand
    lease.rate = max(instant, lease.rate * 0.9)
