"""Fault injection under load: a bounded load generator and the ledger invariant (tests/chaos/).

Every chaos test reads the same way::

    tracker = Tracker("kill9")
    with Load(tracker, agents, secret, clients=4, max_seconds=90) as load:
        load.wait_successes(100, timeout=30)   # load is running
        ...fault..., ...recover...             # wait on conditions, never on the clock
    assert_ledger(stack, tracker, key_id="k", opening="100.00")

Each request the test makes on a key goes through a ``Tracker`` (the load threads, and
``Tracker.solve`` for single calls), with a URL no other request uses, so every usage record at
the collector can be matched to the one request it bills. A request ends in one of:

- ``status`` (an HTTP answer): 200 is a success the client saw, anything else is not;
- ``REFUSED``: the connection was never made (the agent was down); the request never left;
- ``UNKNOWN``: the connection was cut after the request may have been sent (kill -9 of the
  agent, a read timeout): the solve may or may not have happened and been billed.

``assert_ledger`` then checks, after every agent shipped its spool::

    client successes + recorded cut requests == usage successes == balance change / price

with no duplicate event ids, at most one usage record per request, and no success recorded for a
request the client never made, was refused, or was answered with an error.
"""

from __future__ import annotations

import itertools
import json
import math
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import requests
from urllib3.exceptions import ConnectTimeoutError, MaxRetryError, NewConnectionError

from solverfleet.localstack import LocalStack
from tests.support.fleet import PRICE, auth, micros

T = TypeVar("T")
REFUSED = "refused"
UNKNOWN = "unknown"
ABANDONED = "abandoned"  # a slow client that gave up before its body was complete
_URL_IDS = itertools.count(1)


# --- waiting ----------------------------------------------------------------------------------


def wait_for(
    condition: Callable[[], T],
    *,
    timeout: float,
    what: str,
    guard: Callable[[], None] | None = None,
    interval: float = 0.05,
) -> T:
    """Poll ``condition`` until truthy; ``guard`` runs each round and may fail the test at once.

    Unlike ``solverfleet.process.wait_until`` an ``AssertionError`` (from ``guard`` or the
    condition) is not swallowed: a broken invariant fails now, not at the deadline.
    """
    deadline = time.monotonic() + timeout
    last_exc: Exception | None = None
    while True:
        if guard is not None:
            guard()
        try:
            result = condition()
        except AssertionError:
            raise
        except Exception as exc:  # e.g. a status page not answering yet
            last_exc = exc
        else:
            if result:
                return result
        if time.monotonic() >= deadline:
            detail = f" (last error: {last_exc!r})" if last_exc else ""
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}{detail}")
        time.sleep(interval)


# --- requests and their outcomes --------------------------------------------------------------


@dataclass(slots=True)
class Call:
    url: str  # the unique target URL: the usage record's `url`
    agent: str  # the agent's base URL
    started: float  # monotonic
    elapsed: float = 0.0
    outcome: int | str = UNKNOWN  # HTTP status, REFUSED or UNKNOWN
    error: str | None = None  # the answer's error code, or the exception

    @property
    def ok(self) -> bool:
        return self.outcome == 200


