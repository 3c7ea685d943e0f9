"""Ships spooled usage to ``/agent/v1/usage`` in batches; the spool advances only on a 200.

The collector answers 200 only after its transaction committed, and ignores event ids it has
already stored, so "retry the same batch until it is acknowledged" gives exactly-once.
A batch the collector calls malformed (400) is retried one event at a time; an event refused
alone goes to ``rejected.jsonl`` beside the spool (a bug to fix, never silently dropped).
Events the collector answers as ``refused`` (an agent-bound credential's usage beyond its
grants) are final: the batch is acknowledged and they are kept in ``rejected.jsonl`` too.
"""

from __future__ import annotations

import logging
import random
import time

from solverfleet.agent.fleetclient import CollectorError, FleetClient
from solverfleet.agent.limiter import Limiter
from solverfleet.agent.spool import Entry, Spool

log = logging.getLogger(__name__)
MAX_BATCH = 1000  # the protocol allows 5,000; smaller batches keep each request quick


class Backoff:
    """Exponential delay with jitter: ``base``, 2x, 4x ... up to ``cap``; ``reset`` on success."""

    def __init__(self, base: float, cap: float = 5.0) -> None:
        self.base = base
        self.cap = cap
        self.failures = 0

    def next(self) -> float:
        self.failures += 1
        delay = min(self.cap, self.base * 2 ** (self.failures - 1))
        return delay * random.uniform(0.8, 1.2)

    def reset(self) -> None:
        self.failures = 0


class Shipper:
    def __init__(
        self,
        spool: Spool,
        client: FleetClient,
        limiter: Limiter,
        agent_id: str,
        batch: int = MAX_BATCH,
    ) -> None:
        self.spool = spool
        self.client = client
        self.limiter = limiter
        self.agent_id = agent_id
        self.batch = batch
        self.shipped = 0  # events acknowledged by the collector in this process
        self.last_ok: float | None = None  # monotonic time of the last acknowledged batch

    @property
    def backlog(self) -> int:
        return self.spool.pending

    def ship_batch(self, timeout: float | None = None) -> int:
        """Ship one batch; returns how many spool lines it consumed (0 = nothing pending).

        Raises CollectorError when the collector is unreachable or failing: nothing advanced.
        """
        batch = self.spool.read_batch(self.batch)
        if not batch.entries:
            if batch.lines:  # only corrupt lines: step over them
                self.spool.ack(batch.end, batch.lines)
            return batch.lines
        try:
            answer = self._post(batch.entries, timeout)
        except CollectorError as exc:
            if exc.status != 400:
                raise
            log.error("collector refused a usage batch as malformed; retrying one by one")
            self._one_by_one(batch.entries, timeout)
            return batch.lines  # trailing corrupt lines, if any, wait for the next batch
        self._keep_refused(batch.entries, answer)
        self._acked(batch.entries)
        self.spool.ack(batch.end, batch.lines)
        return batch.lines

    def ship_all(self, deadline: float | None = None, timeout: float | None = None) -> bool:
        """Ship until the spool is empty (True) or ``deadline`` (monotonic) passes (False)."""
        while deadline is None or time.monotonic() < deadline:
            if self.ship_batch(timeout) == 0:
                return True
        return self.spool.pending <= 0

    def _post(self, entries: list[Entry], timeout: float | None) -> object:
        events = [entry.event for entry in entries]
        return self.client.post(
            "/agent/v1/usage", {"agent_id": self.agent_id, "events": events}, timeout
        )

    def _keep_refused(self, entries: list[Entry], answer: object) -> None:
        refused = answer.get("refused") if isinstance(answer, dict) else None
        if not refused:
            return
        reasons = {r.get("event_id"): r.get("reason") for r in refused if isinstance(r, dict)}
        for entry in entries:
            reason = reasons.get(entry.event.get("event_id"))
            if reason is not None:
                log.error(
                    "collector refused event %s (%s); kept in rejected.jsonl",
                    entry.event.get("event_id"),
                    reason,
                )
                self.spool.reject(entry, f"collector refused: {reason}")

    def _one_by_one(self, entries: list[Entry], timeout: float | None) -> None:
        done_lines = 0
        for entry in entries:
            try:
                self._keep_refused([entry], self._post([entry], timeout))
                self._acked([entry])
            except CollectorError as exc:
                if exc.status != 400:
                    raise
                log.error(
                    "collector refused event %s as malformed; kept in rejected.jsonl",
                    entry.event.get("event_id"),
                )
                self.spool.reject(entry, "collector answered 400")
            self.spool.ack(entry.end, entry.lines - done_lines)
            done_lines = entry.lines

    def _acked(self, entries: list[Entry]) -> None:
        self.shipped += len(entries)
        self.last_ok = time.monotonic()
        spends = [
            (entry.event["key_id"], int(entry.event.get("cost_micros") or 0))
            for entry in entries
            if not entry.legacy and entry.event.get("status") == "success"
        ]
        if spends:
            self.limiter.acked(spends)
