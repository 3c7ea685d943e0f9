"""Shared helpers for the low-balance notification unit tests (tests/unit/test_notifications.py,
test_notify_rules.py, test_notify_sender.py): the webhook constants, the documented signature
check, and an ``AppHarness`` with helpers to configure accounts, spend, list and run rounds.

Fixture — import it into the test module that uses it (with ``tests.support.collector`` and
``tests.support.mariadb`` in its ``pytest_plugins``, for ``collector_app``)::

    from tests.support.notify import h_fixture  # noqa: F401

- ``h`` (function; ``h_fixture`` to import): ``collector_app`` with empty notification tables.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import threading
from dataclasses import replace

import pytest
from standardwebhooks import Webhook

from solverfleet.collector.notify import sender as notify_sender
from solverfleet.collector.settings import CollectorSettings
from tests.support.collector import AppHarness, event, key_config, team_config, user_config
from tests.support.openapi import Spec

HOOK = "https://hooks.example.test/solverfleet/T0KEN-in-path?sig=query-token"
SECRET = "whsec_MDEyMzQ1Njc4OWFiY2RlZi1zaWduaW5n"  # base64 of 0123456789abcdef-signing
COST = 20_000  # 0.02 per success


def receiver_verifies(secret: str, headers: dict, raw: bytes, now: int) -> bool:
    """The documented recipe, written from the docs and not from the code."""
    timestamp = headers["X-Solverfleet-Timestamp"]
    if abs(now - int(timestamp)) > 300:
        return False
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + raw, hashlib.sha256)
    return hmac.compare_digest("sha256=" + mac.hexdigest(), headers["X-Solverfleet-Signature"])


def standard_verifies(secret: str | bytes, headers: dict, raw: bytes) -> bool:
    """Standard Webhooks, checked with its reference library (``standardwebhooks``). Its
    ``verify`` also checks the timestamp against the wall clock, which the unit tests' clocks
    are not: sign with the library at the header's timestamp and compare instead."""
    at = dt.datetime.fromtimestamp(int(headers["webhook-timestamp"]), dt.UTC)
    expected = Webhook(secret).sign(headers["webhook-id"], at, raw.decode())
    return expected in headers["webhook-signature"].split(" ")


@pytest.fixture(name="h")
def h_fixture(collector_app: AppHarness) -> AppHarness:
    # The MariaDB case reuses one database; start every test with empty notification tables.
    def wipe(tx):
        for table in ("notification_deliveries", "notifications", "notification_pending"):
            tx.execute(f"DELETE FROM {table}")
        tx.execute("DELETE FROM notification_windows")
        tx.execute("DELETE FROM notification_targets")

    collector_app.db.transaction(wipe)
    return collector_app


def alert(threshold: str = "0.05", enabled: bool = True, hooks=((HOOK, SECRET),)) -> dict:
    return {
        "enabled": enabled,
        "threshold": threshold,
        "webhooks": [{"url": u, "secret": s} for u, s in hooks],
    }


def setup(h: AppHarness, low_balance_alert: dict | None, *keys: tuple[str, str], account="acme"):
    keys = keys or (("alice-web", "0.10"),)
    users = [user_config(f"{account}-u", [key_config(k, b) for k, b in keys])]
    return h.apply(team_config(users, account=account, low_balance_alert=low_balance_alert))


def spend(h: AppHarness, key_id: str = "alice-web", n: int = 1, account="acme") -> None:
    events = [event(key_id, cost=COST, user_id=f"{account}-u", account=account) for _ in range(n)]
    assert h.usage(events)["accepted"] == n


SPEC = Spec.of("solverfleet.collector")


def listed(h: AppHarness, **query) -> dict:
    response = h.admin("GET", "/admin/v1/notifications", query_string=query)
    assert response.status_code == 200, response.get_json()
    SPEC.check("GET", "/admin/v1/notifications", response)  # every answer as documented
    return response.get_json()


def settings(**changes) -> CollectorSettings:
    base = CollectorSettings(
        fleet_token="f",
        admin_token="a",
        notify_sender=False,
        notify_backoff_base=10,
        notify_backoff_max=3600,
        notify_max_attempts=3,
    )
    return replace(base, **changes)


class Receiver:
    """An injected ``post``: records every call, answers from a script of statuses."""

    def __init__(self, *statuses: int | Exception) -> None:
        self.script = list(statuses)
        self.calls: list[tuple[str, bytes, dict]] = []
        self.lock = threading.Lock()

    def __call__(self, url: str, data: bytes, headers: dict, timeout: float) -> int:
        with self.lock:
            self.calls.append((url, data, headers))
            outcome = self.script.pop(0) if self.script else 200
        if isinstance(outcome, Exception):
            raise outcome
        return outcome


def notifier(h: AppHarness, post, **changes) -> notify_sender.Notifier:
    return notify_sender.Notifier(h.db, settings(**changes), clock=h.clock, post=post)
