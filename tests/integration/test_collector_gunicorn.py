"""The collector as it runs in production: gunicorn, several worker processes, real HTTP."""

from __future__ import annotations

import signal
import threading
from pathlib import Path

import pytest

from tests.support.collector import CollectorProcess, event, key_config, team_config, user_config

pytest_plugins = ["tests.support.collector", "tests.support.mariadb"]
pytestmark = pytest.mark.integration


def test_end_to_end_and_restart(collector_db_url: str, tmp_path: Path) -> None:
    proc = CollectorProcess(collector_db_url, tmp_path).start()
    try:
        config = team_config([user_config("alice", [key_config("alice-web", cpm=100)])])
        applied = proc.admin("POST", "/admin/v1/apply", json=config).json()
        assert {"kind": "key", "id": "alice-web"} in applied["created"]

        sync = proc.agent(
            "POST",
            "/agent/v1/sync",
            json={
                "agent_id": "s1",
                "instance": "i1",
                "reset": True,
                "config_version": None,
                "leases": [{"kind": "balance", "key_id": "alice-web", "want_micros": 1_000_000}],
            },
        ).json()
        assert sync["config"]["keys"][0]["id"] == "alice-web"
        assert sync["grants"][0]["granted_micros"] == 1_000_000

        batch = [event(agent_id="s1", cost=2000) for _ in range(300)]
        body = {"agent_id": "s1", "events": batch}
        assert proc.agent("POST", "/agent/v1/usage", json=body).json() == {
            "accepted": 300,
            "duplicates": 0,
        }
        assert proc.agent("POST", "/agent/v1/usage", json=body).json()["duplicates"] == 300

        # bad input through the real server: JSON errors, not HTML, nothing stored
        bad = proc.agent("POST", "/agent/v1/usage", data=b"{nope", timeout=10)
        assert bad.status_code == 400 and bad.json()["error"] == "bad_json"
        big = proc.admin("POST", "/admin/v1/keys", data=b"x" * (1024 * 1024 + 1))
        assert big.status_code == 413 and big.json()["error"] == "too_large"
        assert "SOLVERFLEET_ADMIN_MAX_BODY" in big.json()["message"]
        big = proc.admin("POST", "/admin/v1/apply", data=b"x" * (64 * 1024 * 1024 + 1))
        assert big.status_code == 413 and "SOLVERFLEET_APPLY_MAX_BODY" in big.json()["message"]
    finally:
        assert proc.stop() == 0  # SIGTERM: a clean exit

    again = CollectorProcess(
        collector_db_url,
        tmp_path,
        name="collector-2",
        admin_token=proc.admin_token,
        fleet_token=proc.fleet_token,
    ).start()
    try:
        summary = again.summary()
        assert (summary["events"], summary["usage_micros"]) == (300, 600_000)
        assert summary["keys"]["alice-web"] == {
            "balance_micros": 10_000_000 - 600_000,
            "leased_micros": 1_000_000 - 600_000,
            "successes": 300,
        }
        body = {"agent_id": "s1", "events": batch}
        assert again.agent("POST", "/agent/v1/usage", json=body).json()["accepted"] == 0
    finally:
        again.stop()


def test_concurrent_replays_across_workers(collector: CollectorProcess) -> None:
    """The same batches hit several gunicorn workers (processes) at once: charged once."""
    collector.admin("POST", "/admin/v1/apply", json=team_config()).raise_for_status()
    batches = [[event(cost=1000) for _ in range(100)] for _ in range(6)]
    accepted: list[int] = []
    errors: list[BaseException] = []

    def send(batch: list[dict]) -> None:
        try:
            response = collector.agent(
                "POST", "/agent/v1/usage", json={"agent_id": "a1", "events": batch}
            )
            response.raise_for_status()
            accepted.append(response.json()["accepted"])
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=send, args=(b,)) for b in batches for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    assert sum(accepted) == 600
    summary = collector.summary()
    assert summary["events"] == 600
    assert summary["keys"]["alice-web"]["balance_micros"] == 10_000_000 - 600_000


def test_sigterm_finishes_cleanly(collector: CollectorProcess) -> None:
    collector.service.signal(signal.SIGTERM)
    assert collector.service.proc is not None
    assert collector.service.proc.wait(30) == 0
