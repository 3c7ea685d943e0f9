"""The audit log (collector/audit.py): redaction, rows written by every admin change in its own
transaction, the filters and paging of GET /admin/v1/audit, and the dashboard's page (both
stores, in process). Real processes: tests/integration/test_audit.py."""

from __future__ import annotations

import json

import pytest

from solverfleet.collector import audit
from solverfleet.keyhash import hash_secret
from tests.support.collector import (
    AppHarness,
    key_config,
    team_config,
    user_config,
)
from tests.unit.test_dashboard import Browser

pytest_plugins = ["tests.support.collector", "tests.support.mariadb"]

HOOK_SECRET = "whsec-audit-0123456789abcdef"
HOOK_URL = "https://hooks.example.test/notify/path-token-QQQ?auth=query-token-QQQ"


# --- redaction (no database) ------------------------------------------------------------------


def test_redact_drops_secret_like_fields_at_any_depth_and_replaces_secret_like_values():
    digest = hash_secret("sk_whatever")
    value = {
        "secret": "x",
        "secret_hash": digest,
        "Token": "t",
        "config_secret_hash": "y",
        "password": "p",
        "webhooks": [{"url": "https://h.example", "secret": "s"}],
        "note": "sk_live_leaked",
        "bearer": "sft_leaked",
        "digest_value": digest,
        "cpm": 7,
        "balance": "1.50",
        "nested": {"private_key": "k", "ok": [1, None, True]},
    }
    assert audit.redact(value) == {
        "webhooks": [{"url": "https://h.example"}],
        "note": audit.REDACTED,
        "bearer": audit.REDACTED,
        "digest_value": audit.REDACTED,
        "cpm": 7,
        "balance": "1.50",
        "nested": {"ok": [1, None, True]},
    }


def test_a_side_too_large_keeps_only_its_field_names():
    big = {"ip_allowlist": [f"10.0.{i // 256}.{i % 256}/32" for i in range(2000)], "cpm": 3}
    text = audit._encode(big)
    assert len(text) <= audit.MAX_JSON
    assert json.loads(text) == {"truncated": True, "fields": ["cpm", "ip_allowlist"]}
    assert audit._encode(None) is None


def test_changes_keeps_only_differing_fields():
    before, after = audit.changes({"a": 1, "b": 2, "gone": 3}, {"a": 1, "b": 5})
    assert before == {"b": 2, "gone": 3} and after == {"b": 5, "gone": None}


@pytest.mark.parametrize("cursor", ["0", "-1", "abc", "1.5", "", "1" * 20, "١٢"])
def test_bad_cursors_are_refused(cursor):
    with pytest.raises(audit.Invalid):
        audit.decode_cursor(cursor)


# --- rows written by admin changes (both stores) ----------------------------------------------


def _config(**key_overrides) -> dict:
    return team_config(
        [user_config("alice", [key_config("alice-web", **key_overrides)])],
        low_balance_alert={
            "enabled": True,
            "threshold": "1.00",
            "webhooks": [{"url": HOOK_URL, "secret": HOOK_SECRET}],
        },
    )


def _rows(h: AppHarness) -> list[dict]:
    return h.db.read(lambda tx: tx.dicts("SELECT * FROM audit_log ORDER BY id"))


def _entries(h: AppHarness, query: str = "", token: str | None = None) -> list[dict]:
    response = h.call("GET", f"/admin/v1/audit?limit=1000{query}", token or h.admin_token)
    assert response.status_code == 200, response.get_json()
    return response.get_json()["entries"]


def _one(h: AppHarness, action: str) -> dict:
    found = _entries(h, f"&action={action}")
    assert len(found) == 1, found
    return found[0]


