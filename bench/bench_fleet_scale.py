"""Fleet scale: many simulated agents syncing with one real collector on MariaDB.

One private MariaDB (durable), loaded with ``--keys`` keys in 10 accounts (in-process
``apply``, timed) plus one bench key; one collector under gunicorn (its own conf: one
gthread worker) and 2 real agents (``LocalStack``). For each agent count, simulated agents
(threads in ``ceil(n / 100)`` processes, each a real sync client: ``POST /agent/v1/sync`` with
the fleet token, ``deltas: true``, keeping ``config_version`` and paging snapshots with
``snapshot_after``, one sync every 0.25 s, the agents' default) run through three phases:

- idle: ``--idle`` seconds, nothing changes: collector CPU (psutil, gunicorn master + worker)
  per sync served, and sync latency p50/p99 as the simulated agents see it;
- changes: ``--changes`` top-ups one second apart: the CPU above the idle rate, per change
  per agent, and the latency p99 of the syncs that carried a change;
- revocation: ``--rounds`` deactivations of the bench key (bench_revocation.py's round): time
  until both real agents refuse it, p50/p99.

The simulated agents start at the collector's current version (agents already running: their
first snapshot is not part of steady state). Baseline, in the same run at the smallest cell:
agents that do not send ``deltas`` (every change ships the full snapshot). Figures only.

    .venv/bin/python bench/bench_fleet_scale.py [--agents 50,200] [--keys 10000,100000]
        [--idle 15] [--changes 10] [--rounds 5]
"""

from __future__ import annotations

import argparse
import math
import multiprocessing
import random
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
import requests
from bench_revocation import _p, _round
from bench_sync_scale import populate
from common import PRICE, SECRET, machine, rss_mib, table

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from solverfleet.agent.settings import AgentSettings  # noqa: E402
from solverfleet_dev.localstack import LocalStack  # noqa: E402
from tests.support.collector import key_config, make_app, team_config, user_config  # noqa: E402
from tests.support.mariadb import MariaDBServer, binaries  # noqa: E402

INTERVAL = AgentSettings.__dataclass_fields__["sync_interval"].default
SIMS_PER_PROCESS = 100
WARMUP_S = 3.0
REAL_AGENTS = 2
TOPUP_KEY = "k0-0-0"


def sim_agent(url: str, token: str, agent_id: str, deltas: bool, version: int, stop,
              out: list) -> None:  # fmt: skip
    """One simulated agent until ``stop`` is set: (start, seconds, kind) per sync."""
    headers = {"Authorization": f"Bearer {token}"}
    after, paged_version = None, None
    next_at = time.monotonic() + random.uniform(0, INTERVAL)  # spread, as real agents are
    with requests.Session() as session:
        while True:
            now = time.monotonic()
            if after is None:
                if stop.is_set():
                    return
                if now < next_at:
                    time.sleep(next_at - now)
            body = {"agent_id": agent_id, "instance": agent_id, "config_version": version}
            if deltas:
                body["deltas"] = True
                if after is not None:
                    body["snapshot_after"] = after
            start = time.monotonic()
            next_at = max(next_at + INTERVAL, start)
            try:
                resp = session.post(f"{url}/agent/v1/sync", json=body, headers=headers, timeout=30)
                answer = resp.json() if resp.status_code == 200 else None
            except (requests.RequestException, ValueError):
                answer = None
            took = time.monotonic() - start
            if answer is None:
                out.append((start, took, "error"))
                after = None
                continue
            page = answer.get("snapshot_page")
            if page is not None:  # the next page of a snapshot we are fetching
                after = page.get("keys_after")
                version = paged_version if after is None else version
                out.append((start, took, "snapshot"))
            elif answer.get("config") is not None:
                after = answer.get("keys_after")
                paged_version = answer["config_version"]
                version = paged_version if after is None else version
                out.append((start, took, "snapshot"))
            elif answer.get("delta") is not None:
                version = answer["config_version"]
                out.append((start, took, "delta"))
            else:
                out.append((start, took, "idle"))


