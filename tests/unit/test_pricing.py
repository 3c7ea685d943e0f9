"""Prices per account, default prices and type aliases: resolution, the agent's pre-check,
team files that keep to their own account, ingest's price check (both stores)."""

from __future__ import annotations

import pytest

from solverfleet.agent import precheck
from solverfleet.agent.keystore import parse_snapshot
from solverfleet.agent.limiter import Limiter
from solverfleet.captchatypes import canonical, resolve_price
from solverfleet.collector import accounts
from solverfleet.collector.store import MIGRATIONS, Database
from solverfleet.keyhash import hash_secret
from tests.support.collector import AppHarness, event, key_config, team_config, user_config
from tests.unit.test_agent_precheck import NOW, grant_everything
from tests.unit.test_collector_agent_creds import bound_token, lease, sync, usage

pytest_plugins = ["tests.support.collector", "tests.support.mariadb"]


def test_resolution_order_account_then_global():
    glob = {"turnstile": 2000, "*": 9000}
    assert resolve_price(glob, None, "turnstile") == 2000
    assert resolve_price(glob, None, "geetest") == 9000
    assert resolve_price(glob, {"turnstile": 2500}, "turnstile") == 2500
    assert resolve_price(glob, {"turnstile": 2500}, "geetest") == 9000
    # An account's default beats a global price: its file said "any other type costs this".
    assert resolve_price(glob, {"*": 3000}, "turnstile") == 3000
    assert resolve_price({}, {}, "geetest") is None
    assert canonical("cloudflare-turnstile") == "turnstile"
    assert canonical("ts", {"ts": "turnstile"}) == "turnstile"


def key_row(key_id: str, account: str, **extra) -> dict:
    row = {"id": key_id, "secret_hash": hash_secret(f"secret-{key_id}"), "user_id": f"u-{key_id}",
           "account": account, "allowed_types": None, "cpm": None, "ip_allowlist": None,
           "active": True, "balance_micros": 10_000_000}  # fmt: skip
    return {**row, **extra}


@pytest.fixture
def snap():
    keys = [
        key_row("a", "acme"),
        key_row("b", "beta"),
        key_row("g", "gamma"),
        key_row("typed", "acme", allowed_types=["turnstile"]),
    ]
    users = [{"id": k["user_id"], "role": "user", "account": k["account"]} for k in keys]
    return parse_snapshot(
        3,
        {
            "prices": {"turnstile": 2000, "recaptcha-v2": 3000},
            "account_prices": {"acme": {"turnstile": 2500}, "beta": {"*": 3000}},
            "type_aliases": {"acme": {"ts": "turnstile"}},
            "users": users,
            "keys": keys,
        },
    )


def decide(snap, key_id: str, slug: str):
    limiter = Limiter()
    grant_everything(limiter, snap)
    return precheck.check(snap, limiter, f"secret-{key_id}", slug, "10.0.0.1", NOW)


@pytest.mark.parametrize(
    ("key_id", "slug", "price"),
    [
        ("a", "turnstile", 2500),  # acme's own
        ("a", "recaptcha-v2", 3000),  # global fallback
        ("b", "turnstile", 3000),  # beta's default beats the global price
        ("b", "geetest", 3000),
        ("g", "turnstile", 2000),  # no prices of its own: global
    ],
)
def test_each_key_pays_its_accounts_price(snap, key_id, slug, price):
    decision = decide(snap, key_id, slug)
    assert decision.allowed and decision.price == price and decision.slug == slug


def test_unpriced_type_without_any_default_is_400(snap):
    decision = decide(snap, "g", "geetest")
    assert decision.code == "unknown_type" and decision.status == 400


@pytest.mark.parametrize(
    ("key_id", "alias", "price"),
    [("a", "cloudflare-turnstile", 2500), ("a", "ts", 2500), ("g", "cloudflare-turnstile", 2000)],
)
def test_an_alias_is_its_canonical_type(snap, key_id, alias, price):
    decision = decide(snap, key_id, alias)
    assert decision.allowed and decision.slug == "turnstile" and decision.price == price


def test_aliases_are_per_account_and_allowed_types_see_the_slug(snap):
    assert decide(snap, "g", "ts").code == "unknown_type"  # acme's alias, not gamma's
    assert decide(snap, "typed", "cloudflare-turnstile").allowed
    assert decide(snap, "typed", "recaptcha-v2").code == "type_not_allowed"


# --- collector ---------------------------------------------------------------------------------


def account_b(key_ids: list[str], user_id: str = "bob") -> dict:
    keys = [key_config(k, secret=f"sk_test_{k}_b_secret") for k in key_ids]
    return team_config([user_config(user_id, keys)], account="beta", prices={"turnstile": "0.005"})


def snapshot(h: AppHarness) -> dict:
    return h.db.read(accounts.snapshot)


def test_two_accounts_keep_their_own_prices(collector_app: AppHarness) -> None:
    h = collector_app
    h.apply(team_config())  # acme: turnstile 0.002
    h.apply(account_b(["bob-1"]))  # beta: turnstile 0.005
    snap = snapshot(h)
    assert snap["prices"] == {}
    assert snap["account_prices"]["acme"]["turnstile"] == 2000
    assert snap["account_prices"]["beta"] == {"turnstile": 5000}
    agent_view = parse_snapshot(1, snap)
    limiter = Limiter()
    grant_everything(limiter, agent_view)
    for key_id, price in (("alice-web", 2000), ("bob-1", 5000)):
        secret = f"sk_test_{key_id}_secret" if key_id == "alice-web" else "sk_test_bob-1_b_secret"
        decision = precheck.check(agent_view, limiter, secret, "turnstile", "10.0.0.1", NOW)
        assert decision.allowed and decision.price == price


