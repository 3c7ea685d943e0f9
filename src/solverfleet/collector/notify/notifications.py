"""Low-balance notifications in the store: detection where ingest charges, the per-account
5-minute window, deferred crossings, webhook targets from the team config, and the list
operators read (admin API, CLI, dashboard).

Detection runs inside the ingest transaction (``on_charged``), so a notification exists if
and only if the charge that caused it committed. Every account has one row in
``notification_windows``; whoever fires for the account locks it first, so two collectors on
one database never fire twice in a window. A crossing seen while the window is closed is kept
in ``notification_pending`` and fires when the window opens, if it still holds then (the
sender's loop calls ``flush_due`` every ``notify_poll_interval``; a new crossing in an open
window competes with them). So the 5-minute rule holds for zero alerts as well: they are
deferred, never dropped, and never jump the window.

Lock order (see leases.py): api_keys → lease rows → notification_windows (sorted by account)
→ the notification tables. ``flush_due`` locks only the window and reads balances without
locking keys, so it cannot deadlock with ingest.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

from solverfleet.collector.notify import rules
from solverfleet.collector.reporting import timerange
from solverfleet.collector.store import Database, Tx, chunks, marks
from solverfleet.money import format_micros

MAX_LIMIT = 1_000


def _level(enabled: Any, threshold: Any) -> int | None:
    """The account's threshold in micros, or None when threshold alerts are off."""
    return int(threshold) if enabled and threshold is not None else None


# --- detection --------------------------------------------------------------------------------


def on_charged(tx: Tx, charged: dict[str, int], *, now_ms: int) -> list[int]:
    """Ingest's hook, inside its transaction after the charge: ``charged`` maps key id to the
    micros this transaction took from it. Returns the ids of notifications fired now."""
    found: dict[str, dict[str, str]] = {}
    for chunk in chunks(sorted(k for k, cost in charged.items() if cost > 0)):
        rows = tx.all(
            "SELECT k.id, k.account, k.balance_micros, a.low_balance_enabled,"
            " a.low_balance_threshold_micros FROM api_keys k"
            f" LEFT JOIN accounts a ON a.id = k.account WHERE k.id IN ({marks(len(chunk))})"
            " AND k.deleted_ms IS NULL",  # a deleted key's trailing usage alerts no one
            chunk,
        )
        for key_id, account, balance, enabled, threshold in rows:
            after = int(balance)
            kind = rules.crossing(after + charged[key_id], after, _level(enabled, threshold))
            if kind is not None:
                found.setdefault(account, {})[key_id] = kind
    fired = []
    for account in sorted(found):
        notification = fire_or_defer(tx, account, found[account], now_ms=now_ms)
        if notification is not None:
            fired.append(notification)
    return fired


def fire_or_defer(tx: Tx, account: str, new: dict[str, str], *, now_ms: int) -> int | None:
    """Fire the account's gravest due crossing if its window is open, else keep ``new``
    crossings (key id → kind) for later. Returns the id of the notification fired, if any."""
    tx.execute(
        tx.dialect.insert_new("notification_windows", ("account", "last_fired_ms"), "account"),
        (account, None),
    )
    row = tx.one(
        "SELECT last_fired_ms FROM notification_windows WHERE account = ?" + tx.dialect.for_update,
        (account,),
    )
    last = None if row is None or row[0] is None else int(row[0])
    pending = {
        key_id: (kind, int(detected))
        for key_id, kind, detected in tx.all(
            "SELECT key_id, kind, detected_ms FROM notification_pending WHERE account = ?",
            (account,),
        )
    }
    merged = dict(pending)
    for key_id, kind in new.items():
        old = merged.get(key_id)
        merged[key_id] = (kind, now_ms) if old is None else (rules.graver(kind, old[0]), old[1])
    if not rules.window_open(last, now_ms):
        _keep_pending(tx, account, merged, pending)
        return None

    enabled, threshold = tx.one(
        "SELECT low_balance_enabled, low_balance_threshold_micros FROM accounts WHERE id = ?",
        (account,),
    ) or (0, None)
    level = _level(enabled, threshold)
    balances = _balances(tx, sorted(merged))
    due = {}
    for key_id, (kind, detected) in merged.items():
        now_kind = None
        if key_id in balances:
            now_kind = rules.still_due(kind, balances[key_id], level)
        if now_kind is not None:
            due[key_id] = (now_kind, detected)
    fired = None
    if due:
        kind, _, key_id = rules.first_to_fire([(k, d, kid) for kid, (k, d) in due.items()])
        fired = _fire(tx, account, key_id, kind, balances[key_id], level, now_ms)
        del due[key_id]
        tx.execute(
            "UPDATE notification_windows SET last_fired_ms = ? WHERE account = ?",
            (now_ms, account),
        )
    # What did not fire and still holds waits for the next window; the rest is forgotten.
    _keep_pending(tx, account, due, pending, forget=set(pending) - set(due))
    return fired


