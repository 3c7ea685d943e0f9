"""The hot-path decision: may this key make this call now? Pure in-memory work, no I/O.

Order of checks is part of the contract (ARCHITECTURE.md "Agent rules"): key known (401) ->
key active (403) -> key not expired (403) -> user active (403) -> type priced (400; an alias is
its canonical type from here on) -> type allowed (403) -> IP allowed (403) -> CPM token (429) ->
daily token (429) -> balance >= price (402). ``authenticate`` is the
first four, so the route can answer auth failures before it parses a body; ``admit`` is the
rest and takes the holds; ``check`` is both, for benchmarks and tests.

A refusal with ``wait`` set means only a lease is missing: the caller may wait for one sync
(up to ``lease_wait``) and ask again; otherwise the refusal is final.
"""

from __future__ import annotations

import hashlib
import math
import time
from typing import Any

from solverfleet.agent.clientip import in_nets, parse_ip
from solverfleet.agent.keystore import Key, Snapshot, User
from solverfleet.agent.limiter import BALANCE, CPM, DAILY, Hold, Limiter, Refusal
from solverfleet.captchatypes import BUILTIN_ALIASES
from solverfleet.money import format_micros

BANNED = "ip_banned"
_STATUS = {
    BANNED: 429,
    "not_ready": 503,
    "invalid_key": 401,
    "key_disabled": 403,
    "key_expired": 403,
    "user_disabled": 403,
    "unknown_type": 400,
    "type_not_allowed": 403,
    "ip_not_allowed": 403,
    CPM: 429,
    DAILY: 429,
    BALANCE: 402,
}


class Decision:
    """Allowed (``code`` None, with the key, user, hold and price) or refused (code, message,
    HTTP status, optional Retry-After; ``wait``: only a lease is missing)."""

    __slots__ = ("code", "hold", "key", "message", "price", "retry_after", "slug", "user", "wait")

    def __init__(
        self,
        code: str | None,
        message: str = "",
        retry_after: int | None = None,
        wait: bool = False,
        key: Key | None = None,
        user: User | None = None,
        hold: Hold | None = None,
        price: int = 0,
    ) -> None:
        self.code = code
        self.message = message
        self.retry_after = retry_after
        self.wait = wait
        self.key = key
        self.user = user
        self.hold = hold
        self.price = price
        self.slug: str | None = None  # the canonical captcha type of an allowed call

    @property
    def allowed(self) -> bool:
        return self.code is None

    @property
    def status(self) -> int:
        return 200 if self.code is None else _STATUS[self.code]

    def __repr__(self) -> str:
        return f"Decision({self.code or 'allowed'}, wait={self.wait})"


def _short(text: str) -> str:
    return text if len(text) <= 64 else text[:61] + "..."


def authenticate(
    snap: Snapshot, secret: str | None, now: float | None = None
) -> tuple[Key, User] | Decision:
    """Key known, key active, key not expired, user active: ``(key, user)`` or the refusal. A
    rotated-out secret counts as known until its grace ends, and a key with ``expires_at``
    until then (``now``: unix time, default this host's clock: no sync needed)."""
    if not secret:
        return Decision("invalid_key", "missing API key (Authorization: Bearer <key>)")
    digest = hashlib.sha256(secret.encode()).digest()
    key = snap.by_hash.get(digest)
    if key is None or (
        digest != key.secret_hash and not key.accepts(digest, time.time() if now is None else now)
    ):
        return Decision("invalid_key", "unknown API key")
    if not key.active:
        return Decision("key_disabled", "this API key is disabled")
    if key.expires_at is not None and (time.time() if now is None else now) >= key.expires_at:
        return Decision("key_expired", "this API key has expired")
    user = snap.users.get(key.user_id)
    if user is None or not user.active:
        return Decision("user_disabled", "the user of this API key is disabled")
    return key, user


def admit(
    snap: Snapshot,
    limiter: Limiter,
    key: Key,
    user: User,
    slug: str,
    client_ip: str,
    now: float,
    *,
    offline: bool = False,
    allowance: int = 0,
) -> Decision:
    """Type priced, type allowed, IP allowed, then CPM/daily/balance leases (taking holds)."""
    return _admit(snap, limiter, key, user, slug, client_ip, now, offline, allowance)


def check(
    snap: Snapshot,
    limiter: Limiter,
    secret: str | None,
    slug: str,
    client_ip: str,
    now: float,
    **options: Any,
) -> Decision:
    """``authenticate`` then ``admit`` (``options``: admit's ``offline``, ``allowance``)."""
    auth = authenticate(snap, secret, now)
    if isinstance(auth, Decision):
        return auth
    return admit(snap, limiter, auth[0], auth[1], slug, client_ip, now, **options)


def _admit(snap, limiter, key, user, slug, client_ip, now, offline, allowance) -> Decision:
    # Positional and flat on purpose: this runs on every call (see bench/bench_precheck.py).
    # An alias ("cloudflare-turnstile") is its canonical type from here on: price, allowed
    # types, limits and the usage event all see "turnstile".
    aliases = snap.aliases.get(key.account) if snap.aliases else None
    if aliases:
        slug = aliases.get(slug, slug)
    slug = BUILTIN_ALIASES.get(slug, slug)
    prices, default = snap.pricing.get(key.account) or snap.global_pricing
    price = prices.get(slug, default)
    if price is None:
        return Decision("unknown_type", f"no price for captcha type {_short(slug)!r}")
    if key.allowed_types is not None and slug not in key.allowed_types:
        return Decision("type_not_allowed", f"type {_short(slug)!r} is not allowed for this key")
    if key.ip_allowlist is not None and not in_nets(parse_ip(client_ip), key.ip_allowlist):
        return Decision("ip_not_allowed", f"source address {_short(client_ip)} is not allowed")
    outcome = limiter.admit(key, user, price, now, offline, allowance)
    if outcome.__class__ is Refusal:
        return refusal(outcome, price, now)  # type: ignore[arg-type]
    decision = Decision(None, "", None, False, key, user, outcome, price)  # type: ignore[arg-type]
    decision.slug = slug
    return decision


def refusal(outcome: Refusal, price: int, now: float) -> Decision:
    if outcome.code == CPM:
        retry = max(1, math.ceil(60 - now % 60))
        message = f"calls-per-minute limit of this key reached; retry in {retry} s"
        return Decision(CPM, message, retry, outcome.wait)
    if outcome.code == DAILY:
        retry = max(1, math.ceil(86400 - now % 86400))
        message = "daily limit of this user reached; it resets at 00:00 UTC"
        return Decision(DAILY, message, retry, outcome.wait)
    message = f"balance too low for this call (costs {format_micros(price)})"
    return Decision(BALANCE, message, None, outcome.wait, price=price)
