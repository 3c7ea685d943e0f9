"""Config deltas: what changed since an agent's config version, instead of the full snapshot.

Every config change logs (version, kind, ident) rows in ``config_changes`` in its own
transaction (``accounts.bump_version``). A sync that says it understands deltas and carries
a version the log still covers gets only the changed keys and users (their current rows),
the ids of deleted ones, and the whole price section if any price or alias changed (it is
small). Everything else gets the full snapshot: a first sync (no version), an agent newer
than the collector (a restored database), one older than the log, or one so far behind that
the delta would be as big as the snapshot.

A snapshot to an agent that sends ``deltas`` is paged: at most ``PAGE_KEYS`` keys by id, and
``keys_after`` (the last id) when more follow; the agent asks for the next page with
``snapshot_after`` and installs the snapshot, as of the first page's version, only whole. Keys
that change while it pages come again in the deltas from that version.

The log is bounded: versions older than ``KEEP_VERSIONS`` are pruned, and a change of more
than ``MAX_DELTA`` items is not logged at all (it moves the log's floor past itself, so an
agent behind it gets the snapshot it would have needed anyway).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterable

from solverfleet.collector import accounts, pingbacks
from solverfleet.collector.store import Tx, chunks

KEY, USER, PRICING, PINGBACKS = "key", "user", "pricing", "pingback"
KEEP_VERSIONS = 1000  # versions of changes kept in the log
PRUNE_EVERY = 50  # versions between two prunes (a prune is one indexed DELETE)
MAX_DELTA = 5000  # changed items beyond which an agent gets the full snapshot
PAGE_KEYS = 20_000  # keys per page of a snapshot to an agent that sends ``deltas``


def record(tx: Tx, version: int, changes: Iterable[tuple[str, str]]) -> None:
    """Log what ``version`` changed: (kind, ident) pairs, kind one of KEY, USER, PRICING,
    PINGBACKS (ident "*": the whole pingback section is shipped, like the prices)."""
    rows = sorted(set(changes))
    for kind, _ in rows:
        if kind not in (KEY, USER, PRICING, PINGBACKS):
            raise ValueError(f"unknown config change kind {kind!r}")
    if len(rows) > MAX_DELTA:
        _raise_floor(tx, version)
    else:
        for chunk in chunks(rows, 300):  # 3 parameters a row: under SQLite's old 999
            values = ", ".join("(?, ?, ?)" for _ in chunk)
            tx.execute(
                f"INSERT INTO config_changes (version, kind, ident) VALUES {values}",
                [x for kind, ident in chunk for x in (version, kind, ident)],
            )
    if version % PRUNE_EVERY == 0 and version > KEEP_VERSIONS:
        _raise_floor(tx, version - KEEP_VERSIONS)


def _raise_floor(tx: Tx, floor: int) -> None:
    tx.execute("DELETE FROM config_changes WHERE version <= ?", (floor,))
    tx.execute(
        "UPDATE config_state SET log_floor = ? WHERE id = 1 AND log_floor < ?", (floor, floor)
    )


class DeltaCache:
    """Delta answers by (since, version), so after a change the delta is read and built once,
    not once per agent: a version's delta never changes (a later change is a later version).
    Balances in its key records are as of when it was read, as for an agent that synced then
    (the live figure is ``balances``)."""

    def __init__(self, size: int = 64) -> None:
        self.size = size
        self._lock = threading.Lock()
        self._deltas: OrderedDict[tuple[int, int], dict] = OrderedDict()

    def get(self, since: int, version: int) -> dict | None:
        with self._lock:
            return self._deltas.get((since, version))

    def put(self, since: int, version: int, delta: dict) -> None:
        with self._lock:
            self._deltas[(since, version)] = delta
            while len(self._deltas) > self.size:
                self._deltas.popitem(last=False)


def answer(
    tx: Tx,
    since: int | None,
    deltas: bool,
    page_after: str | None = None,
    cache: DeltaCache | None = None,
) -> dict:
    """The config part of a sync answer for an agent at version ``since``.

    ``{"config_version": v, "config": snapshot | None}``, plus ``"delta"`` when the agent
    said it understands deltas (``deltas``) and one can be given, ``"keys_after"`` when its
    snapshot has more pages, and only ``"snapshot_page"`` when it asks for the page after
    ``page_after``. The version is read first: a change committing meanwhile is shipped again
    at the next sync (applying is idempotent).
    """
    version, floor = tx.one("SELECT version, log_floor FROM config_state WHERE id = 1")
    version, floor = int(version), int(floor)
    if page_after is not None:
        keys, after = _page(tx, page_after)
        page = {"keys": keys, "keys_after": after}
        return {"config_version": version, "config": None, "snapshot_page": page}
    if since == version:
        return {"config_version": version, "config": None}
    if not deltas:
        return {"config_version": version, "config": _snapshot(tx)}
    kept = None if cache is None or since is None else cache.get(since, version)
    if kept is not None:
        return {"config_version": version, "config": None, "delta": kept}
    changed = _changed(tx, since) if since is not None and floor <= since < version else None
    if changed is not None:
        delta = _delta(tx, changed)
        if cache is not None and since is not None:
            cache.put(since, version, delta)
        return {"config_version": version, "config": None, "delta": delta}
    keys, after = _page(tx, None)
    config = {
        **accounts.agent_pricing(tx),
        "users": accounts.agent_users(tx),
        "keys": keys,
        "pingbacks": pingbacks.agent_pingbacks(tx),
    }
    out = {"config_version": version, "config": config}
    if after is not None:
        out["keys_after"] = after
    return out


def _page(tx: Tx, after: str | None) -> tuple[list[dict], str | None]:
    """One page of keys after the id ``after``, and the cursor of the next (None: last)."""
    keys = accounts.agent_keys(tx, after=after, limit=PAGE_KEYS + 1)
    if len(keys) <= PAGE_KEYS:
        return keys, None
    return keys[:PAGE_KEYS], keys[PAGE_KEYS - 1]["id"]


def _changed(tx: Tx, since: int) -> dict[str, list[str]] | None:
    """Idents changed after ``since`` by kind; None when too many for a delta."""
    rows = tx.all(
        "SELECT DISTINCT kind, ident FROM config_changes WHERE version > ? LIMIT ?",
        (since, MAX_DELTA + 1),
    )
    if len(rows) > MAX_DELTA:
        return None
    out: dict[str, list[str]] = {KEY: [], USER: [], PRICING: [], PINGBACKS: []}
    for kind, ident in rows:
        out[kind].append(ident)
    return out


def _delta(tx: Tx, changed: dict[str, list[str]]) -> dict:
    keys, users = [], []
    for chunk in chunks(sorted(changed[KEY])):
        keys += accounts.agent_keys(tx, list(chunk))
    for chunk in chunks(sorted(changed[USER])):
        users += accounts.agent_users(tx, list(chunk))
    live_keys, live_users = {k["id"] for k in keys}, {u["id"] for u in users}
    delta: dict = {
        "keys": keys,
        "users": users,
        # Gone (a deleted key is a tombstone no read finds): agents drop them.
        "deleted_keys": sorted(set(changed[KEY]) - live_keys),
        "deleted_users": sorted(set(changed[USER]) - live_users),
    }
    if changed[PRICING]:
        delta["pricing"] = accounts.agent_pricing(tx)
    if changed[PINGBACKS]:
        delta["pingbacks"] = pingbacks.agent_pingbacks(tx)
    return delta


def _snapshot(tx: Tx) -> dict:
    return {**accounts.snapshot(tx), "pingbacks": pingbacks.agent_pingbacks(tx)}
