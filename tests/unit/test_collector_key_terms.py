"""Key expiry, key delete and automatic refill on the admin API and the team config (both
stores), with the agent side checked on the collector's real sync snapshot."""

from __future__ import annotations

import threading

import pytest

from solverfleet.agent import precheck
from solverfleet.agent.compat import answers
from solverfleet.agent.keystore import parse_snapshot
from solverfleet.collector import accounts, refill
from solverfleet.collector.periods import current_period
from solverfleet.collector.store import Database
from solverfleet.keyhash import hash_secret
from solverfleet.teamconfig.fields import format_time
from tests.support.collector import T0, AppHarness, event, key_config, team_config, user_config

pytest_plugins = ["tests.support.collector", "tests.support.mariadb"]

SECRET = key_config("alice-web")["secret"]
T0_MS = int(T0 * 1000)  # 2025-12-12T16:05:55Z
DAY_MS = 86_400_000


@pytest.fixture
def h(collector_app: AppHarness) -> AppHarness:
    collector_app.apply(team_config())
    return collector_app


def version(h: AppHarness) -> int:
    return h.db.read(accounts.config_version)


def state(h: AppHarness) -> tuple:
    def read(tx):
        keys = tx.all("SELECT * FROM api_keys ORDER BY id")
        ledger = tx.all("SELECT * FROM transactions ORDER BY id")
        leases = tx.all("SELECT * FROM lease_balance ORDER BY key_id, agent_id")
        return keys, ledger, leases

    return h.db.read(read), version(h)


def agent_snapshot(h: AppHarness):
    answer = h.sync()
    return parse_snapshot(answer["config_version"], answer["config"])


def bal_lease(want: int = 100_000) -> dict:
    return {"kind": "balance", "key_id": "alice-web", "want_micros": want, "min_micros": 2000}


# --- expiry -----------------------------------------------------------------------------------


def test_expiry_is_set_shown_carried_to_agents_and_cleared(h: AppHarness) -> None:
    before = version(h)
    response = h.admin(
        "PATCH", "/admin/v1/keys/alice-web", json={"expires_at": "2025-12-12T18:05:55+02:00"}
    )
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert body["changed"] == ["expires_at"]
    assert body["key"]["expires_at"] == "2025-12-12T16:05:55Z"  # normalized to UTC
    assert version(h) == before + 1
    snap = agent_snapshot(h)
    assert snap.keys["alice-web"].expires_at == T0

    cleared = h.admin("PATCH", "/admin/v1/keys/alice-web", json={"expires_at": None}).get_json()
    assert cleared["changed"] == ["expires_at"] and cleared["key"]["expires_at"] is None
    assert agent_snapshot(h).keys["alice-web"].expires_at is None


def test_agent_refuses_an_expired_key_by_its_own_clock(h: AppHarness) -> None:
    h.admin("PATCH", "/admin/v1/keys/alice-web", json={"expires_at": format_time(T0_MS)})
    snap = agent_snapshot(h)
    ok = precheck.authenticate(snap, SECRET, T0 - 0.001)
    assert not isinstance(ok, precheck.Decision)
    for now in (T0, T0 + 1):
        refused = precheck.authenticate(snap, SECRET, now)
        assert isinstance(refused, precheck.Decision)
        assert (refused.code, refused.status) == ("key_expired", 403)
        assert answers.refusal_text(refused.code) == "ERROR_KEY_DOES_NOT_EXIST"


def test_no_balance_lease_for_an_expired_key(h: AppHarness) -> None:
    h.admin("PATCH", "/admin/v1/keys/alice-web", json={"expires_at": format_time(T0_MS + 1000)})
    granted = h.sync(leases=[bal_lease()])["grants"][0]["granted_micros"]
    assert granted > 0  # not expired yet
    h.clock.now = T0 + 1
    assert h.sync("a2", leases=[bal_lease()])["grants"][0]["granted_micros"] == 0


@pytest.mark.parametrize(
    "value",
    [
        "2026-12-31",
        "2026-12-31T00:00:00",
        "tomorrow",
        1767139200,
        "1999-12-31T23:59:59Z",
        "",
        "9999-12-31T23:00:00-05:00",
        ["2026-12-31T00:00:00Z"],
    ],
)
def test_bad_expiry_is_a_400_and_changes_nothing(h: AppHarness, value: object) -> None:
    before = state(h)
    response = h.admin("PATCH", "/admin/v1/keys/alice-web", json={"expires_at": value})
    assert response.status_code == 400, response.get_json()
    assert "expires_at" in response.get_json()["message"]
    assert state(h) == before


