"""A whole fleet on one machine: collector, demo worker and N agents, each under gunicorn.

``solverfleet local`` runs it in the foreground; end-to-end tests drive it directly::

    from solverfleet_dev.localstack import LocalStack

    with LocalStack(tmp_path / "stack", agents=2, worker_latency_ms="0") as stack:
        with stack.admin_client() as admin:       # AdminClient with the stack's admin token
            admin.apply(config)                   # a normalized team config
        stack.wait_agents_ready()                 # agents' /readyz
        stack.wait_for_key(secret)                # every agent has synced the applied keys
        requests.post(stack.urls["agents"][0] + "/solve", ...)
        stack.kill_agent(1)                       # SIGKILL: a crash, nothing flushed
        stack.start_agent(1)                      # same port, state dir and agent id
        stack.stop_agent(0)                       # SIGTERM: drain, ship, return leases
        stack.stop_collector(); stack.start_collector()   # same port and database
    # leaving the block: stop() -- agents, then worker, then collector

Layout under ``state_dir``: ``collector.db`` (SQLite unless ``db_url``), ``agent-<i>/`` (each
agent's state and spool), ``logs/<part>.log``, and while the stack runs ``stack.json`` and
``local.lock`` (one stack per state dir). Ports are picked once and kept across restarts of a
part, so agents keep finding the collector.
Every child runs in its own session: a Ctrl-C at the terminal reaches only the parent, which
then stops the children in order (agents first, so they ship usage and return leases).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

import gunicorn
import requests

import solverfleet
from solverfleet import keyhash
from solverfleet.adminclient import AdminClient
from solverfleet.process import Service, free_port, http_ok, wait_until

HOST = "127.0.0.1"
STACK_FILE = "stack.json"
LOCK_FILE = "local.lock"
AGENT_ID_PREFIX = "local-agent-"

AgentEnv = Mapping[str, str] | Callable[[int], Mapping[str, str]]


class StackError(RuntimeError):
    """A part of the stack did not start or become ready; the message includes its log tail."""


class LocalStack:
    """Start, inspect and stop a local fleet. All ``start*``/``stop*`` calls block until done.

    ``extra_agent_env`` is added to every agent's environment (a mapping, or a function of the
    agent index returning one), e.g. ``{"SOLVERFLEET_SYNC_INTERVAL": "0.1"}``;
    ``extra_collector_env`` and ``extra_worker_env`` likewise. The parent's own ``SOLVERFLEET_*``
    variables are *not* inherited, so a stray ``SOLVERFLEET_CONFIG`` cannot leak in.
    """

    def __init__(
        self,
        state_dir: str | os.PathLike[str],
        agents: int = 1,
        *,
        db_url: str | None = None,
        worker_latency_ms: str = "50",
        worker_failure_rate: float = 0.0,
        extra_agent_env: AgentEnv | None = None,
        extra_collector_env: Mapping[str, str] | None = None,
        extra_worker_env: Mapping[str, str] | None = None,
        agent_port_base: int | None = None,
        ready_timeout: float = 60.0,
        agent_stop_timeout: float = 120.0,
        stop_timeout: float = 35.0,
    ) -> None:
        if agents < 0:
            raise ValueError("agents must be >= 0")
        self.state_dir = Path(state_dir).resolve()
        self.log_dir = self.state_dir / "logs"
        self.stack_file = self.state_dir / STACK_FILE
        self.agent_count = agents
        self.db_url = db_url or f"sqlite:///{self.state_dir / 'collector.db'}"
        self.worker_latency_ms = str(worker_latency_ms)
        self.worker_failure_rate = worker_failure_rate
        self.extra_agent_env = extra_agent_env or {}
        self.extra_collector_env = dict(extra_collector_env or {})
        self.extra_worker_env = dict(extra_worker_env or {})
        self.agent_port_base = agent_port_base
        self.ready_timeout = ready_timeout
        self.agent_stop_timeout = agent_stop_timeout
        self.stop_timeout = stop_timeout
        # Fresh per stack: tokens authenticate processes of this run only.
        self.admin_token = keyhash.generate_token()
        self.fleet_token = keyhash.generate_token()
        self.collector: Service | None = None
        self.worker: Service | None = None
        self.agents: list[Service | None] = []
        self._ports: dict[str, int] = {}
        self._lock_fd: int | None = None

    # --- addresses ----------------------------------------------------------------------------

    @property
    def collector_url(self) -> str:
        return f"http://{HOST}:{self._port('collector')}"

    @property
    def worker_url(self) -> str:
        return f"http://{HOST}:{self._port('worker')}"

    def agent_url(self, i: int) -> str:
        return f"http://{HOST}:{self._port(f'agent-{i}')}"

    @property
    def urls(self) -> dict:
        """``{"collector": url, "worker": url, "agents": [url, ...]}``."""
        return {
            "collector": self.collector_url,
            "worker": self.worker_url,
            "agents": [self.agent_url(i) for i in range(self.agent_count)],
        }

    def agent_id(self, i: int) -> str:
        return f"{AGENT_ID_PREFIX}{i}"

    def agent_state_dir(self, i: int) -> Path:
        return self.state_dir / f"agent-{i}"

    def admin_client(self, timeout: float = 30.0) -> AdminClient:
        return AdminClient(self.collector_url, self.admin_token, timeout=timeout)

    # --- whole stack --------------------------------------------------------------------------

    def start(self) -> LocalStack:
        """Start every part, wait until each is ready, then write ``stack.json``.

        On any failure, whatever was started is stopped again and ``StackError`` is raised.
        """
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(exist_ok=True)
        self._lock_state_dir()  # StackError when another stack runs here: its file stays
        self.stack_file.unlink(missing_ok=True)  # stale from an earlier run
        try:
            # Collector and worker boot in parallel; agents start once both answer.
            self.start_collector(wait=False)
            self.start_worker(wait=False)
            self._wait_ready(self.collector, f"{self.collector_url}/readyz")
            self._wait_ready(self.worker, f"{self.worker_url}/healthz")
            for i in range(self.agent_count):
                self.start_agent(i, wait=False)
            for i in range(self.agent_count):
                self._wait_ready(self.agents[i], f"{self.agent_url(i)}/healthz")
            self._write_stack_file()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> dict[str, int | None]:
        """Graceful stop in dependency order: agents (all at once), worker, collector.

        Safe to call more than once and on a partly started stack. Keeps the database, agent
        state and logs; removes ``stack.json`` if this stack holds the state dir. Returns each
        started part's exit code (0 after a clean graceful exit; negative: killed by that
        signal).
        """
        try:
            self._stop_many(self.agents, self.agent_stop_timeout)
            if self.worker is not None:
                self.worker.stop(self.stop_timeout)
            if self.collector is not None:
                self.collector.stop(self.stop_timeout)
        finally:
            # Only the stack holding the state dir owns its stack.json: one refused for a busy
            # state dir must leave the running stack's file alone.
            if self._lock_fd is not None:
                self.stack_file.unlink(missing_ok=True)
            self._unlock_state_dir()
        parts = [*self.agents, self.worker, self.collector]
        return {s.name: s.proc.returncode for s in parts if s is not None and s.proc is not None}

    def __enter__(self) -> LocalStack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def wait_agents_ready(self, timeout: float | None = None) -> None:
        """Wait for every running agent's ``/readyz`` (it needs key data from the collector)."""
        for i, svc in enumerate(self.agents):
            if svc is not None and svc.alive():
                self._wait_ready(svc, f"{self.agent_url(i)}/readyz", timeout)

    def wait_for_key(self, secret: str, timeout: float = 15.0) -> None:
        """Wait until every running agent knows the key with ``secret``.

        An agent is ready as soon as it has synced once; a config applied after that reaches it
        on a later sync. ``/balance`` answers 401 for a key the agent does not know, 503 before
        its first sync.
        """
        for i, svc in enumerate(self.agents):
            if svc is None or not svc.alive():
                continue
            url = f"{self.agent_url(i)}/balance"

            def known(url: str = url) -> bool:
                headers = {"Authorization": f"Bearer {secret}"}
                # 401: key not synced yet; 503: no key data yet; 403: a known, disabled key.
                status = requests.get(url, headers=headers, timeout=2).status_code
                return status not in (401, 503)

            wait_until(known, timeout=timeout, interval=0.05, what=f"{svc.name} to load the key")

    def dead_parts(self) -> list[tuple[str, int | None]]:
        """``(name, exit code)`` of every started part that is no longer running."""
        parts = [self.collector, self.worker, *self.agents]
        return [
            (svc.name, svc.proc.returncode)
            for svc in parts
            if svc is not None and svc.proc is not None and not svc.alive()
        ]

    # --- parts --------------------------------------------------------------------------------

    def start_collector(self, wait: bool = True) -> Service:
        env = {
            "SOLVERFLEET_DB": self.db_url,
            "SOLVERFLEET_FLEET_TOKEN": self.fleet_token,
            "SOLVERFLEET_ADMIN_TOKEN": self.admin_token,
            **self.extra_collector_env,
        }
        argv = _gunicorn(
            "solverfleet.collector:create_app()",
            self._bind("collector"),
            conf="solverfleet.collector.gunicorn_conf",
            # Without a conf module: one process (SQLite and the batched writer live in it).
            fallback=["--workers", "1", "--worker-class", "gthread", "--threads", "16"],
        )
        with _signals_deferred():
            self.collector = self._launch(self.collector, "collector", argv, env)
        if wait:
            self._wait_ready(self.collector, f"{self.collector_url}/readyz")
        return self.collector

    def stop_collector(self, timeout: float | None = None) -> int | None:
        return self.collector.stop(timeout or self.stop_timeout) if self.collector else None

    def start_worker(self, wait: bool = True) -> Service:
        env = {
            "SOLVERFLEET_LATENCY_MS": self.worker_latency_ms,
            "SOLVERFLEET_FAILURE_RATE": str(self.worker_failure_rate),
            **self.extra_worker_env,
        }
        argv = _gunicorn(
            "solverfleet.worker:create_app()",
            self._bind("worker"),
            conf="solverfleet.worker.gunicorn_conf",
        )
        with _signals_deferred():
            self.worker = self._launch(self.worker, "worker", argv, env)
        if wait:
            self._wait_ready(self.worker, f"{self.worker_url}/healthz")
        return self.worker

    def start_agent(self, i: int, wait: bool = True) -> Service:
        """(Re)start agent ``i`` with its port, state dir and agent id from before."""
        self._check_index(i)
        state = self.agent_state_dir(i)
        state.mkdir(parents=True, exist_ok=True)
        extra = self.extra_agent_env(i) if callable(self.extra_agent_env) else self.extra_agent_env
        env = {
            "SOLVERFLEET_COLLECTOR_URL": self.collector_url,
            "SOLVERFLEET_FLEET_TOKEN": self.fleet_token,
            "SOLVERFLEET_WORKER_URL": self.worker_url,
            "SOLVERFLEET_AGENT_ID": self.agent_id(i),
            "SOLVERFLEET_STATE_DIR": str(state),
            **extra,
        }
        argv = _gunicorn(
            "solverfleet.agent:create_app()",
            self._bind(f"agent-{i}"),
            conf="solverfleet.agent.gunicorn_conf",
        )
        while len(self.agents) <= i:
            self.agents.append(None)
        with _signals_deferred():
            svc = self._launch(self.agents[i], f"agent-{i}", argv, env)
            self.agents[i] = svc
        if wait:
            self._wait_ready(svc, f"{self.agent_url(i)}/healthz")
        return svc

    def stop_agent(self, i: int, timeout: float | None = None) -> int | None:
        """SIGTERM agent ``i`` and wait for its graceful exit (drain, ship usage, release)."""
        self._check_index(i)
        svc = self.agents[i] if i < len(self.agents) else None
        return svc.stop(timeout or self.agent_stop_timeout) if svc else None

    def kill_agent(self, i: int) -> None:
        """SIGKILL agent ``i`` and its gunicorn worker: a crash, nothing is flushed."""
        self._check_index(i)
        svc = self.agents[i] if i < len(self.agents) else None
        if svc is not None:
            svc.kill()

    # --- internals ----------------------------------------------------------------------------

    def _port(self, name: str) -> int:
        if name not in self._ports:
            if name.startswith("agent-") and self.agent_port_base is not None:
                self._ports[name] = self.agent_port_base + int(name.split("-", 1)[1])
            else:
                self._ports[name] = _unused_port(set(self._ports.values()))
        return self._ports[name]

    def _bind(self, name: str) -> str:
        return f"{HOST}:{self._port(name)}"

    def _check_index(self, i: int) -> None:
        if not 0 <= i < self.agent_count:
            raise IndexError(f"agent index {i} out of range (stack has {self.agent_count})")

    def _launch(self, old: Service | None, name: str, argv: list[str], env: dict) -> Service:
        if old is not None and old.alive():
            raise StackError(f"{name} is already running (pid {old.pid})")
        svc = Service(name, argv, env={**_base_env(), **env}, log_dir=self.log_dir)
        _mark_log(svc)
        return svc.start()

    def _wait_ready(self, svc: Service | None, url: str, timeout: float | None = None) -> None:
        assert svc is not None

        def ready() -> str | bool:
            if not svc.alive():
                return "exited"
            return http_ok(url) and "ready"

        try:
            outcome = wait_until(
                ready, timeout=timeout or self.ready_timeout, interval=0.05, what=url
            )
        except TimeoutError as exc:
            raise StackError(f"{svc.name} not ready: {exc}\n{_tail(svc)}") from None
        if outcome == "exited":
            code = svc.proc.returncode if svc.proc else None
            raise StackError(f"{svc.name} exited with code {code} during start\n{_tail(svc)}")

    def _stop_many(self, services: list[Service | None], timeout: float) -> None:
        # SIGTERM all first so agents drain in parallel, then wait for each within one deadline.
        running = [s for s in services if s is not None and s.alive()]
        for svc in running:
            svc.signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for svc in running:
            assert svc.proc is not None
            with contextlib.suppress(subprocess.TimeoutExpired):
                svc.proc.wait(max(0.1, deadline - time.monotonic()))
            svc.stop(0.1)  # reaps; SIGKILLs the group if it is still there

    def _lock_state_dir(self) -> None:
        # Two stacks on one state dir would share a database and agent spools.
        if self._lock_fd is not None:
            return
        fd = os.open(self.state_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise StackError(
                f"{self.state_dir} is in use by another local stack (pid {holder})"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._lock_fd = fd

    def _unlock_state_dir(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing releases the flock
            self._lock_fd = None

    def _write_stack_file(self) -> None:
        data = {**self.urls, "admin_token": self.admin_token}
        tmp = self.stack_file.with_suffix(".tmp")
        tmp.unlink(missing_ok=True)
        # 0600 from the first byte: it holds the admin token.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh, indent=2)
            fh.write("\n")
        os.replace(tmp, self.stack_file)


@contextlib.contextmanager
def _signals_deferred() -> Iterator[None]:
    """Hold SIGINT/SIGTERM while a child starts and is recorded, then deliver them.

    A Ctrl-C raised between fork and ``self.<part> = ...`` would leave a child that nobody
    knows to stop. Blocking the signals instead (sigmask) is no option: children inherit it.
    """
    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread runs signal handlers
        return
    pending: list[int] = []
    held = (signal.SIGINT, signal.SIGTERM)
    previous = {
        sig: signal.signal(sig, lambda signum, frame: pending.append(signum)) for sig in held
    }
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for sig in pending:
            signal.raise_signal(sig)


def _gunicorn(app: str, bind: str, *, conf: str, fallback: Sequence[str] = ()) -> list[str]:
    """gunicorn argv: the part's conf module when it exists, else ``fallback`` flags."""
    argv = [sys.executable, "-m", "gunicorn"]
    if _module_exists(conf):
        argv += ["-c", f"python:{conf}"]
    else:
        argv += list(fallback)
    # Command-line flags beat the conf module. gunicorn 27's control socket defaults to one
    # path per user, which several servers on one host would share.
    if gunicorn.version_info >= (27,):
        argv.append("--no-control-socket")
    return [*argv, "--bind", bind, app]


def _module_exists(name: str) -> bool:
    # Looks for the file instead of importing: importing a part's package here would load its
    # whole app (Flask, database drivers) into this process for nothing.
    root, _, rest = name.partition(".")
    if root != "solverfleet" or not rest:
        return False
    base = Path(solverfleet.__file__).parent.joinpath(*rest.split("."))
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def _base_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SOLVERFLEET_")}
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _unused_port(taken: set[int]) -> int:
    # free_port can hand out the same port twice in a row; keep each part's port distinct.
    for _ in range(50):
        port = free_port(HOST)
        if port not in taken:
            return port
    raise StackError("no free loopback port")


def _mark_log(svc: Service) -> None:
    # Logs append across restarts; a marker line shows where each run begins.
    svc.log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(svc.log_path, "a") as fh:
        fh.write(f"\n=== solverfleet local: starting {svc.name} at {time.ctime()} ===\n")


def _tail(svc: Service) -> str:
    return f"--- last lines of {svc.log_path} ---\n{svc.log_tail(30)}"
