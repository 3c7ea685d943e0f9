"""The agent app in-process: Flask test client, fake collector, tiny worker. Every status code."""

from __future__ import annotations

import json
import threading
from collections import Counter

import pytest

from solverfleet.agent import agent_of, create_app
from solverfleet.process import free_port, wait_until
from tests.support.fake_collector import (  # noqa: F401
    EVENT_FIELDS,
    agent_settings,
    fake_collector,
    fake_worker,
    standard_setup,
)

NOW = 1_765_555_530.0  # pinned clock: mid-minute, mid-day (UTC), so windows do not roll
BODY = {"type": "turnstile", "url": "https://shop.example/login", "params": {}}


class Env:
    def __init__(self, tmp_path, collector, worker):
        self.tmp_path, self.collector, self.worker = tmp_path, collector, worker
        self.secrets = standard_setup(collector)
        self.apps = []

    def start(self, ready=True, **overrides):
        overrides.setdefault("worker_url", self.worker.url)
        settings = agent_settings(self.tmp_path, self.collector.url, **overrides)
        self.app = create_app(settings)
        self.apps.append(self.app)
        self.agent = agent_of(self.app)
        self.agent.clock = lambda: NOW
        self.client = self.app.test_client()
        if ready:
            wait_until(lambda: self.client.get("/readyz").status_code == 200, timeout=10,
                       what="agent ready")  # fmt: skip
        return self

    def solve(self, key_id="alice-web", body=None, headers=None, **kw):
        headers = dict(headers or {})
        if key_id is not None:
            headers.setdefault("Authorization", f"Bearer {self.secrets.get(key_id, 'sk_nope')}")
        return self.client.post("/solve", json=BODY if body is None else body, headers=headers,
                                **kw)  # fmt: skip

    def balance(self, key_id="alice-web"):
        resp = self.client.get("/balance", headers={"X-API-Key": self.secrets[key_id]})
        assert resp.status_code == 200, resp.json
        return resp.json["balance"]

    def shipped(self, count):
        return wait_until(lambda: len(self.collector.events) >= count, timeout=10,
                          what=f"{count} events at the collector")  # fmt: skip

    def close(self):
        for app in self.apps:
            agent = agent_of(app)
            agent.shutdown(drain_grace=0, ship_timeout=1)
            agent.close()


@pytest.fixture
def env(tmp_path, fake_collector, fake_worker):  # noqa: F811
    env = Env(tmp_path, fake_collector, fake_worker)
    yield env
    env.close()


@pytest.fixture
def ready(env):
    return env.start()


def fake(**params):
    return {**BODY, "params": {"fake": params}}


def assert_error(resp, status, code):
    assert resp.status_code == status, resp.get_data(as_text=True)
    assert resp.json["error"] == code and resp.json["message"]
    assert set(resp.json) == {"error", "message"}


# ---- success -------------------------------------------------------------------------------


def test_success_answer_shape(ready):
    resp = ready.solve(headers={"X-Request-ID": "lb-abc-123"})
    assert resp.status_code == 200
    assert resp.json == {
        "status": "success", "result": "token-for-turnstile", "cost": "0.002",
        "duration_ms": resp.json["duration_ms"], "request_id": "lb-abc-123",
    }  # fmt: skip
    assert isinstance(resp.json["duration_ms"], int)
    assert resp.headers["X-Request-ID"] == "lb-abc-123"


def test_x_api_key_header_is_accepted(ready):
    resp = ready.solve(None, headers={"X-API-Key": ready.secrets["alice-web"]})
    assert resp.status_code == 200


def test_first_call_of_a_key_waits_for_its_lease(ready):
    assert ready.agent.limiter.remainder("bob-web") == 0  # nothing leased yet
    assert ready.solve("bob-web").status_code == 200


# ---- every refusal -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        b"not json",
        b"[1, 2]",
        b'{"url": "https://x.test/"}',
        b'{"type": "", "url": "https://x.test/"}',
        b'{"type": "turnstile"}',
        b'{"type": "turnstile", "url": "ftp://x.test/"}',
        b'{"type": "turnstile", "url": "https://x.test/", "params": [1]}',
        b'{"type": 7, "url": "https://x.test/"}',
        b"\xff\xfe",
    ],
)
def test_bad_request(ready, data):
    headers = {"Authorization": f"Bearer {ready.secrets['alice-web']}",
               "Content-Type": "application/json"}  # fmt: skip
    assert_error(ready.client.post("/solve", data=data, headers=headers), 400, "bad_request")


def test_unknown_type(ready):
    assert_error(ready.solve(body={**BODY, "type": "hcaptcha"}), 400, "unknown_type")


def test_too_large(ready):
    big = {**BODY, "params": {"blob": "x" * (1024 * 1024)}}
    assert_error(ready.solve(body=big), 413, "too_large")


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer sk_wrong"}, {"Authorization": "Basic abc"}, {"X-API-Key": ""}],
)
def test_invalid_key(ready, headers):
    assert_error(ready.solve(None, headers=headers), 401, "invalid_key")


