"""Shipping the spool: ack only on 200, retries, exactly-once by event id, poison events."""

from __future__ import annotations

import os
import time
from collections import Counter

import pytest

from solverfleet.agent.fleetclient import CollectorError, FleetClient
from solverfleet.agent.limiter import Limiter
from solverfleet.agent.shipper import Backoff, Shipper
from solverfleet.agent.spool import Spool
from tests.support.fake_collector import FLEET_TOKEN, fake_collector  # noqa: F401
from tests.support.fake_collector import usage_event as event


@pytest.fixture
def collector(fake_collector):  # noqa: F811
    fake_collector.set_price("turnstile", 2000)
    fake_collector.add_user("u1")
    fake_collector.add_key("k1", "u1", balance=1_000_000)
    return fake_collector


def make_shipper(tmp_path, collector, limiter=None):
    spool = Spool(tmp_path / "spool")
    client = FleetClient(collector.url, FLEET_TOKEN, timeout=2)
    return Shipper(spool, client, limiter or Limiter(), "a1", batch=4)


def test_ships_in_batches_and_advances_only_after_ack(tmp_path, collector):
    shipper = make_shipper(tmp_path, collector)
    events = [event() for _ in range(10)]
    for e in events:
        shipper.spool.append(e)
    assert shipper.ship_batch() == 4 and shipper.backlog == 6
    assert shipper.ship_all(time.monotonic() + 10)
    assert shipper.backlog == 0
    assert set(collector.events) == {e["event_id"] for e in events}
    assert [len(p["events"]) for p in collector.calls("usage")] == [4, 4, 2]
    assert collector.balance("k1") == 1_000_000 - 10 * 2000


def test_failure_keeps_events_and_retry_ships_them_once(tmp_path, collector):
    shipper = make_shipper(tmp_path, collector)
    events = [event() for _ in range(3)]
    for e in events:
        shipper.spool.append(e)
    collector.usage_fail_next = 2
    for _ in range(2):
        with pytest.raises(CollectorError):
            shipper.ship_batch()
        assert shipper.backlog == 3
    assert shipper.ship_all(time.monotonic() + 10)
    assert Counter(collector.received) == {e["event_id"]: 1 for e in events}


def test_crash_after_the_collector_committed_resends_without_double_charge(
    tmp_path, collector, monkeypatch
):
    shipper = make_shipper(tmp_path, collector)
    for _ in range(3):
        shipper.spool.append(event())
    # The collector commits, then we die before the cursor reaches the disk.
    monkeypatch.setattr(os, "replace", lambda *a: (_ for _ in ()).throw(OSError(5, "EIO")))
    shipper.ship_batch()
    monkeypatch.undo()
    restarted = make_shipper(tmp_path, collector)  # the new process replays the spool
    assert restarted.backlog == 3
    assert restarted.ship_all(time.monotonic() + 10)
    assert collector.duplicates == 3 and len(collector.events) == 3
    assert collector.balance("k1") == 1_000_000 - 3 * 2000  # charged once


def test_malformed_event_is_set_aside_and_the_rest_ship(tmp_path, collector):
    shipper = make_shipper(tmp_path, collector)
    good = [event(), event()]
    bad = event()
    del bad["url"]
    for e in [good[0], bad, good[1]]:
        shipper.spool.append(e)
    assert shipper.ship_all(time.monotonic() + 10)
    assert set(collector.events) == {e["event_id"] for e in good}
    assert bad["event_id"] in shipper.spool.rejected_path.read_text()
    assert shipper.backlog == 0


def test_acks_of_this_process_update_the_ledger_and_replayed_ones_do_not(tmp_path, collector):
    Spool(tmp_path / "spool").append(event(cost_micros=7000))  # an earlier process's usage
    limiter = Limiter()
    limiter.apply_grants([{"kind": "balance", "key_id": "k1", "granted_micros": 50_000,
                          "held_micros": 50_000}])  # fmt: skip
    limiter.balance["k1"].unacked = 2000  # as after one committed call of this process
    shipper = make_shipper(tmp_path, collector, limiter)
    shipper.spool.append(event())
    shipper.spool.append(event(status="failed", error="worker_failed", message="x", cost_micros=0))
    assert shipper.ship_all(time.monotonic() + 10)
    bal = limiter.balance["k1"]
    assert (bal.held, bal.unacked) == (48_000, 0)


def test_unreachable_collector_raises_without_touching_the_spool(tmp_path):
    spool = Spool(tmp_path / "spool")
    spool.append(event())
    client = FleetClient("http://127.0.0.1:9", FLEET_TOKEN, timeout=1)
    shipper = Shipper(spool, client, Limiter(), "a1")
    with pytest.raises(CollectorError) as info:
        shipper.ship_batch()
    assert info.value.status is None and spool.pending == 1
    assert not shipper.ship_all(time.monotonic())  # deadline already passed: not empty


def test_backoff_doubles_caps_and_resets():
    backoff = Backoff(0.25, cap=2.0)
    delays = [backoff.next() for _ in range(6)]
    assert 0.2 <= delays[0] <= 0.3 and 0.4 <= delays[1] <= 0.6
    assert all(d <= 2.4 for d in delays) and delays[-1] >= 1.6
    backoff.reset()
    assert backoff.next() <= 0.3
