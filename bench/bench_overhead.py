"""What the agent adds: the worker called directly, through HAProxy, and through one agent.

For each worker latency (0 ms and 50 ms) the same closed-loop load (wrk) is sent to the
worker directly, through HAProxy, and through one agent, in one run. With 50 ms latency and
50 connections the offered load is about 1,000 solves/s. Prints throughput, p50, p99, the p99
the hop adds over the direct call, and the CPU each process spends per request (from psutil),
which bounds what one agent core can carry. Figures only; nothing is asserted.

    .venv/bin/python bench/bench_overhead.py [--seconds 10]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import psutil
import wrk
from common import AUTH, JSON, SOLVE_BODY, machine, start_stack, table
from haproxy import start_haproxy

PROFILES = {"0": 8, "50": 50}  # worker latency ms -> connections (50 ms x 50 conns ~ 1,000/s)


def cpu_seconds(pid: int) -> float:
    proc = psutil.Process(pid)
    total = sum(proc.cpu_times()[:2])
    return total + sum(sum(c.cpu_times()[:2]) for c in proc.children(recursive=True))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10)
    args = parser.parse_args()
    if not wrk.available():
        raise SystemExit("bench_overhead needs wrk: apt-get install wrk (make bench does)")
    print(f"agent overhead · {machine()} · wrk {args.seconds:.0f}s per target")
    rows = []
    for latency, connections in PROFILES.items():
        with tempfile.TemporaryDirectory(prefix="sf-bench-") as tmp:
            stack = start_stack(Path(tmp) / "stack", latency_ms=latency)
            haproxy = None
            try:
                haproxy, lb_url = start_haproxy(stack.worker_url, Path(tmp))
                pids = {"agent": stack.agents[0].pid, "worker": stack.worker.pid,
                        "haproxy": haproxy.pid}  # fmt: skip
                targets = [
                    ("worker direct", f"{stack.worker_url}/work", JSON),
                    ("haproxy -> worker", f"{lb_url}/work", JSON),
                    ("agent -> worker", f"{stack.agent_url(0)}/solve", AUTH),
                ]
                base = None
                for label, url, headers in targets:
                    before = {name: cpu_seconds(pid) for name, pid in pids.items()}
                    r = wrk.run(label, url, body=SOLVE_BODY, headers=headers,
                                connections=connections, seconds=args.seconds)  # fmt: skip
                    spent = {n: cpu_seconds(p) - before[n] for n, p in pids.items()}
                    base = base or r
                    hop = "agent" if label.startswith("agent") else "haproxy"
                    hop_us = spent[hop] / max(1, r.requests) * 1e6 if hop in label else 0.0
                    rows.append([
                        f"{latency} ms", str(connections), r.label, f"{r.throughput:.0f}/s",
                        f"{r.p50_ms:.2f}", f"{r.p99_ms:.2f}", f"{r.p99_ms - base.p99_ms:+.2f}",
                        f"{r.throughput / base.throughput:.2f}x",
                        f"{hop_us:.0f}" if hop_us else "-", str(r.errors),
                    ])  # fmt: skip
            finally:
                if haproxy is not None:
                    haproxy.stop()
                stack.stop()
    headers = ["worker", "conns", "target", "ok/s", "p50 ms", "p99 ms", "p99 added",
               "thru ratio", "hop CPU us/req", "errors"]  # fmt: skip
    print(table(headers, rows))


if __name__ == "__main__":
    main()
