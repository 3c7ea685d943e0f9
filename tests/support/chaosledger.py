"""The ledger invariant of the chaos tests (tests/chaos/), and the fleet's view it is read from:
agents' status, leases, spools, and the collector's usage records.

``assert_ledger`` checks, after every agent shipped its spool, for requests made through a
``tests.support.chaos.Tracker``::

    client successes + recorded cut requests == usage successes == balance change / price

with no duplicate event ids, at most one usage record per request, and no success recorded for a
request the client never made, was refused, or was answered with an error.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import requests
from prometheus_client.parser import text_string_to_metric_families

from solverfleet_dev.localstack import LocalStack
from tests.support.chaos import UNKNOWN, Load, Tracker, outcome_counts, wait_for
from tests.support.fleet import PRICE, micros

# --- the fleet's view ---------------------------------------------------------------------------


def agent_status(stack: LocalStack, i: int) -> dict:
    resp = requests.get(f"{stack.agent_url(i)}/admin/status", timeout=5)
    resp.raise_for_status()
    return resp.json()


def wait_leases(stack: LocalStack, load: Load, calls: int, timeout: float = 30.0) -> None:
    """Wait until every agent holds credit for ``calls`` solves. Leases are sized by observed
    demand, so a fault that cuts the collector off must wait for them to give the agents
    something to serve from meanwhile."""
    wait_for(
        lambda: all(
            agent_status(stack, i)["leases"]["available_micros"] >= calls * micros(PRICE)
            for i in range(len(stack.agents))
        ),
        timeout=timeout,
        what=f"every agent to hold credit for {calls} calls",
        guard=load.check,
    )


def ingested(stack: LocalStack) -> int:
    """Successes the collector has stored (its summary)."""
    with stack.admin_client(timeout=5) as admin:
        return admin.summary()["successes"]


def usage_refusals(stack: LocalStack) -> int:
    """Usage batches the collector answered 503 (database unavailable), from its /metrics."""
    text = requests.get(f"{stack.collector_url}/metrics", timeout=5).text
    return int(
        sum(
            sample.value
            for family in text_string_to_metric_families(text)
            if family.name == "solverfleet_collector_http_requests"
            for sample in family.samples
            if sample.name.endswith("_total")
            and sample.labels.get("endpoint") == "agent.usage"
            and sample.labels.get("code") == "503"
        )
    )


def wait_ingest_resumes(stack: LocalStack, load: Load, events: int = 100) -> None:
    """After a database fault: ``events`` more successes stored while the load runs."""
    before = ingested(stack)
    wait_for(
        lambda: ingested(stack) >= before + events,
        timeout=60,
        what="ingest to resume after the fault",
        guard=load.check,
    )


def settle(stack: LocalStack, timeout: float = 60.0) -> None:
    """Wait until every running agent has nothing in flight and nothing left to ship."""

    def settled() -> bool:
        for i, svc in enumerate(stack.agents):
            if svc is None or not svc.alive():
                continue
            status = agent_status(stack, i)
            if status["in_flight"] or status["spool_backlog"]:
                return False
        return True

    wait_for(settled, timeout=timeout, what="agents to finish and ship every usage event")
    for i in range(stack.agent_count):
        rejected = stack.agent_state_dir(i) / "spool" / "rejected.jsonl"
        assert not rejected.exists(), f"the collector refused usage events: {rejected}"


def spool_pending(state_dir: Path) -> int:
    """Usage lines a stopped agent left unacknowledged in its spool (read-only; the layout is
    agent/spool.py's: numbered ``*.jsonl`` segments and a ``cursor`` before which all is acked).
    """
    spool = state_dir / "spool"
    try:
        cursor = json.loads((spool / "cursor").read_text())
        start = (int(cursor["segment"]), int(cursor["offset"]))
    except FileNotFoundError:
        start = (0, 0)
    pending = 0
    for path in sorted(spool.glob("*.jsonl")):
        if not path.stem.isdigit() or int(path.stem) < start[0]:
            continue
        data = path.read_bytes()
        pending += data[start[1] if int(path.stem) == start[0] else 0 :].count(b"\n")
    return pending


def usage_events(stack: LocalStack, key_id: str) -> list[dict]:
    """Every usage record of ``key_id`` at the collector (all pages of the solve log)."""
    events: list[dict] = []
    cursor = None
    with stack.admin_client() as admin:
        while True:
            page = admin.solve_log(key=key_id, limit=1000, cursor=cursor)
            events += page["events"]
            cursor = page["next_cursor"]
            if cursor is None:
                return events


@dataclass
class LedgerReport:
    label: str
    requests: int
    outcomes: dict
    client_ok: int
    cut: int  # outcome unknown
    cut_recorded: int  # ... and billed at the collector
    usage_ok: int
    usage_failed: int
    charged_micros: int
    price_micros: int
    problems: list[str] = field(default_factory=list)

    def line(self) -> str:
        return (
            f"[ledger {self.label}] requests={self.requests} client_ok={self.client_ok} "
            f"cut={self.cut} (recorded {self.cut_recorded}) -> expected {self.expected} | "
            f"usage_ok={self.usage_ok} usage_failed={self.usage_failed} | "
            f"charged={self.charged_micros} micros = {self.charged_micros / self.price_micros:g}"
            f" x price | outcomes={self.outcomes} | "
            f"{'OK' if not self.problems else 'BROKEN: ' + '; '.join(self.problems)}"
        )

    @property
    def expected(self) -> int:
        return self.client_ok + self.cut_recorded


def assert_ledger(
    stack: LocalStack,
    *trackers: Tracker,
    key_id: str,
    opening: str,
    price: str = PRICE,
    settle_timeout: float = 60.0,
) -> LedgerReport:
    """Settle the fleet, then print and assert the ledger invariant for ``key_id``.

    ``trackers`` must hold every request ever made on the key, and the key's balance must not
    have changed other than by solves since ``opening``.
    """
    settle(stack, settle_timeout)
    calls = [c for t in trackers for c in t.snapshot()]
    by_url = {c.url: c for c in calls}
    assert len(by_url) == len(calls), "a URL was used twice: the tracker cannot match records"
    events = usage_events(stack, key_id)
    with stack.admin_client() as admin:
        key_view = admin.get_key(key_id)
        summary = admin.summary()["keys"][key_id]

    problems: list[str] = []
    ids = Counter(e["event_id"] for e in events)
    dup_ids = [i for i, n in ids.items() if n > 1]
    if dup_ids:
        problems.append(f"duplicate event ids {dup_ids[:3]}")
    per_url = Counter(e["url"] for e in events)
    doubled = [u for u, n in per_url.items() if n > 1]
    if doubled:
        problems.append(f"{len(doubled)} requests with more than one usage record {doubled[:3]}")
    ok_events = [e for e in events if e["status"] == "success"]
    failed_events = [e for e in events if e["status"] != "success"]
    ok_urls = {e["url"] for e in ok_events}
    stray = sorted(u for u in ok_urls if u not in by_url)
    if stray:
        problems.append(f"{len(stray)} successes for requests never made {stray[:3]}")
    client_ok = [c for c in calls if c.ok]
    missing = [c.url for c in client_ok if c.url not in ok_urls]
    if missing:
        problems.append(f"{len(missing)} client successes without a usage record {missing[:3]}")
    cut = [c for c in calls if c.outcome == UNKNOWN]
    cut_recorded = sum(1 for c in cut if c.url in ok_urls)
    told_failed = [
        (c.url, c.outcome) for c in calls if c.url in ok_urls and c.outcome not in (200, UNKNOWN)
    ]
    if told_failed:
        problems.append(f"{len(told_failed)} billed requests answered failure {told_failed[:3]}")
    price_micros = micros(price)
    wrong_cost = [e["event_id"] for e in ok_events if micros(e["cost"]) != price_micros]
    wrong_cost += [e["event_id"] for e in failed_events if micros(e["cost"]) != 0]
    if wrong_cost:
        problems.append(f"{len(wrong_cost)} events with a wrong cost {wrong_cost[:3]}")
    charged = micros(opening) - micros(key_view["balance"])
    if charged != len(ok_events) * price_micros:
        problems.append(f"balance change {charged} != {len(ok_events)} successes x {price_micros}")
    if summary["successes"] != len(ok_events):
        problems.append(f"summary successes {summary['successes']} != log {len(ok_events)}")
    if len(client_ok) + cut_recorded != len(ok_events):
        problems.append(
            f"client successes {len(client_ok)} + recorded cuts {cut_recorded} "
            f"!= usage successes {len(ok_events)}"
        )
    report = LedgerReport(
        label="+".join(t.label for t in trackers),
        requests=len(calls),
        outcomes=outcome_counts(calls),
        client_ok=len(client_ok),
        cut=len(cut),
        cut_recorded=cut_recorded,
        usage_ok=len(ok_events),
        usage_failed=len(failed_events),
        charged_micros=charged,
        price_micros=price_micros,
        problems=problems,
    )
    print(report.line(), flush=True)
    assert not problems, report.line()
    return report
