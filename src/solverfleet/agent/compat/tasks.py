"""Bounded in-memory store of in.php tasks: pending, then solved or failed, then expired.

Task ids are numeric (client libraries parse them as integers) and start with this agent's
``node_id``, followed by exactly ``SUFFIX_DIGITS`` random digits: the id's length tells where
the node id ends, so the load balancer can route ``res.php?id=`` to the owning agent with one
regular expression per server (docs/PROTOCOLS.md). Random digits, not a counter: an
id of a previous process is not handed out again, and ids are not guessable.

A finished task stays fetchable for ``ttl`` seconds (from when it finished), then expires.
``clock`` is monotonic and injectable, so tests drive expiry without sleeping. One lock guards
the state; nothing under it does I/O.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

SUFFIX_DIGITS = 12
PENDING, SOLVED, FAILED = "pending", "solved", "failed"


@dataclass(slots=True, eq=False)
class Task:
    id: str
    key_id: str
    spec: Any  # methods.TaskSpec
    decision: Any  # precheck.Decision: key, user, price and the hold
    source_ip: str
    started: float  # monotonic, for duration_ms
    state: str = PENDING
    answer: str | None = None
    duration_ms: int = 0
    expires: float = 0.0
    delivering: bool = False  # a res.php is recording the charge right now
    delivered: bool = False  # charged and answered once; later gets answer again for free
    reported: bool = False
    gone: bool = False  # expired or abandoned: can no longer be delivered (or charged)
    restored: bool = False  # loaded after a restart (persist.py): needs a new hold to deliver


def id_pattern(node_id: int) -> str:
    """The regular expression matching every task id of ``node_id``."""
    return f"^{node_id}[0-9]{{{SUFFIX_DIGITS}}}$"


class TaskStore:
    def __init__(
        self, node_id: int, ttl: float, cap: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.node_id = node_id
        self.ttl = ttl
        self.cap = cap
        self.clock = clock
        self._lock = threading.Lock()
        self._tasks: dict[str, Task] = {}
        self._finished: deque[Task] = deque()  # finish order = expiry order (one ttl)
        self.kept: list[dict[str, Any]] = []  # the previous process's tasks (persist.py)
        # Stopping: the tasks went to the next process; an id not found here may be there.
        self.handed_over = False

    def __len__(self) -> int:
        return len(self._tasks)

    def add(self, make: Callable[[str], Task]) -> Task | None:
        """Store a new task made with a fresh id; None when the store is full."""
        with self._lock:
            if len(self._tasks) >= self.cap:
                return None
            while True:
                task_id = f"{self.node_id}{secrets.randbelow(10**SUFFIX_DIGITS):0{SUFFIX_DIGITS}d}"
                if task_id not in self._tasks:
                    break
            task = self._tasks[task_id] = make(task_id)
            return task

    def get(self, task_id: str) -> Task | None:
        return self._tasks.get(task_id)

    def restore(self, tasks: list[Task], expires: list[float]) -> None:
        """Put finished tasks of the previous process back, each fetchable until its own
        ``expires`` (monotonic, at most ``ttl`` from now), in expiry order among the others.
        Over the cap, the rest are dropped (uncharged)."""
        with self._lock:
            for task, when in zip(tasks, expires, strict=True):
                if len(self._tasks) >= self.cap or task.id in self._tasks:
                    continue
                task.expires = min(when, self.clock() + self.ttl)
                self._tasks[task.id] = task
                self._finished.append(task)
            self._finished = deque(sorted(self._finished, key=lambda t: t.expires))

    def finish(self, task: Task, ok: bool, answer: str | None, duration_ms: int) -> None:
        with self._lock:
            task.state = SOLVED if ok else FAILED
            task.answer = answer
            task.duration_ms = duration_ms
            task.expires = self.clock() + self.ttl
            self._finished.append(task)

    def claim_delivery(self, task: Task) -> bool:
        """True for exactly one caller: the one that records the charge of a solved task."""
        with self._lock:
            if task.state != SOLVED or task.delivered or task.delivering or task.gone:
                return False
            task.delivering = True
            return True

    def end_delivery(self, task: Task, recorded: bool) -> None:
        with self._lock:
            task.delivering = False
            task.delivered = recorded

    def claim_report(self, task: Task) -> bool:
        with self._lock:
            if task.reported:
                return False
            task.reported = True
            return True

    def unclaim_report(self, task: Task) -> None:
        with self._lock:
            task.reported = False

    def expired(self) -> list[Task]:
        """Remove finished tasks whose time is up; return those whose hold is still open
        (solved, never delivered), oldest first."""
        now = self.clock()
        gone: list[Task] = []
        with self._lock:
            while self._finished and self._finished[0].expires <= now:
                if self._finished[0].delivering:  # back in a moment; take it next sweep
                    break
                task = self._finished.popleft()
                self._tasks.pop(task.id, None)
                if self._settle(task):
                    gone.append(task)
        return gone

    def take_for_restart(self) -> tuple[list[Task], list[Task]]:
        """At a graceful stop: remove every task; return ``(kept, open)``: the finished,
        undelivered ones to write for the next process, and every one whose hold is still open
        (pending, or solved and undelivered). All are gone here from now on, so no later
        res.php can deliver (and charge) what the next process will deliver. One being
        delivered right now finishes its delivery and is not kept."""
        with self._lock:
            self.handed_over = True
            kept: list[Task] = []
            held: list[Task] = []
            for task in self._tasks.values():
                if task.delivering:
                    continue
                if task.state != PENDING and not task.delivered:
                    kept.append(task)
                if self._settle(task):
                    held.append(task)
            self._tasks.clear()
            self._finished.clear()
            return kept, held

    @staticmethod
    def _settle(task: Task) -> bool:
        task.gone = True
        return task.state != FAILED and not task.delivered
