"""The solve machinery both public surfaces share: admission, the usage event, the balance view.

The native ``/solve`` (routes.py) and the 2captcha-style ``in.php``/``res.php`` (compat/routes.py)
go through the same functions here, so they enforce the same limits, take the same holds and
write the same usage event; only the answer format and the timing of the commit differ.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from solverfleet.agent import metrics, precheck
from solverfleet.agent.bans import BanList
from solverfleet.agent.keystore import Key, Snapshot, User
from solverfleet.agent.lifecycle import Agent
from solverfleet.agent.spool import Spool, SpoolError
from solverfleet.agent.usage import build_event

log = logging.getLogger(__name__)
BANNED_MESSAGE = "too many unknown API keys from this address; retry later"


def authenticate(
    bans: BanList, snap: Snapshot | None, secret: str | None, ip: str
) -> tuple[Key, User] | precheck.Decision:
    """Who is calling, the same on every client surface: a banned address is refused before
    the lookup (even with a valid key), then the key; an unknown key counts toward a ban (a
    missing one guesses nothing)."""
    retry = bans.retry_after(ip)
    if retry is not None:
        return precheck.Decision(precheck.BANNED, BANNED_MESSAGE, retry)
    if snap is None:
        return precheck.Decision("not_ready", "no key data from the collector yet")
    auth = precheck.authenticate(snap, secret)
    if isinstance(auth, precheck.Decision) and auth.code == "invalid_key" and secret:
        bans.failed(ip)
    return auth


def admit_waiting(
    agent: Agent, snap: Snapshot, secret: str, key: Key, user: User, slug: str, ip: str
) -> precheck.Decision:
    """Admit, waiting (up to lease_wait) for a sync when only a lease is missing."""
    deadline = time.monotonic() + agent.settings.lease_wait
    while True:
        decision = precheck.admit(
            snap, agent.limiter, key, user, slug, ip, agent.clock(),
            offline=agent.offline, allowance=agent.allowance,
        )  # fmt: skip
        if decision.allowed or not decision.wait:
            if decision.allowed and decision.hold is not None and decision.hold.low:
                agent.loop.trigger()  # refill off the hot path: the fleet loop does the call
            return decision
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            decision.wait = False
            metrics.LEASE_WAIT_TIMEOUTS.labels(decision.code).inc()
            return decision
        round_no = agent.loop.next_round()
        agent.loop.trigger()
        agent.loop.wait_round(round_no, remaining)
        if agent.keystore.snapshot is not snap:  # new key data arrived meanwhile: re-check it
            snap = agent.keystore.snapshot
            auth = precheck.authenticate(snap, secret)
            if isinstance(auth, precheck.Decision):
                return auth
            key, user = auth


def usage_event(agent_id: str, decision: precheck.Decision, **fields: Any) -> dict[str, Any]:
    """The usage event of an admitted call (``fields``: usage.build_event's, less the key,
    user and price the decision holds)."""
    assert decision.key is not None and decision.user is not None
    return build_event(
        agent_id=agent_id,
        key=decision.key,
        user=decision.user,
        cost_micros=decision.price,
        **fields,
    )


def spool_event(spool: Spool, event: dict[str, Any]) -> bool:
    """Put a usage event on disk before its answer leaves; False (logged) if the disk refused.

    Every surface charges only after this returned True, so a kill -9 cannot lose usage.
    """
    try:
        spool.append(event)
    except SpoolError as exc:
        metrics.SPOOL_ERRORS.inc()
        log.error("usage not recorded (%s); the call is not charged", exc.strerror)
        return False
    metrics.count_event(event)
    return True


def balance_micros(agent: Agent, key: Key) -> int:
    """What ``/balance`` shows: the pool outside our leases plus our own lease remainder."""
    agent.loop.watch(key.id)
    outside = agent.loop.balances.get(key.id)
    if outside is None and not agent.offline:  # first ask for this key: fetch it once
        round_no = agent.loop.next_round()
        agent.loop.trigger()
        agent.loop.wait_round(round_no, agent.settings.lease_wait)
        outside = agent.loop.balances.get(key.id)
    remainder = agent.limiter.remainder(key.id)
    if outside is None:  # still unknown: the snapshot's total minus our unshipped spend
        return key.balance_micros - agent.limiter.unacked(key.id)
    return outside + remainder
