"""Sync cost at scale, in process: collector CPU per idle sync and per admin change, agent
work per change and agent memory per key, each beside its baseline measured in the same run.

One collector app on SQLite (tmpfs when there is one) with ``--keys`` keys in 10 accounts.
Figures are CPU time (``time.process_time``) of this process, which runs the collector's
sync code directly, or its Flask app through the test client (routing, auth, JSON; no HTTP
server, no gunicorn):

- idle sync: an agent up to date, nothing leased; baseline: every sync writes its heartbeat
  (``heartbeats=None``, or a persist interval of 0: the code before collector/heartbeat.py);
  now: heartbeats in memory and the answer from ``IdleView`` (no store read).
- admin change: one top-up, then each agent's sync answer built and JSON-encoded; baseline:
  the full snapshot (an agent that does not send ``deltas``).
- agent: parsing the full snapshot beside applying the one-key delta; tracemalloc's bytes per
  key of a parsed snapshot of ``--memory-keys`` keys, baseline: repeated strings not shared;
  and the peak while it comes in pages (``configdelta.PAGE_KEYS``) beside one body;
  applying a 10-key delta to that snapshot (persistent maps) beside copying its two key dicts
  (the code before); and a full GC pass with it installed, frozen (``gc.freeze``, as the
  agent does for big snapshots) beside not frozen.

    .venv/bin/python bench/bench_sync_scale.py [--keys 20000] [--syncs 400] [--changes 5]
        [--memory-keys 100000] [--stores sqlite,mariadb]
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

from common import machine, table

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from solverfleet.agent import keystore  # noqa: E402
from solverfleet.agent.keystore import apply_delta, parse_snapshot  # noqa: E402
from solverfleet.collector import configdelta, leases  # noqa: E402
from solverfleet.collector.heartbeat import Heartbeats, IdleView  # noqa: E402
from solverfleet.collector.protocol import sync_request  # noqa: E402
from tests.support.collector import (  # noqa: E402
    key_config,
    make_app,
    sqlite_url,
    team_config,
    user_config,
)
from tests.support.mariadb import MariaDBServer, binaries  # noqa: E402

ACCOUNTS = 10


def populate(h, keys: int) -> None:
    per = keys // ACCOUNTS
    for a in range(ACCOUNTS):
        users = [
            user_config(f"u{a}-{u}", [key_config(f"k{a}-{u}-{i}", "5.00") for i in range(10)])
            for u in range(per // 10)
        ]
        h.apply(team_config(users, account=f"acct{a}"))


def agent_memory(keys: int, page: int | None = None) -> tuple[float, float]:
    """tracemalloc's bytes per key (kept, peak) of a snapshot parsed from its JSON body (or
    bodies: ``page`` keys each, as a paged snapshot comes), each body and its parsed dict
    dropped as the agent drops them."""
    users = [
        {"id": f"user-{u}", "email": f"u{u}@example.com", "role": "user", "daily_limit": None,
         "active": True, "account": f"acct{u % ACCOUNTS}"}
        for u in range(keys // 10)
    ]  # fmt: skip
    raw_keys = [
        {"id": f"key-{i:07d}", "secret_hash": hashlib.sha256(b"%d" % i).hexdigest(),
         "user_id": f"user-{i // 10}", "account": f"acct{i // 10 % ACCOUNTS}", "project": "web",
         "environment": "prod", "allowed_types": None, "cpm": None, "ip_allowlist": None,
         "active": True, "balance_micros": 5_000_000, "expires_at_ms": None}
        for i in range(keys)
    ]  # fmt: skip
    size = page or keys
    bodies = [json.dumps({"keys": raw_keys[at : at + size]}) for at in range(0, keys, size)]
    bodies[0] = json.dumps({"prices": {"turnstile": 2000}, "users": users, **json.loads(bodies[0])})
    del users, raw_keys
    tracemalloc.start()
    config = json.loads(bodies.pop(0))
    if not bodies:
        snap = keystore.parse_snapshot(1, config)
    else:
        pages = keystore.SnapshotPages(1, config, config["keys"][-1]["id"])
        del config
        while bodies:
            config = json.loads(bodies.pop(0))
            last = None if not bodies else config["keys"][-1]["id"]
            snap = pages.add({"keys": config["keys"], "keys_after": last})
            del config
        del pages
    config = None
    kept, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert len(snap.keys) == keys
    return kept / keys, peak / keys, snap


def agent_stalls(snap: keystore.Snapshot) -> list[list[str]]:
    """Milliseconds the agent holds the GIL (every request waits): a 10-key delta, and a full
    GC pass, each beside its baseline."""
    changed = [
        {"id": key.id, "secret_hash": key.secret_hash.hex(), "user_id": key.user_id,
         "balance_micros": key.balance_micros + 1}
        for key in list(snap.keys.values())[:10]
    ]  # fmt: skip

    keys, by_hash = dict(snap.keys), dict(snap.by_hash)

    def copy_dicts() -> None:
        dict(keys), dict(by_hash)

    def delta() -> None:
        keystore.apply_delta(snap, snap.version + 1, {"keys": changed})

    def full_gc() -> float:
        start = time.perf_counter()
        gc.collect()
        return (time.perf_counter() - start) * 1000

    copy_ms, delta_ms = wall_ms(copy_dicts, 5), wall_ms(delta, 5)
    gc.collect()
    loose = min(full_gc() for _ in range(3))
    gc.freeze()
    frozen = min(full_gc() for _ in range(3))
    gc.unfreeze()
    return [
        ["apply a 10-key delta (ms, GIL held)", f"{copy_ms:.2f}", f"{delta_ms:.2f}"],
        ["full GC pass, snapshot installed (ms)", f"{loose:.1f}", f"{frozen:.1f}"],
    ]


def cpu_ms(fn, n: int) -> float:
    start = time.process_time()
    for _ in range(n):
        fn()
    return (time.process_time() - start) * 1000 / n


def wall_ms(fn, n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - start) * 1000 / n


def collector_rows(db_url: str, args: argparse.Namespace) -> list[list[str]]:
    """The collector's figures on one store, and the agent's parse/apply of a top-up."""
    h = make_app(db_url)
    populate(h, args.keys)
    db, now, ttl = h.db, h.state.now_ms, h.state.ttl_ms
    first = h.sync("a1", config_version=None, deltas=True)
    version, config = first["config_version"], first["config"]

    def body(deltas: bool, at: int) -> dict:
        return {"agent_id": "a1", "instance": "i", "config_version": at, "deltas": deltas}

    beats, view = Heartbeats(ttl), IdleView(db)
    idle_req = sync_request(body(True, version))

    def idle_old() -> None:
        leases.sync(db, idle_req, now_ms=now(), ttl_ms=ttl)

    def idle_new() -> None:
        leases.sync(db, idle_req, now_ms=now(), ttl_ms=ttl, heartbeats=beats, view=view)

    def idle_app() -> None:
        h.sync("a1", config_version=version, deltas=True)

    app_beats = h.state.heartbeats
    interval, app_beats.interval_ms = app_beats.interval_ms, 0  # baseline: persist each sync
    app_old = cpu_ms(idle_app, args.syncs)
    app_beats.interval_ms = interval
    app_new = cpu_ms(idle_app, args.syncs)
    code = [cpu_ms(idle_old, args.syncs), cpu_ms(idle_new, args.syncs)]
    code_wall = [wall_ms(idle_old, args.syncs), wall_ms(idle_new, args.syncs)]

    def change_then_sync(deltas: bool) -> float:
        total = 0.0
        for _ in range(args.changes):
            at = h.sync("a2", config_version=None)["config_version"]
            h.admin("POST", "/admin/v1/keys/k0-0-0/topup", json={"amount": "1.00"})
            req = sync_request(body(deltas, at))
            start = time.process_time()
            json.dumps(leases.sync(db, req, now_ms=now(), ttl_ms=ttl, heartbeats=beats))
            total += time.process_time() - start
        return total * 1000 / args.changes

    change_full, change_delta = change_then_sync(False), change_then_sync(True)
    snap = parse_snapshot(version, config)
    h.admin("POST", "/admin/v1/keys/k0-0-0/topup", json={"amount": "1.00"})
    delta = h.sync("a1", config_version=version, deltas=True)["delta"]
    rows = [
        ["collector CPU per idle sync, sync code (ms)", *code],
        ["wall time per idle sync, sync code (ms)", *code_wall],
        ["collector CPU per idle sync, Flask app (ms)", app_old, app_new],
        ["collector CPU per agent per top-up (ms)", change_full, change_delta],
        ["agent CPU per top-up (ms)", cpu_ms(lambda: parse_snapshot(version, config), 3),
         cpu_ms(lambda: apply_delta(snap, version + 1, delta), 20)],
    ]  # fmt: skip
    db.close()
    return [[name, f"{old:.3f}", f"{new:.3f}"] for name, old, new in rows]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--keys", type=int, default=20_000)
    parser.add_argument("--syncs", type=int, default=400)
    parser.add_argument("--changes", type=int, default=5)
    parser.add_argument("--memory-keys", type=int, default=100_000)
    parser.add_argument("--stores", default="sqlite,mariadb")
    args = parser.parse_args()
    print(f"sync at scale · {args.keys} keys in {ACCOUNTS} accounts · {machine()}")
    for store in filter(None, args.stores.split(",")):
        shm = "/dev/shm" if Path("/dev/shm").is_dir() else None
        with tempfile.TemporaryDirectory(prefix="sf-bench-", dir=shm) as tmp:
            if store == "sqlite":
                rows = collector_rows(sqlite_url(Path(tmp) / "c.db"), args)
            elif binaries() is None:
                print(f"{store}: skipped (mariadbd not installed)")
                continue
            else:
                with MariaDBServer(durable=True) as server:
                    rows = collector_rows(server.create_database("bench"), args)
        print(f"\n{store}")
        print(table(["figure", "baseline", "now"], rows))

    shared = keystore._shared
    keystore._shared = lambda value: value  # baseline: every key holds its own strings
    mem_old = agent_memory(args.memory_keys)[:2]
    keystore._shared = shared
    *mem_new, snap = agent_memory(args.memory_keys)
    stalls = agent_stalls(snap)
    del snap
    mem_paged = agent_memory(args.memory_keys, configdelta.PAGE_KEYS)[:2]
    print(f"\nagent, {args.memory_keys} keys (tracemalloc)")
    print(
        table(
            ["figure", "baseline", "now"],
            [
                ["memory per key (bytes)", f"{mem_old[0]:.0f}", f"{mem_new[0]:.0f}"],
                ["peak while parsing, per key (bytes)", f"{mem_old[1]:.0f}", f"{mem_new[1]:.0f}"],
                [
                    f"peak, snapshot in pages of {configdelta.PAGE_KEYS} (bytes per key)",
                    f"{mem_new[1]:.0f}",
                    f"{mem_paged[1]:.0f}",
                ],
                *stalls,
            ],
        )
    )
    print(
        "\nbaseline: an idle sync writes its heartbeat; a top-up ships the full snapshot (parsed"
        " whole by the agent); key strings not shared. now: heartbeats in memory; the delta;"
        " shared strings; a delta shares what it did not change; big snapshots frozen."
        " CPU: this process (the database server's not counted)."
    )


if __name__ == "__main__":
    main()
