"""A real, private MariaDB server for tests and benchmarks.

(PYTEST_DONT_REWRITE: test modules import helpers from here *and* load it as a plugin.)

``MariaDBServer`` runs ``mariadb-install-db`` into a temporary datadir and starts ``mariadbd``
on a free loopback port with its own socket, as root, ignoring the machine's my.cnf. It is
stopped by pid (its own process group), also when a test fails.

Fixtures — load them in a test module with ``pytest_plugins = ["tests.support.mariadb"]``:

- ``mariadb_server`` (session): the running ``MariaDBServer``; skips if MariaDB is missing.
- ``mariadb_url`` (session): ``mysql://`` URL of the server's default database.
- ``fresh_mariadb_url`` (function): a new, empty database per test (isolation).
"""

from __future__ import annotations

import itertools
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pymysql
import pytest

from solverfleet.process import Service, free_port, wait_until

USER = "solverfleet"
PASSWORD = "solverfleet-test"
DEFAULT_DB = "solverfleet"

# Fast, not durable: a test server's data does not need to survive a power cut.
FAST_OPTIONS = (
    "--innodb-flush-log-at-trx-commit=2",
    "--innodb-doublewrite=0",
    "--sync-binlog=0",
    # One shared tablespace: CREATE TABLE needs no new file, so a fresh database per test
    # costs ~0.1 s instead of ~0.5 s.
    "--innodb-file-per-table=0",
)
# What a production server does by default (the benchmark uses these for honest numbers).
DURABLE_OPTIONS = ("--innodb-flush-log-at-trx-commit=1",)


def binaries() -> tuple[str, str] | None:
    server = shutil.which("mariadbd") or _sbin("mariadbd")
    install = shutil.which("mariadb-install-db")
    return (server, install) if server and install else None


def _sbin(name: str) -> str | None:
    path = Path("/usr/sbin") / name
    return str(path) if path.exists() else None


class MariaDBServer:
    """One private mariadbd. ``start()`` blocks until it accepts connections."""

    def __init__(
        self,
        base_dir: str | Path | None = None,
        *,
        durable: bool = False,
        name: str = "mariadb",
        extra_args: tuple[str, ...] = (),
    ) -> None:
        found = binaries()
        if found is None:
            raise RuntimeError(
                "mariadbd / mariadb-install-db not installed (apt-get install mariadb-server)"
            )
        self.server_bin, self.install_bin = found
        # Short base path: unix socket paths are limited to ~107 bytes.
        self.base = Path(base_dir or tempfile.mkdtemp(prefix="sf-mdb-"))
        self._own_base = base_dir is None
        self.datadir = self.base / "data"
        self.socket = str(self.base / "mysqld.sock")
        self.port = free_port()
        self.durable = durable
        self.name = name
        self.extra_args = extra_args  # e.g. TLS: --ssl-cert, --ssl-key, --require-secure-transport
        self.service: Service | None = None
        self._counter = itertools.count(1)

    # lifecycle

    def start(self, timeout: float = 60.0) -> MariaDBServer:
        if not self.datadir.exists():
            self.base.mkdir(parents=True, exist_ok=True)
            subprocess.run(
                [
                    self.install_bin,
                    "--no-defaults",
                    f"--datadir={self.datadir}",
                    "--user=root",
                    "--auth-root-authentication-method=socket",
                    "--skip-test-db",
                ],
                check=True,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                timeout=120,
            )
        argv = [
            self.server_bin,
            "--no-defaults",
            f"--datadir={self.datadir}",
            "--user=root",
            f"--port={self.port}",
            "--bind-address=127.0.0.1",
            f"--socket={self.socket}",
            "--skip-networking=0",
            "--skip-name-resolve",
            f"--pid-file={self.base / 'mysqld.pid'}",
            "--innodb-buffer-pool-size=256M",
            "--innodb-log-file-size=256M",
            "--max-connections=400",
            "--max-allowed-packet=64M",
            "--skip-log-bin",
            *(DURABLE_OPTIONS if self.durable else FAST_OPTIONS),
            *self.extra_args,  # last: a test's options win over the defaults above
        ]
        self.service = Service(self.name, argv, log_dir=self.base).start()
        try:
            wait_until(
                self._accepts, timeout=timeout, interval=0.05, what="mariadbd to accept connections"
            )
            self._bootstrap()
        except BaseException:
            log = self.service.log_tail()
            self.stop()
            raise RuntimeError(f"mariadbd did not start:\n{log}") from None
        return self

    def _accepts(self) -> bool:
        if self.service is not None and not self.service.alive():
            raise RuntimeError("mariadbd exited:\n" + self.service.log_tail())
        self.root().close()
        return True

    def root(self, database: str | None = None) -> pymysql.connections.Connection:
        return pymysql.connect(
            unix_socket=self.socket,
            user="root",
            database=database,
            autocommit=True,
            connect_timeout=2,
        )

    def _bootstrap(self) -> None:
        conn = self.root()
        try:
            with conn.cursor() as cur:
                cur.execute(
                    f"CREATE USER IF NOT EXISTS '{USER}'@'127.0.0.1' IDENTIFIED BY '{PASSWORD}'"
                )
                cur.execute(f"GRANT ALL PRIVILEGES ON *.* TO '{USER}'@'127.0.0.1'")
                cur.execute(f"CREATE DATABASE IF NOT EXISTS {DEFAULT_DB}")
        finally:
            conn.close()

    def stop(self) -> None:
        if self.service is not None:
            self.service.stop(timeout=30)
            self.service = None
        if self._own_base:
            shutil.rmtree(self.base, ignore_errors=True)

    def restart(self, timeout: float = 60.0) -> None:
        """Stop and start on the same datadir and port (what a database restart looks like)."""
        if self.service is not None:
            self.service.stop(timeout=30)
        self.start(timeout)

    def __enter__(self) -> MariaDBServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # databases

    def url_for(self, database: str) -> str:
        return f"mysql://{USER}:{PASSWORD}@127.0.0.1:{self.port}/{database}"

    @property
    def url(self) -> str:
        return self.url_for(DEFAULT_DB)

    def create_database(self, name: str | None = None) -> str:
        """A new empty database; returns its URL."""
        name = name or f"t{next(self._counter)}"
        conn = self.root()
        try:
            with conn.cursor() as cur:
                cur.execute(f"DROP DATABASE IF EXISTS {name}")
                cur.execute(f"CREATE DATABASE {name}")
        finally:
            conn.close()
        return self.url_for(name)


def running_server() -> Iterator[MariaDBServer]:
    """A private server for a fixture's lifetime; stopped even when start fails half-way."""
    if binaries() is None:
        pytest.skip("MariaDB is not installed (mariadbd / mariadb-install-db not found)")
    server = MariaDBServer()
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def mariadb_server() -> Iterator[MariaDBServer]:
    yield from running_server()


@pytest.fixture(scope="session")
def mariadb_url(mariadb_server: MariaDBServer) -> str:
    return mariadb_server.url


@pytest.fixture
def fresh_mariadb_url(mariadb_server: MariaDBServer) -> str:
    return mariadb_server.create_database()
