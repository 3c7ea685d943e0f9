"""Tracked load on the deployed lab fleet (tests.support.labfleet) and the ledger check: every
request carries its own id, so each usage record at the collector can be matched to the one
request it bills; ``assert_lab_ledger`` then checks client successes against the usage records
and the balance change."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from solverfleet.money import to_micros
from tests.support.labfleet import AGENT_PORT, LAB_PRICE, Fleet, admin_get

# Bounded /solve load from the controller namespace where every request carries its own
# X-Request-Id (the agent makes it the usage event's request_id), so each usage record at the
# collector can be matched to the one request it bills. Bounded in count, time and pace; stops
# early when the stop file appears. Prints one JSON object: every call as
# [request_id, status, started, ended] (wall-clock seconds; status an int, or an exception name),
# and whether the count bound ended it.
_TRACKED_LOAD = r"""
import itertools, json, os, ssl, sys, threading, time, urllib.error, urllib.request
url, key, cafile, stop, label, seconds, threads, latency, pace, limit = sys.argv[1:11]
ctx = ssl.create_default_context(cafile=cafile)
deadline = time.monotonic() + float(seconds)
numbers, calls, lock, bounded = itertools.count(1), [], threading.Lock(), []
def client():
    while time.monotonic() < deadline and not os.path.exists(stop):
        n = next(numbers)
        if n > int(limit):
            bounded.append(n)
            return
        rid = f"{label}-{n}"
        body = json.dumps({"type": "turnstile", "url": f"https://example.com/{rid}",
                           "params": {"demo": {"latency_ms": int(latency)}}}).encode()
        req = urllib.request.Request(url, data=body, method="POST", headers={
            "Authorization": "Bearer " + key, "Content-Type": "application/json",
            "X-Request-Id": rid})
        started = time.time()
        try:
            with urllib.request.urlopen(req, timeout=30, context=ctx) as resp:
                resp.read()
                code = resp.status
        except urllib.error.HTTPError as exc:
            code = exc.code
        except Exception as exc:
            code = type(exc).__name__
        ended = time.time()
        with lock:
            calls.append([rid, code, started, ended])
        time.sleep(max(0.0, float(pace) - (ended - started)))
ts = [threading.Thread(target=client) for _ in range(int(threads))]
for t in ts: t.start()
for t in ts: t.join()
print(json.dumps({"calls": calls, "limit_hit": bool(bounded)}))
"""


@dataclass
class TrackedCall:
    request_id: str
    status: int | str  # HTTP status, or the exception that ended the call
    started: float  # time.time()
    ended: float


def start_tracked_load(
    fleet: Fleet,
    key: str,
    stop: Path,
    *,
    label: str,
    seconds: float = 300,
    threads: int = 4,
    latency_ms: int = 300,
    pace: float = 0.1,
    limit: int = 20_000,
) -> subprocess.Popen:
    """Bounded /solve load through the balancer with one request id per call (``label-N``);
    each client makes at most one call per ``pace`` seconds. See finish_tracked_load."""
    return subprocess.Popen(
        fleet.lab.controller_argv(
            [sys.executable, "-c", _TRACKED_LOAD, f"https://{fleet.host('lb').address}/solve",
             key, fleet.cafile, str(stop), label, str(seconds), str(threads), str(latency_ms),
             str(pace), str(limit)]
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip


def finish_tracked_load(load: subprocess.Popen, stop: Path) -> list[TrackedCall]:
    """Stop the load; every call it made."""
    stop.touch()
    out, err = load.communicate(timeout=120)
    if not out.strip():
        raise AssertionError(f"the load printed nothing (exit {load.returncode}): {err[-2000:]}")
    result = json.loads(out.strip().splitlines()[-1])
    assert not result["limit_hit"], "the load hit its count bound before it was stopped"
    return [TrackedCall(*row) for row in result["calls"]]


_AGENT_STATUS = r"""
import json, ssl, sys, urllib.request
ctx = ssl.create_default_context(cafile="/etc/solverfleet/tls/ca.pem")
out = {}
for port in sys.argv[1:]:
    try:
        r = urllib.request.urlopen("https://127.0.0.1:%s/admin/status" % port, timeout=5,
                                   context=ctx)
    except OSError:
        continue  # that colour's agent is not running
    out[port] = json.load(r)
