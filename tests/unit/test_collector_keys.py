"""Key lifecycle on the admin API (both stores): create, change limits, top-up ledger with who
and why, rotate with a grace, and team-config apply next to all of it. The rotation's agent
side is checked on the collector's real sync snapshot, parsed by the agent's keystore."""

from __future__ import annotations

import pytest

from solverfleet.agent import precheck
from solverfleet.agent.keystore import parse_snapshot
from solverfleet.collector import accounts
from solverfleet.collector.store import MIGRATIONS, Database, migrate
from solverfleet.keyhash import hash_secret
from tests.support.collector import T0, AppHarness, key_config, team_config, user_config

pytest_plugins = ["tests.support.collector", "tests.support.mariadb"]

ALICE_SECRET = key_config("alice-web")["secret"]


@pytest.fixture
def h(collector_app: AppHarness) -> AppHarness:
    collector_app.apply(
        team_config(
            [
                user_config("alice", [key_config("alice-web")]),
                user_config("bob", [key_config("bob-web")]),
            ]
        )
    )
    return collector_app


def version(h: AppHarness) -> int:
    return h.db.read(accounts.config_version)


def stored(h: AppHarness, key_id: str, columns: str) -> tuple | None:
    return h.db.read(lambda tx: tx.one(f"SELECT {columns} FROM api_keys WHERE id = ?", (key_id,)))


def state(h: AppHarness) -> tuple:
    def read(tx):
        keys = tx.all("SELECT * FROM api_keys ORDER BY id")
        ledger = tx.all("SELECT * FROM transactions ORDER BY id")
        return keys, ledger

    return h.db.read(read), version(h)


def snapshot_key(h: AppHarness, key_id: str) -> dict:
    return next(k for k in h.sync()["config"]["keys"] if k["id"] == key_id)


# --- create -----------------------------------------------------------------------------------


def test_create_shows_the_secret_once_and_stores_only_its_hash(h: AppHarness) -> None:
    before = version(h)
    response = h.admin(
        "POST",
        "/admin/v1/keys",
        json={
            "id": "alice-ci",
            "user_id": "alice",
            "project": "ci",
            "environment": "staging",
            "balance": "2.5",
            "allowed_types": ["turnstile"],
            "cpm": 30,
            "ip_allowlist": ["10.1.0.0/16"],
        },
    )
    assert response.status_code == 201, response.get_json()
    body = response.get_json()
    secret = body["secret"]
    assert secret.startswith("sk_") and len(secret) > 40
    assert body["key"] == {
        "id": "alice-ci",
        "user_id": "alice",
        "account": "acme",
        "project": "ci",
        "environment": "staging",
        "balance": "2.50",
        "allowed_types": ["turnstile"],
        "cpm": 30,
        "ip_allowlist": ["10.1.0.0/16"],
        "active": True,
        "expires_at": None,
        "refill": None,
        "leased": "0.00",
    }
    assert stored(h, "alice-ci", "secret_hash") == (hash_secret(secret),)
    assert version(h) > before  # agents learn the key on their next sync
    assert snapshot_key(h, "alice-ci")["secret_hash"] == hash_secret(secret)
    # Never again: not in the list, not in the key, not in the ledger.
    for path in (
        "/admin/v1/keys",
        "/admin/v1/keys/alice-ci",
        "/admin/v1/keys/alice-ci/transactions",
    ):
        assert secret not in h.admin("GET", path).get_data(as_text=True)
    ledger = h.admin("GET", "/admin/v1/keys/alice-ci/transactions").get_json()["transactions"]
    assert [(t["amount"], t["actor"], t["reason"]) for t in ledger] == [
        ("2.50", "bootstrap", "opening balance (key created)")
    ]


def test_create_generates_an_id_and_defaults_to_no_limits(h: AppHarness) -> None:
    body = h.admin("POST", "/admin/v1/keys", json={"user_id": "bob"}).get_json()
    key = body["key"]
    assert key["id"].startswith("bob-") and key["id"] != "bob-web"
    assert (key["balance"], key["allowed_types"], key["cpm"], key["ip_allowlist"]) == (
        "0.00",
        None,
        None,
        None,
    )
    ledger = h.admin("GET", f"/admin/v1/keys/{key['id']}/transactions").get_json()
    assert ledger["transactions"] == []  # a zero opening balance is no transaction


