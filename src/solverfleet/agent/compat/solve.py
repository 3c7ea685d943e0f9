"""The in.php task lifecycle on top of the native solve machinery (solvepath.py).

Money follows the native rules, stretched over two requests:

- ``in.php`` admits with the same pre-check and takes the same hold (price + daily token,
  CPM token consumed), then the worker call runs in the background.
- Worker failure: a ``failed`` usage event (cost 0) is spooled and the hold released.
- Worker success: the answer waits in memory *with its hold*. The first ``res.php`` that
  delivers it spools the ``success`` usage event (the same event ``/solve`` writes) and only
  then commits the hold and answers: record before answer, so kill -9 cannot lose a charge,
  and an answer nobody fetched is never charged.
- Expiry before delivery: the hold is released and a ``failed`` event with error
  ``not_delivered`` (cost 0) logs the worker call. A graceful stop releases the hold and keeps
  the answer for the next process (persist.py), which holds again before charging it.

Every function returns a protocol text (answers.py); none raises on bad input.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING

from solverfleet.agent.compat import answers, persist
from solverfleet.agent.compat.methods import TaskSpec
from solverfleet.agent.compat.tasks import FAILED, PENDING, Task, TaskStore
from solverfleet.agent.solvepath import admit_waiting, spool_event, usage_event

if TYPE_CHECKING:
    from solverfleet.agent.keystore import Key, Snapshot, User
    from solverfleet.agent.lifecycle import Agent

log = logging.getLogger(__name__)

# ---- in.php ---------------------------------------------------------------------------------


def submit(
    agent: Agent, snap: Snapshot, secret: str, key: Key, user: User, spec: TaskSpec, ip: str
) -> tuple[bool, str]:
    """Admit and start a task: ``(True, task id)`` or ``(False, error text)``."""
    sweep(agent)
    if len(agent.tasks) >= agent.tasks.cap:  # before admission: no hold, no CPM token spent
        return False, answers.NO_SLOT
    decision = admit_waiting(agent, snap, secret, key, user, spec.slug, ip)
    if not decision.allowed:
        return False, answers.refusal_text(decision.code)
    spec.slug = decision.slug or spec.slug  # as /solve: the canonical type from here on
    assert decision.hold is not None
    started = time.monotonic()
    task = agent.tasks.add(lambda task_id: Task(task_id, key.id, spec, decision, ip, started))
    if task is None:  # filled up meanwhile
        agent.limiter.release(decision.hold)
        return False, answers.NO_SLOT
    agent.begin_work()  # counted before we answer: drain waits for the background call
    try:
        threading.Thread(target=_run, args=(agent, task), daemon=True).start()
    except BaseException:
        agent.end_work()
        agent.limiter.release(decision.hold)
        agent.tasks.finish(task, False, None, 0)
        raise
    return True, task.id


def _run(agent: Agent, task: Task) -> None:
    """The background worker call (a greenlet under gunicorn's gevent worker)."""
    try:
        outcome = agent.worker.solve(task.spec.for_worker(), task.id)
        task.spec.params = {}  # sent: an image need not stay in memory until expiry
        duration_ms = int((time.monotonic() - task.started) * 1000)
        if outcome.ok:
            # Charged only when delivered: the hold stays until then.
            agent.tasks.finish(task, True, answers.answer_text(outcome.result), duration_ms)
            _pingback(agent, task)
            return
        _record(agent, task, ok=False, error=outcome.error, message=outcome.message,
                duration_ms=duration_ms)  # fmt: skip
        agent.limiter.release(task.decision.hold)
        agent.tasks.finish(task, False, None, duration_ms)
        _pingback(agent, task)
    except Exception:
        log.exception("background solve failed")
        agent.limiter.release(task.decision.hold)
        if task.state == PENDING:
            agent.tasks.finish(task, False, None, 0)
    finally:
        agent.end_work()


def _pingback(agent: Agent, task: Task) -> None:
    if task.spec.pingback is not None:
        agent.pingbacks.enqueue(task)  # queued only: sent by pingback.Sender's threads


def _record(agent: Agent, task: Task, *, ok: bool, error: str | None = None,
            message: str | None = None, duration_ms: int | None = None,
            status: str | None = None) -> bool:  # fmt: skip
    """Spool this task's usage event; False if the disk refused it."""
    event = usage_event(
        agent.settings.agent_id, task.decision, request_id=task.id, slug=task.spec.slug,
        url=task.spec.url, ok=ok, error=error, message=message, source_ip=task.source_ip,
        duration_ms=task.duration_ms if duration_ms is None else duration_ms, status=status,
        soft_id=task.spec.soft_id,
    )  # fmt: skip
    return spool_event(agent.spool, event)


# ---- res.php --------------------------------------------------------------------------------


def find(tasks: TaskStore, key: Key, task_id: str) -> Task | None:
    """The task, if it exists and belongs to this key (others' ids look unknown)."""
    task = tasks.get(task_id)
    return task if task is not None and task.key_id == key.id else None


def deliver(agent: Agent, task: Task) -> tuple[bool, str]:
    """``(True, answer)`` or ``(False, NOT_READY / UNSOLVABLE)``; charges on first delivery."""
    if task.state == PENDING:
        return False, answers.NOT_READY
    if task.state == FAILED:
        return False, answers.UNSOLVABLE
    if task.delivered:
        return True, task.answer or ""
    if not agent.tasks.claim_delivery(task):
        return False, answers.NOT_READY  # another res.php (or a pingback) is delivering it
    if not charge(agent, task):  # on disk before the answer leaves
        return False, answers.NOT_READY  # not charged, not answered: the client polls again
    return True, task.answer or ""


def charge(agent: Agent, task: Task) -> bool:
    """Record the charge of a delivery the caller claimed (``claim_delivery``), commit its
    hold, end the claim; False (nothing charged) if the spool refused the record, or if an
    answer kept over a restart cannot have its new hold yet (persist.rehold)."""
    if task.restored and not persist.rehold(agent, task):
        agent.tasks.end_delivery(task, False)
        return False
    recorded = _record(agent, task, ok=True)
    if recorded:
        agent.limiter.commit(task.decision.hold)
    agent.tasks.end_delivery(task, recorded)
    return recorded


def report(agent: Agent, task: Task, good: bool) -> str:
    """reportgood / reportbad on a delivered answer: a zero-cost record in the usage log."""
    if not task.delivered:
        return answers.WRONG_ID
    if not agent.tasks.claim_report(task):
        return answers.DUPLICATE_REPORT
    if not _record(agent, task, ok=True, status="report_good" if good else "report_bad"):
        agent.tasks.unclaim_report(task)
        return answers.REPORT_NOT_RECORDED
    return answers.REPORT_OK


# ---- expiry -------------------------------------------------------------------------------


def _abandon(agent: Agent, task: Task, why: str) -> None:
    """Release the open hold of a task the store gave up (``TaskStore._settle``)."""
    agent.limiter.release(task.decision.hold)
    if task.state != PENDING:  # a pending one logs its own outcome when the worker answers
        _record(agent, task, ok=False, error="not_delivered", message=why)


def sweep(agent: Agent) -> None:
    """Drop expired tasks; an answer nobody fetched is released, never charged."""
    for task in agent.tasks.expired():
        _abandon(agent, task, "the answer expired before it was fetched")
