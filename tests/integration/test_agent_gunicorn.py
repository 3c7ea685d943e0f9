"""The agent under real gunicorn (its gunicorn_conf), a fake collector and a tiny worker.

SIGTERM under load: in-flight solves finish, the spool is shipped, leases are returned.
kill -9: nothing is lost; the restarted agent replays its spool (each event once) and only
then sends ``reset``.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from solverfleet.process import Service, free_port, http_ok, wait_until
from tests.support.fake_collector import (  # noqa: F401
    FLEET_TOKEN,
    fake_collector,
    fake_worker,
    standard_setup,
)

BODY = {"type": "turnstile", "url": "https://shop.example/", "params": {}}
HELD = {**BODY, "params": {"fake": {"hold": True}}}


class GunicornAgent:
    def __init__(self, tmp_path, collector, worker, name="agent"):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("SOLVERFLEET_")}
        env.update(
            SOLVERFLEET_COLLECTOR_URL=collector.url,
            SOLVERFLEET_FLEET_TOKEN=FLEET_TOKEN,
            SOLVERFLEET_WORKER_URL=worker.url,
            SOLVERFLEET_AGENT_ID="solver1",
            SOLVERFLEET_STATE_DIR=str(tmp_path / "state"),
            SOLVERFLEET_SYNC_INTERVAL="0.05",
            SOLVERFLEET_DRAIN_GRACE="20",
            SOLVERFLEET_BIND=f"127.0.0.1:{self.port}",
        )
        argv = [sys.executable, "-m", "gunicorn", "-c", "python:solverfleet.agent.gunicorn_conf",
                "solverfleet.agent:create_app()"]  # fmt: skip
        self.svc = Service(name, argv, env=env, log_dir=tmp_path / "logs").start()
        try:
            wait_until(lambda: http_ok(f"{self.url}/readyz"), timeout=30, what="agent ready")
        except Exception:
            self.svc.stop(5)
            raise AssertionError(f"agent did not start:\n{self.svc.log_tail()}") from None

    def solve(self, secret, body=BODY):
        return requests.post(f"{self.url}/solve", json=body, timeout=30,
                             headers={"Authorization": f"Bearer {secret}"})  # fmt: skip

    def kill9(self):
        os.killpg(self.svc.pid, signal.SIGKILL)  # master and worker at once: a crash
        self.svc.proc.wait(10)


@pytest.fixture
def setup(tmp_path, fake_collector, fake_worker):  # noqa: F811
    secrets = standard_setup(fake_collector)
    agents = []

    def start(name="agent"):
        agent = GunicornAgent(tmp_path, fake_collector, fake_worker, name)
        agents.append(agent)
        return agent

    yield fake_collector, fake_worker, secrets, start
    fake_worker.release()
    for agent in agents:
        agent.svc.stop(10)


def test_sigterm_mid_load_finishes_in_flight_ships_and_returns_leases(setup):
    collector, worker, secrets, start = setup
    agent = start()
    keys = ["alice-web", "bob-web"]
    for key_id in keys:  # warm: leases exist, one success each
        assert agent.solve(secrets[key_id]).status_code == 200
    worker.hold()
    calls = 30
    with ThreadPoolExecutor(calls) as pool:
        futures = [pool.submit(agent.solve, secrets["alice-web"], HELD) for _ in range(calls)]
        wait_until(lambda: worker.arrived == calls + 2, timeout=20, what="30 solves in flight")
        agent.svc.signal(signal.SIGTERM)
        wait_until(
            lambda: requests.get(f"{agent.url}/readyz", timeout=5).status_code == 503,
            timeout=10, what="draining",
        )  # fmt: skip
        late = agent.solve(secrets["alice-web"])
        assert (late.status_code, late.json()["error"]) == (503, "draining")
        worker.release()
        statuses = Counter(f.result().status_code for f in futures)
    assert statuses == {200: calls}
    assert agent.svc.proc.wait(30) == 0, agent.svc.log_tail()
    assert len(collector.successes("alice-web")) == calls + 1
    assert all(collector.leased(k) == 0 for k in keys)
    # Daily tokens: only the consumed one stays counted, the unused ones came back.
    assert collector.daily_held[("solver1", "bob", _today())] == len(collector.successes("bob-web"))
    (release,) = collector.calls("release")
    assert {"kind": "balance", "key_id": "alice-web"}.items() <= release["leases"][0].items()
    assert collector.balance("alice-web") == 1_000_000 - (calls + 1) * 2000


def test_kill9_loses_nothing_and_replays_the_spool_once(setup):
    collector, _, secrets, start = setup
    collector.usage_down = True  # usage stays in the spool
    first = start("agent-1")
    answered = [first.solve(secrets["alice-web"]) for _ in range(8)]
    answered.append(
        first.solve(secrets["alice-web"], {**BODY, "params": {"fake": {"status": 500}}})
    )
    assert [r.status_code for r in answered] == [200] * 8 + [502]
    stats = requests.get(f"{first.url}/readyz", timeout=5).json()
    assert stats["spool_backlog"] == 9
    first.kill9()
    assert collector.events == {}
    collector.usage_down = False
    second = start("agent-2")
    wait_until(lambda: len(collector.events) == 9, timeout=20, what="replayed usage")
    assert Counter(collector.received) == {eid: 1 for eid in collector.events}  # once each
    request_ids = {r.headers["X-Request-ID"] for r in answered}
    assert {e["request_id"] for e in collector.events.values()} == request_ids
    assert collector.balance("alice-web") == 1_000_000 - 8 * 2000
    # The new process shipped the old spool before its first sync, which carried reset.
    old_instance = collector.calls("sync")[0]["instance"]
    second_syncs = [
        i
        for i, (name, payload) in enumerate(collector.log)
        if name == "sync" and payload["instance"] != old_instance
    ]
    last_usage = max(i for i, (name, _) in enumerate(collector.log) if name == "usage")
    assert collector.log[second_syncs[0]][1]["reset"] is True
    assert last_usage < second_syncs[0]
    assert second.solve(secrets["alice-web"]).status_code == 200  # and serving again


def _today() -> str:
    return time.strftime("%Y-%m-%d", time.gmtime())
