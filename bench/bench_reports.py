"""Solve log and report queries at a million usage rows, on SQLite and on a private MariaDB.

Bulk-loads synthetic usage (90 days, 200 users, 400 keys, 12 projects, 3 environments, 5
captcha types, ~90% successes) straight into the collector's schema, then times every query
the admin API runs for ``/admin/v1/log`` and ``/admin/v1/reports/*``: first with version 1's
indexes only (the baseline: one run each, they take seconds), then after migration 2 (median
of ``--repeat`` runs). Each query is the plain function the API calls, database in, dicts
out. Also printed: the migration's build time (what upgrading a database of that size costs
once) and ingest events/s storing 20,000 more events through the collector's ingest into the
same table, before and after it. Figures only; nothing here fails on speed.

    .venv/bin/python bench/bench_reports.py [--rows 1000000] [--repeat 3] [--only sqlite]
"""

from __future__ import annotations

import argparse
import os
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from common import machine, table  # noqa: E402

from solverfleet.collector import ingest  # noqa: E402
from solverfleet.collector.ingest import COLUMNS  # noqa: E402
from solverfleet.collector.reporting import reports, solvelog  # noqa: E402
from solverfleet.collector.reporting.timerange import DAY_MS, HOUR_MS, TimeRange  # noqa: E402
from solverfleet.collector.store import Database, migrate, schema  # noqa: E402
from solverfleet.collector.store.dialect import mysql_literal  # noqa: E402
from solverfleet.collector.store.migrations import _v2_report_indexes  # noqa: E402
from tests.support.mariadb import MariaDBServer, binaries  # noqa: E402

NOW_MS = int(time.time() * 1000)
SPAN_MS = 90 * DAY_MS
USERS, KEYS_PER_USER = 200, 2
PROJECTS = [f"proj{i:02d}" for i in range(12)]
ENVIRONMENTS = ["prod", "staging", "dev"]
# type -> (price micros, share of calls): one type is rare, as some always are.
TYPES = {
    "turnstile": (2000, 50),
    "recaptcha-v2": (3000, 30),
    "hcaptcha": (3000, 15),
    "recaptcha-v3": (4000, 4.9),
    "funcaptcha": (10000, 0.1),
}
CHUNK = 2_000
INGEST_EVENTS = 20_000


def keys() -> list[tuple[str, str, str, str]]:
    """(key id, user id, project, environment) for every key."""
    rnd = random.Random(7)
    return [
        (f"key{u:03d}-{k}", f"user{u:03d}", rnd.choice(PROJECTS), ENVIRONMENTS[(u + k) % 3])
        for u in range(USERS)
        for k in range(KEYS_PER_USER)
    ]


def rows(total: int, seed: int = 42, end_ms: int = NOW_MS) -> Iterator[list[tuple]]:
    """Chunks of usage rows in ``COLUMNS`` order, oldest first (ids follow time, as in life),
    spread over the ``SPAN_MS`` before ``end_ms``."""
    rnd = random.Random(seed)
    key_list = keys()
    names, weights = list(TYPES), [share for _, share in TYPES.values()]
    step = SPAN_MS / total
    chunk = []
    for n in range(total):
        kid, uid, project, environment = key_list[int(rnd.paretovariate(1.2)) % len(key_list)]
        slug = rnd.choices(names, weights)[0]
        draw = rnd.random()
        status = "success" if draw < 0.9 else "failed" if draw < 0.98 else "report_good"
        ts = end_ms - SPAN_MS + int(n * step)
        chunk.append(
            (
                os.urandom(16).hex(), 1, ts, f"req{n}", f"solver{n % 8}", kid, uid,
                f"{uid}@example.com", "acme", project, environment, slug,
                "https://shop.example.com/checkout?step=2", status,
                None if status != "failed" else "worker_failed",
                None if status != "failed" else "the solver worker answered HTTP 500",
                "203.0.113.9", int(rnd.lognormvariate(6, 0.8)) if status != "report_good" else 0,
                TYPES[slug][0] if status == "success" else 0, ts + 300,
            )
        )  # fmt: skip
        if len(chunk) == CHUNK:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def v1_indexes(db: Database) -> None:
    """Back to the version 1 indexes: migration 2's dropped, the one it replaced restored."""
    for table_name, name, _ in schema.V2_INDEXES:
        drop = lambda tx, t=table_name, n=name: tx.execute(tx.dialect.drop_index(t, n))  # noqa: E731
        db.transaction(drop)
    v1 = {t.name: t for t in schema.V1_TABLES}
    for table_name, name in schema.V2_DROPPED_INDEXES:
        columns = ", ".join(v1[table_name].indexes[name])
        sql = f"CREATE INDEX {name} ON {table_name} ({columns})"
        db.transaction(lambda tx, sql=sql: tx.execute(sql))


