"""Fault 1: ``kill -9`` an agent under load, ten times in a row, restarting it each time.

Every success the clients saw is billed exactly once, cut requests at most once, and nothing
else: the spool survives each crash and is replayed by the next process.
"""

from __future__ import annotations

import pytest
import requests

from tests.support.chaos import REFUSED, UNKNOWN, Load, Tracker, outcome_counts, wait_for
from tests.support.chaosledger import assert_ledger, spool_pending
from tests.support.fleet import key, new_secret, team, user

pytestmark = [pytest.mark.chaos, pytest.mark.integration, pytest.mark.timeout(240)]

KILLS = 10
OPENING = "500.00"


# Both stores (fleet_factory's store_url): replaying a crashed agent's spool re-sends events the
# collector may already hold, and the stores dedup them with different SQL.
def test_kill_9_ten_times_under_load(fleet_factory):
    stack = fleet_factory(agents=2, worker_latency_ms="5")
    secret = new_secret("kill9")
    with stack.admin_client() as admin:
        admin.apply(team(user("kim", key("kim-web", secret, OPENING))))
    stack.wait_for_key(secret)
    victim = stack.agent_url(0)
    tracker = Tracker("kill9")
    # 503: the restarted agent answers before its first sync; 402: a request that waited
    # longer than lease_wait for the new process's first lease.
    expect = {200, 402, 503, REFUSED, UNKNOWN}
    unshipped: list[int] = []  # usage each killed process left in its spool
    with Load(
        tracker, stack.urls["agents"], secret, clients=4, max_seconds=200, expect=expect
    ) as load:
        load.wait_successes(50, agent=victim, timeout=30, what="load on the victim")
        for n in range(KILLS):
            stack.kill_agent(0)
            unshipped.append(spool_pending(stack.agent_state_dir(0)))
            stack.start_agent(0)  # waits for /healthz, with the stack's deadline
            wait_for(
                lambda: requests.get(f"{victim}/readyz", timeout=2).ok,
                timeout=30,
                what=f"agent 0 ready after kill {n + 1}",
                guard=load.check,
            )
            load.wait_successes(20, agent=victim, timeout=30, what=f"successes after kill {n + 1}")
        load.check()
    print(
        f"kill -9 x{KILLS}: outcomes {outcome_counts(tracker.snapshot())}; "
        f"unshipped usage left in the spool at each kill {unshipped}"
    )
    assert sum(unshipped) > 0, "no kill caught usage before it shipped"
    report = assert_ledger(stack, tracker, key_id="kim-web", opening=OPENING)
    assert report.cut > 0 or tracker.count(REFUSED) > 0, "no kill hit the load"
