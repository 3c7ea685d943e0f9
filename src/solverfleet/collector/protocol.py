"""Parsing and checking of the agent protocol's request bodies (docs/ARCHITECTURE.md).

Unknown fields are ignored here on purpose: a newer agent talking to an older collector
during a rolling upgrade must not be refused for a field this version does not know yet.
Wrong types and out-of-range values are refused (400) before anything is written.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from solverfleet.collector.problems import Invalid
from solverfleet.textcheck import text_problem

MAX_LEASES = 10_000
MAX_WATCH = 100_000
MAX_ID = 128
MAX_AMOUNT = 10**15
MAX_SEQ = 2**53 - 1  # exact in every JSON reader


def text(value: Any, path: str, *, required: bool = True, limit: int = MAX_ID) -> str | None:
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value or len(value) > limit:
        raise Invalid(f"{path}: must be a string of 1 to {limit} characters")
    problem = text_problem(value)  # ids are one line: no control characters at all
    if problem:
        raise Invalid(f"{path}: {problem}")
    return value


def integer(
    value: Any, path: str, *, default: int | None = None, low: int = 0, high: int = MAX_AMOUNT
) -> int:
    if value is None and default is not None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise Invalid(f"{path}: must be a whole number from {low} to {high}")
    return value


def day(value: Any, path: str) -> str:
    if not isinstance(value, str) or len(value) != 10:
        raise Invalid(f"{path}: must be a UTC date YYYY-MM-DD")
    try:
        dt.date.fromisoformat(value)
    except ValueError:
        raise Invalid(f"{path}: must be a UTC date YYYY-MM-DD") from None
    return value


def obj(value: Any, path: str) -> dict:
    if not isinstance(value, dict):
        raise Invalid(f"{path}: must be a JSON object")
    return value


def listing(value: Any, path: str, limit: int) -> list:
    if value is None:
        return []
    if not isinstance(value, list) or len(value) > limit:
        raise Invalid(f"{path}: must be a list of at most {limit} items")
    return value


@dataclass
class LeaseRequest:
    kind: str  # balance | cpm | daily
    key_id: str | None = None
    user_id: str | None = None
    window: int | None = None
    day: str | None = None
    want: int = 0
    min_unit: int = 0
    give_back: int = 0
    settle: bool = False  # the answer to a reclaim order: nothing spendable is kept
    urgent: bool = False  # the agent cannot serve one more call: reclaim from others for it


@dataclass
class SyncRequest:
    agent_id: str
    instance: str | None
    release: str | None
    reset: bool
    config_version: int | None
    deltas: bool = False  # the agent applies config deltas (configdelta.py); old ones do not
    snapshot_after: str | None = None  # the next page of a paged snapshot, after this key id
    leases: list[LeaseRequest] = field(default_factory=list)
    watch: list[str] = field(default_factory=list)
    in_flight: int | None = None
    spool_backlog: int | None = None
    seq: int | None = None  # per-process request number (requestorder.py)
    node_id: int | None = None  # the agent's task-id prefix (res.php anywhere)
    advertise_url: str | None = None  # where other agents fetch its tasks


MAX_URL = 512


def advertised(value: Any) -> str | None:
    """An agent's advertised address: an http(s) URL without path, query or credentials."""
    url = text(value, "advertise_url", required=False, limit=MAX_URL)
    if url is None:
        return None
    scheme, _, rest = url.partition("://")
    if scheme not in ("http", "https") or not rest or any(c in rest for c in "/?#@ "):
        raise Invalid("advertise_url: must be http(s)://host[:port], nothing after it")
    return url


def flag(value: Any, path: str) -> bool:
    if value is None:
        return False
    if not isinstance(value, bool):
        raise Invalid(f"{path}: must be true or false")
    return value