@pytest.mark.parametrize(
    ("body", "status", "code", "mentions"),
    [
        ({}, 400, "invalid", "user_id"),
        ({"user_id": "zed"}, 400, "unknown_user", "zed"),
        ({"user_id": "alice", "id": "alice-web"}, 409, "key_exists", "alice-web"),
        ({"user_id": "alice", "id": "a/b"}, 400, "invalid", "id: not a valid id"),
        ({"user_id": "alice", "cpm": -1}, 400, "invalid", "cpm: must not be negative"),
        ({"user_id": "alice", "cpm": "10"}, 400, "invalid", "cpm: must be a whole number"),
        ({"user_id": "alice", "balance": "-1"}, 400, "invalid", "balance"),
        ({"user_id": "alice", "balance": 1.5}, 400, "invalid", "balance"),
        ({"user_id": "alice", "balance": "0.0000001"}, 400, "invalid", "balance"),
        ({"user_id": "alice", "allowed_types": ["nope"]}, 400, "invalid", "has no price"),
        ({"user_id": "alice", "ip_allowlist": ["10.0.0.1/8"]}, 400, "invalid", "host bits"),
        ({"user_id": "alice", "ip_allowlist": "10.0.0.0/8"}, 400, "invalid", "list of CIDRs"),
        ({"user_id": "alice", "project": "ENV:PROJECT"}, 400, "invalid", "not resolved"),
        ({"user_id": 7}, 400, "invalid", "user_id: must be a string"),
        ({"user_id": "alice", "secret": "sk_mine_12345"}, 400, "unknown_field", "secret"),
        ({"user_id": "alice", "colour": "red"}, 400, "unknown_field", "colour"),
    ],
)
def test_bad_create_is_a_4xx_and_changes_nothing(
    h: AppHarness, body: dict, status: int, code: str, mentions: str
) -> None:
    before = state(h)
    response = h.admin("POST", "/admin/v1/keys", json=body)
    assert response.status_code == status, response.get_json()
    payload = response.get_json()
    assert payload["error"] == code
    assert mentions in payload["message"]
    assert state(h) == before


def test_create_reports_every_bad_field_at_once(h: AppHarness) -> None:
    body = {"user_id": "alice", "cpm": -1, "ip_allowlist": ["x"], "allowed_types": ["nope"]}
    errors = h.admin("POST", "/admin/v1/keys", json=body).get_json()["errors"]
    assert [e.split(":")[0] for e in errors] == ["allowed_types[0]", "cpm", "ip_allowlist[0]"]


# --- limits -----------------------------------------------------------------------------------


def test_patch_changes_limits_and_agents_see_them(h: AppHarness) -> None:
    before = version(h)
    response = h.admin(
        "PATCH",
        "/admin/v1/keys/alice-web",
        json={"cpm": 12, "ip_allowlist": ["192.168.0.0/24"], "project": "web"},
    )
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert body["changed"] == ["project", "cpm", "ip_allowlist"]
    assert (body["key"]["cpm"], body["key"]["ip_allowlist"]) == (12, ["192.168.0.0/24"])
    assert version(h) == before + 1
    snap = snapshot_key(h, "alice-web")
    assert (snap["cpm"], snap["ip_allowlist"], snap["project"]) == (12, ["192.168.0.0/24"], "web")

    # null lifts a limit; the same values again change nothing and bump nothing.
    lifted = h.admin("PATCH", "/admin/v1/keys/alice-web", json={"cpm": None}).get_json()
    assert lifted["changed"] == ["cpm"] and lifted["key"]["cpm"] is None
    at = version(h)
    same = h.admin("PATCH", "/admin/v1/keys/alice-web", json={"project": "web"}).get_json()
    assert same["changed"] == [] and version(h) == at


@pytest.mark.parametrize(
    ("path", "body", "status", "code"),
    [
        ("/admin/v1/keys/alice-web", {}, 400, "invalid"),
        ("/admin/v1/keys/alice-web", {"cpm": 1.5}, 400, "invalid"),
        ("/admin/v1/keys/alice-web", {"allowed_types": ["nope"]}, 400, "invalid"),
        ("/admin/v1/keys/alice-web", {"ip_allowlist": ["300.0.0.0/8"]}, 400, "invalid"),
        ("/admin/v1/keys/alice-web", {"project": ""}, 400, "invalid"),
        ("/admin/v1/keys/alice-web", {"balance": "99.00"}, 400, "unknown_field"),
        ("/admin/v1/keys/alice-web", {"secret": "sk_x_12345678"}, 400, "unknown_field"),
        ("/admin/v1/keys/alice-web", {"active": False}, 400, "unknown_field"),
        ("/admin/v1/keys/nobody", {"cpm": 1}, 404, "not_found"),
    ],
)
def test_bad_patch_is_a_4xx_and_changes_nothing(
    h: AppHarness, path: str, body: dict, status: int, code: str
) -> None:
    before = state(h)
    response = h.admin("PATCH", path, json=body)
    assert response.status_code == status, response.get_json()
    assert response.get_json()["error"] == code
    assert state(h) == before


