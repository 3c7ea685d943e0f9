"""Lease contention: false refusals, overdraft and limit overshoot on 1, 3 and 5 agents.

One local stack (collector, worker, N agents under gunicorn) per agent count; each cell uses
fresh keys. Printed per cell:

- money: M client threads spend a key holding 40 solves' worth, round-robin over the agents,
  until it is spent or 30 s pass. Overdraft (how far below zero the key went, exact micros)
  beside the promise's bound, -(peak solves in flight x price); *false refusals*: 402s answered
  while the fleet could still afford the call (successes so far + other calls in flight < 40;
  conservative: a call in flight may still fail). With one client the calls are sequential and
  every 402 before the 40th success is false.
- limit: M clients spend a user's daily limit of 100; after 20 successes the limit is lowered
  to 40. Overshoot: successes past 40, beside the calls in flight at the change.

The one-agent rows are the baseline (no other agent can hold credit). Exits 1 if a cell breaks
the overdraft bound, has a false refusal, or if usage at the collector differs from what the
clients saw.

    .venv/bin/python bench/bench_lease.py [--agents 1,3,5] [--clients 1,16]
"""

from __future__ import annotations

import argparse
import itertools
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
from solverfleet_dev.localstack import LocalStack

PRICE_MICROS = 10_000  # "0.010"
OPENING_SOLVES = 40
DAILY_BEFORE, DAILY_AFTER, LOWER_AT = 100, 40, 20
LATENCY_MS = "20"  # each solve holds a slot a little, so clients overlap across agents
MAX_CALLS = 2_000  # per client, beside the time cap
BODY = {"type": "turnstile", "url": "https://bench.test/lease", "params": {}}
_CELLS = itertools.count()


def _team(cell: int, daily_limit: int) -> dict:
    opening = Decimal(PRICE_MICROS * OPENING_SOLVES) / 1_000_000
    return teamconfig.parse(
        {
            "account": f"bench{cell}",
            "prices": {"turnstile": str(Decimal(PRICE_MICROS) / 1_000_000)},
            "users": [
                {"id": f"money{cell}", "keys": [{"id": f"money{cell}", "secret": _secret("m", cell),
                                                 "balance": str(opening)}]},
                {"id": f"limit{cell}", "daily_limit": daily_limit,
                 "keys": [{"id": f"limit{cell}", "secret": _secret("l", cell),
                           "balance": "1000.00"}]},
            ],
        }
    )  # fmt: skip


def _secret(kind: str, cell: int) -> str:
    return f"sk_bench-lease-{kind}{cell:04d}-0123456789abcdef"


class Clients:
    """M threads calling the agents round-robin until ``stop()`` says so; counts in flight."""

    def __init__(self, urls: list[str], secret: str) -> None:
        self.urls, self.headers = urls, {"Authorization": f"Bearer {secret}"}
        self.lock = threading.Lock()
        self.in_flight = self.peak = self.successes = 0
        self.false_refusals = 0
        self.on_success = lambda: None
        self.done = threading.Event()

    def run(self, clients: int, seconds: float, afford: int | None = None) -> Counter:
        deadline = time.monotonic() + seconds

        def client(c: int) -> Counter:
            seen: Counter = Counter()
            with requests.Session() as session:
                for i in range(MAX_CALLS):
                    if time.monotonic() > deadline or self.done.is_set():
                        break
                    with self.lock:
                        self.in_flight += 1
                        self.peak = max(self.peak, self.in_flight)
                    try:
                        url = self.urls[(c + i) % len(self.urls)]
                        status = session.post(url, json=BODY, headers=self.headers, timeout=30)
                    finally:
                        with self.lock:
                            self.in_flight -= 1
                    seen[status.status_code] += 1
                    with self.lock:
                        if status.status_code == 200:
                            self.successes += 1
                            self.on_success()
                        elif status.status_code == 402 and afford is not None:
                            # The fleet could still afford it: a false refusal.
                            self.false_refusals += self.successes + self.in_flight < afford
                        if afford is not None and self.successes >= afford:
                            self.done.set()
                    if afford is None and status.status_code == 429 and clients == 1:
                        break
            return seen

        with ThreadPoolExecutor(clients) as pool:
            return sum(pool.map(client, range(clients)), Counter())