@pytest.mark.parametrize(
    ("key_id", "code"),
    [("alice-off", "key_disabled"), ("carol-web", "user_disabled"),
     ("alice-typed", "type_not_allowed"), ("alice-ip", "ip_not_allowed")],
)  # fmt: skip
def test_forbidden(ready, key_id, code):
    assert_error(ready.solve(key_id), 403, code)


def test_ip_allowlist_admits_a_listed_address(ready):
    resp = ready.solve("alice-ip", environ_base={"REMOTE_ADDR": "10.1.2.3"})
    assert resp.status_code == 200


def test_insufficient_balance(ready):
    assert ready.solve("alice-poor").status_code == 200  # balance 0.0025: one call
    assert_error(ready.solve("alice-poor"), 402, "insufficient_balance")


def test_cpm_exceeded_with_retry_after(ready):
    assert [ready.solve("alice-cpm").status_code for _ in range(2)] == [200, 200]
    resp = ready.solve("alice-cpm")
    assert_error(resp, 429, "cpm_exceeded")
    assert resp.headers["Retry-After"] == "30"  # NOW is 30 s into its minute


def test_daily_limit_reached_with_retry_after(ready):
    assert ready.solve("bob-web", body=fake(status=500)).status_code == 502  # free: no token
    assert [ready.solve("bob-web").status_code for _ in range(3)] == [200, 200, 200]
    resp = ready.solve("bob-web")
    assert_error(resp, 429, "daily_limit_reached")
    assert int(resp.headers["Retry-After"]) == 86400 - int(NOW % 86400)


@pytest.mark.parametrize("params", [{"status": 500}, {"status": 404}, {"no_result": True}])
def test_worker_failed(ready, params):
    assert_error(ready.solve(body=fake(**params)), 502, "worker_failed")


def test_worker_unreachable(env):
    env.start(worker_url=f"http://127.0.0.1:{free_port()}")
    assert_error(env.solve(), 502, "worker_failed")


def test_worker_timeout(env):
    env.start(worker_timeout=0.3)
    assert_error(env.solve(body=fake(latency=1.5)), 504, "worker_timeout")


def test_not_ready_until_the_collector_answers(env):
    env.collector.sync_down = True
    env.start(ready=False)
    assert_error(env.solve(), 503, "not_ready")
    assert_error(env.client.get("/readyz"), 503, "not_ready")
    assert env.client.get("/healthz").json == {"status": "ok"}
    env.collector.sync_down = False
    wait_until(lambda: env.client.get("/readyz").status_code == 200, timeout=10, what="ready")
    assert env.solve().status_code == 200


def test_draining_refuses_new_solves(ready):
    assert ready.client.post("/admin/drain").json["status"] == "draining"
    assert_error(ready.client.get("/readyz"), 503, "draining")
    assert_error(ready.solve(), 503, "draining")


def test_unknown_route_and_method_are_json(ready):
    assert_error(ready.client.get("/nope"), 404, "not_found")
    assert_error(ready.client.get("/solve"), 405, "method_not_allowed")


# ---- money and usage -----------------------------------------------------------------------


def test_deduct_on_success_only_and_balance_is_immediate(ready):
    assert ready.balance() == "1.00"
    assert ready.solve().status_code == 200
    assert ready.balance() == "0.998"  # no sync, no shipping needed
    assert ready.solve(body=fake(status=503)).status_code == 502
    assert ready.solve(body=fake(status=500)).status_code == 502
    assert ready.balance() == "0.998"
    ready.shipped(3)
    statuses = Counter((e["status"], e["cost_micros"]) for e in ready.collector.events.values())
    assert statuses == {("success", 2000): 1, ("failed", 0): 2}
    assert ready.collector.balance("alice-web") == 998_000
    assert ready.balance() == "0.998"  # and still right once the collector has it


def test_usage_event_fields(ready):
    ok = ready.solve(headers={"X-Forwarded-For": "6.6.6.6"}).json["request_id"]
    bad = ready.solve(body=fake(status=500)).headers["X-Request-ID"]
    ready.shipped(2)
    events = {e["request_id"]: e for e in ready.collector.events.values()}
    for event in events.values():
        assert set(event) == EVENT_FIELDS and len(event["event_id"]) == 32
    assert {k: events[ok][k] for k in ("key_id", "user_id", "user_email", "account", "project",
                                       "environment", "type", "url", "status", "error",
                                       "message", "source_ip", "cost_micros", "agent_id")} == {
        "key_id": "alice-web", "user_id": "alice", "user_email": "alice@example.com",
        "account": "acme", "project": "web", "environment": "prod", "type": "turnstile",
        "url": BODY["url"], "status": "success", "error": None, "message": None,
        "source_ip": "127.0.0.1", "cost_micros": 2000, "agent_id": "test-agent",
    }  # untrusted peer: its X-Forwarded-For is ignored  # fmt: skip
    assert (events[bad]["status"], events[bad]["error"], events[bad]["cost_micros"]) == (
        "failed", "worker_failed", 0)  # fmt: skip
    assert "HTTP 500" in events[bad]["message"]


