"""Reclaim orders: asking agents to hand back what they hold of a lease, so the fleet refuses
only what it cannot afford and a changed limit holds fleet-wide.

Two causes write orders (rows of ``lease_reclaim``, one per agent and lease):

- An agent asked for more than the pool has while other agents hold unspent slack of the same
  lease (money stranded in another agent's balance lease, CPM or daily tokens). Each holder is
  ordered to give its unspent part back; the asker is told ``reclaiming`` and waits (bounded by
  its ``lease_wait``) for the next grant instead of refusing. A holder that answered an order
  is *settled*: what it still holds is spent or in flight, so a starved agent does not wait
  for it again until it is granted more.
- A limit changed (a key's CPM ceiling, a user's daily limit, a key's or user's active flag):
  every agent holding a lease of it gives it back, and the pool is re-cut under the new limit.
  The fleet passes a lowered limit by at most what its agents admit before their next sync.

An agent's orders come in every sync answer until the agent answers each with a ``settle``
item (then the row is deleted), so an order in a lost answer is sent again. Only an *urgent*
ask (the agent cannot serve one more call) orders reclaims: a routine refill that did would
take back what a waiting agent was just granted. Writers hold the lease's key or user row
lock (leases.py's lock order).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from solverfleet.collector.protocol import LeaseRequest
from solverfleet.collector.store import Tx, marks

BALANCE, CPM, DAILY = "balance", "cpm", "daily"

# Which rows of which lease table hold something reclaimable, per kind.
_HOLDERS = {
    BALANCE: ("lease_balance", "key_id = ?", "held_micros"),
    CPM: ("lease_cpm", "key_id = ? AND win = ?", "granted"),
    DAILY: ("lease_daily", "user_id = ? AND day_utc = ?", "granted - used"),
}


def _where(kind: str, ident: str, period: str) -> tuple[str, str, tuple]:
    table, where, amount = _HOLDERS[kind]
    params = (ident,) if kind == BALANCE else (ident, int(period) if kind == CPM else period)
    return table, f"{where} AND {amount} > 0", params


def order_from_holders(tx: Tx, kind: str, ident: str, period: str, asker: str, lack: int) -> bool:
    """``asker`` is short of ``lack`` (micros or tokens) on a lease: order every other agent
    that holds unsettled slack of it to hand it back. True when that slack could cover ``lack``
    (the asker should wait for it); False when it cannot (refuse now)."""
    table, where, params = _where(kind, ident, period)
    amount = _HOLDERS[kind][2]
    rows = tx.all(
        f"SELECT agent_id, {amount} FROM {table} WHERE {where} AND settled = 0 AND agent_id <> ?",
        (*params, asker),
    )
    if lack <= 0 or sum(int(r[1]) for r in rows) < lack:
        return False
    _insert(tx, [r[0] for r in rows], kind, ident, period)
    return True


def order_all(tx: Tx, kind: str, ident: str, since: str) -> None:
    """A limit of ``ident`` changed: every agent holding a lease of it (CPM windows or days
    from ``since`` on) gives it back, so the pool is re-cut under the new limit."""
    table, where, params = _where(kind, ident, since)
    period = "win" if kind == CPM else "day_utc"
    where = where.replace(f"{period} = ?", f"{period} >= ?")
    for agent, at in tx.all(f"SELECT agent_id, {period} FROM {table} WHERE {where}", params):
        _insert(tx, [agent], kind, ident, str(at))


def _insert(tx: Tx, agents: list[str], kind: str, ident: str, period: str) -> None:
    if not agents:
        return
    columns = ("agent_id", "kind", "ident", "period")
    # An order already pending stays one order (the update is a no-op on the key columns).
    sql = tx.dialect.upsert("lease_reclaim", columns, columns, {"period": tx.dialect.new("period")})
    for agent in sorted(set(agents)):
        tx.execute(sql, (agent, kind, ident, period))


def pending(tx: Tx, agent: str) -> list[dict]:
    """``agent``'s orders, as sync answer items. Sent in every sync until the agent answers
    each with ``settle`` (``settled``): an order in an answer that is lost is sent again."""
    return items(
        tx.all("SELECT kind, ident, period FROM lease_reclaim WHERE agent_id = ?", (agent,))
    )


def items(rows: Iterable[Sequence[Any]]) -> list[dict]:
    """``(kind, ident, period)`` rows of ``lease_reclaim`` as sync answer items."""
    out = []
    for kind, ident, period in rows:
        if kind == BALANCE:
            out.append({"kind": kind, "key_id": ident})
        elif kind == CPM:
            out.append({"kind": kind, "key_id": ident, "window": int(period)})
        else:
            out.append({"kind": kind, "user_id": ident, "day": period})
    return out


def settled(tx: Tx, agent: str, lease: LeaseRequest) -> None:
    """The agent answered the order for ``lease`` (a ``settle`` item): the order is done."""
    if lease.kind == BALANCE:
        ident, period = lease.key_id, ""
    elif lease.kind == CPM:
        ident, period = lease.key_id, str(lease.window)
    else:
        ident, period = lease.user_id, lease.day or ""
    tx.execute(
        "DELETE FROM lease_reclaim WHERE agent_id = ? AND kind = ? AND ident = ? AND period = ?",
        (agent, lease.kind, ident, period),
    )


def forget_agents(tx: Tx, agents: list[str]) -> None:
    """Voided agents (reset, reclaimed as stale) hold nothing: their orders are moot."""
    if agents:
        tx.execute(f"DELETE FROM lease_reclaim WHERE agent_id IN ({marks(len(agents))})", agents)