class Tracker:
    """Thread-safe record of every request made on one key, each with its own URL."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.calls: list[Call] = []
        self._counts: Counter = Counter()  # (outcome, agent) -> calls; polled often, kept cheap
        self._lock = threading.Lock()

    def new_url(self) -> str:
        return f"https://chaos.example.test/{self.label}/{next(_URL_IDS)}"

    def record(self, call: Call) -> None:
        with self._lock:
            self.calls.append(call)
            self._counts[call.outcome, call.agent] += 1

    def snapshot(self) -> list[Call]:
        with self._lock:
            return list(self.calls)

    def count(self, outcome: int | str = 200, *, agent: str | None = None) -> int:
        with self._lock:
            return sum(
                n for (o, a), n in self._counts.items() if o == outcome and agent in (None, a)
            )

    def outcomes(self) -> Counter:
        with self._lock:
            out: Counter = Counter()
            for (o, _), n in self._counts.items():
                out[o] += n
            return out

    def solve(
        self,
        agent: str,
        secret: str,
        *,
        session: requests.Session | None = None,
        timeout: float = 30.0,
        **params: Any,
    ) -> Call:
        """One ``POST /solve`` with a fresh URL, recorded whatever happens."""
        url = self.new_url()
        body = {"type": "turnstile", "url": url, "params": params}
        call = Call(url=url, agent=agent, started=time.monotonic())
        post = session.post if session is not None else requests.post
        try:
            resp = post(f"{agent}/solve", json=body, headers=auth(secret), timeout=timeout)
        except requests.RequestException as exc:
            call.outcome = REFUSED if _never_sent(exc) else UNKNOWN
            call.error = type(exc).__name__
        else:
            call.outcome = resp.status_code
            if resp.status_code != 200:
                try:
                    call.error = resp.json().get("error")
                except ValueError:
                    call.error = resp.text[:80]
        call.elapsed = time.monotonic() - call.started
        self.record(call)
        return call


def _never_sent(exc: requests.RequestException) -> bool:
    """True when no connection was made, so the agent cannot have seen the request."""
    reason = exc.args[0] if exc.args else None
    if isinstance(reason, MaxRetryError):
        reason = reason.reason
    # NewConnectionError: refused (it subclasses ConnectTimeoutError); ConnectTimeoutError:
    # the handshake never finished. Anything else (reset, EOF, read timeout) is a cut.
    return isinstance(reason, NewConnectionError | ConnectTimeoutError)


# --- the load generator -----------------------------------------------------------------------


class Load:
    """``clients`` threads solving on ``agents`` round-robin, each request with its own URL.

    Bounded in count (``max_requests`` over all threads) and in time (``max_seconds``), so a
    test that fails half-way never leaves load running. ``pace`` is the least time between
    two requests of one thread (0: back to back); after a refused connection a thread waits
    ``pace`` or 20 ms, so a dead agent is not hammered in a tight loop.
    """

    def __init__(
        self,
        tracker: Tracker,
        agents: Sequence[str],
        secret: str,
        *,
        clients: int = 4,
        max_requests: int = 20_000,
        max_seconds: float = 120.0,
        pace: float = 0.0,
        timeout: float = 10.0,
        expect: Iterable[int | str] | None = None,
    ) -> None:
        if not agents:
            raise ValueError("no agents to load")
        self.tracker = tracker
        self.agents = list(agents)
        self.secret = secret
        self.clients = clients
        self.max_requests = max_requests
        self.max_seconds = max_seconds
        self.pace = pace
        self.timeout = timeout
        # Outcomes allowed at any moment; another one fails the test at the next check().
        self.expect = set(expect) if expect is not None else None
        self._stop = threading.Event()
        self._budget = itertools.count(1)
        self._threads: list[threading.Thread] = []
        self._deadline = 0.0
        self.exhausted = False  # a bound (count or time) ended the load before stop()

    def start(self) -> Load:
        self._deadline = time.monotonic() + self.max_seconds
        for i in range(self.clients):
            thread = threading.Thread(
                target=self._client, args=(i,), name=f"load-{self.tracker.label}-{i}", daemon=True
            )
            self._threads.append(thread)
            thread.start()
        return self

    def _client(self, index: int) -> None:
        session = requests.Session()
        turn = index
        try:
            while not self._stop.is_set():
                if time.monotonic() >= self._deadline or next(self._budget) > self.max_requests:
                    self.exhausted = True
                    return
                agent = self.agents[turn % len(self.agents)]
                turn += 1
                call = self.tracker.solve(agent, self.secret, session=session, timeout=self.timeout)
                if call.outcome == REFUSED:
                    session.close()  # drop pooled connections to the dead agent
                    session = requests.Session()
                wait = self.pace or (0.02 if call.outcome == REFUSED else 0.0)
                if wait:
                    self._stop.wait(max(0.0, wait - call.elapsed))
        finally:
            session.close()

    def check(self) -> None:
        """Fail at once if the load ended early or saw an outcome it should never see."""
        if self.expect is not None:
            seen = self.tracker.outcomes()
            bad = {o: n for o, n in seen.items() if o not in self.expect}
            assert not bad, f"{self.tracker.label}: unexpected outcomes {bad} (all: {dict(seen)})"
        assert not self.exhausted, (
            f"{self.tracker.label}: the load hit its bound ({self.max_requests} requests or "
            f"{self.max_seconds:g} s) before the test was done; raise the bound"
        )

    def wait_successes(
        self, more: int, *, timeout: float, agent: str | None = None, what: str = ""
    ) -> None:
        """Wait until ``more`` successes beyond the current count (on ``agent``, or any)."""
        target = self.tracker.count(200, agent=agent) + more
        wait_for(
            lambda: self.tracker.count(200, agent=agent) >= target,
            timeout=timeout,
            what=what or f"{more} more successes of {self.tracker.label}",
            guard=self.check,
        )

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(self.timeout + 5)
        stuck = [t.name for t in self._threads if t.is_alive()]
        assert not stuck, f"load threads did not stop: {stuck}"

    def __enter__(self) -> Load:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# --- slow clients -----------------------------------------------------------------------------


class Dribbler(threading.Thread):
    """A raw-socket client that sends a valid ``/solve`` body a few bytes per ``interval``.

    Bounded: the body is finite and so is ``interval``; the socket has a timeout. The request
    is recorded in the tracker like any other (its body is a real solve, so it may be billed).
    """

    def __init__(
        self,
        tracker: Tracker,
        agent: str,
        secret: str,
        *,
        chunk: int = 4,
        interval: float = 0.25,
        pad: int = 60,
        timeout: float = 60.0,
    ) -> None:
        super().__init__(name=f"dribbler-{tracker.label}", daemon=True)
        self.tracker = tracker
        self.agent = agent
        self.secret = secret
        self.chunk = chunk
        self.interval = interval
        self.timeout = timeout
        self.url = tracker.new_url()
        # `pad` lengthens the body (and so the dribble) without changing what is solved.
        solve = {"type": "turnstile", "url": self.url, "params": {"note": "." * pad}}
        self.body = json.dumps(solve).encode()
        self.sent = 0  # body bytes sent so far
        self.call = Call(url=self.url, agent=agent, started=0.0)
        self.stop_event = threading.Event()

    @property
    def duration(self) -> float:
        """Roughly how long the body takes to send."""
        return len(self.body) / self.chunk * self.interval

    def run(self) -> None:
        host, port = self.agent.removeprefix("http://").split(":")
        head = (
            f"POST /solve HTTP/1.1\r\nHost: {host}:{port}\r\n"
            f"Authorization: Bearer {self.secret}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(self.body)}\r\nConnection: close\r\n\r\n"
        ).encode()
        self.call.started = time.monotonic()
        try:
            with socket.create_connection((host, int(port)), timeout=self.timeout) as sock:
                sock.sendall(head)
                while self.sent < len(self.body):
                    if self.stop_event.wait(self.interval):
                        # The body never arrived whole: the agent cannot have solved it.
                        self.call.outcome = ABANDONED
                        return
                    piece = self.body[self.sent : self.sent + self.chunk]
                    sock.sendall(piece)
                    self.sent += len(piece)
                self.call.outcome = UNKNOWN  # sent in full: from here on it may be billed
                answer = _read_response(sock)
                self.call.outcome = int(answer.split(b" ", 2)[1])
        except (OSError, ValueError, IndexError) as exc:
            self.call.error = repr(exc)
        finally:
            self.call.elapsed = time.monotonic() - self.call.started
            self.tracker.record(self.call)


def _read_response(sock: socket.socket) -> bytes:
    data = b""
    while True:
        piece = sock.recv(65536)
        if not piece:
            return data
        data += piece


# --- the fleet's view ---------------------------------------------------------------------------


def agent_status(stack: LocalStack, i: int) -> dict:
    resp = requests.get(f"{stack.agent_url(i)}/admin/status", timeout=5)
    resp.raise_for_status()
    return resp.json()


def wait_leases(stack: LocalStack, load: Load, calls: int, timeout: float = 30.0) -> None:
    """Wait until every agent holds credit for ``calls`` solves. Leases are sized by observed
    demand, so a fault that cuts the collector off must wait for them to give the agents
    something to serve from meanwhile."""
    wait_for(
        lambda: all(
            agent_status(stack, i)["leases"]["available_micros"] >= calls * micros(PRICE)
            for i in range(len(stack.agents))
        ),
        timeout=timeout,
        what=f"every agent to hold credit for {calls} calls",
        guard=load.check,
    )


def settle(stack: LocalStack, timeout: float = 60.0) -> None:
    """Wait until every running agent has nothing in flight and nothing left to ship."""

    def settled() -> bool:
        for i, svc in enumerate(stack.agents):
            if svc is None or not svc.alive():
                continue
            status = agent_status(stack, i)
            if status["in_flight"] or status["spool_backlog"]:
                return False
        return True

    wait_for(settled, timeout=timeout, what="agents to finish and ship every usage event")
    for i in range(stack.agent_count):
        rejected = stack.agent_state_dir(i) / "spool" / "rejected.jsonl"
        assert not rejected.exists(), f"the collector refused usage events: {rejected}"


def spool_pending(state_dir: Path) -> int:
    """Usage lines a stopped agent left unacknowledged in its spool (read-only; the layout is
    agent/spool.py's: numbered ``*.jsonl`` segments and a ``cursor`` before which all is acked).
    """
    spool = state_dir / "spool"
    try:
        cursor = json.loads((spool / "cursor").read_text())
        start = (int(cursor["segment"]), int(cursor["offset"]))
    except FileNotFoundError:
        start = (0, 0)
    pending = 0
    for path in sorted(spool.glob("*.jsonl")):
        if not path.stem.isdigit() or int(path.stem) < start[0]:
            continue
        data = path.read_bytes()
        pending += data[start[1] if int(path.stem) == start[0] else 0 :].count(b"\n")
    return pending


def usage_events(stack: LocalStack, key_id: str) -> list[dict]:
    """Every usage record of ``key_id`` at the collector (all pages of the solve log)."""
    events: list[dict] = []
    cursor = None
    with stack.admin_client() as admin:
        while True:
            page = admin.solve_log(key=key_id, limit=1000, cursor=cursor)
            events += page["events"]
            cursor = page["next_cursor"]
            if cursor is None:
                return events


@dataclass
class LedgerReport:
    label: str
    requests: int
    outcomes: dict
    client_ok: int
    cut: int  # outcome unknown
    cut_recorded: int  # ... and billed at the collector
    usage_ok: int
    usage_failed: int
    charged_micros: int
    price_micros: int
    problems: list[str] = field(default_factory=list)

    def line(self) -> str:
        return (
            f"[ledger {self.label}] requests={self.requests} client_ok={self.client_ok} "
            f"cut={self.cut} (recorded {self.cut_recorded}) -> expected {self.expected} | "
            f"usage_ok={self.usage_ok} usage_failed={self.usage_failed} | "
            f"charged={self.charged_micros} micros = {self.charged_micros / self.price_micros:g}"
            f" x price | outcomes={self.outcomes} | "
            f"{'OK' if not self.problems else 'BROKEN: ' + '; '.join(self.problems)}"
        )

    @property
    def expected(self) -> int:
        return self.client_ok + self.cut_recorded


def assert_ledger(
    stack: LocalStack,
    *trackers: Tracker,
    key_id: str,
    opening: str,
    price: str = PRICE,
    settle_timeout: float = 60.0,
) -> LedgerReport:
    """Settle the fleet, then print and assert the ledger invariant for ``key_id``.

    ``trackers`` must hold every request ever made on the key, and the key's balance must not
    have changed other than by solves since ``opening``.
    """
    settle(stack, settle_timeout)
    calls = [c for t in trackers for c in t.snapshot()]
    by_url = {c.url: c for c in calls}
    assert len(by_url) == len(calls), "a URL was used twice: the tracker cannot match records"
    events = usage_events(stack, key_id)
    with stack.admin_client() as admin:
        key_view = admin.get_key(key_id)
        summary = admin.summary()["keys"][key_id]

    problems: list[str] = []
    ids = Counter(e["event_id"] for e in events)
    dup_ids = [i for i, n in ids.items() if n > 1]
    if dup_ids:
        problems.append(f"duplicate event ids {dup_ids[:3]}")
    per_url = Counter(e["url"] for e in events)
    doubled = [u for u, n in per_url.items() if n > 1]
    if doubled:
        problems.append(f"{len(doubled)} requests with more than one usage record {doubled[:3]}")
    ok_events = [e for e in events if e["status"] == "success"]
    failed_events = [e for e in events if e["status"] != "success"]
    ok_urls = {e["url"] for e in ok_events}
    stray = sorted(u for u in ok_urls if u not in by_url)
    if stray:
        problems.append(f"{len(stray)} successes for requests never made {stray[:3]}")
    client_ok = [c for c in calls if c.ok]
    missing = [c.url for c in client_ok if c.url not in ok_urls]
    if missing:
        problems.append(f"{len(missing)} client successes without a usage record {missing[:3]}")
    cut = [c for c in calls if c.outcome == UNKNOWN]
    cut_recorded = sum(1 for c in cut if c.url in ok_urls)
    told_failed = [
        (c.url, c.outcome) for c in calls if c.url in ok_urls and c.outcome not in (200, UNKNOWN)
    ]
    if told_failed:
        problems.append(f"{len(told_failed)} billed requests answered failure {told_failed[:3]}")
    price_micros = micros(price)
    wrong_cost = [e["event_id"] for e in ok_events if micros(e["cost"]) != price_micros]
    wrong_cost += [e["event_id"] for e in failed_events if micros(e["cost"]) != 0]
    if wrong_cost:
        problems.append(f"{len(wrong_cost)} events with a wrong cost {wrong_cost[:3]}")
    charged = micros(opening) - micros(key_view["balance"])
    if charged != len(ok_events) * price_micros:
        problems.append(f"balance change {charged} != {len(ok_events)} successes x {price_micros}")
    if summary["successes"] != len(ok_events):
        problems.append(f"summary successes {summary['successes']} != log {len(ok_events)}")
    if len(client_ok) + cut_recorded != len(ok_events):
        problems.append(
            f"client successes {len(client_ok)} + recorded cuts {cut_recorded} "
            f"!= usage successes {len(ok_events)}"
        )
    report = LedgerReport(
        label="+".join(t.label for t in trackers),
        requests=len(calls),
        outcomes=outcome_counts(calls),
        client_ok=len(client_ok),
        cut=len(cut),
        cut_recorded=cut_recorded,
        usage_ok=len(ok_events),
        usage_failed=len(failed_events),
        charged_micros=charged,
        price_micros=price_micros,
        problems=problems,
    )
    print(report.line(), flush=True)
    assert not problems, report.line()
    return report


def outcome_counts(calls: Iterable[Call]) -> dict[str, int]:
    """``{"200": n, "402": n, "unknown": n, ...}`` in a stable order, for printing."""
    counts = Counter(str(c.outcome) for c in calls)
    return dict(sorted(counts.items()))


def latency_percentile(calls: Iterable[Call], q: float) -> float:
    """The ``q`` quantile (0..1) of the calls' elapsed seconds, nearest rank."""
    values = sorted(c.elapsed for c in calls)
    if not values:
        raise ValueError("no calls")
    return values[max(0, min(len(values), math.ceil(q * len(values))) - 1)]
