"""Per-host credentials (issue 13): agent-bound service tokens, and a bound agent's usage
checked against what the collector granted it (both stores)."""

from __future__ import annotations

from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from solverfleet.collector.store import migrations
from tests.support.collector import (
    AppHarness,
    event,
    key_config,
    make_app,
    team_config,
    user_config,
)

pytest_plugins = ["tests.support.collector", "tests.support.mariadb"]
PRICE = 2000  # turnstile, team_config()


def config() -> dict:
    keys = [key_config("alice-web"), key_config("alice-api", balance="1.00")]
    return team_config(users=[user_config("alice", keys)])


def bound_token(h: AppHarness, agent_id: str) -> dict:
    response = h.admin("POST", "/admin/v1/tokens", json={"role": "service", "agent_id": agent_id})
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def call(h: AppHarness, token: str, path: str, body: dict):
    return h.call("POST", path, token, json=body)


def lease(key_id: str, want: int = 0, give_back: int = 0) -> dict:
    return {
        "kind": "balance",
        "key_id": key_id,
        "want_micros": want,
        "min_micros": min(want, PRICE),
        "return_micros": give_back,
    }


def sync(h: AppHarness, token: str, agent_id: str, *leases: dict, **extra: Any) -> dict:
    body = {"agent_id": agent_id, "instance": f"{agent_id}-i", "leases": list(leases), **extra}
    response = call(h, token, "/agent/v1/sync", body)
    assert response.status_code == 200, response.get_json()
    return {g["key_id"]: g for g in response.get_json()["grants"] if g["kind"] == "balance"}


def usage(h: AppHarness, token: str, agent_id: str, events: list[dict]) -> dict:
    response = call(h, token, "/agent/v1/usage", {"agent_id": agent_id, "events": events})
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def state(h: AppHarness) -> tuple[int, int, dict[str, int]]:
    s = h.summary()
    return s["events"], s["usage_micros"], {k: v["balance_micros"] for k, v in s["keys"].items()}


def refused_metric(h: AppHarness) -> dict[str, float]:
    text = h.app.test_client().get("/metrics").get_data(as_text=True)
    return {
        s.labels["reason"]: s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "solverfleet_collector_usage_refused_total"
    }


def test_bound_token_is_listed_and_only_for_service(collector_app: AppHarness) -> None:
    h = collector_app
    h.apply(config())
    created = bound_token(h, "host-1")
    assert created["token"]["agent_id"] == "host-1"
    listed = h.admin("GET", "/admin/v1/tokens").get_json()["tokens"]
    assert [t["agent_id"] for t in listed] == ["host-1"]
    for body in (
        {"role": "admin", "agent_id": "host-1"},
        {"role": "user", "user_id": "alice", "agent_id": "host-1"},
        {"role": "service", "agent_id": ""},
        {"role": "service", "agent_id": "two words"},
        {"role": "service", "agent_id": 5},
    ):
        response = h.admin("POST", "/admin/v1/tokens", json=body)
        assert response.status_code == 400, body
    assert len(h.admin("GET", "/admin/v1/tokens").get_json()["tokens"]) == 1


def test_bound_token_naming_another_agent_is_403_and_changes_nothing(
    collector_app: AppHarness,
) -> None:
    h = collector_app
    h.apply(config())
    t1 = bound_token(h, "host-1")["secret"]
    sync(h, t1, "host-1", lease("alice-web", 10 * PRICE))
    before = state(h)
    agents_before = h.admin("GET", "/admin/v1/agents").get_json()
    other_sync = {"agent_id": "host-2", "instance": "x", "leases": [lease("alice-web", PRICE)]}
    give_back = [lease("alice-web", 0, PRICE)]
    cases = [
        ("/agent/v1/sync", other_sync),
        ("/agent/v1/usage", {"agent_id": "host-2", "events": [event(agent_id="host-2")]}),
        # the batch names host-1 but an event names host-2
        ("/agent/v1/usage", {"agent_id": "host-1", "events": [event(agent_id="host-2")]}),
        ("/agent/v1/release", {"agent_id": "host-2", "instance": "x", "leases": give_back}),
    ]
    for path, body in cases:
        response = call(h, t1, path, body)
        assert response.status_code == 403, (path, response.get_json())
        assert response.get_json()["error"] == "agent_mismatch"
    assert state(h) == before
    assert h.admin("GET", "/admin/v1/agents").get_json() == agents_before


