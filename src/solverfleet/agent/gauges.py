"""The agent's state gauges, computed when scraped (in flight, spool backlog, leases,
readiness): ``AgentCollector`` reads the agent object, so the hot path does nothing for them.
Each app gets its own ``CollectorRegistry`` (``registry_for``): the shared counters of
metrics.py plus its agent's collector.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector as _PromCollector

from solverfleet.agent.metrics import SHARED

if TYPE_CHECKING:
    from solverfleet.agent.lifecycle import Agent
    from solverfleet.agent.limiter import Limiter


class AgentCollector(_PromCollector):
    """State gauges read from one agent when scraped."""

    def __init__(self, agent: Agent) -> None:
        self._agent = agent

    def collect(self) -> Iterator[Metric]:
        agent = self._agent
        yield gauge("solverfleet_agent_in_flight", "Solves in flight.", agent.in_flight)
        yield gauge(
            "solverfleet_agent_spool_backlog",
            "Usage events on disk not yet acknowledged by the collector.",
            max(0, agent.spool.pending),
        )
        code, _ = agent.readiness()
        yield gauge("solverfleet_agent_ready", "1 when /readyz passes.", int(code is None))
        yield gauge("solverfleet_agent_draining", "1 while draining.", int(agent.draining))
        yield gauge(
            "solverfleet_agent_collector_online", "1 when the last sync succeeded.",
            int(not agent.offline),
        )  # fmt: skip
        last_ok = agent.loop.last_ok
        if last_ok is not None:
            yield gauge(
                "solverfleet_agent_last_sync_age_seconds",
                "Seconds since the last successful sync with the collector.",
                max(0.0, time.monotonic() - last_ok),
            )
        yield gauge(
            "solverfleet_agent_banned_ips",
            "Client addresses (IPv6: /64s) banned now for presenting too many unknown keys.",
            agent.bans.banned_count,
        )
        yield from _leases(agent.limiter)


def _leases(limiter: Limiter) -> Iterator[Metric]:
    # A copy without the limiter's lock: a scrape may see one lease mid-update, which is fine
    # for a gauge and keeps scrapes from ever delaying a solve.
    leases = list(limiter.balance.values())
    held = sum(b.held for b in leases)
    unacked = sum(b.unacked for b in leases)
    holds = sum(b.holds for b in leases)
    yield gauge(
        "solverfleet_agent_leased_keys",
        "Keys with a credit lease, unacknowledged spend or open holds here.",
        sum(1 for b in leases if b.held or b.unacked or b.holds),
    )
    yield gauge(
        "solverfleet_agent_lease_held_micros",
        "Credit the collector leased to this agent (all keys), in micros.",
        held,
    )
    yield gauge(
        "solverfleet_agent_lease_unacked_micros",
        "Spend committed here and not yet acknowledged by the collector, in micros.",
        unacked,
    )
    yield gauge(
        "solverfleet_agent_lease_holds_micros", "Credit held by in-flight solves, in micros.", holds
    )


def gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)


def registry_for(agent: Agent) -> CollectorRegistry:
    """A registry for one app: the shared counters plus its agent's state gauges (a surface
    with state of its own, such as agent/compat's tasks, registers its collector beside)."""
    registry = CollectorRegistry()
    for metric in SHARED:
        registry.register(metric)
    registry.register(AgentCollector(agent))
    return registry
