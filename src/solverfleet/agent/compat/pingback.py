"""Pingbacks: a finished task's answer POSTed to a URL its owner registered (docs/PROTOCOLS.md).

``in.php``'s ``pingback=URL`` gets 2captcha's form (``id=<task id>&code=<answer>``,
form-encoded); ``createTask``'s ``callbackUrl`` gets the ``getTaskResult`` JSON of the task
(with its ``taskId``). A failed task is posted too (``code=ERROR_CAPTCHA_UNSOLVABLE``), free.

Off the hot path: the worker's background call only queues the task (a bounded heap, dropped
when full: the client can still poll). ``WORKERS`` threads (greenlets under gunicorn's gevent)
send, one attempt each, ``pingback_timeout`` each, no redirects (pingback_url.post); a failed
attempt is retried after ``pingback_backoff`` s, doubling, at most ``pingback_retries`` times.

Billing is the task store's: a solved answer is charged once, on first delivery, by a
pingback or by res.php / getTaskResult, whichever comes first, and like res.php's it is
recorded before the answer leaves (a kill -9 cannot lose it). An attempt first opens the
connection (pingback_url.connect: resolve, check, TCP and TLS); only then does it claim the
delivery, record the charge (solve.charge) and write the request. A receiver that cannot be
reached is never charged for (the client can still poll); one that was sent the answer is,
whatever it replied, and is retried, free, until a 2xx or the last retry.
"""

from __future__ import annotations

import heapq
import itertools
import json
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from solverfleet.agent.compat import answers, pingback_url, tasks_json
from solverfleet.agent.compat import solve as compat_solve
from solverfleet.agent.compat.tasks import SOLVED, Task
from solverfleet.money import format_micros

if TYPE_CHECKING:
    from solverfleet.agent.lifecycle import Agent

log = logging.getLogger(__name__)
WORKERS = 2
MAX_QUEUED = 1000
MAX_DELAY = 60.0  # s: the longest wait between two attempts
BUSY_DELAY = 0.5  # s: a res.php is delivering the task right now; look again in a moment
FORM = "application/x-www-form-urlencoded"


def delays(backoff: float, retries: int) -> list[float]:
    """The waits before each retry: backoff, doubling, capped at MAX_DELAY."""
    return [min(MAX_DELAY, backoff * 2**n) for n in range(retries)]


def form_body(task: Task) -> bytes:
    """2captcha's pingback: ``id=<task id>&code=<answer or error>``."""
    code = task.answer if task.state == SOLVED else answers.UNSOLVABLE
    return urlencode({"id": task.id, "code": code or ""}).encode()


def json_body(task: Task) -> bytes:
    """The task's getTaskResult answer, with its ``taskId``."""
    if task.state == SOLVED:
        body: dict[str, Any] = {
            "errorId": 0,
            "taskId": int(task.id),
            "status": "ready",
            "solution": tasks_json.solution(task.spec.slug, task.answer or ""),
            "cost": format_micros(task.decision.price),
            "ip": task.source_ip,
            "solveCount": 1,
        }
    else:
        body = {**tasks_json.error_body(answers.UNSOLVABLE), "taskId": int(task.id)}
    return json.dumps(body, separators=(",", ":")).encode()


@dataclass(order=True)
class _Job:
    due: float
    seq: int
    task: Task = field(compare=False)
    attempt: int = field(default=0, compare=False)


class Sender:
    """The bounded queue of pingbacks and the threads that send them (started on first use)."""

    def __init__(self, agent: Agent, clock: Any = time.monotonic) -> None:
        settings = agent.settings
        self.agent = agent
        self.allow = pingback_url.parse_cidrs(settings.pingback_allow_cidrs)
        self.timeout = settings.pingback_timeout
        self.delays = delays(settings.pingback_backoff, settings.pingback_retries)
        self.clock = clock
        self._heap: list[_Job] = []
        self._seq = itertools.count()
        self._cond = threading.Condition()
        self._started = False
        self._stopped = False
        self.sent = 0  # pingbacks answered 2xx (metrics)
        self.failed = 0  # pingbacks given up after the last retry (metrics)

    @property
    def queued(self) -> int:
        return len(self._heap)

    def enqueue(self, task: Task) -> None:
        """Queue a finished task whose spec has a pingback; never blocks."""
        with self._cond:
            if self._stopped:
                return
            if len(self._heap) >= MAX_QUEUED:
                log.warning("pingback queue full; task %s is left to polling", task.id)
                return
            heapq.heappush(self._heap, _Job(self.clock(), next(self._seq), task))
            if not self._started:
                self._started = True
                for n in range(WORKERS):
                    threading.Thread(target=self._run, name=f"pingback-{n}", daemon=True).start()
            self._cond.notify()

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._heap.clear()
            self._cond.notify_all()

    def _take(self) -> _Job | None:
        with self._cond:
            while not self._stopped:
                now = self.clock()
                if self._heap and self._heap[0].due <= now:
                    return heapq.heappop(self._heap)
                wait = self._heap[0].due - now if self._heap else None
                self._cond.wait(wait)
            return None

    def _again(self, job: _Job, delay: float, attempt: int) -> None:
        with self._cond:
            if not self._stopped:
                job.due, job.attempt = self.clock() + delay, attempt
                heapq.heappush(self._heap, job)
                self._cond.notify()

    def _run(self) -> None:
        while (job := self._take()) is not None:
            try:
                self._attempt(job)
            except Exception:
                log.exception("pingback of task %s failed", job.task.id)

    def _attempt(self, job: _Job) -> None:
        task, store, spec = job.task, self.agent.tasks, job.task.spec
        if task.gone:
            return
        try:
            conn = pingback_url.connect(spec.pingback, self.allow, self.timeout)
        except (pingback_url.Refused, OSError) as exc:
            self._failed(job, str(exc) if isinstance(exc, pingback_url.Refused) else
                         type(exc).__name__)  # fmt: skip
            return
        try:
            if task.state == SOLVED and not task.delivered:
                if not store.claim_delivery(task):  # a res.php is recording it right now
                    if not task.gone:
                        self._again(job, BUSY_DELAY, job.attempt)
                    return
                if not compat_solve.charge(self.agent, task):  # the spool refused: not sent
                    self._failed(job, "usage not recorded")
                    return
            body, kind = (json_body(task), "application/json") if spec.pingback_json else (
                form_body(task), FORM)  # fmt: skip
            try:
                status = conn.post(body, kind)
            except OSError as exc:
                self._failed(job, type(exc).__name__)
                return
        finally:
            conn.close()
        if 200 <= status < 300:
            self.sent += 1
        else:
            self._failed(job, f"HTTP {status}")

    def _failed(self, job: _Job, reason: str) -> None:
        """Retry later, or give up after the last retry."""
        if job.attempt < len(self.delays):
            self._again(job, self.delays[job.attempt], job.attempt + 1)
            return
        self.failed += 1
        log.warning("pingback of task %s given up after %d attempts (%s)",
                    job.task.id, job.attempt + 1, reason)  # fmt: skip
