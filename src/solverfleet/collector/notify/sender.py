"""The webhook sender: one background thread per collector process, off the request path.

Each round it fires deferred crossings whose window has opened (``notifications.flush_due``),
then claims due deliveries and POSTs them, signed (rules.py). A claim is one
conditional UPDATE in a transaction — ``attempts + 1``, a fresh ``claim_token`` and
``next_attempt_ms`` moved past the send timeout — that only one sender can win, so collectors
sharing a database never send the same attempt twice. A sender that dies mid-send leaves its
claim to expire, and the attempt is made again: delivery is at least once, and receivers
dedupe on ``webhook-id`` (the clocks of collectors sharing a database must agree
within ``CLAIM_MARGIN``). Failures wait ``notify_backoff_base * 2**n`` (capped) up to
``notify_max_attempts``; then the delivery is ``failed``.
"""

from __future__ import annotations

import atexit
import logging
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import requests

from solverfleet.collector.metrics import NOTIFICATIONS_SENT
from solverfleet.collector.notify import notifications, rules
from solverfleet.collector.settings import CollectorSettings
from solverfleet.collector.store import Database, StoreError, Tx, marks
from solverfleet.money import format_micros

log = logging.getLogger(__name__)
EXTENSION = "solverfleet.notifier"
BATCH = 20
CLAIM_MARGIN = 30.0  # s a claim outlives the send timeout
REMOVED = "target removed from the team config"

# (url, body, headers, timeout) -> HTTP status; raises on transport errors.
Post = Callable[[str, bytes, dict[str, str], float], int]


@dataclass(frozen=True)
class Claim:
    delivery_id: int
    notification_id: int
    token: int
    attempt: int  # this attempt's number, from 1
    url: str
    secret: str
    kind: str
    payload: dict[str, Any]


def claim_due(db: Database, *, now_ms: int, claim_ms: int, limit: int = BATCH) -> list[Claim]:
    """Claim up to ``limit`` due deliveries for this sender; cancel those whose target is gone."""
    due = db.read(
        lambda tx: tx.all(
            "SELECT d.id, t.id FROM notification_deliveries d"
            " LEFT JOIN notification_targets t ON t.id = d.target_id"
            " WHERE d.status = 'pending' AND d.next_attempt_ms <= ?"
            " ORDER BY d.next_attempt_ms, d.id LIMIT ?",
            (now_ms, limit),
        )
    )
    if not due:
        return []

    def work(tx: Tx) -> list[Claim]:
        mine: dict[int, int] = {}
        for delivery, target in due:
            if target is None:
                _cancel(tx, delivery, now_ms)
                continue
            token = secrets.randbits(63) or 1  # fresh per attempt: a retry is a new claim
            won = tx.execute(
                "UPDATE notification_deliveries SET attempts = attempts + 1, claim_token = ?,"
                " next_attempt_ms = ? WHERE id = ? AND status = 'pending'"
                " AND next_attempt_ms <= ?",
                (token, now_ms + claim_ms, delivery, now_ms),
            )
            if won == 1:
                mine[delivery] = token
        if not mine:
            return []
        rows = tx.dicts(
            "SELECT d.id, d.notification_id, d.attempts, t.url, t.secret, n.account, n.key_id,"
            " n.kind, n.balance_micros, n.threshold_micros, n.created_ms"
            " FROM notification_deliveries d"
            " JOIN notifications n ON n.id = d.notification_id"
            " JOIN notification_targets t ON t.id = d.target_id"
            f" WHERE d.id IN ({marks(len(mine))}) ORDER BY d.id",
            sorted(mine),
        )
        return [_claim(row, mine[int(row["id"])]) for row in rows]

    return db.transaction(work)