def sim_process(url: str, token: str, ids: list[str], deltas: bool, version: int, stop,
                queue) -> None:  # fmt: skip
    results: list = []
    threads = [
        threading.Thread(target=sim_agent, args=(url, token, i, deltas, version, stop, results))
        for i in ids
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    queue.put(results)


def cpu_s(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        proc = psutil.Process(pid)
        for p in [proc, *proc.children(recursive=True)]:
            times = p.cpu_times()
            total += times.user + times.system
    return total


def current_version(url: str, token: str) -> int:
    body = {"agent_id": "sim-probe", "instance": "probe", "config_version": None, "deltas": True}
    resp = requests.post(
        f"{url}/agent/v1/sync", json=body, headers={"Authorization": f"Bearer {token}"}, timeout=60
    )
    resp.raise_for_status()
    return resp.json()["config_version"]


def in_window(samples: list, lo: float, hi: float) -> list:
    return [s for s in samples if lo <= s[0] < hi]


def run_cell(stack: LocalStack, mariadb_pid: int, n: int, deltas: bool, args) -> dict:
    url, token = stack.collector_url, stack.fleet_token
    version = current_version(url, token)
    ctx = multiprocessing.get_context("fork")
    queue, stop = ctx.Queue(), ctx.Event()
    procs = []
    per = math.ceil(n / SIMS_PER_PROCESS)
    ids = [f"sim-{'d' if deltas else 'f'}-{i}" for i in range(n)]
    for p in range(per):
        part = ids[p::per]
        procs.append(ctx.Process(target=sim_process, args=(url, token, part, deltas, version,
                                                           stop, queue)))  # fmt: skip
    for proc in procs:
        proc.start()
    collector = [stack.collector.pid]
    try:
        time.sleep(WARMUP_S)  # every simulated agent has synced once (new instance written)
        t0, c0, m0 = time.monotonic(), cpu_s(collector), cpu_s([mariadb_pid])
        time.sleep(args.idle)
        t1, c1, m1 = time.monotonic(), cpu_s(collector), cpu_s([mariadb_pid])
        with stack.admin_client() as admin:
            for _ in range(args.changes):
                admin.topup(TOPUP_KEY, "1.00")
                time.sleep(1.0)
        time.sleep(1.0)  # the last change reaches every agent
        t2, c2, m2 = time.monotonic(), cpu_s(collector), cpu_s([mariadb_pid])
        urls = [f"{stack.agent_url(i)}/balance" for i in range(REAL_AGENTS)]
        revocations = [max(_round(stack, urls)) for _ in range(args.rounds)]
        t3 = time.monotonic()
    finally:
        stop.set()
        samples = []
        for _ in procs:
            samples.extend(queue.get(timeout=120))
        for proc in procs:
            proc.join(10)
    idle = in_window(samples, t0, t1)
    idle_lat = [s[1] for s in idle if s[2] != "error"]
    change = in_window(samples, t1, t2)
    carried = [s[1] for s in change if s[2] in ("delta", "snapshot")]
    real = REAL_AGENTS / INTERVAL  # the real agents' syncs, served beside the simulated ones
    served_idle, served_change = len(idle) + real * (t1 - t0), len(change) + real * (t2 - t1)
    idle_cpu = (c1 - c0) / served_idle
    above = (c2 - c1) - idle_cpu * served_change
    return {
        "agents": n,
        "deltas": deltas,
        "syncs/s": len(idle) / (t1 - t0),
        "errors": sum(1 for s in in_window(samples, t0, t3) if s[2] == "error"),
        "cpu_sync_ms": idle_cpu * 1000,
        "db_cpu_sync_ms": (m1 - m0) / served_idle * 1000,
        "collector_cores": (c1 - c0) / (t1 - t0),
        "p50_ms": _p(idle_lat, 0.5) * 1000 if idle_lat else math.nan,
        "p99_ms": _p(idle_lat, 0.99) * 1000 if idle_lat else math.nan,
        "change_p99_ms": _p(carried, 0.99) * 1000 if carried else math.nan,
        "cpu_change_ms": above / args.changes / n * 1000,
        "db_cpu_change_ms": ((m2 - m1) - (m1 - m0) / (t1 - t0) * (t2 - t1))
        / args.changes
        / n
        * 1000,
        "revoke_p50_ms": _p(revocations, 0.5) * 1000,
        "revoke_p99_ms": _p(revocations, 0.99) * 1000,
    }


def load(db_url: str, keys: int) -> float:
    """Seconds to apply ``keys`` keys (10 accounts) and the bench key, in process."""
    h = make_app(db_url)
    start = time.monotonic()
    populate(h, keys)
    bench = key_config("bench", secret=SECRET, balance="1000000.00")
    h.apply(team_config([user_config("bench", [bench])], account="bench",
                        prices={"turnstile": PRICE}))  # fmt: skip
    took = time.monotonic() - start
    h.db.close()
    return took


def fmt(row: dict) -> list[str]:
    return [
        str(row["keys"]),
        str(row["agents"]),
        "yes" if row["deltas"] else "no (baseline)",
        f"{row['syncs/s']:.0f}",
        f"{row['collector_cores']:.2f}",
        f"{row['cpu_sync_ms']:.2f}",
        f"{row['db_cpu_sync_ms']:.2f}",
        f"{row['p50_ms']:.1f}",
        f"{row['p99_ms']:.1f}",
        f"{row['change_p99_ms']:.1f}",
        f"{row['cpu_change_ms']:.2f}",
        f"{row['db_cpu_change_ms']:.2f}",
        f"{row['revoke_p50_ms']:.0f}",
        f"{row['revoke_p99_ms']:.0f}",
        str(row["errors"]),
    ]


HEADERS = ["keys", "agents", "deltas", "syncs/s", "coll. cores", "CPU/sync ms", "DB CPU/sync ms",
           "sync p50 ms", "sync p99 ms", "change p99 ms", "CPU/change/agent ms",
           "DB CPU/change/agent ms", "revoke p50 ms", "revoke p99 ms", "errors"]  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", default="50,200", help="simulated agent counts")
    parser.add_argument("--keys", default="10000", help="key counts, comma separated")
    parser.add_argument("--idle", type=float, default=15.0, help="seconds of idle syncs")
    parser.add_argument("--changes", type=int, default=10, help="top-ups, one a second")
    parser.add_argument("--rounds", type=int, default=5, help="revocations")
    parser.add_argument("--no-baseline", action="store_true")
    args = parser.parse_args()
    # A SIGTERM (timeout, Ctrl-C's cousin) unwinds: the stack and MariaDB are stopped, not orphaned.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if binaries() is None:
        print("fleet scale: skipped (mariadbd not installed)")
        return 0
    sizes = [int(n) for n in args.agents.split(",")]
    key_counts = [int(k) for k in args.keys.split(",")]
    print(f"fleet scale · {machine()} · sync_interval {INTERVAL} s · {REAL_AGENTS} real agents")
    rows, notes = [], []
    for keys in key_counts:
        with tempfile.TemporaryDirectory(prefix="sf-bench-") as tmp, MariaDBServer(
            durable=True
        ) as server:  # fmt: skip
            db_url = server.create_database("bench")
            took = load(db_url, keys)
            notes.append(f"{keys} keys: apply {took:.1f} s ({took / keys * 1e6:.0f} µs/key)")
            print(notes[-1], flush=True)
            stack = LocalStack(Path(tmp) / "stack", REAL_AGENTS, db_url=db_url,
                               worker_latency_ms="0", ready_timeout=300)  # fmt: skip
            stack.start()
            try:
                stack.wait_for_key(SECRET, timeout=300)
                mem = [rss_mib(stack.collector.pid), rss_mib(stack.agents[0].pid)]
                notes.append(f"{keys} keys: RSS collector {mem[0]:.0f} MiB, agent {mem[1]:.0f} MiB")
                print(notes[-1], flush=True)
                cells = [(n, True) for n in sizes]
                if keys == key_counts[0] and not args.no_baseline:
                    cells.insert(0, (sizes[0], False))
                for n, deltas in cells:
                    row = {"keys": keys, **run_cell(stack, server.service.pid, n, deltas, args)}
                    rows.append(row)
                    print(table(HEADERS, [fmt(row)]), flush=True)
            finally:
                stack.stop()
    print(f"\nfleet scale · {machine()}")
    print(table(HEADERS, [fmt(r) for r in rows]))
    base = next((r for r in rows if not r["deltas"]), None)
    same = next((r for r in rows if r["deltas"] and base and r["agents"] == base["agents"]
                 and r["keys"] == base["keys"]), None)  # fmt: skip
    if base and same:
        print(
            f"\ndeltas vs baseline at {base['agents']} agents x {base['keys']} keys: CPU per change"
            f" per agent {base['cpu_change_ms'] / max(same['cpu_change_ms'], 1e-3):.0f}x lower,"
            f" change p99 {base['change_p99_ms']:.1f} → {same['change_p99_ms']:.1f} ms"
        )
    print("\n".join(["", *notes]))
    print(
        "CPU: gunicorn master + worker (psutil); DB CPU: mariadbd, beside it. Syncs served: the"
        f" simulated agents' plus {REAL_AGENTS / INTERVAL:.0f}/s for the {REAL_AGENTS} real agents"
        " (syncs/s column: simulated only). CPU per change: the change phase's CPU above the idle"
        " rate, per top-up per agent."
        " Simulated agents and collector share the machine's cores."
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
