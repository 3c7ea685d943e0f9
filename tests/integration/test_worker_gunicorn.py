"""The demo worker under gunicorn's gevent worker: real concurrency, overrides, graceful stop."""

from __future__ import annotations

import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from solverfleet.process import Service, free_port, gunicorn_argv, http_ok, wait_until

BODY = {"type": "turnstile", "url": "https://example.com/", "params": {}}


def start_worker(tmp_path, **env) -> tuple[Service, str]:
    port = free_port()
    argv = gunicorn_argv(
        "solverfleet.worker:create_app()",
        bind=f"127.0.0.1:{port}",
        worker_class="gevent",
        extra=["-c", "python:solverfleet.worker.gunicorn_conf"],
    )
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SOLVERFLEET_")}
    svc = Service("worker", argv, env={**clean, **env}, log_dir=tmp_path / "logs").start()
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: http_ok(f"{url}/healthz"), timeout=20, what="worker /healthz")
    except Exception:
        svc.stop(5)
        raise AssertionError(f"worker did not start:\n{svc.log_tail()}") from None
    return svc, url


@pytest.fixture
def slow_worker(tmp_path):
    svc, url = start_worker(tmp_path, SOLVERFLEET_LATENCY_MS="1000")
    yield svc, url
    svc.stop(10)


def post(url, body=BODY, timeout=30):
    # Connection: close, so no idle keep-alive socket makes gunicorn's graceful stop wait.
    resp = requests.post(f"{url}/work", json=body, timeout=timeout, headers={"Connection": "close"})
    resp.close()
    return resp


def test_hundreds_of_slow_calls_wait_concurrently(slow_worker):
    _, url = slow_worker
    calls = 300
    started = time.monotonic()
    with ThreadPoolExecutor(calls) as pool:
        statuses = list(pool.map(lambda _: post(url).status_code, range(calls)))
    elapsed = time.monotonic() - started
    assert statuses == [200] * calls
    # Served one at a time this would take 300 s; concurrently about one latency.
    assert elapsed < 15, elapsed
    assert requests.get(f"{url}/stats", timeout=5).json() == {"success": calls, "failure": 0}


def test_per_request_override_fails_fast(slow_worker):
    _, url = slow_worker
    started = time.monotonic()
    resp = post(url, {**BODY, "params": {"demo": {"latency_ms": 0, "fail": True}}})
    assert resp.status_code == 500
    assert resp.json() == {"error": "worker_failed"}
    assert time.monotonic() - started < 0.9  # did not wait the configured second
    assert requests.get(f"{url}/stats", timeout=5).json() == {"success": 0, "failure": 1}


def test_sigterm_finishes_in_flight_calls(tmp_path):
    svc, url = start_worker(tmp_path, SOLVERFLEET_LATENCY_MS="0")
    try:
        hang = {**BODY, "params": {"demo": {"latency_ms": 2000}}}
        with ThreadPoolExecutor(10) as pool:
            futures = [pool.submit(post, url, hang) for _ in range(10)]
            wait_until(
                lambda: _established(svc.pid, url) >= 10, timeout=10, what="10 calls in flight"
            )
            svc.signal(signal.SIGTERM)
            statuses = [f.result().status_code for f in futures]
        assert statuses == [200] * 10
        assert svc.proc.wait(20) == 0
    finally:
        svc.stop(5)


def _established(master_pid: int, url: str) -> int:
    """Connections the gunicorn worker has accepted on the listening port."""
    import psutil

    port = int(url.rsplit(":", 1)[1])
    count = 0
    for child in psutil.Process(master_pid).children():
        for conn in child.net_connections(kind="tcp"):
            if conn.status == psutil.CONN_ESTABLISHED and conn.laddr.port == port:
                count += 1
    return count
