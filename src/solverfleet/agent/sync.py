"""The fleet loop: ship the spool, then ``/agent/v1/sync`` (config, leases, balances), repeat.

One background thread (a greenlet under gunicorn's gevent worker) every ``sync_interval``, or
at once when the hot path calls ``trigger()`` for a lease. Shipping and syncing never overlap,
so each sync answer matches the acknowledgements the limiter has seen (see limiter.py).

A new process first ships its whole spool (the previous process's usage), then sends its
first sync with ``reset: true`` so the collector voids that agent's old leases; until then it
has no key data and is not ready.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from solverfleet import __version__
from solverfleet.agent.fleetclient import CollectorError, FleetClient
from solverfleet.agent.keystore import (
    KeyStore,
    Snapshot,
    SnapshotError,
    SnapshotPages,
    apply_delta,
    parse_snapshot,
)
from solverfleet.agent.limiter import Limiter
from solverfleet.agent.settings import AgentSettings
from solverfleet.agent.shipper import Backoff, Shipper

log = logging.getLogger(__name__)
SHIP_BATCHES_PER_ROUND = 5
WATCH_TTL = 300.0  # s a key asked about in /balance stays on the watch list
# Least time between the starts of two rounds: requests waiting on a reclaim trigger a round
# each; this bounds them to 20 syncs a second per agent, whatever the load.
ROUND_GAP = 0.05
# A whole snapshot this big is moved out of the cyclic GC's reach (gc.freeze): a full pass over
# a million keys' objects took 0.4-0.7 s with every request waiting on the GIL. Key records
# form no cycles, so reference counting still frees them when a later snapshot replaces them.
FREEZE_SNAPSHOT_KEYS = 50_000


class FleetLoop:
    def __init__(
        self,
        settings: AgentSettings,
        client: FleetClient,
        keystore: KeyStore,
        limiter: Limiter,
        shipper: Shipper,
        instance: str,
        stats: Callable[[], dict[str, int]],
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.client = client
        self.keystore = keystore
        self.limiter = limiter
        self.shipper = shipper
        self.instance = instance
        self._seq = 0  # numbers this process's requests, so a late or repeated one is known
        self._unanswered: dict[str, Any] | None = None  # a lease-changing request to send again
        self.stats = stats
        self.clock = clock
        self.monotonic = monotonic  # backoffs, last_ok, the watch list (a simulator's seam)
        self.reset_done = False
        self.online = False  # the last sync succeeded
        # The collector refused this agent's credential on the last sync (401/403): revoked, or
        # bound to another agent id. Not an outage: the agent leaves the balancer at once.
        self.refused = False
        self.last_ok: float | None = None  # monotonic time of the last successful sync
        self.balances: dict[str, int] = {}  # key id -> balance outside this agent's leases
        # node id -> address of every live agent that registered one (res.php anywhere);
        # replaced whole by each sync answer, read without a lock.
        self.peers: dict[int, str] = {}
        self._conflict: list[str] = []
        self._watch: dict[str, float] = {}
        self._trigger = threading.Event()
        self._stop = threading.Event()
        self._rounds = threading.Condition()
        self.rounds_started = 0
        self.rounds_done = 0
        self._sync_backoff = Backoff(settings.sync_interval)
        self._ship_backoff = Backoff(settings.sync_interval)
        self._ship_after = 0.0
        self._thread: threading.Thread | None = None
        self._last_error = ""
        self._pages: SnapshotPages | None = None  # a paged snapshot still arriving

    # ---- control ----------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="solverfleet-fleet", daemon=True)
        self._thread.start()

    def stop(self, timeout: float) -> None:
        self._stop.set()
        self._trigger.set()
        if self._thread is not None:
            self._thread.join(timeout)
        with self._rounds:
            self._rounds.notify_all()

    def trigger(self) -> None:
        """Ask for a round now (a lease is missing or low); never blocks."""
        self._trigger.set()

    def next_round(self) -> int:
        """The number of the round that will start after now; pass it to ``wait_round``."""
        with self._rounds:
            return self.rounds_started + 1

    def wait_round(self, number: int, timeout: float) -> bool:
        with self._rounds:
            return self._rounds.wait_for(
                lambda: self.rounds_done >= number or self._stop.is_set(), timeout
            )

    def watch(self, key_id: str) -> None:
        self._watch[key_id] = self.monotonic()

    # ---- the loop ---------------------------------------------------------------------------

    def _run(self) -> None:
        delay, started = 0.0, -ROUND_GAP
        while not self._stop.is_set():
            if delay > self.settings.sync_interval:
                self._stop.wait(delay)  # backing off: the hot path cannot hurry us
            else:
                self._trigger.wait(delay)
                gap = started + min(ROUND_GAP, self.settings.sync_interval) - time.monotonic()
                if gap > 0:
                    self._stop.wait(gap)
            if self._stop.is_set():
                break
            self._trigger.clear()
            started = time.monotonic()
            try:
                ok = self.run_once()
            except Exception:  # the loop must outlive any bug in one round
                log.exception("fleet loop round failed")
                ok = False
            delay = self.settings.sync_interval if ok else self._sync_backoff.next()
            if ok:
                self._sync_backoff.reset()

    def run_once(self) -> bool:
        """One round: ship what is pending, then sync. True when the sync succeeded."""
        with self._rounds:
            self.rounds_started += 1
        try:
            if not self.reset_done:
                if not self._ship(everything=True):
                    return False
            else:
                self._ship(everything=False)
            return self._sync()
        finally:
            with self._rounds:
                self.rounds_done += 1
                self._rounds.notify_all()

    def _ship(self, everything: bool) -> bool:
        """Ship pending usage; False when the collector failed (retried after a backoff)."""
        if self.monotonic() < self._ship_after:
            return False
        batches = 0
        try:
            while self.shipper.ship_batch() > 0:
                batches += 1
                if not everything and batches >= SHIP_BATCHES_PER_ROUND:
                    break  # the rest next round: keep the sync cadence
        except CollectorError as exc:
            self._ship_after = self.monotonic() + self._ship_backoff.next()
            self._note_error(f"usage shipping failed: {exc}")
            return False
        self._ship_backoff.reset()
        return True

    def _sync(self) -> bool:
        snap = self.keystore.snapshot
        now = self.clock()
        base = {
            "agent_id": self.settings.agent_id,
            "instance": self.instance,
            "release": __version__,
            "config_version": None if snap is None else snap.version,
            "deltas": True,  # we apply what changed since config_version (keystore.apply_delta)
            **({"snapshot_after": self._pages.after} if self._pages else {}),
            "watch": self._watch_list(),
            "stats": self.stats(),
            "node_id": self.settings.node_id,
            **(
                {"advertise_url": self.settings.advertise_url}
                if self.settings.advertise_url
                else {}
            ),
        }
        unanswered = self._unanswered
        if unanswered is not None:
            # The last request changed leases (returns, hand-backs) and got no answer: it may
            # or may not have been applied. Its lease part goes again as it was, same seq: the
            # collector applies it once either way (requestorder.py), so nothing handed back is
            # lost or returned twice.
            payload = {**base, **unanswered}
        else:
            idle = self.settings.lease_idle
            leases = self.limiter.lease_requests(snap, now, idle) if snap else []
            payload = {
                **base,
                "reset": not self.reset_done,
                "seq": self._next_seq(),
                "leases": leases,
            }
        lease_part = {k: payload[k] for k in ("reset", "seq", "leases")}
        self._unanswered = lease_part if payload["leases"] else None
        try:
            answer = self.client.post("/agent/v1/sync", payload)
            grants = answer.get("grants") or []
            balances = answer.get("balances") or {}
        except (CollectorError, AttributeError) as exc:
            status = getattr(exc, "status", None)
            if status is not None and status < 500:
                self._unanswered = None  # refused whole (4xx): nothing was applied
            self.limiter.sync_failed()
            self.online = False
            self.refused = status in (401, 403)
            self._note_error(f"sync failed: {exc}")
            return False
        self._unanswered = None
        try:
            self.limiter.apply_grants(grants)
            self.balances.update({str(k): int(v) for k, v in balances.items()})
            if self.limiter.reclaim(answer.get("reclaim") or []):
                self.trigger()  # another agent waits for what we hand back: return it now
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            self._note_error(f"sync answer malformed: {exc!r}")
            return False
        self._take_config(snap, answer)
        self._take_peers(answer)
        self.reset_done = True
        self.online = True
        self.refused = False
        self.last_ok = self.monotonic()
        if self._last_error:
            log.info("collector reachable again")
            self._last_error = ""
        return True

    def _take_config(self, snap: Snapshot | None, answer: dict[str, Any]) -> None:
        """Install a sync answer's config: a snapshot (whole, or its last page), or a delta."""
        config, delta, page = answer.get("config"), answer.get("delta"), answer.get("snapshot_page")
        fresh = None
        try:
            if config is not None:
                self._pages = None
                if answer.get("keys_after") is not None:
                    self._pages = SnapshotPages(
                        answer["config_version"], config, answer["keys_after"]
                    )
                else:
                    fresh = parse_snapshot(answer["config_version"], config)
            elif page is not None and self._pages is not None:
                fresh = self._pages.add(page)
                if fresh is not None:
                    self._pages = None
            elif snap is not None and delta is not None:
                fresh = apply_delta(snap, answer["config_version"], delta)
        except (SnapshotError, KeyError, TypeError, ValueError) as exc:
            # Keep serving on the old data; our old version makes the collector resend.
            self._pages = None
            self._note_error(f"config snapshot rejected: {exc}")
            return
        if self._pages is not None:
            self.trigger()  # fetch the next page now
        if fresh is not None:
            self.keystore.replace(fresh)
            self.limiter.refresh(snap, fresh)
            if delta is None and len(fresh.keys) >= FREEZE_SNAPSHOT_KEYS:
                gc.freeze()

    def _take_peers(self, answer: dict[str, Any]) -> None:
        peers = answer.get("peers")
        if isinstance(peers, dict):
            try:
                self.peers = {int(node): str(url) for node, url in peers.items()}
            except (TypeError, ValueError):
                self._note_error("sync answer malformed: peers")
        conflict = [str(a) for a in answer.get("node_conflict") or []]
        if conflict != self._conflict:
            self._conflict = conflict
            if conflict:
                log.error(
                    "node_id %d is also claimed by live agent(s) %s: task ids of this node are"
                    " ambiguous and not fetched across agents; set a distinct node_id",
                    self.settings.node_id,
                    ", ".join(conflict),
                )

    def _watch_list(self) -> list[str]:
        cutoff = self.monotonic() - WATCH_TTL
        for key_id in [k for k, t in self._watch.items() if t < cutoff]:
            del self._watch[key_id]
        return sorted(set(self._watch) | set(self.limiter.leased_keys()))

    def _note_error(self, message: str) -> None:
        if message != self._last_error:  # log a failure once, not four times a second
            log.warning("%s", message)
            self._last_error = message

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def release(self, timeout: float) -> list[Any]:
        """Give every unspent lease back (graceful stop); returns what the collector took."""
        leases = self.limiter.release_all(self.clock())
        if not leases:
            return []
        payload = {
            "agent_id": self.settings.agent_id,
            "instance": self.instance,
            "seq": self._next_seq(),
            "leases": leases,
        }
        answer = self.client.post("/agent/v1/release", payload, timeout)
        return list(answer.get("returned") or [])
