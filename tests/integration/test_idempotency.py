"""Idempotency-Key and token role caps on a real collector (gunicorn, two worker processes;
SQLite and MariaDB): a retried top-up credits once, concurrent repeats from threads credit
once, the same key with another body is a 409, the header is checked, the CLI sends a key and
reuses it, and a token may not outrank its user. The edge cases (stale claims, lost answers,
expiry, secrets) run in-process in tests/unit/test_collector_idempotency.py."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from solverfleet.cli import main
from tests.support.collector import CollectorProcess, key_config, team_config, user_config

pytest_plugins = ["tests.support.collector", "tests.support.mariadb"]
pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

TOPUP = "/admin/v1/keys/alice-web/topup"
THREADS = 8


@pytest.fixture
def proc(collector_db_url: str, tmp_path: Path) -> Iterator[CollectorProcess]:
    collector = CollectorProcess(collector_db_url, tmp_path, workers=2, threads=4).start()
    try:
        config = team_config(
            [
                user_config("alice", [key_config("alice-web", balance="10.00")]),
                user_config("bob", [], role="user"),
                user_config("root", [], role="admin"),
            ]
        )
        assert collector.admin("POST", "/admin/v1/apply", json=config).status_code == 200
        yield collector
    finally:
        collector.stop()


def balance(proc: CollectorProcess) -> str:
    return proc.admin("GET", "/admin/v1/keys/alice-web").json()["balance"]


def ledger(proc: CollectorProcess) -> list[dict]:
    return proc.admin("GET", "/admin/v1/keys/alice-web/transactions").json()["transactions"]


def topup(proc: CollectorProcess, key: str, amount: str = "1.00"):
    return proc.admin("POST", TOPUP, json={"amount": amount}, headers={"Idempotency-Key": key})


def test_a_retried_topup_credits_once(proc: CollectorProcess) -> None:
    key = str(uuid.uuid4())
    first = topup(proc, key)
    assert first.status_code == 200 and "Idempotent-Replayed" not in first.headers
    # Several repeats: with two workers, both processes answer some of them.
    for _ in range(6):
        again = topup(proc, key)
        assert again.status_code == 200
        assert again.headers["Idempotent-Replayed"] == "true"
        assert again.json() == first.json()
    assert balance(proc) == "11.00"
    assert [t["amount"] for t in ledger(proc)].count("1.00") == 1

    other = topup(proc, key, "2.00")
    assert (other.status_code, other.json()["error"]) == (409, "idempotency_key_reused")
    assert balance(proc) == "11.00"


def test_concurrent_repeats_credit_once(proc: CollectorProcess) -> None:
    key = str(uuid.uuid4())
    start = threading.Barrier(THREADS)
    answers: list[tuple[int, str | None, str]] = []
    lock = threading.Lock()

    def one() -> None:
        start.wait(timeout=30)
        response = topup(proc, key, "0.50")
        with lock:
            answers.append(
                (
                    response.status_code,
                    response.headers.get("Idempotent-Replayed"),
                    response.json().get("error", ""),
                )
            )

    threads = [threading.Thread(target=one) for _ in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert len(answers) == THREADS
    fresh = [a for a in answers if a[0] == 200 and a[1] is None]
    assert len(fresh) == 1, answers
    for status, replayed, error in answers:
        assert (status == 200 and replayed in (None, "true")) or (
            status == 409 and error == "idempotency_key_in_progress"
        ), answers
    assert balance(proc) == "10.50"
    assert [t["amount"] for t in ledger(proc)].count("0.50") == 1
    # Once the first is done, every repeat gets its answer.
    assert topup(proc, key, "0.50").headers["Idempotent-Replayed"] == "true"


@pytest.mark.parametrize("header", ["", "x" * 256])
def test_a_malformed_key_is_a_400(proc: CollectorProcess, header: str) -> None:
    response = topup(proc, header)
    assert (response.status_code, response.json()["error"]) == (400, "invalid_idempotency_key")
    assert balance(proc) == "10.00"


def cli(proc: CollectorProcess, *args: str):
    env = {"SOLVERFLEET_COLLECTOR": proc.url, "SOLVERFLEET_TOKEN": proc.admin_token}
    return CliRunner().invoke(main, list(args), env=env)


def test_the_cli_sends_a_key_and_a_repeat_with_it_changes_nothing(proc: CollectorProcess) -> None:
    first = cli(proc, "keys", "topup", "alice-web", "2.00", "--idempotency-key", "order-7")
    assert first.exit_code == 0, first.output
    again = cli(proc, "keys", "topup", "alice-web", "2.00", "--idempotency-key", "order-7")
    assert again.exit_code == 0, again.output
    assert "already done" in again.stdout
    assert balance(proc) == "12.00"
    # Without the option every command is a new request (a fresh key each time).
    assert cli(proc, "keys", "topup", "alice-web", "2.00").exit_code == 0
    assert balance(proc) == "14.00"


def test_a_token_may_not_outrank_its_user(proc: CollectorProcess) -> None:
    refused = cli(proc, "tokens", "create", "--role", "admin", "--user", "bob")
    assert refused.exit_code == 1
    assert "'bob' has the role 'user'" in refused.output
    tokens = proc.admin("GET", "/admin/v1/tokens").json()["tokens"]
    assert tokens == []

    allowed = proc.admin("POST", "/admin/v1/tokens", json={"role": "admin", "user_id": "root"})
    assert allowed.status_code == 201
    secret = allowed.json()["secret"]
    assert proc.request("GET", "/admin/v1/users", secret).status_code == 200
    bob = proc.admin("POST", "/admin/v1/tokens", json={"role": "user", "user_id": "bob"})
    assert bob.status_code == 201

    # root becomes a user: their admin token is refused by every worker from now on.
    lowered = team_config([user_config("root", [], role="user")])
    assert proc.admin("POST", "/admin/v1/apply", json=lowered).status_code == 200
    for _ in range(6):
        response = proc.request("GET", "/admin/v1/users", secret)
        assert (response.status_code, response.json()["error"]) == (403, "role_above_user")
