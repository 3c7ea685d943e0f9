"""Database access for the collector: one connection per thread, SQLite or MySQL/MariaDB.

SQL is written once with ``?`` placeholders; the dialect shim rewrites it for PyMySQL and
supplies the few statements that differ (upserts, row locks, how a write transaction starts).
Every write goes through :meth:`Database.transaction`, which retries the whole function after
a deadlock or a connection lost before COMMIT: nothing was committed, so running it again is
safe. Anything else that is the database's fault becomes ``StoreError``/``StoreUnavailable``
(answered with 503, which agents retry).
"""

from __future__ import annotations

import contextlib
import logging
import random
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import parse_qs, unquote, urlsplit

import pymysql

from solverfleet.collector.store.dialect import (
    Dialect,
    MysqlDialect,
    SqliteDialect,
    chunks,
    marks,
)

log = logging.getLogger(__name__)
T = TypeVar("T")

# Deadlocks are detected at once and resolve by running again; a lock wait timeout (1205)
# already waited innodb_lock_wait_timeout, so it is answered with 503 instead.
_MYSQL_RETRY = {1213}
_MYSQL_BUSY = {1205}
# Connection-level failures: the connection is dropped; the server rolled back anything open.
_MYSQL_GONE = {2003, 2006, 2013, 2055, 1927, 1053, 4031}
# The server's disk (data, temp or binlog) is full: 1021 disk full and 1114 table is full
# always; 3 / 1026 error writing a file, 1030 storage engine error, 1878 temp file write
# failed, 1598 binlog write failed when they name ENOSPC (errno 28). Answered 503 (retry
# later), like any store error: nothing was committed.
_MYSQL_FULL = {1021, 1114}
_MYSQL_WRITE = {3, 1026, 1030, 1598, 1878}
_ENOSPC_TEXT = ("errno: 28", "errcode: 28", "error 28", "no space left")


class StoreError(RuntimeError):
    """A database problem that is not the caller's fault (answered with 503)."""


class StoreUnavailable(StoreError):
    """The database cannot be reached or stays locked; safe to retry later."""


class StoreFull(StoreUnavailable):
    """The database's disk or a table is full: nothing was written; retry once space returns."""


class UrlError(ValueError):
    """A database URL that cannot be used."""


@dataclass(frozen=True)
class DbUrl:
    dialect: str  # "sqlite" | "mysql"
    path: str = ""  # sqlite
    host: str = "127.0.0.1"
    port: int = 3306
    user: str = ""
    password: str = ""
    database: str = ""
    unix_socket: str | None = None
    # TLS to the server, verified against this CA bundle and the URL's host name (?ssl_ca=PATH).
    ssl_ca: str | None = None

    @property
    def beyond_loopback(self) -> bool:
        """A MySQL server reached over the network, not a socket or loopback."""
        if self.dialect != "mysql" or self.unix_socket:
            return False
        return self.host not in ("localhost", "::1") and not self.host.startswith("127.")

    def redacted(self) -> str:
        if self.dialect == "sqlite":
            return f"sqlite:///{self.path}"
        return f"mysql://{self.user}:***@{self.host}:{self.port}/{self.database}"


def _tls(u: DbUrl) -> dict[str, Any]:
    """pymysql's TLS arguments: verified certificate and host name, or none (loopback)."""
    if not u.ssl_ca:
        return {}
    return {"ssl_ca": u.ssl_ca, "ssl_verify_cert": True, "ssl_verify_identity": True}


