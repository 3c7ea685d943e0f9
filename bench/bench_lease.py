"""Lease contention: N agents x M clients spending one key with a small balance.

A local stack (collector, worker, N agents under gunicorn) and a key holding 40 solves' worth.
M client threads call the agents round-robin until the whole balance is spent (40 successes) or
30 s pass. Printed per grid cell: successes, usage at the collector, final balance, the measured
overdraft (how far below zero the key went, exact micros) against the bound from the design
promise, -(peak solves in flight across the fleet x price); also the 402s answered while credit
was still leased to other agents, and the time to spend the balance. The one-agent rows are the
baseline (no other agent can hold credit). Exits 1 if any cell breaks the bound, or if usage at
the collector differs from the successes the clients saw.

    .venv/bin/python bench/bench_lease.py [--agents 1,2,4] [--clients 4,16]
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path

import requests
from common import machine, table

from solverfleet import teamconfig
from solverfleet.localstack import LocalStack

PRICE_MICROS = 10_000  # "0.010"
OPENING_SOLVES = 40
SECRET = "sk_bench-lease-0123456789abcdef0123"
LATENCY_MS = "20"  # each solve holds a slot a little, so clients overlap across agents
MAX_CALLS = 2_000  # per client, beside the 30 s cap


def _micros(text: str) -> int:
    return int(Decimal(text) * 1_000_000)


def _start(tmp: Path, agents: int) -> LocalStack:
    stack = LocalStack(tmp / "stack", agents, worker_latency_ms=LATENCY_MS).start()
    opening = Decimal(PRICE_MICROS * OPENING_SOLVES) / 1_000_000
    config = teamconfig.parse(
        {
            "account": "bench",
            "prices": {"turnstile": str(Decimal(PRICE_MICROS) / 1_000_000)},
            "users": [{"id": "lease", "keys": [{"id": "lease", "secret": SECRET,
                                                "balance": str(opening)}]}],
        }
    )  # fmt: skip
    with stack.admin_client() as admin:
        admin.apply(config)
    stack.wait_for_key(SECRET)
    return stack


def _cell(agents: int, clients: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="sf-bench-") as tmp:
        stack = _start(Path(tmp), agents)
        try:
            urls = [f"{stack.agent_url(i)}/solve" for i in range(agents)]
            lock = threading.Lock()
            in_flight = peak = 0
            successes = [0]
            body = {"type": "turnstile", "url": "https://bench.test/lease", "params": {}}
            headers = {"Authorization": f"Bearer {SECRET}"}
            started = time.monotonic()
            deadline = started + 30
            spent_at: list[float] = []

            def client(c: int) -> Counter:
                nonlocal in_flight, peak
                seen: Counter = Counter()
                with requests.Session() as session:
                    for i in range(MAX_CALLS):
                        if time.monotonic() > deadline or spent_at:
                            break
                        with lock:
                            in_flight += 1
                            peak = max(peak, in_flight)
                        try:
                            url = urls[(c + i) % len(urls)]
                            status = session.post(url, json=body, headers=headers, timeout=30)
                        finally:
                            with lock:
                                in_flight -= 1
                        seen[status.status_code] += 1
                        if status.status_code == 200:
                            with lock:
                                successes[0] += 1
                                if successes[0] >= OPENING_SOLVES and not spent_at:
                                    spent_at.append(time.monotonic())
                return seen

            with ThreadPoolExecutor(clients) as pool:
                totals = sum(pool.map(client, range(clients)), Counter())
            ok = totals[200]
            with stack.admin_client() as admin:
                give_up = time.monotonic() + 30
                while admin.summary()["successes"] != ok and time.monotonic() < give_up:
                    time.sleep(0.1)  # agents ship usage within a second or two
                recorded = admin.summary()["successes"]
                final = _micros(admin.get_key("lease")["balance"])
        finally:
            stack.stop()
    return {
        "agents": agents,
        "clients": clients,
        "statuses": dict(totals),
        "ok": ok,
        "recorded": recorded,
        "final": final,
        "overdraft": max(0, -final),
        "bound": peak * PRICE_MICROS,
        "peak": peak,
        "spend_s": (spent_at[0] - started) if spent_at else None,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", default="1,2,4")
    parser.add_argument("--clients", default="4,16")
    args = parser.parse_args()
    print(
        f"lease contention · {machine()} · opening {OPENING_SOLVES} solves "
        f"({PRICE_MICROS * OPENING_SOLVES} micros), worker {LATENCY_MS} ms"
    )
    rows, broken = [], []
    for agents in (int(n) for n in args.agents.split(",")):
        for clients in (int(n) for n in args.clients.split(",")):
            r = _cell(agents, clients)
            ratio = r["overdraft"] / r["bound"] if r["bound"] else 0.0
            exact = r["recorded"] == r["ok"] and (
                r["final"] == PRICE_MICROS * (OPENING_SOLVES - r["ok"])
            )
            ok = exact and r["overdraft"] <= r["bound"] and set(r["statuses"]) <= {200, 402}
            if not ok:
                broken.append(r)
            rows.append(
                [
                    str(agents),
                    str(clients),
                    str(r["ok"]),
                    str(r["recorded"]),
                    str(r["final"]),
                    str(r["overdraft"]),
                    f"-{r['bound']} ({r['peak']} in flight)",
                    f"{ratio:.2f}",
                    str(r["statuses"].get(402, 0)),
                    "-" if r["spend_s"] is None else f"{r['spend_s']:.1f}",
                    "ok" if ok else "BROKEN",
                ]
            )
    headers = ["agents", "clients", "successes", "usage", "final micros", "overdraft"]
    more = ["bound", "overdraft/bound", "402s", "s to spend all"]
    print(table([*headers, *more, "check"], rows))
    for r in broken:
        print(f"BROKEN: {r}")
    return 1 if broken else 0


if __name__ == "__main__":
    raise SystemExit(main())
