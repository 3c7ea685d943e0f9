"""Which sync and release requests an agent's leases may be changed by: each change applied
once, and never by a process that has been replaced.

Lease items carry deltas (a return, a grant asked for) and ``reset`` voids, so a request
applied twice, or after a newer one, moves money and tokens the agent no longer has: a proxy's
retry or a request held up in the network and delivered after the agent gave up on it (the
simulator's findings 6 and 7). Every request therefore names its process (``instance``, which
starts with the process's start time in ms: later processes sort later) and a per-process
sequence number (``seq``). A request that would change leases is *stale* when

- it comes from the recorded instance with a ``seq`` at or below the last one that changed
  leases (a duplicate, or a late copy: the agent has moved on), or
- it comes from an instance older than the recorded one (a process that has been replaced).

A stale request changes nothing: its items are read as "how much do I hold" and a reset in it
is not one; a replaced process's request does not even count as a heartbeat. A process resets
once: a reset from the recorded instance is a retry (its first reset already voided).

An exact repeat of the last lease-changing request (same instance and ``seq``: a proxy's retry,
or the agent sending again a request whose answer it never got) is answered with what that
request was granted (``sync_answer``, kept with ``sync_seq``), beside what is held now: the
agent learns grants it would otherwise never see, which would stay with it at the collector,
out of every reclaim's reach, until their minute or day ended.

Requests of agents older than this protocol (no ``seq``, or an instance without a start time)
are taken as they come, as before.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from solverfleet.collector.protocol import LeaseRequest
from solverfleet.collector.store import Tx

_STARTED = re.compile(r"^(\d{13})-")


@dataclass(frozen=True)
class Standing:
    current: bool  # the request's process is the agent's current one (or a newer one)
    reset: bool  # void the agent's leases first
    stale: bool  # change no lease: a repeat, a late copy or a replaced process's request
    record: bool  # remember ``seq`` as the last one that changed leases
    other: bool = False  # from another instance than the recorded one (newer or unordered)
    replay: list[dict] | None = None  # an exact repeat: what the first copy was granted


def started_ms(instance: str | None) -> int | None:
    """The start time an instance id begins with, or None (an older agent's plain uuid)."""
    match = _STARTED.match(instance or "")
    return int(match.group(1)) if match else None


def standing(
    tx: Tx, agent_id: str, instance: str | None, seq: int | None, reset: bool, changes: bool
) -> Standing:
    """Judge one request; locks the agent's row (the first lock of leases.py's order)."""
    row = tx.one(
        "SELECT instance, sync_seq, sync_answer FROM agents WHERE agent_id = ?"
        + tx.dialect.for_update,
        (agent_id,),
    )
    prior, last, answer = (row[0], row[1], row[2]) if row else (None, None, None)
    if instance is None or prior is None:
        return Standing(True, reset, False, changes and seq is not None)
    if instance == prior:
        repeat = changes and seq is not None and last is not None and seq <= int(last)
        replay = _decode(answer) if repeat and seq == int(last) else None
        record = changes and not repeat and seq is not None
        return Standing(True, False, repeat, record, replay=replay)
    mine, theirs = started_ms(instance), started_ms(prior)
    if mine is not None and theirs is not None and mine < theirs:
        return Standing(False, False, True, False, other=True)
    return Standing(True, reset, False, changes and seq is not None, other=True)


def record(tx: Tx, agent_id: str, seq: int | None, grants: list[dict] | None = None) -> None:
    """``seq`` changed leases; ``grants``: what it was granted (a sync), for an exact repeat."""
    granted = None
    if grants is not None:
        granted = json.dumps([g for g in grants if g.get("granted_micros") or g.get("granted")])
    tx.execute(
        "UPDATE agents SET sync_seq = ?, sync_answer = ? WHERE agent_id = ?",
        (seq, granted, agent_id),
    )


def replayed(grants: list[dict], first: list[dict]) -> list[dict]:
    """A repeat's answer: what is held now, with what the first copy was granted."""
    given = {_lease_id(g): g for g in first}
    out = []
    for grant in grants:
        earlier = given.get(_lease_id(grant))
        if earlier is not None:
            amount = "granted_micros" if grant["kind"] == "balance" else "granted"
            grant = {**grant, amount: earlier.get(amount, 0)}
        out.append(grant)
    return out


def _lease_id(grant: dict[str, Any]) -> tuple:
    return (
        grant.get("kind"),
        grant.get("key_id") or grant.get("user_id"),
        grant.get("window") or grant.get("day"),
    )


def _decode(text: str | None) -> list[dict] | None:
    return None if text is None else list(json.loads(text))


def neutral(lease: LeaseRequest) -> None:
    """A stale request's item: ask nothing, return nothing, settle nothing."""
    lease.want = lease.min_unit = lease.give_back = 0
    lease.settle = lease.urgent = False
