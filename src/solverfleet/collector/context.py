"""The collector's per-process state, reachable from any request as ``current()``."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from flask import current_app

from solverfleet.collector.configdelta import DeltaCache
from solverfleet.collector.heartbeat import Heartbeats, IdleView
from solverfleet.collector.ingest import IngestWriter
from solverfleet.collector.settings import CollectorSettings
from solverfleet.collector.store import Database
from solverfleet.collector.tokens import TokenCache

EXTENSION = "solverfleet.collector"


@dataclass
class Collector:
    settings: CollectorSettings
    db: Database
    # Settable so tests can move time (lease TTL) without sleeping.
    clock: Callable[[], float] = time.time
    writer: IngestWriter = field(init=False)
    heartbeats: Heartbeats = field(init=False)
    idle_view: IdleView = field(init=False)
    tokens: TokenCache = field(init=False)
    deltas: DeltaCache = field(init=False)

    def __post_init__(self) -> None:
        self.writer = IngestWriter(self.db, self.now_ms)
        self.heartbeats = Heartbeats(self.ttl_ms)
        self.idle_view = IdleView(self.db)
        self.tokens = TokenCache(self.db)
        self.deltas = DeltaCache()

    def now_ms(self) -> int:
        return int(self.clock() * 1000)

    @property
    def ttl_ms(self) -> int:
        return int(self.settings.lease_ttl * 1000)


def current() -> Collector:
    return current_app.extensions[EXTENSION]
