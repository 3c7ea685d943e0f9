"""Idempotency-Key on the admin API (both stores, in-process with a settable clock): a repeat
replays the first answer and changes nothing, another body is a 409, a running first attempt
is a 409, failures are not stored, one-time secrets are never stored, records expire after
24 h, and a change never commits once its claim was taken over. Real processes and threads:
tests/integration/test_idempotency.py."""

from __future__ import annotations

import json
import uuid

import pytest

from solverfleet.collector import accounts, idempotency
from solverfleet.collector.problems import Conflict
from tests.support.collector import AppHarness, key_config, team_config, user_config

pytest_plugins = ["tests.support.collector", "tests.support.mariadb"]

TOPUP = "/admin/v1/keys/alice-web/topup"


@pytest.fixture
def h(collector_app: AppHarness) -> AppHarness:
    collector_app.apply(
        team_config(
            [
                user_config("alice", [key_config("alice-web")]),
                user_config("root", [key_config("root-web")], role="admin"),
                user_config("robot", [], role="service"),
            ]
        )
    )
    return collector_app


def post(h: AppHarness, path: str, key: str | None, body: dict | None = None, token=None):
    headers = {} if key is None else {"Idempotency-Key": key}
    return h.call("POST", path, token or h.admin_token, json=body, headers=headers)


def balance(h: AppHarness, key_id: str = "alice-web") -> int:
    return int(
        h.db.read(
            lambda tx: tx.scalar("SELECT balance_micros FROM api_keys WHERE id = ?", (key_id,))
        )
    )


def count(h: AppHarness, table: str) -> int:
    return int(h.db.read(lambda tx: tx.scalar(f"SELECT COUNT(*) FROM {table}")))


def records(h: AppHarness) -> list[tuple]:
    return h.db.read(
        lambda tx: tx.all("SELECT idem_key, state, response_status FROM idempotency_keys")
    )


# --- pure parts -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "key"),
    [(["abc"], "abc"), (['"8e03978e-40d5"'], "8e03978e-40d5"), (["x" * 255], "x" * 255)],
)
def test_a_well_formed_key_is_taken(values, key) -> None:
    assert idempotency.check_key(values) == key


@pytest.mark.parametrize(
    "values", [[""], ["   "], ["x" * 256], ["caf\u00e9"], ["a\tb"], ['""'], ["a", "b"]]
)
def test_a_malformed_key_is_refused(values) -> None:
    with pytest.raises(Exception) as caught:
        idempotency.check_key(values)
    assert caught.value.code == "invalid_idempotency_key"


def test_the_fingerprint_ignores_json_spacing_and_order_only() -> None:
    one = idempotency.fingerprint(b"", b'{"amount": "1.00", "reason": "x"}')
    assert one == idempotency.fingerprint(b"", b'{"reason":"x","amount":"1.00"}')
    assert one != idempotency.fingerprint(b"", b'{"amount": "1.01", "reason": "x"}')
    assert one != idempotency.fingerprint(b"dry_run=1", b'{"amount": "1.00", "reason": "x"}')


def test_secrets_are_withheld_from_what_is_stored() -> None:
    kept = idempotency.withhold_secrets({"key": "k", "secret": "sk_live"})
    assert kept["secret"] is None and "rotate" in kept["secret_withheld"]
    applied = idempotency.withhold_secrets({"secrets": {"a": "sk_1"}, "created": []})
    assert applied["secrets"] == {"a": None} and applied["secret_withheld"]
    assert idempotency.withhold_secrets({"secrets": {}}) == {"secrets": {}}
    assert idempotency.withhold_secrets({"balance": "1.00"}) == {"balance": "1.00"}


# --- top-ups ----------------------------------------------------------------------------------


