"""Two collector processes (each with two gunicorn workers) on ONE MariaDB database.

Same and different usage batches and lease requests arrive at both at once: no event is
stored or charged twice, and balance leases never add up to more than the balance.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.collector import CollectorProcess, event, key_config, team_config, user_config
from tests.support.mariadb import MariaDBServer

pytest_plugins = ["tests.support.mariadb"]
pytestmark = [pytest.mark.integration, pytest.mark.mariadb]

KEYS = [f"k{i}" for i in range(4)]
BALANCE = 1_000_000  # 1.00 per key


@pytest.fixture
def pair(mariadb_server: MariaDBServer, tmp_path: Path) -> Iterator[list[CollectorProcess]]:
    url = mariadb_server.create_database()
    first = CollectorProcess(url, tmp_path, name="collector-a", threads=6)
    second = CollectorProcess(
        url,
        tmp_path,
        name="collector-b",
        threads=6,
        admin_token=first.admin_token,
        fleet_token=first.fleet_token,
    )
    # Started together: both run the schema migration at once (it takes a named lock).
    starters = [threading.Thread(target=p.start) for p in (first, second)]
    for t in starters:
        t.start()
    for t in starters:
        t.join(60)
    try:
        assert first.service.alive() and second.service.alive()
        keys = [key_config(k, balance="1.00") for k in KEYS]
        applied = first.admin(
            "POST", "/admin/v1/apply", json=team_config([user_config("alice", keys)])
        )
        assert applied.status_code == 200, applied.text
        yield [first, second]
    finally:
        first.stop()
        second.stop()


def run_all(jobs: list[Callable[[], None]]) -> None:
    """Start every job at once (barrier), wait for all, re-raise the first failure."""
    barrier = threading.Barrier(len(jobs))
    errors: list[BaseException] = []

    def wrap(job: Callable[[], None]) -> None:
        try:
            barrier.wait(30)
            job()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=wrap, args=(job,)) for job in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not [t for t in threads if t.is_alive()], "a request hung"
    if errors:
        raise errors[0]


def test_same_and_different_batches_at_both_collectors(pair: list[CollectorProcess]) -> None:
    rng = random.Random(7)
    shared = [[event(rng.choice(KEYS), cost=100) for _ in range(150)] for _ in range(8)]
    own = [[event(rng.choice(KEYS), cost=100) for _ in range(150)] for _ in range(8)]
    # overlapping retries: a later batch re-sends half of an earlier one plus new events
    overlap = [b[:75] + [event(rng.choice(KEYS), cost=100) for _ in range(25)] for b in shared]
    accepted: list[int] = []
    lock = threading.Lock()

    def send(proc: CollectorProcess, batch: list[dict]) -> Callable[[], None]:
        def job() -> None:
            response = proc.agent(
                "POST", "/agent/v1/usage", json={"agent_id": "a1", "events": batch}
            )
            assert response.status_code == 200, response.text
            with lock:
                accepted.append(response.json()["accepted"])

        return job

    jobs = [send(p, b) for b in shared for p in pair]  # every shared batch at both at once
    jobs += [send(pair[i % 2], b) for i, b in enumerate(own)]
    jobs += [send(pair[(i + 1) % 2], b) for i, b in enumerate(overlap)]
    run_all(jobs)

    unique = {e["event_id"]: e for batch in shared + own + overlap for e in batch}
    assert sum(accepted) == len(unique)  # each event acknowledged as new exactly once
    for proc in pair:
        summary = proc.summary()
        assert summary["events"] == len(unique)
        assert summary["usage_micros"] == 100 * len(unique)
        for key in KEYS:
            spent = 100 * sum(1 for e in unique.values() if e["key_id"] == key)
            assert summary["keys"][key]["balance_micros"] == BALANCE - spent


def test_concurrent_lease_requests_never_exceed_balance(pair: list[CollectorProcess]) -> None:
    granted_total = {k: 0 for k in KEYS}
    lock = threading.Lock()

    def agent(n: int) -> Callable[[], None]:
        def job() -> None:
            for round_ in range(6):
                proc = pair[(n + round_) % 2]
                leases = [
                    {"kind": "balance", "key_id": k, "want_micros": 200_000, "min_micros": 1}
                    for k in KEYS
                ]
                response = proc.agent(
                    "POST",
                    "/agent/v1/sync",
                    json={"agent_id": f"agent{n}", "instance": "i", "leases": leases},
                )
                assert response.status_code == 200, response.text
                with lock:
                    for grant in response.json()["grants"]:
                        granted_total[grant["key_id"]] += grant["granted_micros"]

        return job

    # A spender agent takes a lease first, then spends exactly that while the others sync.
    pre = (
        pair[0]
        .agent(
            "POST",
            "/agent/v1/sync",
            json={
                "agent_id": "spender",
                "leases": [{"kind": "balance", "key_id": k, "want_micros": 20_000} for k in KEYS],
            },
        )
        .json()
    )
    spent = {g["key_id"]: g["granted_micros"] for g in pre["grants"]}
    assert all(v == 20_000 for v in spent.values())
    for key in KEYS:
        granted_total[key] += spent[key]
    spender_events = [event(k, cost=1000, agent_id="spender") for k in KEYS for _ in range(20)]

    def spender() -> None:
        for start in range(0, len(spender_events), 10):
            chunk = spender_events[start : start + 10]
            response = pair[start % 2].agent(
                "POST", "/agent/v1/usage", json={"agent_id": "spender", "events": chunk}
            )
            assert response.status_code == 200, response.text

    run_all([agent(n) for n in range(10)] + [spender])

    summary = pair[0].summary()
    for key in KEYS:
        state = summary["keys"][key]
        assert state["balance_micros"] == BALANCE - spent[key]
        assert 0 <= state["leased_micros"] <= state["balance_micros"]
        # what agents were told they got, less what they spent, is exactly what the DB holds
        assert granted_total[key] - spent[key] == state["leased_micros"]