def _claim(row: dict[str, Any], token: int) -> Claim:
    threshold = row["threshold_micros"]
    return Claim(
        delivery_id=int(row["id"]),
        notification_id=int(row["notification_id"]),
        token=token,
        attempt=int(row["attempts"]),
        url=row["url"],
        secret=row["secret"],
        kind=row["kind"],
        payload={
            "event": rules.EVENT,
            "id": int(row["notification_id"]),
            "delivery_id": int(row["id"]),
            "account": row["account"],
            "key_id": row["key_id"],
            "kind": row["kind"],
            "balance": format_micros(int(row["balance_micros"])),
            "threshold": None if threshold is None else format_micros(int(threshold)),
            "created": notifications.iso(int(row["created_ms"])),
        },
    )


def _cancel(tx: Tx, delivery: int, now_ms: int) -> None:
    done = tx.execute(
        "UPDATE notification_deliveries SET status = 'cancelled', last_error = ?,"
        " claim_token = NULL WHERE id = ? AND status = 'pending' AND next_attempt_ms <= ?",
        (REMOVED, delivery, now_ms),
    )
    if done:
        nid = tx.scalar(
            "SELECT notification_id FROM notification_deliveries WHERE id = ?", (delivery,)
        )
        _settle(tx, int(nid), REMOVED)


def record(
    db: Database,
    claim: Claim,
    error: str | None,
    *,
    now_ms: int,
    settings: CollectorSettings,
) -> str:
    """Store an attempt's outcome: ``delivered``, ``retry`` (scheduled), ``failed`` (gave up),
    or ``lost`` when our claim expired and another sender took the delivery over."""
    if error is None:
        result = "delivered"
        sql = "status = 'delivered', delivered_ms = ?"
        params: tuple = (now_ms,)
    elif claim.attempt >= settings.notify_max_attempts:
        result = "failed"
        sql = "status = 'failed', last_error = ?"
        params = (error,)
    else:
        result = "retry"
        wait = rules.backoff_ms(
            claim.attempt, settings.notify_backoff_base, settings.notify_backoff_max
        )
        sql = "next_attempt_ms = ?, last_error = ?"
        params = (now_ms + wait, error)

    def work(tx: Tx) -> str:
        changed = tx.execute(
            f"UPDATE notification_deliveries SET {sql}, claim_token = NULL"
            " WHERE id = ? AND claim_token = ?",
            (*params, claim.delivery_id, claim.token),
        )
        if changed != 1:
            return "lost"
        _settle(tx, claim.notification_id, error)
        return result

    return db.transaction(work)


def _settle(tx: Tx, notification: int, error: str | None) -> None:
    """The notification's summary of its deliveries: status, total attempts, last error."""
    rows = tx.all(
        "SELECT status, attempts FROM notification_deliveries WHERE notification_id = ?",
        (notification,),
    )
    statuses = {r[0] for r in rows}
    status = "no_targets"
    for candidate in ("pending", "failed", "delivered", "cancelled"):
        if candidate in statuses:
            status = candidate
            break
    tx.execute(
        "UPDATE notifications SET status = ?, attempts = ?, last_error = COALESCE(?, last_error)"
        " WHERE id = ?",
        (status, sum(int(r[1]) for r in rows), error, notification),
    )


def describe(exc: BaseException, timeout: float) -> str:
    """A transport error in words, without the URL (its path or query may hold a token)."""
    if isinstance(exc, requests.Timeout):
        return f"no answer within {timeout:g} s"
    if not isinstance(exc, requests.ConnectionError):
        return f"send failed ({type(exc).__name__})"
    # requests nests the OS error several levels deep; its strerror is the useful part.
    stack, seen = [exc], set()
    while stack:
        err = stack.pop()
        if id(err) in seen:
            continue
        seen.add(id(err))
        if (
            type(err).__module__ in ("builtins", "socket")
            and isinstance(err, OSError)
            and err.strerror
        ):
            return f"connection failed: {err.strerror}"
        stack += [a for a in err.args if isinstance(a, BaseException)]
        for name in ("reason", "__cause__", "__context__"):
            nested = getattr(err, name, None)
            if isinstance(nested, BaseException):
                stack.append(nested)
    return "connection failed"


