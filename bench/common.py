"""Shared set-up for the fleet benchmarks: a local stack with one generous key, and printing."""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path

import psutil

from solverfleet import teamconfig
from solverfleet_dev.localstack import LocalStack

PRICE = "0.001"
SECRET = "sk_bench-0123456789abcdef0123456789"
SOLVE_BODY = json.dumps({"type": "turnstile", "url": "https://bench.test/", "params": {}}).encode()
JSON = {"Content-Type": "application/json"}
AUTH = {**JSON, "Authorization": f"Bearer {SECRET}"}


def start_stack(state: Path, *, latency_ms: str, agents: int = 1, **kwargs) -> LocalStack:
    stack = LocalStack(state, agents, worker_latency_ms=latency_ms, **kwargs).start()
    config = teamconfig.parse(
        {
            "account": "bench",
            "prices": {"turnstile": PRICE},
            "users": [{"id": "bench", "keys": [{"id": "bench", "secret": SECRET,
                                                 "balance": "1000000.00"}]}],
        }
    )  # fmt: skip
    with stack.admin_client() as admin:
        admin.apply(config)
    stack.wait_for_key(SECRET)
    return stack


def rss_mib(pid: int) -> float:
    """RSS of a gunicorn master and its workers together."""
    proc = psutil.Process(pid)
    total = proc.memory_info().rss + sum(c.memory_info().rss for c in proc.children(True))
    return total / (1 << 20)


def machine() -> str:
    return (
        f"{platform.node()} · {psutil.cpu_count()} cores · "
        f"{psutil.virtual_memory().total / (1 << 30):.0f} GiB · Python {platform.python_version()}"
        f" · {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}"
    )


def table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(headers, *rows, strict=True)]
    line = lambda cells: "  ".join(str(c).rjust(w) for c, w in zip(cells, widths, strict=True))  # noqa: E731
    return "\n".join([line(headers), line(["-" * w for w in widths]), *map(line, rows)])
