"""The agent's side of reclaim: waiting while the collector reclaims slack, handing leases back
on an order (and not asking for them again in the same sync), forgetting starvation when key
data changes."""

from __future__ import annotations

from solverfleet.agent.limiter import Hold, Limiter, Refusal
from tests.unit.test_agent_limiter import (
    DAY,
    NOW,
    admit,
    balance_grant,
    daily_grant,
    make_snap,
)


def test_a_reclaiming_answer_makes_the_hot_path_wait_not_refuse():
    snap, limiter = make_snap(), Limiter()
    assert isinstance(admit(limiter, snap), Refusal)
    limiter.lease_requests(snap, NOW, 60)
    limiter.apply_grants([{**balance_grant(0, 0), "reclaiming": True}])
    refusal = admit(limiter, snap)
    assert (refusal.code, refusal.wait) == ("insufficient_balance", True)
    (ask,) = limiter.lease_requests(snap, NOW, 60)  # asked again next round
    assert ask["want_micros"] > 0
    limiter.apply_grants([balance_grant(0, 0)])  # nothing more to reclaim: final
    assert admit(limiter, snap).wait is False


def test_a_balance_order_hands_back_the_unspent_part_at_once():
    snap, limiter = make_snap(), Limiter()
    limiter.apply_grants([balance_grant(10_000)])
    spent, in_flight = admit(limiter, snap), admit(limiter, snap)
    limiter.commit(spent)
    assert limiter.reclaim([{"kind": "balance", "key_id": "k"}]) is True
    assert limiter.balance["k"].available == 0  # out of use before the next sync
    assert isinstance(admit(limiter, snap), Refusal)
    requests = limiter.lease_requests(snap, NOW, 60)
    # 10,000 - 2,000 spent (unacked) - 2,000 in flight; no new ask in the same sync.
    assert requests == [{"kind": "balance", "key_id": "k", "want_micros": 0, "min_micros": 0,
                         "return_micros": 6_000, "settle": True}]  # fmt: skip
    limiter.apply_grants([balance_grant(4_000, granted=0)])
    limiter.release(in_flight)
    (ask,) = limiter.lease_requests(snap, NOW, 60)  # demand is still there: ask next round
    assert ask["want_micros"] > 0 and "settle" not in ask


def test_an_order_for_a_lease_never_held_still_settles():
    snap, limiter = make_snap(), Limiter()
    limiter.reclaim([{"kind": "balance", "key_id": "k"}])
    (item,) = limiter.lease_requests(snap, NOW, 60)
    assert item["return_micros"] == 0 and item["settle"] is True


def test_count_orders_return_unconsumed_tokens():
    snap, limiter = make_snap(cpm=30, daily_limit=100), Limiter()
    window = int(NOW // 60)
    limiter.apply_grants(
        [
            {"kind": "cpm", "key_id": "k", "window": window, "granted": 7, "held": 7},
            daily_grant(20),
            balance_grant(100_000),
        ]
    )
    limiter.commit(admit(limiter, snap))
    limiter.reclaim(
        [
            {"kind": "cpm", "key_id": "k", "window": window},
            {"kind": "daily", "user_id": "u", "day": DAY},
        ]
    )
    items = limiter.lease_requests(snap, NOW, 60)
    by_kind = {i["kind"]: i for i in items}
    assert by_kind["cpm"] == {"kind": "cpm", "key_id": "k", "window": window, "want": 0,
                              "return": 6, "settle": True}  # fmt: skip
    assert by_kind["daily"] == {"kind": "daily", "user_id": "u", "day": DAY, "want": 0,
                                "return": 19, "settle": True}  # fmt: skip
    # Nothing left to spend until the collector grants again under the new limits.
    refusal = admit(limiter, snap)
    assert refusal.code == "cpm_exceeded" and refusal.wait is True


def test_new_key_data_forgets_starvation():
    snap, limiter = make_snap(), Limiter()
    admit(limiter, snap)
    limiter.lease_requests(snap, NOW, 60)
    limiter.apply_grants([balance_grant(0, 0)])
    assert admit(limiter, snap).wait is False
    limiter.refresh(snap, make_snap())  # same data: still starved
    assert admit(limiter, snap).wait is False
    topped = make_snap(balance_micros=10_000)
    limiter.refresh(snap, topped)
    assert admit(limiter, topped).wait is True  # wait for the sync that brings the grant
    limiter.lease_requests(topped, NOW, 60)
    limiter.apply_grants([balance_grant(10_000)])
    assert isinstance(admit(limiter, topped), Hold)


def test_a_raised_cpm_ends_a_starved_window():
    snap, limiter = make_snap(cpm=5), Limiter()
    window = int(NOW // 60)
    limiter.apply_grants([balance_grant(100_000)])
    assert isinstance(admit(limiter, snap), Refusal)
    (ask,) = [i for i in limiter.lease_requests(snap, NOW, 60) if i["kind"] == "cpm"]
    assert ask["want"] > 0
    # Other agents have the whole ceiling this minute: starved, refuse at once.
    limiter.apply_grants([{"kind": "cpm", "key_id": "k", "window": window, "granted": 0,
                           "held": 0}])  # fmt: skip
    assert admit(limiter, snap).wait is False
    raised = make_snap(cpm=10)
    limiter.refresh(snap, raised)
    assert admit(limiter, raised).wait is True  # the next sync may grant under the new ceiling


def test_a_refused_top_up_while_calls_could_be_served_is_not_starvation():
    # The bench's single-agent tail: a low-water refill asked with calls still in the lease
    # was refused (the pool was empty then); by the time the lease runs dry the pool may hold
    # the next call, so the hot path waits for a sync instead of refusing at once.
    snap, limiter = make_snap(), Limiter()
    limiter.apply_grants([balance_grant(4_000)])  # two calls, below the low-water mark
    limiter.commit(admit(limiter, snap))
    (ask,) = limiter.lease_requests(snap, NOW, 60)
    assert ask["want_micros"] > 0
    limiter.apply_grants([balance_grant(4_000, granted=0)])
    limiter.commit(admit(limiter, snap))  # the last call in the lease
    refusal = admit(limiter, snap)
    assert refusal.code == "insufficient_balance" and refusal.wait is True
    (ask,) = limiter.lease_requests(snap, NOW, 60)  # urgent now: a zero grant is final
    limiter.apply_grants([balance_grant(4_000, granted=0)])
    assert admit(limiter, snap).wait is False