def test_forged_usage_is_refused_not_stored_not_charged_and_counted(
    collector_app: AppHarness,
) -> None:
    h = collector_app
    h.apply(config())
    t1 = bound_token(h, "host-1")["secret"]
    t2 = bound_token(h, "host-2")["secret"]
    assert sync(h, t1, "host-1", lease("alice-web", 3 * PRICE))["alice-web"]["granted_micros"] == (
        3 * PRICE
    )
    sync(h, t2, "host-2", lease("alice-api", 5 * PRICE))  # leased to host-2, not host-1
    before, metric_before = state(h), refused_metric(h)

    forged = {
        "not_leased": event("alice-api", agent_id="host-1", cost=PRICE),
        "wrong_cost": event("alice-web", agent_id="host-1", cost=1),
        "failed_not_leased": event("alice-api", agent_id="host-1", status="failed"),
    }
    answer = usage(h, t1, "host-1", list(forged.values()))
    assert answer["accepted"] == 0 and answer["duplicates"] == 0
    assert {r["event_id"]: r["reason"] for r in answer["refused"]} == {
        forged["not_leased"]["event_id"]: "not_leased",
        forged["wrong_cost"]["event_id"]: "wrong_cost",
        forged["failed_not_leased"]["event_id"]: "not_leased",
    }
    assert state(h) == before

    # Honest spend up to the grant is accepted; beyond it is refused.
    honest = [event("alice-web", agent_id="host-1", cost=PRICE) for _ in range(3)]
    extra = event("alice-web", agent_id="host-1", cost=PRICE, ts=2e9)  # newest: over the grant
    answer = usage(h, t1, "host-1", [*honest, extra])
    assert answer["accepted"] == 3
    assert answer["refused"] == [{"event_id": extra["event_id"], "reason": "over_grant"}]
    events, used, balances = state(h)
    assert (events, used) == (before[0] + 3, before[1] + 3 * PRICE)
    assert balances["alice-web"] == before[2]["alice-web"] - 3 * PRICE
    assert balances["alice-api"] == before[2]["alice-api"]

    # A replay: the accepted ones are duplicates, the refused one is refused again.
    answer = usage(h, t1, "host-1", [*honest, extra])
    assert answer["accepted"] == 0 and answer["duplicates"] == 3
    assert [r["reason"] for r in answer["refused"]] == ["over_grant"]
    assert state(h) == (events, used, balances)

    after = refused_metric(h)
    delta = {r: after.get(r, 0) - metric_before.get(r, 0) for r in after}
    assert delta == {"not_leased": 2, "wrong_cost": 1, "over_grant": 2}


