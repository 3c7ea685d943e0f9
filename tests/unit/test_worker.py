"""Demo worker: request validation, overrides, failure rate, counters."""

from __future__ import annotations

import threading

import pytest

from solverfleet.settings import SettingsError, load_settings
from solverfleet.worker import WorkerSettings, create_app

BODY = {"type": "turnstile", "url": "https://example.com/login", "params": {}}


def client(**settings):
    settings.setdefault("latency_ms", "0")
    return create_app(WorkerSettings(**settings)).test_client()


def demo(**override):
    return {**BODY, "params": {"demo": override}}


def test_work_answers_an_opaque_token():
    c = client()
    resp = c.post("/work", json=BODY)
    assert resp.status_code == 200
    token = resp.get_json()["result"]
    assert isinstance(token, str) and len(token) > 20
    assert c.post("/work", json=BODY).get_json()["result"] != token


def test_stats_count_successes_and_failures():
    c = client()
    c.post("/work", json=BODY)
    c.post("/work", json=BODY)
    assert c.post("/work", json=demo(fail=True)).status_code == 500
    assert c.get("/stats").get_json() == {"success": 2, "failure": 1}


def test_forced_failure_answers_worker_failed():
    resp = client().post("/work", json=demo(fail=True, latency_ms=0))
    assert resp.status_code == 500
    assert resp.get_json() == {"error": "worker_failed"}


def test_forced_success_overrides_failure_rate():
    c = client(failure_rate=1.0)
    assert c.post("/work", json=BODY).status_code == 500
    assert c.post("/work", json=demo(fail=False)).status_code == 200


def test_failure_rate_one_always_fails_and_zero_never():
    failing, fine = client(failure_rate=1), client(failure_rate=0)
    assert {failing.post("/work", json=BODY).status_code for _ in range(20)} == {500}
    assert {fine.post("/work", json=BODY).status_code for _ in range(20)} == {200}


def test_seeded_failures_are_reproducible():
    def outcomes():
        c = client(failure_rate=0.5, seed=7)
        return [c.post("/work", json=BODY).status_code for _ in range(40)]

    first = outcomes()
    assert first == outcomes()
    assert {200, 500} == set(first)


def test_latency_override_delays_the_answer(monkeypatch):
    slept = []
    monkeypatch.setattr("solverfleet.worker.app.time.sleep", slept.append)
    c = client(latency_ms="20-80")
    c.post("/work", json=demo(latency_ms=1234))
    c.post("/work", json=BODY)
    assert slept[0] == pytest.approx(1.234)
    assert 0.02 <= slept[1] <= 0.08


@pytest.mark.parametrize(
    "body",
    [
        None,
        [],
        {"url": "x"},
        {"type": ""},
        {"type": 5},
        {"type": "t", "url": 5},
        {"type": "t", "params": []},
        {"type": "t", "params": {"demo": {"latency_ms": -1}}},
        {"type": "t", "params": {"demo": {"latency_ms": "5"}}},
        {"type": "t", "params": {"demo": {"latency_ms": True}}},
        {"type": "t", "params": {"demo": {"fail": "yes"}}},
        {"type": "t", "params": {"demo": {"hang": True}}},
    ],
)
def test_bad_bodies_get_400_and_count_nothing(body):
    c = client()
    resp = c.post("/work", json=body) if body is not None else c.post("/work", data="{")
    assert resp.status_code == 400
    assert resp.get_json()["error"] == "bad_request"
    assert c.get("/stats").get_json() == {"success": 0, "failure": 0}


def test_healthz_and_json_404():
    c = client()
    assert c.get("/healthz").get_json() == {"status": "ok"}
    resp = c.get("/nope")
    assert resp.status_code == 404 and resp.get_json()["error"] == "not_found"


def test_counters_are_thread_safe():
    c = create_app(WorkerSettings(latency_ms="0"))
    counters = c.extensions["solverfleet_worker_counters"]
    threads = [
        threading.Thread(target=lambda: [counters.add(i % 2 == 0) for i in range(5000)])
        for _ in range(8)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert counters.snapshot() == {"success": 20000, "failure": 20000}


@pytest.mark.parametrize("latency", ["50", "20-80", " 5 - 9 ", "0"])
def test_latency_settings_accepted(latency):
    low, high = WorkerSettings(latency_ms=latency).latency_range()
    assert 0 <= low <= high


@pytest.mark.parametrize("latency", ["", "fast", "80-20", "-5", "1.5", "1-2-3"])
def test_bad_latency_settings_refused(latency):
    with pytest.raises(SettingsError, match="latency_ms"):
        WorkerSettings(latency_ms=latency)


@pytest.mark.parametrize("rate", [-0.1, 1.5, float("nan")])
def test_bad_failure_rate_refused(rate):
    with pytest.raises(SettingsError, match="failure_rate"):
        WorkerSettings(failure_rate=rate)


def test_settings_from_environment():
    env = {"SOLVERFLEET_LATENCY_MS": "20-80", "SOLVERFLEET_FAILURE_RATE": "0.25"}
    settings = load_settings(WorkerSettings, env=env)
    assert settings.latency_range() == (20, 80)
    assert settings.failure_rate == 0.25
    assert settings.seed is None
    with pytest.raises(SettingsError):
        load_settings(WorkerSettings, env={"SOLVERFLEET_FAILURE_RATE": "2"})
