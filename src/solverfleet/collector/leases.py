"""Credit leases: slices of a key's balance, of its calls-per-minute ceiling and of a user's
daily limit, granted to agents so that the hot path never calls out.

Invariant (per key): the sum of balance leases never exceeds what the pool had when each was
granted, so Σ held ≤ balance however many agents ask at once. All lease changes for a key
happen while its ``api_keys`` row is locked (daily leases: its ``users`` row). Lock order,
everywhere: agents → api_keys → users → lease rows, each set in sorted order.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from solverfleet.collector import audit, configdelta, peers, reclaim, requestorder, voiding
from solverfleet.collector.heartbeat import Heartbeats, IdleView
from solverfleet.collector.prices import Accepted
from solverfleet.collector.protocol import LeaseRequest, ReleaseRequest, SyncRequest
from solverfleet.collector.reclaim import BALANCE, CPM, DAILY
from solverfleet.collector.store import Database, Tx, chunks, marks

WINDOW_SLACK = 2  # minutes of agent clock skew we still grant CPM tokens for


def grant_amount(want: int, pool: int, min_unit: int) -> int:
    """``min(want, max(pool // 2, min(pool, min_unit)))``, never negative.

    Half of the pool, so two agents share a small pool instead of one taking it all; but at
    least ``min_unit`` when the pool has it, so a pool of 1 token is still usable.
    """
    if want <= 0 or pool <= 0:
        return 0
    return min(want, max(pool // 2, min(pool, min_unit)))


# --- locking ----------------------------------------------------------------------------------


def _lock_keys(tx: Tx, key_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
    ids = sorted(set(key_ids))
    out: dict[str, dict[str, Any]] = {}
    for chunk in chunks(ids):
        for row in tx.dicts(
            "SELECT k.id, k.balance_micros, k.cpm, k.active, k.user_id, k.expires_at_ms"
            " FROM api_keys k"
            f" WHERE k.id IN ({marks(len(chunk))}) ORDER BY k.id{tx.dialect.for_update}",
            chunk,
        ):
            out[row["id"]] = row
    return out


def _lock_users(tx: Tx, user_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
    ids = sorted(set(user_ids))
    out: dict[str, dict[str, Any]] = {}
    for chunk in chunks(ids):
        for row in tx.dicts(
            f"SELECT id, daily_limit, active FROM users WHERE id IN ({marks(len(chunk))})"
            f" ORDER BY id{tx.dialect.for_update}",
            chunk,
        ):
            out[row["id"]] = row
    return out


def _users_active(tx: Tx, user_ids: Iterable[str]) -> dict[str, bool]:
    return {uid: bool(active) for uid, active in tx.by_id("users", "active", user_ids).items()}


# --- one lease at a time ----------------------------------------------------------------------


def _balance(
    tx: Tx, agent: str, req: LeaseRequest, key: dict | None, usable: bool
) -> tuple[dict, int]:
    """Take back ``req.give_back``, then grant from the pool; returns (reply, returned).

    Short of the least the agent can use while other agents hold slack: reclaim it from them
    and answer ``reclaiming`` (the agent waits for the next grant instead of refusing).
    """
    row = tx.one(
        "SELECT held_micros, settled FROM lease_balance WHERE key_id = ? AND agent_id = ?",
        (req.key_id, agent),
    )
    own, was_settled = (int(row[0]), int(row[1])) if row else (0, 0)
    returned = min(req.give_back, own)
    granted, reclaiming = 0, False
    if key is not None and usable and req.want > 0:
        total = int(
            tx.scalar(
                "SELECT SUM(held_micros) FROM lease_balance WHERE key_id = ?",
                (req.key_id,),
                default=0,
            )
        )
        pool = int(key["balance_micros"]) - (total - returned)
        granted = grant_amount(req.want, pool, req.min_unit)
        if granted < req.min_unit:
            granted = 0  # a sliver below the agent's minimum is not worth holding
        if not granted and req.urgent:
            lack = max(req.min_unit, 1) - max(pool, 0)
            reclaiming = reclaim.order_from_holders(tx, BALANCE, req.key_id, "", agent, lack)
    held = own - returned + granted
    settled = _settled(granted, req.settle, was_settled)
    if key is not None and (granted or returned or (row and settled != was_settled)):
        _record_balance(tx, req.key_id, agent, held, granted, returned, settled)
    reply = {
        "kind": "balance",
        "key_id": req.key_id,
        "granted_micros": granted,
        "held_micros": held,
    }
    if reclaiming:
        reply["reclaiming"] = True
    return reply, returned


def _settled(granted: int, settle: bool, was: int) -> int:
    """A grant unsettles a lease (it holds slack again); an answered reclaim settles it."""
    return 0 if granted else (1 if settle else was)


def _record_balance(
    tx: Tx, key_id: str, agent: str, held: int, granted: int, returned: int, settled: int
) -> None:
    """Set the lease's remainder and add to its running grant/return totals (the bound ingest
    checks a bound agent's usage against: granted - returned, see ``ingest``)."""
    updates = {
        "held_micros": tx.dialect.new("held_micros"),
        "granted_micros": "granted_micros + " + tx.dialect.new("granted_micros"),
        "returned_micros": "returned_micros + " + tx.dialect.new("returned_micros"),
        "settled": tx.dialect.new("settled"),
    }
    columns = ("key_id", "agent_id", "held_micros", "granted_micros", "returned_micros", "settled")
    sql = tx.dialect.upsert("lease_balance", columns, ("key_id", "agent_id"), updates)
    tx.execute(sql, (key_id, agent, held, granted, returned, settled))


def _cpm(tx: Tx, agent: str, req: LeaseRequest, key: dict | None, usable: bool, now_win: int):
    reply = {"kind": "cpm", "key_id": req.key_id, "window": req.window}
    if key is not None and key["cpm"] is None:
        # No ceiling: nothing to share, nothing to record.
        grant = req.want if usable else 0
        return {**reply, "granted": grant, "held": grant}
    where = "key_id = ? AND win = ?"
    ident = (req.key_id, req.window, agent)
    row = tx.one(f"SELECT granted, settled FROM lease_cpm WHERE {where} AND agent_id = ?", ident)
    own, was_settled = (int(row[0]), int(row[1])) if row else (0, 0)
    returned = min(req.give_back, own)
    granted, reclaiming = 0, False
    if key is not None and usable and req.want > 0 and abs(req.window - now_win) <= WINDOW_SLACK:
        total = int(
            tx.scalar(
                f"SELECT SUM(granted) FROM lease_cpm WHERE {where}",
                (req.key_id, req.window),
                default=0,
            )
        )
        pool = int(key["cpm"]) - (total - returned)
        granted = grant_amount(req.want, pool, 1)
        if not granted and req.urgent:
            window = str(req.window)
            reclaiming = reclaim.order_from_holders(tx, CPM, req.key_id, window, agent, 1 - pool)
    held = own - returned + granted
    settled = _settled(granted, req.settle, was_settled)
    if key is not None and (granted or returned or (row and settled != was_settled)):
        _upsert(tx, "lease_cpm", ("key_id", "win", "agent_id"), ident, held, settled)
    reply = {**reply, "granted": granted, "held": held}
    if reclaiming:
        reply["reclaiming"] = True
    return reply


def _daily(tx: Tx, agent: str, req: LeaseRequest, user: dict | None) -> tuple[dict, int]:
    """Like ``_balance`` for a user's daily tokens; returns (reply, returned)."""
    reply = {"kind": "daily", "user_id": req.user_id, "day": req.day}
    if user is not None and user["daily_limit"] is None:
        grant = req.want if user["active"] else 0
        return {**reply, "granted": grant, "held": grant}, 0
    key = (req.user_id, req.day, agent)
    row = tx.one(
        "SELECT granted, used, settled FROM lease_daily"
        " WHERE user_id = ? AND day_utc = ? AND agent_id = ?",
        key,
    )
    granted_before, used, was_settled = (int(v) for v in row) if row else (0, 0, 0)
    remainder = max(granted_before - used, 0)
    returned = min(req.give_back, remainder)
    granted, reclaiming = 0, False
    if user is not None and user["active"] and req.want > 0:
        # Tokens already used count even where they exceed what was granted (offline spend).
        total = int(
            tx.scalar(
                "SELECT SUM(CASE WHEN granted > used THEN granted ELSE used END)"
                " FROM lease_daily WHERE user_id = ? AND day_utc = ?",
                (req.user_id, req.day),
                default=0,
            )
        )
        pool = int(user["daily_limit"]) - (total - returned)
        granted = grant_amount(req.want, pool, 1)
        if not granted and req.urgent:
            lack = 1 - pool
            reclaiming = reclaim.order_from_holders(tx, DAILY, req.user_id, req.day, agent, lack)
    new_total = max(granted_before, used) - returned + granted
    settled = _settled(granted, req.settle, was_settled)
    if user is not None and (returned or granted or (row and settled != was_settled)):
        _upsert(tx, "lease_daily", ("user_id", "day_utc", "agent_id"), key, new_total, settled)
    reply = {**reply, "granted": granted, "held": max(new_total - used, 0)}
    if reclaiming:
        reply["reclaiming"] = True
    return reply, returned


def _upsert(tx: Tx, table: str, key_cols: tuple, key: tuple, granted: int, settled: int) -> None:
    extra = ("used",) if table == "lease_daily" else ()
    columns = (*key_cols, "granted", "settled", *extra)
    params = (*key, granted, settled, *(0 for _ in extra))
    updates = {c: tx.dialect.new(c) for c in ("granted", "settled")}
    tx.execute(tx.dialect.upsert(table, columns, key_cols, updates), params)


# --- sync and release -------------------------------------------------------------------------


def _touch_agent(tx: Tx, req: SyncRequest, now_ms: int) -> None:
    columns = (
        "agent_id", "instance", "release_ver", "last_seen_ms", "in_flight", "spool_backlog",
        "node_id", "advertise_url",
    )  # fmt: skip
    updates = {c: tx.dialect.new(c) for c in columns[1:]}
    tx.execute(
        tx.dialect.upsert("agents", columns, ("agent_id",), updates),
        (
            req.agent_id, req.instance, req.release, now_ms, req.in_flight, req.spool_backlog,
            req.node_id, req.advertise_url,
        ),
    )  # fmt: skip


def sync_leases(db: Database, req: SyncRequest, *, now_ms: int, ttl_ms: int) -> dict:
    """One sync's writes in one transaction: heartbeat, reclaim, reset, returns and grants."""
    agent = req.agent_id
    now_win = now_ms // 60_000

    def work(tx: Tx) -> dict:
        # First: our own row (see lock order above). A duplicate, a late copy or a replaced
        # process's request changes no lease (requestorder.py).
        changes = req.reset or bool(req.leases)
        order = requestorder.standing(tx, agent, req.instance, req.seq, req.reset, changes)
        if order.current:
            _touch_agent(tx, req, now_ms)
        if order.stale:
            for lease in req.leases:
                requestorder.neutral(lease)
        reset = order.reset
        silent = voiding.silent(tx, agent, now_ms - ttl_ms)
        back = not reset and voiding.holds(tx, agent) == voiding.QUARANTINED
        mine = [agent] if reset or back else []
        void_keys, void_users = voiding.targets(tx, [*silent, *mine])
        want_keys = [r.key_id for r in req.leases if r.kind in ("balance", "cpm")]
        keys = _lock_keys(tx, [*void_keys, *want_keys])
        users = _lock_users(
            tx, [*void_users, *(r.user_id for r in req.leases if r.kind == "daily")]
        )
        voiding.quarantine(tx, silent)
        if reset:
            voiding.void(tx, [agent])
        elif back:
            voiding.lift(tx, agent)
        active_users = _users_active(tx, (k["user_id"] for k in keys.values()))

        grants = []
        pruned: set[str] = set()
        for lease in req.leases:
            if lease.settle:
                reclaim.settled(tx, agent, lease)
            key = keys.get(lease.key_id) if lease.key_id else None
            usable = bool(key and key["active"] and active_users.get(key["user_id"], False))
            if usable and key["expires_at_ms"] is not None:  # type: ignore[index]
                usable = now_ms < int(key["expires_at_ms"])  # type: ignore[index]
            if lease.kind == "balance":
                grants.append(_balance(tx, agent, lease, key, usable)[0])
            elif lease.kind == "cpm":
                if key is not None and lease.key_id not in pruned:
                    pruned.add(lease.key_id)
                    tx.execute(
                        "DELETE FROM lease_cpm WHERE key_id = ? AND win < ?",
                        (lease.key_id, now_win - 2 * WINDOW_SLACK),
                    )
                grants.append(_cpm(tx, agent, lease, key, usable, now_win))
            else:
                grants.append(_daily(tx, agent, lease, users.get(lease.user_id))[0])
        if any(g.get("granted_micros") or g.get("granted") for g in grants):
            tx.execute("UPDATE agents SET holds = 1 WHERE agent_id = ?", (agent,))
        if order.record:
            requestorder.record(tx, agent, req.seq, grants)
        elif order.replay is not None:
            grants = requestorder.replayed(grants, order.replay)
        balances = _balances(tx, agent, [*want_keys, *req.watch])
        return {
            "grants": grants,
            "balances": balances,
            "quarantined": silent,
            "reclaim": reclaim.pending(tx, agent),
        }

    return db.transaction(work)


def _balances(tx: Tx, agent: str, key_ids: list[str]) -> dict[str, int]:
    """Each key's balance outside this agent's own lease."""
    out: dict[str, int] = {}
    for chunk in chunks(sorted(set(key_ids))):
        for kid, balance, held in tx.all(
            "SELECT k.id, k.balance_micros, l.held_micros FROM api_keys k"
            " LEFT JOIN lease_balance l ON l.key_id = k.id AND l.agent_id = ?"
            f" WHERE k.id IN ({marks(len(chunk))})",
            (agent, *chunk),
        ):
            out[kid] = int(balance) - int(held or 0)
    return out


def sync(
    db: Database,
    req: SyncRequest,
    *,
    now_ms: int,
    ttl_ms: int,
    heartbeats: Heartbeats | None = None,
    view: IdleView | None = None,
    delta_cache: configdelta.DeltaCache | None = None,
) -> dict:
    """The full answer to ``POST /agent/v1/sync``. With ``heartbeats``, an idle sync is one
    read transaction, and with ``view`` often none (see heartbeat.py); with ``delta_cache`` a
    change's delta is built once for every agent."""

    def config(tx: Tx) -> dict:
        return configdelta.answer(
            tx, req.config_version, req.deltas, req.snapshot_after, cache=delta_cache
        )

    def config_and_peers(tx: Tx) -> dict:
        return {**config(tx), **peers.answer(tx, req.agent_id, now_ms, ttl_ms)}

    if heartbeats is not None and heartbeats.idle(req, now_ms):
        # The peer map from the view when there is one (no store read), else from the read.
        book = None if view is None else peers.book(view.registered(), req.agent_id, now_ms, ttl_ms)
        version = None if view is None else view.settled(req)
        if version is not None:
            return {
                "config_version": version,
                "config": None,
                "grants": [],
                "balances": {},
                "reclaim": [],
                **(book or {}),
                "server_time": now_ms / 1000,
            }

        def idle(tx: Tx) -> dict:
            # One round trip for the version and the orders (from others' syncs): on MariaDB
            # each query costs the collector more CPU than the rest of an idle sync.
            rows = tx.all(
                "SELECT c.version, r.kind, r.ident, r.period FROM config_state c"
                " LEFT JOIN lease_reclaim r ON r.agent_id = ? WHERE c.id = 1",
                (req.agent_id,),
            )
            current = req.snapshot_after is None and req.config_version == int(rows[0][0])
            return {
                **(
                    {"config_version": req.config_version, "config": None}
                    if current
                    else config(tx)
                ),
                "grants": [],
                "balances": _balances(tx, req.agent_id, req.watch) if req.watch else {},
                "reclaim": reclaim.items(row[1:] for row in rows if row[1] is not None),
                **(book if book is not None else peers.answer(tx, req.agent_id, now_ms, ttl_ms)),
            }

        return {**db.read(idle), "server_time": now_ms / 1000}
    result = sync_leases(db, req, now_ms=now_ms, ttl_ms=ttl_ms)
    if heartbeats is not None:
        heartbeats.persisted(req, now_ms)
    # The config is read after the lease transaction (see configdelta.answer).
    return {
        **db.read(config_and_peers),
        "grants": result["grants"],
        "balances": result["balances"],
        "reclaim": result["reclaim"],
        "server_time": now_ms / 1000,
    }


class AgentAlive(Exception):
    """``forget`` of an agent that synced within ``lease_ttl``."""


def forget(
    db: Database, agent_id: str, *, now_ms: int, ttl_ms: int, actor: str | None = None
) -> dict | None:
    """An operator says ``agent_id`` is gone for good, spool and all: void its leases (their
    remainder returns to the pool) and drop its row. None when there is no such agent.

    Refused (``AgentAlive``) while the agent synced within ``lease_ttl``: a live agent would
    keep spending what it believes it holds. Usage it spent and still ships is charged.
    """

    def work(tx: Tx) -> dict | None:
        row = tx.one(
            "SELECT last_seen_ms, holds FROM agents WHERE agent_id = ?" + tx.dialect.for_update,
            (agent_id,),
        )
        if row is None:
            return None
        if int(row[0]) >= now_ms - ttl_ms:
            raise AgentAlive(agent_id)
        void_keys, void_users = voiding.targets(tx, [agent_id])
        _lock_keys(tx, void_keys)
        _lock_users(tx, void_users)
        held = int(
            tx.scalar(
                "SELECT SUM(held_micros) FROM lease_balance WHERE agent_id = ?",
                (agent_id,),
                default=0,
            )
            or 0
        )
        voiding.void(tx, [agent_id])
        tx.execute("DELETE FROM agents WHERE agent_id = ?", (agent_id,))
        after = {"returned_micros": held, "keys": len(void_keys)}
        audit.record(tx, actor, "agent.forget", "agent", agent_id, None, None, after, now_ms=now_ms)
        return {"agent_id": agent_id, **after}

    return db.transaction(work)


def release(db: Database, req: ReleaseRequest, *, now_ms: int) -> list[dict]:
    """Return unused leases (graceful stop). A release from an instance that has since been
    replaced returns nothing: the new instance's reset already voided those leases, and what
    the agent holds now belongs to the new instance."""

    def work(tx: Tx) -> list[dict]:
        order = requestorder.standing(tx, req.agent_id, req.instance, req.seq, False, True)
        if order.record and not order.other:
            requestorder.record(tx, req.agent_id, req.seq)
        # Only the recorded instance may return: another one (older, or of unknown age) has
        # been replaced, and what the agent id holds now belongs to the new process.
        replaced = order.stale or order.other
        keys = _lock_keys(tx, [r.key_id for r in req.leases if r.kind == "balance"])
        users = _lock_users(tx, [r.user_id for r in req.leases if r.kind == "daily"])
        out = []
        for lease in req.leases:
            if replaced:
                lease.give_back = 0
            if lease.kind == "balance":
                reply, returned = _balance(tx, req.agent_id, lease, keys.get(lease.key_id), False)
                out.append(
                    {
                        "kind": "balance",
                        "key_id": lease.key_id,
                        "returned_micros": returned,
                        "held_micros": reply["held_micros"],
                    }
                )
            else:
                reply, returned = _daily(tx, req.agent_id, lease, users.get(lease.user_id))
                out.append({**reply, "returned": returned})
                del out[-1]["granted"]
        return out

    return db.transaction(work)


# --- usage against grants (per-host credentials) ------------------------------------------

# Why a bound agent's event was refused (also the refused-events metric's label).
NOT_LEASED, WRONG_COST, OVER_GRANT = "not_leased", "wrong_cost", "over_grant"


def _oldest_first(event: tuple) -> tuple:
    return event[1], event[0]


def check_usage(tx: Tx, events: list[tuple]) -> dict[str, str]:
    """Check new usage events of agent-bound credentials against what each agent was granted;
    add the accepted charges to the lease rows' ``charged_micros``; return ``{event_id:
    reason}`` for the refused ones. ``events``: (event_id, ts_ms, key_id, agent_id, type,
    status, cost_micros).

    The key must have a balance lease row for the agent (free types excepted: agents admit them
    without a lease); a success must cost the type's price; and the agent's charges for a key
    must stay within granted - returned. Voids (reset, reclaim) are not returns: events spent
    from a voided lease may still be in the agent's spool, and they stay chargeable.
    Locks keys, then lease rows (the documented order): two collectors cannot share the room.
    """
    if not events:
        return {}
    account: dict[str, str] = {}  # prices are per account (collector/prices.py)
    for chunk in chunks(sorted({e[2] for e in events})):
        account.update(
            tx.all(
                f"SELECT id, account FROM api_keys WHERE id IN ({marks(len(chunk))})"
                f" ORDER BY id{tx.dialect.for_update}",
                chunk,
            )
        )
    room: dict[tuple[str, str], int] = {}
    for pairs in chunks(sorted({(e[2], e[3]) for e in events})):
        match = " OR ".join("(key_id = ? AND agent_id = ?)" for _ in pairs)
        for key_id, agent_id, left in tx.all(
            "SELECT key_id, agent_id, granted_micros - returned_micros - charged_micros"
            f" FROM lease_balance WHERE {match} ORDER BY key_id, agent_id{tx.dialect.for_update}",
            [x for p in pairs for x in p],
        ):
            room[(key_id, agent_id)] = int(left)
    prices = Accepted(tx)
    refused: dict[str, str] = {}
    spent: dict[tuple[str, str], int] = {}
    for eid, ts, key_id, agent_id, type_, status, cost in sorted(events, key=_oldest_first):
        pair, price = (key_id, agent_id), prices.price(account.get(key_id), type_)
        if pair not in room and price != 0:
            refused[eid] = NOT_LEASED
        elif status != "success" or (not cost and price == 0):
            continue  # nothing charged: failures and reports (cost forced to 0), free types
        elif cost != price and not prices.old_price(account.get(key_id), type_, cost, ts):
            refused[eid] = WRONG_COST
        elif cost > room[pair] - spent.get(pair, 0):
            refused[eid] = OVER_GRANT
        else:
            spent[pair] = spent.get(pair, 0) + cost
    for pairs in chunks(sorted(p for p, v in spent.items() if v)):
        cost_sql = "CASE " + " ".join("WHEN key_id = ? AND agent_id = ? THEN ?" for _ in pairs)
        match = " OR ".join("(key_id = ? AND agent_id = ?)" for _ in pairs)
        tx.execute(
            f"UPDATE lease_balance SET charged_micros = charged_micros + ({cost_sql} ELSE 0 END)"
            f" WHERE {match}",
            (*(x for p in pairs for x in (*p, spent[p])), *(x for p in pairs for x in p)),
        )
    return refused
