"""The fleet loop against a fake collector: spool first, reset, snapshots, grants, balances."""

from __future__ import annotations

import gc
import time

import pytest

from solverfleet.agent import precheck, sync
from solverfleet.agent.lifecycle import Agent
from solverfleet.agent.spool import Spool
from tests.support.fake_collector import (  # noqa: F401
    agent_settings,
    fake_collector,
    standard_setup,
)
from tests.support.fake_collector import usage_event as event


@pytest.fixture
def setup(tmp_path, fake_collector):  # noqa: F811
    secrets = standard_setup(fake_collector)
    made = []

    def make(**overrides):
        agent = Agent(agent_settings(tmp_path, fake_collector.url, **overrides))
        made.append(agent)
        return agent

    yield fake_collector, secrets, make
    for agent in made:
        agent.close()


def admit(agent, secret, slug="turnstile"):
    return precheck.check(
        agent.keystore.snapshot, agent.limiter, secret, slug, "10.0.0.1", time.time()
    )


def test_first_round_ships_the_old_spool_then_resets(setup, tmp_path):
    collector, _, make = setup
    old = Spool(tmp_path / "agent-state" / "spool")
    leftover = event(agent_id="test-agent", key_id="alice-web", user_id="alice")
    old.append(leftover)
    old.close()
    agent = make()
    assert agent.keystore.snapshot is None and agent.readiness()[0] == "not_ready"
    assert agent.loop.run_once()
    assert [name for name, _ in collector.log] == ["usage", "sync"]
    first_sync = collector.calls("sync")[0]
    assert first_sync["reset"] is True and first_sync["config_version"] is None
    assert leftover["event_id"] in collector.events
    assert agent.readiness() == (None, "")
    assert agent.loop.run_once()
    assert collector.calls("sync")[1]["reset"] is False


def test_no_reset_until_the_old_spool_is_shipped(setup, tmp_path):
    collector, _, make = setup
    Spool(tmp_path / "agent-state" / "spool").append(event(key_id="alice-web", user_id="alice"))
    collector.usage_down = True
    agent = make()
    assert not agent.loop.run_once()
    assert collector.calls("sync") == [] and agent.keystore.snapshot is None


def test_snapshot_kept_when_unchanged_and_replaced_on_change(setup):
    collector, secrets, make = setup
    agent = make()
    agent.loop.run_once()
    snap = agent.keystore.snapshot
    agent.loop.run_once()
    assert agent.keystore.snapshot is snap  # config: null -> nothing swapped
    collector.update_key("alice-web", active=False)
    agent.loop.run_once()
    assert agent.keystore.snapshot is not snap
    assert admit(agent, secrets["alice-web"]).code == "key_disabled"  # revoked next round


def test_grants_make_a_waiting_key_admissible(setup):
    collector, secrets, make = setup
    agent = make()
    agent.loop.run_once()
    decision = admit(agent, secrets["alice-web"])
    assert (decision.code, decision.wait) == ("insufficient_balance", True)
    agent.loop.run_once()
    assert admit(agent, secrets["alice-web"]).code != "invalid_key"  # known now
    leased = collector.leased("alice-web")
    assert leased == 40_000  # 20 calls x 0.002
    agent.loop.watch("alice-web")
    agent.loop.run_once()
    assert agent.loop.balances["alice-web"] == 1_000_000 - leased


def test_small_balance_pool_is_shared_and_then_starved(setup):
    collector, secrets, make = setup
    agent = make()
    agent.loop.run_once()
    admit(agent, secrets["alice-poor"])  # balance 2500: one call's worth
    agent.loop.run_once()
    assert collector.leased("alice-poor") == 2000  # min(want, max(pool // 2, min(pool, min)))
    assert admit(agent, secrets["alice-poor"]).allowed
    decision = admit(agent, secrets["alice-poor"])
    assert decision.code == "insufficient_balance" and decision.wait  # ask once more
    agent.loop.run_once()
    decision = admit(agent, secrets["alice-poor"])
    assert decision.code == "insufficient_balance" and not decision.wait  # pool is empty


def test_collector_down_means_offline_but_leases_still_serve(setup):
    collector, secrets, make = setup
    agent = make()
    agent.loop.run_once()
    admit(agent, secrets["alice-web"])
    agent.loop.run_once()
    collector.sync_down = True
    assert not agent.loop.run_once()
    assert agent.offline and agent.readiness() == (None, "")  # within offline_grace
    assert admit(agent, secrets["alice-web"]).code != "invalid_key"  # known now
    decision = precheck.check(agent.keystore.snapshot, agent.limiter, secrets["bob-web"],
                              "turnstile", "10.0.0.1", time.time(), offline=True)  # fmt: skip
    assert decision.code == "insufficient_balance" and not decision.wait