def test_trusted_proxy_forwarded_address_is_the_source(env):
    env.start(trusted_proxies=("127.0.0.0/8",))
    env.solve(headers={"X-Forwarded-For": "203.0.113.9"})
    env.shipped(1)
    assert [e["source_ip"] for e in env.collector.events.values()] == ["203.0.113.9"]


def test_usage_is_on_disk_before_the_answer(ready):
    ready.collector.usage_down = True  # nothing can leave the spool
    request_id = ready.solve().json["request_id"]
    spool = ready.tmp_path / "agent-state" / "spool"
    lines = [json.loads(line) for f in spool.glob("*.jsonl") for line in f.read_text().splitlines()]
    assert [e["request_id"] for e in lines] == [request_id]


def test_refusals_are_not_usage_events(ready):
    ready.solve("alice-off")
    ready.solve(body={**BODY, "type": "hcaptcha"})
    ready.solve()
    ready.shipped(1)
    assert [e["key_id"] for e in ready.collector.events.values()] == ["alice-web"]


def test_top_up_after_402_is_served(ready):
    assert ready.solve("alice-poor").status_code == 200
    assert ready.solve("alice-poor").status_code == 402
    ready.collector.topup("alice-poor", 100_000)
    wait_until(lambda: ready.solve("alice-poor").status_code == 200, timeout=10, what="top-up")


# ---- revocation, offline, drain, stop ------------------------------------------------------


def test_key_deactivation_applies_on_the_next_sync(ready):
    assert ready.solve().status_code == 200
    ready.collector.update_key("alice-web", active=False)
    wait_until(lambda: ready.solve().status_code == 403, timeout=5, what="revocation")
    assert_error(ready.solve(), 403, "key_disabled")


def test_user_deactivation_applies_on_the_next_sync(ready):
    assert ready.solve().status_code == 200
    ready.collector.update_user("alice", active=False)
    wait_until(lambda: ready.solve().status_code == 403, timeout=5, what="revocation")
    assert_error(ready.solve(), 403, "user_disabled")


def test_offline_keeps_serving_within_leases(ready):
    assert ready.solve().status_code == 200  # alice-web now holds a lease
    ready.collector.sync_down = True
    ready.collector.usage_down = True
    wait_until(lambda: ready.agent.offline, timeout=5, what="offline")
    assert ready.solve().status_code == 200
    assert ready.client.get("/readyz").status_code == 200  # within offline_grace
    assert_error(ready.solve("bob-web"), 402, "insufficient_balance")  # no lease, no allowance
    ready.collector.sync_down = ready.collector.usage_down = False
    ready.shipped(2)


def test_offline_allowance_lets_a_new_key_overdraw_a_little(env):
    env.start(offline_allowance="0.004")
    env.collector.sync_down = True
    wait_until(lambda: env.agent.offline, timeout=5, what="offline")
    assert [env.solve("bob-web").status_code for _ in range(3)] == [200, 200, 402]


def test_drain_is_local_only(ready):
    forwarded = ready.client.post("/admin/drain", headers={"X-Forwarded-For": "127.0.0.1"})
    assert_error(forwarded, 403, "forbidden")
    remote = ready.client.post("/admin/drain", environ_base={"REMOTE_ADDR": "10.0.0.5"})
    assert_error(remote, 403, "forbidden")
    assert ready.client.get("/readyz").status_code == 200


def test_drain_lets_in_flight_solves_finish(ready):
    ready.worker.hold()
    result = {}

    def call():
        result["resp"] = ready.app.test_client().post(
            "/solve", json=fake(hold=True),
            headers={"Authorization": f"Bearer {ready.secrets['alice-web']}"},
        )  # fmt: skip

    thread = threading.Thread(target=call)
    thread.start()
    wait_until(lambda: ready.worker.arrived == 1, timeout=5, what="solve in flight")
    assert ready.client.post("/admin/drain").json == {"status": "draining", "in_flight": 1}
    assert_error(ready.client.get("/readyz"), 503, "draining")
    ready.worker.release()
    thread.join(10)
    assert result["resp"].status_code == 200


def test_shutdown_ships_and_returns_leases(ready):
    for key_id in ("alice-web", "bob-web", "alice-cpm"):
        assert ready.solve(key_id).status_code == 200
    ready.collector.usage_down = True  # the spool must wait for the stop
    ready.solve()
    assert ready.collector.leased("alice-web") > 0
    ready.collector.usage_down = False
    ready.agent.shutdown()
    assert ready.agent.spool.pending == 0 and len(ready.collector.successes()) == 4
    assert all(ready.collector.leased(k) == 0 for k in ("alice-web", "bob-web", "alice-cpm"))
    assert ready.collector.calls("release")
    assert_error(ready.solve(), 503, "draining")
