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

from solverfleet.captchatypes import BUILTIN_ALIASES
from solverfleet.collector.store import schema, schema_billing
from solverfleet.collector.store.db import Database, StoreUnavailable, Tx


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    apply: Callable[[Tx], None]


def _create_tables(tx: Tx, tables: list[schema.Table]) -> None:
    """CREATE TABLE IF NOT EXISTS (and its indexes): re-runnable."""
    for table in tables:
        for statement in schema.render(table, tx.dialect):
            tx.execute(statement)


def _add_columns(tx: Tx, columns: dict[str, list[tuple[str, str]]]) -> None:
    """Each column added only if missing: re-runnable (MySQL commits each ALTER on its own)."""
    for table, specs in columns.items():
        have = tx.column_names(table)
        for name, spec in specs:
            if name not in have:
                tx.execute(
                    f"ALTER TABLE {table} ADD COLUMN {schema.column_sql(name, spec, tx.dialect)}"
                )


def _v1_initial(tx: Tx) -> None:
    _create_tables(tx, schema.V1_TABLES)
    tx.execute(tx.dialect.insert_new("config_state", ("id", "version"), "id"), (1, 1))


def _v2_report_indexes(tx: Tx) -> None:
    # MySQL has no CREATE/DROP INDEX IF [NOT] EXISTS and commits each one: look first, so a
    # run cut short is finished by the next one.
    for table, name, columns in schema.V2_INDEXES:
        if name not in tx.index_names(table):
            tx.execute(f"CREATE INDEX {name} ON {table} ({', '.join(columns)})")
    for table, name in schema.V2_DROPPED_INDEXES:
        if name in tx.index_names(table):
            tx.execute(tx.dialect.drop_index(table, name))


def _v3_notifications(tx: Tx) -> None:
    _create_tables(tx, schema.V3_TABLES)


def _v4_keys_tokens_access(tx: Tx) -> None:
    _create_tables(tx, schema.V4_TABLES)
    _add_columns(tx, schema.V4_COLUMNS)
    # Keys that exist already came from team configs: their secret is the file's.
    tx.execute(
        "UPDATE api_keys SET config_secret_hash = secret_hash WHERE config_secret_hash IS NULL"
    )


def _v5_agent_credentials(tx: Tx) -> None:
    _add_columns(tx, schema.V5_COLUMNS)
    # Leases granted before this version: their history is unknown, so count what is held now
    # as granted; everything spent from it is still to be charged (held drops at ingest).
    tx.execute(
        "UPDATE lease_balance SET granted_micros = held_micros"
        " WHERE granted_micros = 0 AND returned_micros = 0 AND charged_micros = 0"
    )


def _v6_idempotency_keys(tx: Tx) -> None:
    _create_tables(tx, schema_billing.V6_TABLES)


def _v7_key_terms(tx: Tx) -> None:
    _add_columns(tx, schema_billing.V7_COLUMNS)


def _v8_audit_log(tx: Tx) -> None:
    _create_tables(tx, schema_billing.V8_TABLES)


def _v9_account_prices(tx: Tx) -> None:
    # Existing prices stay global: every account falls back to them until a file gives it its
    # own.
    _create_tables(tx, schema_billing.V9_TABLES)
    # Built-in aliases are spellings now, never types of their own: a price or an allowed type
    # stored under one moves to its canonical type (agents turn the alias into it before any
    # lookup). Each statement is a no-op once done.
    changed = 0
    for alias, slug in BUILTIN_ALIASES.items():
        if tx.one("SELECT 1 FROM prices WHERE type = ?", (slug,)) is None:
            changed += tx.execute("UPDATE prices SET type = ? WHERE type = ?", (slug, alias))
        changed += tx.execute("DELETE FROM prices WHERE type = ?", (alias,))
        changed += tx.execute(
            "UPDATE api_keys SET allowed_types = REPLACE(allowed_types, ?, ?)"
            " WHERE allowed_types LIKE ?",
            (f'"{alias}"', f'"{slug}"', f'%"{alias}"%'),
        )
    if changed:
        tx.execute("UPDATE config_state SET version = version + 1 WHERE id = 1")


def _v10_lease_reclaim(tx: Tx) -> None:
    _create_tables(tx, schema_billing.V10_TABLES)
    _add_columns(tx, schema_billing.V10_COLUMNS)


def _v11_config_changes(tx: Tx) -> None:
    _create_tables(tx, schema_billing.V11_TABLES)
    _add_columns(tx, schema_billing.V11_COLUMNS)
    # Nothing before now is logged: an agent at an older version gets the full snapshot.
    tx.execute("UPDATE config_state SET log_floor = version WHERE id = 1")


def _v13_request_order(tx: Tx) -> None:
    _add_columns(tx, schema_billing.V13_COLUMNS)


def _v14_dashboard_sessions(tx: Tx) -> None:
    _create_tables(tx, schema_billing.V14_TABLES)


def _v15_login_failures(tx: Tx) -> None:
    _create_tables(tx, schema_billing.V15_TABLES)


def _v16_agent_addresses(tx: Tx) -> None:
    _add_columns(tx, schema_billing.V16_COLUMNS)


def _v17_pingbacks_soft_id(tx: Tx) -> None:
    _create_tables(tx, schema_billing.V17_TABLES)
    _add_columns(tx, schema_billing.V17_COLUMNS)


MIGRATIONS: list[Migration] = [
    Migration(1, "initial schema", _v1_initial),
    Migration(4, "key rotation, ledger actor, admin API tokens", _v4_keys_tokens_access),
    Migration(2, "solve log and report indexes", _v2_report_indexes),
    Migration(3, "low-balance notifications", _v3_notifications),
    Migration(5, "agent-bound service tokens, lease grant totals", _v5_agent_credentials),
    Migration(6, "Idempotency-Key records of the admin API", _v6_idempotency_keys),
    Migration(7, "key expiry, automatic refill, deleted keys", _v7_key_terms),
    Migration(8, "audit log of admin changes", _v8_audit_log),
    Migration(9, "per-account prices and type aliases", _v9_account_prices),
    Migration(10, "lease reclaim orders, settled leases", _v10_lease_reclaim),
    Migration(11, "config change log (sync deltas)", _v11_config_changes),
    Migration(13, "sync request order: per-process request numbers", _v13_request_order),
    Migration(14, "server-side dashboard sessions", _v14_dashboard_sessions),
    Migration(15, "failed dashboard logins shared by every worker", _v15_login_failures),
    Migration(16, "agents' node ids and addresses (res.php anywhere)", _v16_agent_addresses),
    Migration(17, "pingback addresses, soft_id in the usage log", _v17_pingbacks_soft_id),
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
