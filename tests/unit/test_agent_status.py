"""``GET /admin/status``: the agent's own figures for the fleet health report, loopback only."""

from __future__ import annotations

import threading

import pytest

from solverfleet import __version__
from solverfleet.agent import agent_of, create_app
from solverfleet.process import wait_until
from tests.support.fake_collector import (  # noqa: F401
    agent_settings,
    fake_collector,
    fake_worker,
    standard_setup,
)

NOW = 1_765_555_530.0  # pinned clock: mid-minute, mid-day (UTC), so windows do not roll
BODY = {"type": "turnstile", "url": "https://shop.example/login", "params": {}}


class Env:
    def __init__(self, tmp_path, collector, worker):
        self.collector, self.worker = collector, worker
        self.secrets = standard_setup(collector)
        settings = agent_settings(tmp_path, collector.url, worker.url, node_id=42)
        self.app = create_app(settings)
        self.agent = agent_of(self.app)
        self.agent.clock = lambda: NOW
        self.client = self.app.test_client()

    def status(self) -> dict:
        resp = self.client.get("/admin/status")
        assert resp.status_code == 200, resp.get_data(as_text=True)
        return resp.json

    def solve(self, key_id: str = "alice-web", body: dict | None = None):
        headers = {"Authorization": f"Bearer {self.secrets[key_id]}"}
        return self.app.test_client().post("/solve", json=body or BODY, headers=headers)


@pytest.fixture
def env(tmp_path, fake_collector, fake_worker):  # noqa: F811
    env = Env(tmp_path, fake_collector, fake_worker)
    yield env
    env.agent.shutdown(drain_grace=0, ship_timeout=1)
    env.agent.close()


def ready(env: Env) -> Env:
    wait_until(lambda: env.status()["ready"], timeout=10, what="agent ready")
    return env


@pytest.fixture
def cut_off_env(tmp_path, fake_collector, fake_worker):  # noqa: F811
    fake_collector.sync_down = True  # before the agent starts: its first sync must fail
    env = Env(tmp_path, fake_collector, fake_worker)
    yield env
    env.agent.shutdown(drain_grace=0, ship_timeout=1)
    env.agent.close()


def test_not_ready_before_the_first_sync(cut_off_env):
    env = cut_off_env
    status = env.status()
    assert (status["ready"], status["reason"]) == (False, "not_ready")
    assert status["message"]
    assert status["collector"]["last_sync_age_s"] is None
    assert status["collector"]["online"] is False
    env.collector.sync_down = False
    ready(env)


def test_fresh_agent_figures(env):
    status = ready(env).status()
    assert status["agent_id"] == "test-agent"
    assert status["node_id"] == 42
    assert status["version"] == __version__
    assert status["instance"] == env.agent.instance
    assert status["uptime_s"] >= 0
    assert (status["ready"], status["reason"], status["draining"]) == (True, None, False)
    assert (status["in_flight"], status["spool_backlog"]) == (0, 0)
    assert status["leases"] == {
        "keys": 0, "held_micros": 0, "available_micros": 0, "in_flight_micros": 0,
        "cpm_tokens": 0, "daily_tokens": 0,
    }  # fmt: skip
    collector = status["collector"]
    assert collector["online"] is True
    assert 0 <= collector["last_sync_age_s"] < 5
    assert (collector["last_ship_age_s"], collector["shipped"]) == (None, 0)  # nothing to ship


def test_leases_and_shipping_after_solves(env):
    ready(env)
    for key_id in ("alice-web", "alice-cpm", "bob-web"):  # bob has a daily limit, alice-cpm cpm
        assert env.solve(key_id).status_code == 200
    wait_until(lambda: env.status()["collector"]["shipped"] == 3, timeout=10, what="3 shipped")
    env.agent.loop.stop(5)  # no sync between reading the status and reading the limiter
    status = env.status()
    leases = status["leases"]
    assert leases["keys"] == 3
    held = sum(env.agent.limiter.balance[k].held for k in ("alice-web", "alice-cpm", "bob-web"))
    assert leases["held_micros"] == held > 0
    assert leases["available_micros"] == held  # every success is acknowledged: all available
    assert leases["in_flight_micros"] == 0
    cpm = env.agent.limiter.cpm[("alice-cpm", int(NOW // 60))]
    assert leases["cpm_tokens"] == cpm.granted - cpm.used >= 0
    daily = env.agent.limiter.daily[("bob", int(NOW // 86400))]
    assert leases["daily_tokens"] == daily.granted - daily.used > 0
    assert status["spool_backlog"] == 0
    assert 0 <= status["collector"]["last_ship_age_s"] < 5


def test_in_flight_solve_and_unshipped_backlog(env):
    ready(env)
    env.collector.usage_down = True  # usage stays in the spool
    assert env.solve().status_code == 200
    env.worker.hold()
    thread = threading.Thread(target=env.solve, args=("alice-web", {**BODY, "params": {
        "fake": {"hold": True}}}))  # fmt: skip
    thread.start()
    try:
        wait_until(lambda: env.worker.arrived == 2, timeout=5, what="solve in flight")
        status = env.status()
        assert status["in_flight"] == 1
        assert status["leases"]["in_flight_micros"] == 2000  # the turnstile price, held
        assert status["spool_backlog"] == 1
        assert status["collector"]["last_ship_age_s"] is None
    finally:
        env.worker.release()
        thread.join(10)
    env.collector.usage_down = False
    wait_until(lambda: env.status()["spool_backlog"] == 0, timeout=10, what="spool shipped")
    assert env.status()["collector"]["shipped"] == 2


def test_collector_outage_shows_as_a_growing_sync_age(env):
    ready(env)
    env.collector.sync_down = True
    wait_until(lambda: not env.status()["collector"]["online"], timeout=5, what="offline")
    first = env.status()["collector"]["last_sync_age_s"]
    wait_until(
        lambda: env.status()["collector"]["last_sync_age_s"] > first + 0.2,
        timeout=5,
        what="sync age growing",
    )
    assert env.status()["ready"] is True  # within offline_grace it still serves


def test_draining_agent_says_so(env):
    ready(env)
    env.client.post("/admin/drain")
    status = env.status()
    assert (status["ready"], status["reason"], status["draining"]) == (False, "draining", True)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"headers": {"X-Forwarded-For": "127.0.0.1"}},
        {"headers": {"Forwarded": "for=127.0.0.1"}},
        {"environ_base": {"REMOTE_ADDR": "10.0.0.5"}},
    ],
)
def test_status_is_local_only(env, kwargs):
    resp = env.client.get("/admin/status", **kwargs)
    assert resp.status_code == 403
    assert resp.json == {"error": "forbidden", "message": resp.json["message"]}
    assert resp.json["message"]


def test_status_holds_no_secret(env):
    text = ready(env).client.get("/admin/status").get_data(as_text=True)
    assert env.solve().status_code == 200
    text += env.client.get("/admin/status").get_data(as_text=True)
    for secret in (*env.secrets.values(), env.agent.settings.fleet_token, "alice"):
        assert secret not in text
