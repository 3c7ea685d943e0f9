"""Tables and columns of schema versions 6 and later: the billing lifecycle (Idempotency-Key
records, key expiry and refill, the audit log, per-account prices, lease reclaim orders).

Also the dashboard's own tables (sessions, failed logins: versions 14 and 15).
Versions 1-5 are in ``schema``; ``migrations`` applies them all, in order.
"""

from __future__ import annotations

from solverfleet.collector.store.schema import AUTOINC, ID, Table

# --- version 6: Idempotency-Key records of the admin API (collector/idempotency.py) ----------

V6_TABLES = [
    # One row per (actor, method, path, Idempotency-Key), found by the sha256 of those four
    # (scope_hash): the request's fingerprint, its state (running -> applied -> done), and the
    # first answer to replay, with one-time secrets withheld. Kept 24 h (created_ms), pruned.
    Table(
        "idempotency_keys",
        [
            ("scope_hash", "CHAR(64) ASCII NOT NULL"),
            ("actor", "VARCHAR(160) NOT NULL"),
            ("method", "VARCHAR(8) NOT NULL"),
            ("path", "VARCHAR(1024) NOT NULL"),
            ("idem_key", "VARCHAR(255) NOT NULL"),
            ("fingerprint", "CHAR(64) ASCII NOT NULL"),
            ("state", "VARCHAR(16) NOT NULL"),
            ("claim", "CHAR(32) ASCII NOT NULL"),
            ("claimed_ms", "BIGINT NOT NULL"),
            ("created_ms", "BIGINT NOT NULL"),
            ("response_status", "INTEGER"),
            ("response_body", "MEDIUMTEXT"),
        ],
        ("scope_hash",),
        indexes={"idempotency_keys_created": ("created_ms",)},
    ),
]


# --- version 7: key expiry, automatic refill, deleted keys ------------------------------------

V7_COLUMNS: dict[str, list[tuple[str, str]]] = {
    "api_keys": [
        # Agents refuse the key from this moment on, by their own clock (NULL: never).
        ("expires_at_ms", "BIGINT"),
        # Refill: top the balance up to the amount at 00:00 UTC each period (collector/refill.py).
        ("refill_amount_micros", "BIGINT"),
        ("refill_interval", "VARCHAR(8) ASCII"),  # daily | monthly
        ("refill_day", "SMALLINT"),  # monthly: 1..31, clamped to the month's last day
        # The period (its first day, YYYY-MM-DD) last refilled or current when refill was set:
        # checked and written with the key row locked, so a period is refilled once.
        ("refilled_period", "CHAR(10) ASCII"),
        # A deleted key stays as a tombstone: its id (usage, ledger) and nothing secret.
        ("deleted_ms", "BIGINT"),
    ],
}


# --- version 8: the audit log (own table only) ------------------------------------------------

V8_TABLES = [
    # One row per admin change, written in the change's own transaction (collector/audit.py).
    # before/after hold the changed fields as JSON, redacted: never a secret, hash or token.
    Table(
        "audit_log",
        [
            ("id", AUTOINC),
            ("ts_ms", "BIGINT NOT NULL"),
            ("actor", "VARCHAR(160) NOT NULL"),  # "bootstrap" or "token:<id>", never a token
            ("action", "VARCHAR(64) ASCII NOT NULL"),  # e.g. key.topup, config.apply
            ("target_type", "VARCHAR(32) ASCII NOT NULL"),  # key, user, token, price, account
            ("target_id", ID),
            ("account", ID),
            ("before_json", "TEXT"),
            ("after_json", "TEXT"),
        ],
        ("id",),
        # Pages are newest first by id; each filter walks its own index in id order.
        indexes={
            "audit_log_ts": ("ts_ms", "id"),
            "audit_log_actor": ("actor", "id"),
            "audit_log_target": ("target_type", "target_id", "id"),
            "audit_log_action": ("action", "id"),
        },
    ),
]


# --- version 9: per-account prices and type aliases -------------------------------------------

V9_TABLES = [
    # An account's own prices (team config with prices_scope "account", the default); type "*"
    # is the account's default price. A key's price: its account's price for the type, else the
    # account's "*", else the global ``prices`` row for the type, else the global "*".
    # previous/changed as in ``prices``: an event at the old price just after a change is honest.
    Table(
        "account_prices",
        [
            ("account", f"{ID} NOT NULL"),
            ("type", "VARCHAR(64) NOT NULL"),
            ("price_micros", "BIGINT NOT NULL"),
            ("previous_price_micros", "BIGINT"),
            ("changed_ms", "BIGINT NOT NULL DEFAULT 0"),
        ],
        ("account", "type"),
    ),
    # An account's own spellings of captcha types (team config ``type_aliases``), beside the
    # built-in ones (``captchatypes.BUILTIN_ALIASES``).
    Table(
        "type_aliases",
        [
            ("account", f"{ID} NOT NULL"),
            ("alias", "VARCHAR(64) NOT NULL"),
            ("type", "VARCHAR(64) NOT NULL"),
        ],
        ("account", "alias"),
    ),
]


# --- version 10: reclaiming leases (no false refusals, limits re-cut fleet-wide) --------------