def test_every_admin_change_is_recorded_with_actor_and_before_after(collector_app: AppHarness):
    h = collector_app
    h.apply(_config())
    made = h.admin("POST", "/admin/v1/tokens", json={"role": "admin", "label": "ops"})
    ops_id, ops = made.get_json()["token"]["id"], made.get_json()["secret"]
    ops_actor = f"token:{ops_id}"

    def as_ops(method, path, **kwargs):
        response = h.call(method, path, ops, **kwargs)
        assert response.status_code in (200, 201), response.get_json()
        return response.get_json()

    as_ops("POST", "/admin/v1/keys/alice-web/topup", json={"amount": "2.50", "reason": "invoice 7"})
    as_ops("PATCH", "/admin/v1/keys/alice-web", json={"cpm": 9, "allowed_types": ["turnstile"]})
    rotated = as_ops("POST", "/admin/v1/keys/alice-web/rotate", json={"grace_seconds": 60})
    created = as_ops("POST", "/admin/v1/keys", json={"user_id": "alice", "id": "alice-cli"})
    as_ops("POST", "/admin/v1/keys/alice-web/deactivate")
    as_ops("POST", "/admin/v1/keys/alice-web/deactivate")  # a no-op: no second row
    as_ops("POST", "/admin/v1/users/alice/deactivate")
    as_ops("POST", "/admin/v1/users/alice/activate")
    svc = as_ops("POST", "/admin/v1/tokens", json={"role": "service", "agent_id": "a9"})
    as_ops("POST", f"/admin/v1/tokens/{svc['token']['id']}/revoke")

    topup = _one(h, "key.topup")
    assert topup["actor"] == ops_actor and topup["account"] == "acme"
    assert (topup["target_type"], topup["target_id"]) == ("key", "alice-web")
    assert topup["before"] == {"balance": "10.00"}
    assert topup["after"]["balance"] == "12.50" and topup["after"]["amount"] == "2.50"
    assert topup["after"]["reason"] == "invoice 7"
    update = _one(h, "key.update")
    assert update["before"] == {"cpm": None, "allowed_types": None}
    assert update["after"] == {"cpm": 9, "allowed_types": ["turnstile"]}
    rotate = _one(h, "key.rotate")
    assert rotate["after"]["grace_seconds"] == 60 and rotate["after"]["rotated"] is True
    create = _one(h, f"key.create&actor={ops_actor}")
    assert create["target_id"] == "alice-cli" and create["after"]["balance"] == "0.00"
    deactivate = _one(h, "key.deactivate")
    assert deactivate["before"] == {"active": True}
    assert deactivate["after"] == {"active": False, "via": "api"}
    assert _one(h, "user.deactivate")["after"]["active"] is False
    assert _one(h, "user.activate")["after"]["active"] is True
    tokens = _entries(h, "&target_type=token")
    assert [e["action"] for e in tokens] == ["token.revoke", "token.create", "token.create"]
    assert tokens[0]["target_id"] == str(svc["token"]["id"]) and tokens[0]["actor"] == ops_actor
    assert tokens[1]["after"] == {
        "role": "service", "user_id": None, "agent_id": "a9", "label": None,
    }  # fmt: skip
    assert tokens[2]["actor"] == "bootstrap" and tokens[2]["after"]["label"] == "ops"

    # Never a secret, a hash or a token: not in the table, not in the API's raw answer.
    secrets = [
        key_config("alice-web")["secret"],
        rotated["secret"],
        created["secret"],
        ops,
        svc["secret"],
        HOOK_SECRET,
        "path-token-QQQ",
        "query-token-QQQ",
        h.admin_token,
    ]
    forbidden = secrets + [hash_secret(s) for s in secrets]
    table = json.dumps(_rows(h), default=str)
    answer = h.admin("GET", "/admin/v1/audit?limit=1000").get_data(as_text=True)
    for text in forbidden:
        assert text not in table and text not in answer, text


