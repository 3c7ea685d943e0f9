"""Credit leases: grant policy, sharing, reset, TTL reclaim, returns, CPM and daily pools."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from solverfleet.collector import leases
from tests.support.collector import AppHarness, event, key_config, team_config, user_config

pytest_plugins = ["tests.support.collector", "tests.support.mariadb"]
DAY = "2025-12-12"  # the harness clock's UTC day


def bal(key: str = "alice-web", want: int = 0, min_micros: int = 0, ret: int = 0) -> dict:
    return {
        "kind": "balance",
        "key_id": key,
        "want_micros": want,
        "min_micros": min_micros,
        "return_micros": ret,
    }


def daily(user: str = "alice", want: int = 0, ret: int = 0, day: str = DAY) -> dict:
    return {"kind": "daily", "user_id": user, "day": day, "want": want, "return": ret}


def cpm(h: AppHarness, key: str = "alice-web", want: int = 0, window: int | None = None) -> dict:
    win = int(h.clock()) // 60 if window is None else window
    return {"kind": "cpm", "key_id": key, "window": win, "want": want}


def leased(h: AppHarness, key: str = "alice-web") -> int:
    return h.summary()["keys"][key]["leased_micros"]


@pytest.mark.parametrize(
    ("want", "pool", "min_unit", "granted"),
    [
        (300, 1000, 3, 300),  # plenty: all of want
        (800, 1000, 3, 500),  # half the pool at most
        (10, 1, 1, 1),  # a pool of one token is still usable
        (10, 3, 1, 1),
        (10, 5, 4, 4),  # at least min_unit when the pool has it
        (10, 0, 1, 0),
        (10, -5, 1, 0),  # overdrawn pool: nothing
        (0, 100, 1, 0),
    ],
)
def test_grant_amount(want: int, pool: int, min_unit: int, granted: int) -> None:
    assert leases.grant_amount(want, pool, min_unit) == granted


@settings(max_examples=200, deadline=None)
@given(st.integers(-(10**6), 10**9), st.integers(0, 10**9), st.integers(0, 10**6))
def test_grant_never_exceeds_pool_or_want(pool: int, want: int, min_unit: int) -> None:
    granted = leases.grant_amount(want, pool, min_unit)
    assert 0 <= granted <= max(pool, 0)
    assert granted <= want


def test_two_agents_share_a_small_pool(collector_app: AppHarness) -> None:
    h = collector_app
    h.apply(team_config([user_config("alice", [key_config("alice-web", balance="0.01")])]))
    a = h.sync("a1", [bal(want=10_000, min_micros=2000)])
    b = h.sync("a2", [bal(want=10_000, min_micros=2000)])
    assert a["grants"][0] == {
        "kind": "balance",
        "key_id": "alice-web",
        "granted_micros": 5000,
        "held_micros": 5000,
    }
    assert b["grants"][0]["granted_micros"] == 2500
    c = h.sync("a3", [bal(want=10_000, min_micros=2000)])
    assert c["grants"][0]["granted_micros"] == 2000  # min_unit of what is left (2500)
    d = h.sync("a4", [bal(want=10_000, min_micros=2000)])
    assert d["grants"][0]["granted_micros"] == 0  # 500 left: below the agent's minimum
    assert leased(h) == 9500
    # balances: the key's balance outside each agent's own lease
    assert a["balances"] == {"alice-web": 10_000 - 5000}
    assert d["balances"] == {"alice-web": 10_000}


def test_grants_never_exceed_balance(collector_app: AppHarness) -> None:
    h = collector_app
    h.apply(team_config([user_config("alice", [key_config("alice-web", balance="1.00")])]))
    total = 0
    for i in range(40):
        reply = h.sync(f"a{i % 7}", [bal(want=400_000, min_micros=1)])
        total += reply["grants"][0]["granted_micros"]
    assert total == leased(h) <= 1_000_000


def test_usage_shrinks_lease_and_balance_together(collector_app: AppHarness) -> None:
    h = collector_app
    h.apply(team_config())
    h.sync("a1", [bal(want=100_000)])
    h.usage([event(cost=2000, agent_id="a1") for _ in range(3)])
    reply = h.sync("a1", [bal(want=0)], watch=["alice-web"])
    assert reply["grants"][0]["held_micros"] == 94_000
    assert reply["balances"]["alice-web"] == 10_000_000 - 6000 - 94_000
    # spent beyond the lease (offline allowance): the remainder floors at zero
    h.usage([event(cost=50_000, agent_id="a1") for _ in range(3)])
    assert h.sync("a1", [bal()])["grants"][0]["held_micros"] == 0
    assert h.summary()["keys"]["alice-web"]["balance_micros"] == 10_000_000 - 156_000


def test_reset_voids_the_agents_leases(collector_app: AppHarness) -> None:
    h = collector_app
    h.apply(team_config())
    h.sync("a1", [bal(want=1_000_000), daily(want=5)])
    assert leased(h) == 1_000_000
    reply = h.sync("a1", [bal(want=0)], reset=True)
    assert reply["grants"][0]["held_micros"] == 0
    assert leased(h) == 0
    # other agents keep theirs
    h.sync("a2", [bal(want=500_000)])
    h.sync("a1", [], reset=True)
    assert leased(h) == 500_000


def test_silent_agent_leases_are_quarantined_not_regranted(collector_app: AppHarness) -> None:
    """A silent agent may hold successes the collector has not seen (finding 5 of the fleet
    simulator): its remainder stays out of the pool, and nobody waits for it."""
    h = collector_app
    h.apply(team_config([user_config("alice", [key_config("alice-web", balance="0.01")])]))
    h.sync("a1", [bal(want=10_000)])  # holds 5000
    h.clock.advance(119)
    assert h.sync("a2", [bal(want=10_000)])["grants"][0]["granted_micros"] == 2500
    h.clock.advance(2)  # a1 silent for 121 s > ttl; a2 only 2 s
    reply = h.sync("a3", [{**bal(want=10_000), "urgent": True}])
    assert reply["grants"][0]["granted_micros"] == 1250  # the pool is 10000 - 5000 - 2500
    assert leased(h) == 5000 + 2500 + 1250
    states = {a["agent_id"]: a["leases"] for a in h.admin("GET", "/admin/v1/agents").json["agents"]}
    assert states == {"a1": "quarantined", "a2": "held", "a3": "held"}
    # An urgent ask only a1's slack could cover is refused at once: a quarantined lease is not
    # waited for. (Pool 10000 - 5000 - 1250 = 3750 once a2 hands its lease back.)
    h.sync("a2", [bal(ret=2500)])
    urgent = {**bal(want=10_000, min_micros=6000), "urgent": True}
    grant = h.sync("a3", [urgent])["grants"][0]
    assert (grant["granted_micros"], "reclaiming" in grant) == (0, False)
    # a1 comes back: its lease is its own again, and a reclaim may ask it for slack
    assert h.sync("a1", [bal()])["grants"][0]["held_micros"] == 5000
    states = {a["agent_id"]: a["leases"] for a in h.admin("GET", "/admin/v1/agents").json["agents"]}
    assert states["a1"] == "held"
    grant = h.sync("a3", [urgent])["grants"][0]
    assert (grant["granted_micros"], grant.get("reclaiming")) == (0, True)


def test_a_restart_ends_the_quarantine_by_voiding(collector_app: AppHarness) -> None:
    h = collector_app
    h.apply(team_config([user_config("alice", [key_config("alice-web", balance="0.01")])]))
    h.sync("a1", [bal(want=10_000), daily(want=4)])
    h.clock.advance(121)
    h.sync("a2", [])
    assert leased(h) == 5000
    assert h.sync("a1", [bal()], reset=True)["grants"][0]["held_micros"] == 0
    assert leased(h) == 0


def test_forget_voids_a_silent_agent_and_refuses_a_live_one(collector_app: AppHarness) -> None:
    h = collector_app
    h.apply(team_config([user_config("alice", [key_config("alice-web", balance="0.01")])]))
    h.sync("a1", [bal(want=10_000)])
    alive = h.admin("DELETE", "/admin/v1/agents/a1")
    assert (alive.status_code, alive.json["error"]) == (409, "agent_alive")
    assert leased(h) == 5000
    assert h.admin("DELETE", "/admin/v1/agents/nobody").status_code == 404
    h.clock.advance(121)
    gone = h.admin("DELETE", "/admin/v1/agents/a1")
    assert gone.status_code == 200, gone.json
    assert gone.json == {"agent_id": "a1", "returned_micros": 5000, "keys": 1}
    assert leased(h) == 0
    assert h.admin("GET", "/admin/v1/agents").json["agents"] == []
    entry = h.admin("GET", "/admin/v1/audit?action=agent.forget").json["entries"][0]
    assert (entry["target_id"], entry["after"]["returned_micros"]) == ("a1", 5000)
    # usage it spent before and still ships is charged (voids are not returns)
    h.usage([event("alice-web", agent_id="a1")], agent_id="a1")
    assert h.summary()["keys"]["alice-web"]["balance_micros"] == 10_000 - 2000


def test_return_in_sync(collector_app: AppHarness) -> None:
    h = collector_app
    h.apply(team_config())
    h.sync("a1", [bal(want=100_000)])
    reply = h.sync("a1", [bal(ret=30_000)])
    assert reply["grants"][0] == {
        "kind": "balance",
        "key_id": "alice-web",
        "granted_micros": 0,
        "held_micros": 70_000,
    }
    reply = h.sync("a1", [bal(ret=10**9)])  # cannot return more than held
    assert reply["grants"][0]["held_micros"] == 0


def test_cpm_tokens_per_window(collector_app: AppHarness) -> None:
    h = collector_app
    h.apply(team_config([user_config("alice", [key_config("alice-web", cpm=10)])]))
    a = h.sync("a1", [cpm(h, want=20)])["grants"][0]
    assert (a["granted"], a["held"]) == (5, 5)
    b = h.sync("a2", [cpm(h, want=20)])["grants"][0]
    assert b["granted"] == 2
    assert h.sync("a1", [cpm(h, want=20)])["grants"][0]["held"] == 6
    # a new minute has a full pool again; a window far from the collector's clock gets none
    h.clock.advance(60)
    assert h.sync("a2", [cpm(h, want=20)])["grants"][0]["granted"] == 5
    assert h.sync("a2", [cpm(h, want=20, window=1)])["grants"][0]["granted"] == 0


def test_cpm_without_ceiling_is_not_shared(collector_app: AppHarness) -> None:
    h = collector_app
    h.apply(team_config())
    assert h.sync("a1", [cpm(h, want=50)])["grants"][0]["granted"] == 50


def test_daily_pool_counts_usage_and_survives_reset(collector_app: AppHarness) -> None:
    h = collector_app
    h.apply(team_config([user_config("alice", [key_config("alice-web")], daily_limit=10)]))
    g = h.sync("a1", [daily(want=8)])["grants"][0]
    assert (g["granted"], g["held"]) == (5, 5)
    h.usage([event(agent_id="a1") for _ in range(3)])
    assert h.sync("a1", [daily()])["grants"][0]["held"] == 2
    h.sync("a1", [], reset=True)  # returns the 2 unused; the 3 used stay used
    g = h.sync("a2", [daily(want=100)])["grants"][0]
    assert g["granted"] == 3  # pool 10 - 3 used = 7 -> half
    # failures and usage from agents without a lease still count
    h.usage([event(agent_id="a9") for _ in range(4)] + [event(status="failed")])
    g = h.sync("a3", [daily(want=100)])["grants"][0]
    assert g["granted"] == 0  # 3 used + 3 held + 4 used = 10


def test_inactive_key_or_user_gets_no_grants(collector_app: AppHarness) -> None:
    h = collector_app
    h.apply(team_config([user_config("alice", [key_config("alice-web", cpm=10)], daily_limit=10)]))
    h.admin("POST", "/admin/v1/keys/alice-web/deactivate")
    reply = h.sync("a1", [bal(want=100), cpm(h, want=5), daily(want=5)])
    assert [g["granted"] if "granted" in g else g["granted_micros"] for g in reply["grants"]] == [
        0,
        0,
        5,
    ]
    h.admin("POST", "/admin/v1/keys/alice-web/activate")
    h.admin("POST", "/admin/v1/users/alice/deactivate")
    reply = h.sync("a1", [bal(want=100), daily(want=5)])
    assert [reply["grants"][0]["granted_micros"], reply["grants"][1]["granted"]] == [0, 0]


def test_unknown_key_or_user(collector_app: AppHarness) -> None:
    h = collector_app
    h.apply(team_config())
    reply = h.sync("a1", [bal("ghost", want=100), daily("ghost", want=5)], watch=["ghost"])
    assert reply["grants"][0]["granted_micros"] == 0
    assert reply["grants"][1]["granted"] == 0
    assert reply["balances"] == {}


def test_release_returns_leases(collector_app: AppHarness) -> None:
    h = collector_app
    h.apply(team_config([user_config("alice", [key_config("alice-web")], daily_limit=10)]))
    h.sync("a1", [bal(want=100_000), daily(want=10)])
    response = h.agent(
        "POST",
        "/agent/v1/release",
        json={
            "agent_id": "a1",
            "instance": "a1-i",
            "leases": [
                {"kind": "balance", "key_id": "alice-web", "return_micros": 60_000},
                {"kind": "daily", "user_id": "alice", "day": DAY, "return": 5},
            ],
        },
    )
    assert response.status_code == 200
    assert response.get_json()["returned"] == [
        {
            "kind": "balance",
            "key_id": "alice-web",
            "returned_micros": 60_000,
            "held_micros": 40_000,
        },
        {"kind": "daily", "user_id": "alice", "day": DAY, "held": 0, "returned": 5},
    ]
    assert leased(h) == 40_000


def test_release_from_a_replaced_instance_returns_nothing(collector_app: AppHarness) -> None:
    h = collector_app
    h.apply(team_config())
    h.sync("a1", [bal(want=100_000)], instance="old")
    h.sync("a1", [bal(want=100_000)], instance="new", reset=True)
    response = h.agent(
        "POST",
        "/agent/v1/release",
        json={
            "agent_id": "a1",
            "instance": "old",
            "leases": [{"kind": "balance", "key_id": "alice-web", "return_micros": 100_000}],
        },
    )
    assert response.get_json()["returned"][0]["returned_micros"] == 0
    assert leased(h) == 100_000  # the new instance's lease is untouched


def test_config_is_sent_only_when_version_changes(collector_app: AppHarness) -> None:
    h = collector_app
    h.apply(team_config())
    first = h.sync("a1", config_version=None)
    assert first["config"]["keys"][0]["id"] == "alice-web"
    again = h.sync("a1", config_version=first["config_version"])
    assert again["config"] is None
    h.admin("POST", "/admin/v1/users/alice/deactivate")
    changed = h.sync("a1", config_version=first["config_version"])
    assert changed["config_version"] == first["config_version"] + 1
    assert changed["config"]["users"][0]["active"] is False
    assert changed["server_time"] == h.clock()


def test_agents_are_listed(collector_app: AppHarness) -> None:
    h = collector_app
    h.sync("a1", release="0.1.0", stats={"in_flight": 3, "spool_backlog": 7})
    agents = h.admin("GET", "/admin/v1/agents").get_json()["agents"]
    assert agents == [
        {
            "agent_id": "a1",
            "instance": "a1-i",
            "release": "0.1.0",
            "last_seen": h.clock(),
            "in_flight": 3,
            "spool_backlog": 7,
            "leases": "none",
            "node_id": None,
            "advertise_url": None,
        }
    ]


def test_a_process_resets_once(collector_app: AppHarness) -> None:
    """A second reset from the same instance (a retry, a proxy's duplicate, a late copy) does not
    void what the agent was granted since its first (simulator finding 6)."""
    h = collector_app
    h.apply(team_config())
    h.sync("a1", [bal(want=100_000)], instance="p1", reset=True)
    assert leased(h) == 100_000
    again = h.sync("a1", [bal()], instance="p1", reset=True)["grants"][0]
    assert (again["held_micros"], leased(h)) == (100_000, 100_000)
    h.sync("a1", [bal()], instance="p2", reset=True)  # a new process
    assert leased(h) == 0


def test_a_repeated_or_late_request_changes_no_lease(collector_app: AppHarness) -> None:
    """Each lease change is applied once, by the current process (collector/requestorder.py):
    a proxy's duplicate, a copy delivered after newer requests, or a replaced process's late
    request answers what is held and moves nothing."""
    h = collector_app
    h.apply(team_config([user_config("alice", [key_config("alice-web")], daily_limit=10)]))
    old, new = "1765555555000-old", "1765555556000-new"
    h.sync("a1", [bal(want=100_000), daily(want=4)], instance=old, seq=1, reset=True)
    give_back = [bal(ret=30_000), daily(ret=2)]
    h.sync("a1", give_back, instance=old, seq=2)
    assert leased(h) == 70_000
    repeat = h.sync("a1", give_back, instance=old, seq=2)["grants"]
    assert (repeat[0]["held_micros"], repeat[1]["held"], leased(h)) == (70_000, 2, 70_000)
    h.sync("a1", [], instance=old, seq=3)  # no lease items: nothing to judge
    assert h.sync("a1", give_back, instance=old, seq=1)["grants"][1]["held"] == 2
    assert leased(h) == 70_000
    # a new process resets; the old one's late requests (a reset among them) change nothing
    h.sync("a1", [bal(want=20_000)], instance=new, seq=1, reset=True)
    assert leased(h) == 20_000
    h.sync("a1", [bal(ret=20_000)], instance=old, seq=9)
    h.sync("a1", [bal()], instance=old, seq=10, reset=True)
    assert leased(h) == 20_000
    agents = h.admin("GET", "/admin/v1/agents").json["agents"]
    assert agents[0]["instance"] == new  # a replaced process is not even a heartbeat
    # its late release returns nothing either
    late = h.agent(
        "POST",
        "/agent/v1/release",
        json={"agent_id": "a1", "instance": old, "seq": 11, "leases": [bal(ret=20_000)]},
    )
    assert late.json["returned"][0]["returned_micros"] == 0
    assert leased(h) == 20_000


def test_requests_without_seq_are_taken_as_they_come(collector_app: AppHarness) -> None:
    """Agents older than the request order (no seq): every return applies, as before."""
    h = collector_app
    h.apply(team_config())
    h.sync("a1", [bal(want=100_000)], instance="legacy-uuid", reset=True)
    h.sync("a1", [bal(ret=10_000)], instance="legacy-uuid")
    h.sync("a1", [bal(ret=10_000)], instance="legacy-uuid")
    assert leased(h) == 80_000
    bad = h.agent("POST", "/agent/v1/sync", json={"agent_id": "a1", "seq": 0})
    assert bad.status_code == 400 and "seq" in bad.json["message"]


def test_an_exact_repeat_is_answered_with_the_first_copys_grants(
    collector_app: AppHarness,
) -> None:
    """The agent may hear only the repeat (a proxy's retry, or its own resend of a request
    whose answer it lost): it learns what the first copy was granted, and nothing moves twice."""
    h = collector_app
    h.apply(team_config([user_config("alice", [key_config("alice-web")], daily_limit=10)]))
    ask = [bal(want=100_000), daily(want=4)]
    first = h.sync("a1", ask, instance="1765555555000-p", seq=1, reset=True)["grants"]
    again = h.sync("a1", ask, instance="1765555555000-p", seq=1, reset=True)["grants"]
    assert [(g.get("granted_micros"), g.get("granted")) for g in again] == [
        (g.get("granted_micros"), g.get("granted")) for g in first
    ]
    assert (again[0]["held_micros"], again[1]["held"], leased(h)) == (100_000, 4, 100_000)
    h.sync("a1", [bal(ret=10_000)], instance="1765555555000-p", seq=2)
    late = h.sync("a1", ask, instance="1765555555000-p", seq=1)["grants"]  # older: no replay
    assert (late[0]["granted_micros"], late[1]["granted"], leased(h)) == (0, 0, 90_000)
