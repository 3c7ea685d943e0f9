"""The pure pre-check: every refusal code, the contract's order of checks, holds, no I/O."""

from __future__ import annotations

import builtins
import socket

import pytest

from solverfleet.agent import precheck
from solverfleet.agent.keystore import parse_snapshot
from solverfleet.agent.limiter import Limiter, day_str
from solverfleet.keyhash import hash_secret

NOW = 1_765_555_555.25  # 2025-12-12 16:05:55.25 UTC: 4.75 s to the next minute
IP = "10.1.2.3"


def key_row(key_id: str, user_id: str = "alice", **extra):
    row = {
        "id": key_id, "secret_hash": hash_secret(f"secret-{key_id}"), "user_id": user_id,
        "account": "acme", "project": "web", "environment": "prod", "allowed_types": None,
        "cpm": None, "ip_allowlist": None, "active": True, "balance_micros": 10_000_000,
    }  # fmt: skip
    row.update(extra)
    return row


@pytest.fixture
def snap():
    return parse_snapshot(
        7,
        {
            "prices": {"turnstile": 2000, "recaptcha-v2": 3000},
            "users": [
                {
                    "id": "alice",
                    "email": "a@x",
                    "role": "user",
                    "daily_limit": None,
                    "active": True,
                    "account": "acme",
                },
                {
                    "id": "bob",
                    "email": "b@x",
                    "role": "user",
                    "daily_limit": 2,
                    "active": True,
                    "account": "acme",
                },
                {
                    "id": "carol",
                    "email": None,
                    "role": "user",
                    "daily_limit": None,
                    "active": False,
                    "account": "acme",
                },
            ],
            "keys": [
                key_row("web"),
                key_row("off", active=False),
                key_row("carol-key", "carol"),
                key_row("ghost-key", "nobody"),
                key_row("typed", allowed_types=["recaptcha-v2"]),
                key_row("netted", ip_allowlist=["10.0.0.0/8", "2001:db8::/32"]),
                key_row("limited", cpm=2),
                key_row("bob-key", "bob"),
                key_row(
                    "everything",
                    "bob",
                    allowed_types=["turnstile"],
                    cpm=5,
                    ip_allowlist=["10.0.0.0/8"],
                ),
            ],
        },
    )