def parse_url(url: str) -> DbUrl:
    """``sqlite:///relative.db``, ``sqlite:////abs/path.db`` or ``mysql://u:p@host:port/db``."""
    if url.startswith("sqlite:///"):
        path = url[len("sqlite:///") :]
        if not path or path == ":memory:":
            # Each thread has its own connection, so an in-memory DB would be one per thread.
            raise UrlError("sqlite needs a file path: sqlite:///PATH")
        return DbUrl("sqlite", path=path)
    parts = urlsplit(url)
    if parts.scheme in ("mysql", "mysql+pymysql", "mariadb"):
        database = parts.path.lstrip("/")
        if not database or "/" in database:
            raise UrlError("mysql URL needs a database name: mysql://USER:PASS@HOST:PORT/DB")
        query = parse_qs(parts.query)
        try:
            port = parts.port or 3306
        except ValueError:
            raise UrlError("mysql URL has a bad port") from None
        return DbUrl(
            "mysql",
            host=parts.hostname or "127.0.0.1",
            port=port,
            user=unquote(parts.username or ""),
            password=unquote(parts.password or ""),
            database=database,
            unix_socket=(query.get("unix_socket") or [None])[0],
            ssl_ca=(query.get("ssl_ca") or [None])[0],
        )
    raise UrlError(f"unsupported database URL scheme: {parts.scheme or url!r}")