def test_a_repeated_topup_replays_the_first_answer_and_credits_once(h: AppHarness) -> None:
    before = balance(h)
    key = str(uuid.uuid4())
    first = post(h, TOPUP, key, {"amount": "1.50"})
    assert first.status_code == 200 and "Idempotent-Replayed" not in first.headers
    # The same body written differently is the same request.
    again = h.call(
        "POST",
        TOPUP,
        h.admin_token,
        data=' {"amount":"1.50"} ',
        headers={"Idempotency-Key": key, "Content-Type": "application/json"},
    )
    assert again.status_code == 200
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.get_json() == first.get_json()
    assert balance(h) == before + 1_500_000
    ledger = h.admin("GET", "/admin/v1/keys/alice-web/transactions").get_json()["transactions"]
    assert [t["amount"] for t in ledger].count("1.50") == 1
    assert records(h) == [(key, "done", 200)]


def test_the_same_key_with_another_body_is_a_409_and_changes_nothing(h: AppHarness) -> None:
    before = balance(h)
    assert post(h, TOPUP, "k-1", {"amount": "1.00"}).status_code == 200
    other = post(h, TOPUP, "k-1", {"amount": "2.00"})
    assert other.status_code == 409
    assert other.get_json()["error"] == "idempotency_key_reused"
    assert "different request" in other.get_json()["message"]
    assert balance(h) == before + 1_000_000


def test_keys_are_scoped_to_the_caller_and_the_path(h: AppHarness) -> None:
    before = balance(h)
    ops = h.admin("POST", "/admin/v1/tokens", json={"role": "admin"}).get_json()["secret"]
    assert post(h, TOPUP, "shared", {"amount": "1.00"}).status_code == 200
    theirs = post(h, TOPUP, "shared", {"amount": "1.00"}, token=ops)
    assert theirs.status_code == 200 and "Idempotent-Replayed" not in theirs.headers
    other_path = post(h, "/admin/v1/keys/root-web/topup", "shared", {"amount": "1.00"})
    assert other_path.status_code == 200 and "Idempotent-Replayed" not in other_path.headers
    assert balance(h) == before + 2_000_000


@pytest.mark.parametrize("header", ["", "x" * 256, "a\u00e9"])
def test_a_malformed_header_is_a_400_and_changes_nothing(h: AppHarness, header: str) -> None:
    before = balance(h)
    response = post(h, TOPUP, header, {"amount": "1.00"})
    assert response.status_code == 400
    assert response.get_json()["error"] == "invalid_idempotency_key"
    assert balance(h) == before and records(h) == []


def test_a_failed_request_is_not_stored_and_may_be_retried_with_its_key(h: AppHarness) -> None:
    before = balance(h)
    bad = post(h, TOPUP, "retry-me", {"amount": "-1"})
    assert bad.status_code == 400 and records(h) == []
    missing = post(h, "/admin/v1/keys/nope/topup", "retry-me", {"amount": "1.00"})
    assert missing.status_code == 404 and records(h) == []
    # The corrected request goes through with the same key (the 400 was not its answer).
    fixed = post(h, TOPUP, "retry-me", {"amount": "1.00"})
    assert fixed.status_code == 200 and "Idempotent-Replayed" not in fixed.headers
    assert balance(h) == before + 1_000_000


def test_a_repeat_while_the_first_runs_is_a_409_until_its_claim_is_stale(h: AppHarness) -> None:
    before = balance(h)
    body = {"amount": "1.00"}
    now = h.state.now_ms()
    fp = idempotency.fingerprint(b"", json.dumps(body).encode())
    first = idempotency.begin(
        h.db, actor="bootstrap", method="POST", path=TOPUP, key="busy", fp=fp, now_ms=now
    )
    assert isinstance(first, idempotency.Claim)
    busy = post(h, TOPUP, "busy", body)
    assert busy.status_code == 409
    assert busy.get_json()["error"] == "idempotency_key_in_progress"
    assert busy.headers["Retry-After"] == "1"
    assert balance(h) == before
    # The first attempt's process died before its change committed: the claim is taken over.
    h.clock.advance(idempotency.STALE_MS / 1000)
    taken = post(h, TOPUP, "busy", body)
    assert taken.status_code == 200 and "Idempotent-Replayed" not in taken.headers
    assert balance(h) == before + 1_000_000
    # The old attempt, were it still alive, could not commit its change any more.
    with pytest.raises(Conflict):
        accounts.topup(h.db, "alice-web", 1_000_000, "late", now_ms=now, guard=first.guard)
    assert balance(h) == before + 1_000_000