def test_offline_grace_expiry_fails_readiness(setup):
    collector, _, make = setup
    agent = make(offline_grace=0.0)
    agent.loop.run_once()
    collector.sync_down = True
    agent.loop.run_once()
    assert agent.readiness()[0] == "not_ready"


def test_a_refused_credential_takes_the_agent_out_of_rotation_at_once(setup):
    """Revoked (401) is not an outage: readiness fails now, not after offline_grace, and comes
    back with the first sync the collector accepts (a rotated credential)."""
    collector, _, make = setup
    agent = make(offline_grace=3600.0)
    agent.loop.run_once()
    assert agent.readiness() == (None, "")
    collector.sync_down, collector.sync_status = True, 401
    assert not agent.loop.run_once()
    assert agent.readiness()[0] == "credential_refused"
    collector.sync_status = 503  # an outage after all: within offline_grace, still ready
    agent.loop.run_once()
    assert agent.readiness() == (None, "")
    collector.sync_down = False
    assert agent.loop.run_once() and agent.readiness() == (None, "")


def test_malformed_snapshot_keeps_the_old_data(setup):
    collector, _, make = setup
    agent = make()
    agent.loop.run_once()
    snap = agent.keystore.snapshot
    collector.keys["alice-web"]["ip_allowlist"] = ["10.0.0.0/33"]
    collector.version += 1
    assert agent.loop.run_once()
    assert agent.keystore.snapshot is snap


def test_release_returns_every_unused_lease(setup):
    collector, secrets, make = setup
    agent = make()
    agent.loop.run_once()
    admit(agent, secrets["bob-web"])
    agent.loop.run_once()
    assert collector.leased("bob-web") > 0
    agent.loop.release(timeout=2)
    assert collector.leased("bob-web") == 0
    assert collector.daily_held == {
        ("test-agent", "bob", time.strftime("%Y-%m-%d", time.gmtime())): 0
    }


def test_trigger_runs_a_round_at_once(setup):
    collector, _, make = setup
    agent = make(sync_interval=30)  # the timer alone would not fire during this test
    agent.start()
    assert agent.loop.wait_round(1, timeout=5)
    number = agent.loop.next_round()
    agent.loop.trigger()
    assert agent.loop.wait_round(number, timeout=5)
    assert len(collector.calls("sync")) >= 2


def test_an_unanswered_return_is_sent_again_with_its_seq(setup):
    """A sync that hands leases back and gets no answer (5xx, timeout) is sent again as it
    was, same seq: the collector applies it once either way (collector/requestorder.py), so
    nothing handed back is lost or returned twice. A 4xx (refused whole) is not repeated."""
    collector, secrets, make = setup
    agent = make(lease_idle=0.001)
    agent.loop.run_once()
    admit(agent, secrets["alice-web"])
    agent.loop.run_once()  # granted
    time.sleep(0.01)  # past lease_idle: the next round hands the lease back
    collector.sync_down, collector.sync_status = True, 503
    assert not agent.loop.run_once()  # idle: the lease goes back, the answer does not come
    failed = collector.calls("sync")[-1]
    assert any(item.get("return_micros") for item in failed["leases"])
    assert not agent.loop.run_once()
    collector.sync_down = False
    assert agent.loop.run_once()
    again, retried = collector.calls("sync")[-2:]
    for body in (again, retried):
        assert (body["seq"], body["leases"]) == (failed["seq"], failed["leases"])
    agent.loop.run_once()
    assert collector.calls("sync")[-1]["seq"] == failed["seq"] + 1
    assert collector.leased("alice-web") == 0  # returned once
    collector.sync_down, collector.sync_status = True, 400
    admit(agent, secrets["alice-web"])
    agent.loop.run_once()
    agent.loop.run_once()
    collector.sync_down = False
    before = collector.calls("sync")[-1]["seq"]
    agent.loop.run_once()
    assert collector.calls("sync")[-1]["seq"] > before


