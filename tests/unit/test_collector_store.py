"""Store: URLs, dialect shim, migrations, transactions — on SQLite and on MariaDB."""

from __future__ import annotations

import pymysql
import pytest

from solverfleet.collector.store import (
    Database,
    StoreError,
    StoreFull,
    StoreUnavailable,
    UrlError,
    current_version,
    migrate,
    parse_url,
)
from solverfleet.collector.store.dialect import MysqlDialect, SqliteDialect, mysql_literal
from solverfleet.collector.store.migrations import MIGRATIONS

pytest_plugins = ["tests.support.collector", "tests.support.mariadb"]


def test_sqlite_urls() -> None:
    assert parse_url("sqlite:///solverfleet.db").path == "solverfleet.db"
    assert parse_url("sqlite:////var/lib/sf/c.db").path == "/var/lib/sf/c.db"
    with pytest.raises(UrlError):
        parse_url("sqlite:///:memory:")


def test_mysql_urls() -> None:
    url = parse_url("mysql://sf:p%40ss%3Aw@db.internal:3307/fleet")
    assert (url.user, url.password, url.host, url.port, url.database) == (
        "sf",
        "p@ss:w",
        "db.internal",
        3307,
        "fleet",
    )
    assert "p@ss" not in url.redacted()
    assert parse_url("mysql://u@h/db").port == 3306
    for bad in ("mysql://u:p@h:1/", "postgres://u@h/db", "nonsense"):
        with pytest.raises(UrlError):
            parse_url(bad)


def test_dialect_sql() -> None:
    assert MysqlDialect().sql("SELECT 1 WHERE a LIKE 'x%' AND b = ?") == (
        "SELECT 1 WHERE a LIKE 'x%%' AND b = %s"
    )
    assert SqliteDialect().sql("a = ?") == "a = ?"
    assert mysql_literal(None) == "NULL"
    assert mysql_literal(12) == "12"
    assert mysql_literal("it's \\ x") == "'it\\'s \\\\ x'"


def test_migrate_is_versioned_and_idempotent(empty_db_url: str) -> None:
    assert migrate(empty_db_url) == [m.version for m in MIGRATIONS]
    assert migrate(empty_db_url) == []
    db = Database(empty_db_url)
    try:
        # Versions land in any order (each touches only its own tables and columns).
        assert current_version(db) == max(m.version for m in MIGRATIONS)
        rows = db.read(lambda tx: tx.all("SELECT version, name FROM schema_migrations"))
        assert sorted(rows) == sorted((m.version, m.name) for m in MIGRATIONS)
        assert db.read(lambda tx: tx.scalar("SELECT version FROM config_state WHERE id = 1")) == 1
    finally:
        db.close()


def test_failed_transaction_commits_nothing(empty_db_url: str) -> None:
    migrate(empty_db_url)
    db = Database(empty_db_url)

    def work(tx):
        tx.execute("INSERT INTO prices (type, price_micros) VALUES (?, ?)", ("x", 1))
        raise KeyError("boom")

    try:
        with pytest.raises(KeyError):
            db.transaction(work)
        assert db.read(lambda tx: tx.all("SELECT * FROM prices")) == []
        db.transaction(
            lambda tx: tx.execute("INSERT INTO prices (type, price_micros) VALUES (?, ?)", ("x", 5))
        )
        assert db.read(lambda tx: tx.all("SELECT type, price_micros FROM prices")) == [("x", 5)]
    finally:
        db.close()


def test_money_columns_hold_large_values(empty_db_url: str) -> None:
    migrate(empty_db_url)
    db = Database(empty_db_url)
    big = 10**15 + 123_456
    try:
        db.transaction(
            lambda tx: tx.execute(
                "INSERT INTO prices (type, price_micros) VALUES (?, ?)", ("b", big)
            )
        )
        assert db.read(lambda tx: tx.scalar("SELECT price_micros FROM prices")) == big
    finally:
        db.close()


def test_deadlock_is_retried_and_lock_timeout_is_unavailable(empty_db_url: str) -> None:
    migrate(empty_db_url)
    db = Database(empty_db_url)
    calls = {"n": 0}

    def deadlocks_once(tx):
        calls["n"] += 1
        tx.execute("INSERT INTO prices (type, price_micros) VALUES (?, ?)", (f"t{calls['n']}", 1))
        if calls["n"] == 1:
            raise pymysql.err.OperationalError(1213, "Deadlock found when trying to get lock")
        return "done"

    def times_out(tx):
        raise pymysql.err.OperationalError(1205, "Lock wait timeout exceeded")

    try:
        assert db.transaction(deadlocks_once) == "done"
        assert calls["n"] == 2
        # only the second attempt's write was committed
        assert db.read(lambda tx: tx.all("SELECT type FROM prices")) == [("t2",)]
        with pytest.raises(StoreUnavailable):
            db.transaction(times_out)
    finally:
        db.close()


@pytest.mark.parametrize(
    "error",
    [
        pymysql.err.OperationalError(1021, "Disk full (/var/tmp/#sql_1.MAI); waiting for someone"),
        pymysql.err.OperationalError(1114, "The table 'usage_events' is full"),
        pymysql.err.InternalError(3, "Error writing file './binlog.000002' (Errcode: 28)"),
        pymysql.err.OperationalError(1030, 'Got error 28 "No space left on device" from engine'),
        pymysql.err.OperationalError(1878, "Temporary file write failure (errno: 28)"),
    ],
    ids=["1021", "1114", "3", "1030", "1878"],
)
def test_mysql_disk_full_is_store_full(tmp_path, error: Exception) -> None:
    """MariaDB out of space is a 503 that says so (StoreFull), never a 500."""
    db = Database(f"sqlite:///{tmp_path / 'x.db'}")

    def fails(tx):
        raise error

    try:
        with pytest.raises(StoreFull, match="disk full"):
            db.transaction(fails)
        # A write error that is not about space stays a plain store error.
        with pytest.raises(Exception) as other:
            db.transaction(lambda tx: fails_with(pymysql.err.InternalError(3, "Errcode: 13")))
        assert not isinstance(other.value, StoreFull)
    finally:
        db.close()


def fails_with(error: Exception) -> None:
    raise error


def test_sqlite_full_is_store_full(tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'full.db'}"
    migrate(url)
    db = Database(url)
    try:
        db.connection().execute("PRAGMA max_page_count = 40")  # a database that cannot grow
        rows = [(f"type-{i:05d}-" + "x" * 200, i) for i in range(2000)]
        with pytest.raises(StoreFull):
            db.transaction(
                lambda tx: tx.executemany(
                    "INSERT INTO prices (type, price_micros) VALUES (?, ?)", rows
                )
            )
        assert db.read(lambda tx: tx.scalar("SELECT COUNT(*) FROM prices")) == 0
    finally:
        db.close()


def test_errors_opening_a_connection_are_store_errors(tmp_path) -> None:
    """A thread's first query opens its connection: a failure there is a StoreError (503, and
    retried by a booting worker when it is a lock), never a raw driver error (500, or a
    worker that fails to boot and takes gunicorn's master down with it)."""
    db = Database(f"sqlite:///{tmp_path / 'missing-dir' / 'c.db'}")
    with pytest.raises(StoreError, match="unable to open"):
        db.read(lambda tx: tx.scalar("SELECT 1"))