def test_team_config_sets_expiry_and_refill_and_reapplies_as_unchanged(h: AppHarness) -> None:
    key = key_config(
        "alice-web",
        expires_at="2026-01-01T00:00:00Z",
        refill={"amount": "5.00", "interval": "monthly", "day": 31},
    )
    result = h.apply(team_config([user_config("alice", [key])]))
    assert result["changed"] == [
        {"kind": "key", "id": "alice-web", "fields": ["expires_at", "refill"]}
    ]
    got = h.admin("GET", "/admin/v1/keys/alice-web").get_json()
    assert got["expires_at"] == "2026-01-01T00:00:00Z"
    assert got["refill"] == {"amount": "5.00", "interval": "monthly", "day": 31}
    at = version(h)
    again = h.apply(team_config([user_config("alice", [key])]))
    assert again["changed"] == [] and version(h) == at
    # The file is the truth: dropping the fields clears them.
    cleared = h.apply(team_config())
    assert cleared["changed"] == [
        {"kind": "key", "id": "alice-web", "fields": ["expires_at", "refill"]}
    ]


# --- delete -----------------------------------------------------------------------------------


def test_delete_purges_the_secret_voids_leases_and_keeps_usage(h: AppHarness) -> None:
    assert h.sync(leases=[bal_lease()])["grants"][0]["granted_micros"] > 0
    h.usage([event()])  # spent before the delete
    before = version(h)
    response = h.admin("DELETE", "/admin/v1/keys/alice-web")
    assert response.status_code == 200, response.get_json()
    assert response.get_json() == {"key": "alice-web", "deleted": True, "balance": "9.998"}
    assert version(h) > before

    snap = agent_snapshot(h)
    assert "alice-web" not in snap.keys
    refused = precheck.authenticate(snap, SECRET, T0)
    assert isinstance(refused, precheck.Decision) and refused.code == "invalid_key"
    row = h.db.read(lambda tx: tx.dicts("SELECT * FROM api_keys WHERE id = ?", ("alice-web",))[0])
    assert row["secret_hash"].startswith("deleted:") and row["secret_hash"] != hash_secret(SECRET)
    assert row["previous_secret_hash"] is None and row["config_secret_hash"] is None
    held = h.db.read(lambda tx: tx.scalar("SELECT SUM(held_micros) FROM lease_balance"))
    assert int(held) == 0
    assert h.sync(leases=[bal_lease()])["grants"][0]["granted_micros"] == 0

    # A spooled event spent from the voided lease still ships; reports still show the key.
    h.usage([event()])
    log = h.admin("GET", "/admin/v1/usage?key_id=alice-web").get_json()
    assert log["count"] == 2
    report = h.admin("GET", "/admin/v1/reports/keys").get_json()
    assert "alice-web" in str(report)
    ledger = h.admin("GET", "/admin/v1/keys/alice-web/transactions").get_json()
    assert ledger["transactions"]  # the opening balance stays in the ledger

    for method, path in [
        ("GET", "/admin/v1/keys/alice-web"),
        ("PATCH", "/admin/v1/keys/alice-web"),
        ("POST", "/admin/v1/keys/alice-web/topup"),
        ("POST", "/admin/v1/keys/alice-web/rotate"),
        ("POST", "/admin/v1/keys/alice-web/activate"),
        ("DELETE", "/admin/v1/keys/alice-web"),
    ]:
        body = {"cpm": 1} if method == "PATCH" else {"amount": "1"} if "topup" in path else None
        got = h.admin(method, path, json=body) if body else h.admin(method, path)
        assert got.status_code == 404, (method, path, got.get_json())
    assert "alice-web" not in str(h.admin("GET", "/admin/v1/keys").get_json())


def test_a_deleted_key_is_not_brought_back(h: AppHarness) -> None:
    h.admin("DELETE", "/admin/v1/keys/alice-web")
    before = state(h)
    response = h.admin("POST", "/admin/v1/apply", json=team_config())
    assert response.status_code == 409, response.get_json()
    assert response.get_json()["error"] == "key_deleted"
    again = h.admin("POST", "/admin/v1/keys", json={"user_id": "alice", "id": "alice-web"})
    assert again.status_code == 409 and again.get_json()["error"] == "key_deleted"
    assert state(h) == before
    # A file without the key applies.
    h.apply(team_config([user_config("alice", [key_config("alice-new")])]))


