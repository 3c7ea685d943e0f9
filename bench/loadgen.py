"""A small open-loop HTTP load generator for the benchmarks (gevent + urllib3).

Open loop: requests start on a fixed schedule whatever the server does, and latency is measured
from the *scheduled* start, so a stalled server shows up in p99 instead of silently slowing the
client down (no coordinated omission). Every run is bounded in count and time.
"""

from __future__ import annotations

from gevent import monkey

monkey.patch_all()

import statistics  # noqa: E402
import time  # noqa: E402
from collections import Counter  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from urllib.parse import urlsplit  # noqa: E402

import gevent  # noqa: E402
import gevent.pool  # noqa: E402
import urllib3  # noqa: E402


@dataclass
class Result:
    label: str
    sent: int = 0
    statuses: Counter = field(default_factory=Counter)
    latencies_ms: list[float] = field(default_factory=list)
    elapsed_s: float = 0.0

    @property
    def ok(self) -> int:
        return sum(n for code, n in self.statuses.items() if isinstance(code, int) and code < 400)

    @property
    def errors(self) -> int:
        return self.sent - self.ok

    @property
    def throughput(self) -> float:
        return self.ok / self.elapsed_s if self.elapsed_s else 0.0

    def percentile(self, pct: float) -> float:
        if not self.latencies_ms:
            return float("nan")
        ordered = sorted(self.latencies_ms)
        index = min(len(ordered) - 1, max(0, round(pct / 100 * len(ordered)) - 1))
        return ordered[index]

    @property
    def p50(self) -> float:
        return statistics.median(self.latencies_ms) if self.latencies_ms else float("nan")

    @property
    def p99(self) -> float:
        return self.percentile(99)


def _pool(url: str, size: int, timeout: float) -> tuple[urllib3.HTTPConnectionPool, str]:
    parts = urlsplit(url)
    pool = urllib3.HTTPConnectionPool(
        parts.hostname,
        parts.port,
        maxsize=size,
        block=True,
        timeout=urllib3.Timeout(total=timeout),
        retries=False,
    )
    return pool, parts.path or "/"


def run_open_loop(
    label: str,
    url: str,
    *,
    body: bytes,
    headers: dict[str, str],
    rate: float,
    duration: float,
    max_in_flight: int = 2000,
    timeout: float = 30.0,
    warmup: float = 1.0,
) -> Result:
    """Send ``rate`` requests/s for ``warmup + duration`` seconds; measure only after warm-up."""
    pool, path = _pool(url, max_in_flight, timeout)
    result = Result(label)
    group = gevent.pool.Pool(max_in_flight)
    interval = 1.0 / rate
    total = int(rate * (warmup + duration))
    measured_from = int(rate * warmup)
    start = time.perf_counter()

    def one(i: int, scheduled: float) -> None:
        try:
            resp = pool.urlopen("POST", path, body=body, headers=headers, preload_content=True)
            status: int | str = resp.status
        except Exception as exc:
            status = type(exc).__name__
        if i >= measured_from:
            result.latencies_ms.append((time.perf_counter() - scheduled) * 1000)
            result.statuses[status] += 1
            result.sent += 1

    for i in range(total):
        scheduled = start + i * interval
        delay = scheduled - time.perf_counter()
        if delay > 0:
            gevent.sleep(delay)
        if i == measured_from:
            measure_start = time.perf_counter()
        group.spawn(one, i, scheduled)
    group.join(timeout=timeout + 5)
    group.kill()
    result.elapsed_s = time.perf_counter() - measure_start
    return result


def run_concurrent(
    label: str,
    url: str,
    *,
    body: bytes,
    headers: dict[str, str],
    concurrency: int,
    timeout: float = 60.0,
) -> Result:
    """Hold ``concurrency`` requests open at once (one each), wait for all of them."""
    pool, path = _pool(url, concurrency, timeout)
    result = Result(label)
    start = time.perf_counter()

    def one() -> None:
        began = time.perf_counter()
        try:
            resp = pool.urlopen("POST", path, body=body, headers=headers, preload_content=True)
            status: int | str = resp.status
        except Exception as exc:
            status = type(exc).__name__
        result.latencies_ms.append((time.perf_counter() - began) * 1000)
        result.statuses[status] += 1
        result.sent += 1

    greenlets = [gevent.spawn(one) for _ in range(concurrency)]
    gevent.joinall(greenlets, timeout=timeout + 5)
    gevent.killall(greenlets)
    result.elapsed_s = time.perf_counter() - start
    return result
