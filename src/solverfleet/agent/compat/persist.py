"""Tasks survive a graceful restart: written beside the spool at stop, read at the next start.

Money (docs/PROTOCOLS.md, "Restarts"): an answer is charged once, on its first delivery,
whoever delivers it. At a graceful stop every open hold is released (the stop then returns the
unused leases, as for /solve), and each finished, undelivered task is written to
``compat-tasks.json`` (atomically, mode 0600) with its key id, user id, type, price, soft_id
and pingback URL (a pingback not sent before the stop is sent by the next process). The
next process puts them back once it has key data, marked ``restored``: their first delivery
takes a *new* hold for the recorded price (``rehold``), exactly like an admission, before the
usage event is spooled and the hold committed. So a restored answer is charged at most once
and only while the balance covers it (no overdraft past DESIGN.md's bound); when the hold
cannot be had yet (lease not synced), the client is told ``CAPCHA_NOT_READY`` and polls again.
An answer never fetched expires uncharged, as before. Failed tasks come back failed (free).

The file is read and removed at start: a crash after that loses the answers, never charges
them; a kill -9 (no graceful stop) writes no file, and its tasks die uncharged, as before.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from solverfleet.agent import precheck
from solverfleet.agent.compat.methods import TaskSpec
from solverfleet.agent.compat.tasks import FAILED, PENDING, SOLVED, Task
from solverfleet.agent.leases import BalanceLease, Hold, Refusal

if TYPE_CHECKING:
    from solverfleet.agent.lifecycle import Agent

log = logging.getLogger(__name__)
FILE = "compat-tasks.json"
FORMAT = 1


def path(agent: Agent) -> Path:
    return Path(agent.settings.state_dir) / FILE


def record(task: Task, now_wall: float, now_mono: float) -> dict[str, Any]:
    """One finished task as JSON; its expiry as wall-clock time (monotonic restarts)."""
    return {
        "id": task.id,
        "key_id": task.key_id,
        "user_id": task.decision.user.id,
        "slug": task.spec.slug,
        "url": task.spec.url,
        "soft_id": task.spec.soft_id,
        "pingback": task.spec.pingback,
        "pingback_json": task.spec.pingback_json,
        "price": task.decision.price,
        "state": task.state,
        "answer": task.answer,
        "source_ip": task.source_ip,
        "duration_ms": task.duration_ms,
        "expires_at": now_wall + max(0.0, task.expires - now_mono),
    }


def save(agent: Agent, tasks: list[Task]) -> None:
    """Write ``tasks`` for the next process: temp file (0600), fsync, rename."""
    target = path(agent)
    now_wall, now_mono = time.time(), agent.tasks.clock()
    body = {
        "format": FORMAT,
        "node_id": agent.settings.node_id,
        "tasks": [record(task, now_wall, now_mono) for task in tasks],
    }
    tmp = target.with_name(target.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, json.dumps(body, separators=(",", ":")).encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, target)
    log.info("%d undelivered tasks kept for the next start", len(tasks))


def stop(agent: Agent) -> None:
    """The stop hook (after the drain): release every open hold, keep the finished tasks."""
    kept, held = agent.tasks.take_for_restart()
    for task in held:
        agent.limiter.release(task.decision.hold)  # the lease goes back with the release
    try:
        save(agent, kept)
    except OSError as exc:  # the answers die uncharged, as without this file
        log.error("undelivered tasks not kept (%s)", exc.strerror)


def load(agent: Agent) -> list[dict[str, Any]]:
    """The previous process's records (the file removed); [] if none or unreadable."""
    target = path(agent)
    try:
        raw = target.read_bytes()
    except FileNotFoundError:
        return []
    except OSError as exc:
        log.error("kept tasks not read (%s)", exc.strerror)
        return []
    target.unlink(missing_ok=True)
    try:
        body = json.loads(raw)
        if body.get("format") != FORMAT or body.get("node_id") != agent.settings.node_id:
            return []  # another node id: these ids would not route here
        return [r for r in body["tasks"] if isinstance(r, dict)]
    except (ValueError, AttributeError, KeyError, TypeError):
        log.error("kept tasks file unreadable; its answers are dropped uncharged")
        return []


def restore(agent: Agent, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Put records back into the task store once key data is there; returns the records
    still waiting for it (all of them when there is no snapshot yet)."""
    snap = agent.keystore.snapshot
    if snap is None or not records:
        return records
    now_wall, now_mono = time.time(), agent.tasks.clock()
    tasks, expires = [], []
    for rec in records:
        try:
            task = _task(snap, rec)
            when = now_mono + float(rec["expires_at"]) - now_wall
        except (KeyError, TypeError, ValueError):
            continue
        if task is not None and when > now_mono:
            tasks.append(task)
            expires.append(when)
    agent.tasks.restore(tasks, expires)
    for task in tasks:  # a pingback not sent before the stop is sent now (charged when sent)
        if task.restored and task.spec.pingback is not None and agent.tasks.get(task.id) is task:
            agent.pingbacks.enqueue(task)
    if tasks:
        log.info("%d undelivered tasks of the previous process restored", len(tasks))
    return []


def _task(snap: Any, rec: dict[str, Any]) -> Task | None:
    key, user = snap.keys.get(rec["key_id"]), snap.users.get(rec["user_id"])
    if key is None or user is None or rec["state"] == PENDING:
        return None  # a deleted key's answer cannot be fetched (nor charged)
    price = int(rec["price"])
    hold = Hold(BalanceLease(), None, price, False)
    hold.done = True  # a placeholder: nothing is held until ``rehold``
    decision = precheck.Decision(None, "", None, False, key, user, hold, price)
    decision.slug = str(rec["slug"])
    spec = TaskSpec(
        str(rec["slug"]),
        rec["url"],
        soft_id=rec.get("soft_id"),
        pingback=rec.get("pingback"),
        pingback_json=bool(rec.get("pingback_json")),
    )
    task = Task(str(rec["id"]), key.id, spec, decision, str(rec["source_ip"]), 0.0)
    task.state = SOLVED if rec["state"] == SOLVED else FAILED
    task.answer = rec["answer"]
    task.duration_ms = int(rec["duration_ms"])
    task.restored = task.state == SOLVED
    return task


def ensure(agent: Agent) -> None:
    """Restore the kept tasks once key data is there (called before a task is looked up)."""
    if agent.tasks.kept:
        records, agent.tasks.kept = agent.tasks.kept, []
        agent.tasks.kept = restore(agent, records)


def rehold(agent: Agent, task: Task) -> bool:
    """Hold the recorded price again for a restored answer's first delivery (the caller
    claimed the delivery); False: not now (no lease yet, or the balance is short)."""
    snap = agent.keystore.snapshot
    key = snap.keys.get(task.key_id) if snap is not None else None
    user = snap.users.get(key.user_id) if key is not None and snap is not None else None
    if key is None or user is None or not key.active or not user.active:
        return False
    price = task.decision.price
    outcome = agent.limiter.admit(key, user, price, agent.clock(), False, 0)
    if isinstance(outcome, Refusal):
        agent.loop.trigger()  # fetch the lease; the client polls again
        return False
    decision = precheck.Decision(None, "", None, False, key, user, outcome, price)
    decision.slug = task.spec.slug
    task.decision = decision
    task.restored = False
    return True
