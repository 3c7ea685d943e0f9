"""The database restarts under the collector: 503 while it is away, no usage lost or doubled."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from solverfleet.process import wait_until
from tests.support.collector import CollectorProcess, event, team_config
from tests.support.mariadb import MariaDBServer, running_server

pytestmark = [pytest.mark.integration, pytest.mark.mariadb]


@pytest.fixture
def own_server(tmp_path: Path) -> Iterator[MariaDBServer]:
    # A private server: stopping the session's shared one would break other tests.
    yield from running_server()


def test_database_restart(own_server: MariaDBServer, tmp_path: Path) -> None:
    proc = CollectorProcess(own_server.create_database(), tmp_path, workers=1, threads=4).start()
    try:
        proc.admin("POST", "/admin/v1/apply", json=team_config()).raise_for_status()
        first = [event(cost=1000) for _ in range(50)]
        body = {"agent_id": "a1", "events": first}
        assert proc.agent("POST", "/agent/v1/usage", json=body).json()["accepted"] == 50

        assert own_server.service is not None
        own_server.service.stop(timeout=30)
        second = [event(cost=1000) for _ in range(50)]
        down = proc.agent("POST", "/agent/v1/usage", json={"agent_id": "a1", "events": second})
        assert down.status_code == 503 and down.json()["error"] == "unavailable"
        assert requests.get(proc.url + "/readyz", timeout=10).status_code == 503

        own_server.start()
        wait_until(lambda: requests.get(proc.url + "/readyz", timeout=5).ok, timeout=30)
        # the agent retries everything it has not had acknowledged, plus the old batch
        retry = {"agent_id": "a1", "events": first + second}
        assert proc.agent("POST", "/agent/v1/usage", json=retry).json() == {
            "accepted": 50,
            "duplicates": 50,
        }
        summary = proc.summary()
        assert summary["events"] == 100
        assert summary["keys"]["alice-web"]["balance_micros"] == 10_000_000 - 100_000
    finally:
        proc.stop()
