"""What observability adds to the agent's hot path: the per-solve counters and the per-request
middleware (request id, X-Request-Id echo, request counter).

Prints median and p99 in microseconds: ``count_event`` (what every recorded solve pays)
against a baseline of one dict increment; the request-id middleware around a no-op app; and
a whole Flask request (``GET /healthz``, a direct WSGI call) with and without it, in
alternating rounds on the same app.
Also the time to render /metrics (scrapes, not the hot path). Figures only, no assertions.

    .venv/bin/python bench/bench_obs.py [--calls 100000] [--requests 20000]
"""

from __future__ import annotations

import argparse
import gc
import statistics
import tempfile
import time
from collections.abc import Callable

from werkzeug.test import EnvironBuilder

from solverfleet.agent import agent_of, create_app
from solverfleet.agent.metrics import count_event
from solverfleet.agent.settings import AgentSettings


def measure(fn: Callable[[int], object], calls: int) -> list[float]:
    clock = time.perf_counter_ns
    samples = []
    for i in range(calls):
        start = clock()
        fn(i)
        samples.append((clock() - start) / 1000)
    return samples


def summary(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered), ordered[int(len(ordered) * 0.99)]


def row(name: str, samples: list[float]) -> tuple[float, float]:
    median, p99 = summary(samples)
    print(f"| {name} | {median:.2f} | {p99:.2f} |")
    return median, p99


def middleware_alone(app, calls: int) -> list[float]:
    """The request-id middleware around a WSGI app that does nothing."""
    from solverfleet.obs.web import RequestIds

    def nothing(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b""]

    wrapped = RequestIds(nothing, app.wsgi_app.counter)
    environ = EnvironBuilder(path="/healthz", headers={"X-Request-Id": "bench-1"}).get_environ()
    return measure(lambda _i: wrapped(dict(environ), lambda *_a: None), calls)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()
    state = tempfile.mkdtemp(prefix="bench-obs-")
    settings = AgentSettings(collector_url="http://127.0.0.1:9", fleet_token="t", state_dir=state)
    app = create_app(settings, start_background=False)
    event = {"type": "turnstile", "status": "success", "duration_ms": 412}
    counts: dict[str, int] = {"k": 0}

    def baseline(_i: int) -> None:
        counts["k"] = counts["k"] + 1

    n = args.calls
    gc.disable()
    print(f"calls={args.calls} requests={args.requests}x{args.rounds} rounds\n")
    print("| what | median µs | p99 µs |\n|---|---|---|")
    row("baseline: one dict increment", measure(baseline, args.calls))
    row("count_event (solves + duration histogram)", measure(lambda _i: count_event(event), n))
    row("the request-id middleware alone", middleware_alone(app, args.calls))
    wrapped = app.wsgi_app
    bare = wrapped.wsgi_app
    with_mw: list[float] = []
    without: list[float] = []
    environ = EnvironBuilder(path="/healthz", headers={"X-Request-Id": "bench-1"}).get_environ()

    def healthz(_i: int) -> None:
        for _chunk in app.wsgi_app(dict(environ), lambda *_a: None):
            pass

    gc.enable()  # requests make cyclic garbage: without collection later rounds slow down
    for i in range(args.rounds):  # ABBA order: drift on a busy machine hits both sides
        for wsgi, samples in ((bare, without), (wrapped, with_mw))[:: 1 if i % 2 else -1]:
            app.wsgi_app = wsgi
            gc.collect()
            samples += measure(healthz, args.requests)
    base_median, base_p99 = row("GET /healthz (WSGI call) without the middleware", without)
    mw_median, mw_p99 = row("GET /healthz (WSGI call) with the middleware", with_mw)
    print(f"| added | {mw_median - base_median:.2f} | {mw_p99 - base_p99:.2f} |")
    client = app.test_client()
    row("render /metrics (scrape)", measure(lambda _i: client.get("/metrics"), 2_000))
    agent_of(app).close()


if __name__ == "__main__":
    main()
