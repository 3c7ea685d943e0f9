"""Idle syncs: one read transaction, heartbeats persisted at an interval (heartbeat.py)."""

from __future__ import annotations

import pytest

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
