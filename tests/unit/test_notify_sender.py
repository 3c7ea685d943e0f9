"""Low-balance notifications, delivery rounds: an injected ``post`` and a driven clock; retries
with backoff, giving up, transport errors, removed targets, expired claims, concurrent senders.
The integration test sends real webhooks to a real receiver."""

from __future__ import annotations

import json
import logging
import threading

import requests

from solverfleet.collector.metrics import NOTIFICATIONS_SENT
from solverfleet.collector.notify import notifications
from solverfleet.collector.notify import sender as notify_sender
from solverfleet.collector.store import Database
from tests.support.collector import T0
from tests.support.notify import (
    HOOK,
    SECRET,
    Receiver,
    alert,
    h_fixture,  # noqa: F401
    listed,
    notifier,
    receiver_verifies,
    settings,
    setup,
    spend,
    standard_verifies,
)

pytest_plugins = ["tests.support.collector", "tests.support.mariadb"]


def sent(kind: str, result: str) -> float:
    return NOTIFICATIONS_SENT.labels(kind=kind, result=result)._value.get()


def test_retries_with_backoff_then_delivers_signed(h):
    setup(h, alert("0.05"))
    spend(h, n=3)  # 0.04: threshold
    receiver = Receiver(500, 503)
    rounds = notifier(h, receiver)
    before = {r: sent("threshold", r) for r in ("retry", "delivered", "failed")}
    assert rounds.run_once() == 1  # attempt 1 -> 500
    (d,) = listed(h)["notifications"][0]["deliveries"]
    assert d["status"] == "pending" and d["attempts"] == 1 and d["last_error"] == "HTTP 500"
    assert d["next_attempt"] == notifications.iso(int((T0 + 10) * 1000))
    h.clock.advance(9.999)
    assert rounds.run_once() == 0
    h.clock.advance(0.001)
    assert rounds.run_once() == 1  # attempt 2 -> 503; next wait 20 s
    h.clock.advance(19.9)
    assert rounds.run_once() == 0
    h.clock.advance(0.1)
    assert rounds.run_once() == 1  # attempt 3 -> 200
    (n,) = listed(h)["notifications"]
    assert (n["status"], n["attempts"], n["last_error"]) == ("delivered", 3, "HTTP 503")
    assert n["deliveries"][0]["delivered"] == notifications.iso(int((T0 + 30) * 1000))
    assert n["deliveries"][0]["target"] == "https://hooks.example.test"
    h.clock.advance(3600)
    assert rounds.run_once() == 0  # delivered means done
    assert {r: sent("threshold", r) - before[r] for r in before} == {
        "retry": 2,
        "delivered": 1,
        "failed": 0,
    }
    bodies = []
    for (url, raw, headers), at in zip(receiver.calls, (T0, T0 + 10, T0 + 30), strict=True):
        assert url == HOOK
        assert headers["X-Solverfleet-Timestamp"] == str(int(at))
        assert receiver_verifies(SECRET, headers, raw, int(at))
        assert standard_verifies(SECRET, headers, raw)
        assert headers["webhook-id"] == str(d["id"])
        assert headers["X-Solverfleet-Delivery"] == str(d["id"])
        bodies.append(json.loads(raw))
    assert [b["attempt"] for b in bodies] == [1, 2, 3]
    assert bodies[0] == {
        "event": "low_balance",
        "id": n["id"],
        "delivery_id": d["id"],
        "attempt": 1,
        "account": "acme",
        "key_id": "alice-web",
        "kind": "threshold",
        "balance": "0.04",
        "threshold": "0.05",
        "created": n["created"],
    }


def test_gives_up_after_max_attempts(h):
    setup(h, alert(enabled=False), ("alice-web", "0.02"))
    spend(h)  # zero: fires with alerts disabled, and goes to the webhook
    rounds = notifier(h, Receiver(500, 500, 500, 500), notify_max_attempts=3)
    before = sent("zero", "failed")
    for _ in range(10):
        rounds.run_once()
        h.clock.advance(3600)
    (n,) = listed(h)["notifications"]
    assert (n["status"], n["attempts"]) == ("failed", 3)
    assert n["deliveries"][0]["next_attempt"] is None
    assert sent("zero", "failed") - before == 1


