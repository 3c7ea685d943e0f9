"""The agent's runtime: its parts, in-flight tracking, readiness, drain and graceful stop.

Graceful stop (SIGTERM, see gunicorn_conf): readiness fails and new solves get 503
``draining``; in-flight solves finish (up to ``drain_grace``); the fleet loop stops; the spool
is shipped (up to ``ship_timeout``); unused leases go back via ``/agent/v1/release``.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from solverfleet import __version__
from solverfleet.agent.bans import BanList
from solverfleet.agent.clientip import parse_nets
from solverfleet.agent.fleetclient import CollectorError, FleetClient
from solverfleet.agent.keystore import KeyStore
from solverfleet.agent.limiter import Limiter
from solverfleet.agent.settings import AgentSettings
from solverfleet.agent.shipper import Shipper
from solverfleet.agent.spool import Spool
from solverfleet.agent.sync import FleetLoop
from solverfleet.agent.workerclient import WorkerClient

log = logging.getLogger(__name__)
_AGENTS: list[Agent] = []


def current_agent() -> Agent | None:
    """The agent of this process (gunicorn hooks find it here)."""
    return _AGENTS[-1] if _AGENTS else None


class StateDirLocked(RuntimeError):
    pass


class Agent:
    def __init__(self, settings: AgentSettings) -> None:
        self.settings = settings
        state = Path(settings.state_dir)
        state.mkdir(parents=True, exist_ok=True)
        self._lock_fd = _lock_state_dir(state)
        # Starts with the start time: the collector tells a replaced process's late requests
        # from the current one's by it (collector/requestorder.py).
        self.instance = f"{int(time.time() * 1000):013d}-{uuid.uuid4()}"
        self.started = time.monotonic()
        self.trusted = parse_nets(settings.trusted_proxies)
        self.allowance = settings.offline_allowance_micros
        self.keystore = KeyStore()
        self.limiter = Limiter(
            lease_calls=settings.lease_calls, lease_seconds=settings.lease_seconds
        )
        self.spool = Spool(state / "spool")
        self.client = FleetClient(
            settings.collector_url,
            settings.fleet_token,
            settings.collector_timeout,
            ca_file=settings.collector_ca_file,
            token_file=settings.fleet_token_file,
        )
        self.shipper = Shipper(self.spool, self.client, self.limiter, settings.agent_id)
        self.clock = time.time  # wall clock for CPM windows and days; tests pin it
        self.loop = FleetLoop(
            settings,
            self.client,
            self.keystore,
            self.limiter,
            self.shipper,
            self.instance,
            self.stats,
            clock=lambda: self.clock(),
        )
        self.worker = WorkerClient(settings.worker_url, settings.worker_timeout)
        self.tasks: Any = None  # in.php tasks: set by agent/compat's register
        self.pingbacks: Any = None  # ... and their pingback sender
        self.peers: Any = None  # other agents, for their tasks: set by agent/compat's register
        self.bans = BanList(
            settings.ban_threshold, settings.ban_window, settings.ban_duration,
            settings.ban_max_ips, clock=lambda: self.clock(), exempt=self.trusted,
        )  # fmt: skip
        self.stop_hooks: list[Callable[[], None]] = []  # run once solves are finished
        self.draining = False
        self.in_flight = 0
        self._idle = threading.Condition()
        self._stopping = threading.Lock()
        self._stopped = False
        _AGENTS.append(self)

    def start(self) -> None:
        self.loop.start()

    # ---- state ------------------------------------------------------------------------------

    @property
    def offline(self) -> bool:
        return not self.loop.online

    def readiness(self) -> tuple[str | None, str]:
        """``(None, "")`` when ready, else the error code and message for a 503."""
        if self.draining:
            return "draining", "this agent is draining; retry on another host"
        if self.loop.refused:
            return "credential_refused", "the collector refuses this agent's credential"
        if self.keystore.snapshot is None or not self.loop.reset_done:
            return "not_ready", "no key data from the collector yet"
        last_ok = self.loop.last_ok
        if last_ok is None or time.monotonic() - last_ok > self.settings.offline_grace:
            return "not_ready", "collector unreachable for longer than offline_grace"
        return None, ""

    def stats(self) -> dict[str, int]:
        return {"in_flight": self.in_flight, "spool_backlog": max(0, self.spool.pending)}

    def status(self) -> dict[str, Any]:
        """The operator's view (``GET /admin/status``, the fleet health report). Ages are
        seconds, ``None`` when it never happened in this process."""
        code, message = self.readiness()
        now = time.monotonic()

        def age(then: float | None) -> float | None:
            return None if then is None else round(now - then, 3)

        return {
            "agent_id": self.settings.agent_id,
            "node_id": self.settings.node_id,
            "version": __version__,
            "instance": self.instance,
            "uptime_s": round(now - self.started, 3),
            "ready": code is None,
            "reason": code,
            "message": message,
            "draining": self.draining,
            **self.stats(),
            "leases": self.limiter.summary(self.clock()),
            "collector": {
                "online": self.loop.online,
                "last_sync_age_s": age(self.loop.last_ok),
                "last_ship_age_s": age(self.shipper.last_ok),
                "shipped": self.shipper.shipped,
            },
        }

    @contextlib.contextmanager
    def tracking(self) -> Iterator[None]:
        """Count a request as in flight, so drain waits for it."""
        self.begin_work()
        try:
            yield
        finally:
            self.end_work()

    def begin_work(self) -> None:
        """Count work in flight; a background solve begins before its request answers, so
        drain can never see a gap between the two."""
        with self._idle:
            self.in_flight += 1

    def end_work(self) -> None:
        with self._idle:
            self.in_flight -= 1
            if self.in_flight == 0:
                self._idle.notify_all()

    def wait_idle(self, timeout: float) -> bool:
        with self._idle:
            return self._idle.wait_for(lambda: self.in_flight == 0, timeout)

    # ---- stopping ---------------------------------------------------------------------------

    def begin_drain(self, *, quiet: bool = False) -> None:
        """Readiness fails and new solves get 503 ``draining``; in-flight ones go on."""
        if not self.draining and not quiet:
            log.info("draining: readiness fails, new solves are refused")
        self.draining = True

    def shutdown(self, *, drain_grace: float | None = None, ship_timeout: float | None = None):
        """Drain, finish in-flight, ship the spool, return leases. Safe to call again: a later
        call only ships what stragglers recorded since. The keyword overrides shorten a quick
        stop (SIGINT/SIGQUIT: gunicorn allows only seconds)."""
        with self._stopping:
            first, self._stopped = not self._stopped, True
        settings = self.settings
        grace = settings.drain_grace if drain_grace is None else drain_grace
        ship_budget = settings.ship_timeout if ship_timeout is None else ship_timeout
        if not first:
            self._ship(min(ship_budget, 5.0))
            return
        started = time.monotonic()
        log.info("stopping: draining, waiting for %d in-flight solves", self.in_flight)
        self.begin_drain(quiet=True)
        if not self.wait_idle(grace):
            log.warning("drain grace over with %d solves still in flight", self.in_flight)
        for hook in self.stop_hooks:
            try:
                hook()
            except Exception:
                log.exception("stop hook failed")
        self.loop.stop(settings.collector_timeout + 1.0)
        self._ship(ship_budget)
        try:
            returned = self.loop.release(min(settings.collector_timeout, max(ship_budget, 1.0)))
            log.info(
                "stopped in %.2f s: spool shipped, %d unused leases returned",
                time.monotonic() - started,
                len(returned),
            )
        except CollectorError as exc:
            log.warning("could not return leases (%s); the collector reclaims them later", exc)

    def _ship(self, budget: float) -> None:
        try:
            done = self.shipper.ship_all(
                time.monotonic() + budget, timeout=min(budget, self.settings.collector_timeout)
            )
        except CollectorError as exc:
            done = False
            log.warning("spool not fully shipped at stop (%s)", exc)
        if not done:
            log.warning("%d usage events stay in the spool for the next start", self.spool.pending)

    def close(self) -> None:
        """Release files and sockets (tests; a real process just exits)."""
        self.loop.stop(1.0)
        self.spool.close()
        self.client.close()
        self.worker.close()
        if self.peers is not None:
            self.peers.close()
        os.close(self._lock_fd)
        if self in _AGENTS:
            _AGENTS.remove(self)


def _lock_state_dir(state: Path) -> int:
    """One process per state dir: the spool and the leases belong to one agent_id."""
    fd = os.open(state / "agent.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise StateDirLocked(f"{state} is in use by another agent process") from None
    return fd