def load(db: Database, total: int) -> float:
    started = time.perf_counter()
    insert = f"INSERT INTO usage_events ({', '.join(COLUMNS)}) VALUES "
    if db.is_mysql:
        for chunk in rows(total):
            values = ",".join("(" + ",".join(map(mysql_literal, r)) + ")" for r in chunk)
            db.transaction(lambda tx, values=values: tx.execute_literal(insert + values))
    else:
        # One plain connection, no fsync per chunk: loading is set-up, not what is measured.
        conn = sqlite3.connect(db.url.path, isolation_level=None)
        conn.execute("PRAGMA synchronous = OFF")
        marks = "(" + ", ".join("?" for _ in COLUMNS) + ")"
        conn.execute("BEGIN")
        for i, chunk in enumerate(rows(total)):
            conn.executemany(insert + marks, chunk)
            if i % 50 == 49:
                conn.execute("COMMIT")
                conn.execute("BEGIN")
        conn.execute("COMMIT")
        conn.close()
    return time.perf_counter() - started


def queries(db: Database) -> list[tuple[str, Callable[[], object]]]:
    """What the admin API runs, on realistic arguments: name -> call."""
    day = TimeRange(NOW_MS - DAY_MS, NOW_MS)
    old_hour = TimeRange(NOW_MS - 30 * DAY_MS, NOW_MS - 30 * DAY_MS + HOUR_MS)
    middle = db.read(lambda tx: tx.scalar("SELECT MAX(id) FROM usage_events")) // 2
    deep = solvelog.encode_cursor(
        db.read(lambda tx: tx.scalar("SELECT ts_ms FROM usage_events WHERE id = ?", (middle,))),
        middle,
    )
    quiet_user = "user150"  # the Pareto draw makes high numbers rare
    log, flt = solvelog.solve_log, solvelog.LogFilter
    return [
        ("log: newest page", lambda: log(db)),
        ("log: page at the middle", lambda: log(db, cursor=deep)),
        ("log: one user", lambda: log(db, flt(user=quiet_user))),
        ("log: one key", lambda: log(db, flt(key="key150-1"))),
        ("log: one project", lambda: log(db, flt(project="proj07"))),
        ("log: failed calls", lambda: log(db, flt(status="failed"))),
        ("log: rare type", lambda: log(db, flt(type="funcaptcha"))),
        ("log: an hour 30 days ago", lambda: log(db, flt(range=old_hour))),
        ("log: user, last 24 h", lambda: log(db, flt(user=quiet_user, range=day))),
        ("team: all time", lambda: reports.team_report(db, now_ms=NOW_MS)),
        ("team: last 24 h", lambda: reports.team_report(db, day, now_ms=NOW_MS)),
        ("team: one user, all time", lambda: reports.team_report(db, now_ms=NOW_MS,
                                                                 user_id=quiet_user)),
        ("projects: all time", lambda: reports.projects_report(db)),
        ("projects: last 24 h", lambda: reports.projects_report(db, day)),
        ("keys: all time", lambda: reports.keys_report(db)),
        ("keys: last 24 h", lambda: reports.keys_report(db, day)),
        ("stats: all time", lambda: reports.stats_report(db)),
        ("stats: last 24 h", lambda: reports.stats_report(db, day)),
    ]  # fmt: skip


