"""Run a real collector under gunicorn for end-to-end tests (and the ingest benchmark).

(PYTEST_DONT_REWRITE: test modules import helpers from here *and* load it as a plugin.)

    proc = CollectorProcess(sqlite_url(tmp_path / "c.db"), tmp_path).start()  # or a mysql:// URL
    proc.admin("POST", "/admin/v1/apply", json=config)      # -> requests.Response
    proc.agent("POST", "/agent/v1/sync", json={...})
    proc.url, proc.admin_token, proc.fleet_token, proc.db_url
    proc.stop()        # SIGTERM (graceful), or proc.kill() for SIGKILL

Fixtures — load them in a test module with
``pytest_plugins = ["tests.support.collector", "tests.support.mariadb"]``:

- ``collector`` (function): a running collector on a fresh SQLite file.
- ``collector_db_url`` (function, parametrized): an empty collector database, once on SQLite
  and once on MariaDB (the MariaDB case is marked ``integration`` + ``mariadb``), so one test
  body runs against both stores. Needs ``tests.support.mariadb`` loaded too.
  ``empty_db_url`` is the same without a schema (for migration tests).
- ``collector_app`` (function): an in-process ``AppHarness`` (Flask test client, settable
  ``FakeClock``) on ``collector_db_url``, for fast tests of the HTTP surface.
  ``make_app(db_url, clock)`` builds one directly.
- ``fast_dir`` (function): scratch directory on tmpfs when available.

``team_config(...)`` / ``user_config`` / ``key_config`` build a normalized team config;
``event(...)`` builds a usage event as an agent sends it.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from solverfleet.collector import CollectorSettings, create_app
from solverfleet.collector.context import EXTENSION, Collector
from solverfleet.collector.store import Database, migrate, schema, schema_billing
from solverfleet.keyhash import generate_token
from solverfleet.process import Service, free_port, gunicorn_argv, http_ok, wait_until

APP = "solverfleet.collector:create_app()"


class CollectorProcess:
    """One collector (gunicorn, gthread workers) on a free loopback port."""

    def __init__(
        self,
        db_url: str,
        tmp_path: str | Path,
        *,
        name: str = "collector",
        workers: int = 2,
        threads: int = 8,
        lease_ttl: float = 120,
        fleet_token: str | None = None,
        admin_token: str | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.db_url = db_url
        self.tmp_path = Path(tmp_path)
        self.name = name
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.fleet_token = fleet_token or generate_token()
        self.admin_token = admin_token or generate_token()
        child_env = {k: v for k, v in os.environ.items() if not k.startswith("SOLVERFLEET_")}
        child_env.update(
            {
                "SOLVERFLEET_DB": db_url,
                "SOLVERFLEET_FLEET_TOKEN": self.fleet_token,
                "SOLVERFLEET_ADMIN_TOKEN": self.admin_token,
                "SOLVERFLEET_LEASE_TTL": str(lease_ttl),
                **(env or {}),
            }
        )
        # gthread: real threads, so a blocked SQLite/MySQL call never stalls other requests;
        # several workers are several processes on one database, like several collectors.
        argv = gunicorn_argv(
            APP,
            bind=f"127.0.0.1:{self.port}",
            worker_class="gthread",
            workers=workers,
            extra=[
                "--threads",
                str(threads),
                "--graceful-timeout",
                "20",
                "--timeout",
                "60",
                "--no-control-socket",  # gunicorn 25+: else every instance shares ~/.gunicorn
            ],
        )
        self.service = Service(name, argv, env=child_env, log_dir=self.tmp_path, cwd=self.tmp_path)
        self._local = threading.local()  # requests.Session is not thread-safe: one per thread
        self._sessions: list[requests.Session] = []

    @property
    def session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
            self._sessions.append(session)
        return session

    def start(self, timeout: float = 30.0) -> CollectorProcess:
        self.service.start()
        try:
            wait_until(self._ready, timeout=timeout, what=f"{self.name} /readyz")
        except Exception:
            tail = self.service.log_tail()
            self.service.kill()
            raise RuntimeError(f"{self.name} did not become ready:\n{tail}") from None
        return self

    def _ready(self) -> bool:
        if not self.service.alive():
            raise RuntimeError(f"{self.name} exited:\n{self.service.log_tail()}")
        return http_ok(self.url + "/readyz")

    def stop(self, timeout: float = 30.0) -> int | None:
        for session in self._sessions:
            session.close()
        return self.service.stop(timeout)

    def kill(self) -> None:
        self.service.kill()

    def __enter__(self) -> CollectorProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # requests

    def request(
        self, method: str, path: str, token: str | None, **kwargs: Any
    ) -> requests.Response:
        headers = dict(kwargs.pop("headers", None) or {})
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        kwargs.setdefault("timeout", 30)
        return self.session.request(method, self.url + path, headers=headers, **kwargs)

    def admin(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        return self.request(method, path, self.admin_token, **kwargs)

    def agent(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        return self.request(method, path, self.fleet_token, **kwargs)

    def summary(self) -> dict:
        response = self.admin("GET", "/admin/v1/summary")
        response.raise_for_status()
        return response.json()


def sqlite_url(path: str | Path) -> str:
    return "sqlite:///" + str(Path(path).absolute())


@pytest.fixture
def collector(tmp_path: Path) -> Iterator[CollectorProcess]:
    proc = CollectorProcess(sqlite_url(tmp_path / "collector.db"), tmp_path)
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()


BACKENDS = [
    "sqlite",
    pytest.param("mariadb", marks=[pytest.mark.mariadb, pytest.mark.integration]),
]


def _mariadb(request: pytest.FixtureRequest):
    try:
        return request.getfixturevalue("mariadb_server")
    except pytest.FixtureLookupError:
        raise RuntimeError(
            'add "tests.support.mariadb" to this test module\'s pytest_plugins'
        ) from None


def wipe_collector_db(url: str) -> None:
    """Empty every collector table of a migrated database (faster than a new database)."""
    db = Database(url)
    try:
        migrate(db)

        def wipe(tx):
            for table in [
                *schema.V1_TABLES,
                *schema.V3_TABLES,
                *schema.V4_TABLES,
                *schema_billing.V6_TABLES,
                *schema_billing.V8_TABLES,
                *schema_billing.V9_TABLES,
                *schema_billing.V10_TABLES,
                *schema_billing.V11_TABLES,
                *schema_billing.V14_TABLES,
                *schema_billing.V15_TABLES,
            ]:
                tx.execute(f"DELETE FROM {table.name}")
            tx.execute("INSERT INTO config_state (id, version) VALUES (1, 1)")

        db.transaction(wipe)
    finally:
        db.close()


@pytest.fixture
def fast_dir(tmp_path: Path) -> Iterator[Path]:
    """A scratch directory on tmpfs when there is one (SQLite's fsyncs cost nothing there),
    else ``tmp_path``. For in-process tests; process tests keep real disks."""
    if not Path("/dev/shm").is_dir():
        yield tmp_path
        return
    path = Path(tempfile.mkdtemp(prefix="sf-test-", dir="/dev/shm"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(params=BACKENDS)
def collector_db_url(request: pytest.FixtureRequest, fast_dir: Path) -> str:
    """An empty collector database (schema applied on MariaDB), SQLite or MariaDB."""
    if request.param == "sqlite":
        return sqlite_url(fast_dir / "collector.db")
    url = _mariadb(request).url_for("collector_reused")
    if "collector_reused" not in _created:
        _mariadb(request).create_database("collector_reused")
        _created.add("collector_reused")
    wipe_collector_db(url)
    return url


_created: set[str] = set()


@pytest.fixture(params=BACKENDS)
def empty_db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A brand-new database without any schema, SQLite or MariaDB."""
    if request.param == "sqlite":
        return sqlite_url(tmp_path / "empty.db")
    return _mariadb(request).create_database()


# --- in-process harness -----------------------------------------------------------------------

T0 = 1_765_555_555.0  # 2025-12-12T16:05:55Z


class FakeClock:
    def __init__(self, start: float = T0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class AppHarness:
    app: Any
    clock: FakeClock
    fleet_token: str = "fleet-token"
    admin_token: str = "admin-token"

    @property
    def state(self) -> Collector:
        return self.app.extensions[EXTENSION]

    @property
    def db(self):
        return self.state.db

    def call(self, method: str, path: str, token: str | None, **kwargs: Any):
        client = self.app.test_client()
        headers = dict(kwargs.pop("headers", None) or {})
        if token:
            headers["Authorization"] = f"Bearer {token}"
        return client.open(path, method=method, headers=headers, **kwargs)

    def admin(self, method: str, path: str, **kwargs: Any):
        return self.call(method, path, self.admin_token, **kwargs)

    def agent(self, method: str, path: str, **kwargs: Any):
        return self.call(method, path, self.fleet_token, **kwargs)

    def apply(self, config: dict) -> dict:
        response = self.admin("POST", "/admin/v1/apply", json=config)
        assert response.status_code == 200, response.get_json()
        return response.get_json()

    def sync(self, agent_id: str = "a1", leases: list | None = None, **body: Any) -> dict:
        # A reset is a new process: a new instance (a process resets once; leases.py).
        instance = f"{agent_id}-{uuid.uuid4().hex[:8]}" if body.get("reset") else f"{agent_id}-i"
        payload = {"agent_id": agent_id, "instance": instance, "leases": leases or []}
        payload.update(body)
        response = self.agent("POST", "/agent/v1/sync", json=payload)
        assert response.status_code == 200, response.get_json()
        return response.get_json()

    def usage(self, events: list[dict], agent_id: str = "a1") -> dict:
        response = self.agent(
            "POST", "/agent/v1/usage", json={"agent_id": agent_id, "events": events}
        )
        assert response.status_code == 200, response.get_json()
        return response.get_json()

    def summary(self) -> dict:
        return self.admin("GET", "/admin/v1/summary").get_json()


def make_app(
    db_url: str, clock: FakeClock | None = None, lease_ttl: float = 120, **settings_extra: Any
) -> AppHarness:
    clock = clock or FakeClock()
    settings = CollectorSettings(
        fleet_token="fleet-token",
        admin_token="admin-token",
        db=db_url,
        lease_ttl=lease_ttl,
        notify_sender=False,  # no thread per test app; tests run the Notifier's rounds
        refill_runner=False,  # likewise: tests call Refiller.run_once with the time they want
        **settings_extra,
    )
    return AppHarness(create_app(settings, clock=clock), clock)


@pytest.fixture
def collector_app(collector_db_url: str) -> Iterator[AppHarness]:
    harness = make_app(collector_db_url)
    yield harness
    harness.db.close()


# --- test data --------------------------------------------------------------------------------


def key_config(key_id: str, balance: str = "10.00", **overrides: Any) -> dict:
    key = {
        "id": key_id,
        "secret": f"sk_test_{key_id}_secret",
        "project": None,
        "environment": None,
        "balance": balance,
        "allowed_types": None,
        "cpm": None,
        "ip_allowlist": None,
        "active": True,
    }
    key.update(overrides)
    return key


def user_config(user_id: str, keys: list[dict], **overrides: Any) -> dict:
    user = {
        "id": user_id,
        "email": f"{user_id}@example.com",
        "role": "user",
        "daily_limit": None,
        "active": True,
        "keys": keys,
    }
    user.update(overrides)
    return user


def team_config(users: list[dict] | None = None, **overrides: Any) -> dict:
    """A normalized team config; by default user ``alice`` with key ``alice-web`` (10.00)."""
    config = {
        "account": "acme",
        "low_balance_alert": None,
        "prices": {"turnstile": "0.002", "recaptcha-v2": "0.003"},
        "users": users if users is not None else [user_config("alice", [key_config("alice-web")])],
    }
    config.update(overrides)
    return config


def event(
    key_id: str = "alice-web",
    *,
    cost: int = 2000,
    status: str = "success",
    agent_id: str = "a1",
    user_id: str | None = "alice",
    ts: float | None = None,
    **extra: Any,
) -> dict:
    """One usage event as an agent sends it."""
    ev = {
        "event_id": uuid.uuid4().hex,
        "ts_ms": int((ts if ts is not None else T0) * 1000),
        "request_id": uuid.uuid4().hex[:12],
        "agent_id": agent_id,
        "key_id": key_id,
        "user_id": user_id,
        "user_email": f"{user_id}@example.com" if user_id else None,
        "account": "acme",
        "project": None,
        "environment": None,
        "type": "turnstile",
        "url": "https://example.com/login",
        "status": status,
        "error": None if status == "success" else "worker_error",
        "message": None,
        "source_ip": "203.0.113.9",
        "duration_ms": 412,
        "cost_micros": cost if status == "success" else 0,
    }
    ev.update(extra)
    return ev


def now_ms() -> int:
    return int(time.time() * 1000)
