"""Ingest throughput: a real collector (gunicorn) on SQLite and on a private MariaDB.

Posts pre-built batches of usage events from several client threads, prints events/s for
each store side by side, and checks exactly-once: the stored count equals what was sent,
balances dropped by exactly the sum of costs, and re-sending every batch adds nothing.
Figures only; nothing here fails on speed.

    .venv/bin/python bench/bench_ingest.py [--events 200000] [--batch 2000] [--clients 4]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.collector import CollectorProcess, sqlite_url  # noqa: E402
from tests.support.mariadb import MariaDBServer, binaries  # noqa: E402

COST = 2000
T0_MS = int(time.time() * 1000)


def team(keys: int) -> dict:
    return {
        "account": "bench",
        "low_balance_alert": None,
        "prices": {"turnstile": "0.002"},
        "users": [
            {
                "id": f"user{u}",
                "email": None,
                "role": "user",
                "daily_limit": None,
                "active": True,
                "keys": [
                    {
                        "id": f"key{u}",
                        "secret": f"sk_bench_secret_{u:04d}",
                        "project": None,
                        "environment": None,
                        "balance": "1000000.00",
                        "allowed_types": None,
                        "cpm": None,
                        "ip_allowlist": None,
                        "active": True,
                    }
                ],
            }
            for u in range(keys)
        ],
    }


def make_batches(total: int, size: int, keys: int, agents: int) -> list[bytes]:
    bodies = []
    n = 0
    while n < total:
        agent = f"agent{len(bodies) % agents}"
        events = []
        for _ in range(min(size, total - n)):
            k = n % keys
            events.append(
                {
                    "event_id": uuid.uuid4().hex,
                    "ts_ms": T0_MS + n,
                    "request_id": uuid.uuid4().hex[:16],
                    "agent_id": agent,
                    "key_id": f"key{k}",
                    "user_id": f"user{k}",
                    "user_email": f"user{k}@example.com",
                    "account": "bench",
                    "project": "web",
                    "environment": "prod",
                    "type": "turnstile",
                    "url": "https://shop.example.com/checkout?step=2",
                    "status": "success",
                    "error": None,
                    "message": None,
                    "source_ip": "203.0.113.9",
                    "duration_ms": 412,
                    "cost_micros": COST,
                }
            )
            n += 1
        bodies.append(json.dumps({"agent_id": agent, "events": events}).encode())
    return bodies


def post_all(url: str, token: str, bodies: list[bytes], clients: int) -> tuple[float, int, int]:
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    sessions: dict[int, requests.Session] = {}

    def post(i: int) -> tuple[int, int]:
        session = sessions.setdefault(i % clients, requests.Session())
        for _attempt in range(5):  # a 503 is the protocol's "retry", as an agent would
            response = session.post(
                url + "/agent/v1/usage", data=bodies[i], headers=headers, timeout=120
            )
            if response.status_code == 200:
                body = response.json()
                return body["accepted"], body["duplicates"]
            time.sleep(0.2)
        raise RuntimeError(f"batch {i}: HTTP {response.status_code} {response.text[:200]}")

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        results = list(pool.map(post, range(len(bodies))))
    elapsed = time.perf_counter() - started
    return elapsed, sum(a for a, _ in results), sum(d for _, d in results)


def run_one(
    name: str, db_url: str, args: argparse.Namespace, bodies: list[bytes], work: Path
) -> dict:
    proc = CollectorProcess(
        db_url, work, name=f"collector-{name}", workers=args.workers, threads=args.threads
    )
    proc.start()
    try:
        proc.admin("POST", "/admin/v1/apply", json=team(args.keys)).raise_for_status()
        warm = make_batches(args.batch, args.batch, args.keys, args.agents)
        post_all(proc.url, proc.fleet_token, warm, 1)  # warm-up: connections, caches
        before = proc.summary()
        elapsed, accepted, dups = post_all(proc.url, proc.fleet_token, bodies, args.clients)
        after = proc.summary()
        sent = sum(len(json.loads(b)["events"]) for b in bodies)
        replay_elapsed, re_accepted, re_dups = post_all(
            proc.url, proc.fleet_token, bodies, args.clients
        )
        final = proc.summary()
        spent = sum(
            before["keys"][k]["balance_micros"] - final["keys"][k]["balance_micros"]
            for k in final["keys"]
        )
        checks = {
            "stored == sent": after["events"] - before["events"] == sent,
            "accepted == sent": accepted == sent and dups == 0,
            "replay adds 0": re_accepted == 0
            and re_dups == sent
            and final["events"] == after["events"],
            "charged exactly once": spent == sent * COST,
        }
        return {
            "name": name,
            "events": sent,
            "seconds": elapsed,
            "rate": sent / elapsed,
            "replay_rate": sent / replay_elapsed,
            "checks": checks,
        }
    finally:
        proc.stop()


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=2_000, help="events per request (max 5000)")
    parser.add_argument("--clients", type=int, default=4, help="concurrent posting threads")
    parser.add_argument("--keys", type=int, default=50)
    parser.add_argument("--agents", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers")
    parser.add_argument("--threads", type=int, default=4, help="threads per gunicorn worker")
    parser.add_argument("--only", choices=["sqlite", "mariadb"], default=None)
    args = parser.parse_args()

    print(f"building {args.events} events in batches of {args.batch} ...", flush=True)
    bodies = make_batches(args.events, args.batch, args.keys, args.agents)
    results = []
    with tempfile.TemporaryDirectory(prefix="sf-bench-") as tmp:
        work = Path(tmp)
        if args.only in (None, "sqlite"):
            print("sqlite ...", flush=True)
            results.append(run_one("sqlite", sqlite_url(work / "bench.db"), args, bodies, work))
        if args.only in (None, "mariadb"):
            if binaries() is None:
                print("mariadb: skipped (mariadbd not installed)")
            else:
                print("mariadb (durable: innodb_flush_log_at_trx_commit=1) ...", flush=True)
                with MariaDBServer(durable=True) as server:
                    results.append(
                        run_one("mariadb", server.create_database("bench"), args, bodies, work)
                    )

    print()
    head = ("store", "events", "seconds", "events/s", "replay ev/s")
    print(f"{head[0]:<10}{head[1]:>10}{head[2]:>10}{head[3]:>12}{head[4]:>14}  exactly-once")
    ok = True
    for r in results:
        passed = all(r["checks"].values())
        ok &= passed
        detail = (
            "ok" if passed else "FAILED " + ", ".join(k for k, v in r["checks"].items() if not v)
        )
        figures = f"{r['events']:>10}{r['seconds']:>10.2f}{r['rate']:>12,.0f}"
        print(f"{r['name']:<10}{figures}{r['replay_rate']:>14,.0f}  {detail}")
    print(
        f"\nbatch={args.batch} clients={args.clients} gunicorn workers={args.workers} "
        f"threads={args.threads} keys={args.keys}"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