def lease_request(raw: Any, path: str, *, for_release: bool = False) -> LeaseRequest:
    raw = obj(raw, path)
    lease = _lease_request(raw, path, for_release)
    lease.settle = flag(raw.get("settle"), f"{path}.settle")
    lease.urgent = flag(raw.get("urgent"), f"{path}.urgent")
    return lease


def _lease_request(raw: dict, path: str, for_release: bool) -> LeaseRequest:
    kind = raw.get("kind")
    if kind == "balance":
        return LeaseRequest(
            "balance",
            key_id=text(raw.get("key_id"), f"{path}.key_id"),
            want=0
            if for_release
            else integer(raw.get("want_micros"), f"{path}.want_micros", default=0),
            min_unit=0
            if for_release
            else integer(raw.get("min_micros"), f"{path}.min_micros", default=0),
            give_back=integer(raw.get("return_micros"), f"{path}.return_micros", default=0),
        )
    if kind == "cpm" and not for_release:
        return LeaseRequest(
            "cpm",
            key_id=text(raw.get("key_id"), f"{path}.key_id"),
            window=integer(raw.get("window"), f"{path}.window"),
            want=integer(raw.get("want"), f"{path}.want", default=0),
            give_back=integer(raw.get("return"), f"{path}.return", default=0),
        )
    if kind == "daily":
        return LeaseRequest(
            "daily",
            user_id=text(raw.get("user_id"), f"{path}.user_id"),
            day=day(raw.get("day"), f"{path}.day"),
            want=0 if for_release else integer(raw.get("want"), f"{path}.want", default=0),
            give_back=integer(raw.get("return"), f"{path}.return", default=0),
        )
    kinds = "balance or daily" if for_release else "balance, cpm or daily"
    raise Invalid(f"{path}.kind: must be {kinds}, not {kind!r}")


def sync_request(data: Any) -> SyncRequest:
    data = obj(data, "(body)")
    reset = flag(data.get("reset"), "reset")
    version = data.get("config_version")
    stats = data.get("stats") or {}
    stats = obj(stats, "stats")
    watch = listing(data.get("watch"), "watch", MAX_WATCH)
    return SyncRequest(
        agent_id=text(data.get("agent_id"), "agent_id"),
        instance=text(data.get("instance"), "instance", required=False, limit=64),
        release=text(data.get("release"), "release", required=False, limit=64),
        reset=reset,
        config_version=None if version is None else integer(version, "config_version"),
        deltas=flag(data.get("deltas"), "deltas"),
        snapshot_after=text(data.get("snapshot_after"), "snapshot_after", required=False),
        leases=[
            lease_request(item, f"leases[{i}]")
            for i, item in enumerate(listing(data.get("leases"), "leases", MAX_LEASES))
        ],
        watch=[text(k, f"watch[{i}]") for i, k in enumerate(watch)],
        in_flight=integer(stats.get("in_flight"), "stats.in_flight", default=0),
        spool_backlog=integer(stats.get("spool_backlog"), "stats.spool_backlog", default=0),
        seq=sequence(data.get("seq")),
        node_id=None
        if data.get("node_id") is None
        else integer(data.get("node_id"), "node_id", low=1, high=999),
        advertise_url=advertised(data.get("advertise_url")),
    )


@dataclass
class ReleaseRequest:
    agent_id: str
    instance: str | None
    leases: list[LeaseRequest]
    seq: int | None = None


def sequence(value: Any) -> int | None:
    return None if value is None else integer(value, "seq", low=1, high=MAX_SEQ)


def release_request(data: Any) -> ReleaseRequest:
    data = obj(data, "(body)")
    return ReleaseRequest(
        agent_id=text(data.get("agent_id"), "agent_id"),
        instance=text(data.get("instance"), "instance", required=False, limit=64),
        leases=[
            lease_request(item, f"leases[{i}]", for_release=True)
            for i, item in enumerate(listing(data.get("leases"), "leases", MAX_LEASES))
        ],
        seq=sequence(data.get("seq")),
    )
