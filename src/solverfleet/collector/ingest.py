"""Idempotent usage ingest: every event stored exactly once, charged exactly once.

Exactly-once without a dedup claim that could outlive a failed write (OpenMeter 5118): the
event row *is* the claim, and it is written in the same transaction as the charge. Rows are
inserted with "skip if this event_id exists" and a random per-transaction ``ingest_token``;
the rows that carry our token are the ones this transaction inserted, and only those are
charged. A concurrent transaction inserting the same event_id blocks on the unique index
until we commit (then it skips the row) or roll back (then it inserts it), so two collectors
on one database never charge an event twice. Nothing is acknowledged before the commit.

Group commit: concurrent requests in one process are merged into one transaction (one
fsync), while each request still gets its own accepted/duplicates answer.

Grant checks (per-host credentials): a batch from an agent-bound service token is checked,
event by event, against what the collector granted that agent, in the same transaction: the key
must have a balance lease row for the agent (free types excepted), a success must cost the
type's price, and the agent's charges for a key must stay within granted - returned. Refused
events are not stored and not charged; the answer lists them (final: a retry is refused again).
"""

from __future__ import annotations

import datetime as dt
import re
import secrets
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from solverfleet.collector import leases, metrics
from solverfleet.collector.notify import notifications
from solverfleet.collector.problems import Invalid
from solverfleet.collector.store import Database, StoreUnavailable, Tx, chunks, marks
from solverfleet.textcheck import scrub

MAX_EVENTS = 5_000
MAX_GROUP_EVENTS = 20_000
CHUNK_ROWS = 1_000
BATCH_ROWS = 200  # keys, leases, days or ids per statement in the charge step
MAX_COST = 10**12
MAX_SOFT_ID = 2**31 - 1  # a client's software id (in.php soft_id): a 32-bit int there
# report_good/report_bad: a client's verdict on a delivered in.php answer (the agent's
# res.php reportgood/reportbad); logged like any event, never charged.
STATUSES = ("success", "failed", "report_good", "report_bad")
_HEX32 = re.compile(r"[0-9a-fA-F]{32}").fullmatch

# Row layout (without ingest_token and received_ms, added at write time).
FIELDS = (
    "event_id",
    "ts_ms",
    "request_id",
    "agent_id",
    "key_id",
    "user_id",
    "user_email",
    "account",
    "project",
    "environment",
    "captcha_type",
    "url",
    "status",
    "error",
    "message",
    "source_ip",
    "duration_ms",
    "cost_micros",
    "soft_id",
)
COLUMNS = ("event_id", "ingest_token", *FIELDS[1:], "received_ms")
EID, TS, AGENT, KEY, USER, TYPE, STATUS, COST = 0, 1, 3, 4, 5, 10, 12, 17

# Free-text fields are truncated rather than refused: refusing would make the agent retry the
# same batch forever, and losing usage over a long URL is worse than a shortened URL.
_FREE_TEXT = {
    "request_id": 128,
    "user_email": 254,
    "project": 128,
    "environment": 128,
    "type": 64,
    "url": 2048,
    "error": 128,
    "message": 1024,
    "source_ip": 64,
}


def _clean(value: str, limit: int, *, multiline: bool = True) -> str:
    # Kept, not refused (the call was charged): lone surrogates (unstorable) and control
    # characters (would be logged and rendered raw) become U+FFFD.
    return scrub(value[:limit], multiline=multiline)


def _free(event: dict, name: str, i: int) -> str | None:
    value = event.get(name)
    if value is None:
        return None
    if type(value) is not str:
        raise Invalid(f"events[{i}].{name}: must be a string or null")
    return _clean(value, _FREE_TEXT[name])


def _ident(value: Any, path: str, required: bool) -> str | None:
    if value is None and not required:
        return None
    if type(value) is not str or not 0 < len(value) <= 128:
        raise Invalid(f"{path}: must be a string of 1 to 128 characters")
    return _clean(value, 128, multiline=False)


def _int(value: Any, path: str, high: int, default: int | None = None) -> int | None:
    if value is None:
        if default is None:
            raise Invalid(f"{path}: required")
        return default
    if type(value) is not int or not 0 <= value <= high:
        raise Invalid(f"{path}: must be a whole number from 0 to {high}")
    return value


