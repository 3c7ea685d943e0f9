"""Low-balance notifications, the pure parts: the rules (crossings, zero always, 5-minute
window, backoff), the webhook signature, and the team config's webhooks. Detection, apply, the
admin API and the CLI are in test_notifications.py; delivery rounds in test_notify_sender.py."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time

import pytest
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from solverfleet import teamconfig
from solverfleet.collector.notify import rules
from tests.support.notify import HOOK, SECRET, receiver_verifies, standard_verifies

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


def test_standard_webhooks_headers_verify_with_the_reference_library():
    raw = rules.body({"kind": "zero", "balance": "0.00"})
    at = int(time.time())
    headers = rules.headers(SECRET, at, raw, 7)
    assert (headers["webhook-id"], headers["webhook-timestamp"]) == ("7", str(at))
    assert headers["webhook-signature"].startswith("v1,")
    assert Webhook(SECRET).verify(raw, headers) == {"kind": "zero", "balance": "0.00"}
    for bad in (
        (raw + b" ", headers),
        (raw, {**headers, "webhook-id": "8"}),  # the id is signed: no replay under another
        (raw, {**headers, "webhook-timestamp": str(at + 1)}),
    ):
        with pytest.raises(WebhookVerificationError):
            Webhook(SECRET).verify(*bad)
    with pytest.raises(WebhookVerificationError):
        Webhook("whsec_" + base64.b64encode(b"another-key-entirely").decode()).verify(raw, headers)


def test_a_secret_without_whsec_signs_with_its_own_bytes():
    # Secrets of the first release are not base64: the key is the text itself, and a
    # receiver passes those bytes to its Standard Webhooks library.
    legacy = "a-first-release-secret-0123"
    raw = rules.body({"kind": "threshold"})
    headers = rules.headers(legacy, 1_765_555_555, raw, 3)
    assert standard_verifies(legacy.encode(), headers, raw)
    assert not standard_verifies(SECRET, headers, raw)
    assert receiver_verifies(legacy, headers, raw, 1_765_555_555)


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
        ([{"url": HOOK, "secret": "whsec_not-base64-at-all!"}], "whsec_ secret must be base64"),
        ([{"url": HOOK, "secret": "whsec_c2hvcnQta2V5"}], "at least 16 bytes"),
        ([{"url": HOOK, "secret": SECRET, "method": "PUT"}], "webhooks[0].method: unknown field"),
        (
            [{"url": HOOK, "secret": SECRET}, {"url": HOOK, "secret": SECRET + "Mg=="}],
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
