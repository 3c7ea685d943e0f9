"""``solverfleet agents ...``: the fleet as the collector last saw it, and forgetting a host
that is gone for good.

An agent silent past the collector's ``lease_ttl`` has its leases *quarantined*: they stay out
of the pool, because its spool may still hold successes the collector has not seen. They come
back when it syncs again or restarts; ``forget`` returns them when the host will not.
"""

from __future__ import annotations

import time

import click
from rich.table import Table
from rich.text import Text

from solverfleet.adminclient import AdminClient
from solverfleet.cli.admin import _cell, _json_flag, _print_json
from solverfleet.cli.common import admin_options, console
from solverfleet.money import format_micros

LEASE_STYLE = {"quarantined": "yellow", "held": "green", "none": "dim"}


@click.group("agents")
def agents_group() -> None:
    """Agents: list them, forget one whose host is gone."""


@agents_group.command("list")
@_json_flag
@admin_options
def agents_list(client: AdminClient, as_json: bool) -> None:
    """Every agent: release, last sync, calls in flight, spool backlog, lease state."""
    agents = client.agents()
    if as_json:
        _print_json({"agents": agents})
        return
    table = Table(title=f"{len(agents)} agent(s)", title_justify="left")
    for name in ("agent", "release", "last sync", "in flight", "spool", "leases"):
        table.add_column(name, justify="right" if name in ("in flight", "spool") else "left")
    now = time.time()
    for agent in agents:
        leases = str(agent.get("leases") or "none")
        table.add_row(
            _cell(agent.get("agent_id")),
            _cell(agent.get("release")),
            Text(f"{max(now - float(agent.get('last_seen') or 0), 0):.0f} s ago"),
            _cell(agent.get("in_flight")),
            _cell(agent.get("spool_backlog")),
            Text(leases, style=LEASE_STYLE.get(leases, "")),
        )
    console.print(table)


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