V10_TABLES = [
    # One agent's pending order to hand back what it holds of one lease (kind: balance | cpm |
    # daily; ident: key or user id; period: "" for balance, the CPM window or the UTC day).
    # Written by another agent's starved sync or a limit change, read and deleted by the
    # agent's next sync.
    Table(
        "lease_reclaim",
        [
            ("agent_id", f"{ID} NOT NULL"),
            ("kind", "VARCHAR(8) ASCII NOT NULL"),
            ("ident", f"{ID} NOT NULL"),
            ("period", "VARCHAR(16) ASCII NOT NULL"),
        ],
        ("agent_id", "kind", "ident", "period"),
    ),
]

# ``settled``: the agent answered a reclaim (gave back all it could): what it still holds is
# spent or in flight, so asking it again cannot help a starved agent. A new grant clears it.
V10_COLUMNS: dict[str, list[tuple[str, str]]] = {
    "lease_balance": [("settled", "SMALLINT NOT NULL DEFAULT 0")],
    "lease_cpm": [("settled", "SMALLINT NOT NULL DEFAULT 0")],
    "lease_daily": [("settled", "SMALLINT NOT NULL DEFAULT 0")],
}


# --- version 11: config deltas (docs/ARCHITECTURE.md "Config sync") ----------------------------

V11_TABLES = [
    # What each config version changed, written in the change's transaction (configdelta.py):
    # kind key | user | pricing; ident: the key or user id, or the account of a price/alias
    # ("*": global prices). A sync from an agent at version v ships what changed after v.
    Table(
        "config_changes",
        [
            ("version", "BIGINT NOT NULL"),
            ("kind", "VARCHAR(8) ASCII NOT NULL"),
            ("ident", f"{ID} NOT NULL"),
        ],
        ("version", "kind", "ident"),
    ),
]

# ``log_floor``: the log holds every change after this version; an agent older than it (the
# log was pruned, or one change was too big to log) gets the full snapshot.
V11_COLUMNS: dict[str, list[tuple[str, str]]] = {
    "config_state": [("log_floor", "BIGINT NOT NULL DEFAULT 0")],
}

# ``sync_seq``: the last request number of the agent's current process that changed leases;
# a request at or below it is a duplicate or a late copy and changes nothing (requestorder.py).
# ``sync_answer``: what that request was granted (JSON), the answer to an exact repeat of it.
V13_COLUMNS: dict[str, list[tuple[str, str]]] = {
    "agents": [("sync_seq", "BIGINT"), ("sync_answer", "MEDIUMTEXT")]
}


# --- version 14: server-side dashboard sessions (collector/dashboard/sessions.py) -------------

V14_TABLES = [
    # One row per logged-in browser, found by the sha256 of its cookie (a random 256-bit id;
    # the id itself is never stored). ``token_id``: the stored admin token that logged in
    # (NULL: the settings' admin_token, then ``admin_fp`` is an HMAC of it keyed by the session
    # id, so changing the setting ends those sessions). Logout deletes the row.
    Table(
        "dashboard_sessions",
        [
            ("id_hash", "CHAR(64) ASCII NOT NULL"),
            ("token_id", "BIGINT"),
            ("admin_fp", "CHAR(64) ASCII"),
            ("csrf", "CHAR(43) ASCII NOT NULL"),
            ("created_ms", "BIGINT NOT NULL"),
            ("last_seen_ms", "BIGINT NOT NULL"),
            ("expires_ms", "BIGINT NOT NULL"),
        ],
        ("id_hash",),
        indexes={
            "dashboard_sessions_token": ("token_id",),
            "dashboard_sessions_expires": ("expires_ms",),
        },
    ),
]


# --- version 15: failed dashboard logins, shared by every worker (dashboard/loginlimit.py) ----

V15_TABLES = [
    # One row per refused login: the client address and when. Rows older than the limit's
    # window are deleted on the next failure, so an address holds a handful at most.
    Table(
        "dashboard_login_failures",
        [
            ("id", AUTOINC),
            ("address", "VARCHAR(128) NOT NULL"),
            ("failed_ms", "BIGINT NOT NULL"),
        ],
        ("id",),
        indexes={
            "dashboard_login_failures_address": ("address", "failed_ms"),
            "dashboard_login_failures_time": ("failed_ms",),
        },
    ),
]


# --- version 16: agents' addresses for res.php anywhere (docs/FLEET-PROTOCOL.md) ----------------

V16_COLUMNS: dict[str, list[tuple[str, str]]] = {
    # The task-id prefix and the https address other agents fetch this agent's tasks from.
    "agents": [("node_id", "INTEGER"), ("advertise_url", "VARCHAR(512)")]
}


# --- version 17: pingback addresses, soft_id in the usage log (docs/PROTOCOLS.md) -------------

V17_TABLES = [
    # Pingback URLs an owner registered (res.php?action=add_pingback): only these are called.
    # ``owner``: "a:<account>", or "u:<user id>" for a key without an account
    # (collector/pingbacks.py). ``url_hash``: sha256 hex of the URL, the unique part of the
    # key (a URL of 2048 characters does not fit an index on MySQL).
    Table(
        "pingbacks",
        [
            ("owner", "VARCHAR(130) NOT NULL"),
            ("url_hash", "CHAR(64) ASCII NOT NULL"),
            ("url", "VARCHAR(2048) NOT NULL"),
            ("created_ms", "BIGINT NOT NULL"),
        ],
        ("owner", "url_hash"),
    ),
]

# ``soft_id``: the software id a client sent (in.php ``soft_id``, createTask ``softId``).
V17_COLUMNS: dict[str, list[tuple[str, str]]] = {"usage_events": [("soft_id", "BIGINT")]}