def parse_event(e: Any, i: int, batch_agent: str) -> tuple:
    if type(e) is not dict:
        raise Invalid(f"events[{i}]: must be a JSON object")
    eid = e.get("event_id")
    if type(eid) is not str or not _HEX32(eid):
        raise Invalid(f"events[{i}].event_id: must be 32 hex characters")
    status = e.get("status")
    if status not in STATUSES:
        raise Invalid(f"events[{i}].status: must be one of {', '.join(STATUSES)}")
    cost = _int(e.get("cost_micros"), f"events[{i}].cost_micros", MAX_COST, 0)
    duration = e.get("duration_ms")
    if duration is not None:
        duration = _int(duration, f"events[{i}].duration_ms", 10**9)
    agent = e.get("agent_id")
    return (
        eid.lower(),
        _int(e.get("ts_ms"), f"events[{i}].ts_ms", 10**14),
        _free(e, "request_id", i),
        batch_agent if agent is None else _ident(agent, f"events[{i}].agent_id", True),
        _ident(e.get("key_id"), f"events[{i}].key_id", True),
        _ident(e.get("user_id"), f"events[{i}].user_id", False),
        _free(e, "user_email", i),
        _ident(e.get("account"), f"events[{i}].account", False),
        _free(e, "project", i),
        _free(e, "environment", i),
        _free(e, "type", i),
        _free(e, "url", i),
        status,
        _free(e, "error", i),
        _free(e, "message", i),
        _free(e, "source_ip", i),
        duration,
        cost if status == "success" else 0,  # failures cost nothing, whatever was sent
        _soft_id(e.get("soft_id"), i),
    )


def _soft_id(value: Any, i: int) -> int | None:
    return None if value is None else _int(value, f"events[{i}].soft_id", MAX_SOFT_ID)


def parse_batch(data: Any) -> tuple[str, list[tuple]]:
    """``{"agent_id", "events": [...]}`` → (agent_id, rows); ``Invalid`` if anything is off."""
    if type(data) is not dict:
        raise Invalid("request body must be a JSON object")
    agent = _ident(data.get("agent_id"), "agent_id", True)
    events = data.get("events")
    if type(events) is not list:
        raise Invalid("events: must be a list")
    if len(events) > MAX_EVENTS:
        raise Invalid(
            f"events: at most {MAX_EVENTS} per batch, got {len(events)}", "too_many_events"
        )
    assert agent is not None
    return agent, [parse_event(e, i, agent) for i, e in enumerate(events)]


# --- the write --------------------------------------------------------------------------------


def _insert(tx: Tx, rows: list[tuple], token: int, now_ms: int) -> set[str]:
    """Insert rows whose event_id is new; return the event_ids this transaction inserted."""
    inserted: set[str] = set()
    for chunk in chunks(rows, CHUNK_ROWS):
        full = [(r[0], token, *r[1:], now_ms) for r in chunk]
        affected = tx.insert_new_rows("usage_events", COLUMNS, "event_id", full)
        # Affected rows count inserts only (a skipped duplicate changes nothing), so the
        # common all-new and all-duplicate cases need no read-back.
        if affected == len(chunk):
            inserted.update(r[0] for r in chunk)
        elif affected:
            ids = [r[0] for r in chunk]
            found = tx.all(
                f"SELECT event_id FROM usage_events WHERE ingest_token = ?"
                f" AND event_id IN ({marks(len(ids))})",
                (token, *ids),
            )
            inserted.update(r[0] for r in found)
    return inserted


_DAYS: dict[int, str] = {}


def utc_day(ts_ms: int) -> str:
    n = ts_ms // 86_400_000
    day = _DAYS.get(n)
    if day is None:
        day = (dt.date(1970, 1, 1) + dt.timedelta(days=n)).isoformat()
        if len(_DAYS) < 10_000:
            _DAYS[n] = day
    return day