def _balances(tx: Tx, key_ids: list[str]) -> dict[str, int]:
    return {k: int(v) for k, v in tx.by_id("api_keys", "balance_micros", key_ids).items()}


def _keep_pending(
    tx: Tx,
    account: str,
    want: dict[str, tuple[str, int]],
    have: dict[str, tuple[str, int]],
    forget: Iterable[str] = (),
) -> None:
    for key_id in sorted(forget):
        tx.execute(
            "DELETE FROM notification_pending WHERE account = ? AND key_id = ?", (account, key_id)
        )
    for key_id, (kind, detected) in sorted(want.items()):
        if have.get(key_id) == (kind, detected):
            continue
        sql = tx.dialect.upsert(
            "notification_pending",
            ("account", "key_id", "kind", "detected_ms"),
            ("account", "key_id"),
            {"kind": tx.dialect.new("kind"), "detected_ms": tx.dialect.new("detected_ms")},
        )
        tx.execute(sql, (account, key_id, kind, detected))


def _fire(
    tx: Tx,
    account: str,
    key_id: str,
    kind: str,
    balance: int,
    level: int | None,
    now_ms: int,
) -> int:
    targets = [
        r[0]
        for r in tx.all(
            "SELECT id FROM notification_targets WHERE account = ? ORDER BY id", (account,)
        )
    ]
    notification = tx.insert(
        "INSERT INTO notifications (account, key_id, kind, balance_micros, threshold_micros,"
        " created_ms, status, attempts, last_error) VALUES (?, ?, ?, ?, ?, ?, ?, 0, NULL)",
        (account, key_id, kind, balance, level, now_ms, "pending" if targets else "no_targets"),
    )
    for target in targets:
        tx.execute(
            "INSERT INTO notification_deliveries (notification_id, target_id, status, attempts,"
            " next_attempt_ms) VALUES (?, ?, 'pending', 0, ?)",
            (notification, target, now_ms),
        )
    return notification


def flush_due(db: Database, *, now_ms: int) -> list[int]:
    """Fire deferred crossings of every account whose window has opened; ids fired."""
    accounts = db.read(
        lambda tx: [
            r[0]
            for r in tx.all(
                "SELECT DISTINCT p.account FROM notification_pending p"
                " LEFT JOIN notification_windows w ON w.account = p.account"
                " WHERE w.last_fired_ms IS NULL OR w.last_fired_ms <= ? ORDER BY p.account",
                (now_ms - rules.WINDOW_MS,),
            )
        ]
    )
    fired = []
    for account in accounts:
        notification = db.transaction(
            lambda tx, account=account: fire_or_defer(tx, account, {}, now_ms=now_ms)
        )
        if notification is not None:
            fired.append(notification)
    return fired


# --- targets (team config) --------------------------------------------------------------------


def apply_targets(tx: Tx, account: str, webhooks: list[dict], *, now_ms: int) -> bool:
    """Make the account's webhooks exactly ``webhooks`` (``[{"url", "secret"}]``); True if
    anything changed. A removed target's unsent deliveries are cancelled by the sender."""
    rows = tx.all(
        "SELECT id, url, secret FROM notification_targets WHERE account = ? ORDER BY id"
        + tx.dialect.for_update,
        (account,),
    )
    have = {url: (ident, secret) for ident, url, secret in rows}
    want = {w["url"]: w["secret"] for w in webhooks}
    changed = False
    for url, (ident, secret) in have.items():
        if url not in want:
            tx.execute("DELETE FROM notification_targets WHERE id = ?", (ident,))
            changed = True
        elif want[url] != secret:
            tx.execute(
                "UPDATE notification_targets SET secret = ? WHERE id = ?", (want[url], ident)
            )
            changed = True
    for url, secret in want.items():
        if url not in have:
            tx.execute(
                "INSERT INTO notification_targets (account, url, secret, created_ms)"
                " VALUES (?, ?, ?, ?)",
                (account, url, secret, now_ms),
            )
            changed = True
    return changed


