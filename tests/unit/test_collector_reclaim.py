"""Reclaim orders: slack held by other agents is handed back to a starved one, and a changed
limit re-cuts every agent's lease (collector side; SQLite and MariaDB)."""

from __future__ import annotations

from solverfleet.collector.reclaim import CPM, DAILY
from tests.support.collector import AppHarness, event, key_config, team_config, user_config

pytest_plugins = ["tests.support.collector", "tests.support.mariadb"]
DAY = "2025-12-12"  # the harness clock's UTC day
PRICE = 2000


def bal(want: int = 0, least: int = PRICE, ret: int = 0, settle: bool = False) -> dict:
    """A balance lease item; an ask (want > 0) is urgent: the agent cannot serve a call."""
    return {"kind": "balance", "key_id": "alice-web", "want_micros": want, "min_micros": least,
            "return_micros": ret, "settle": settle, "urgent": want > 0}  # fmt: skip


def grant(answer: dict) -> dict:
    (reply,) = answer["grants"]
    return reply


def setup(h: AppHarness, **key: object) -> None:
    h.apply(team_config([user_config("alice", [key_config("alice-web", **key)])]))


def test_slack_in_another_lease_is_reclaimed_for_a_starved_agent(collector_app: AppHarness):
    h = collector_app
    setup(h, balance="0.010")  # five calls
    assert grant(h.sync("a1", [bal(want=10_000)]))["granted_micros"] == 5000
    assert grant(h.sync("a2", [bal(want=10_000)]))["granted_micros"] == 2500
    assert grant(h.sync("a3", [bal(want=10_000)]))["granted_micros"] == 2000  # min 1 call
    starved = grant(h.sync("a4", [bal(want=10_000)]))
    assert starved["granted_micros"] == 0 and starved["reclaiming"] is True

    # The holders get an order in every sync until they answer it (a lost answer loses none).
    order = [{"kind": "balance", "key_id": "alice-web"}]
    assert h.sync("a1")["reclaim"] == order
    assert h.sync("a1")["reclaim"] == order
    assert h.sync("a2")["reclaim"] == order
    assert h.sync("a4")["reclaim"] == []  # never the asker

    # a1 hands back all it had (settled, the order is done); a4 now gets its call.
    answer = h.sync("a1", [bal(want=0, least=0, ret=5000, settle=True)])
    assert grant(answer)["held_micros"] == 0 and answer["reclaim"] == []
    assert grant(h.sync("a4", [bal(want=10_000)]))["granted_micros"] >= PRICE


def test_settled_holders_are_not_waited_for(collector_app: AppHarness):
    h = collector_app
    setup(h, balance="0.002")  # one call
    assert grant(h.sync("a1", [bal(want=10_000)]))["granted_micros"] == 2000
    assert grant(h.sync("a2", [bal(want=10_000)]))["reclaiming"] is True
    # a1's call is in flight: it hands back nothing, and says so.
    assert grant(h.sync("a1", [bal(want=0, least=0, settle=True)]))["held_micros"] == 2000
    again = grant(h.sync("a2", [bal(want=10_000)]))
    assert again["granted_micros"] == 0 and "reclaiming" not in again  # refuse now
    # A new grant unsettles: a1 gets more after a top-up, and may be asked again.
    h.admin("POST", "/admin/v1/keys/alice-web/topup", json={"amount": "0.002"})
    assert grant(h.sync("a1", [bal(want=10_000)]))["granted_micros"] == 2000
    assert grant(h.sync("a2", [bal(want=10_000)]))["reclaiming"] is True


def test_no_reclaim_when_the_fleet_lacks_the_money(collector_app: AppHarness):
    h = collector_app
    setup(h, balance="0.003")  # one and a half calls
    assert grant(h.sync("a1", [bal(want=10_000, least=PRICE)]))["granted_micros"] == 2000
    h.usage([event(cost=PRICE, agent_id="a1")], agent_id="a1")  # a1 spent its call
    starved = grant(h.sync("a2", [bal(want=10_000, least=PRICE)]))
    assert starved == {**starved, "granted_micros": 0} and "reclaiming" not in starved
    assert h.sync("a1")["reclaim"] == []


def test_a_changed_cpm_orders_every_holder(collector_app: AppHarness):
    h = collector_app
    setup(h, cpm=30)
    window = int(h.clock()) // 60
    ask = {"kind": "cpm", "key_id": "alice-web", "window": window, "want": 10}
    assert grant(h.sync("a1", [ask]))["granted"] == 10
    assert grant(h.sync("a2", [ask]))["granted"] == 10
    response = h.admin("PATCH", "/admin/v1/keys/alice-web", json={"cpm": 10})
    assert response.status_code == 200, response.get_json()
    order = {"kind": CPM, "key_id": "alice-web", "window": window}
    assert h.sync("a1")["reclaim"] == [order]
    assert h.sync("a2")["reclaim"] == [order]
    # Both hand back what they did not use (a1 used 3, a2 used 1): 4 used, 6 left in the pool.
    back = {**ask, "want": 0, "settle": True}
    assert grant(h.sync("a1", [{**back, "return": 7}]))["held"] == 3
    assert grant(h.sync("a2", [{**back, "return": 9}]))["held"] == 1
    assert grant(h.sync("a3", [{**ask, "want": 100}]))["granted"] == 3  # half the pool of 6


def test_a_changed_daily_limit_orders_every_holder(collector_app: AppHarness):
    h = collector_app
    h.apply(team_config([user_config("alice", [key_config("alice-web")], daily_limit=100)]))
    ask = {"kind": "daily", "user_id": "alice", "day": DAY, "want": 20}
    assert grant(h.sync("a1", [ask]))["granted"] == 20
    h.apply(team_config([user_config("alice", [key_config("alice-web")], daily_limit=20)]))
    assert h.sync("a1")["reclaim"] == [{"kind": DAILY, "user_id": "alice", "day": DAY}]
    assert h.sync("a2")["reclaim"] == []  # holds nothing of it


def test_a_reset_agent_has_no_pending_orders(collector_app: AppHarness):
    h = collector_app
    setup(h, balance="0.004")
    grant(h.sync("a1", [bal(want=10_000)]))
    grant(h.sync("a2", [bal(want=10_000)]))
    assert grant(h.sync("a3", [bal(want=10_000)]))["reclaiming"] is True
    assert h.sync("a1", reset=True)["reclaim"] == []


def test_a_routine_refill_orders_no_reclaim(collector_app: AppHarness):
    # Only an agent that cannot serve one more call has slack reclaimed for it: a low-water
    # refill that did would take back what a waiting agent was just granted (the simulator's
    # finding 1: the tokens bounced between agents until the waiting call was refused).
    h = collector_app
    setup(h, balance="0.004")
    assert grant(h.sync("a1", [bal(want=10_000)]))["granted_micros"] == 2000
    assert grant(h.sync("a2", [bal(want=10_000)]))["granted_micros"] == 2000
    routine = {**bal(want=10_000), "urgent": False}
    assert "reclaiming" not in grant(h.sync("a3", [routine]))
    assert h.sync("a1")["reclaim"] == []
