"""Taking leases away from an agent: its own reset, silence past ``lease_ttl``, an operator's
``forget``.

A **reset** (the agent restarted, after shipping its whole spool) and **forget** (an operator
says the host and its spool are gone) *void* the agent's balance and daily leases: the unspent
remainder returns to the pool. Usage spent from a voided lease that still arrives is charged.

**Silence** does not void. An agent silent past ``lease_ttl`` may hold successes in its spool
that the collector has not seen (a host down, a partition): giving its remainder to other
agents would let the fleet spend that money or those daily tokens twice when the spool ships.
So a silent agent's leases are *quarantined* instead: they stay out of the pool, but no reclaim
waits for them (marked settled), so calls that only they could cover are refused at once
rather than after ``lease_wait``; its pending orders wait for it. The quarantine ends when
the agent syncs again (it is alive: its leases are its own again), resets, or is forgotten;
daily tokens end with their day anyway. ``agents.holds``: 0 nothing held, 1 may hold
leases, 2 quarantined.

Writers hold the locks of leases.py's lock order (agents → api_keys → users → lease rows).
"""

from __future__ import annotations

from solverfleet.collector import reclaim
from solverfleet.collector.store import Tx, marks

HOLDS, QUARANTINED = 1, 2


def targets(tx: Tx, agents: list[str]) -> tuple[list[str], list[str]]:
    """Keys and users whose rows must be locked before ``agents``' leases change."""
    if not agents:
        return [], []
    in_agents = marks(len(agents))
    keys = tx.all(
        "SELECT DISTINCT key_id FROM lease_balance"
        f" WHERE agent_id IN ({in_agents}) AND held_micros > 0",
        agents,
    )
    users = tx.all(
        "SELECT DISTINCT user_id FROM lease_daily"
        f" WHERE agent_id IN ({in_agents}) AND granted > used",
        agents,
    )
    return [r[0] for r in keys], [r[0] for r in users]


def void(tx: Tx, agents: list[str]) -> None:
    """Return every balance and daily lease of ``agents`` to the pool (rows must be locked).

    Daily tokens already used stay counted. CPM grants are left alone: the old process may
    have spent them in this minute, and they expire with the minute anyway.
    """
    if not agents:
        return
    in_agents = marks(len(agents))
    tx.execute(
        "UPDATE lease_balance SET held_micros = 0"
        f" WHERE agent_id IN ({in_agents}) AND held_micros <> 0",
        agents,
    )
    tx.execute(
        f"UPDATE lease_daily SET granted = used WHERE agent_id IN ({in_agents}) AND granted > used",
        agents,
    )
    reclaim.forget_agents(tx, agents)
    tx.execute(f"UPDATE agents SET holds = 0 WHERE agent_id IN ({in_agents})", agents)


def silent(tx: Tx, me: str | None, cutoff_ms: int) -> list[str]:
    """Agents silent since ``cutoff_ms`` that may hold leases, locked and re-checked."""
    candidates = [
        r[0]
        for r in tx.all(
            "SELECT agent_id FROM agents WHERE holds = ? AND last_seen_ms < ?", (HOLDS, cutoff_ms)
        )
        if r[0] != me
    ]
    if not candidates:
        return []
    candidates.sort()
    # Locking re-read: an agent that synced meanwhile is no longer silent and keeps its leases.
    rows = tx.all(
        f"SELECT agent_id FROM agents WHERE agent_id IN ({marks(len(candidates))})"
        f" AND holds = ? AND last_seen_ms < ? ORDER BY agent_id{tx.dialect.for_update}",
        (*candidates, HOLDS, cutoff_ms),
    )
    return [r[0] for r in rows]


def quarantine(tx: Tx, agents: list[str]) -> None:
    """Keep ``agents``' leases out of the pool, but stop waiting for them (rows locked).

    Their pending reclaim orders stay: an order for a lowered limit must reach the agent when
    it comes back, or it would spend what the new limit no longer leaves it (simulator seed
    236065936)."""
    _settle_all(tx, agents, 1)
    if agents:
        tx.execute(
            f"UPDATE agents SET holds = ? WHERE agent_id IN ({marks(len(agents))})",
            (QUARANTINED, *agents),
        )


def lift(tx: Tx, agent: str) -> None:
    """``agent`` synced again while quarantined: its leases are its own again, and a reclaim
    may ask it for them (their rows must be locked)."""
    _settle_all(tx, [agent], 0)
    tx.execute("UPDATE agents SET holds = ? WHERE agent_id = ?", (HOLDS, agent))


def _settle_all(tx: Tx, agents: list[str], settled: int) -> None:
    if not agents:
        return
    in_agents = marks(len(agents))
    for table, holding in (
        ("lease_balance", "held_micros > 0"),
        ("lease_cpm", "granted > 0"),
        ("lease_daily", "granted > used"),
    ):
        tx.execute(
            f"UPDATE {table} SET settled = ? WHERE agent_id IN ({in_agents}) AND {holding}",
            (settled, *agents),
        )


def holds(tx: Tx, agent: str) -> int:
    """``agent``'s ``holds`` state (0 when it has no row)."""
    return int(tx.scalar("SELECT holds FROM agents WHERE agent_id = ?", (agent,), default=0))
