"""The metering promises end to end: real collector, worker and agents, on SQLite and MariaDB.
Faults under load (kill -9, collector and database outages) are in tests/chaos/."""

from __future__ import annotations

import time
from collections import Counter

import pytest
import requests

from solverfleet.process import wait_until
from tests.support.fleet import (
    PRICE,
    balance,
    hammer,
    key,
    micros,
    new_secret,
    solve,
    team,
    user,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]


def _apply(stack, config, *secrets):
    with stack.admin_client() as admin:
        admin.apply(config)
    for secret in secrets:
        stack.wait_for_key(secret)


def _summary(stack) -> dict:
    with stack.admin_client() as admin:
        return admin.summary()


def _key(stack, key_id) -> dict:
    with stack.admin_client() as admin:
        return admin.get_key(key_id)


def _wait_for_fresh_window(seconds_needed: float) -> None:
    """CPM windows are UTC minutes: start a window-sensitive test early in a minute."""
    if 60 - time.time() % 60 < seconds_needed:
        minute = int(time.time() // 60)
        wait_until(lambda: int(time.time() // 60) > minute, timeout=61, what="next minute")


def test_status_codes_and_deduct_only_on_success(fleet_factory):
    stack = fleet_factory(agents=1, extra_agent_env={"SOLVERFLEET_WORKER_TIMEOUT": "1"})
    ok, off, poor, narrow = (new_secret(n) for n in ("ok", "off", "poor", "narrow"))
    config = team(
        user("alice", key("alice-web", ok, "1.00")),
        user("bob", key("bob-web", off, "1.00", active=False)),
        user("carol", key("carol-web", poor, "0.005")),
        user(
            "dave",
            key(
                "dave-web",
                narrow,
                "1.00",
                allowed_types=["turnstile"],
                ip_allowlist=["10.9.0.0/16"],
            ),
        ),
        prices={"turnstile": PRICE, "recaptcha-v2": "0.020"},
    )
    _apply(stack, config, ok, poor, narrow)
    agent = stack.agent_url(0)

    first = solve(agent, ok)
    assert first.status_code == 200, first.text
    body = first.json()
    assert (body["status"], body["cost"]) == ("success", "0.01")
    assert isinstance(body["duration_ms"], int) and body["request_id"]
    # /balance is the agent's live view: the solve shows at once, no sync in between.
    assert balance(agent, ok).json() == {"key": "alice-web", "balance": "0.99", "currency": "USD"}

    failed = solve(agent, ok, demo={"fail": True})
    assert (failed.status_code, failed.json()["error"]) == (502, "worker_failed")
    assert balance(agent, ok).json()["balance"] == "0.99"

    def code(resp):
        return resp.status_code, resp.json()["error"]

    url = f"{agent}/solve"
    assert code(
        requests.post(url, data="{not json", headers={"Authorization": f"Bearer {ok}"})
    ) == (
        400,
        "bad_request",
    )
    big = {"type": "turnstile", "url": "https://x.test/", "params": {"blob": "x" * (1 << 20)}}
    assert code(requests.post(url, json=big, headers={"Authorization": f"Bearer {ok}"})) == (
        413,
        "too_large",
    )
    unknown_type = requests.post(
        url, json={"type": "nope", "url": "https://x.test/"}, headers={"X-API-Key": ok}
    )
    assert code(unknown_type) == (400, "unknown_type")
    assert code(solve(agent, "sk_never-issued-0123456789")) == (401, "invalid_key")
    assert code(requests.post(url, json={"type": "turnstile", "url": "https://x.test/"})) == (
        401,
        "invalid_key",
    )
    assert code(solve(agent, off)) == (403, "key_disabled")
    assert code(solve(agent, narrow)) == (403, "ip_not_allowed")
    wrong_type = requests.post(
        url, json={"type": "recaptcha-v2", "url": "https://x.test/"}, headers={"X-API-Key": narrow}
    )
    assert code(wrong_type) in {(403, "type_not_allowed"), (403, "ip_not_allowed")}
    assert code(solve(agent, poor)) == (402, "insufficient_balance")
    timed_out = solve(agent, ok, demo={"latency_ms": 3_000})
    assert code(timed_out) == (504, "worker_timeout")

    with stack.admin_client() as admin:
        admin.set_user_active("alice", False)
    wait_until(lambda: balance(agent, ok).status_code == 403, timeout=5, what="user deactivation")
    assert code(solve(agent, ok)) == (403, "user_disabled")

    # Exactly one success was charged, on the agent and at the collector.
    wait_until(lambda: _summary(stack)["successes"] == 1, timeout=10, what="usage shipped")
    assert micros(_key(stack, "alice-web")["balance"]) == micros("1.00") - micros(PRICE)


@pytest.mark.timeout(240)
def test_cpm_and_daily_limits_hold_across_two_agents(fleet_factory):
    stack = fleet_factory(agents=2)
    cpm_secret, daily_secret = new_secret("cpm"), new_secret("daily")
    config = team(
        user("erin", key("erin-cpm", cpm_secret, "10.00", cpm=5)),
        user("frank", key("frank-daily", daily_secret, "10.00"), daily_limit=4),
    )
    _apply(stack, config, cpm_secret, daily_secret)
    agents = [stack.agent_url(0), stack.agent_url(1)]

    _wait_for_fresh_window(20)
    window = int(time.time() // 60)
    cpm_results = [solve(agents[i % 2], cpm_secret) for i in range(12)]
    assert int(time.time() // 60) == window, "test crossed a minute boundary"
    statuses = Counter(r.status_code for r in cpm_results)
    print(f"cpm=5 across 2 agents, 12 calls: {dict(statuses)}")
    assert 1 <= statuses[200] <= 5
    refused = [r for r in cpm_results if r.status_code == 429]
    assert refused and all(r.json()["error"] == "cpm_exceeded" for r in refused)
    assert all(0 < int(r.headers["Retry-After"]) <= 60 for r in refused)

    daily_results = [solve(agents[i % 2], daily_secret) for i in range(10)]
    statuses = Counter(r.status_code for r in daily_results)
    print(f"daily_limit=4 across 2 agents, 10 calls: {dict(statuses)}")
    assert 1 <= statuses[200] <= 4
    refused = [r for r in daily_results if r.status_code == 429]
    assert refused and all(r.json()["error"] == "daily_limit_reached" for r in refused)
    assert all(int(r.headers["Retry-After"]) > 0 for r in refused)

    # A single agent can use the whole ceiling once the other gives its share back.
    wait_until(
        lambda: (
            _summary(stack)["successes"]
            == sum(r.status_code == 200 for r in cpm_results)
            + sum(r.status_code == 200 for r in daily_results)
        ),
        timeout=10,
        what="usage shipped",
    )


def test_overdraft_across_two_agents_stays_within_bound(fleet_factory):
    stack = fleet_factory(agents=2, worker_latency_ms="20")
    secret = new_secret("tight")
    opening = micros(PRICE) * 10  # ten solves' worth
    _apply(stack, team(user("gina", key("gina-web", secret, "0.10"))), secret)
    agents = [stack.agent_url(0), stack.agent_url(1)]
    clients, per_client = 16, 15
    totals, peak = hammer(agents, secret, clients, per_client)
    ok = totals[200]
    wait_until(lambda: _summary(stack)["successes"] == ok, timeout=15, what="usage shipped")
    final = micros(_key(stack, "gina-web")["balance"])
    bound = -peak * micros(PRICE)
    print(
        f"overdraft: {clients} clients x 2 agents, opening {opening} micros, "
        f"successes {ok}, final {final} micros, measured overdraft {min(final, 0)}, "
        f"bound {bound} (peak in flight {peak})"
    )
    assert set(totals) <= {200, 402}
    assert final == opening - ok * micros(PRICE)
    assert final >= bound
    assert ok >= 1


def test_deactivation_reaches_both_agents_within_a_second(fleet_factory):
    stack = fleet_factory(agents=2)
    secret = new_secret("revoke")
    _apply(stack, team(user("hank", key("hank-web", secret))), secret)
    for i in range(2):
        assert solve(stack.agent_url(i), secret).status_code == 200

    with stack.admin_client() as admin:
        started = time.monotonic()
        admin.set_key_active("hank-web", False)
    latencies = []
    for i in range(2):
        wait_until(
            lambda i=i: balance(stack.agent_url(i), secret).status_code == 403,
            timeout=5,
            interval=0.01,
            what=f"agent {i} to refuse",
        )
        latencies.append(time.monotonic() - started)
    print(f"deactivation -> refused on both agents after {max(latencies) * 1000:.0f} ms")
    assert max(latencies) < 1.0
    assert solve(stack.agent_url(1), secret).json()["error"] == "key_disabled"


def test_sigterm_returns_unused_lease(fleet_factory):
    stack = fleet_factory(agents=1)
    secret = new_secret("lease")
    _apply(stack, team(user("kate", key("kate-web", secret, "10.00"))), secret)
    first = solve(stack.agent_url(0), secret)
    assert first.status_code == 200, first.text
    assert micros(_key(stack, "kate-web")["leased"]) > 0
    assert stack.stop_agent(0) == 0
    after = _key(stack, "kate-web")
    assert micros(after["leased"]) == 0
    assert micros(after["balance"]) == micros("10.00") - micros(PRICE)
