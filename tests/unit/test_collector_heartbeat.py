"""Idle syncs: one read transaction, heartbeats persisted at an interval (heartbeat.py)."""

from __future__ import annotations

from typing import Any

import pytest

from solverfleet.collector import heartbeat, tokens
from solverfleet.collector.store import Database
from tests.support.collector import AppHarness, team_config

pytest_plugins = ["tests.support.collector", "tests.support.mariadb"]


def last_seen(h: AppHarness) -> float:
    return h.admin("GET", "/admin/v1/agents").get_json()["agents"][0]["last_seen"]


@pytest.fixture
def writes(collector_app: AppHarness, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the collector's write transactions."""
    db, count = collector_app.db, [0]
    transaction = db.transaction

    def counted(work, *args, **kwargs):
        count[0] += 1
        return transaction(work, *args, **kwargs)

    monkeypatch.setattr(db, "transaction", counted)
    return count


def test_an_idle_sync_writes_nothing(collector_app: AppHarness, writes: list[int]) -> None:
    h = collector_app
    h.apply(team_config())
    version = h.sync("a1", config_version=None, deltas=True)["config_version"]
    h.sync("a1", config_version=version, deltas=True)  # persists the new config version
    before, seen = writes[0], last_seen(h)
    h.clock.advance(1)
    answer = h.sync("a1", config_version=version, deltas=True, watch=["alice-web"])
    assert writes[0] == before  # idle: read only
    assert answer["balances"] == {"alice-web": 10_000_000} and answer["grants"] == []
    assert last_seen(h) == seen  # within the persist interval the row lags
    interval = h.state.heartbeats.interval_ms / 1000
    h.clock.advance(interval)
    h.sync("a1", config_version=version, deltas=True)
    assert writes[0] == before + 1 and last_seen(h) == h.clock()  # persisted at the interval


@pytest.mark.parametrize("change", ["lease", "reset", "instance", "config_version"])
def test_a_sync_that_changes_something_is_written(
    collector_app: AppHarness, writes: list[int], change: str
) -> None:
    h = collector_app
    h.apply(team_config())
    version = h.sync("a1", config_version=None)["config_version"]
    h.sync("a1", config_version=version)
    h.clock.advance(1)
    before = writes[0]
    body = {"config_version": version}
    if change == "lease":
        body["leases"] = [{"kind": "balance", "key_id": "alice-web", "want_micros": 100}]
    elif change == "reset":
        body["reset"] = True
    elif change == "instance":
        body["instance"] = "a1-new"
    else:
        body["config_version"] = version - 1
    h.sync("a1", **body)
    assert writes[0] == before + 1 and last_seen(h) == h.clock()


def test_an_idle_agent_still_gets_its_reclaim_orders(collector_app: AppHarness) -> None:
    h = collector_app
    h.apply(team_config())
    version = h.sync("a1", config_version=None)["config_version"]
    lease = {"kind": "balance", "key_id": "alice-web", "want_micros": 10_000_000}
    h.sync("a1", [lease], config_version=version)  # a1 holds half the balance
    h.sync("a1", config_version=version)
    starved = {**lease, "min_micros": 9_000_000, "urgent": True}
    h.sync("a2", [starved], config_version=version)  # asks a1 to hand back
    assert h.sync("a1", config_version=version)["reclaim"] == [
        {"kind": "balance", "key_id": "alice-web"}
    ]


@pytest.fixture
def reads(collector_app: AppHarness, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the collector's read transactions."""
    db, count = collector_app.db, [0]
    read = db.read

    def counted(work):
        count[0] += 1
        return read(work)

    monkeypatch.setattr(db, "read", counted)
    return count


def idle_agent(h: AppHarness) -> int:
    h.apply(team_config())
    version = h.sync("a1", config_version=None, deltas=True)["config_version"]
    h.sync("a1", config_version=version, deltas=True)  # persists the heartbeat
    h.sync("a1", config_version=version, deltas=True)  # reads the view
    return version


def test_an_up_to_date_idle_sync_reads_nothing(collector_app: AppHarness, reads: list[int]):
    h = collector_app
    version = idle_agent(h)
    before = reads[0]
    answer = h.sync("a1", config_version=version, deltas=True)
    assert reads[0] == before  # answered from the idle view
    assert answer["config_version"] == version and answer["config"] is None
    assert answer["grants"] == [] and answer["reclaim"] == [] and answer["balances"] == {}
    h.sync("a1", config_version=version, deltas=True, watch=["alice-web"])
    assert reads[0] == before + 1  # a balance asked for is read


def test_a_change_in_this_process_is_seen_at_once(collector_app: AppHarness, reads: list[int]):
    h = collector_app
    version = idle_agent(h)
    h.admin("POST", "/admin/v1/keys/alice-web/topup", json={"amount": "1.00"})
    answer = h.sync("a1", config_version=version, deltas=True)
    assert answer["config_version"] > version and answer["delta"]["keys"][0]["id"] == "alice-web"


def test_another_process_change_is_seen_within_the_view_age(
    collector_app: AppHarness, collector_db_url: str
) -> None:
    """A write by another collector process (here: another Database on the same store) does
    not move this process's write count: the view is read again once VIEW_MS has passed."""
    h = collector_app
    now = [100.0]
    h.state.idle_view.monotonic = lambda: now[0]
    version = idle_agent(h)
    other = Database(collector_db_url)
    other.transaction(
        lambda tx: tx.execute("UPDATE config_state SET version = version + 1 WHERE id = 1")
    )
    assert h.sync("a1", config_version=version, deltas=True)["config_version"] == version
    now[0] += heartbeat.VIEW_MS / 1000 + 0.001
    assert h.sync("a1", config_version=version, deltas=True)["config_version"] == version + 1
    other.close()


def test_agents_register_their_address_and_learn_the_peers(collector_app: AppHarness) -> None:
    h = collector_app
    h.apply(team_config())
    a1 = h.sync("a1", node_id=11, advertise_url="https://10.0.0.1:8600")
    assert a1["peers"] == {"11": "https://10.0.0.1:8600"}
    h.sync("a2", node_id=12)  # no address: known, but not fetched from
    h.sync("a3", node_id=13, advertise_url="https://10.0.0.3:8600")
    answer = h.sync("a1", node_id=11, advertise_url="https://10.0.0.1:8600")
    assert answer["peers"] == {"11": "https://10.0.0.1:8600", "13": "https://10.0.0.3:8600"}
    assert "node_conflict" not in answer
    listed = {a["agent_id"]: a for a in h.admin("GET", "/admin/v1/agents").get_json()["agents"]}
    assert (listed["a1"]["node_id"], listed["a1"]["advertise_url"]) == (11, "https://10.0.0.1:8600")
    assert (listed["a2"]["node_id"], listed["a2"]["advertise_url"]) == (12, None)
    # A moved address is written at once (idle syncs compare it), not after the interval.
    h.clock.advance(1)
    answer = h.sync("a3", node_id=13, advertise_url="https://10.0.0.33:8600")
    assert answer["peers"]["13"] == "https://10.0.0.33:8600"
    # Two live agents on one node id: the id leaves the map, both are told.
    clash = h.sync("a4", node_id=11, advertise_url="https://10.0.0.4:8600")
    assert "11" not in clash["peers"] and clash["node_conflict"] == ["a1"]
    assert h.sync("a1", node_id=11, reset=True)["node_conflict"] == ["a4"]
    # An agent silent for the lease TTL is no longer a peer.
    h.clock.advance(h.state.ttl_ms / 1000 + 1)
    assert h.sync("a3", node_id=13, advertise_url="https://10.0.0.33:8600")["peers"] == {
        "13": "https://10.0.0.33:8600"
    }


@pytest.mark.parametrize(
    "body",
    [
        {"node_id": 0},
        {"node_id": 1000},
        {"node_id": "7"},
        {"advertise_url": "ftp://x"},
        {"advertise_url": "https://x/path"},
        {"advertise_url": "https://user@x"},
        {"advertise_url": ""},
    ],
)
def test_bad_registration_is_refused(collector_app: AppHarness, body: dict) -> None:
    resp = collector_app.agent("POST", "/agent/v1/sync", json={"agent_id": "a1", **body})
    assert resp.status_code == 400, resp.get_json()


def test_an_idle_sync_from_the_view_carries_the_peers(
    collector_app: AppHarness, reads: list[int]
) -> None:
    """The peer map comes with every answer, the ones the idle view gives without a store read
    too, so an agent learns a new peer within a sync, not at its next heartbeat write."""
    h = collector_app
    h.state.idle_view.monotonic = lambda: 100.0  # the view never ages: only writes refresh it
    h.apply(team_config())
    me = {"deltas": True, "node_id": 11, "advertise_url": "https://10.0.0.1:8600"}
    version = h.sync("a1", config_version=None, **me)["config_version"]
    h.sync("a1", config_version=version, **me)
    h.sync("a2", config_version=version, deltas=True, node_id=12,
           advertise_url="https://10.0.0.2:8600")  # fmt: skip
    h.sync("a1", config_version=version, **me)  # the view is read again after that write
    before = reads[0]
    answer = h.sync("a1", config_version=version, **me)
    assert reads[0] == before  # from the view
    assert answer["peers"] == {"11": "https://10.0.0.1:8600", "12": "https://10.0.0.2:8600"}


def test_an_idle_sync_with_its_own_credential_reads_nothing(
    collector_app: AppHarness, collector_db_url: str, reads: list[int]
) -> None:
    """A per-host credential is looked up once and then kept (tokens.TokenCache): the idle
    sync reads nothing. Revoked through this process it is refused at once; through another
    process, once CACHE_S has passed."""
    h = collector_app
    h.apply(team_config())
    made = h.admin("POST", "/admin/v1/tokens", json={"role": "service", "agent_id": "a1"})
    token_id, secret = made.get_json()["token"]["id"], made.get_json()["secret"]
    now = [100.0]
    h.state.tokens.monotonic = h.state.idle_view.monotonic = lambda: now[0]

    def sync(version: int | None) -> Any:
        body = {"agent_id": "a1", "instance": "a1-i", "config_version": version, "deltas": True}
        return h.call("POST", "/agent/v1/sync", secret, json=body)

    version = sync(None).get_json()["config_version"]
    sync(version), sync(version)  # heartbeat persisted, then the view and the token read
    before = reads[0]
    assert sync(version).status_code == 200 and reads[0] == before
    other = Database(collector_db_url)
    other.transaction(
        lambda tx: tx.execute("UPDATE api_tokens SET revoked_ms = 1 WHERE id = ?", (token_id,))
    )
    assert sync(version).status_code == 200  # another process's revocation: not seen yet
    now[0] += tokens.CACHE_S + 0.001
    assert sync(version).status_code == 401
    other.close()