def redact(url: str | None) -> str:
    """Scheme, host and port only: paths and queries of webhook URLs often carry tokens."""
    if url is None:
        return "(removed)"
    parts = urlsplit(url)
    host = parts.hostname or "?"
    if ":" in host:
        host = f"[{host}]"
    try:
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        port = ""
    return f"{parts.scheme}://{host}{port}"


# --- reads ------------------------------------------------------------------------------------


def iso(ms: int | None) -> str | None:
    return None if ms is None else timerange.iso(ms)


def _money(micros: Any) -> str | None:
    return None if micros is None else format_micros(int(micros))


def _filters(alias: str, account: str | None, user_id: str | None) -> tuple[str, list[Any]]:
    """`` WHERE ...`` (or nothing) scoping rows of ``alias`` to an account and a user's keys."""
    where, params = [], []
    if account is not None:
        where.append(f"{alias}.account = ?")
        params.append(account)
    if user_id is not None:
        where.append(f"{alias}.key_id IN (SELECT id FROM api_keys WHERE user_id = ?)")
        params.append(user_id)
    return (f" WHERE {' AND '.join(where)}" if where else ""), params


def list_notifications(
    db: Database,
    *,
    account: str | None = None,
    since_ms: int | None = None,
    limit: int = 100,
    user_id: str | None = None,
) -> list[dict]:
    """Newest first. ``user_id`` scopes to notifications about that user's keys."""
    clause, params = _filters("n", account, user_id)
    if since_ms is not None:
        clause += f"{' AND' if clause else ' WHERE'} n.created_ms >= ?"
        params.append(since_ms)

    def read(tx: Tx) -> tuple[list[dict], list[dict]]:
        rows = tx.dicts(
            "SELECT n.id, n.account, n.key_id, n.kind, n.balance_micros, n.threshold_micros,"
            " n.created_ms, n.status, n.attempts, n.last_error FROM notifications n"
            f"{clause} ORDER BY n.created_ms DESC, n.id DESC LIMIT ?",
            (*params, limit),
        )
        deliveries: list[dict] = []
        ids = [r["id"] for r in rows]
        for chunk in chunks(ids):
            deliveries += tx.dicts(
                "SELECT d.id, d.notification_id, d.status, d.attempts, d.next_attempt_ms,"
                " d.last_error, d.delivered_ms, t.url FROM notification_deliveries d"
                " LEFT JOIN notification_targets t ON t.id = d.target_id"
                f" WHERE d.notification_id IN ({marks(len(chunk))}) ORDER BY d.id",
                chunk,
            )
        return rows, deliveries

    rows, deliveries = db.read(read)
    by_notification: dict[int, list[dict]] = {}
    for d in deliveries:
        by_notification.setdefault(int(d["notification_id"]), []).append(
            {
                "id": int(d["id"]),
                "target": redact(d["url"]),
                "status": d["status"],
                "attempts": int(d["attempts"]),
                "next_attempt": iso(int(d["next_attempt_ms"]))
                if d["status"] == "pending"
                else None,
                "delivered": iso(None if d["delivered_ms"] is None else int(d["delivered_ms"])),
                "last_error": d["last_error"],
            }
        )
    return [
        {
            "id": int(r["id"]),
            "account": r["account"],
            "key_id": r["key_id"],
            "kind": r["kind"],
            "balance": _money(r["balance_micros"]),
            "threshold": _money(r["threshold_micros"]),
            "created": iso(int(r["created_ms"])),
            "created_ms": int(r["created_ms"]),
            "status": r["status"],
            "attempts": int(r["attempts"]),
            "last_error": r["last_error"],
            "deliveries": by_notification.get(int(r["id"]), []),
        }
        for r in rows
    ]


def deferred(db: Database, *, account: str | None = None, user_id: str | None = None) -> list[dict]:
    """Crossings waiting for their account's window, oldest first, with when it opens."""
    clause, params = _filters("p", account, user_id)
    rows = db.read(
        lambda tx: tx.all(
            "SELECT p.account, p.key_id, p.kind, p.detected_ms, w.last_fired_ms"
            " FROM notification_pending p"
            f" LEFT JOIN notification_windows w ON w.account = p.account{clause}"
            " ORDER BY p.detected_ms, p.account, p.key_id",
            params,
        )
    )
    return [
        {
            "account": account_,
            "key_id": key_id,
            "kind": kind,
            "detected": iso(int(detected)),
            "window_opens": iso(None if last is None else int(last) + rules.WINDOW_MS),
        }
        for account_, key_id, kind, detected, last in rows
    ]