def test_a_delta_answer_changes_only_the_keys_it_names(setup):
    collector, secrets, make = setup
    agent = make()
    assert agent.loop.run_once()
    before = agent.keystore.snapshot
    assert collector.calls("sync")[0]["deltas"] is True  # the agent says it applies deltas
    off = {**collector.keys["alice-web"], "active": False}
    real_sync = collector.sync
    collector.sync = lambda body: {
        **real_sync(body),
        "config_version": before.version + 1,
        "config": None,
        "delta": {"keys": [off], "deleted_keys": ["bob-web"]},
    }
    assert agent.loop.run_once()
    snap = agent.keystore.snapshot
    assert snap.version == before.version + 1
    assert not snap.keys["alice-web"].active and "bob-web" not in snap.keys
    assert snap.keys["alice-poor"] is before.keys["alice-poor"]  # the rest is kept as it was
    assert admit(agent, secrets["alice-web"]).code == "key_disabled"
    assert admit(agent, secrets["bob-web"]).code == "invalid_key"


def test_a_paged_snapshot_is_installed_only_whole(setup):
    collector, secrets, make = setup
    agent = make()
    config = collector._config()
    first, rest = config["keys"][:3], config["keys"][3:]
    real_sync = collector.sync
    answers = iter(
        [
            {"config": {**config, "keys": first}, "keys_after": first[-1]["id"]},
            {"config": None, "snapshot_page": {"keys": rest, "keys_after": None}},
        ]
    )
    collector.sync = lambda body: {**real_sync(body), **next(answers)}
    assert agent.loop.run_once()
    assert agent.keystore.snapshot is None  # not ready on a part of the keys
    assert agent.loop.run_once()
    assert collector.calls("sync")[1]["snapshot_after"] == first[-1]["id"]
    assert set(agent.keystore.snapshot.keys) == {k["id"] for k in config["keys"]}
    assert admit(agent, secrets["alice-web"]).code != "invalid_key"  # known now


def test_a_big_snapshot_is_frozen_out_of_the_cyclic_gc(setup, monkeypatch):
    """A whole snapshot at or over FREEZE_SNAPSHOT_KEYS is gc.freeze()d (a full GC pass over a
    million keys stalled every request); a delta is not (its few new objects are young)."""
    collector, _, make = setup
    agent = make()
    gc.unfreeze()
    try:
        monkeypatch.setattr(sync, "FREEZE_SNAPSHOT_KEYS", len(collector.keys) + 1)
        assert agent.loop.run_once()
        assert gc.get_freeze_count() == 0  # under the threshold: left to the collector
        monkeypatch.setattr(sync, "FREEZE_SNAPSHOT_KEYS", len(collector.keys))
        collector.update_key("alice-web", active=False)  # a new whole snapshot (fake: no deltas)
        assert agent.loop.run_once()
        assert gc.get_freeze_count() > 0
        gc.unfreeze()
        before = agent.keystore.snapshot
        real_sync = collector.sync
        collector.sync = lambda body: {
            **real_sync(body),
            "config_version": before.version + 1,
            "config": None,
            "delta": {"deleted_keys": ["bob-web"]},
        }
        assert agent.loop.run_once()
        assert agent.keystore.snapshot is not before and gc.get_freeze_count() == 0
    finally:
        gc.unfreeze()


def test_registration_is_sent_and_the_peer_map_follows_the_answers(setup, caplog):
    collector, _, make = setup
    agent = make(node_id=42, advertise_url="https://10.0.0.42:8600")
    collector.sync_extra = {"peers": {"42": "https://10.0.0.42:8600", "7": "https://b:1"}}
    assert agent.loop.run_once()
    sent = collector.calls("sync")[-1]
    assert (sent["node_id"], sent["advertise_url"]) == (42, "https://10.0.0.42:8600")
    assert agent.loop.peers == {42: "https://10.0.0.42:8600", 7: "https://b:1"}
    collector.sync_extra = {"peers": {"42": "https://10.0.0.42:8600"}, "node_conflict": ["x"]}
    assert agent.loop.run_once() and agent.loop.run_once()
    assert agent.loop.peers == {42: "https://10.0.0.42:8600"}  # node 7 left: no longer asked
    conflicts = [r for r in caplog.records if "also claimed" in r.getMessage()]
    assert len(conflicts) == 1 and conflicts[0].levelname == "ERROR"  # once, not every sync
    collector.sync_extra = {"peers": "not a map"}
    assert agent.loop.run_once()
    assert agent.loop.peers == {42: "https://10.0.0.42:8600"}  # a bad answer keeps the map


def test_no_address_no_registration(setup):
    collector, _, make = setup
    agent = make(node_id=42)
    assert agent.loop.run_once()
    assert "advertise_url" not in collector.calls("sync")[-1]
