"""Low-balance webhooks end to end: two real collectors (gunicorn, two workers each) on one
database — SQLite and MariaDB — fire on ingest and deliver to a real HTTP receiver on
loopback, which checks every signature with the documented recipe. A receiver that fails
twice gets the retries, on the backoff schedule; every other delivery arrives exactly once."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from standardwebhooks import Webhook

from solverfleet import teamconfig
from solverfleet.process import wait_until
from tests.support.collector import CollectorProcess

SECRET = "whsec_aW50ZWdyYXRpb24tMDEyMzQ1Njc4OQ=="  # Standard Webhooks: base64
PRICE = "0.02"
BACKOFF = 0.3  # s: the first retry waits this, the second twice this


@dataclass
class Delivery:
    path: str
    headers: dict[str, str]
    raw: bytes
    received: float  # time.time() on arrival

    @property
    def body(self) -> dict:
        return json.loads(self.raw)


class WebhookReceiver:
    """A tiny HTTP server: records every POST; ``/flaky`` answers 500 to its first two."""

    def __init__(self) -> None:
        self.deliveries: list[Delivery] = []
        self.lock = threading.Lock()
        self.flaky_failures = 2
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with receiver.lock:
                    receiver.deliveries.append(
                        Delivery(self.path, dict(self.headers.items()), raw, time.time())
                    )
                    fail = self.path == "/flaky" and receiver.flaky_failures > 0
                    if fail:
                        receiver.flaky_failures -= 1
                self.send_response(500 if fail else 204)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    def received(self, path: str | None = None) -> list[Delivery]:
        with self.lock:
            return [d for d in self.deliveries if path is None or d.path == path]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def verified(delivery: Delivery, secret: str) -> bool:
    """The receiver's side: Standard Webhooks' reference library (it raises on a bad
    signature or a timestamp 5 min off), then the first release's recipe from the docs."""
    Webhook(secret).verify(delivery.raw, delivery.headers)
    timestamp = delivery.headers["X-Solverfleet-Timestamp"]
    if abs(time.time() - int(timestamp)) > 300:
        return False
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + delivery.raw, hashlib.sha256)
    expected = "sha256=" + mac.hexdigest()
    return hmac.compare_digest(expected, delivery.headers["X-Solverfleet-Signature"])


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    server = WebhookReceiver()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def collectors(store_url: str, tmp_path: Path) -> Iterator[list[CollectorProcess]]:
    env = {
        "SOLVERFLEET_NOTIFY_BACKOFF_BASE": str(BACKOFF),
        "SOLVERFLEET_NOTIFY_POLL_INTERVAL": "0.05",
        "SOLVERFLEET_NOTIFY_TIMEOUT": "3",
    }
    first = CollectorProcess(store_url, tmp_path / "c1", name="c1", workers=2, env=env)
    first.start()  # migrates; the second then finds the schema in place
    second = CollectorProcess(
        store_url,
        tmp_path / "c2",
        name="c2",
        workers=2,
        env=env,
        fleet_token=first.fleet_token,
        admin_token=first.admin_token,
    )
    procs = [first, second]
    try:
        second.start()
        yield procs
    finally:
        for proc in procs:
            proc.stop()


def team(account: str, key: str, hook: str, threshold: str = "0.05") -> dict:
    return teamconfig.parse(
        {
            "account": account,
            "low_balance_alert": {
                "enabled": True,
                "threshold": threshold,
                "webhooks": [{"url": hook, "secret": SECRET}],
            },
            "prices": {"turnstile": PRICE},
            "users": [{"id": f"{account}-u", "keys": [{"id": key, "balance": "0.10"}]}],
        }
    )


def spend(proc: CollectorProcess, account: str, key: str, n: int) -> None:
    events = [
        {
            "event_id": uuid.uuid4().hex,
            "ts_ms": int(time.time() * 1000),
            "key_id": key,
            "user_id": f"{account}-u",
            "account": account,
            "type": "turnstile",
            "status": "success",
            "cost_micros": 20_000,
        }
        for _ in range(n)
    ]
    response = proc.agent("POST", "/agent/v1/usage", json={"agent_id": "a1", "events": events})
    assert response.status_code == 200, response.text
    assert response.json()["accepted"] == n


def listed(proc: CollectorProcess, **query) -> dict:
    response = proc.admin("GET", "/admin/v1/notifications", params=query)
    assert response.status_code == 200, response.text
    return response.json()


def test_webhooks_signed_retried_and_sent_once_across_collectors(collectors, receiver):
    c1, c2 = collectors
    apply = c1.admin(
        "POST", "/admin/v1/apply", json=team("acme", "acme-k", receiver.url + "/flaky")
    )
    assert apply.status_code == 200, apply.text
    others = [f"acct{i}" for i in range(4)]
    for account in others:
        config = team(account, f"{account}-k", receiver.url + "/ok")
        assert c2.admin("POST", "/admin/v1/apply", json=config).status_code == 200

    spend(c1, "acme", "acme-k", 2)  # 0.10 -> 0.06: above the threshold
    assert listed(c2)["count"] == 0
    spend(c1, "acme", "acme-k", 1)  # 0.04: at or below 0.05 -> threshold
    for i, account in enumerate(others):
        spend(c1 if i % 2 else c2, account, f"{account}-k", 5)  # straight to zero

    def all_delivered() -> bool:
        found = listed(c1)["notifications"]
        return len(found) == 5 and all(n["status"] == "delivered" for n in found)

    wait_until(all_delivered, timeout=30, what="every notification delivered")
    by_account = {n["account"]: n for n in listed(c2)["notifications"]}
    assert by_account["acme"]["kind"] == "threshold"
    assert (by_account["acme"]["attempts"], by_account["acme"]["last_error"]) == (3, "HTTP 500")
    assert {by_account[a]["kind"] for a in others} == {"zero"}

    flaky = receiver.received("/flaky")
    assert [d.body["attempt"] for d in flaky] == [1, 2, 3]
    assert len({d.headers["X-Solverfleet-Delivery"] for d in flaky}) == 1
    assert len({d.headers["webhook-id"] for d in flaky}) == 1  # receivers dedupe on it
    assert flaky[1].received - flaky[0].received >= BACKOFF * 0.95
    assert flaky[2].received - flaky[1].received >= 2 * BACKOFF * 0.95
    ok = receiver.received("/ok")
    per_delivery = Counter(d.headers["X-Solverfleet-Delivery"] for d in ok)
    assert sorted(per_delivery.values()) == [1, 1, 1, 1]  # four senders, no double send
    for delivery in receiver.received():
        assert verified(delivery, SECRET), delivery.headers
        assert delivery.headers["X-Solverfleet-Event"] == "low_balance"
    assert flaky[0].body["balance"] == "0.04" and flaky[0].body["threshold"] == "0.05"
    assert {d.body["account"] for d in ok} == set(others)
    assert all(d.body["balance"] == "0.00" for d in ok)

    # Zero within the same 5 minutes: stored as deferred, not sent, not dropped.
    spend(c2, "acme", "acme-k", 2)
    answer = listed(c1, account="acme")
    assert answer["count"] == 1
    assert [(d["key_id"], d["kind"]) for d in answer["deferred"]] == [("acme-k", "zero")]
    assert len(receiver.received("/flaky")) == 3

    # A graceful stop stops the sender threads too; nothing leaked a secret or a traceback.
    for proc in collectors:
        assert proc.stop() == 0
        log = proc.service.log_path.read_text(errors="replace")
        assert SECRET not in log and "Traceback" not in log, log[-2000:]
