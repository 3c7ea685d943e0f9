"""Key data from the collector's sync snapshot, as an immutable object swapped by reference.

A new snapshot replaces the old one in a single attribute assignment, so a request sees either
the old or the new data, never a mix, and a deactivation applies to the next request. Keys and
users are persistent maps (``immutables.Map``, a hash array mapped trie): a delta builds the
new snapshot in time proportional to what changed, sharing everything else with the old one,
where copying dicts took 135 ms at a million keys with every request thread waiting on the GIL
(docs/SCALING.md).

During a rotation's grace a key is indexed under both secret hashes, so the lookup stays one
dict access; the old one is accepted only until ``previous_until`` by this host's clock, so it
stops working on every agent at the same moment without waiting for a sync. A key's
``expires_at`` works the same way: each agent refuses it from then on by its own clock.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from immutables import Map

from solverfleet.agent.clientip import Net, parse_nets
from solverfleet.captchatypes import DEFAULT_TYPE


class SnapshotError(ValueError):
    """A config snapshot from the collector that does not parse."""


@dataclass(frozen=True, slots=True)
class User:
    id: str
    email: str | None
    role: str
    daily_limit: int | None
    active: bool
    account: str | None


@dataclass(frozen=True, slots=True)
class Key:
    id: str
    secret_hash: bytes  # sha256 of the secret, raw: 48 bytes a key smaller than its hex
    user_id: str
    account: str | None
    project: str | None
    environment: str | None
    allowed_types: frozenset[str] | None
    cpm: int | None
    ip_allowlist: tuple[Net, ...] | None
    active: bool
    balance_micros: int
    previous_hash: bytes | None = None  # the secret a rotation replaced ...
    previous_until: float = 0.0  # ... accepted until this unix time (agent clock)
    expires_at: float | None = None  # refused from this unix time on (agent clock); None: never

    def accepts(self, digest: bytes, now: float) -> bool:
        """Whether ``digest`` (found in ``by_hash``) is this key's secret right now."""
        return digest == self.secret_hash or (
            digest == self.previous_hash and now < self.previous_until
        )


# An account's price table, flattened at parse time so the hot path does two dict lookups:
# (prices by canonical type, the price of any other type or None).
Pricing = tuple[dict[str, int], "int | None"]


@dataclass(frozen=True, slots=True)
class Snapshot:
    version: int
    prices: dict[str, int]  # the global prices ("*": the global default)
    users: Mapping[str, User]  # immutables.Map, as keys and by_hash
    keys: Mapping[str, Key]  # by key id
    by_hash: Mapping[bytes, Key]  # by sha256 of the secret (and of a rotated-out one in grace)
    pricing: dict[str, Pricing]  # by account, for accounts with prices of their own
    global_pricing: Pricing  # every other account's
    aliases: dict[str, dict[str, str]]  # by account (the built-in ones are in captchatypes)
    # Registered pingback URLs by owner (collector/pingbacks.py: "a:<account>" | "u:<user>").
    pingbacks: dict[str, frozenset[str]] = field(default_factory=dict)


def _flatten(prices: dict[str, int], own: dict[str, int] | None) -> Pricing:
    """One account's prices as ``captchatypes.resolve_price`` orders them: its own price, its
    default, the global price, the global default."""
    if own and DEFAULT_TYPE in own:
        return {t: p for t, p in own.items() if t != DEFAULT_TYPE}, own[DEFAULT_TYPE]
    merged = {t: p for t, p in {**prices, **(own or {})}.items() if t != DEFAULT_TYPE}
    return merged, prices.get(DEFAULT_TYPE)