class Notifier:
    """Runs rounds of ``flush_due`` + claim + send; ``run_once`` is one round (tests call it
    with an injected clock and ``post``), ``start``/``stop`` run rounds on a thread."""

    def __init__(
        self,
        db: Database,
        settings: CollectorSettings,
        *,
        clock: Callable[[], float] = time.time,
        post: Post | None = None,
    ) -> None:
        self.db = db
        self.settings = settings
        self.clock = clock
        self._post = post
        self._session: requests.Session | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def claim_ms(self) -> int:
        return int((self.settings.notify_timeout + CLAIM_MARGIN) * 1000)

    def now_ms(self) -> int:
        return int(self.clock() * 1000)

    def run_once(self) -> int:
        """One round; returns the number of delivery attempts made."""
        notifications.flush_due(self.db, now_ms=self.now_ms())
        claims = claim_due(self.db, now_ms=self.now_ms(), claim_ms=self.claim_ms)
        for claim in claims:
            self.deliver(claim)
        return len(claims)

    def deliver(self, claim: Claim) -> str:
        timestamp = int(self.clock())
        payload = rules.body({**claim.payload, "attempt": claim.attempt})
        headers = rules.headers(claim.secret, timestamp, payload, claim.delivery_id)
        timeout = self.settings.notify_timeout
        try:
            status = self.post(claim.url, payload, headers, timeout)
            error = None if 200 <= status < 300 else f"HTTP {status}"
        except Exception as exc:  # whatever the transport raised, it is this attempt's error
            error = describe(exc, timeout)
        result = record(self.db, claim, error, now_ms=self.now_ms(), settings=self.settings)
        if result != "lost":
            NOTIFICATIONS_SENT.labels(kind=claim.kind, result=result).inc()
        log.info(
            "notification %d delivery %d attempt %d to %s: %s%s",
            claim.notification_id,
            claim.delivery_id,
            claim.attempt,
            notifications.redact(claim.url),
            result,
            f" ({error})" if error else "",
        )
        return result

    def post(self, url: str, data: bytes, headers: dict[str, str], timeout: float) -> int:
        if self._post is not None:
            return self._post(url, data, headers, timeout)
        if self._session is None:
            self._session = requests.Session()
        # Redirects are not followed: the signature is for the configured receiver only.
        with self._session.post(
            url, data=data, headers=headers, timeout=timeout, allow_redirects=False, stream=True
        ) as response:
            return response.status_code

    # the thread

    def start(self) -> Notifier:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._loop, name="solverfleet-notifier", daemon=True
            )
            self._thread.start()
        return self

    def stop(self, timeout: float | None = None) -> None:
        """Finish the attempt in progress (bounded by the send timeout), then stop."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(self.settings.notify_timeout + 5 if timeout is None else timeout)

    def _loop(self) -> None:
        try:
            while not self._stop.is_set():
                busy = False
                try:
                    busy = self.run_once() >= BATCH
                except StoreError as exc:
                    log.warning("notifications: database problem, will retry: %s", exc)
                except Exception:
                    log.exception("notifications: unexpected error, will retry")
                if not busy:
                    self._stop.wait(self.settings.notify_poll_interval)
        finally:
            self.db.discard()  # this thread's connection
            if self._session is not None:
                self._session.close()


def attach(app: Any, collector: Any) -> Notifier:
    """Give ``app`` a Notifier on the collector's database and clock; start its thread
    unless ``notify_sender`` is off, and stop it when the process exits."""
    notifier = Notifier(collector.db, collector.settings, clock=lambda: collector.clock())
    app.extensions[EXTENSION] = notifier
    if collector.settings.notify_sender:
        notifier.start()
        # The thread is a daemon (it never holds up exit); this lets an attempt in progress
        # finish and record its outcome first.
        atexit.register(notifier.stop)
    return notifier
