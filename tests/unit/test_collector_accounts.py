"""Accounts: applying team config, secrets, top-ups, flags, config versions (both stores)."""

from __future__ import annotations

import copy

import pytest

from solverfleet.collector import accounts, teamapply
from solverfleet.collector.problems import ConfigInvalid, Conflict, Invalid, NotFound
from solverfleet.keyhash import hash_secret
from tests.support.collector import AppHarness, key_config, team_config, user_config

pytest_plugins = ["tests.support.collector", "tests.support.mariadb"]
NOW = 1_765_555_555_000


def version(h: AppHarness) -> int:
    return h.db.read(accounts.config_version)


def counts(h: AppHarness) -> tuple:
    def read(tx):
        return tuple(
            tx.scalar(f"SELECT COUNT(*) FROM {t}")
            for t in ("accounts", "users", "api_keys", "prices", "transactions")
        )

    return h.db.read(read)


def apply(h: AppHarness, config: dict, dry_run: bool = False) -> dict:
    return teamapply.apply_config(h.db, config, dry_run=dry_run, now_ms=NOW)


def test_apply_creates_then_reports_unchanged(collector_app: AppHarness) -> None:
    h = collector_app
    first = apply(h, team_config())
    assert {(c["kind"], c["id"]) for c in first["created"]} == {
        ("account", "acme"),
        ("price", "turnstile"),
        ("price", "recaptcha-v2"),
        ("user", "alice"),
        ("key", "alice-web"),
    }
    assert first["secrets"] == {}  # the config carried the secret; nothing generated
    v = version(h)
    again = apply(h, team_config())
    assert again["created"] == again["changed"] == []
    assert len(again["unchanged"]) == 5
    assert version(h) == v  # nothing changed, nothing for agents to fetch


def test_apply_reports_changed_fields_and_bumps_version(collector_app: AppHarness) -> None:
    h = collector_app
    apply(h, team_config())
    v = version(h)
    key = key_config("alice-web", cpm=60, ip_allowlist=["10.0.0.0/8"], secret="sk_rotated_secret")
    config = team_config([user_config("alice", [key], daily_limit=5, role="admin")])
    config["prices"]["turnstile"] = "0.0025"
    result = apply(h, config)
    changed = {(c["kind"], c["id"]): c["fields"] for c in result["changed"]}
    assert changed == {
        ("price", "turnstile"): ["price"],
        ("user", "alice"): ["role", "daily_limit"],
        ("key", "alice-web"): ["cpm", "ip_allowlist", "secret"],
    }
    assert version(h) == v + 1
    snap = h.db.read(accounts.snapshot)
    assert snap["keys"][0]["secret_hash"] == hash_secret("sk_rotated_secret")
    assert snap["account_prices"]["acme"]["turnstile"] == 2500  # the file's account's price
    assert snap["users"][0]["daily_limit"] == 5


def test_generated_secret_is_shown_once_and_stored_hashed(collector_app: AppHarness) -> None:
    h = collector_app
    result = apply(h, team_config([user_config("bob", [key_config("bob-1", secret=None)])]))
    secret = result["secrets"]["bob-1"]
    assert secret.startswith("sk_")
    snap = h.db.read(accounts.snapshot)
    assert snap["keys"][0]["secret_hash"] == hash_secret(secret)
    # Re-applying without a secret keeps the existing one and shows nothing.
    again = apply(h, team_config([user_config("bob", [key_config("bob-1", secret=None)])]))
    assert again["secrets"] == {}
    assert h.db.read(accounts.snapshot)["keys"][0]["secret_hash"] == hash_secret(secret)


def test_opening_balance_only_at_creation(collector_app: AppHarness) -> None:
    h = collector_app
    apply(h, team_config())
    assert accounts.get_key(h.db, "alice-web")["balance"] == "10.00"
    ledger = h.db.read(lambda tx: tx.all("SELECT amount_micros, reason FROM transactions"))
    assert ledger == [(10_000_000, teamapply.OPENING_REASON)]
    h.db.transaction(
        lambda tx: tx.execute("UPDATE api_keys SET balance_micros = 4000000 WHERE id = 'alice-web'")
    )
    apply(h, team_config())  # same file again must not refill spent credit
    assert accounts.get_key(h.db, "alice-web")["balance"] == "4.00"


def test_low_balance_alert_is_stored_as_micros(collector_app: AppHarness) -> None:
    h = collector_app

    def stored():
        return h.db.read(
            lambda tx: tx.one(
                "SELECT low_balance_enabled, low_balance_threshold_micros FROM accounts"
            )
        )

    apply(h, team_config(low_balance_alert={"enabled": True, "threshold": "5.00"}))
    assert stored() == (1, 5_000_000)
    again = apply(h, team_config(low_balance_alert={"enabled": True, "threshold": "5"}))
    assert ("account", "acme") in {(u["kind"], u["id"]) for u in again["unchanged"]}
    changed = apply(h, team_config(low_balance_alert=None))
    assert {"kind": "account", "id": "acme", "fields": ["low_balance_alert"]} in changed["changed"]
    assert stored() == (0, None)


def test_dry_run_changes_nothing(collector_app: AppHarness) -> None:
    h = collector_app
    before = (counts(h), version(h))
    result = apply(h, team_config(), dry_run=True)
    assert result["dry_run"] is True
    assert len(result["created"]) == 5
    assert (counts(h), version(h)) == before


