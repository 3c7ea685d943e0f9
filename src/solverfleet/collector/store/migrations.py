"""Versioned schema migrations, recorded in ``schema_migrations``.

Applied at collector start and by :func:`migrate`. Two collectors starting at once are safe:
SQLite serializes them with ``BEGIN IMMEDIATE`` (its DDL is transactional); MySQL takes a
named lock (its DDL commits implicitly, so each step is written to be re-runnable).
To change the schema, append a ``Migration`` — never edit an applied one.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass

from solverfleet.collector.store import schema
from solverfleet.collector.store.db import Database, StoreUnavailable, Tx


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    apply: Callable[[Tx], None]


def _v1_initial(tx: Tx) -> None:
    for table in schema.V1_TABLES:
        for statement in schema.render(table, tx.dialect):
            tx.execute(statement)
    tx.execute(tx.dialect.insert_new("config_state", ("id", "version"), "id"), (1, 1))


MIGRATIONS: list[Migration] = [
    Migration(1, "initial schema", _v1_initial),
]


def migrate(db: Database | str) -> list[int]:
    """Bring the schema up to date; return the versions applied now (empty if none)."""
    database = Database(db) if isinstance(db, str) else db
    try:
        if database.is_mysql:
            return _migrate_mysql(database)
        return _migrate_sqlite(database)
    finally:
        if isinstance(db, str):
            database.close()


def current_version(db: Database) -> int:
    def read(tx: Tx) -> int:
        return int(tx.scalar("SELECT MAX(version) FROM schema_migrations", default=0))

    return db.read(read)


def _record(tx: Tx, migration: Migration) -> None:
    tx.execute(
        "INSERT INTO schema_migrations (version, name, applied_ms) VALUES (?, ?, ?)",
        (migration.version, migration.name, int(time.time() * 1000)),
    )


def _applied(tx: Tx) -> set[int]:
    return {row[0] for row in tx.all("SELECT version FROM schema_migrations")}


def _apply_pending(tx: Tx) -> list[int]:
    for statement in schema.render(schema.SCHEMA_MIGRATIONS, tx.dialect):
        tx.execute(statement)
    done = _applied(tx)
    applied = []
    for migration in MIGRATIONS:
        if migration.version not in done:
            migration.apply(tx)
            _record(tx, migration)
            applied.append(migration.version)
    return applied


def _migrate_sqlite(db: Database) -> list[int]:
    return db.transaction(_apply_pending)


def _migrate_mysql(db: Database) -> list[int]:
    conn = db.connection()
    tx = Tx(conn, db.dialect)
    # GET_LOCK is server-wide, so the name carries the database; names are at most 64 chars.
    lock = "solverfleet.migrate." + hashlib.sha1(db.url.database.encode()).hexdigest()[:20]
    if tx.scalar("SELECT GET_LOCK(?, 60)", (lock,)) != 1:
        raise StoreUnavailable("timed out waiting for another process's schema migration")
    try:
        return _apply_pending(tx)  # autocommit, not a transaction: MySQL DDL commits anyway
    finally:
        tx.scalar("SELECT RELEASE_LOCK(?)", (lock,))
