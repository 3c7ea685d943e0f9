"""Agent heartbeats kept in memory, so an idle sync is one read transaction and no write.

A sync that changes nothing (no lease items, no reset) from an agent whose heartbeat this
process persisted less than ``interval_ms`` ago, with the same instance, release, config
version and address (node id, advertise_url), is idle: ``leases.sync`` answers it from a read.
Every other sync writes the ``agents`` row as before (in its lease transaction, at no extra
cost). So the row's ``last_seen_ms``, ``in_flight`` and ``spool_backlog`` lag the truth by
less than the interval (the fleet page, ``/admin/v1/agents``, fleethealth), a new instance,
release or config version shows at its first sync, and another agent's sync may void an idle
agent's leases after ``lease_ttl - interval`` of silence instead of ``lease_ttl`` (the
interval is at most a tenth of the TTL, which already must exceed every agent's ``offline_grace``).

Per process: with several collectors each persists the agents it hears from.

An idle sync from an agent that is up to date, watches no balance and has no reclaim order
is answered from ``IdleView`` without touching the store: the config version, the agents
with orders and the agents' addresses (the answer's ``peers``), read at most every ``VIEW_MS``
and again after any write this process commits.
A change committed by another collector process reaches its agents up to ``VIEW_MS`` later.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from solverfleet.collector import peers
from solverfleet.collector.protocol import SyncRequest
from solverfleet.collector.store import Database, Tx

PERSIST_MS = 10_000  # longest a heartbeat stays unwritten
VIEW_MS = 50  # longest IdleView answers from what it read (another process's changes)


class Heartbeats:
    def __init__(self, ttl_ms: int) -> None:
        self.interval_ms = min(PERSIST_MS, ttl_ms // 10)
        self._persisted: dict[str, tuple[tuple, int]] = {}  # agent -> (identity, when)
        self._lock = threading.Lock()

    @staticmethod
    def _identity(req: SyncRequest) -> tuple:
        return req.instance, req.release, req.config_version, req.node_id, req.advertise_url

    def idle(self, req: SyncRequest, now_ms: int) -> bool:
        """Whether ``req`` needs no write transaction at all."""
        if req.leases or req.reset:
            return False
        with self._lock:
            last = self._persisted.get(req.agent_id)
        return (
            last is not None
            and last[0] == self._identity(req)
            and 0 <= now_ms - last[1] < self.interval_ms
        )

    def persisted(self, req: SyncRequest, now_ms: int) -> None:
        """``req``'s heartbeat was written (committed) at ``now_ms``."""
        with self._lock:
            self._persisted[req.agent_id] = (self._identity(req), now_ms)


class IdleView:
    """The config version, the agents with pending reclaim orders and the agents' registered
    addresses (``peers.ROWS``, for the peer map of every answer), as last read."""

    def __init__(self, db: Database, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.db = db
        self.monotonic = monotonic  # not the collector's clock: tests freeze that one
        self._lock = threading.Lock()
        self._seen: tuple[int, float, int, frozenset[str], list[tuple]] | None = None

    def settled(self, req: SyncRequest) -> int | None:
        """The config version if ``req`` (idle by ``Heartbeats.idle``) needs nothing from the
        store: the agent is at that version, watches no balance, pages no snapshot and has
        no reclaim order. None: answer it from a read."""
        if req.watch or req.snapshot_after is not None:
            return None
        version, ordered, _ = self._current()
        return version if req.config_version == version and req.agent_id not in ordered else None

    def registered(self) -> list[tuple]:
        """The agents' node ids and addresses (``peers.ROWS``), as last read."""
        return self._current()[2]

    def _current(self) -> tuple[int, frozenset[str], list[tuple]]:
        writes, now = self.db.writes, self.monotonic()
        with self._lock:
            seen = self._seen
        if seen is not None and seen[0] == writes and 0 <= now - seen[1] < VIEW_MS / 1000:
            return seen[2], seen[3], seen[4]
        version, ordered, rows = self.db.read(_read_view)
        with self._lock:
            self._seen = (writes, now, version, ordered, rows)  # writes read before: not newer
        return version, ordered, rows


def _read_view(tx: Tx) -> tuple[int, frozenset[str], list[tuple]]:
    version = int(tx.scalar("SELECT version FROM config_state WHERE id = 1"))
    ordered = frozenset(row[0] for row in tx.all("SELECT DISTINCT agent_id FROM lease_reclaim"))
    return version, ordered, tx.all(peers.ROWS)
