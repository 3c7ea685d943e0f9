"""Shrunk schedules of bugs the simulator found, replayed as short regression tests. Findings
Each failed before its fix."""

from __future__ import annotations

import logging

from tests.sim import schedule


def _replay(ops: list[tuple], seed: int) -> None:
    logging.disable(logging.WARNING)
    try:
        schedule.run(ops, seed, strict=True)
    finally:
        logging.disable(logging.NOTSET)


def test_reclaim_ping_pong_refuses_an_affordable_call() -> None:
    """Seed 145. Three agents, key k0 (CPM 6, user daily 15, 0.05 balance), no faults: two
    calls admitted on a0 and a1, then a2's call waits on three leases (CPM, daily, balance).
    Each of a0/a1's low-water refills (recent demand) orders reclaims of what a2 was just granted
    but not yet spent, and a2's ask orders theirs back: the tokens bounce and a2 is refused
    (cpm_exceeded / daily / balance, wait) after 3 settle rounds and 20 waits (lease_wait)."""
    ops = [
        ("probe", 2, "k1"),
        ("tick",),
        ("call", 0, "k0", 2),
        ("tick",),
        ("call", 1, "k0", 1),
        ("probe", 2, "k0"),
    ]
    _replay(ops, 145)


def test_lost_sync_after_reclaim_overshoots_cpm() -> None:
    """Seed 6920283. Key k0, CPM 6: six calls admitted across a0..a2 in one minute; a reclaim
    order reaches a1 (its lease: granted 3, used 3), then a1's next sync request is lost.
    ``LeaseNegotiation.reclaim`` set ``answered = False``, and with the loop offline
    ``Limiter.admit`` takes the never-answered fallback (``ceiling - used`` = 3 left): a 7th call
    is admitted in the minute, with no limit change (the bound allows 0)."""
    ops = [
        ("tick",),
        ("call", 1, "k0", 1),
        ("tick",),
        ("call", 2, "k0", 0),
        ("probe", 2, "k0"),
        ("call", 1, "k0", 2),
        ("faults", 1, 1, 317394631),
        ("call", 0, "k0", 4),
        ("call", 2, "k0", 2),
        ("call", 1, "k0", 0),
        ("sync", 1),
        ("tick",),
        ("finish", 1, 126, False),
        ("call", 1, "k0", 2),
    ]
    _replay(ops, 6920283)


def test_lost_reclaim_order_lets_a_lowered_daily_limit_pass() -> None:
    """Seed 1080. u0's daily limit drops 15 -> 3 with three calls in flight (a0: 2, a1: 1); the
    change orders a reclaim of a1's daily lease (granted 3, used 1), but the answer carrying the
    order is lost (collector/reclaim.py reads and deletes orders in the sync transaction). a1's
    later syncs succeed with the new config, yet its lease keeps 2 tokens (collector `held` 2):
    a1 admits a 4th success on a day limited to 3 with no call left in flight at the change."""
    ops = [
        ("faults", 1, 2, 562363379),
        ("sync", 1),
        ("tick",),
        ("call", 0, "k1", 1),
        ("call", 1, "k0", 2),
        ("tick",),
        ("call", 0, "k0", 2),
        ("daily", "u0", 3),
        ("finish", 1, 29, True),
        ("tick",),
        ("sync", 1),
        ("finish", 0, 102, True),
        ("tick",),
        ("tick",),
        ("call", 1, "k1", 2),
        ("finish", 1, 221, True),
    ]
    _replay(ops, 1080)


def test_ceiling_set_mid_minute_keeps_unrecorded_tokens() -> None:
    """Seed 23272344, no faults. k0's CPM ceiling is lifted (6 -> none) and set again (2) in
    one minute. a2 asked for CPM tokens on its old snapshot (ceiling 6) while the collector had
    none: ``granted = want``, nothing recorded. After the ceiling of 2 is set, the collector shares
    a fresh pool of 2, the change's reclaim cannot see a2's unrecorded tokens, and a2 spends
    them: 3 calls admitted after the change (model: the ceiling counts from the change)."""
    ops = [
        ("tick",),
        ("cpm", "k0", None),
        ("call", 2, "k0", 2),
        ("call", 0, "k0", 2),
        ("cpm", "k0", 2),
        ("call", 0, "k2", 4),
        ("call", 0, "k0", 1),
        ("tick",),
        ("call", 2, "k0", 1),
        ("call", 2, "k0", 4),
    ]
    _replay(ops, 23272344)


def test_expired_lease_of_a_dead_agent_regrants_its_unshipped_usage() -> None:
    """Seed 5022, no network fault. a2 spools 2 successes of u0 and is killed before shipping;
    it stays down past lease_ttl. The collector voided its leases, not knowing of the 2
    successes: u0's daily limit set to 6 (4 successes so far, model), the pool it shared counted
    2, agents admitted up to 6 more, and a2's spool arrived at its restart: 7 successes on a day
    limited to 6, none in flight at the change. Fixed: a silent agent's leases are quarantined,
    not voided (collector/voiding.py)."""
    ops = [
        ("tick",),
        ("call", 2, "k0", 1),
        ("finish", 2, 302, True),
        ("call", 2, "k1", 1),
        ("finish", 2, 131, True),
        ("call", 0, "k0", 2),
        ("finish", 0, 471, True),
        ("crash", 2),
        ("call", 0, "k0", 2),
        ("advance", 3600),
        ("daily", "u0", 6),
        ("tick",),
        ("call", 1, "k1", 4),
        ("call", 1, "k1", 1),
        ("call", 0, "k0", 2),
        ("finish", 1, 572, True),
        ("finish", 1, 0, True),
    ]
    _replay(ops, 5022)


