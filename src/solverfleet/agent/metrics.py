"""The agent's Prometheus metrics.

Hot-path counters are module singletons in NO registry: a solve pays one ``labels().inc()``
(a dict lookup and a locked add). State gauges (in flight, spool backlog, leases, readiness)
are computed when scraped by ``AgentCollector``, which reads the agent object, so the hot path
does nothing for them. Each app gets its own ``CollectorRegistry`` (``registry_for``) holding
the shared counters plus its agent's collector: tests can build many apps in one process
without "Duplicated timeseries" errors (the counters are then shared: assert on deltas).

Import this module inside the worker only (create_app): gunicorn's master must not load it
before gevent patches threading.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector as _PromCollector

if TYPE_CHECKING:
    from solverfleet.agent.lifecycle import Agent

# One per usage event written to the spool (a call that reached the worker). type is a
# configured captcha type (admission refuses unknown ones, so the label set stays bounded);
# status is the event's: success, failed, report_good, report_bad.
SOLVES = Counter(
    "solverfleet_agent_solves",
    "Worker calls recorded as usage events, by captcha type and status.",
    ["type", "status"],
    registry=None,
)
SOLVE_SECONDS = Histogram(
    "solverfleet_agent_solve_seconds",
    "Time from request to the worker's answer, by captcha type (reports excluded).",
    ["type"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 15, 20, 30, 60, 120),
    registry=None,
)
SPOOL_ERRORS = Counter(
    "solverfleet_agent_spool_errors",
    "Usage events the disk refused (the call was not charged).",
    registry=None,
)
# endpoint is the Flask endpoint name (bounded; "unmatched" for 404s), so pre-check refusals
# (401, 402, 403, 429) show here by status code without a per-code counter on the hot path.
HTTP_REQUESTS = Counter(
    "solverfleet_agent_http_requests",
    "HTTP requests answered, by endpoint and status code.",
    ["endpoint", "code"],
    registry=None,
)
IP_BANS = Counter(
    "solverfleet_agent_ip_bans",
    "Client addresses banned for presenting too many unknown keys (bans.py).",
    registry=None,
)
SHARED = (SOLVES, SOLVE_SECONDS, SPOOL_ERRORS, HTTP_REQUESTS, IP_BANS)
_REPORTS = frozenset(("report_good", "report_bad"))
# (type, status) -> (counter child, histogram child or None): labels() costs a lock and a
# tuple build per call; this cache is a dict hit. Bounded by configured types x statuses.
_CHILDREN: dict[tuple[str, str], tuple[Any, Any]] = {}


def count_event(event: dict[str, Any]) -> None:
    """Count one spooled usage event (the single place every surface passes through)."""
    labels = (event["type"], event["status"])
    children = _CHILDREN.get(labels)
    if children is None:
        timed = labels[1] not in _REPORTS
        children = (SOLVES.labels(*labels), SOLVE_SECONDS.labels(labels[0]) if timed else None)
        _CHILDREN[labels] = children
    children[0].inc()
    if children[1] is not None:
        children[1].observe(event["duration_ms"] / 1000)


class AgentCollector(_PromCollector):
    """State gauges read from one agent when scraped."""

    def __init__(self, agent: Agent) -> None:
        self._agent = agent

    def collect(self) -> Iterator[Metric]:
        agent = self._agent
        yield _gauge("solverfleet_agent_in_flight", "Solves in flight.", agent.in_flight)
        yield _gauge(
            "solverfleet_agent_spool_backlog",
            "Usage events on disk not yet acknowledged by the collector.",
            max(0, agent.spool.pending),
        )
        code, _ = agent.readiness()
        yield _gauge("solverfleet_agent_ready", "1 when /readyz passes.", int(code is None))
        yield _gauge("solverfleet_agent_draining", "1 while draining.", int(agent.draining))
        yield _gauge(
            "solverfleet_agent_collector_online", "1 when the last sync succeeded.",
            int(not agent.offline),
        )  # fmt: skip
        last_ok = agent.loop.last_ok
        if last_ok is not None:
            yield _gauge(
                "solverfleet_agent_last_sync_age_seconds",
                "Seconds since the last successful sync with the collector.",
                max(0.0, time.monotonic() - last_ok),
            )
        yield _gauge(
            "solverfleet_agent_compat_tasks", "in.php tasks held in memory.", len(agent.tasks)
        )
        yield from _ledger(agent)


def _ledger(agent: Agent) -> Iterator[Metric]:
    # A copy without the ledger's lock: a scrape may see one lease mid-update, which is fine
    # for a gauge and keeps scrapes from ever delaying a solve.
    leases = list(agent.ledger.balance.values())
    held = sum(b.held for b in leases)
    unacked = sum(b.unacked for b in leases)
    holds = sum(b.holds for b in leases)
    yield _gauge(
        "solverfleet_agent_leased_keys",
        "Keys with a credit lease, unacknowledged spend or open holds here.",
        sum(1 for b in leases if b.held or b.unacked or b.holds),
    )
    yield _gauge(
        "solverfleet_agent_lease_held_micros",
        "Credit the collector leased to this agent (all keys), in micros.",
        held,
    )
    yield _gauge(
        "solverfleet_agent_lease_unacked_micros",
        "Spend committed here and not yet acknowledged by the collector, in micros.",
        unacked,
    )
    yield _gauge(
        "solverfleet_agent_lease_holds_micros", "Credit held by in-flight solves, in micros.", holds
    )


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)


def registry_for(agent: Agent) -> CollectorRegistry:
    """A registry for one app: the shared counters plus its agent's state gauges."""
    registry = CollectorRegistry()
    for metric in SHARED:
        registry.register(metric)
    registry.register(AgentCollector(agent))
    return registry
