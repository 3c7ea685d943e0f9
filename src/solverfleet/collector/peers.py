"""The fleet's address book for res.php anywhere (docs/FLEET-PROTOCOL.md, "Peers").

Each sync may carry the agent's ``node_id`` (its task-id prefix) and ``advertise_url``; the
agents row keeps them. Every sync answer carries ``peers``: node id -> address of each live
agent (synced within the lease TTL), so an agent holding another's task id knows whom to ask
without a collector call per request. Two live agents claiming one node id are a
misconfiguration (node ids derived by crc32 can collide): that node id is left out of the map,
since either agent could own a task id with it, and each of them is told ``node_conflict``
(the agent logs it as an error).
"""

from __future__ import annotations

from solverfleet.collector.store.db import Tx

ROWS = "SELECT agent_id, node_id, advertise_url, last_seen_ms FROM agents WHERE node_id IS NOT NULL"


def answer(tx: Tx, agent_id: str, now_ms: int, ttl_ms: int) -> dict:
    """``book`` from the store."""
    return book(tx.all(ROWS), agent_id, now_ms, ttl_ms)


def book(rows: list[tuple], agent_id: str, now_ms: int, ttl_ms: int) -> dict:
    """``{"peers": {...}}`` of the live agents in ``rows`` (``ROWS``), plus ``node_conflict``
    (the other agent ids) when this agent's node id is claimed by another live agent too."""
    owners: dict[int, list[tuple[str, str | None]]] = {}
    for aid, node, url, seen in rows:
        if int(seen) >= now_ms - ttl_ms:
            owners.setdefault(int(node), []).append((aid, url))
    peers: dict[str, str] = {}
    mine: list[str] = []
    for node, claims in owners.items():
        if len(claims) > 1:
            ids = sorted(a for a, _ in claims)
            if agent_id in ids:
                mine = [a for a in ids if a != agent_id]
            continue
        if claims[0][1]:
            peers[str(node)] = claims[0][1]
    out: dict = {"peers": peers}
    if mine:
        out["node_conflict"] = mine
    return out