def test_transport_errors_are_recorded_without_the_url(h, caplog):
    setup(h, alert("0.05"))
    spend(h, n=3)
    refused = ConnectionRefusedError(111, "Connection refused")
    error = requests.ConnectionError(refused, HOOK)
    with caplog.at_level(logging.DEBUG, logger="solverfleet"):
        notifier(h, Receiver(error)).run_once()
        (d,) = listed(h)["notifications"][0]["deliveries"]
        assert d["last_error"] == "connection failed: Connection refused"
        h.clock.advance(10)
        notifier(h, Receiver(requests.Timeout("read timed out " + HOOK))).run_once()
    (n,) = listed(h)["notifications"]
    assert n["last_error"] == "no answer within 5 s"
    assert n["attempts"] == 2
    text = caplog.text + json.dumps(listed(h))
    assert "T0KEN" not in text and "query-token" not in text and SECRET not in text
    assert "https://hooks.example.test" in caplog.text  # the redacted target is logged


def test_connection_error_text():
    inner = ConnectionRefusedError(111, "Connection refused")
    assert notify_sender.describe(requests.ConnectionError(inner), 5) == (
        "connection failed: Connection refused"
    )
    assert notify_sender.describe(requests.ConnectionError(HOOK), 5) == "connection failed"
    assert notify_sender.describe(ValueError(HOOK), 5) == "send failed (ValueError)"


def test_a_removed_target_cancels_its_deliveries(h):
    setup(h, alert("0.05"))
    spend(h, n=3)
    setup(h, alert("0.05", hooks=()))  # webhook removed before the sender ran
    receiver = Receiver()
    notifier(h, receiver).run_once()
    assert receiver.calls == []
    (n,) = listed(h)["notifications"]
    assert n["status"] == "cancelled"
    assert n["deliveries"][0]["target"] == "(removed)"
    assert n["last_error"] == "target removed from the team config"


def test_each_target_is_delivered_on_its_own(h):
    other = "http://127.0.0.1:9/hook"
    setup(h, alert("0.05", hooks=((HOOK, SECRET), (other, "first-release-secret-other"))))
    spend(h, n=3)
    receiver = Receiver(200, 500)  # first target fine, second fails once
    rounds = notifier(h, receiver)
    rounds.run_once()
    h.clock.advance(10)
    rounds.run_once()
    assert [c[0] for c in receiver.calls] == [HOOK, other, other]  # HOOK never twice
    (n,) = listed(h)["notifications"]
    assert n["status"] == "delivered" and n["attempts"] == 3
    assert receiver_verifies(
        "first-release-secret-other", receiver.calls[2][2], receiver.calls[2][1], int(T0 + 10)
    )


def test_an_expired_claim_is_taken_over_and_the_late_result_is_ignored(h):
    setup(h, alert("0.05"))
    spend(h, n=3)
    a = notifier(h, Receiver())
    (claim,) = notify_sender.claim_due(h.db, now_ms=a.now_ms(), claim_ms=a.claim_ms)
    assert notify_sender.claim_due(h.db, now_ms=a.now_ms(), claim_ms=a.claim_ms) == []
    h.clock.advance(a.claim_ms / 1000)  # the first sender vanished mid-send
    (again,) = notify_sender.claim_due(h.db, now_ms=a.now_ms(), claim_ms=a.claim_ms)
    assert again.delivery_id == claim.delivery_id and again.attempt == 2
    assert notify_sender.record(h.db, claim, None, now_ms=a.now_ms(), settings=a.settings) == "lost"
    assert notify_sender.record(h.db, again, None, now_ms=a.now_ms(), settings=a.settings) == (
        "delivered"
    )


def test_concurrent_senders_never_send_one_attempt_twice(h):
    # Two senders with their own connections (like two collectors) race over the same rows.
    for i in range(6):
        setup(h, alert("0.05"), (f"k{i}", "0.06"), account=f"acct{i}")
        spend(h, f"k{i}", account=f"acct{i}")
    receiver = Receiver()
    dbs = [Database(h.state.settings.db) for _ in range(2)]
    senders = [notify_sender.Notifier(db, settings(), clock=h.clock, post=receiver) for db in dbs]
    go = threading.Barrier(len(senders))

    def run(sender):
        go.wait()
        for _ in range(5):
            sender.run_once()
        sender.db.close()

    threads = [threading.Thread(target=run, args=(s,)) for s in senders]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    deliveries = [c[2]["X-Solverfleet-Delivery"] for c in receiver.calls]
    assert len(deliveries) == 6 and len(set(deliveries)) == 6
    assert {n["status"] for n in listed(h)["notifications"]} == {"delivered"}