def test_honest_agent_with_give_back_void_and_regrant_is_never_refused(
    collector_app: AppHarness,
) -> None:
    """The bound is granted - returned (sliver give-backs, releases), and voids (restart
    reset) are not returns: events spent from a voided lease still arrive from the spool."""
    h = collector_app
    h.apply(config())
    t1 = bound_token(h, "host-1")["secret"]
    sync(h, t1, "host-1", lease("alice-web", 4 * PRICE))
    spent = [event("alice-web", agent_id="host-1", cost=PRICE) for _ in range(2)]
    assert usage(h, t1, "host-1", spent[:1]) == {"accepted": 1, "duplicates": 0}
    # gives back a sliver of what is left (unspent: 3 prices, one of them spent but unshipped)
    sync(h, t1, "host-1", lease("alice-web", 0, PRICE // 2))
    # restart: the new instance's reset voids the lease; the spool still holds spent[1]
    sync(h, t1, "host-1", lease("alice-web", 2 * PRICE), instance="host-1-new", reset=True)
    more = [event("alice-web", agent_id="host-1", cost=PRICE) for _ in range(2)]
    assert usage(h, t1, "host-1", [spent[1], *more]) == {"accepted": 3, "duplicates": 0}
    # release at shutdown, then a later grant: still exact
    sync(h, t1, "host-1", lease("alice-web", 0, 0))
    call(h, t1, "/agent/v1/release", {"agent_id": "host-1", "instance": "host-1-new",
         "leases": [lease("alice-web", 0, 0)]})  # fmt: skip
    row = h.db.read(
        lambda tx: tx.one(
            "SELECT held_micros, granted_micros, returned_micros, charged_micros"
            " FROM lease_balance WHERE key_id = 'alice-web' AND agent_id = 'host-1'"
        )
    )
    assert tuple(int(x) for x in row) == (0, 6 * PRICE, PRICE // 2, 4 * PRICE)


def test_fleet_token_and_unbound_tokens_work_until_required(collector_db_url: str) -> None:
    h = make_app(collector_db_url)
    try:
        h.apply(config())
        unbound = h.admin("POST", "/admin/v1/tokens", json={"role": "service"}).get_json()
        # back-compat: unchecked usage (no lease, any cost) is still accepted
        assert h.usage([event(cost=1234, agent_id="any")], agent_id="any")["accepted"] == 1
        assert usage(h, unbound["secret"], "x", [event(agent_id="x")])["accepted"] == 1
    finally:
        h.db.close()
    strict = make_app(collector_db_url, require_agent_credentials=True)
    try:
        t1 = bound_token(strict, "host-1")["secret"]
        for token in (strict.fleet_token, unbound["secret"]):
            response = call(strict, token, "/agent/v1/sync", {"agent_id": "a1", "leases": []})
            assert response.status_code == 403
            assert response.get_json()["error"] == "agent_credential_required"
        sync(strict, t1, "host-1")
    finally:
        strict.db.close()


def test_revoking_one_agents_token_leaves_the_other_serving(collector_app: AppHarness) -> None:
    h = collector_app
    h.apply(config())
    one, two = bound_token(h, "host-1"), bound_token(h, "host-2")
    sync(h, one["secret"], "host-1", lease("alice-web", 2 * PRICE))
    sync(h, two["secret"], "host-2", lease("alice-web", 2 * PRICE))
    response = h.admin("POST", f"/admin/v1/tokens/{one['token']['id']}/revoke")
    assert response.status_code == 200
    assert call(h, one["secret"], "/agent/v1/sync", {"agent_id": "host-1"}).status_code == 401
    answer = usage(h, two["secret"], "host-2", [event(agent_id="host-2", cost=PRICE)])
    assert answer == {"accepted": 1, "duplicates": 0}


def test_migration_counts_held_leases_as_granted(collector_app: AppHarness) -> None:
    """Leases granted before version 5: what is held counts as granted (re-runnable)."""
    h = collector_app
    h.db.transaction(
        lambda tx: tx.execute(
            "INSERT INTO lease_balance (key_id, agent_id, held_micros) VALUES ('k', 'a', 7000)"
        )
    )
    h.db.transaction(migrations._v5_agent_credentials)
    row = h.db.read(
        lambda tx: tx.one(
            "SELECT granted_micros, returned_micros, charged_micros FROM lease_balance"
        )
    )
    assert tuple(int(x) for x in row) == (7000, 0, 0)


def test_shipper_moves_on_past_refused_events_and_keeps_them(tmp_path) -> None:
    """A refused event is final: the spool advances (no retry loop) and the event is kept in
    rejected.jsonl for an operator; the good events of the batch are acknowledged once."""
    from solverfleet.agent.limiter import Limiter
    from solverfleet.agent.shipper import Shipper
    from solverfleet.agent.spool import Spool

    events = [event(agent_id="a1") for _ in range(3)]

    class Client:
        calls: list[dict] = []

        def post(self, path: str, payload: dict, timeout: float | None = None) -> dict:
            self.calls.append(payload)
            refused = [{"event_id": events[1]["event_id"], "reason": "over_grant"}]
            return {"accepted": 2, "duplicates": 0, "refused": refused}

    shipper = Shipper(Spool(tmp_path / "spool"), Client(), Limiter(), "a1")
    for e in events:
        shipper.spool.append(e)
    assert shipper.ship_all(deadline=None)
    assert shipper.backlog == 0 and len(Client.calls) == 1
    rejected = shipper.spool.rejected_path.read_text().splitlines()
    assert len(rejected) == 1 and events[1]["event_id"] in rejected[0]
    assert "over_grant" in rejected[0]


def test_the_old_price_is_honest_just_after_a_price_change_only(collector_app: AppHarness) -> None:
    """Agents learn a new price on their next sync: a call charged at the previous price up to
    a minute after the change is accepted; later, or any other amount, is refused."""
    h = collector_app
    h.apply(config())
    token = bound_token(h, "host-1")["secret"]
    sync(h, token, "host-1", lease("alice-web", 10 * PRICE))
    changed_at = h.clock.now
    h.apply({**config(), "prices": {"turnstile": "0.003", "recaptcha-v2": "0.003"}})
    new = 3000
    calls = {
        "old price at once": event("alice-web", agent_id="host-1", cost=PRICE, ts=changed_at + 1),
        "new price": event("alice-web", agent_id="host-1", cost=new, ts=changed_at + 2),
        "old price too late": event("alice-web", agent_id="host-1", cost=PRICE, ts=changed_at + 61),
        "neither": event("alice-web", agent_id="host-1", cost=2500, ts=changed_at + 3),
    }
    answer = usage(h, token, "host-1", list(calls.values()))
    refused = {r["event_id"]: r["reason"] for r in answer["refused"]}
    assert answer["accepted"] == 2
    assert refused == {
        calls["old price too late"]["event_id"]: "wrong_cost",
        calls["neither"]["event_id"]: "wrong_cost",
    }
