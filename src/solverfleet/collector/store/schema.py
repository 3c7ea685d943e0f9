"""Table definitions, written once and rendered for SQLite or MySQL/MariaDB.

Money columns are BIGINT micros. Ids are case-sensitive on both databases (``utf8mb4_bin``),
so "Alice" and "alice" are two users everywhere. Table and column names avoid MySQL reserved
words (``keys``, ``usage``, ``window``, ``release``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from solverfleet.collector.store.db import Dialect

AUTOINC = "AUTOINC"
ASCII = " ASCII"  # suffix on a column type: single-byte charset on MySQL (smaller indexes)

ID = "VARCHAR(128)"


@dataclass(frozen=True)
class Table:
    name: str
    columns: list[tuple[str, str]]
    primary: tuple[str, ...]
    unique: dict[str, tuple[str, ...]] = field(default_factory=dict)
    indexes: dict[str, tuple[str, ...]] = field(default_factory=dict)


def render(table: Table, dialect: Dialect) -> list[str]:
    """CREATE statements for ``table``; idempotent (IF NOT EXISTS) on both databases."""
    mysql = dialect.name == "mysql"
    cols = []
    for name, spec in table.columns:
        if spec == AUTOINC:
            cols.append(
                f"{name} BIGINT NOT NULL AUTO_INCREMENT" if mysql else f"{name} INTEGER NOT NULL"
            )
            continue
        ascii_ = ASCII in spec
        spec = spec.replace(ASCII, "")
        if ascii_ and mysql:
            base, _, rest = spec.partition(" ")
            spec = f"{base} CHARACTER SET ascii COLLATE ascii_bin {rest}".rstrip()
        cols.append(f"{name} {spec}")
    cols.append(f"PRIMARY KEY ({', '.join(table.primary)})")
    if not mysql:
        body = ",\n  ".join(cols)
        out = [f"CREATE TABLE IF NOT EXISTS {table.name} (\n  {body}\n)"]
        for name, on in table.unique.items():
            out.append(
                f"CREATE UNIQUE INDEX IF NOT EXISTS {name} ON {table.name} ({', '.join(on)})"
            )
        for name, on in table.indexes.items():
            out.append(f"CREATE INDEX IF NOT EXISTS {name} ON {table.name} ({', '.join(on)})")
        return out
    cols += [f"UNIQUE KEY {name} ({', '.join(on)})" for name, on in table.unique.items()]
    cols += [f"KEY {name} ({', '.join(on)})" for name, on in table.indexes.items()]
    body = ",\n  ".join(cols)
    return [
        f"CREATE TABLE IF NOT EXISTS {table.name} (\n  {body}\n)"
        " ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin"
    ]


SCHEMA_MIGRATIONS = Table(
    "schema_migrations",
    [("version", "INTEGER NOT NULL"), ("name", "VARCHAR(255) NOT NULL"), ("applied_ms", "BIGINT")],
    ("version",),
)

V1_TABLES = [
    # One row: bumped in the same transaction as every change agents must see.
    Table("config_state", [("id", "SMALLINT NOT NULL"), ("version", "BIGINT NOT NULL")], ("id",)),
    Table(
        "accounts",
        [
            ("id", f"{ID} NOT NULL"),
            ("low_balance_enabled", "SMALLINT NOT NULL DEFAULT 0"),
            ("low_balance_threshold_micros", "BIGINT"),
            ("updated_ms", "BIGINT NOT NULL"),
        ],
        ("id",),
    ),
    Table(
        "users",
        [
            ("id", f"{ID} NOT NULL"),
            ("account", f"{ID} NOT NULL"),
            ("email", "VARCHAR(254)"),
            ("role", "VARCHAR(16) NOT NULL"),
            ("daily_limit", "BIGINT"),
            ("active", "SMALLINT NOT NULL"),
            ("updated_ms", "BIGINT NOT NULL"),
        ],
        ("id",),
        indexes={"users_account": ("account",)},
    ),
    Table(
        "api_keys",
        [
            ("id", f"{ID} NOT NULL"),
            ("user_id", f"{ID} NOT NULL"),
            ("account", f"{ID} NOT NULL"),
            ("secret_hash", "CHAR(64) ASCII NOT NULL"),
            ("project", "VARCHAR(128)"),
            ("environment", "VARCHAR(128)"),
            ("balance_micros", "BIGINT NOT NULL"),
            ("allowed_types", "TEXT"),  # JSON list or NULL (any type)
            ("cpm", "BIGINT"),
            ("ip_allowlist", "TEXT"),  # JSON list of CIDRs or NULL (any address)
            ("active", "SMALLINT NOT NULL"),
            ("updated_ms", "BIGINT NOT NULL"),
        ],
        ("id",),
        unique={"api_keys_secret": ("secret_hash",)},
        indexes={"api_keys_user": ("user_id",)},
    ),
    Table(
        "prices",
        [("type", "VARCHAR(64) NOT NULL"), ("price_micros", "BIGINT NOT NULL")],
        ("type",),
    ),
    # The ledger: every balance change that is not usage (opening balances, top-ups).
    Table(
        "transactions",
        [
            ("id", AUTOINC),
            ("key_id", f"{ID} NOT NULL"),
            ("amount_micros", "BIGINT NOT NULL"),
            ("balance_after_micros", "BIGINT NOT NULL"),
            ("reason", "VARCHAR(255) NOT NULL"),
            ("created_ms", "BIGINT NOT NULL"),
        ],
        ("id",),
        indexes={"transactions_key": ("key_id", "id")},
    ),
    Table(
        "agents",
        [
            ("agent_id", f"{ID} NOT NULL"),
            ("instance", "VARCHAR(64)"),
            ("release_ver", "VARCHAR(64)"),
            ("last_seen_ms", "BIGINT NOT NULL"),
            ("in_flight", "BIGINT"),
            ("spool_backlog", "BIGINT"),
            ("holds", "SMALLINT NOT NULL DEFAULT 0"),  # may hold leases: a reclaim candidate
        ],
        ("agent_id",),
    ),
    Table(
        "lease_balance",
        [
            ("key_id", f"{ID} NOT NULL"),
            ("agent_id", f"{ID} NOT NULL"),
            ("held_micros", "BIGINT NOT NULL"),
        ],
        ("key_id", "agent_id"),
        indexes={"lease_balance_agent": ("agent_id",)},
    ),
    Table(
        "lease_cpm",
        [
            ("key_id", f"{ID} NOT NULL"),
            ("win", "BIGINT NOT NULL"),
            ("agent_id", f"{ID} NOT NULL"),
            ("granted", "BIGINT NOT NULL"),
        ],
        ("key_id", "win", "agent_id"),
    ),
    # Daily tokens per user, day and agent; ``used`` counts ingested successes.
    Table(
        "lease_daily",
        [
            ("user_id", f"{ID} NOT NULL"),
            ("day_utc", "CHAR(10) ASCII NOT NULL"),
            ("agent_id", f"{ID} NOT NULL"),
            ("granted", "BIGINT NOT NULL"),
            ("used", "BIGINT NOT NULL"),
        ],
        ("user_id", "day_utc", "agent_id"),
        indexes={"lease_daily_agent": ("agent_id",)},
    ),
    Table(
        "usage_events",
        [
            ("id", AUTOINC),
            ("event_id", "CHAR(32) ASCII NOT NULL"),
            # Random per ingest transaction: tells which rows *this* transaction inserted.
            ("ingest_token", "BIGINT NOT NULL"),
            ("ts_ms", "BIGINT NOT NULL"),
            ("request_id", "VARCHAR(128)"),
            ("agent_id", f"{ID} NOT NULL"),
            ("key_id", f"{ID} NOT NULL"),
            ("user_id", f"{ID}"),
            ("user_email", "VARCHAR(254)"),
            ("account", f"{ID}"),
            ("project", "VARCHAR(128)"),
            ("environment", "VARCHAR(128)"),
            ("captcha_type", "VARCHAR(64)"),
            ("url", "VARCHAR(2048)"),
            ("status", "VARCHAR(16) NOT NULL"),
            ("error", "VARCHAR(128)"),
            ("message", "VARCHAR(1024)"),
            ("source_ip", "VARCHAR(64)"),
            ("duration_ms", "BIGINT"),
            ("cost_micros", "BIGINT NOT NULL"),
            ("received_ms", "BIGINT NOT NULL"),
        ],
        ("id",),
        unique={"usage_events_event": ("event_id",)},
        indexes={"usage_events_key": ("key_id", "id")},
    ),
]
