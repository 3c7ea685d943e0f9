"""Refuse only what the fleet cannot afford, on 3 agents (promise 10), on SQLite and MariaDB.

Sequential calls spread over every agent on a key worth exactly k calls (or a daily or CPM
budget of k) get k successes and then refusals, never a refusal before: money or tokens left in
another agent's lease are reclaimed for the agent that needs them. A limit lowered mid-window
holds fleet-wide from each agent's next sync.
"""

from __future__ import annotations

import time
from decimal import Decimal

import pytest

from solverfleet.process import wait_until
from tests.support.fleet import PRICE, hammer, key, micros, new_secret, solve, team, user

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]
AGENTS = 3


def _apply(stack, config, *secrets):
    with stack.admin_client() as admin:
        admin.apply(config)
    for secret in secrets:
        stack.wait_for_key(secret)


def _round_robin(stack, secret: str, calls: int, start: int = 0) -> list[int]:
    return [solve(stack.agent_url((start + i) % AGENTS), secret).status_code for i in range(calls)]


def _exactly(statuses: list[int], k: int, refusal: int) -> None:
    """k successes first, then only refusals: a refusal before the k-th success is false."""
    assert statuses == [200] * k + [refusal] * (len(statuses) - k), statuses


def _fresh_minute(seconds_needed: float) -> int:
    """CPM windows are UTC minutes: start a window-sensitive check early in one."""
    if 60 - time.time() % 60 < seconds_needed:
        minute = int(time.time() // 60)
        wait_until(lambda: int(time.time() // 60) > minute, timeout=61, what="next minute")
    return int(time.time() // 60)


def _all_agents_synced_since(stack, since: float) -> None:
    """Every agent synced after ``since``: it has its reclaim orders and the new limits."""

    def synced() -> bool:
        with stack.admin_client() as admin:
            seen = [a["last_seen"] for a in admin.agents()]
        return len(seen) == AGENTS and min(seen) > since

    wait_until(synced, timeout=10, interval=0.05, what="every agent to sync")


def test_budgets_are_spent_to_the_last_call_across_three_agents(fleet_factory):
    stack = fleet_factory(agents=AGENTS)
    money, daily, cpm = new_secret("money"), new_secret("daily"), new_secret("cpm")
    worth = 7
    balance = str(Decimal(PRICE) * worth)
    _apply(
        stack,
        team(
            user("ada", key("ada-money", money, balance)),
            user("bo", key("bo-daily", daily), daily_limit=5),
            user("cy", key("cy-cpm", cpm, cpm=4)),
        ),
        money,
        daily,
        cpm,
    )

    statuses = _round_robin(stack, money, worth + 3)
    print(f"key worth {worth} calls, round robin over {AGENTS} agents: {statuses}")
    _exactly(statuses, worth, 402)

    statuses = _round_robin(stack, daily, 8, start=1)
    print(f"daily limit 5 over {AGENTS} agents: {statuses}")
    _exactly(statuses, 5, 429)

    window = _fresh_minute(30)
    statuses = _round_robin(stack, cpm, 7, start=2)
    assert int(time.time() // 60) == window, "crossed a minute boundary"
    print(f"cpm 4 over {AGENTS} agents: {statuses}")
    _exactly(statuses, 4, 429)

    with stack.admin_client() as admin:
        left = admin.get_key("ada-money")
        wait_until(lambda: admin.summary()["successes"] == worth + 5 + 4, timeout=10)
        assert micros(admin.get_key("ada-money")["balance"]) == 0, left


def test_a_lowered_limit_holds_fleet_wide(fleet_factory):
    stack = fleet_factory(agents=AGENTS)
    daily, cpm = new_secret("daily-low"), new_secret("cpm-low")
    ed = user("ed", key("ed-cpm", cpm, cpm=30))
    _apply(stack, team(user("dee", key("dee-daily", daily), daily_limit=100), ed), daily, cpm)

    # Daily 100 -> 20 after 10 solves: 10 more, then refusals (the fleet used to serve 40).
    assert _round_robin(stack, daily, 10) == [200] * 10
    changed = time.time()
    _apply(stack, team(user("dee", key("dee-daily", daily), daily_limit=20), ed))
    _all_agents_synced_since(stack, changed)
    statuses = _round_robin(stack, daily, 15, start=1)
    print(f"daily limit lowered 100 -> 20 after 10 solves, 15 more calls: {statuses}")
    _exactly(statuses, 10, 429)

    # CPM 30 -> 10 after 4 solves in the same minute: 6 more, then refusals.
    window = _fresh_minute(30)
    assert _round_robin(stack, cpm, 4) == [200] * 4
    changed = time.time()
    with stack.admin_client() as admin:
        admin.update_key("ed-cpm", {"cpm": 10})
    _all_agents_synced_since(stack, changed)
    statuses = _round_robin(stack, cpm, 10, start=2)
    assert int(time.time() // 60) == window, "crossed a minute boundary"
    print(f"cpm lowered 30 -> 10 after 4 solves, 10 more calls: {statuses}")
    _exactly(statuses, 6, 429)

    # Raised again: usable at once, without a refusal first.
    with stack.admin_client() as admin:
        admin.update_key("ed-cpm", {"cpm": 12})
    _all_agents_synced_since(stack, time.time())
    statuses = _round_robin(stack, cpm, 3)
    assert int(time.time() // 60) == window, "crossed a minute boundary"
    _exactly(statuses, 2, 429)


def test_concurrent_clients_spend_exactly_the_balance_within_the_bound(fleet_factory):
    stack = fleet_factory(agents=AGENTS, worker_latency_ms="20")
    secret, worth = new_secret("crowd"), 10
    _apply(stack, team(user("fay", key("fay-web", secret, str(Decimal(PRICE) * worth)))))
    stack.wait_for_key(secret)
    clients, per_client = 12, 6
    urls = [stack.agent_url(i) for i in range(AGENTS)]
    totals, peak = hammer(urls, secret, clients, per_client)
    print(f"{clients} clients x {AGENTS} agents on a key worth {worth}: {dict(totals)}")
    assert set(totals) <= {200, 402}
    assert totals[200] == worth  # every call's worth spent: none refused while affordable
    with stack.admin_client() as admin:
        wait_until(lambda: admin.summary()["successes"] == worth, timeout=15)
        final = micros(admin.get_key("fay-web")["balance"])
    assert -peak * micros(PRICE) <= final == 0