@pytest.mark.parametrize(
    ("mutate", "fragment"),
    [
        (lambda c: c["users"][1]["keys"][0].update(secret="ENV:BOB_KEY"), "ENV:"),
        (lambda c: c["users"][1]["keys"][0].update(ip_allowlist=["10.0.0.0/33"]), "not a CIDR"),
        (lambda c: c["users"][1]["keys"][0].update(balance=1.5), "float"),
        (lambda c: c["users"][1]["keys"][0].update(balance="0.0000001"), "6 decimal"),
        (lambda c: c["users"][1]["keys"][0].update(balance="-1"), "negative"),
        (lambda c: c["users"][1]["keys"][0].update(colour="red"), "unknown field"),
        (lambda c: c["users"][1].update(role="root"), "unknown role"),
        (lambda c: c["users"][1]["keys"][0].update(id="alice-web"), "duplicate key id"),
        (lambda c: c["users"][1].update(id="alice"), "duplicate user id"),
        (lambda c: c["prices"].update(turnstile="cheap"), "not a decimal"),
        (lambda c: c.update(extra=1), "unknown field"),
    ],
)
def test_invalid_config_applies_nothing(collector_app: AppHarness, mutate, fragment: str) -> None:
    h = collector_app
    config = team_config(
        [
            user_config("alice", [key_config("alice-web")]),
            user_config("bob", [key_config("bob-1")]),  # the bad part comes last
        ]
    )
    mutate(config)
    with pytest.raises(ConfigInvalid) as err:
        apply(h, config)
    assert fragment in str(err.value)
    assert counts(h) == (0, 0, 0, 0, 0)
    assert version(h) == 1


def test_reused_secret_is_a_conflict_and_applies_nothing(collector_app: AppHarness) -> None:
    h = collector_app
    apply(h, team_config())
    before = (counts(h), version(h))
    stolen = key_config("bob-1", secret=key_config("alice-web")["secret"])
    with pytest.raises(Conflict):
        apply(h, team_config([user_config("bob", [stolen])]))
    assert (counts(h), version(h)) == before
    twins = [key_config("c-1", secret="sk_same_secret"), key_config("c-2", secret="sk_same_secret")]
    with pytest.raises(Conflict):
        apply(h, team_config([user_config("carol", twins)]))
    assert (counts(h), version(h)) == before


def test_apply_never_deletes(collector_app: AppHarness) -> None:
    h = collector_app
    apply(h, team_config([user_config("alice", [key_config("alice-web"), key_config("alice-2")])]))
    apply(h, team_config())
    assert [k["id"] for k in accounts.list_keys(h.db)] == ["alice-2", "alice-web"]


def test_topup_is_a_ledger_transaction(collector_app: AppHarness) -> None:
    h = collector_app
    apply(h, team_config())
    v = version(h)
    result = accounts.topup(h.db, "alice-web", 2_500_000, "invoice 42", now_ms=NOW)
    assert result["balance"] == "12.50"
    assert version(h) == v + 1
    row = h.db.read(
        lambda tx: tx.one(
            "SELECT amount_micros, balance_after_micros, reason FROM transactions WHERE id = ?",
            (result["transaction_id"],),
        )
    )
    assert row == (2_500_000, 12_500_000, "invoice 42")
    for bad in (0, -1):
        with pytest.raises(Invalid):
            accounts.topup(h.db, "alice-web", bad, "x", now_ms=NOW)
    with pytest.raises(NotFound):
        accounts.topup(h.db, "nobody", 1, "x", now_ms=NOW)
    assert accounts.get_key(h.db, "alice-web")["balance"] == "12.50"


def test_set_active_bumps_version_only_on_change(collector_app: AppHarness) -> None:
    h = collector_app
    apply(h, team_config())
    v = version(h)
    assert accounts.set_active(h.db, "key", "alice-web", False, now_ms=NOW) == {
        "key": "alice-web",
        "active": False,
    }
    assert version(h) == v + 1
    accounts.set_active(h.db, "key", "alice-web", False, now_ms=NOW)
    assert version(h) == v + 1
    accounts.set_active(h.db, "user", "alice", False, now_ms=NOW)
    assert version(h) == v + 2
    snap = h.db.read(accounts.snapshot)
    assert snap["keys"][0]["active"] is False and snap["users"][0]["active"] is False
    with pytest.raises(NotFound):
        accounts.set_active(h.db, "user", "nobody", True, now_ms=NOW)


def test_snapshot_shape(collector_app: AppHarness) -> None:
    h = collector_app
    key = key_config(
        "alice-web", allowed_types=["turnstile"], cpm=120, ip_allowlist=["127.0.0.0/8"]
    )
    apply(h, team_config([user_config("alice", [key], daily_limit=1000)]))
    snap = h.db.read(accounts.snapshot)
    assert snap["prices"] == {}  # a file's prices are its account's unless it says otherwise
    assert snap["account_prices"] == {"acme": {"recaptcha-v2": 3000, "turnstile": 2000}}
    assert snap["type_aliases"] == {}
    assert snap["users"] == [
        {
            "id": "alice",
            "email": "alice@example.com",
            "role": "user",
            "daily_limit": 1000,
            "active": True,
            "account": "acme",
        }
    ]
    assert snap["keys"] == [
        {
            "id": "alice-web",
            "secret_hash": hash_secret(key["secret"]),
            "user_id": "alice",
            "account": "acme",
            "project": None,
            "environment": None,
            "allowed_types": ["turnstile"],
            "cpm": 120,
            "ip_allowlist": ["127.0.0.0/8"],
            "active": True,
            "balance_micros": 10_000_000,
            "expires_at_ms": None,
        }
    ]


def test_input_is_not_mutated(collector_app: AppHarness) -> None:
    config = team_config()
    original = copy.deepcopy(config)
    apply(collector_app, config)
    assert config == original