def test_an_answer_lost_after_the_change_is_never_a_second_change(
    h: AppHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = balance(h)

    def crash(*args, **kwargs):
        raise RuntimeError("collector stopped before storing the answer")

    monkeypatch.setattr(idempotency, "finish", crash)
    assert post(h, TOPUP, "lost", {"amount": "1.00"}).status_code == 200
    monkeypatch.undo()
    assert records(h) == [("lost", "applied", None)]  # written with the change itself
    h.clock.advance(idempotency.STALE_MS / 1000 + 1)
    repeat = post(h, TOPUP, "lost", {"amount": "1.00"})
    assert repeat.status_code == 409
    assert repeat.get_json()["error"] == "idempotency_key_in_progress"
    assert balance(h) == before + 1_000_000


def test_records_are_kept_24_hours_then_pruned(h: AppHarness) -> None:
    before = balance(h)
    assert post(h, TOPUP, "day", {"amount": "1.00"}).status_code == 200
    h.clock.advance(24 * 3600 - 1)
    assert post(h, TOPUP, "day", {"amount": "1.00"}).headers["Idempotent-Replayed"] == "true"
    h.clock.advance(idempotency.PRUNE_EVERY_MS / 1000)
    # Any request with a key prunes what is older than 24 h (at most once a minute).
    assert post(h, TOPUP, "next", {"amount": "1.00"}).status_code == 200
    assert records(h) == [("next", "done", 200)]
    fresh = post(h, TOPUP, "day", {"amount": "1.00"})
    assert fresh.status_code == 200 and "Idempotent-Replayed" not in fresh.headers
    assert balance(h) == before + 3_000_000
    h.clock.advance(24 * 3600 + 1)
    assert idempotency.prune(h.db, h.state.now_ms()) == 2


def test_requests_without_the_header_are_not_recorded(h: AppHarness) -> None:
    before = balance(h)
    assert post(h, TOPUP, None, {"amount": "1.00"}).status_code == 200
    assert post(h, TOPUP, None, {"amount": "1.00"}).status_code == 200
    assert balance(h) == before + 2_000_000 and records(h) == []


# --- creates: one-time secrets are never stored ------------------------------------------------


def stored_bodies(h: AppHarness) -> str:
    rows = h.db.read(lambda tx: tx.all("SELECT response_body FROM idempotency_keys"))
    return " ".join(str(r[0]) for r in rows)


def test_a_repeated_key_create_makes_one_key_and_withholds_the_secret(h: AppHarness) -> None:
    keys_before = count(h, "api_keys")
    body = {"user_id": "alice", "balance": "3.00"}
    first = post(h, "/admin/v1/keys", "mk", body)
    assert first.status_code == 201 and first.get_json()["secret"].startswith("sk_")
    again = post(h, "/admin/v1/keys", "mk", body)
    assert (again.status_code, again.headers["Idempotent-Replayed"]) == (201, "true")
    assert again.get_json()["key"] == first.get_json()["key"]
    assert again.get_json()["secret"] is None
    assert "rotate" in again.get_json()["secret_withheld"]
    assert count(h, "api_keys") == keys_before + 1
    assert first.get_json()["secret"] not in stored_bodies(h)


def test_a_repeated_rotation_rotates_once(h: AppHarness) -> None:
    first = post(h, "/admin/v1/keys/alice-web/rotate", "rot", {"grace_seconds": 60})
    hash_after = h.db.read(
        lambda tx: tx.scalar("SELECT secret_hash FROM api_keys WHERE id = 'alice-web'")
    )
    again = post(h, "/admin/v1/keys/alice-web/rotate", "rot", {"grace_seconds": 60})
    assert again.headers["Idempotent-Replayed"] == "true" and again.get_json()["secret"] is None
    assert again.get_json()["grace_seconds"] == 60
    assert hash_after == h.db.read(
        lambda tx: tx.scalar("SELECT secret_hash FROM api_keys WHERE id = 'alice-web'")
    )
    assert first.get_json()["secret"] not in stored_bodies(h)


def test_a_repeated_token_create_makes_one_token(h: AppHarness) -> None:
    body = {"role": "user", "user_id": "alice", "label": "ci"}
    first = post(h, "/admin/v1/tokens", "tok", body)
    again = post(h, "/admin/v1/tokens", "tok", body)
    assert (first.status_code, again.status_code) == (201, 201)
    assert again.get_json()["token"] == first.get_json()["token"]
    assert again.get_json()["secret"] is None
    assert count(h, "api_tokens") == 1
    assert first.get_json()["secret"] not in stored_bodies(h)


def test_a_repeated_apply_replays_without_secrets(h: AppHarness) -> None:
    config = team_config(
        [user_config("dora", [{**key_config("dora-web"), "secret": None}])], account="acme"
    )
    first = post(h, "/admin/v1/apply", "ap", config)
    assert first.status_code == 200, first.get_json()
    generated = first.get_json()["secrets"]["dora-web"]
    again = post(h, "/admin/v1/apply", "ap", config)
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.get_json()["secrets"] == {"dora-web": None}
    assert again.get_json()["created"] == first.get_json()["created"]
    assert generated not in stored_bodies(h)
    dry = h.call(
        "POST",
        "/admin/v1/apply?dry_run=1",
        h.admin_token,
        json=config,
        headers={"Idempotency-Key": "ap"},
    )
    assert dry.status_code == 409 and dry.get_json()["error"] == "idempotency_key_reused"


# --- token role caps --------------------------------------------------------------------------


def test_a_token_may_not_outrank_its_user(h: AppHarness) -> None:
    refused = h.admin("POST", "/admin/v1/tokens", json={"role": "admin", "user_id": "alice"})
    assert refused.status_code == 403
    assert refused.get_json()["error"] == "role_above_user"
    assert "'alice' has the role 'user'" in refused.get_json()["message"]
    robot = h.admin("POST", "/admin/v1/tokens", json={"role": "user", "user_id": "robot"})
    assert (robot.status_code, robot.get_json()["error"]) == (403, "role_above_user")
    assert count(h, "api_tokens") == 0


def test_an_admin_user_may_hold_admin_and_user_tokens(h: AppHarness) -> None:
    admin = h.admin("POST", "/admin/v1/tokens", json={"role": "admin", "user_id": "root"})
    assert admin.status_code == 201 and admin.get_json()["token"]["user_id"] == "root"
    user = h.admin("POST", "/admin/v1/tokens", json={"role": "user", "user_id": "root"})
    assert user.status_code == 201
    who = h.call("GET", "/admin/v1/whoami", admin.get_json()["secret"]).get_json()
    assert (who["role"], who["user_id"]) == ("admin", "root")
    # An admin token bound to a user reaches the whole admin API, as any admin token.
    assert h.call("GET", "/admin/v1/users", admin.get_json()["secret"]).status_code == 200


def test_lowering_a_users_role_lowers_their_tokens(h: AppHarness) -> None:
    admin = h.admin("POST", "/admin/v1/tokens", json={"role": "admin", "user_id": "root"})
    secret = admin.get_json()["secret"]
    h.apply(team_config([user_config("root", [key_config("root-web")], role="user")]))
    refused = h.call("GET", "/admin/v1/users", secret)
    assert (refused.status_code, refused.get_json()["error"]) == (403, "role_above_user")
    h.apply(team_config([user_config("root", [key_config("root-web")], role="admin")]))
    assert h.call("GET", "/admin/v1/users", secret).status_code == 200