def test_delete_unknown_key_or_with_a_body_changes_nothing(h: AppHarness) -> None:
    before = state(h)
    assert h.admin("DELETE", "/admin/v1/keys/nobody").status_code == 404
    assert h.admin("DELETE", "/admin/v1/keys/alice-web", json={"x": 1}).status_code == 400
    assert state(h) == before


def test_a_user_token_cannot_delete(h: AppHarness) -> None:
    token = h.admin("POST", "/admin/v1/tokens", json={"role": "user", "user_id": "alice"})
    secret = token.get_json()["secret"]
    before = state(h)
    assert h.call("DELETE", "/admin/v1/keys/alice-web", secret).status_code == 403
    assert state(h) == before


# --- refill -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("interval", "day", "now", "period"),
    [
        ("daily", None, "2026-12-06T00:00:00Z", "2026-12-06"),
        ("daily", None, "2026-12-05T23:59:59.999Z", "2026-12-05"),
        ("monthly", 1, "2026-12-06T10:00:00Z", "2026-12-01"),
        ("monthly", 15, "2026-12-06T10:00:00Z", "2026-11-15"),
        ("monthly", 15, "2026-01-06T10:00:00Z", "2025-12-15"),
        ("monthly", 31, "2026-02-28T00:00:00Z", "2026-02-28"),
        ("monthly", 31, "2026-02-27T23:59:59Z", "2026-01-31"),
        ("monthly", 31, "2028-02-29T00:00:00Z", "2028-02-29"),
        ("monthly", 30, "2026-03-29T00:00:00Z", "2026-02-28"),
        ("monthly", 30, "2026-03-30T00:00:00Z", "2026-03-30"),
    ],
)
def test_refill_periods(interval: str, day: int | None, now: str, period: str) -> None:
    from solverfleet.teamconfig.fields import parse_time

    assert current_period(interval, day, parse_time(now)) == period


def set_refill(h: AppHarness, amount: str = "10.00", **more: object) -> None:
    body = {"refill": {"amount": amount, "interval": "daily", **more}}
    response = h.admin("PATCH", "/admin/v1/keys/alice-web", json=body)
    assert response.status_code == 200, response.get_json()


def balance(h: AppHarness) -> str:
    return h.admin("GET", "/admin/v1/keys/alice-web").get_json()["balance"]