def timed(fn: Callable[[], object], repeat: int) -> float:
    runs = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - started)
    return statistics.median(runs) * 1000


def ingest_rate(db: Database, seed: int) -> float:
    """Events/s storing ``INGEST_EVENTS`` new events through the collector's ingest path (one
    transaction per batch of ``CHUNK``, as agents' batches arrive)."""
    batches = [
        [(r[0], *r[2:-1]) for r in chunk]  # ingest's row layout: no token, no received time
        for chunk in rows(INGEST_EVENTS, seed=seed, end_ms=NOW_MS + SPAN_MS)
    ]
    started = time.perf_counter()
    for batch in batches:
        ingest.store_events(db, batch, now_ms=NOW_MS)
    return INGEST_EVENTS / (time.perf_counter() - started)


def run_store(name: str, url: str, args: argparse.Namespace) -> dict:
    db = Database(url)
    try:
        migrate(db)
        v1_indexes(db)
        print(f"{name}: loading {args.rows:,} rows ...", flush=True)
        loaded = load(db, args.rows)
        print(f"{name}: loaded in {loaded:.1f} s; baseline queries ...", flush=True)
        work = queries(db)
        baseline = {}
        for query, fn in work:
            baseline[query] = timed(fn, 1)
            print(f"  {query}: {baseline[query]:,.1f} ms", flush=True)
        plain_ingest = ingest_rate(db, seed=1)
        print(f"{name}: building the version 2 indexes ...", flush=True)
        started = time.perf_counter()
        db.transaction(_v2_report_indexes)
        built = time.perf_counter() - started
        indexed = {query: timed(fn, args.repeat) for query, fn in work}
        return {
            "name": name, "load": loaded, "build": built, "base": baseline, "idx": indexed,
            "ingest": (plain_ingest, ingest_rate(db, seed=2)),
        }  # fmt: skip
    finally:
        db.close()


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3, help="runs per query (median)")
    parser.add_argument("--only", choices=["sqlite", "mariadb"], default=None)
    args = parser.parse_args()

    results = []
    with tempfile.TemporaryDirectory(prefix="sf-bench-") as tmp:
        if args.only in (None, "sqlite"):
            url = f"sqlite:///{Path(tmp) / 'reports.db'}"
            results.append(run_store("sqlite", url, args))
        if args.only in (None, "mariadb"):
            if binaries() is None:
                print("mariadb: skipped (mariadbd not installed)")
            else:
                with MariaDBServer(Path(tmp) / "mdb") as server:
                    results.append(run_store("mariadb", server.create_database("bench"), args))

    print(f"\n{machine()}")
    print(f"{args.rows:,} usage rows; ms; no index: one run, indexed: median of {args.repeat}\n")
    headers = ["query"]
    for r in results:
        headers += [f"{r['name']} no index", f"{r['name']}", "ratio"]
    lines = []
    for query in results[0]["base"] if results else []:
        line = [query]
        for r in results:
            base, idx = r["base"][query], r["idx"][query]
            ratio = base / idx
            line += [
                f"{base:,.1f}",
                f"{idx:,.1f}",
                f"{ratio:.2f}x" if ratio < 10 else f"{ratio:,.0f}x",
            ]
        lines.append(line)
    print(table(headers, lines))
    for r in results:
        plain, slowed = r["ingest"]
        print(
            f"\n{r['name']}: bulk load {r['load']:.1f} s; version 2 index build {r['build']:.1f} s;"
            f" ingest {plain:,.0f} events/s without the indexes, {slowed:,.0f} with them"
            f" ({slowed / plain:.2f}x)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
