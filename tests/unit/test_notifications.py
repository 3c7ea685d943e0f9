"""Low-balance notifications in the collector: detection on ingest (crossings, one per
5-minute window per account, deferred and settled crossings), team config apply, the admin API,
the settings and the CLI. The rules and the team config's webhooks are in test_notify_rules.py,
delivery rounds in test_notify_sender.py; the integration test sends real webhooks to a real
receiver."""

from __future__ import annotations

import json
import threading

import pytest
from click.testing import CliRunner

from solverfleet.cli import main
from solverfleet.collector import ingest
from solverfleet.collector.notify import notifications
from solverfleet.collector.settings import CollectorSettings
from solverfleet.collector.store import Database
from solverfleet.settings import SettingsError
from tests.support.collector import T0, event, team_config
from tests.support.notify import (
    COST,
    HOOK,
    SECRET,
    SPEC,
    Receiver,
    alert,
    h_fixture,  # noqa: F401
    listed,
    notifier,
    setup,
    spend,
)

pytest_plugins = ["tests.support.collector", "tests.support.mariadb", "tests.support.fakeadmin"]


# --- the store: detection, window ---------------------------------------------------------------


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
    rotated = setup(h, alert(hooks=((HOOK, SECRET + "djI="),)))
    assert {"kind": "account", "id": "acme", "fields": ["webhooks"]} in rotated["changed"]
    both = setup(
        h, alert("1.00", hooks=((HOOK, SECRET + "djI="), ("http://127.0.0.1:9/x", SECRET)))
    )
    change = next(c for c in both["changed"] if c["kind"] == "account")
    assert change["fields"] == ["low_balance_alert", "webhooks"]
    stored = h.db.read(
        lambda tx: tx.all("SELECT url, secret FROM notification_targets ORDER BY id")
    )
    assert stored == [(HOOK, SECRET + "djI="), ("http://127.0.0.1:9/x", SECRET)]
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