def grant_everything(limiter: Limiter, snap, now: float = NOW, micros: int = 1_000_000) -> None:
    """Give this agent generous leases for every key and user, as a sync answer would."""
    grants = []
    for key in snap.keys.values():
        grants.append({"kind": "balance", "key_id": key.id, "granted_micros": micros,
                       "held_micros": micros})  # fmt: skip
        if key.cpm is not None:
            grants.append({"kind": "cpm", "key_id": key.id, "window": int(now // 60),
                           "granted": key.cpm, "held": key.cpm})  # fmt: skip
    for user in snap.users.values():
        if user.daily_limit is not None:
            grants.append({"kind": "daily", "user_id": user.id, "day": day_str(int(now // 86400)),
                           "granted": user.daily_limit, "held": user.daily_limit})  # fmt: skip
    limiter.apply_grants(grants)


@pytest.fixture
def limiter(snap):
    limiter = Limiter()
    grant_everything(limiter, snap)
    return limiter


def check(snap, limiter, key_id: str | None, slug: str = "turnstile", ip: str = IP, **kw):
    secret = None if key_id is None else f"secret-{key_id}"
    return precheck.check(snap, limiter, secret, slug, ip, kw.pop("now", NOW), **kw)


def test_allowed_call_holds_the_price(snap, limiter):
    decision = check(snap, limiter, "web")
    assert decision.allowed and decision.status == 200
    assert decision.key.id == "web" and decision.user.id == "alice"
    assert decision.price == 2000 and decision.hold.price == 2000
    assert limiter.balance["web"].holds == 2000
    assert limiter.remainder("web") == 1_000_000  # held, not spent


@pytest.mark.parametrize(
    ("key_id", "slug", "ip", "code", "status"),
    [
        (None, "turnstile", IP, "invalid_key", 401),
        ("nope", "turnstile", IP, "invalid_key", 401),
        ("off", "turnstile", IP, "key_disabled", 403),
        ("carol-key", "turnstile", IP, "user_disabled", 403),
        ("ghost-key", "turnstile", IP, "user_disabled", 403),
        ("web", "hcaptcha", IP, "unknown_type", 400),
        ("typed", "turnstile", IP, "type_not_allowed", 403),
        ("netted", "turnstile", "192.168.1.1", "ip_not_allowed", 403),
        ("netted", "turnstile", "not-an-ip", "ip_not_allowed", 403),
    ],
)
def test_static_refusals(snap, limiter, key_id, slug, ip, code, status):
    decision = check(snap, limiter, key_id, slug, ip)
    assert (decision.allowed, decision.code, decision.status) == (False, code, status)
    assert decision.message and decision.retry_after is None and not decision.wait


@pytest.mark.parametrize("ip", ["10.200.0.1", "2001:db8::5", "::ffff:10.0.0.9"])
def test_allowlist_accepts_v4_v6_and_mapped(snap, limiter, ip):
    assert check(snap, limiter, "netted", ip=ip).allowed


def test_cpm_exceeded_with_retry_after_to_next_minute(snap, limiter):
    assert check(snap, limiter, "limited").allowed
    assert check(snap, limiter, "limited").allowed
    decision = check(snap, limiter, "limited")
    assert (decision.code, decision.status) == ("cpm_exceeded", 429)
    assert decision.retry_after == 5  # ceil(4.75)
    assert not decision.wait  # this agent holds the whole ceiling: no sync can help


def test_daily_limit_reached_with_retry_after_to_midnight(snap, limiter):
    for _ in range(2):
        decision = check(snap, limiter, "bob-key")
        limiter.commit(decision.hold)
    decision = check(snap, limiter, "bob-key")
    assert (decision.code, decision.status) == ("daily_limit_reached", 429)
    assert decision.retry_after == 86400 - int(NOW % 86400)  # 7 h 54 min 4.75 s, rounded up


def test_daily_tokens_are_held_and_released(snap, limiter):
    first, second = check(snap, limiter, "bob-key"), check(snap, limiter, "bob-key")
    assert check(snap, limiter, "bob-key").code == "daily_limit_reached"  # both held
    limiter.release(first.hold)
    assert check(snap, limiter, "bob-key").allowed  # a failed call gave its token back
    limiter.commit(second.hold)


def test_insufficient_balance(snap):
    limiter = Limiter()
    grant_everything(limiter, snap, micros=5000)
    assert check(snap, limiter, "web").allowed  # 2000
    assert check(snap, limiter, "web").allowed  # 4000 held
    decision = check(snap, limiter, "web")
    assert (decision.code, decision.status) == ("insufficient_balance", 402)
    assert "0.002" in decision.message


def test_order_of_checks(snap, limiter):
    # Disabled key beats an unknown type; unknown type beats type/IP rules.
    assert check(snap, limiter, "off", "hcaptcha").code == "key_disabled"
    assert check(snap, limiter, "everything", "hcaptcha", "8.8.8.8").code == "unknown_type"
    assert check(snap, limiter, "everything", "recaptcha-v2", "8.8.8.8").code == "type_not_allowed"
    assert check(snap, limiter, "everything", "turnstile", "8.8.8.8").code == "ip_not_allowed"


def test_cpm_before_daily_before_balance(snap):
    limiter = Limiter()
    grant_everything(limiter, snap, micros=0)  # no balance at all
    assert check(snap, limiter, "everything").code == "insufficient_balance"
    for _ in range(2):  # use up bob's daily tokens through another key
        limiter.apply_grants([{"kind": "balance", "key_id": "bob-key", "granted_micros": 9000,
                              "held_micros": 9000}])  # fmt: skip
        limiter.commit(check(snap, limiter, "bob-key").hold)
    assert check(snap, limiter, "everything").code == "daily_limit_reached"
    limiter.cpm["everything", int(NOW // 60)].used = 5
    assert check(snap, limiter, "everything").code == "cpm_exceeded"


def test_a_refusal_takes_no_tokens(snap):
    limiter = Limiter()
    grant_everything(limiter, snap, micros=0)
    for _ in range(3):
        assert check(snap, limiter, "everything").code == "insufficient_balance"
    assert limiter.cpm["everything", int(NOW // 60)].used == 0
    assert limiter.daily["bob", int(NOW // 86400)].holds == 0


def test_missing_lease_asks_to_wait_then_starved_lease_refuses_at_once(snap):
    limiter = Limiter()
    decision = check(snap, limiter, "web")
    assert (decision.code, decision.wait) == ("insufficient_balance", True)
    requests = limiter.lease_requests(snap, NOW, 60)
    assert requests == [{"kind": "balance", "key_id": "web", "want_micros": 40_000,
                         "min_micros": 2000, "return_micros": 0, "urgent": True}]  # fmt: skip
    limiter.apply_grants([{"kind": "balance", "key_id": "web", "granted_micros": 0,
                          "held_micros": 0}])  # fmt: skip
    decision = check(snap, limiter, "web")
    assert (decision.code, decision.wait) == ("insufficient_balance", False)


def test_new_minute_needs_a_new_cpm_lease(snap, limiter):
    decision = check(snap, limiter, "limited", now=NOW + 60)
    assert (decision.code, decision.wait) == ("cpm_exceeded", True)


def test_offline_serves_within_leases_and_refuses_beyond(snap):
    limiter = Limiter()
    grant_everything(limiter, snap, micros=4000)
    assert check(snap, limiter, "web", offline=True).allowed
    assert check(snap, limiter, "web", offline=True).allowed
    decision = check(snap, limiter, "web", offline=True)
    assert (decision.code, decision.wait) == ("insufficient_balance", False)


def test_offline_allowance_permits_a_bounded_overdraft(snap):
    limiter = Limiter()
    grant_everything(limiter, snap, micros=2000)
    allowed = [check(snap, limiter, "web", offline=True, allowance=5000).allowed for _ in range(5)]
    assert allowed == [True, True, True, False, False]  # 2000 lease + 2 x 2000 within 5000


def test_offline_without_a_cpm_lease_falls_back_to_the_ceiling(snap, limiter):
    later = NOW + 60  # a new minute while the collector is away
    results = [check(snap, limiter, "limited", now=later, offline=True) for _ in range(3)]
    assert [d.code for d in results] == [None, None, "cpm_exceeded"]
    assert not results[2].wait


def test_lowered_cpm_ceiling_applies_at_once(snap, limiter):
    assert check(snap, limiter, "limited").allowed
    lowered = parse_snapshot(
        8,
        {
            "prices": dict(snap.prices),
            "users": [{"id": "alice", "daily_limit": None, "active": True}],
            "keys": [key_row("limited", cpm=1)],
        },
    )
    assert check(lowered, limiter, "limited").code == "cpm_exceeded"


def test_precheck_does_no_io(snap, limiter, monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("I/O on the hot path")

    monkeypatch.setattr(builtins, "open", forbidden)
    monkeypatch.setattr(socket.socket, "connect", forbidden)
    monkeypatch.setattr(socket.socket, "send", forbidden)
    for key_id in ["web", "netted", "limited", "bob-key", "nope", "off"]:
        check(snap, limiter, key_id)
