"""``solverfleet agents ...``: the fleet as the collector last saw it, and forgetting a host
that is gone for good.

An agent silent past the collector's ``lease_ttl`` has its leases *quarantined*: they stay out
of the pool, because its spool may still hold successes the collector has not seen. They come
back when it syncs again or restarts; ``forget`` returns them when the host will not.
"""

from __future__ import annotations

import time

import click

from solverfleet.adminclient import AdminClient
from solverfleet.cli.common import admin_options, console
from solverfleet.cli.output import Column, format_option, render
from solverfleet.money import format_micros

LEASE_STYLE = {"quarantined": "yellow", "held": "green", "none": "dim"}


@click.group("agents")
def agents_group() -> None:
    """Agents: list them, forget one whose host is gone."""


def _ago(agent: dict) -> str | None:
    seen = agent.get("last_seen")
    return None if seen is None else f"{max(time.time() - float(seen), 0):.0f} s ago"


# The table says how long ago; CSV and JSON carry the time itself.
AGENT_COLUMNS = (
    Column("agent", "agent_id", "id"),
    Column("release", "release"),
    Column("last sync", _ago, only="table"),
    Column("last sync (UTC)", "last_seen", "time", only="csv"),
    Column("in flight", "in_flight", "count"),
    Column("spool", "spool_backlog", "count"),
    Column(
        "leases",
        lambda a: a.get("leases") or "none",
        style=lambda v: LEASE_STYLE.get(v, ""),
        field="leases",
    ),
)


@agents_group.command("list")
@format_option
@admin_options
def agents_list(client: AdminClient, fmt: str) -> None:
    """Every agent: release, last sync, calls in flight, spool backlog, lease state."""
    agents = client.agents()
    render(fmt, agents, AGENT_COLUMNS, title=f"{len(agents)} agent(s)", data={"agents": agents})


@agents_group.command("forget")
@click.argument("agent_id")
@admin_options
def agents_forget(client: AdminClient, agent_id: str) -> None:
    """AGENT_ID's host is gone for good, spool and all: return what its leases held to the
    pool. Refused while it synced within lease_ttl. Usage it still ships is charged."""
    done = client.forget_agent(agent_id)
    returned = format_micros(int(done.get("returned_micros") or 0))
    console.print(
        f"agent {agent_id}: forgotten; {returned} of {done.get('keys', 0)} key(s) back in the pool",
        markup=False,
    )
