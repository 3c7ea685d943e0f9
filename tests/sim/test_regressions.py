"""Shrunk schedules of bugs the simulator found, replayed as short regression tests."""

from __future__ import annotations

import logging

import pytest

from tests.sim import schedule


def _replay(ops: list[tuple], seed: int) -> None:
    logging.disable(logging.WARNING)
    try:
        schedule.run(ops, seed, strict_probe=True)
    finally:
        logging.disable(logging.NOTSET)


@pytest.mark.xfail(
    strict=True,
    raises=schedule.SimFailure,
    reason="issue 19 finding 1: reclaim ping-pong refuses a call the fleet can afford",
)
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