def test_apply_writes_one_row_per_changed_object_and_a_summary(collector_app: AppHarness):
    h = collector_app
    h.apply(_config())
    first = _entries(h)
    assert [e["action"] for e in reversed(first)] == [
        "account.create", "price.create", "price.create", "user.create", "key.create",
        "config.apply",
    ]  # fmt: skip
    assert {e["actor"] for e in first} == {"bootstrap"}
    assert first[0]["after"]["objects"] == 5 and first[0]["after"]["created"] == 5
    account = first[-1]["after"]
    assert account == {
        "low_balance_enabled": True,
        "low_balance_threshold": "1.00",
        "webhooks": ["https://hooks.example.test"],
    }
    h.apply(_config())  # unchanged: no rows
    assert len(_entries(h)) == len(first)

    changed = _config(cpm=4, secret="sk_test_a_brand_new_secret_value")
    changed["prices"]["turnstile"] = "0.0025"
    changed["low_balance_alert"]["webhooks"][0]["secret"] = HOOK_SECRET + "-2"
    h.apply(changed)
    new = _entries(h)[: len(_entries(h)) - len(first)]
    actions = [e["action"] for e in reversed(new)]
    assert actions == ["account.update", "price.update", "key.update", "config.apply"]
    key = new[1]
    assert key["before"] == {"cpm": None} and key["after"]["cpm"] == 4
    assert "credential" in key["after"]
    assert new[2]["before"] == {"price": "0.002"}
    assert new[2]["after"] == {"price": "0.0025", "scope": "account"}
    assert new[3]["after"] == {"webhook_signing": "replaced"}
    raw = json.dumps(_rows(h))
    for text in ("sk_test_a_brand_new_secret_value", HOOK_SECRET):
        assert text not in raw and hash_secret(text) not in raw


def test_refused_and_dry_run_changes_leave_no_row(collector_app: AppHarness):
    h = collector_app
    h.admin("POST", "/admin/v1/apply?dry_run=1", json=_config())
    assert _rows(h) == []
    h.apply(_config())
    before = len(_rows(h))
    assert h.admin("POST", "/admin/v1/keys/nope/topup", json={"amount": "1"}).status_code == 404
    assert (
        h.admin("POST", "/admin/v1/keys/alice-web/topup", json={"amount": "-1"}).status_code == 400
    )
    assert h.admin("PATCH", "/admin/v1/keys/alice-web", json={"cpm": -3}).status_code == 400
    assert h.admin("POST", "/admin/v1/tokens/999/revoke").status_code == 404
    assert h.admin("POST", "/admin/v1/apply", json={"users": "nope"}).status_code == 400
    assert len(_rows(h)) == before


def test_a_failed_write_rolls_back_the_change_with_its_row(collector_app, monkeypatch):
    # Same transaction: if the audit row cannot be written, the top-up does not happen either.
    h = collector_app
    h.apply(_config())

    def broken(tx, *args, **kwargs):
        tx.execute("INSERT INTO no_such_table VALUES (1)")

    monkeypatch.setattr(audit, "record", broken)
    response = h.admin("POST", "/admin/v1/keys/alice-web/topup", json={"amount": "1"})
    assert response.status_code >= 500
    assert h.admin("GET", "/admin/v1/keys/alice-web").get_json()["balance"] == "10.00"


# --- filters and paging -----------------------------------------------------------------------