def _usage(stack: LocalStack, key_id: str, expected: int) -> tuple[int, int]:
    with stack.admin_client() as admin:
        give_up = time.monotonic() + 30
        while time.monotonic() < give_up:
            recorded = sum(
                row["key_id"] == key_id and row["status"] == "success"
                for row in admin.usage(key_id=key_id, limit=1000)["events"]
            )
            if recorded == expected:
                break
            time.sleep(0.1)  # agents ship usage within a second or two
        return recorded, int(Decimal(admin.get_key(key_id)["balance"]) * 1_000_000)


def _cell(stack: LocalStack, agents: int, clients: int) -> dict:
    cell = next(_CELLS)
    with stack.admin_client() as admin:
        admin.apply(_team(cell, DAILY_BEFORE))
    stack.wait_for_key(_secret("m", cell))
    stack.wait_for_key(_secret("l", cell))
    urls = [f"{stack.agent_url(i)}/solve" for i in range(agents)]

    money = Clients(urls, _secret("m", cell))
    statuses = money.run(clients, 30, afford=OPENING_SOLVES)
    recorded, final = _usage(stack, f"money{cell}", money.successes)

    limit = Clients(urls, _secret("l", cell))
    change: dict[str, int] = {}

    def lower() -> None:  # called under the clients' lock, at the LOWER_AT-th success
        if limit.successes == LOWER_AT:
            change["in_flight"] = limit.in_flight
            threading.Thread(target=_lower, args=(stack, cell)).start()

    limit.on_success = lower
    limit.run(clients, 10)
    limit_recorded, _ = _usage(stack, f"limit{cell}", limit.successes)
    return {
        "statuses": dict(statuses),
        "ok": money.successes,
        "recorded": recorded,
        "final": final,
        "overdraft": max(0, -final),
        "bound": money.peak * PRICE_MICROS,
        "peak": money.peak,
        "false": money.false_refusals,
        "limit_ok": limit.successes,
        "limit_recorded": limit_recorded,
        "overshoot": max(0, limit.successes - DAILY_AFTER),
        "in_flight_at_change": change.get("in_flight", 0),
    }


def _lower(stack: LocalStack, cell: int) -> None:
    with stack.admin_client() as admin:
        admin.apply(_team(cell, DAILY_AFTER))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", default="1,3,5")
    parser.add_argument("--clients", default="1,16")
    args = parser.parse_args()
    print(
        f"lease contention · {machine()} · opening {OPENING_SOLVES} solves "
        f"({PRICE_MICROS * OPENING_SOLVES} micros), worker {LATENCY_MS} ms · daily limit "
        f"{DAILY_BEFORE} lowered to {DAILY_AFTER} after {LOWER_AT} solves"
    )
    rows, broken = [], []
    for agents in (int(n) for n in args.agents.split(",")):
        with tempfile.TemporaryDirectory(prefix="sf-bench-") as tmp:
            stack = LocalStack(Path(tmp) / "stack", agents, worker_latency_ms=LATENCY_MS).start()
            try:
                for clients in (int(n) for n in args.clients.split(",")):
                    r = _cell(stack, agents, clients)
                    rows.append(_row(agents, clients, r, broken))
            finally:
                stack.stop()
    headers = ["agents", "clients", "successes", "usage", "final micros", "overdraft", "bound"]
    more = ["false 402s", "limit successes", "overshoot", "in flight at change", "check"]
    print(table([*headers, *more], rows))
    for r in broken:
        print(f"BROKEN: {r}")
    return 1 if broken else 0


def _row(agents: int, clients: int, r: dict, broken: list) -> list[str]:
    exact = r["recorded"] == r["ok"] and r["final"] == PRICE_MICROS * (OPENING_SOLVES - r["ok"])
    exact = exact and r["limit_recorded"] == r["limit_ok"]
    ok = exact and r["overdraft"] <= r["bound"] and set(r["statuses"]) <= {200, 402}
    ok = ok and r["false"] == 0
    if not ok:
        broken.append({"agents": agents, "clients": clients, **r})
    return [
        str(agents),
        str(clients),
        str(r["ok"]),
        str(r["recorded"]),
        str(r["final"]),
        str(r["overdraft"]),
        f"-{r['bound']} ({r['peak']} in flight)",
        str(r["false"]),
        str(r["limit_ok"]),
        str(r["overshoot"]),
        str(r["in_flight_at_change"]),
        "ok" if ok else "BROKEN",
    ]


if __name__ == "__main__":
    raise SystemExit(main())
