"""Table definitions, written once and rendered for SQLite or MySQL/MariaDB.

Money columns are BIGINT micros. Ids are case-sensitive on both databases (``utf8mb4_bin``),
so "Alice" and "alice" are two users everywhere. Table and column names avoid MySQL reserved
words (``keys``, ``usage``, ``window``, ``release``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from solverfleet.collector.store.dialect import Dialect

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

# --- version 4: keys, tokens, access (rotation grace, ledger actor, hashed admin API tokens) ----

V4_TABLES = [
    # Bearer tokens for the admin API (admin, user) and the fleet protocol (service). Only the
    # sha256 of a token is stored; the token itself is shown once, when it is created.
    Table(
        "api_tokens",
        [
            ("id", AUTOINC),
            ("role", "VARCHAR(16) NOT NULL"),
            ("user_id", ID),  # set for role "user" only
            ("label", "VARCHAR(128)"),
            ("token_hash", "CHAR(64) ASCII NOT NULL"),
            ("created_ms", "BIGINT NOT NULL"),
            ("created_by", "VARCHAR(160)"),
            ("last_used_ms", "BIGINT"),
            ("revoked_ms", "BIGINT"),
        ],
        ("id",),
        unique={"api_tokens_hash": ("token_hash",)},
        indexes={"api_tokens_user": ("user_id",)},
    ),
]

V4_COLUMNS: dict[str, list[tuple[str, str]]] = {
    "api_keys": [
        # The secret a rotation replaced, accepted by agents until previous_until_ms.
        ("previous_secret_hash", "CHAR(64) ASCII"),
        ("previous_until_ms", "BIGINT"),
        # The hash of the secret the team config last declared for this key: apply changes
        # the secret only when the file's secret changes, so it never undoes an API rotation.
        ("config_secret_hash", "CHAR(64) ASCII"),
    ],
    # Who made a ledger transaction: "bootstrap" (the settings' admin token) or "token:<id>".
    "transactions": [("actor", "VARCHAR(160)")],
}


# --- version 5: per-host credentials (agent-bound service tokens, grant accounting) ----------

V5_COLUMNS: dict[str, list[tuple[str, str]]] = {
    # A service token bound to one agent id may speak for that agent only (NULL: any agent).
    "api_tokens": [("agent_id", ID)],
    # Running totals per (key, agent), written in the same transactions as held_micros:
    # what sync granted, what the agent gave back, what ingest charged. Ingest refuses a
    # bound agent's usage beyond granted - returned (voids and reclaims are not returns:
    # events spent from a voided lease may still be in the agent's spool).
    "lease_balance": [
        ("granted_micros", "BIGINT NOT NULL DEFAULT 0"),
        ("returned_micros", "BIGINT NOT NULL DEFAULT 0"),
        ("charged_micros", "BIGINT NOT NULL DEFAULT 0"),
    ],
    # The price before the last change and when it changed: a bound agent's event charged at
    # the old price just after a change is honest (agents learn prices on their next sync).
    "prices": [
        ("previous_price_micros", "BIGINT"),
        ("changed_ms", "BIGINT NOT NULL DEFAULT 0"),
    ],
}


def column_sql(name: str, spec: str, dialect: Dialect) -> str:
    """One column definition as ``render`` writes it (for ALTER TABLE ... ADD COLUMN)."""
    if ASCII in spec:
        spec = spec.replace(ASCII, "")
        if dialect.name == "mysql":
            base, _, rest = spec.partition(" ")
            spec = f"{base} CHARACTER SET ascii COLLATE ascii_bin {rest}".rstrip()
    return f"{name} {spec}"


# --- version 2: solve log and report indexes (usage_events only) -----------------------------

# (table, index name, columns). The log is ordered by (ts_ms, id), which the report index
# leads with; that index also carries every column the log filters on and the reports group
# or sum, so a report over any time range, and the ids of any log page, are read from the
# index alone. A user's or a key's log walks its own index, in time order. Measured at a million
# rows: bench/bench_reports.py, docs/BENCHMARKS.md.
USAGE_REPORT_INDEX = "usage_events_report"
USAGE_USER_INDEX = "usage_events_user_ts"
USAGE_KEY_INDEX = "usage_events_key_ts"
V2_INDEXES: list[tuple[str, str, tuple[str, ...]]] = [
    (
        "usage_events",
        USAGE_REPORT_INDEX,
        (
            "ts_ms",
            "id",
            "status",
            "user_id",
            "key_id",
            "project",
            "environment",
            "captcha_type",
            "duration_ms",
            "cost_micros",
        ),
    ),
    ("usage_events", USAGE_USER_INDEX, ("user_id", "ts_ms", "id")),
    ("usage_events", USAGE_KEY_INDEX, ("key_id", "ts_ms", "id")),
]
# Superseded by USAGE_KEY_INDEX (same key prefix, time order): dropped, so that ingest keeps one
# per-key index to update, not two.
V2_DROPPED_INDEXES: list[tuple[str, str]] = [("usage_events", "usage_events_key")]

# --- version 3: low-balance notifications (own tables only) -----------------------------------

V3_TABLES = [
    # Webhooks per account, from the team config. The secret signs deliveries (HMAC-SHA256),
    # so it is stored as given, not hashed; no API returns it and nothing logs it.
    Table(
        "notification_targets",
        [
            ("id", AUTOINC),
            ("account", f"{ID} NOT NULL"),
            ("url", "VARCHAR(2048) NOT NULL"),
            ("secret", "VARCHAR(512) NOT NULL"),
            ("created_ms", "BIGINT NOT NULL"),
        ],
        ("id",),
        indexes={"notification_targets_account": ("account",)},
    ),
    # One row per account: the lock that serializes firing, and the 5-minute window.
    Table(
        "notification_windows",
        [("account", f"{ID} NOT NULL"), ("last_fired_ms", "BIGINT")],
        ("account",),
    ),
    # Crossings seen while the account's window was closed; fired when it opens if still true.
    Table(
        "notification_pending",
        [
            ("account", f"{ID} NOT NULL"),
            ("key_id", f"{ID} NOT NULL"),
            ("kind", "VARCHAR(16) ASCII NOT NULL"),
            ("detected_ms", "BIGINT NOT NULL"),
        ],
        ("account", "key_id"),
    ),
    Table(
        "notifications",
        [
            ("id", AUTOINC),
            ("account", f"{ID} NOT NULL"),
            ("key_id", f"{ID} NOT NULL"),
            ("kind", "VARCHAR(16) ASCII NOT NULL"),  # zero | threshold
            ("balance_micros", "BIGINT NOT NULL"),  # at firing
            ("threshold_micros", "BIGINT"),
            ("created_ms", "BIGINT NOT NULL"),
            # pending | delivered | failed | no_targets: summary of its deliveries
            ("status", "VARCHAR(16) ASCII NOT NULL"),
            ("attempts", "BIGINT NOT NULL"),
            ("last_error", "VARCHAR(255)"),
        ],
        ("id",),
        indexes={
            "notifications_created": ("created_ms", "id"),
            "notifications_account": ("account", "created_ms", "id"),
        },
    ),
    # One per notification and target. A sender claims a row by moving next_attempt_ms past
    # its send timeout under a fresh claim_token, in one conditional UPDATE: two collectors on
    # one database never send the same attempt twice.
    Table(
        "notification_deliveries",
        [
            ("id", AUTOINC),
            ("notification_id", "BIGINT NOT NULL"),
            ("target_id", "BIGINT NOT NULL"),
            ("status", "VARCHAR(16) ASCII NOT NULL"),  # pending | delivered | failed | cancelled
            ("attempts", "BIGINT NOT NULL"),
            ("next_attempt_ms", "BIGINT NOT NULL"),
            ("claim_token", "BIGINT"),
            ("last_error", "VARCHAR(255)"),
            ("delivered_ms", "BIGINT"),
        ],
        ("id",),
        indexes={
            "notification_deliveries_due": ("status", "next_attempt_ms"),
            "notification_deliveries_notification": ("notification_id",),
        },
    ),
]