def test_expired_lease_of_a_dead_agent_overdraws_the_key() -> None:
    """Finding 5 for money (a constructed schedule, no network fault). k1 has 0.03 (15 calls),
    u0 no daily limit. a2 spends 2 calls and is killed before shipping; past lease_ttl the
    collector voided its lease and returned the remainder, which still included those 2 calls;
    a0 and a1 then spent the whole balance. The key ended below zero (-1 price) with no call
    in flight: promise 3 allows only -(calls in flight * price). Fixed by the quarantine."""
    ops: list[tuple] = [
        ("daily", "u0", None),
        ("tick",),
        ("call", 2, "k1", 1),
        ("finish", 2, 0, True),
        ("call", 2, "k1", 1),
        ("finish", 2, 0, True),
        ("crash", 2),
        ("advance", 3600),
        ("tick",),
    ]
    for i in range(16):
        ops += [("call", i % 2, "k1", 3), ("finish", i % 2, 0, True)]
    _replay(ops, 1)


def test_a_late_reset_voids_what_the_agent_was_granted_since() -> None:
    """Finding 6 (constructed after the simulator learned to delay sync requests). a0 restarts;
    its first reset sync is held up in the network (the agent times out), the retry resets and
    a0 is granted a lease of k1 and spends from it. Then the late reset arrives and voids that
    lease; a1 and a2 are granted the whole balance and spend it, while a0 still spends what it
    believes it holds: k1 ends below zero with no call in flight. Fixed: a process resets once
    (a reset from the instance already recorded is a retry or a late copy)."""
    ops: list[tuple] = [
        ("daily", "u0", None),
        ("tick",),
        ("crash", 0),
        ("restart", 0),
        ("faults", 0, 5, 1),
        ("sync", 0),
        ("heal", 0),
        ("sync", 0),
        ("sync", 0),
        ("call", 0, "k1", 5),
        ("finish", 0, 0, True),
        ("deliver_delayed",),
    ]
    for _ in range(8):
        ops += [("call", 1, "k1", 3), ("finish", 1, 0, True)]
        ops += [("call", 2, "k1", 3), ("finish", 2, 0, True)]
    for _ in range(8):
        ops += [("call", 0, "k1", 0), ("finish", 0, 0, True)]
    _replay(ops, 6)


def test_a_duplicated_sync_returns_daily_tokens_twice() -> None:
    """Finding 7, seed 2058808999 (shrunk from 200 ops to 28), once sync requests could be
    duplicated (fault set 4: a proxy's retry; the agent hears one answer). a2 hands back daily
    tokens of u0 it has not spent; the request is applied twice, so the collector takes back
    twice the return from a lease whose unshipped successes it cannot see, and shares the
    tokens again: 11 successes on a day limited to 10. Fixed: requests carry a per-process
    ``seq``; a repeat changes nothing (collector/requestorder.py)."""
    ops: list[tuple] = [
        ("tick",),
        ("call", 0, "k0", 2),
        ("call", 2, "k0", 4),
        ("probe", 2, "k0"),
        ("advance", 30),
        ("tick",),
        ("call", 2, "k0", 2),
        ("sync", 0),
        ("call", 2, "k1", 4),
        ("call", 0, "k1", 4),
        ("cpm", "k1", 6),
        ("call", 0, "k0", 1),
        ("call", 0, "k1", 4),
        ("finish", 0, 469, True),
        ("probe", 2, "k0"),
        ("call", 1, "k0", 1),
        ("finish", 0, 486, True),
        ("faults", 2, 4, 171656205),
        ("finish", 2, 704, False),
        ("call", 0, "k1", 2),
        ("call", 2, "k0", 4),
        ("finish", 0, 527, True),
        ("daily", "u0", 10),
        ("finish", 0, 581, True),
        ("tick",),
        ("tick",),
        ("call", 1, "k0", 1),
        ("call", 0, "k2", 4),
    ]
    _replay(ops, 2058808999)


def test_a_duplicated_sync_strands_its_grant_with_the_asker() -> None:
    """Finding 8, seed 902040319 (6 ops). a0's urgent ask for daily tokens is duplicated by
    the network: the first copy is granted 3, the second is a stale repeat that grants nothing,
    and a0 hears only the second. The 3 tokens sit in a0's own lease at the collector, a0
    does not know of them (and marks the lease starved), and no reclaim can reach them: a
    call the fleet can afford is refused until the day ends. Fixed: an exact repeat of the
    last lease-changing request is answered with what the first copy was granted."""
    ops = [
        ("faults", 0, 4, 218220202),
        ("tick",),
        ("call", 0, "k1", 2),
        ("heal", 0),
        ("advance", 61),
        ("probe", 0, "k1"),
    ]
    _replay(ops, 902040319)


def test_a_quarantine_kept_a_lowered_limits_order_from_its_agent() -> None:
    """Seed 236065936 (11 ops), found by CI's exploration. u0's daily limit is lowered to 3
    while a1 holds 3 tokens and its requests are held up in the network; a1 stays silent past
    lease_ttl, so the next sync quarantines its leases, and quarantining dropped its pending
    reclaim orders (as voiding did). Back online, a1 never heard of the lowered limit and spent
    its tokens: 4 successes on a day limited to 3. Fixed: a quarantined agent's orders wait."""
    ops = [
        ("probe", 2, "k1"),
        ("call", 2, "k1", 2),
        ("call", 1, "k1", 2),
        ("faults", 1, 5, 797233752),
        ("tick",),
        ("daily", "u0", 3),
        ("advance", 130),
        ("faults", 1, 0, 681096808),
        ("tick",),
        ("call", 1, "k1", 2),
        ("finish", 1, 96, True),
    ]
    _replay(ops, 236065936)