print(json.dumps(out))
"""


def agent_status(fleet: Fleet, host: str) -> dict[str, dict]:
    """``/admin/status`` (loopback only) of each running agent colour on ``host``, by port."""
    proc = fleet.lab.host_exec(
        host,
        ["python3", "-c", _AGENT_STATUS, str(AGENT_PORT), str(AGENT_PORT + 1)],
        check=True,
        timeout=30,
    )
    return json.loads(proc.stdout)


def settle_agents(fleet: Fleet, *, timeout: float = 90) -> None:
    """Wait until every running agent (both colours) has nothing in flight and nothing left to
    ship; then check that the collector refused no usage event (the spool's rejected.jsonl)."""
    deadline = time.monotonic() + timeout
    while True:
        busy = {
            f"{host.name}:{port}": (s["in_flight"], s["spool_backlog"])
            for host in fleet.solvers
            for port, s in agent_status(fleet, host.name).items()
            if s["in_flight"] or s["spool_backlog"]
        }
        if not busy:
            break
        if time.monotonic() > deadline:
            raise AssertionError(
                f"agents not settled after {timeout}s (in flight, backlog): {busy}"
            )
        time.sleep(0.5)
    for host in fleet.solvers:
        rejected = fleet.lab.host_exec(
            host.name, ["sh", "-c", "cat /var/lib/solverfleet/agent*/spool/rejected.jsonl"]
        )
        assert not rejected.stdout.strip(), f"{host.name}: the collector refused usage events"


def usage_log(fleet: Fleet, key_id: str) -> list[dict]:
    """Every usage record of ``key_id`` at the collector (all pages of the solve log)."""
    events: list[dict] = []
    cursor = ""
    while True:
        page = admin_get(fleet, f"log?key={key_id}&limit=1000{cursor}")
        assert page.status == 200, page
        body = page.json()
        events += body["events"]
        if body["next_cursor"] is None:
            return events
        cursor = f"&cursor={body['next_cursor']}"


@dataclass
class LabLedger:
    label: str
    requests: int
    outcomes: dict[str, int]
    client_ok: int
    usage_ok: int
    usage_failed: int
    charged_micros: int
    price_micros: int
    by_agent: dict[str, int]  # usage successes per agent
    problems: list[str]

    def line(self) -> str:
        return (
            f"[ledger {self.label}] requests={self.requests} outcomes={self.outcomes} | "
            f"client successes={self.client_ok} | usage records: {self.usage_ok} successes "
            f"({self.by_agent}), {self.usage_failed} failed | balance change "
            f"{self.charged_micros} micros = {self.charged_micros / self.price_micros:g} x price | "
            f"{'OK' if not self.problems else 'BROKEN: ' + '; '.join(self.problems)}"
        )


def assert_lab_ledger(
    fleet: Fleet,
    calls: list[TrackedCall],
    *,
    key_id: str,
    opening: str,
    price: str = LAB_PRICE,
    label: str = "",
    settle_timeout: float = 90,
) -> LabLedger:
    """Settle the agents, then print and assert, for a key whose every request is in ``calls``
    (made with start_tracked_load) and whose balance moved only by solves since ``opening``:

        client successes == usage successes at the collector == balance change / price

    with no duplicate event id, at most one record per request, no success recorded for a
    request the client never made or saw fail, and every record of the right cost."""
    settle_agents(fleet, timeout=settle_timeout)
    by_rid = {c.request_id: c for c in calls}
    events = usage_log(fleet, key_id)
    key_view = admin_get(fleet, f"keys/{key_id}")
    assert key_view.status == 200, key_view
    summary = admin_get(fleet, "summary").json()["keys"][key_id]
    price_micros = to_micros(price)

    problems: list[str] = []
    dup_ids = [i for i, n in Counter(e["event_id"] for e in events).items() if n > 1]
    if dup_ids:
        problems.append(f"duplicate event ids {dup_ids[:3]}")
    doubled = [r for r, n in Counter(e["request_id"] for e in events).items() if n > 1]
    if doubled:
        problems.append(f"{len(doubled)} requests with more than one usage record {doubled[:3]}")
    ok_events = [e for e in events if e["status"] == "success"]
    failed_events = [e for e in events if e["status"] != "success"]
    ok_rids = {e["request_id"] for e in ok_events}
    stray = sorted(r for r in ok_rids if r not in by_rid)
    if stray:
        problems.append(f"{len(stray)} successes for requests never made {stray[:3]}")
    client_ok = [c for c in calls if c.status == 200]
    missing = [c.request_id for c in client_ok if c.request_id not in ok_rids]
    if missing:
        problems.append(f"{len(missing)} client successes without a usage record {missing[:3]}")
    told_failed = [
        (c.request_id, c.status) for c in calls if c.request_id in ok_rids and c.status != 200
    ]
    if told_failed:
        problems.append(f"{len(told_failed)} billed requests the client saw fail {told_failed[:3]}")
    wrong_cost = [e["event_id"] for e in ok_events if to_micros(e["cost"]) != price_micros]
    wrong_cost += [e["event_id"] for e in failed_events if to_micros(e["cost"]) != 0]
    if wrong_cost:
        problems.append(f"{len(wrong_cost)} events with a wrong cost {wrong_cost[:3]}")
    charged = to_micros(opening) - to_micros(key_view.json()["balance"], allow_negative=True)
    if charged != len(ok_events) * price_micros:
        problems.append(f"balance change {charged} != {len(ok_events)} successes x {price_micros}")
    if summary["successes"] != len(ok_events):
        problems.append(f"summary successes {summary['successes']} != log {len(ok_events)}")
    if len(client_ok) != len(ok_events):
        problems.append(f"client successes {len(client_ok)} != usage successes {len(ok_events)}")
    report = LabLedger(
        label=label or key_id,
        requests=len(calls),
        outcomes=dict(sorted(Counter(str(c.status) for c in calls).items())),
        client_ok=len(client_ok),
        usage_ok=len(ok_events),
        usage_failed=len(failed_events),
        charged_micros=charged,
        price_micros=price_micros,
        by_agent=dict(sorted(Counter(e["agent_id"] for e in ok_events).items())),
        problems=problems,
    )
    print(report.line(), flush=True)
    assert not problems, report.line()
    return report