def test_filters_and_cursor_paging(collector_app: AppHarness):
    h = collector_app
    h.apply(_config())
    for amount in ("1", "2", "3"):
        h.admin("POST", "/admin/v1/keys/alice-web/topup", json={"amount": amount})
    h.clock.advance(3600)
    h.admin("POST", "/admin/v1/users/alice/deactivate")
    everything = _entries(h)
    assert len(everything) == 10

    assert [e["action"] for e in _entries(h, "&action=key.topup")] == ["key.topup"] * 3
    assert len(_entries(h, "&target_type=key&target_id=alice-web")) == 4  # create + 3 top-ups
    assert len(_entries(h, "&target_id=alice")) == 2  # user create, deactivate
    assert len(_entries(h, "&actor=bootstrap")) == 10
    assert _entries(h, "&actor=token:1") == []
    assert len(_entries(h, "&account=acme")) == 10
    assert [e["action"] for e in _entries(h, "&since=30m")] == ["user.deactivate"]
    assert len(_entries(h, "&until=30m")) == 9

    seen, cursor = [], None
    while True:
        query = "/admin/v1/audit?limit=3" + (f"&cursor={cursor}" if cursor else "")
        page = h.admin("GET", query).get_json()
        assert page["count"] <= 3
        seen += [e["id"] for e in page["entries"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [e["id"] for e in everything]  # newest first, no gap, no repeat


@pytest.mark.parametrize(
    "query",
    [
        "limit=0",
        "limit=1001",
        "limit=ten",
        "cursor=abc",
        "cursor=0",
        "since=yesterday-ish",
        "since=2026-01-02&until=2026-01-01",
        "bogus=1",
        "action=a&action=b",
        "actor=" + "x" * 129,
    ],
)
def test_bad_queries_are_400(collector_app: AppHarness, query: str):
    response = collector_app.admin("GET", f"/admin/v1/audit?{query}")
    assert response.status_code == 400, response.get_json()
    assert response.get_json()["error"]


def test_only_admins_read_the_audit_log(collector_app: AppHarness):
    h = collector_app
    h.apply(_config())
    user = h.admin("POST", "/admin/v1/tokens", json={"role": "user", "user_id": "alice"})
    assert h.call("GET", "/admin/v1/audit", user.get_json()["secret"]).status_code == 403
    assert h.call("GET", "/admin/v1/audit", h.fleet_token).status_code == 403
    assert h.call("GET", "/admin/v1/audit", None).status_code == 401


# --- the dashboard's page ---------------------------------------------------------------------


def test_dashboard_audit_page_shows_escaped_rows_and_records_its_own_actions(
    collector_app: AppHarness,
):
    h = collector_app
    h.apply(_config())
    h.admin("POST", "/admin/v1/tokens", json={"role": "admin", "label": "<script>x</script>"})
    browser = Browser(h.app)
    assert browser.get("/dashboard/audit").status_code == 302  # needs a session
    assert browser.login(h.admin_token).status_code == 303
    csrf = browser.csrf("/dashboard/keys/alice-web")
    assert browser.post("/dashboard/keys/alice-web/deactivate", {"csrf": csrf}).status_code == 303
    row = _one(h, "key.deactivate")
    assert row["actor"] == "bootstrap" and row["after"]["via"] == "dashboard"

    page = browser.get("/dashboard/audit")
    html = page.get_data(as_text=True)
    assert page.status_code == 200
    assert 'href="/dashboard/audit"' in html and 'aria-current="page"' in html
    assert html.count("data-audit=") == len(_entries(h))
    assert "key.deactivate" in html and "config.apply" in html
    assert "<script>x</script>" not in html and "\\u003cscript\\u003ex" in html
    for text in (HOOK_SECRET, "path-token-QQQ", key_config("alice-web")["secret"]):
        assert text not in html

    filtered = browser.get("/dashboard/audit?action=token.create").get_data(as_text=True)
    assert filtered.count("data-audit=") == 1
    bad = browser.get("/dashboard/audit?since=nonsense")
    assert bad.status_code == 400 and "not a time" in bad.get_data(as_text=True)
    assert browser.get("/dashboard/audit?nope=1").status_code == 400


def test_key_delete_expiry_and_refill_are_recorded(collector_app: AppHarness):
    from solverfleet.collector import refill

    h = collector_app
    h.apply(team_config([user_config("alice", [key_config("alice-web"), key_config("alice-app")])]))
    terms = {
        "expires_at": "2030-01-01T00:00:00Z",
        "refill": {"amount": "20.00", "interval": "daily"},
    }
    assert h.admin("PATCH", "/admin/v1/keys/alice-web", json=terms).status_code == 200
    update = _entries(h, "&action=key.update")[0]
    assert update["before"] == {"expires_at": None, "refill": None}
    assert update["after"]["expires_at"] == "2030-01-01T00:00:00Z"

    midnight = (int(h.clock() * 1000) // 86_400_000 + 1) * 86_400_000
    assert refill.Refiller(h.db).run_once(midnight)
    row = _one(h, "key.refill")
    assert row["actor"] == "refill" and row["before"] == {"balance": "10.00"}
    assert row["after"]["balance"] == "20.00" and row["after"]["amount"] == "10.00"

    assert h.admin("DELETE", "/admin/v1/keys/alice-app").status_code == 200
    row = _one(h, "key.delete")
    assert (row["actor"], row["target_id"], row["account"]) == ("bootstrap", "alice-app", "acme")
    assert row["after"] == {"deleted": True, "balance": "10.00"}
    assert "sk_test" not in json.dumps(_rows(h))
