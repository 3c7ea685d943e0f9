"""Fault 2: the collector is down for 60 s under load, then comes back.

While it is away the agents keep answering from their leases (200 until a lease is spent, then
402; nothing else), spooling usage. Once it is back every spooled event ships exactly once.
"""

from __future__ import annotations

import time

import pytest

from tests.support.chaos import Load, Tracker, outcome_counts, wait_for
from tests.support.chaosledger import assert_ledger, wait_leases
from tests.support.fleet import key, new_secret, team, user

pytestmark = [pytest.mark.chaos, pytest.mark.integration, pytest.mark.timeout(240)]

OUTAGE_S = 60.0  # issue 7 asks for a one-minute outage; everything else waits on conditions
OPENING = "500.00"


# SQLite only: the collector's store plays no part while the collector is down, and a MariaDB
# run would add another 60 s outage to a suite that must stay under ~4 minutes.
@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
def test_collector_down_for_a_minute_under_load(fleet_factory):
    # offline_grace defaults to 60 s: at the end of a 60 s outage the agents would (by design)
    # turn not-ready and answer 503. 120 s (still below the collector's 300 s lease TTL) keeps
    # this test about serving within leases, not about that cut-off.
    stack = fleet_factory(
        agents=2, worker_latency_ms="5", extra_agent_env={"SOLVERFLEET_OFFLINE_GRACE": "120"}
    )
    secret = new_secret("outage")
    with stack.admin_client() as admin:
        admin.apply(team(user("olga", key("olga-web", secret, OPENING))))
    stack.wait_for_key(secret)
    tracker = Tracker("outage")
    agents = stack.urls["agents"]
    # pace: ~50 requests/s per client is load enough and leaves CPU for the fleet.
    with Load(
        tracker,
        agents,
        secret,
        clients=4,
        pace=0.02,
        max_requests=40_000,
        max_seconds=200,
        expect={200, 402},
    ) as load:
        load.wait_successes(100, timeout=30, what="load before the outage")
        wait_leases(stack, load, calls=100)
        stack.stop_collector()
        down_at = time.monotonic()
        wait_for(
            lambda: time.monotonic() - down_at >= OUTAGE_S,
            timeout=OUTAGE_S + 5,
            interval=0.5,
            what="the outage to last its minute",
            guard=load.check,  # any answer but 200/402 while down fails at once
        )
        during = [c for c in tracker.snapshot() if c.started >= down_at]
        last_10s = [c for c in during if c.started >= down_at + OUTAGE_S - 10]
        stack.start_collector()
        up_at = time.monotonic()
        for agent in agents:  # both agents get fresh leases and serve again
            load.wait_successes(20, agent=agent, timeout=60, what=f"{agent} serving again")
        load.check()
    recovered = time.monotonic() - up_at
    served = sum(c.ok for c in during)
    print(
        f"collector down {OUTAGE_S:g} s: {len(during)} calls, outcomes {outcome_counts(during)}; "
        f"last 10 s {outcome_counts(last_10s)}; both agents serving {recovered:.1f} s after restart"
    )
    assert served > 0, "agents must keep serving within their leases while the collector is down"
    assert last_10s, "agents stopped answering during the outage"
    assert_ledger(stack, tracker, key_id="olga-web", opening=OPENING)