def _charge(tx: Tx, rows: Iterable[tuple]) -> dict[str, int]:
    """Apply newly stored successes: key balance, the agent's lease remainder, daily count.
    Returns the micros taken from each key."""
    per_key: dict[str, int] = defaultdict(int)
    per_lease: dict[tuple[str, str], int] = defaultdict(int)
    per_day: dict[tuple[str, str, str], int] = defaultdict(int)
    for r in rows:
        if r[STATUS] != "success":
            continue
        if r[COST]:
            per_key[r[KEY]] += r[COST]
            per_lease[(r[KEY], r[AGENT])] += r[COST]
        if r[USER] is not None:
            per_day[(r[USER], utc_day(r[TS]), r[AGENT])] += 1
    # A few statements per table, rows in sorted order (the documented lock order: keys,
    # then lease rows): a batch touching 50 keys costs 3 round trips, not 150.
    for ids in chunks(sorted(per_key), BATCH_ROWS):
        cases = " ".join("WHEN ? THEN ?" for _ in ids)
        tx.execute(
            f"UPDATE api_keys SET balance_micros = balance_micros - CASE id {cases} ELSE 0 END"
            f" WHERE id IN ({marks(len(ids))})",
            (*(x for k in ids for x in (k, per_key[k])), *ids),
        )
    for pairs in chunks(sorted(per_lease), BATCH_ROWS):
        cost = "CASE " + " ".join("WHEN key_id = ? AND agent_id = ? THEN ?" for _ in pairs)
        cost += " ELSE 0 END"
        match = " OR ".join("(key_id = ? AND agent_id = ?)" for _ in pairs)
        costs = [x for p in pairs for x in (*p, per_lease[p])]
        tx.execute(
            f"UPDATE lease_balance SET held_micros = CASE WHEN held_micros > ({cost})"
            f" THEN held_micros - ({cost}) ELSE 0 END WHERE held_micros > 0 AND ({match})",
            (*costs, *costs, *(x for p in pairs for x in p)),
        )
    if per_day:
        sql = tx.dialect.upsert(
            "lease_daily",
            ("user_id", "day_utc", "agent_id", "granted", "used"),
            ("user_id", "day_utc", "agent_id"),
            {"used": "used + " + tx.dialect.new("used")},
        )
        head, _, tail = sql.partition(" VALUES (?, ?, ?, ?, ?)")
        for days in chunks(sorted(per_day), BATCH_ROWS):
            values = ", ".join("(?, ?, ?, ?, ?)" for _ in days)
            tx.execute(
                f"{head} VALUES {values}{tail}", [x for d in days for x in (*d, 0, per_day[d])]
            )
    return per_key


def _unstore(tx: Tx, event_ids: list[str], token: int) -> None:
    """Delete refused rows this transaction inserted: no claim is left behind."""
    for ids in chunks(sorted(event_ids), BATCH_ROWS):
        tx.execute(
            f"DELETE FROM usage_events WHERE ingest_token = ? AND event_id IN ({marks(len(ids))})",
            (token, *ids),
        )


def store_events(
    db: Database,
    rows: list[tuple],
    *,
    now_ms: int,
    verify: set[str] | None = None,
    refused: dict[str, str] | None = None,
) -> set[str]:
    """Store and charge ``rows`` (unique event_ids) in one transaction; return the new ids.

    Rows whose event_id is in ``verify`` (from agent-bound credentials) are checked against
    the agent's grants if new; the refused ones are not stored and go into ``refused``.
    """
    rows = sorted(rows)  # same insert order in every transaction: fewer lock cycles

    def work(tx: Tx) -> set[str]:
        token = secrets.randbits(63) or 1  # fresh per attempt: a retry is a new transaction
        inserted = _insert(tx, rows, token, now_ms)
        if refused is not None:
            refused.clear()  # this attempt's verdicts only (a deadlock retry runs work again)
        if verify and inserted:
            checked = [r for r in rows if r[EID] in inserted and r[EID] in verify]
            verdicts = leases.check_usage(
                tx,
                [(r[EID], r[TS], r[KEY], r[AGENT], r[TYPE], r[STATUS], r[COST]) for r in checked],
            )
            if verdicts:
                _unstore(tx, list(verdicts), token)
                inserted -= verdicts.keys()
                if refused is not None:
                    refused.update(verdicts)
        if inserted:
            charged = _charge(tx, (r for r in rows if r[0] in inserted))
            # Low-balance crossings, in this transaction: fired if and only if the charge commits.
            notifications.on_charged(tx, charged, now_ms=now_ms)
        return inserted

    return db.transaction(work)


@dataclass
class IngestResult:
    accepted: int
    duplicates: int
    # Events of a bound agent refused by the grant checks: [{"event_id", "reason"}].
    refused: list[dict] = field(default_factory=list)


def ingest(db: Database, rows: list[tuple], *, now_ms: int, verify: bool = False) -> IngestResult:
    """One batch, one transaction (no grouping); ``verify``: check it against the grants."""
    return _write_group(db, [rows], now_ms, [verify])[0]