# --- top-ups: who and why ---------------------------------------------------------------------


def test_topups_record_who_and_why(h: AppHarness) -> None:
    token = h.admin("POST", "/admin/v1/tokens", json={"role": "admin", "label": "ops"}).get_json()
    h.admin("POST", "/admin/v1/keys/alice-web/topup", json={"amount": "1.25", "reason": "inv 7"})
    h.call(
        "POST",
        "/admin/v1/keys/alice-web/topup",
        token["secret"],
        json={"amount": "0.75", "reason": "goodwill"},
    )
    ledger = h.admin("GET", "/admin/v1/keys/alice-web/transactions").get_json()["transactions"]
    assert [(t["amount"], t["balance_after"], t["reason"], t["actor"]) for t in ledger] == [
        ("0.75", "12.00", "goodwill", f"token:{token['token']['id']}"),
        ("1.25", "11.25", "inv 7", "bootstrap"),
        ("10.00", "10.00", "opening balance (team config)", "bootstrap"),
    ]
    limited = h.admin("GET", "/admin/v1/keys/alice-web/transactions?limit=1").get_json()
    assert len(limited["transactions"]) == 1
    assert h.admin("GET", "/admin/v1/keys/nobody/transactions").status_code == 404
    assert h.admin("GET", "/admin/v1/keys/alice-web/transactions?limit=0").status_code == 400


# --- rotation ---------------------------------------------------------------------------------


def test_rotate_puts_both_hashes_in_the_snapshot_until_the_grace_ends(h: AppHarness) -> None:
    before = version(h)
    response = h.admin("POST", "/admin/v1/keys/alice-web/rotate", json={"grace_seconds": 600})
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    new = body["secret"]
    assert body["grace_seconds"] == 600
    assert body["previous_valid_until"] == T0 + 600  # the collector's clock
    assert version(h) == before + 1
    snap = snapshot_key(h, "alice-web")
    assert snap["secret_hash"] == hash_secret(new)
    assert snap["previous_secret_hash"] == hash_secret(ALICE_SECRET)
    assert snap["previous_until_ms"] == int((T0 + 600) * 1000)
    assert new not in h.admin("GET", "/admin/v1/keys/alice-web").get_data(as_text=True)


def test_agent_accepts_the_old_secret_only_until_the_grace_ends(h: AppHarness) -> None:
    new = h.admin("POST", "/admin/v1/keys/alice-web/rotate", json={"grace_seconds": 60}).get_json()[
        "secret"
    ]
    answer = h.sync()
    snap = parse_snapshot(answer["config_version"], answer["config"])
    until = T0 + 60

    for secret, now, ok in [
        (new, until + 3600, True),
        (ALICE_SECRET, until - 0.001, True),
        (ALICE_SECRET, until, False),
        (ALICE_SECRET, until + 1, False),
        (key_config("bob-web")["secret"], until + 1, True),
    ]:
        result = precheck.authenticate(snap, secret, now)
        if ok:
            assert not isinstance(result, precheck.Decision), (secret, now, result)
        else:
            assert isinstance(result, precheck.Decision) and result.code == "invalid_key"
    key, _ = precheck.authenticate(snap, ALICE_SECRET, until - 1)
    assert key.id == "alice-web"  # usage of the old secret is the same key's


def test_rotate_without_grace_refuses_the_old_secret_at_once(h: AppHarness) -> None:
    body = h.admin("POST", "/admin/v1/keys/alice-web/rotate").get_json()  # no body: grace 0
    assert (body["grace_seconds"], body["previous_valid_until"]) == (0, None)
    snap_key = snapshot_key(h, "alice-web")
    assert "previous_secret_hash" not in snap_key
    answer = h.sync()
    snap = parse_snapshot(answer["config_version"], answer["config"])
    assert isinstance(precheck.authenticate(snap, ALICE_SECRET, T0), precheck.Decision)
    assert not isinstance(precheck.authenticate(snap, body["secret"], T0), precheck.Decision)


def test_rotating_again_ends_the_earlier_grace(h: AppHarness) -> None:
    h.admin("POST", "/admin/v1/keys/alice-web/rotate", json={"grace_seconds": 600})
    second = h.admin("POST", "/admin/v1/keys/alice-web/rotate", json={"grace_seconds": 600})
    first_hash = hash_secret(ALICE_SECRET)
    snap = snapshot_key(h, "alice-web")
    assert snap["previous_secret_hash"] != first_hash
    assert snap["secret_hash"] == hash_secret(second.get_json()["secret"])


