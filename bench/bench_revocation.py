"""Revocation: a key deactivated at the collector -> the first refusal on every agent.

For 1, 3 and 5 agents (local stack: collector, worker, agents under gunicorn), each round
re-activates the bench key, waits until every agent accepts it, deactivates it through the admin
API and times, per agent, the first 403 on ``GET /balance`` (one polling thread per agent, a call
every ~2 ms). Prints p50/p99/max of "every agent refuses" per fleet size; the one-agent run is
the baseline the others are divided by. Target: every agent refuses within 1 s. The agents learn
deactivations on their sync with the collector (``sync_interval``, printed below), so that
interval is the floor of these figures.

    .venv/bin/python bench/bench_revocation.py [--agents 1,3,5] [--rounds 25]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from pathlib import Path

import requests
from common import SECRET, machine, start_stack, table

from solverfleet.agent.settings import AgentSettings

KEY_ID = "bench"
TARGET_S = 1.0
POLL_S = 0.002
GIVE_UP_S = 10.0


def _status(session: requests.Session, url: str) -> int:
    return session.get(url, headers={"Authorization": f"Bearer {SECRET}"}, timeout=5).status_code


def _wait_all(urls: list[str], want: int, what: str) -> None:
    deadline = time.monotonic() + GIVE_UP_S
    with requests.Session() as session:
        for url in urls:
            while _status(session, url) != want:
                if time.monotonic() > deadline:
                    raise SystemExit(f"{what}: {url} still not {want} after {GIVE_UP_S}s")
                time.sleep(0.01)


def _round(stack, urls: list[str]) -> list[float]:
    """Seconds from the admin call's return to each agent's first refusal."""
    with stack.admin_client() as admin:
        admin.set_key_active(KEY_ID, True)
    _wait_all(urls, 200, "re-activation")
    refused_at: list[float | None] = [None] * len(urls)
    go = threading.Event()

    def poll(i: int, url: str) -> None:
        with requests.Session() as session:
            go.wait()
            deadline = time.monotonic() + GIVE_UP_S
            while time.monotonic() < deadline:
                if _status(session, url) == 403:
                    refused_at[i] = time.monotonic()
                    return
                time.sleep(POLL_S)

    threads = [threading.Thread(target=poll, args=(i, u)) for i, u in enumerate(urls)]
    for t in threads:
        t.start()
    with stack.admin_client() as admin:
        started = time.monotonic()
        admin.set_key_active(KEY_ID, False)
    go.set()
    for t in threads:
        t.join(GIVE_UP_S + 5)
    missing = [urls[i] for i, at in enumerate(refused_at) if at is None]
    if missing:
        raise SystemExit(f"no refusal within {GIVE_UP_S}s from {missing}")
    return [at - started for at in refused_at]  # type: ignore[operator]


def _p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", default="1,3,5", help="fleet sizes, comma separated")
    parser.add_argument("--rounds", type=int, default=25)
    args = parser.parse_args()
    sizes = [int(n) for n in args.agents.split(",")]
    sync = AgentSettings.__dataclass_fields__["sync_interval"].default
    print(f"revocation · {machine()} · {args.rounds} rounds · agents' sync_interval {sync} s")
    rows, baseline, failed = [], None, False
    for n in sizes:
        with tempfile.TemporaryDirectory(prefix="sf-bench-") as tmp:
            stack = start_stack(Path(tmp) / "stack", latency_ms="0", agents=n)
            try:
                urls = [f"{stack.agent_url(i)}/balance" for i in range(n)]
                every, each = [], []
                for _ in range(args.rounds):
                    seconds = _round(stack, urls)
                    every.append(max(seconds))
                    each.extend(seconds)
            finally:
                stack.stop()
        p50, p99, worst = _p(every, 0.5), _p(every, 0.99), max(every)
        baseline = baseline or p50
        verdict = "PASS" if p99 <= TARGET_S else "FAIL"
        failed |= verdict == "FAIL"
        rows.append(
            [
                str(n),
                f"{statistics.median(each) * 1000:.0f}",
                f"{p50 * 1000:.0f}",
                f"{p99 * 1000:.0f}",
                f"{worst * 1000:.0f}",
                f"{p50 / baseline:.2f}x",
                verdict,
            ]
        )
    headers = ["agents", "one agent p50 ms", "all p50 ms", "all p99 ms", "all max ms"]
    print(table([*headers, "p50 vs 1 agent", f"p99 <= {TARGET_S:g} s"], rows))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
