"""Low-balance notifications: the rules (crossings, zero always, 5-minute window, backoff,
signature), team config and apply, detection on ingest, delivery rounds with a driven clock,
the admin API and the CLI. Delivery here goes through an injected ``post``; the integration
test sends real webhooks to a real receiver."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import threading
from dataclasses import replace

import pytest
import requests
from click.testing import CliRunner

from solverfleet import teamconfig
from solverfleet.cli import main
from solverfleet.collector import ingest
from solverfleet.collector.metrics import NOTIFICATIONS_SENT
from solverfleet.collector.notify import notifications, rules
from solverfleet.collector.notify import sender as notify_sender
from solverfleet.collector.settings import CollectorSettings
from solverfleet.collector.store import Database
from solverfleet.settings import SettingsError
from tests.support.collector import (
    T0,
    AppHarness,
    event,
    key_config,
    team_config,
    user_config,
)
from tests.support.openapi import Spec

pytest_plugins = ["tests.support.collector", "tests.support.mariadb", "tests.support.fakeadmin"]

HOOK = "https://hooks.example.test/solverfleet/T0KEN-in-path?sig=query-token"
SECRET = "whsec_0123456789abcdef-signing"
COST = 20_000  # 0.02 per success


# --- rules ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("before", "after", "threshold", "kind"),
    [
        (100, 60, 50, None),  # above the threshold
        (100, 50, 50, rules.THRESHOLD),  # "to or below": reaching it counts
        (60, 40, 50, rules.THRESHOLD),
        (40, 20, 50, None),  # already below: a crossing fires once
        (20, 0, 50, rules.ZERO),
        (20, -10, 50, rules.ZERO),  # overdraft past zero is reaching zero too
        (100, 0, 50, rules.ZERO),  # both in one step: zero wins
        (20, 0, None, rules.ZERO),  # zero always, even with alerts disabled
        (100, 40, None, None),  # no threshold alert when disabled
        (0, -20, 50, None),  # already at zero
        (50, 50, 50, None),  # no change
        (10, 0, 0, rules.ZERO),  # a threshold of 0 is the zero alert
    ],
)
def test_crossing(before, after, threshold, kind):
    assert rules.crossing(before, after, threshold) == kind


@pytest.mark.parametrize(
    ("kind", "balance", "threshold", "now"),
    [
        (rules.ZERO, 0, 50, rules.ZERO),
        (rules.ZERO, 30, 50, rules.THRESHOLD),  # topped up a little: still under the threshold
        (rules.ZERO, 30, None, None),
        (rules.ZERO, 80, 50, None),
        (rules.THRESHOLD, 50, 50, rules.THRESHOLD),
        (rules.THRESHOLD, 51, 50, None),
        (rules.THRESHOLD, 10, None, None),  # alerts switched off meanwhile
    ],
)
def test_still_due(kind, balance, threshold, now):
    assert rules.still_due(kind, balance, threshold) == now


def test_first_to_fire_is_gravest_then_earliest():
    candidates = [("threshold", 1, "a"), ("zero", 9, "z"), ("zero", 5, "y"), ("zero", 5, "x")]
    assert rules.first_to_fire(candidates) == ("zero", 5, "x")


def test_window_is_five_minutes():
    assert rules.window_open(None, 0)
    assert not rules.window_open(1_000, 1_000 + 299_999)
    assert rules.window_open(1_000, 1_000 + 300_000)


def test_backoff_doubles_up_to_the_cap_and_the_attempt_bound():
    assert [rules.backoff_ms(n, 10, 3600) for n in range(1, 5)] == [10_000, 20_000, 40_000, 80_000]
    waits = [rules.backoff_ms(n, 10, 60) for n in range(1, 8)]
    assert waits == [10_000, 20_000, 40_000, 60_000, 60_000, 60_000, 60_000]
    with pytest.raises(ValueError):
        rules.backoff_ms(0, 10, 60)
    assert rules.backoff_ms(200, 0.5, 30) == 30_000  # no overflow far out
    with pytest.raises(ValueError):
        rules.backoff_ms(0, 10, 60)


def receiver_verifies(secret: str, headers: dict, raw: bytes, now: int) -> bool:
    """The documented recipe, written from the docs and not from the code."""
    timestamp = headers["X-Solverfleet-Timestamp"]
    if abs(now - int(timestamp)) > 300:
        return False
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + raw, hashlib.sha256)
    return hmac.compare_digest("sha256=" + mac.hexdigest(), headers["X-Solverfleet-Signature"])


def test_signature_covers_timestamp_and_body():
    raw = rules.body({"kind": "zero", "balance": "0.00"})
    headers = rules.headers(SECRET, 1_765_555_555, raw, 7)
    assert headers["X-Solverfleet-Signature"] == (
        "sha256=" + hmac.new(SECRET.encode(), b"1765555555." + raw, hashlib.sha256).hexdigest()
    )
    assert headers["X-Solverfleet-Delivery"] == "7"
    assert headers["X-Solverfleet-Event"] == "low_balance"
    assert receiver_verifies(SECRET, headers, raw, 1_765_555_555 + 10)
    assert not receiver_verifies(SECRET, headers, raw + b" ", 1_765_555_555)
    assert not receiver_verifies("another-secret-entirely", headers, raw, 1_765_555_555)
    replayed = {**headers, "X-Solverfleet-Timestamp": "1765555999"}
    assert not receiver_verifies(SECRET, replayed, raw, 1_765_555_999)
    assert not receiver_verifies(SECRET, headers, raw, 1_765_555_555 + 301)  # too old


# --- team config --------------------------------------------------------------------------------


def test_webhooks_normalize_and_env_refs_resolve():
    data = {
        "low_balance_alert": {
            "threshold": "5",
            "webhooks": [{"url": HOOK, "secret": "ENV:HOOK_SECRET"}],
        }
    }
    alert = teamconfig.parse(data, env={"HOOK_SECRET": SECRET})["low_balance_alert"]
    assert alert == {
        "enabled": True,
        "threshold": "5.00",
        "webhooks": [{"url": HOOK, "secret": SECRET}],
    }
    # The collector re-parses what the CLI sent (env=None): the normalized form is stable.
    assert teamconfig.parse({"low_balance_alert": alert})["low_balance_alert"] == alert


def test_seed_spelling_lowBalanceAlert_is_accepted():
    seed = {
        "lowBalanceAlert": {"enabled": True, "threshold": "1.50"},
        "users": [{"id": "alice", "api_key": "sk_alice-0123456789", "role": "admin"}],
    }
    parsed = teamconfig.parse(seed)
    assert parsed["low_balance_alert"] == {"enabled": True, "threshold": "1.50", "webhooks": []}
    assert "lowBalanceAlert" not in parsed


def config_errors(alert, env=None) -> list[str]:
    with pytest.raises(teamconfig.TeamConfigError) as info:
        teamconfig.parse({"low_balance_alert": alert}, env=env)
    return info.value.errors


@pytest.mark.parametrize(
    ("webhooks", "expected"),
    [
        ([{"url": HOOK}], "low_balance_alert.webhooks[0].secret: required"),
        ([{"secret": SECRET}], "low_balance_alert.webhooks[0].url: required"),
        (
            [{"url": "ftp://example.test/x", "secret": SECRET}],
            "low_balance_alert.webhooks[0].url: must be an http:// or https:// URL",
        ),
        ([{"url": "https:///path", "secret": SECRET}], "webhooks[0].url: has no host"),
        ([{"url": "https://a.test/x y", "secret": SECRET}], "without spaces"),
        ([{"url": "https://a.test:99999/", "secret": SECRET}], "not a valid URL"),
        ([{"url": "https://a.test/#frag", "secret": SECRET}], "must not have a #fragment"),
        ([{"url": HOOK, "secret": "short"}], "webhooks[0].secret: a webhook secret must have 16"),
        ([{"url": HOOK, "secret": SECRET + " x"}], "printable ASCII without spaces"),
        ([{"url": HOOK, "secret": SECRET, "method": "PUT"}], "webhooks[0].method: unknown field"),
        (
            [{"url": HOOK, "secret": SECRET}, {"url": HOOK, "secret": SECRET + "2"}],
            "webhooks[1].url: duplicate webhook URL (also low_balance_alert.webhooks[0])",
        ),
        ([{"url": f"https://h{i}.test/", "secret": SECRET} for i in range(11)], "at most 10"),
        ("https://a.test/", "must be a list of {url, secret} mappings"),
        (["https://a.test/"], "a webhook must be a mapping with url and secret"),
    ],
)
def test_bad_webhooks_are_refused_with_their_path(webhooks, expected):
    errors = config_errors({"threshold": "1", "webhooks": webhooks})
    assert len(errors) == 1 and expected in errors[0], errors
    assert "short" not in errors[0] and "T0KEN" not in errors[0] and SECRET not in errors[0]


def test_both_spellings_at_once_is_an_error():
    with pytest.raises(teamconfig.TeamConfigError) as info:
        teamconfig.parse({"low_balance_alert": None, "lowBalanceAlert": {"threshold": "1"}})
    assert info.value.errors == [
        "lowBalanceAlert: give low_balance_alert or lowBalanceAlert (the seed's spelling), not both"
    ]


def test_a_bad_secret_from_env_names_the_variable_not_the_value():
    errors = config_errors(
        {"webhooks": [{"url": HOOK, "secret": "ENV:HOOK_SECRET"}]}, env={"HOOK_SECRET": "tiny-1"}
    )
    assert errors == [
        "low_balance_alert.webhooks[0].secret: a webhook secret must have 16 to 512 characters"
        " (value of ENV:HOOK_SECRET)"
    ]


# --- the store: apply, detection, window ------------------------------------------------------


@pytest.fixture
def h(collector_app: AppHarness) -> AppHarness:
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


def test_threshold_then_zero_keeps_one_per_window(h):
    setup(h, alert("0.05"))
    spend(h, n=2)  # 0.10 -> 0.06
    assert listed(h)["count"] == 0
    spend(h)  # 0.04: at or below 0.05
    (first,) = listed(h)["notifications"]
    assert first["kind"] == "threshold"
    assert (first["balance"], first["threshold"], first["key_id"]) == ("0.04", "0.05", "alice-web")
    assert first["status"] == "pending" and first["created_ms"] == int(T0 * 1000)

    h.clock.advance(60)
    spend(h, n=2)  # 0.00 within the window: deferred, not dropped
    answer = listed(h)
    assert answer["count"] == 1
    assert answer["deferred"] == [
        {
            "account": "acme",
            "key_id": "alice-web",
            "kind": "zero",
            "detected": notifications.iso(int((T0 + 60) * 1000)),
            "window_opens": notifications.iso(int((T0 + 300) * 1000)),
        }
    ]
    rounds = notifier(h, Receiver())
    h.clock.now = T0 + 299.999
    rounds.run_once()
    assert [n["kind"] for n in listed(h)["notifications"]] == ["threshold"]
    h.clock.now = T0 + 300
    rounds.run_once()
    answer = listed(h)
    assert [(n["kind"], n["balance"]) for n in answer["notifications"]] == [
        ("zero", "0.00"),
        ("threshold", "0.04"),
    ]
    assert answer["deferred"] == []


def test_zero_fires_even_with_alerts_disabled_or_absent(h):
    setup(h, None, ("alice-web", "0.04"))
    spend(h)  # 0.02: no threshold configured, nothing
    assert listed(h)["count"] == 0
    spend(h)  # 0.00
    (n,) = listed(h)["notifications"]
    assert (n["kind"], n["balance"], n["threshold"]) == ("zero", "0.00", None)
    assert n["status"] == "no_targets" and n["deliveries"] == []


def test_threshold_needs_enabled(h):
    setup(h, alert("0.05", enabled=False))
    spend(h, n=4)  # 0.02: crossed 0.05, but alerts are off
    assert listed(h)["count"] == 0
    spend(h)
    assert [n["kind"] for n in listed(h)["notifications"]] == ["zero"]


def test_a_crossing_fires_once_not_on_every_spend(h):
    setup(h, alert("0.05"), ("alice-web", "0.20"))
    spend(h, n=8)  # 0.04
    h.clock.advance(600)
    spend(h, n=1)  # 0.02: still below, window open, but no new crossing
    assert listed(h)["count"] == 1


def test_duplicates_charge_nothing_and_fire_nothing(h):
    setup(h, None, ("alice-web", "0.02"))
    batch = [event("alice-web", cost=COST, user_id="acme-u")]
    assert h.usage(batch)["accepted"] == 1
    h.clock.advance(600)
    assert h.usage(batch)["duplicates"] == 1
    assert listed(h)["count"] == 1


def test_one_window_per_account_not_per_key(h):
    setup(h, alert("0.05"), ("k1", "0.06"), ("k2", "0.06"), ("k3", "0.06"))
    setup(h, alert("0.05"), ("other", "0.06"), account="globex")
    spend(h, "k1")
    spend(h, "k2")
    spend(h, "other", account="globex")  # another account has its own window
    found = listed(h)["notifications"]
    assert sorted((n["account"], n["key_id"]) for n in found) == [
        ("acme", "k1"),
        ("globex", "other"),
    ]
    h.clock.advance(10)
    spend(h, "k3")
    spend(h, "k3", n=2)  # k3 reaches zero: graver than k2's threshold, fires first
    h.clock.advance(290)
    notifier(h, Receiver()).run_once()
    acme = listed(h, account="acme")
    assert [(n["key_id"], n["kind"]) for n in acme["notifications"]] == [
        ("k3", "zero"),
        ("k1", "threshold"),
    ]
    assert [(d["key_id"], d["kind"]) for d in acme["deferred"]] == [("k2", "threshold")]
    h.clock.advance(300)
    notifier(h, Receiver()).run_once()
    assert [n["key_id"] for n in listed(h, account="acme")["notifications"]] == ["k2", "k3", "k1"]


def test_concurrent_crossings_in_one_account_fire_once(h):
    # Six writers with their own connections (like six collectors) cross at the same moment;
    # no user and one agent each, so nothing but the window row serializes them.
    setup(h, alert("0.05"), *((f"k{i}", "0.02") for i in range(6)))
    go = threading.Barrier(6)
    errors = []

    def write(i: int) -> None:
        db = Database(h.state.settings.db)
        try:
            row = ingest.parse_event(event(f"k{i}", cost=COST, user_id=None), 0, f"a{i}")
            go.wait()
            ingest.store_events(db, [row], now_ms=h.state.now_ms())
        except Exception as exc:
            errors.append(exc)
        finally:
            db.close()

    threads = [threading.Thread(target=write, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    answer = listed(h)
    assert answer["count"] == 1 and answer["notifications"][0]["kind"] == "zero"
    assert len(answer["deferred"]) == 5


def test_a_top_up_settles_a_deferred_crossing(h):
    setup(h, alert("0.05"), ("k1", "0.06"), ("k2", "0.06"))
    spend(h, "k1")
    spend(h, "k2")  # deferred
    response = h.admin("POST", "/admin/v1/keys/k2/topup", json={"amount": "1.00"})
    assert response.status_code == 200, response.get_json()
    h.clock.advance(300)
    notifier(h, Receiver()).run_once()
    answer = listed(h)
    assert [n["key_id"] for n in answer["notifications"]] == ["k1"]
    assert answer["deferred"] == []


def test_a_crossing_after_the_window_competes_with_what_was_deferred(h):
    setup(h, alert("0.05"), ("k1", "0.06"), ("k2", "0.06"), ("k3", "0.02"))
    spend(h, "k1")
    spend(h, "k2")  # deferred threshold
    h.clock.advance(300)
    spend(h, "k3")  # zero, graver: fires first; k2 waits for the next window
    answer = listed(h)
    assert [n["key_id"] for n in answer["notifications"]] == ["k3", "k1"]
    assert [d["key_id"] for d in answer["deferred"]] == ["k2"]


# --- apply ------------------------------------------------------------------------------------


def test_apply_stores_webhooks_and_reports_changes_without_secrets(h):
    created = setup(h, alert())
    assert {"kind": "account", "id": "acme"} in created["created"]
    again = setup(h, alert())
    assert {"kind": "account", "id": "acme"} in again["unchanged"]
    rotated = setup(h, alert(hooks=((HOOK, SECRET + "-v2"),)))
    assert {"kind": "account", "id": "acme", "fields": ["webhooks"]} in rotated["changed"]
    both = setup(h, alert("1.00", hooks=((HOOK, SECRET + "-v2"), ("http://127.0.0.1:9/x", SECRET))))
    change = next(c for c in both["changed"] if c["kind"] == "account")
    assert change["fields"] == ["low_balance_alert", "webhooks"]
    stored = h.db.read(
        lambda tx: tx.all("SELECT url, secret FROM notification_targets ORDER BY id")
    )
    assert stored == [(HOOK, SECRET + "-v2"), ("http://127.0.0.1:9/x", SECRET)]
    removed = setup(h, None)
    change = next(c for c in removed["changed"] if c["kind"] == "account")
    assert change["fields"] == ["low_balance_alert", "webhooks"]
    assert h.db.read(lambda tx: tx.all("SELECT id FROM notification_targets")) == []
    for answer in (created, again, rotated, both, removed):
        assert SECRET not in json.dumps(answer)


def test_dry_run_stores_no_webhook(h):
    response = h.admin(
        "POST", "/admin/v1/apply?dry_run=1", json=team_config(low_balance_alert=alert())
    )
    assert response.status_code == 200
    assert h.db.read(lambda tx: tx.all("SELECT id FROM notification_targets")) == []


def test_invalid_webhook_applies_nothing(h):
    config = team_config(low_balance_alert=alert(hooks=(("ftp://x.test/", SECRET),)))
    response = h.admin("POST", "/admin/v1/apply", json=config)
    assert response.status_code == 400
    body = response.get_json()
    assert body["error"] == "invalid_config"
    assert "low_balance_alert.webhooks[0].url" in body["message"]
    assert h.db.read(lambda tx: tx.all("SELECT id FROM accounts")) == []


# --- delivery rounds (injected post, driven clock) ----------------------------------------------


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
    setup(h, alert("0.05", hooks=((HOOK, SECRET), (other, SECRET + "-other"))))
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
        SECRET + "-other", receiver.calls[2][2], receiver.calls[2][1], int(T0 + 10)
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


# --- admin API --------------------------------------------------------------------------------


def test_list_filters_account_since_and_limit(h):
    for i, account in enumerate(("acme", "globex", "acme")):
        setup(h, None, (f"k{i}", "0.02"), account=account)
        spend(h, f"k{i}", account=account)
        h.clock.advance(400)
    assert [n["key_id"] for n in listed(h)["notifications"]] == ["k2", "k1", "k0"]
    assert [n["key_id"] for n in listed(h, account="acme")["notifications"]] == ["k2", "k0"]
    assert listed(h, account="nobody")["count"] == 0
    assert [n["key_id"] for n in listed(h, since="10m")["notifications"]] == ["k2"]
    since = notifications.iso(int((T0 + 400) * 1000))
    assert [n["key_id"] for n in listed(h, since=since)["notifications"]] == ["k2", "k1"]
    assert [n["key_id"] for n in listed(h, limit="1")["notifications"]] == ["k2"]


@pytest.mark.parametrize(
    ("query", "code", "fragment"),
    [
        ("limit=0", "invalid", "limit must be a whole number from 1 to 1000"),
        ("limit=abc", "invalid", "limit must be"),
        ("limit=%C2%B2", "invalid", "limit must be"),  # "²" is a digit to str.isdigit
        ("since=yesterday-ish", "invalid_time", "since: not a time"),
        ("acount=acme", "unknown_parameter", "unknown query parameter(s): acount"),
        ("account=a&account=b", "invalid", "given twice: account"),
    ],
)
def test_bad_queries_are_400(h, query, code, fragment):
    response = h.admin("GET", f"/admin/v1/notifications?{query}")
    assert response.status_code == 400
    SPEC.check("GET", "/admin/v1/notifications", response)
    body = response.get_json()
    assert body["error"] == code and fragment in body["message"], body


def test_needs_a_token(h):
    assert h.call("GET", "/admin/v1/notifications", None).status_code == 401
    assert h.call("GET", "/admin/v1/notifications", "wrong").status_code == 401
    assert h.agent("GET", "/admin/v1/notifications").status_code == 403  # the fleet token


def test_user_scope_sees_only_own_keys(h):
    setup(h, None, ("k1", "0.02"))
    setup(h, None, ("k2", "0.02"), account="globex")
    spend(h, "k1")
    spend(h, "k2", account="globex")
    mine = notifications.list_notifications(h.db, user_id="globex-u")
    assert [n["key_id"] for n in mine] == ["k2"]
    assert notifications.list_notifications(h.db, user_id="nobody") == []


def test_no_api_answer_holds_a_webhook_secret_or_url_token(h):
    setup(h, alert("0.05"))
    spend(h, n=5)
    for path in ("/admin/v1/notifications", "/admin/v1/keys", "/admin/v1/users"):
        text = h.admin("GET", path).get_data(as_text=True)
        assert SECRET not in text and "T0KEN" not in text and "query-token" not in text


# --- settings ---------------------------------------------------------------------------------


def test_settings_from_env_and_their_checks():
    loaded = CollectorSettings.load(
        env={
            "SOLVERFLEET_FLEET_TOKEN": "f",
            "SOLVERFLEET_ADMIN_TOKEN": "a",
            "SOLVERFLEET_NOTIFY_BACKOFF_BASE": "0.2",
            "SOLVERFLEET_NOTIFY_MAX_ATTEMPTS": "4",
            "SOLVERFLEET_NOTIFY_SENDER": "0",
        }
    )
    assert (loaded.notify_backoff_base, loaded.notify_max_attempts) == (0.2, 4)
    assert loaded.notify_sender is False
    for bad in (
        {"notify_backoff_base": 0},
        {"notify_timeout": float("nan")},
        {"notify_backoff_max": 1, "notify_backoff_base": 2},
        {"notify_max_attempts": 0},
    ):
        with pytest.raises(SettingsError):
            CollectorSettings(fleet_token="f", admin_token="a", **bad)


# --- CLI --------------------------------------------------------------------------------------

LISTED = {
    "notifications": [
        {
            "id": 2,
            "account": "acme",
            "key_id": "alice-web",
            "kind": "zero",
            "balance": "-0.003",
            "threshold": "5.00",
            "created": "2025-12-12T16:10:55.000Z",
            "created_ms": 1765555855000,
            "status": "delivered",
            "attempts": 3,
            "last_error": "HTTP 500",
            "deliveries": [
                {
                    "id": 4,
                    "target": "https://hooks.example.test",
                    "status": "delivered",
                    "attempts": 3,
                    "next_attempt": None,
                    "delivered": "2025-12-12T16:11:25.000Z",
                    "last_error": "HTTP 500",
                }
            ],
        }
    ],
    "count": 1,
    "deferred": [
        {
            "account": "acme",
            "key_id": "bob-api",
            "kind": "threshold",
            "detected": "2025-12-12T16:11:00.000Z",
            "window_opens": "2025-12-12T16:15:55.000Z",
        }
    ],
}


def run_cli(fake, *args):
    env = {"SOLVERFLEET_COLLECTOR": fake.url, "SOLVERFLEET_TOKEN": "tok", "COLUMNS": "200"}
    return CliRunner().invoke(main, list(args), env=env)


def test_cli_lists_as_a_table(fake_admin):
    fake_admin.answer("GET", "/admin/v1/notifications", LISTED)
    result = run_cli(fake_admin, "notifications", "list", "--account", "acme", "--since", "24h")
    assert result.exit_code == 0, result.output
    assert fake_admin.requests[0].query == {"account": ["acme"], "since": ["24h"], "limit": ["100"]}
    out = result.stdout
    for text in ("2025-12-12 16:10:55", "alice-web", "zero", "-0.003", "5.00", "delivered",
                 "https://hooks.example.test delivered", "HTTP 500"):  # fmt: skip
        assert text in out, out
    assert "deferred: acme/bob-api threshold" in out
    assert "2025-12-12T16:15:55.000Z" in out


def test_cli_json_and_csv_keep_money_exact(fake_admin):
    fake_admin.answer("GET", "/admin/v1/notifications", LISTED)
    as_json = run_cli(fake_admin, "notifications", "list", "--format", "json")
    assert as_json.exit_code == 0, as_json.output
    assert json.loads(as_json.stdout)["notifications"][0]["balance"] == "-0.003"
    as_csv = run_cli(fake_admin, "notifications", "list", "--format", "csv")
    assert as_csv.stdout.splitlines() == [
        "id,created,account,key_id,kind,balance,threshold,status,attempts,last_error",
        "2,2025-12-12T16:10:55.000Z,acme,alice-web,zero,-0.003,5.00,delivered,3,HTTP 500",
    ]


def test_cli_shows_the_collectors_error(fake_admin):
    body = {"error": "invalid_time", "message": "since: not a time: 'soon'"}
    fake_admin.answer("GET", "/admin/v1/notifications", body, status=400)
    result = run_cli(fake_admin, "notifications", "list", "--since", "soon")
    assert result.exit_code == 1
    assert result.stderr == "error: since: not a time: 'soon'\n"
