"""How many solves one agent holds in flight: every solve waits 10 s in the worker.

Opens N concurrent solves through one agent (default 5,000) and reports how many succeeded,
the errors, and the agent's RSS at the peak; the baseline is the same concurrency against the
demo worker directly. Target: 5,000 concurrent solves with 0 errors. Figures only.

    .venv/bin/python bench/bench_inflight.py [--concurrency 5000] [--latency-ms 10000]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import gevent
import loadgen
from common import AUTH, JSON, SOLVE_BODY, machine, rss_mib, start_stack, table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", type=int, default=5000)
    parser.add_argument("--latency-ms", default="10000")
    args = parser.parse_args()
    print(f"in-flight capacity · {machine()} · {args.concurrency} concurrent, {args.latency_ms} ms")
    timeout = int(args.latency_ms) / 1000 + 60
    rows = []
    with tempfile.TemporaryDirectory(prefix="sf-bench-") as tmp:
        stack = start_stack(
            Path(tmp) / "stack",
            latency_ms=args.latency_ms,
            extra_agent_env={"SOLVERFLEET_WORKER_TIMEOUT": str(timeout)},
        )
        try:
            agent_pid = stack.agents[0].pid
            idle_rss = rss_mib(agent_pid)
            for label, url, headers, pid in [
                ("worker direct", f"{stack.worker_url}/work", JSON, stack.worker.pid),
                ("agent -> worker", f"{stack.agent_url(0)}/solve", AUTH, agent_pid),
            ]:
                peak = [0.0]

                def sample(pid=pid, peak=peak) -> None:
                    while True:
                        peak[0] = max(peak[0], rss_mib(pid))
                        gevent.sleep(0.5)

                sampler = gevent.spawn(sample)
                r = loadgen.run_concurrent(
                    label,
                    url,
                    body=SOLVE_BODY,
                    headers=headers,
                    concurrency=args.concurrency,
                    timeout=timeout,
                )
                sampler.kill()
                rows.append(
                    [
                        r.label,
                        str(r.ok),
                        str(r.errors),
                        f"{r.p50 / 1000:.2f}",
                        f"{r.max / 1000:.2f}",
                        f"{peak[0]:.0f}",
                        f"{dict(r.statuses)}",
                    ]
                )
            print(f"agent RSS idle: {idle_rss:.0f} MiB")
        finally:
            stack.stop()
    headers = ["target", "ok", "errors", "p50 s", "max s", "peak RSS MiB", "statuses"]
    print(table(headers, rows))


if __name__ == "__main__":
    main()
