"""Many concurrent HTTP requests held open at once (gevent + urllib3), for capacity benchmarks.

Throughput and latency under steady load are measured with wrk (bench/wrk.py): it costs far
less CPU per request than any Python client. Every run here is bounded in count and time.
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
    def p50(self) -> float:
        return statistics.median(self.latencies_ms) if self.latencies_ms else float("nan")

    @property
    def max(self) -> float:
        return max(self.latencies_ms, default=float("nan"))


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
    parts = urlsplit(url)
    pool = urllib3.HTTPConnectionPool(
        parts.hostname,
        parts.port,
        maxsize=concurrency,
        block=True,
        timeout=urllib3.Timeout(total=timeout),
        retries=False,
    )
    result = Result(label)
    start = time.perf_counter()

    def one() -> None:
        began = time.perf_counter()
        try:
            resp = pool.urlopen("POST", parts.path, body=body, headers=headers)
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
