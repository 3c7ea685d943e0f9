"""Fault injection under load (tests/chaos/): a bounded load generator whose every request is
tracked, and slow clients. The ledger invariant checked after the fault is in
tests.support.chaosledger.

Every chaos test reads the same way::

    tracker = Tracker("kill9")
    with Load(tracker, agents, secret, clients=4, max_seconds=90) as load:
        load.wait_successes(100, timeout=30)   # load is running
        ...fault..., ...recover...             # wait on conditions, never on the clock
    assert_ledger(stack, tracker, key_id="k", opening="100.00")   # tests.support.chaosledger

Each request the test makes on a key goes through a ``Tracker`` (the load threads, and
``Tracker.solve`` for single calls), with a URL no other request uses, so every usage record at
the collector can be matched to the one request it bills. A request ends in one of:

- ``status`` (an HTTP answer): 200 is a success the client saw, anything else is not;
- ``REFUSED``: the connection was never made (the agent was down); the request never left;
- ``UNKNOWN``: the connection was cut after the request may have been sent (kill -9 of the
  agent, a read timeout): the solve may or may not have happened and been billed.
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
from dataclasses import dataclass
from typing import Any, TypeVar

import requests
from urllib3.exceptions import ConnectTimeoutError, MaxRetryError, NewConnectionError

from tests.support.fleet import auth

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


# --- outcomes of many calls -----------------------------------------------------------------


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