def _opt_int(value: Any, where: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise SnapshotError(f"{where}: expected a non-negative int or null, got {value!r}")
    return value


def _user(raw: dict[str, Any]) -> User:
    return User(
        id=raw["id"],
        email=raw.get("email"),
        role=raw.get("role") or "user",
        daily_limit=_opt_int(raw.get("daily_limit"), f"user {raw['id']}.daily_limit"),
        active=bool(raw.get("active", True)),
        account=raw.get("account"),
    )


def _shared(value: Any) -> Any:
    """One string object for a value many keys repeat (owner, account, project, environment):
    a key record is about 60 bytes smaller per repeated field (docs/SCALING.md)."""
    return sys.intern(value) if isinstance(value, str) else value


def _key(raw: dict[str, Any]) -> Key:
    allowed = raw.get("allowed_types")
    allow_ips = raw.get("ip_allowlist")
    previous = raw.get("previous_secret_hash")
    until_ms = _opt_int(raw.get("previous_until_ms"), f"key {raw['id']}.previous_until_ms")
    expires_ms = _opt_int(raw.get("expires_at_ms"), f"key {raw['id']}.expires_at_ms")
    return Key(
        id=raw["id"],
        secret_hash=bytes.fromhex(raw["secret_hash"]),
        user_id=_shared(raw["user_id"]),
        account=_shared(raw.get("account")),
        project=_shared(raw.get("project")),
        environment=_shared(raw.get("environment")),
        allowed_types=None if allowed is None else frozenset(allowed),
        cpm=_opt_int(raw.get("cpm"), f"key {raw['id']}.cpm"),
        ip_allowlist=None if allow_ips is None else parse_nets(allow_ips),
        active=bool(raw.get("active", True)),
        balance_micros=int(raw.get("balance_micros") or 0),
        previous_hash=None if not previous or until_ms is None else bytes.fromhex(previous),
        previous_until=0.0 if until_ms is None else until_ms / 1000,
        expires_at=None if expires_ms is None else expires_ms / 1000,
    )


def _pricing(config: dict[str, Any]) -> dict[str, Any]:
    """The price fields of a Snapshot from a config's price section."""
    prices = {str(slug): int(micros) for slug, micros in (config.get("prices") or {}).items()}
    own = {
        str(account): {str(t): int(p) for t, p in table.items()}
        for account, table in (config.get("account_prices") or {}).items()
    }
    aliases = {
        str(account): {str(a): str(t) for a, t in table.items()}
        for account, table in (config.get("type_aliases") or {}).items()
    }
    return {
        "prices": prices,
        "pricing": {account: _flatten(prices, table) for account, table in own.items()},
        "global_pricing": _flatten(prices, None),
        "aliases": aliases,
    }


def _pingbacks(raw: Any) -> dict[str, frozenset[str]]:
    """The ``pingbacks`` section: {owner: [url, ...]}."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise SnapshotError("pingbacks: expected an object")
    out = {}
    for owner, urls in raw.items():
        if not isinstance(urls, list) or not all(isinstance(u, str) for u in urls):
            raise SnapshotError(f"pingbacks.{owner}: expected a list of strings")
        out[str(owner)] = frozenset(urls)
    return out


def _index(keys: Mapping[str, Key]) -> Map:
    """Keys by secret hash; a current secret always wins over a rotated-out one of another
    key."""
    by_hash = {key.secret_hash: key for key in keys.values()}
    for key in keys.values():
        if key.previous_hash is not None:
            by_hash.setdefault(key.previous_hash, key)
    return Map(by_hash)


def _keys(raw_keys: list[dict[str, Any]] | None) -> dict[str, Key]:
    return {raw["id"]: _key(raw) for raw in raw_keys or []}


def parse_snapshot(
    version: int, config: dict[str, Any], keys: dict[str, Key] | None = None
) -> Snapshot:
    """The sync response's ``config`` object -> Snapshot (with ``keys`` already parsed: those,
    see ``SnapshotPages``); SnapshotError on anything malformed."""
    try:
        pricing = _pricing(config)
        users = Map({raw["id"]: _user(raw) for raw in config.get("users") or []})
        if keys is None:
            keys = _keys(config.get("keys"))
    except SnapshotError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise SnapshotError(f"malformed config snapshot: {exc!r}") from None
    return Snapshot(
        version=int(version),
        users=users,
        keys=Map(keys),
        by_hash=_index(keys),
        pingbacks=_pingbacks(config.get("pingbacks")),
        **pricing,
    )


def apply_delta(old: Snapshot, version: int, delta: dict[str, Any]) -> Snapshot:
    """A new Snapshot: ``old`` with a sync answer's ``delta`` (collector/configdelta.py)
    applied; SnapshotError on anything malformed (``old`` is left as it was)."""
    try:
        users = old.users.mutate()
        for uid in delta.get("deleted_users") or []:
            users.pop(uid, None)
        for raw in delta.get("users") or []:
            users[raw["id"]] = _user(raw)
        changed = [_key(raw) for raw in delta.get("keys") or []]
        gone = [*(delta.get("deleted_keys") or []), *(k.id for k in changed)]
        keys, by_hash = old.keys.mutate(), old.by_hash.mutate()
        for kid in gone:
            was = keys.pop(kid, None)
            if was is None:
                continue
            for digest in (was.secret_hash, was.previous_hash):
                if digest is not None and by_hash.get(digest) is was:
                    del by_hash[digest]
        for key in changed:
            keys[key.id] = key
            by_hash[key.secret_hash] = key
        for key in changed:
            if key.previous_hash is not None and key.previous_hash not in by_hash:
                by_hash[key.previous_hash] = key
        raw_pricing = delta.get("pricing")
        pricing = (
            _pricing(raw_pricing)
            if raw_pricing is not None
            else {
                "prices": old.prices,
                "pricing": old.pricing,
                "global_pricing": old.global_pricing,
                "aliases": old.aliases,
            }
        )
    except SnapshotError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise SnapshotError(f"malformed config delta: {exc!r}") from None
    raw_pingbacks = delta.get("pingbacks")
    pingbacks = old.pingbacks if raw_pingbacks is None else _pingbacks(raw_pingbacks)
    return Snapshot(
        version=int(version),
        users=users.finish(),
        keys=keys.finish(),
        by_hash=by_hash.finish(),
        pingbacks=pingbacks,
        **pricing,
    )


class SnapshotPages:
    """A snapshot arriving in pages (collector/configdelta.py): each page's keys are parsed
    as it comes and its raw form dropped; the Snapshot exists only once the last page is in,
    so the agent switches over in one swap. SnapshotError on anything malformed."""

    def __init__(self, version: int, config: dict[str, Any], after: str) -> None:
        self.version = int(version)
        self.config = {name: value for name, value in config.items() if name != "keys"}
        self.keys = self._parse(config.get("keys"))
        self.after = str(after)

    @staticmethod
    def _parse(raw_keys: Any) -> dict[str, Key]:
        try:
            return _keys(raw_keys)
        except SnapshotError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise SnapshotError(f"malformed snapshot page: {exc!r}") from None

    def add(self, page: dict[str, Any]) -> Snapshot | None:
        """Take the next page; the whole Snapshot after the last one, else None."""
        self.keys.update(self._parse(page.get("keys")))
        after = page.get("keys_after")
        if after is None:
            return parse_snapshot(self.version, self.config, self.keys)
        if not isinstance(after, str) or after <= self.after:
            raise SnapshotError(f"snapshot page cursor {after!r} does not advance")
        self.after = after
        return None


class KeyStore:
    """Holds the current snapshot; ``None`` until the first successful sync."""

    def __init__(self) -> None:
        self.snapshot: Snapshot | None = None

    def replace(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot  # one reference swap: atomic for readers

    @property
    def version(self) -> int | None:
        snap = self.snapshot
        return None if snap is None else snap.version
