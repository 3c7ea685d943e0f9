"""Local leases: holds, commit/release, acks, refill and return requests, thread safety."""

from __future__ import annotations

import threading

from hypothesis import given, settings
from hypothesis import strategies as st

from solverfleet.agent.keystore import parse_snapshot
from solverfleet.agent.limiter import Hold, Limiter, Refusal, day_num, day_str
from solverfleet.keyhash import hash_secret

NOW = 1_765_555_555.0
DAY = day_str(int(NOW // 86400))


def make_snap(cpm=None, daily_limit=None, active=True, balance_micros=0):
    return parse_snapshot(
        1,
        {
            "prices": {"t": 2000},
            "users": [{"id": "u", "daily_limit": daily_limit, "active": True}],
            "keys": [
                {
                    "id": "k",
                    "secret_hash": hash_secret("s"),
                    "user_id": "u",
                    "cpm": cpm,
                    "active": active,
                    "balance_micros": balance_micros,
                }
            ],
        },
    )


def balance_grant(held, granted=None):
    granted = held if granted is None else granted
    return {"kind": "balance", "key_id": "k", "granted_micros": granted, "held_micros": held}


def daily_grant(tokens, held=None):
    held = tokens if held is None else held
    return {"kind": "daily", "user_id": "u", "day": DAY, "granted": tokens, "held": held}


def admit(limiter, snap, now=NOW, offline=False, allowance=0):
    return limiter.admit(snap.keys["k"], snap.users["u"], 2000, now, offline, allowance)


def test_hold_commit_release_arithmetic():
    snap, limiter = make_snap(), Limiter()
    limiter.apply_grants([balance_grant(10_000)])
    bal = limiter.balance["k"]
    a, b = admit(limiter, snap), admit(limiter, snap)
    assert isinstance(a, Hold) and isinstance(b, Hold)
    assert (bal.available, bal.holds, bal.unacked) == (6000, 4000, 0)
    limiter.commit(a)
    limiter.release(b)
    assert (bal.available, bal.holds, bal.unacked) == (8000, 0, 2000)
    assert limiter.remainder("k") == 8000
    limiter.commit(a)  # twice: no effect
    limiter.release(a)  # after commit: no effect
    limiter.release(b)
    assert (bal.available, bal.holds, bal.unacked) == (8000, 0, 2000)


def test_holds_never_overspend_a_lease():
    snap, limiter = make_snap(), Limiter()
    limiter.apply_grants([balance_grant(5000)])
    outcomes = [admit(limiter, snap) for _ in range(4)]
    assert [isinstance(o, Hold) for o in outcomes] == [True, True, False, False]
    assert isinstance(outcomes[2], Refusal) and outcomes[2].code == "insufficient_balance"


def test_daily_token_hold_commit_release():
    snap, limiter = make_snap(daily_limit=10), Limiter()
    limiter.apply_grants([balance_grant(100_000), daily_grant(2)])
    lease = limiter.daily["u", int(NOW // 86400)]
    a, b = admit(limiter, snap), admit(limiter, snap)
    assert admit(limiter, snap).code == "daily_limit_reached"
    limiter.release(a)
    assert (lease.holds, lease.used) == (1, 0)
    limiter.commit(b)
    assert (lease.holds, lease.used) == (0, 1)
    assert isinstance(admit(limiter, snap), Hold)


def test_collector_reclaiming_a_count_lease_caps_it():
    snap, limiter = make_snap(daily_limit=10), Limiter()
    limiter.apply_grants([balance_grant(100_000), daily_grant(5)])
    limiter.apply_grants([daily_grant(0)])  # the collector reclaimed the lease
    assert admit(limiter, snap).code == "daily_limit_reached"


def test_acks_move_spend_from_unacked_to_the_collector_view():
    snap, limiter = make_snap(), Limiter()
    limiter.apply_grants([balance_grant(10_000)])
    for _ in range(3):
        limiter.commit(admit(limiter, snap))
    assert limiter.remainder("k") == 4000
    limiter.acked([("k", 2000), ("k", 2000)])
    bal = limiter.balance["k"]
    assert (bal.held, bal.unacked) == (6000, 2000)
    assert limiter.remainder("k") == 4000  # the balance view does not move on an ack


def test_first_demand_asks_for_every_missing_lease_in_one_round():
    snap, limiter = make_snap(cpm=120, daily_limit=1000), Limiter()
    refusal = admit(limiter, snap)
    assert (refusal.code, refusal.wait) == ("cpm_exceeded", True)  # CPM is checked first
    requests = {r["kind"]: r for r in limiter.lease_requests(snap, NOW, idle_after=60)}
    assert requests == {
        "balance": {"kind": "balance", "key_id": "k", "want_micros": 40_000, "min_micros": 2000,
                    "return_micros": 0, "urgent": True},
        "cpm": {"kind": "cpm", "key_id": "k", "window": int(NOW // 60), "want": 30,
                "urgent": True},
        "daily": {"kind": "daily", "user_id": "u", "day": DAY, "want": 250, "return": 0,
                  "urgent": True},
    }  # fmt: skip
    limiter.apply_grants([
        {"kind": "balance", "key_id": "k", "granted_micros": 40_000, "held_micros": 40_000},
        {"kind": "cpm", "key_id": "k", "window": int(NOW // 60), "granted": 30, "held": 30},
        {"kind": "daily", "user_id": "u", "day": DAY, "granted": 250, "held": 250},
    ])  # fmt: skip
    assert isinstance(admit(limiter, snap), Hold)
    assert limiter.lease_requests(snap, NOW, idle_after=60) == []  # all well above low water


def test_a_well_stocked_lease_is_not_refilled_and_a_low_one_is():
    snap, limiter = make_snap(), Limiter()
    limiter.apply_grants([balance_grant(40_000)])
    limiter.commit(admit(limiter, snap))  # 38,000 left of a 40,000 target
    assert limiter.lease_requests(snap, NOW, 60) == []
    limiter.apply_grants([balance_grant(20_000)])  # collector says: only 20,000 left
    limiter.commit(admit(limiter, snap))
    (request,) = limiter.lease_requests(snap, NOW, 60)
    assert request["want_micros"] == 40_000 - 16_000 and request["min_micros"] == 2000


def test_a_remainder_below_one_price_asks_only_for_what_completes_a_call():
    # Halved grants leave slivers: 5,000 held at a price of 2,000 is 2 calls and 1,000 over.
    # Asking for at least a whole price made the collector refuse the 1,000 still in its pool
    # (a grant below min_micros is 0), so the key's last call's worth could never be spent.
    snap, limiter = make_snap(), Limiter()
    limiter.apply_grants([balance_grant(5_000)])
    limiter.commit(admit(limiter, snap))
    limiter.commit(admit(limiter, snap))
    assert isinstance(admit(limiter, snap), Refusal)
    (request,) = limiter.lease_requests(snap, NOW, 60)
    assert request["min_micros"] == 1_000  # what one more call lacks
    limiter.apply_grants([balance_grant(6_000, granted=1_000)])  # the pool's last 1,000
    assert isinstance(admit(limiter, snap), Hold)


def test_a_starved_sliver_is_given_back_for_another_agent_to_complete():
    # Two agents holding 1,000 each at a price of 2,000: neither can serve, the pool is empty,
    # so each refill is refused. Each gives its sliver back; the next ask can then get 2,000.
    snap, limiter = make_snap(), Limiter()
    limiter.apply_grants([balance_grant(1_000)])
    assert isinstance(admit(limiter, snap), Refusal)  # demand, and too little to serve it
    (ask,) = limiter.lease_requests(snap, NOW, 60)
    assert ask["min_micros"] == 1_000 and ask["return_micros"] == 0
    limiter.apply_grants([balance_grant(1_000, granted=0)])  # starved
    (give_back,) = limiter.lease_requests(snap, NOW, 60)
    assert give_back["return_micros"] == 1_000 and give_back["want_micros"] == 0
    limiter.apply_grants([balance_grant(0, granted=0)])
    (ask,) = limiter.lease_requests(snap, NOW, 60)
    assert ask["min_micros"] == 2_000 and ask["return_micros"] == 0  # a whole call, or nothing
    limiter.apply_grants([balance_grant(2_000)])
    assert isinstance(admit(limiter, snap), Hold)


def test_a_burst_asks_for_at_least_what_is_in_flight():
    snap, limiter = make_snap(), Limiter()
    limiter.apply_grants([balance_grant(200_000)])  # 100 calls' worth
    holds = [admit(limiter, snap) for _ in range(100)]  # all of it in flight at once
    assert all(isinstance(h, Hold) for h in holds)
    assert isinstance(admit(limiter, snap), Refusal)  # the 101st waits for a refill
    (request,) = limiter.lease_requests(snap, NOW, 60)
    # Sized by the burst (100 in flight), not by the 20-call default.
    assert request["want_micros"] >= 100 * 2000


def test_idle_and_deactivated_leases_are_returned():
    snap, limiter = make_snap(), Limiter()
    limiter.apply_grants([balance_grant(40_000)])
    limiter.commit(admit(limiter, snap))
    (request,) = limiter.lease_requests(snap, NOW + 61, idle_after=60)
    assert request == {"kind": "balance", "key_id": "k", "want_micros": 0, "min_micros": 0,
                       "return_micros": 38_000}  # 40,000 held - 2,000 unacked  # fmt: skip
    assert limiter.balance["k"].available == 0  # gone locally before the collector answers
    limiter.apply_grants([balance_grant(40_000)])
    (request,) = limiter.lease_requests(make_snap(active=False), NOW, idle_after=60)
    assert request["return_micros"] == 38_000


def test_starved_lease_clears_on_a_later_grant():
    snap, limiter = make_snap(), Limiter()
    admit(limiter, snap)
    limiter.lease_requests(snap, NOW, 60)
    limiter.apply_grants([balance_grant(0, 0)])
    assert admit(limiter, snap).wait is False
    limiter.lease_requests(snap, NOW, 60)  # still demanded: asked again every round
    limiter.apply_grants([balance_grant(10_000)])  # a top-up arrived
    assert isinstance(admit(limiter, snap), Hold)


def test_asked_but_unanswered_counts_as_starved():
    snap, limiter = make_snap(cpm=10), Limiter()
    admit(limiter, snap)
    assert limiter.lease_requests(snap, NOW, 60)
    limiter.apply_grants([])  # the collector had nothing for it
    refusal = admit(limiter, snap)
    assert (refusal.code, refusal.wait) == ("cpm_exceeded", False)


def test_release_all_returns_unspent_balance_and_daily_tokens():
    snap, limiter = make_snap(daily_limit=10), Limiter()
    limiter.apply_grants([balance_grant(10_000), daily_grant(4)])
    limiter.commit(admit(limiter, snap))
    leases = limiter.release_all(NOW)
    assert {"kind": "balance", "key_id": "k", "return_micros": 8000} in leases
    assert {"kind": "daily", "user_id": "u", "day": DAY, "return": 3} in leases
    assert limiter.release_all(NOW) == []  # nothing left to give twice


def test_day_helpers_round_trip():
    assert day_str(0) == "1970-01-01"
    assert day_num(day_str(20_434)) == 20_434


def test_threads_racing_for_the_last_calls_get_exactly_the_lease():
    snap, limiter = make_snap(), Limiter()
    limiter.apply_grants([balance_grant(2000 * 100)])
    wins = []
    start = threading.Barrier(8)

    def worker():
        start.wait()
        mine = [admit(limiter, snap) for _ in range(50)]
        wins.extend(h for h in mine if isinstance(h, Hold))

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(wins) == 100 and limiter.balance["k"].available == 0


@settings(max_examples=150, deadline=None)
@given(st.lists(st.sampled_from(["admit", "commit", "release", "ack", "grant"]), max_size=60))
def test_online_leases_never_go_negative(ops):
    snap, limiter = make_snap(), Limiter()
    limiter.apply_grants([balance_grant(9000)])
    open_holds: list[Hold] = []
    committed = 0
    for op in ops:
        if op == "admit":
            outcome = admit(limiter, snap)
            if isinstance(outcome, Hold):
                open_holds.append(outcome)
        elif op in ("commit", "release") and open_holds:
            hold = open_holds.pop(0)
            (limiter.commit if op == "commit" else limiter.release)(hold)
            committed += op == "commit"
        elif op == "ack" and committed:
            limiter.acked([("k", 2000)])
            committed -= 1
        elif op == "grant":
            bal = limiter.balance["k"]
            limiter.apply_grants([balance_grant(bal.held + 4000, 4000)])
        bal = limiter.balance["k"]
        assert bal.available >= 0
        assert bal.holds == 2000 * len(open_holds)
        assert bal.unacked == 2000 * committed


def test_a_sync_carries_at_most_the_cap_and_the_rest_comes_next(monkeypatch):
    from solverfleet.agent import negotiation

    monkeypatch.setattr(negotiation, "MAX_LEASES_PER_SYNC", 3)
    snap, limiter = make_snap(), Limiter()
    for n in range(5):
        key = snap.keys["k"].__class__(**{**_fields(snap.keys["k"]), "id": f"k{n}"})
        limiter.admit(key, snap.users["u"], 2000, NOW, False, 0)
        limiter.apply_grants([{"kind": "balance", "key_id": f"k{n}", "granted_micros": 9000,
                              "held_micros": 9000}])  # fmt: skip
    # Every lease is idle and must be returned: three now, two in the next round.
    first = limiter.lease_requests(snap, NOW + 120, idle_after=60)
    second = limiter.lease_requests(snap, NOW + 120, idle_after=60)
    assert (len(first), len(second)) == (3, 2)
    assert sum(r["return_micros"] for r in first + second) == 5 * 9000


def _fields(key):
    import dataclasses

    return {f.name: getattr(key, f.name) for f in dataclasses.fields(key)}


def test_a_return_lost_with_its_sync_is_settled_by_the_collector():
    snap, limiter = make_snap(), Limiter()
    limiter.apply_grants([balance_grant(40_000)])
    limiter.commit(admit(limiter, snap))
    (ret,) = limiter.lease_requests(snap, NOW + 61, idle_after=60)
    assert ret["return_micros"] == 38_000
    limiter.sync_failed()  # did the collector apply it? unknown
    (probe,) = limiter.lease_requests(snap, NOW + 62, idle_after=60)
    assert probe == {"kind": "balance", "key_id": "k", "want_micros": 0, "min_micros": 0,
                     "return_micros": 0}  # fmt: skip
    limiter.apply_grants([balance_grant(40_000, 0)])  # it did not: we still hold it all
    (again,) = limiter.lease_requests(snap, NOW + 63, idle_after=60)
    assert again["return_micros"] == 38_000  # returned for real this time
