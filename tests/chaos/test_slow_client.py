"""Fault 5: slow clients dribble their request bodies a few bytes at a time (slowloris).

The agent runs one gunicorn *gevent* worker (agent/gunicorn_conf.py): each connection is a
greenlet, so a client that takes seconds to send its body holds one greenlet, not the process.
While the dribblers are connected and inside the solve handler, other clients' solves keep
succeeding with latency close to the baseline measured in the same test.
"""

from __future__ import annotations

import time

import pytest

from tests.support.chaos import Dribbler, Load, Tracker, latency_percentile, wait_for
from tests.support.chaosledger import agent_status, assert_ledger
from tests.support.fleet import key, new_secret, team, user

pytestmark = [pytest.mark.chaos, pytest.mark.integration, pytest.mark.timeout(180)]

DRIBBLERS = 16
OPENING = "100.00"
P99_BOUND_S = 1.0  # generous: the worker answers at once (0 ms), baseline p99 is tens of ms


# SQLite only: the slow clients meet the agent's HTTP server, which never touches the store
# on the hot path; a MariaDB run would add time to a suite that must stay under ~4 minutes.
@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
def test_slow_clients_do_not_stall_others(fleet_factory):
    stack = fleet_factory(agents=1)  # worker latency 0 ms
    secret = new_secret("slow")
    with stack.admin_client() as admin:
        admin.apply(team(user("saul", key("saul-web", secret, OPENING))))
    stack.wait_for_key(secret)
    agent = stack.agent_url(0)
    tracker = Tracker("slowloris")
    # ~8 s per body (4 bytes every 0.25 s); bounded, like the load.
    dribblers = [
        Dribbler(tracker, agent, secret, chunk=4, interval=0.25, pad=40) for _ in range(DRIBBLERS)
    ]
    with Load(tracker, [agent], secret, clients=4, pace=0.02, expect={200}) as load:
        load.wait_successes(220, timeout=30, what="baseline load")
        baseline_end = time.monotonic()
        for d in dribblers:
            d.start()
        # In the handler: headers parsed, /solve waiting on the body (the load adds at most 4).
        wait_for(
            lambda: agent_status(stack, 0)["in_flight"] >= DRIBBLERS,
            timeout=10,
            what="the slow clients to be inside the agent's solve handler",
            guard=load.check,
        )
        window_start = time.monotonic()
        # The window: most of the dribble, while every slow client is still mid-body.
        wait_for(
            lambda: all(d.sent >= 0.75 * len(d.body) for d in dribblers),
            timeout=dribblers[0].duration + 30,
            what="the slow clients to send three quarters of their bodies",
            guard=load.check,
        )
        window_end = time.monotonic()
        still = [d for d in dribblers if d.is_alive() and d.sent < len(d.body)]
        assert len(still) == DRIBBLERS, "a slow client finished before the window closed"
        load.check()
    for d in dribblers:
        d.join(d.duration + 30)

    slow_urls = {d.url for d in dribblers}
    calls = [c for c in tracker.snapshot() if c.url not in slow_urls]
    baseline = [c for c in calls[20:] if c.started + c.elapsed <= baseline_end]  # minus warm-up
    during = [c for c in calls if c.started >= window_start and c.started + c.elapsed <= window_end]
    base_p50, base_p99 = (latency_percentile(baseline, q) for q in (0.5, 0.99))
    p50, p99 = (latency_percentile(during, q) for q in (0.5, 0.99))
    print(
        f"slow clients: {DRIBBLERS} dribbling {len(dribblers[0].body)} B bodies over "
        f"~{dribblers[0].duration:.0f} s; baseline {len(baseline)} calls p50 {base_p50 * 1000:.1f}"
        f" ms p99 {base_p99 * 1000:.1f} ms; while dribbling {len(during)} calls in "
        f"{window_end - window_start:.2f} s p50 {p50 * 1000:.1f} ms p99 {p99 * 1000:.1f} ms "
        f"max {max(c.elapsed for c in during) * 1000:.1f} ms; slow clients answered "
        f"{sorted({d.call.outcome for d in dribblers}, key=str)}"
    )
    assert len(during) >= 100, "other clients were not served while bodies dribbled"
    assert p99 < P99_BOUND_S
    assert all(d.call.outcome == 200 for d in dribblers), [d.call.error for d in dribblers]
    assert_ledger(stack, tracker, key_id="saul-web", opening=OPENING)