def test_refill_tops_up_to_the_amount_once_per_period(h: AppHarness) -> None:
    set_refill(h, "12.50")
    refiller = refill.Refiller(h.db)
    assert refiller.run_once(T0_MS) == []  # the period under way when it was set: not refilled
    midnight = (T0_MS // DAY_MS + 1) * DAY_MS
    assert refiller.run_once(midnight - 1) == []
    at = version(h)
    done = refiller.run_once(midnight)
    assert [(d["period"], d["credited"]) for d in done] == [("2025-12-13", 2_500_000)]
    assert balance(h) == "12.50" and version(h) == at + 1
    assert refiller.run_once(midnight + 3_600_000) == []  # once per period
    rows = h.admin("GET", "/admin/v1/keys/alice-web/transactions").get_json()["transactions"]
    assert (rows[0]["amount"], rows[0]["reason"], rows[0]["actor"]) == (
        "2.50",
        "refill daily 2025-12-13",
        "refill",
    )
    # Never reduces: above the amount, the period passes with no credit and no ledger row.
    h.admin("POST", "/admin/v1/keys/alice-web/topup", json={"amount": "5"})
    assert refiller.run_once(midnight + DAY_MS)[0]["credited"] == 0
    assert balance(h) == "17.50"
    rows_after = h.admin("GET", "/admin/v1/keys/alice-web/transactions").get_json()
    assert len(rows_after["transactions"]) == len(rows) + 1  # the top-up only


def test_refill_races_credit_once(h: AppHarness, collector_db_url: str) -> None:
    set_refill(h, "20.00")
    midnight = (T0_MS // DAY_MS + 1) * DAY_MS
    results: list[list[dict]] = []
    start = threading.Barrier(4)

    def run() -> None:
        db = Database(collector_db_url)  # its own connection, like another collector
        try:
            start.wait()
            results.append(refill.Refiller(db).run_once(midnight))
        finally:
            db.close()

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(len(r) for r in results) == [0, 0, 0, 1]
    assert balance(h) == "20.00"


@pytest.mark.parametrize(
    "value",
    [
        {"amount": "0", "interval": "daily"},
        {"amount": "-1", "interval": "daily"},
        {"amount": 1.5, "interval": "daily"},
        {"amount": "1", "interval": "weekly"},
        {"amount": "1", "interval": "daily", "day": 3},
        {"amount": "1", "interval": "monthly", "day": 0},
        {"amount": "1", "interval": "monthly", "day": 32},
        {"amount": "1", "interval": "monthly", "day": True},
        {"amount": "1", "interval": "daily", "every": 2},
        {"interval": "daily"},
        "daily",
    ],
)
def test_bad_refill_is_a_400_and_changes_nothing(h: AppHarness, value: object) -> None:
    before = state(h)
    response = h.admin("PATCH", "/admin/v1/keys/alice-web", json={"refill": value})
    assert response.status_code == 400, response.get_json()
    assert "refill" in str(response.get_json())
    assert state(h) == before


def test_create_with_expiry_and_refill(h: AppHarness) -> None:
    body = {
        "user_id": "alice",
        "id": "alice-ci",
        "expires_at": "2026-06-01T12:00:00.250Z",
        "refill": {"amount": "3", "interval": "monthly"},
    }
    response = h.admin("POST", "/admin/v1/keys", json=body)
    assert response.status_code == 201, response.get_json()
    key = response.get_json()["key"]
    assert key["expires_at"] == "2026-06-01T12:00:00.250Z"
    assert key["refill"] == {"amount": "3.00", "interval": "monthly", "day": 1}
    period = h.db.read(
        lambda tx: tx.scalar("SELECT refilled_period FROM api_keys WHERE id = 'alice-ci'")
    )
    assert period == "2025-12-01"  # the month under way; the first refill is on 2026-01-01


def test_team_file_timestamps_normalize_to_utc() -> None:
    from solverfleet.teamconfig import loads, parse

    text = """
users:
  - id: u
    keys:
      - id: a
        expires_at: 2026-12-31T01:00:00+01:00
      - id: b
        expires_at: "2026-12-31T00:00:00.5Z"
        refill: {amount: "1.5", interval: monthly}
"""
    keys = parse(loads(text))["users"][0]["keys"]
    assert [k["expires_at"] for k in keys] == ["2026-12-31T00:00:00Z", "2026-12-31T00:00:00.500Z"]
    assert keys[1]["refill"] == {"amount": "1.50", "interval": "monthly", "day": 1}
    assert parse(parse(loads(text))) == parse(loads(text))  # the normalized form parses to itself


def test_migration_7_upgrades_an_existing_store_and_can_run_again(empty_db_url: str) -> None:
    from solverfleet.collector.store import MIGRATIONS, migrate

    db = Database(empty_db_url)
    try:
        by_version = {m.version: m for m in MIGRATIONS}
        for version in (1, 4, 2, 3, 5):  # a store as version 5 left it, with a key
            db.transaction(by_version[version].apply)
        db.transaction(
            lambda tx: tx.execute(
                "INSERT INTO api_keys (id, user_id, account, secret_hash, balance_micros,"
                " active, updated_ms) VALUES ('k1', 'u1', 'acme', ?, 5, 1, 0)",
                (hash_secret(SECRET),),
            )
        )
        db.transaction(by_version[7].apply)
        db.transaction(by_version[7].apply)  # MySQL commits each ALTER: a rerun must work
        migrate(db)
        row = db.read(
            lambda tx: tx.dicts(f"SELECT {accounts.KEY_COLUMNS} FROM api_keys WHERE id = 'k1'")
        )[0]
        assert (row["expires_at_ms"], row["refill_interval"], row["deleted_ms"]) == (None,) * 3
        assert refill.due_keys(db, T0_MS) == []  # no schedule, nothing due
    finally:
        db.close()


def test_the_refill_thread_runs_passes_on_its_clock(h: AppHarness) -> None:
    from solverfleet.process import wait_until

    set_refill(h, "11.00")
    midnight = (T0_MS // DAY_MS + 1) * DAY_MS
    clock = [T0]  # before the boundary: nothing to do
    refiller = refill.Refiller(h.db, clock=lambda: clock[0], interval=0.01).start()
    try:
        clock[0] = midnight / 1000  # the clock moves past 00:00 UTC: the thread refills
        wait_until(lambda: balance(h) == "11.00", timeout=5, what="the thread's refill")
    finally:
        refiller.stop()
    reasons = [
        t["reason"]
        for t in h.admin("GET", "/admin/v1/keys/alice-web/transactions").get_json()["transactions"]
    ]
    assert reasons.count("refill daily 2025-12-13") == 1
