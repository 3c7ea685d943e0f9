"""Automatic refill (``refill: {amount, interval, day}`` on a key): at 00:00 UTC of each period
(see ``periods``) the key is topped up *to* ``amount``; a balance at or above it is left alone.

Exactly once per period, however many collectors share the database: the check of the key's
``refilled_period`` and the credit happen in one transaction with the key row locked, so a
second collector finds the period done. A credit is a ledger transaction (reason
``refill daily 2026-12-06``, actor ``refill``) and bumps the config version, so agents see the
new balance on their next sync. A period that passes with the balance at or above the amount
is marked done without a ledger row. A collector that was down over a boundary refills once
when it is back (for the period then under way, not for each period missed).

``Refiller.run_once(now_ms)`` is one pass (tests drive it with any time); ``start`` runs passes
on a thread every ``refill_poll_interval`` seconds, on the collector's clock.
"""

from __future__ import annotations

import atexit
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from solverfleet.collector import accounts, audit, configdelta
from solverfleet.collector.periods import current_period
from solverfleet.collector.store import Database, StoreError, Tx
from solverfleet.money import format_micros

log = logging.getLogger(__name__)
EXTENSION = "solverfleet.refiller"
ACTOR = "refill"


def due_keys(db: Database, now_ms: int) -> list[str]:
    """Keys whose period under way at ``now_ms`` is not refilled yet (read without locks; each
    is re-checked locked by ``refill_key``)."""
    rows = db.read(
        lambda tx: tx.all(
            "SELECT id, refill_interval, refill_day, refilled_period FROM api_keys"
            f" WHERE refill_interval IS NOT NULL AND {accounts.LIVE} ORDER BY id"
        )
    )
    due = []
    for key_id, interval, day, done in rows:
        period = current_period(interval, None if day is None else int(day), now_ms)
        if done is None or done < period:
            due.append(key_id)
    return due


def refill_key(db: Database, key_id: str, now_ms: int) -> dict | None:
    """Refill one key for the period under way, if no one did yet: ``{key, period, credited,
    balance, transaction_id}``, or None when there was nothing to do."""

    def work(tx: Tx) -> dict | None:
        rows = tx.dicts(
            "SELECT balance_micros, account, refill_amount_micros, refill_interval, refill_day,"
            f" refilled_period FROM api_keys WHERE id = ? AND {accounts.LIVE}"
            + tx.dialect.for_update,
            (key_id,),
        )
        if not rows or rows[0]["refill_interval"] is None:
            return None
        row = rows[0]
        interval = row["refill_interval"]
        day = None if row["refill_day"] is None else int(row["refill_day"])
        period = current_period(interval, day, now_ms)
        done = row["refilled_period"]
        if done is not None and done >= period:
            return None  # another collector (or an earlier pass) did this period
        balance, amount = int(row["balance_micros"]), int(row["refill_amount_micros"])
        credit = amount - balance if balance < amount else 0
        tx.execute(
            "UPDATE api_keys SET refilled_period = ?, balance_micros = ? WHERE id = ?",
            (period, balance + credit, key_id),
        )
        txn = None
        if credit:
            reason = f"refill {interval} {period}"
            txn = accounts.ledger_entry(tx, key_id, credit, balance + credit, reason, now_ms, ACTOR)
            accounts.bump_version(tx, [(configdelta.KEY, key_id)])
            before = {"balance": format_micros(balance)}
            after = {"balance": format_micros(balance + credit), "amount": format_micros(credit),
                     "reason": reason, "transaction_id": txn}  # fmt: skip
            audit.record(tx, ACTOR, "key.refill", "key", key_id, row["account"], before, after,
                         now_ms=now_ms)  # fmt: skip
        return {
            "key": key_id,
            "period": period,
            "credited": credit,
            "balance": balance + credit,
            "transaction_id": txn,
        }

    return db.transaction(work)


class Refiller:
    """Passes of ``run_once`` on a daemon thread, on an injectable clock (unix seconds)."""

    def __init__(
        self, db: Database, *, clock: Callable[[], float] = time.time, interval: float = 5.0
    ) -> None:
        self.db = db
        self.clock = clock
        self.interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def run_once(self, now_ms: int | None = None) -> list[dict]:
        """One pass at ``now_ms`` (default: the clock); returns the refills this process made."""
        now = int(self.clock() * 1000) if now_ms is None else now_ms
        done = []
        for key_id in due_keys(self.db, now):
            result = refill_key(self.db, key_id, now)
            if result is not None:
                done.append(result)
                log.info(
                    "refilled key %s for %s: +%d micros",
                    key_id,
                    result["period"],
                    result["credited"],
                )
        return done

    def start(self) -> Refiller:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._loop, name="solverfleet-refill", daemon=True
            )
            self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def _loop(self) -> None:
        try:
            while not self._stop.is_set():
                try:
                    self.run_once()
                except StoreError as exc:
                    log.warning("refill: database problem, will retry: %s", exc)
                except Exception:
                    log.exception("refill: unexpected error, will retry")
                self._stop.wait(self.interval)
        finally:
            self.db.discard()  # this thread's connection


def attach(app: Any, collector: Any) -> Refiller:
    """Give ``app`` a Refiller on the collector's database and clock; start its thread unless
    ``refill_runner`` is off."""
    settings = collector.settings
    refiller = Refiller(
        collector.db, clock=lambda: collector.clock(), interval=settings.refill_poll_interval
    )
    app.extensions[EXTENSION] = refiller
    if settings.refill_runner:
        refiller.start()
        atexit.register(refiller.stop)
    return refiller
