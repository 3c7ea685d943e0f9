"""Fault 3: MariaDB restarts while the collector is ingesting usage from a fleet under load.

While the database is away the collector answers 503 to usage batches and syncs, the agents
keep their usage in the spool and serve from their leases (200, or 402 once a lease is spent);
once it is back every spooled event is stored exactly once.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import requests

from tests.support.chaos import Load, Tracker, outcome_counts, wait_for
from tests.support.chaosledger import (
    assert_ledger,
    ingested,
    usage_refusals,
    wait_ingest_resumes,
    wait_leases,
)
from tests.support.fleet import key, new_secret, team, user
from tests.support.mariadb import MariaDBServer, running_server

pytestmark = [
    pytest.mark.chaos,
    pytest.mark.integration,
    pytest.mark.mariadb,
    pytest.mark.timeout(240),
]

OPENING = "500.00"
RESTARTS = 3  # each one a few seconds; more than one makes hitting a write in flight likelier


@pytest.fixture
def own_mariadb() -> Iterator[MariaDBServer]:
    # A private server: restarting the session's shared one would break other tests.
    yield from running_server()


@pytest.fixture
def store_url(own_mariadb: MariaDBServer) -> str:
    """Overrides tests/support/fleet.py's SQLite/MariaDB parameter: this fault is MariaDB's."""
    return own_mariadb.create_database()


def _readyz(stack) -> int:
    return requests.get(f"{stack.collector_url}/readyz", timeout=5).status_code


def test_mariadb_restart_mid_ingest(fleet_factory, own_mariadb: MariaDBServer):
    stack = fleet_factory(agents=2, worker_latency_ms="5")
    secret = new_secret("mdb")
    with stack.admin_client() as admin:
        admin.apply(team(user("mona", key("mona-web", secret, OPENING))))
    stack.wait_for_key(secret)
    tracker = Tracker("mdb-restart")
    agents = stack.urls["agents"]
    outages: list[tuple[float, float]] = []
    with Load(
        tracker, agents, secret, clients=4, pace=0.01, max_seconds=150, expect={200, 402}
    ) as load:
        load.wait_successes(100, timeout=30, what="load before the restart")
        wait_leases(stack, load, calls=50)
        refused = usage_refusals(stack)
        for n in range(RESTARTS):
            # Mid-ingest: the collector is storing the load's usage as it arrives.
            before = ingested(stack)
            wait_for(
                lambda n=before: ingested(stack) >= n + 50,
                timeout=30,
                what=f"ingest to flow before restart {n + 1}",
                guard=load.check,
            )
            assert own_mariadb.service is not None
            stopped_at = time.monotonic()
            own_mariadb.service.stop(timeout=30)  # SIGTERM: mariadbd's own shutdown
            # The outage reaches ingest: usage batches are refused (and stay in the spools).
            wait_for(
                lambda r=refused: usage_refusals(stack) > r,
                timeout=30,
                what=f"usage batches refused during outage {n + 1}",
                guard=load.check,
            )
            assert _readyz(stack) == 503
            own_mariadb.start()  # same datadir and port
            outages.append((stopped_at, time.monotonic()))
            wait_for(
                lambda: _readyz(stack) == 200,
                timeout=60,
                what=f"the collector to reconnect after restart {n + 1}",
                guard=load.check,
            )
            refused = usage_refusals(stack)
        wait_ingest_resumes(stack, load)
        load.wait_successes(100, timeout=60, what="load after the restarts")
        load.check()
    calls = tracker.snapshot()
    during = [c for c in calls if any(a <= c.started < b for a, b in outages)]
    down = ", ".join(f"{b - a:.1f}" for a, b in outages)
    print(
        f"MariaDB restarted {RESTARTS}x (down {down} s), usage batches answered 503: {refused}, "
        f"calls while down {outcome_counts(during)}"
    )
    assert any(c.ok for c in during), "agents must keep serving while the database is away"
    assert_ledger(stack, tracker, key_id="mona-web", opening=OPENING)
