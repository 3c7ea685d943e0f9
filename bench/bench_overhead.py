"""What the agent adds: the worker called directly, through HAProxy, and through one agent.

Open-loop load at a fixed rate (default 1,000 solves/s) for each target, at 0 ms and 50 ms
worker latency, in one run. Prints throughput, p50, p99 and the p99 added over the direct call.
Target: the agent adds <= 2 ms p99 at 1,000 solves/s. Figures only; nothing is asserted.

    .venv/bin/python bench/bench_overhead.py [--rate 1000] [--seconds 10]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import loadgen
from common import AUTH, JSON, SOLVE_BODY, machine, start_stack, table
from haproxy import start_haproxy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=1000)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--latencies", default="0,50", help="worker latencies in ms")
    args = parser.parse_args()
    print(f"agent overhead · {machine()} · {args.rate:.0f}/s for {args.seconds:.0f}s per target")
    rows = []
    for latency in args.latencies.split(","):
        with tempfile.TemporaryDirectory(prefix="sf-bench-") as tmp:
            stack = start_stack(Path(tmp) / "stack", latency_ms=latency)
            haproxy = None
            try:
                haproxy, lb_url = start_haproxy(stack.worker_url, Path(tmp))
                targets = [
                    ("worker direct", f"{stack.worker_url}/work", JSON),
                    ("haproxy -> worker", f"{lb_url}/work", JSON),
                    ("agent -> worker", f"{stack.agent_url(0)}/solve", AUTH),
                ]
                results = []
                for label, url, headers in targets:
                    results.append(
                        loadgen.run_open_loop(
                            label,
                            url,
                            body=SOLVE_BODY,
                            headers=headers,
                            rate=args.rate,
                            duration=args.seconds,
                        )
                    )
                base = results[0]
                for r in results:
                    rows.append(
                        [
                            f"{latency} ms",
                            r.label,
                            f"{r.throughput:.0f}/s",
                            f"{r.p50:.2f}",
                            f"{r.p99:.2f}",
                            f"{r.p99 - base.p99:+.2f}",
                            f"{r.p99 / base.p99:.2f}x",
                            str(r.errors),
                        ]
                    )
            finally:
                if haproxy is not None:
                    haproxy.stop()
                stack.stop()
    headers = ["worker", "target", "ok/s", "p50 ms", "p99 ms", "p99 added", "p99 ratio", "errors"]
    print(table(headers, rows))


if __name__ == "__main__":
    main()