def _write_group(
    db: Database, batches: list[list[tuple]], now_ms: int, verify: list[bool] | None = None
) -> list[IngestResult]:
    first: dict[str, tuple[int, tuple]] = {}
    for n, rows in enumerate(batches):
        for row in rows:
            first.setdefault(row[0], (n, row))
    unique = [row for _, row in first.values()]
    refused: dict[str, str] = {}
    if verify and any(verify):
        checked = {eid for eid, (n, _) in first.items() if verify[n]}
        inserted = store_events(db, unique, now_ms=now_ms, verify=checked, refused=refused)
    else:
        inserted = store_events(db, unique, now_ms=now_ms)
    results = [IngestResult(0, len(rows)) for rows in batches]
    for eid in inserted:
        result = results[first[eid][0]]
        result.accepted += 1
        result.duplicates -= 1
    for eid, reason in sorted(refused.items()):
        result = results[first[eid][0]]
        result.refused.append({"event_id": eid, "reason": reason})
        result.duplicates -= 1
    return results


# --- group commit -----------------------------------------------------------------------------


@dataclass
class _Job:
    rows: list[tuple]
    verify: bool = False
    done: bool = False
    result: IngestResult | None = None
    error: BaseException | None = None
    extra: dict = field(default_factory=dict)


class IngestWriter:
    """Merges concurrent batches of one process into shared transactions.

    No background thread: the first request to arrive writes (the leader) everything queued
    while it waits its turn; the others sleep on a condition until their job is done or it
    is their turn to lead. A merged write that fails for a reason other than an unavailable
    database is retried batch by batch, so one bad batch cannot fail its neighbours.
    """

    def __init__(
        self, db: Database, now_ms: Callable[[], int], max_group_events: int = MAX_GROUP_EVENTS
    ) -> None:
        self.db = db
        self.now_ms = now_ms
        self.max_group_events = max_group_events
        self._cond = threading.Condition()
        self._queue: list[_Job] = []
        self._busy = False
        self.groups_written = 0  # for tests and stats

    def submit(self, rows: list[tuple], verify: bool = False) -> IngestResult:
        """Write ``rows`` (merged with concurrent batches); ``verify``: a bound agent's batch,
        checked against its grants."""
        started = time.perf_counter()
        job = _Job(rows, verify)
        with self._cond:
            self._queue.append(job)
        while True:
            with self._cond:
                while self._busy and not job.done:
                    self._cond.wait()
                if job.done:
                    break
                self._busy = True
                group = self._take()  # FIFO: our job is in this group or a later one
            try:
                self._write(group)
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()
        if job.error is not None:
            metrics.ingest_failed(len(rows))
            raise job.error
        assert job.result is not None
        lag = None
        if job.result.accepted:  # duplicates were timed when first stored
            lag = (self.now_ms() - min(row[TS] for row in rows)) / 1000
        metrics.ingested(
            job.result.accepted, job.result.duplicates, time.perf_counter() - started, lag
        )
        if job.result.refused:
            metrics.usage_refused(r["reason"] for r in job.result.refused)
        return job.result

    def _take(self) -> list[_Job]:
        group, total = [], 0
        while self._queue and (
            not group or total + len(self._queue[0].rows) <= self.max_group_events
        ):
            job = self._queue.pop(0)
            group.append(job)
            total += len(job.rows)
        return group

    def _write(self, group: list[_Job]) -> None:
        try:
            outcomes = write_batches(
                self.db,
                [j.rows for j in group],
                now_ms=self.now_ms(),
                verify=[j.verify for j in group],
            )
            self.groups_written += 1
            for job, outcome in zip(group, outcomes, strict=True):
                if isinstance(outcome, IngestResult):
                    job.result = outcome
                else:
                    job.error = outcome
        finally:
            for job in group:
                if job.result is None and job.error is None:
                    job.error = StoreUnavailable("ingest write interrupted")
                job.done = True


def write_batches(
    db: Database, batches: list[list[tuple]], *, now_ms: int, verify: list[bool] | None = None
) -> list[IngestResult | Exception]:
    """Write several batches in one transaction; if that fails for a reason other than an
    unavailable database, write them one by one so one bad batch cannot fail the others."""
    flags = verify or [False] * len(batches)
    try:
        return list(_write_group(db, batches, now_ms, flags))
    except StoreUnavailable as exc:
        return [exc for _ in batches]
    except Exception as exc:
        if len(batches) == 1:
            return [exc]
    outcomes: list[IngestResult | Exception] = []
    for rows, flag in zip(batches, flags, strict=True):
        try:
            outcomes.append(_write_group(db, [rows], now_ms, [flag])[0])
        except Exception as exc:
            outcomes.append(exc)
    return outcomes
