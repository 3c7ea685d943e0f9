"""Microbenchmark of the agent's pre-check decision (authenticate + admit with holds).

Prints median and p99 in microseconds for the full decision and for a baseline (sha256 of
the key + one dict lookup: the least any key check can cost), and their ratio. Figures only,
no assertions: machines differ. Target: median <= 5 us.

    .venv/bin/python bench/bench_precheck.py [--calls 200000] [--keys 10000]
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import os
import statistics
import sys
import time

from solverfleet.agent import precheck
from solverfleet.agent.keystore import parse_snapshot
from solverfleet.agent.limiter import Limiter
from solverfleet.keyhash import hash_secret


def build(keys: int):
    users = [{"id": f"u{i}", "daily_limit": 10**9, "active": True} for i in range(keys)]
    key_rows = [
        {
            "id": f"k{i}",
            "secret_hash": hash_secret(f"sk_bench_{i:08d}_padding_to_46_chars_xx"),
            "user_id": f"u{i}",
            "allowed_types": ["turnstile", "recaptcha-v2"],
            "cpm": 10**9,
            "ip_allowlist": ["10.0.0.0/8", "192.168.0.0/16", "127.0.0.0/8"],
            "active": True,
            "balance_micros": 10**12,
        }
        for i in range(keys)
    ]
    snap = parse_snapshot(1, {"prices": {"turnstile": 2000}, "users": users, "keys": key_rows})
    limiter = Limiter()
    now = time.time()
    grants = []
    for i in range(keys):
        grants.append({"kind": "balance", "key_id": f"k{i}", "granted_micros": 10**12,
                       "held_micros": 10**12})  # fmt: skip
        grants.append({"kind": "cpm", "key_id": f"k{i}", "window": int(now // 60),
                       "granted": 10**9, "held": 10**9})  # fmt: skip
        grants.append({"kind": "daily", "user_id": f"u{i}",
                       "day": time.strftime("%Y-%m-%d", time.gmtime(now)),
                       "granted": 10**9, "held": 10**9})  # fmt: skip
    limiter.apply_grants(grants)
    return snap, limiter


def measure(fn, calls: int) -> list[float]:
    samples = []
    clock = time.perf_counter_ns
    for i in range(calls):
        start = clock()
        fn(i)
        samples.append((clock() - start) / 1000)
    return samples


def summary(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered), ordered[int(len(ordered) * 0.99)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200_000)
    parser.add_argument("--keys", type=int, default=10_000)
    args = parser.parse_args()
    snap, limiter = build(args.keys)
    secrets = [f"sk_bench_{i % args.keys:08d}_padding_to_46_chars_xx" for i in range(args.calls)]
    now = time.time()
    holds = []

    def decide(i: int) -> None:
        decision = precheck.check(snap, limiter, secrets[i], "turnstile", "10.1.2.3", now)
        holds.append(decision.hold)

    def baseline(i: int) -> None:
        snap.by_hash.get(hashlib.sha256(secrets[i].encode()).digest())

    gc.disable()  # collector pauses are real but not the decision's cost
    measure(decide, 2000)  # warm caches
    for hold in holds:
        limiter.release(hold)
    holds.clear()
    base = summary(measure(baseline, args.calls))
    full = summary(measure(decide, args.calls))
    assert all(h is not None for h in holds), "bench setup: a decision was refused"
    gc.enable()
    load = os.getloadavg()[0]
    print(f"pre-check benchmark: {args.calls} calls over {args.keys} keys")
    print(f"(python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load average {load:.2f})")
    print(f"{'':28}{'median us':>10}{'p99 us':>10}")
    print(f"{'baseline (sha256 + dict)':28}{base[0]:>10.2f}{base[1]:>10.2f}")
    print(f"{'precheck (full decision)':28}{full[0]:>10.2f}{full[1]:>10.2f}")
    print(f"{'ratio precheck/baseline':28}{full[0] / base[0]:>10.2f}{full[1] / base[1]:>10.2f}")
    print(f"target: median <= 5 us -> {'met' if full[0] <= 5 else 'NOT met'}")


if __name__ == "__main__":
    main()