@pytest.mark.parametrize(
    ("path", "body", "status", "code"),
    [
        ("/admin/v1/keys/alice-web/rotate", {"grace_seconds": -1}, 400, "invalid_grace"),
        ("/admin/v1/keys/alice-web/rotate", {"grace_seconds": 1.5}, 400, "invalid_grace"),
        ("/admin/v1/keys/alice-web/rotate", {"grace_seconds": "60"}, 400, "invalid_grace"),
        ("/admin/v1/keys/alice-web/rotate", {"grace_seconds": True}, 400, "invalid_grace"),
        ("/admin/v1/keys/alice-web/rotate", {"grace_seconds": 10**9}, 400, "invalid_grace"),
        ("/admin/v1/keys/alice-web/rotate", {"grace": 60}, 400, "unknown_field"),
        ("/admin/v1/keys/nobody/rotate", {"grace_seconds": 60}, 404, "not_found"),
    ],
)
def test_bad_rotate_is_a_4xx_and_changes_nothing(
    h: AppHarness, path: str, body: dict, status: int, code: str
) -> None:
    before = state(h)
    response = h.admin("POST", path, json=body)
    assert response.status_code == status, response.get_json()
    assert response.get_json()["error"] == code
    assert state(h) == before


# --- team config apply beside the API ---------------------------------------------------------


def test_reapplying_the_file_does_not_undo_a_rotation(h: AppHarness) -> None:
    new = h.admin(
        "POST", "/admin/v1/keys/alice-web/rotate", json={"grace_seconds": 600}
    ).get_json()["secret"]
    config = team_config(
        [
            user_config("alice", [key_config("alice-web")]),
            user_config("bob", [key_config("bob-web")]),
        ]
    )
    result = h.apply(config)
    assert {"kind": "key", "id": "alice-web"} in result["unchanged"]
    secret_hash, previous = stored(h, "alice-web", "secret_hash, previous_secret_hash")
    assert (secret_hash, previous) == (hash_secret(new), hash_secret(ALICE_SECRET))

    # A new secret in the file is an intended change: applied at once, grace ended.
    config["users"][0]["keys"][0]["secret"] = "sk_test_alice_from_file_v2"
    result = h.apply(config)
    assert {"kind": "key", "id": "alice-web", "fields": ["secret"]} in result["changed"]
    secret_hash, previous = stored(h, "alice-web", "secret_hash, previous_secret_hash")
    assert (secret_hash, previous) == (hash_secret("sk_test_alice_from_file_v2"), None)


def test_apply_leaves_api_created_keys_alone(h: AppHarness) -> None:
    made = h.admin("POST", "/admin/v1/keys", json={"user_id": "alice", "cpm": 5}).get_json()
    before = stored(h, made["key"]["id"], "*")
    h.apply(team_config([user_config("alice", [key_config("alice-web", cpm=9)])]))
    assert stored(h, made["key"]["id"], "*") == before


def test_a_secret_in_grace_cannot_be_given_to_another_key(h: AppHarness) -> None:
    h.admin("POST", "/admin/v1/keys/alice-web/rotate", json={"grace_seconds": 600})
    before = state(h)
    clash = key_config("carol-web", secret=ALICE_SECRET)  # alice's rotated-out secret
    response = h.admin("POST", "/admin/v1/apply", json=team_config([user_config("carol", [clash])]))
    assert response.status_code == 409
    assert response.get_json()["error"] == "secret_reused"
    assert ALICE_SECRET not in response.get_data(as_text=True)
    assert state(h) == before


# --- migration 4 on a store from before it ----------------------------------------------------


def test_migration_4_upgrades_an_existing_store_and_can_run_again(empty_db_url: str) -> None:
    db = Database(empty_db_url)
    try:
        by_version = {m.version: m for m in MIGRATIONS}
        db.transaction(by_version[1].apply)  # a store as version 1 left it, with a key
        db.transaction(
            lambda tx: tx.execute(
                "INSERT INTO api_keys (id, user_id, account, secret_hash, balance_micros,"
                " active, updated_ms) VALUES ('k1', 'u1', 'acme', ?, 0, 1, 0)",
                (hash_secret(ALICE_SECRET),),
            )
        )
        db.transaction(by_version[4].apply)
        db.transaction(by_version[4].apply)  # MySQL commits each ALTER: a rerun must work
        migrate(db)  # records every version, re-running the idempotent ones
        row = db.read(
            lambda tx: tx.one(
                "SELECT config_secret_hash, previous_secret_hash, previous_until_ms"
                " FROM api_keys WHERE id = 'k1'"
            )
        )
        assert row == (hash_secret(ALICE_SECRET), None, None)
        assert db.read(lambda tx: tx.scalar("SELECT COUNT(*) FROM api_tokens")) == 0
        assert db.read(lambda tx: tx.all("SELECT actor FROM transactions")) == []
    finally:
        db.close()