class Tx:
    """A connection inside a transaction (or in autocommit mode for reads)."""

    def __init__(self, raw: Any, dialect: Dialect) -> None:
        self.raw = raw
        self.dialect = dialect
        self._cursor = raw.cursor()

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run one statement; return the number of rows it changed."""
        cur = self._cursor
        cur.execute(self.dialect.sql(sql), tuple(params))
        return cur.rowcount

    def insert(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run an INSERT; return the new row's auto-increment id."""
        cur = self._cursor
        cur.execute(self.dialect.sql(sql), tuple(params))
        return int(cur.lastrowid)

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> int:
        cur = self._cursor
        cur.executemany(self.dialect.sql(sql), list(rows))
        return cur.rowcount

    def insert_new_rows(
        self, table: str, columns: Sequence[str], conflict: str, rows: Iterable[Sequence[Any]]
    ) -> int:
        """Insert the rows whose ``conflict`` column is new (see ``Dialect.insert_new``);
        returns how many were inserted."""
        literal = self.dialect.literal_insert_new(table, columns, conflict, rows)
        if literal is not None:
            return self.execute_literal(literal)
        return self.executemany(self.dialect.insert_new(table, columns, conflict), rows)

    def by_id(self, table: str, column: str, ids: Iterable[str]) -> dict[str, Any]:
        """``{id: column}`` for the rows of ``table`` among ``ids`` (missing ids are absent),
        read in bounded ``IN`` lists."""
        out: dict[str, Any] = {}
        for chunk in chunks(sorted(set(ids))):
            sql = f"SELECT id, {column} FROM {table} WHERE id IN ({marks(len(chunk))})"
            out.update(self.all(sql, chunk))
        return out

    def column_names(self, table: str) -> set[str]:
        return {r[0] for r in self.all(self.dialect.columns_query(), (table,))}

    def index_names(self, table: str) -> set[str]:
        return {r[0] for r in self.all(self.dialect.indexes_query(), (table,))}

    def execute_literal(self, sql: str) -> int:
        """Run SQL that already contains its values (MySQL bulk inserts)."""
        cur = self._cursor
        cur.execute(sql)
        return cur.rowcount

    def all(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        cur = self._cursor
        cur.execute(self.dialect.sql(sql), tuple(params))
        return [tuple(row) for row in cur.fetchall()]

    def one(self, sql: str, params: Sequence[Any] = ()) -> tuple | None:
        rows = self.all(sql, params)
        return rows[0] if rows else None

    def scalar(self, sql: str, params: Sequence[Any] = (), default: Any = None) -> Any:
        row = self.one(sql, params)
        return default if row is None or row[0] is None else row[0]

    def dicts(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        cur = self._cursor
        cur.execute(self.dialect.sql(sql), tuple(params))
        names = [d[0] for d in cur.description]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


class Database:
    """A database URL plus one lazily opened connection per thread."""

    def __init__(self, url: str, *, busy_timeout_ms: int = 10_000, max_attempts: int = 8) -> None:
        self.url = parse_url(url)
        self.dialect: Dialect = SqliteDialect() if self.url.dialect == "sqlite" else MysqlDialect()
        self.busy_timeout_ms = busy_timeout_ms
        self.max_attempts = max_attempts
        self._local = threading.local()
        # Write transactions this process has tried to commit: a cache of what they change
        # (heartbeat.IdleView) is stale once this moves.
        self.writes = 0
        self._writes_lock = threading.Lock()

    @property
    def is_mysql(self) -> bool:
        return self.url.dialect == "mysql"

    # connections

    def _connect(self) -> Any:
        if self.url.dialect == "sqlite":
            return self._connect_sqlite()
        return self._connect_mysql()

    def _connect_sqlite(self) -> sqlite3.Connection:
        # isolation_level=None: we issue BEGIN IMMEDIATE ourselves, so a write transaction
        # takes the write lock up front instead of failing to upgrade a read lock later.
        conn = sqlite3.connect(
            self.url.path, timeout=self.busy_timeout_ms / 1000, isolation_level=None
        )
        conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_ms)}")
        conn.execute("PRAGMA journal_mode = WAL")
        # FULL: a commit we acknowledged survives a power cut, not only a process crash.
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute("PRAGMA foreign_keys = OFF")
        return conn

    def _connect_mysql(self) -> pymysql.connections.Connection:
        u = self.url
        try:
            conn = pymysql.connect(
                host=u.host,
                port=u.port,
                user=u.user,
                password=u.password,
                database=u.database,
                unix_socket=u.unix_socket,
                **_tls(u),
                charset="utf8mb4",
                autocommit=True,
                connect_timeout=5,
                read_timeout=60,
                write_timeout=60,
            )
        except pymysql.err.OperationalError as exc:
            raise StoreUnavailable(f"cannot connect to {u.redacted()}: {exc.args[-1]}") from None
        with conn.cursor() as cur:
            # READ COMMITTED: each statement sees the latest commits; row locks (FOR UPDATE,
            # UPDATE) serialize the money paths, and there are fewer gap-lock deadlocks.
            cur.execute("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
            cur.execute("SET SESSION sql_mode = 'STRICT_ALL_TABLES,NO_ENGINE_SUBSTITUTION'")
            cur.execute("SET SESSION innodb_lock_wait_timeout = 20")
        return conn

    def connection(self) -> Any:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            try:
                conn = self._connect()
            except (sqlite3.Error, pymysql.err.MySQLError) as exc:
                # Opening is part of the request (a thread's first one, a worker's boot): a
                # lock met by its PRAGMAs is "busy" like any other, never an unhandled error.
                err = self._classify(exc, committing=False)
                raise StoreUnavailable(err.reason) if isinstance(err, _Retry) else err from exc
            self._local.conn = conn
        return conn

    def discard(self) -> None:
        """Forget this thread's connection (after a connection-level error)."""
        conn = getattr(self._local, "conn", None)
        self._local.conn = None
        if conn is not None:
            with contextlib.suppress(Exception):  # it is broken anyway
                conn.close()

    close = discard

    # transactions

    def transaction(self, fn: Callable[[Tx], T], *, attempts: int | None = None) -> T:
        """Run ``fn(tx)`` in one write transaction and commit; retry after deadlocks.

        ``fn`` may run more than once, so it must not have side effects outside the database
        (or must reset them itself). If it raises, the transaction is rolled back.
        """
        attempts = attempts or self.max_attempts
        for attempt in range(1, attempts + 1):
            try:
                return self._run_once(fn)
            except _Retry as retry:
                if attempt == attempts:
                    raise StoreUnavailable(f"database busy: {retry.reason}") from None
                log.warning("retrying transaction (%s), attempt %d", retry.reason, attempt + 1)
                # Back off a little, with jitter, so two colliding writers do not collide again.
                time.sleep(min(0.2, 0.005 * attempt * attempt) * (0.5 + random.random()))
        raise AssertionError("unreachable")

    def _run_once(self, fn: Callable[[Tx], T]) -> T:
        conn = self.connection()
        committing = False
        try:
            if self.is_mysql:
                conn.begin()
            else:
                conn.execute("BEGIN IMMEDIATE")
            result = fn(Tx(conn, self.dialect))
            committing = True
            conn.commit()
            return result
        except BaseException as exc:
            self._rollback_quietly(conn)
            err = self._classify(exc, committing)
            if err is exc:
                raise
            raise err from exc
        finally:
            if committing:  # committed, or perhaps committed: counted either way
                with self._writes_lock:
                    self.writes += 1

    def _rollback_quietly(self, conn: Any) -> None:
        try:
            if self.is_mysql:
                conn.rollback()
            elif conn.in_transaction:
                conn.execute("ROLLBACK")
        except Exception:
            self.discard()

    def _classify(self, exc: BaseException, committing: bool) -> BaseException:
        """Map driver errors to retry / unavailable; leave everything else as it is."""
        if _disk_full(exc):
            return StoreFull(f"database disk full: {exc}")
        if isinstance(exc, sqlite3.OperationalError):
            text = str(exc).lower()
            if "locked" in text or "busy" in text:
                # busy_timeout has already waited for the lock: report, do not wait again.
                return StoreUnavailable(f"sqlite: {exc}")
            return StoreError(f"sqlite: {exc}")
        if isinstance(exc, sqlite3.DatabaseError):
            return StoreError(f"sqlite: {exc}")
        if isinstance(exc, pymysql.err.InterfaceError) or (
            isinstance(exc, pymysql.err.OperationalError)
            and exc.args
            and exc.args[0] in _MYSQL_GONE
        ):
            self.discard()
            if committing:
                # The COMMIT may or may not have happened; only the caller can retry safely.
                return StoreUnavailable(f"database connection lost during commit: {exc}")
            return _Retry(f"connection lost: {exc}")
        if (
            isinstance(exc, pymysql.err.OperationalError)
            and exc.args
            and exc.args[0] in _MYSQL_RETRY
        ):
            return _Retry(str(exc.args[-1]))
        if (
            isinstance(exc, pymysql.err.OperationalError)
            and exc.args
            and exc.args[0] in _MYSQL_BUSY
        ):
            return StoreUnavailable(f"mysql: {exc.args[-1]}")
        if isinstance(exc, pymysql.err.MySQLError):
            return StoreError(f"mysql: {exc}")
        return exc

    def read(self, fn: Callable[[Tx], T]) -> T:
        """Run read-only queries in autocommit mode (no snapshot held, no write lock)."""
        for attempt in (1, 2):
            conn = self.connection()
            try:
                return fn(Tx(conn, self.dialect))
            except BaseException as exc:
                err = self._classify(exc, committing=False)
                if err is exc:
                    raise
                if isinstance(err, _Retry) and attempt == 1:
                    continue
                if isinstance(err, _Retry):
                    raise StoreUnavailable(err.reason) from exc
                raise err from exc
        raise AssertionError("unreachable")

    def ping(self) -> None:
        self.read(lambda tx: tx.scalar("SELECT 1"))


def _disk_full(exc: BaseException) -> bool:
    """A driver error that says the database ran out of space (SQLITE_FULL, ENOSPC, ...)."""
    if isinstance(exc, sqlite3.OperationalError):
        return "full" in str(exc).lower()  # "database or disk is full"
    if not isinstance(exc, pymysql.err.MySQLError) or not exc.args:
        return False
    text = str(exc.args[-1]).lower()
    if exc.args[0] in _MYSQL_FULL:
        return True
    return exc.args[0] in _MYSQL_WRITE and any(t in text for t in _ENOSPC_TEXT)


class _Retry(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
