"""Fault 4: the solver worker hangs. The agent gives up after ``worker_timeout`` (504
``worker_timeout``), charges nothing, and leaks nothing: its in-flight count and held credit
return to zero, and the key's whole balance can still be spent afterwards.

AgentSettings has no in-flight limit (the only cap is gunicorn's ``worker_connections``):
what a hung call occupies is an in-flight slot (``Agent.in_flight``, which a graceful stop
waits on, shown by ``/admin/status``) and a *hold* of its price on the key's lease
(``leases.in_flight_micros``). A leaked hold would leave part of the balance unspendable for
ever, so spending the tight key down to exactly zero afterwards proves none leaked.
"""

from __future__ import annotations

import threading

import pytest
import requests

from tests.support.chaos import Load, Tracker, wait_for
from tests.support.chaosledger import agent_status, assert_ledger, settle, usage_events
from tests.support.fleet import PRICE, balance, key, micros, new_secret, team, user

pytestmark = [pytest.mark.chaos, pytest.mark.integration, pytest.mark.timeout(180)]

WORKER_TIMEOUT_S = 3.0  # the agent's SOLVERFLEET_WORKER_TIMEOUT
HANG_MS = 9_000  # the worker's delay for the hung calls (params.demo.latency_ms): 3x longer
HUNG = 5  # concurrent hung calls
TIGHT = "0.20"  # 20 calls: the first lease (half the pool) covers all HUNG holds
STEADY = "100.00"


# SQLite only: timeouts, holds and in-flight counting are the agent's own and do not touch the
# store; a MariaDB run would add time to a suite that must stay under ~4 minutes.
@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
def test_worker_hang_times_out_charges_nothing_and_frees_slots(fleet_factory):
    stack = fleet_factory(
        agents=1, extra_agent_env={"SOLVERFLEET_WORKER_TIMEOUT": str(WORKER_TIMEOUT_S)}
    )
    steady, tight = new_secret("steady"), new_secret("tight")
    with stack.admin_client() as admin:
        admin.apply(
            team(
                user("sam", key("sam-web", steady, STEADY)),
                user("tina", key("tina-web", tight, TIGHT)),
            )
        )
    stack.wait_for_key(steady)
    stack.wait_for_key(tight)
    agent = stack.agent_url(0)
    background, hung, refill = Tracker("steady"), Tracker("hung"), Tracker("refill")
    hung_calls = []

    def hang() -> None:
        hung_calls.append(hung.solve(agent, tight, demo={"latency_ms": HANG_MS}))

    with Load(background, [agent], steady, clients=2, pace=0.01, expect={200}) as load:
        load.wait_successes(50, timeout=30, what="background load")
        threads = [threading.Thread(target=hang) for _ in range(HUNG)]
        for t in threads:
            t.start()
        # While the hung calls hold their slots, other clients are served as usual.
        wait_for(
            lambda: agent_status(stack, 0)["leases"]["in_flight_micros"] >= HUNG * micros(PRICE),
            timeout=10,
            what="the hung calls to hold their price",
            guard=load.check,
        )
        load.wait_successes(20, timeout=30, what="background successes during the hang")
        assert all(t.is_alive() for t in threads), "the hung calls ended before the check"
        for t in threads:
            t.join(HANG_MS / 1000 + 30)
        load.check()

    # Each hung call: 504 worker_timeout after ~worker_timeout, long before the worker answers.
    assert [(c.outcome, c.error) for c in hung_calls] == [(504, "worker_timeout")] * HUNG
    assert all(WORKER_TIMEOUT_S - 0.1 <= c.elapsed < HANG_MS / 1000 for c in hung_calls), [
        round(c.elapsed, 2) for c in hung_calls
    ]
    # The worker finishes the hung calls later, "successfully": nobody may be charged for them.
    wait_for(
        lambda: (
            requests.get(f"{stack.worker_url}/stats", timeout=5).json()["success"]
            == background.count(200) + HUNG
        ),
        timeout=HANG_MS / 1000 + 30,
        what="the worker to finish the hung calls",
    )
    settle(stack)
    status = agent_status(stack, 0)
    print(
        f"worker hang: {HUNG} calls -> 504 after "
        f"{min(c.elapsed for c in hung_calls):.2f}-{max(c.elapsed for c in hung_calls):.2f} s "
        f"(worker_timeout {WORKER_TIMEOUT_S:g} s, worker delay {HANG_MS} ms); afterwards "
        f"in_flight={status['in_flight']} held_in_flight={status['leases']['in_flight_micros']}"
        f" micros; tight balance {balance(agent, tight).json()['balance']}"
    )
    assert status["in_flight"] == 0 and status["leases"]["in_flight_micros"] == 0
    assert micros(balance(agent, tight).json()["balance"]) == micros(TIGHT)  # agent view
    with stack.admin_client() as admin:
        assert micros(admin.get_key("tina-web")["balance"]) == micros(TIGHT)
    failed = usage_events(stack, "tina-web")
    assert (
        sorted((e["status"], e["error"], micros(e["cost"])) for e in failed)
        == [("failed", "worker_timeout", 0)] * HUNG
    )

    # Fill the slots again: the whole balance is still spendable, to the last call.
    with Load(refill, [agent], tight, clients=HUNG, pace=0.01, expect={200, 402}) as load:
        wait_for(
            lambda: micros(balance(agent, tight).json()["balance"]) == 0,
            timeout=30,
            what="the tight key to be spent down to zero",
            guard=load.check,
        )
    assert refill.count(200) == micros(TIGHT) // micros(PRICE)
    assert_ledger(stack, background, key_id="sam-web", opening=STEADY)
    assert_ledger(stack, hung, refill, key_id="tina-web", opening=TIGHT)
