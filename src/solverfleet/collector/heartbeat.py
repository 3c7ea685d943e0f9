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
"""

from __future__ import annotations

import threading

from solverfleet.collector.protocol import SyncRequest

PERSIST_MS = 10_000  # longest a heartbeat stays unwritten


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