def test_prices_scope_global_sets_everyones_price(collector_app: AppHarness) -> None:
    h = collector_app
    result = h.apply(team_config(prices={"geetest": "0.004"}, prices_scope="global"))
    assert {"kind": "price", "id": "geetest"} in result["created"]
    snap = snapshot(h)
    assert snap["prices"] == {"geetest": 4000} and snap["account_prices"] == {}


def test_default_price_and_aliases_are_stored_per_account(collector_app: AppHarness) -> None:
    h = collector_app
    result = h.apply(team_config(default_price="0.003", type_aliases={"ts": "turnstile"}))
    assert {"kind": "price", "id": "default_price"} in result["created"]
    snap = snapshot(h)
    assert snap["account_prices"]["acme"]["*"] == 3000
    assert snap["type_aliases"] == {"acme": {"ts": "turnstile"}}
    again = h.apply(team_config(default_price="0.003"))  # the file's whole list of aliases
    assert {"kind": "account", "id": "acme", "fields": ["type_aliases"]} in again["changed"]
    assert snapshot(h)["type_aliases"] == {}


def test_a_file_cannot_take_another_accounts_key_or_user(collector_app: AppHarness) -> None:
    h = collector_app
    h.apply(team_config())  # acme owns alice and alice-web
    before = (snapshot(h), h.db.read(accounts.config_version))
    response = h.admin("POST", "/admin/v1/apply", json=account_b(["bob-1", "alice-web"]))
    assert response.status_code == 409
    body = response.get_json()
    assert body["error"] == "owned_by_another_account"
    assert "'alice-web' (account 'acme')" in body["message"] and "bob-1" not in body["message"]
    response = h.admin("POST", "/admin/v1/apply", json=account_b(["bob-1"], user_id="alice"))
    assert response.status_code == 409 and "user 'alice'" in response.get_json()["message"]
    # All or nothing: beta, bob, bob-1 and beta's prices were not created either.
    assert (snapshot(h), h.db.read(accounts.config_version)) == before
    dry = h.admin("POST", "/admin/v1/apply?dry_run=1", json=account_b(["alice-web"]))
    assert dry.status_code == 409


def test_keys_api_takes_an_alias_and_default_priced_types(collector_app: AppHarness) -> None:
    h = collector_app
    h.apply(team_config(default_price="0.003"))
    body = {"user_id": "alice", "allowed_types": ["cloudflare-turnstile", "geetest"]}
    response = h.admin("POST", "/admin/v1/keys", json=body)
    assert response.status_code == 201, response.get_json()
    assert response.get_json()["key"]["allowed_types"] == ["turnstile", "geetest"]


def test_ingest_checks_cost_against_the_keys_account(collector_app: AppHarness) -> None:
    h = collector_app
    h.apply(team_config(default_price="0.003"))
    h.apply(account_b(["bob-1"]))
    t1 = bound_token(h, "host-1")["secret"]
    sync(h, t1, "host-1", lease("alice-web", 20_000), lease("bob-1", 20_000))
    calls = {
        "acme own": event("alice-web", agent_id="host-1", cost=2000),
        "acme default": event("alice-web", agent_id="host-1", cost=3000, type="geetest"),
        "beta own": event("bob-1", agent_id="host-1", cost=5000, user_id="bob", account="beta"),
        "beta at acme's": event("bob-1", agent_id="host-1", cost=2000, user_id="bob"),
        "beta unpriced": event("bob-1", agent_id="host-1", cost=3000, type="geetest"),
    }
    answer = usage(h, t1, "host-1", list(calls.values()))
    refused = {r["event_id"]: r["reason"] for r in answer["refused"]}
    assert answer["accepted"] == 3
    assert refused == {
        calls["beta at acme's"]["event_id"]: "wrong_cost",
        calls["beta unpriced"]["event_id"]: "wrong_cost",  # acme's default is not beta's
    }


def test_migration_9_moves_builtin_aliases_to_their_type_and_can_run_again(
    empty_db_url: str,
) -> None:
    """A store from before 9 may price and allow the seeds' ``cloudflare-turnstile`` as a type
    of its own: it becomes ``turnstile`` (agents would no longer find it under the alias)."""
    db = Database(empty_db_url)
    try:
        by_version = {m.version: m for m in MIGRATIONS}
        for version in (1, 4, 2, 3, 5):
            db.transaction(by_version[version].apply)

        def old_data(tx):
            tx.execute("INSERT INTO prices (type, price_micros) VALUES ('cloudflare-turnstile', 7)")
            tx.execute(
                "INSERT INTO api_keys (id, user_id, account, secret_hash, balance_micros,"
                " allowed_types, active, updated_ms) VALUES ('k1', 'u1', 'acme', 'h', 0, ?, 1, 0)",
                ('["cloudflare-turnstile", "hcaptcha"]',),
            )

        db.transaction(old_data)
        db.transaction(by_version[9].apply)
        db.transaction(by_version[9].apply)  # a rerun changes nothing more
        assert db.read(lambda tx: tx.all("SELECT type, price_micros FROM prices")) == [
            ("turnstile", 7)
        ]
        assert db.read(lambda tx: accounts.config_version(tx)) == 2  # agents fetch it again
        key = db.read(lambda tx: tx.scalar("SELECT allowed_types FROM api_keys"))
        assert key == '["turnstile", "hcaptcha"]'
        assert db.read(lambda tx: tx.all("SELECT * FROM account_prices")) == []
    finally:
        db.close()
