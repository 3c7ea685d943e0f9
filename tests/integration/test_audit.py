"""The audit log through a real collector (gunicorn, two worker processes; SQLite and MariaDB):
changes made through the admin API, the CLI and the dashboard are each recorded once, with
their actor and before/after values, and no secret or token reaches the table, the API, the
CLI or the page. The in-process cases (every action, filters, bad queries) are in
tests/unit/test_audit.py."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from click.testing import CliRunner

from solverfleet.cli import main
from solverfleet.collector.store import Database
from solverfleet.keyhash import hash_secret
from tests.support.collector import CollectorProcess, key_config, team_config, user_config

pytest_plugins = ["tests.support.collector", "tests.support.mariadb"]
pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

HOOK_SECRET = "whsec-integration-audit-0123456789"
HOOK_URL = "https://hooks.example.test/in/path-token-RRR"
TOPUPS = 16


@pytest.fixture
def proc(collector_db_url: str, tmp_path: Path) -> Iterator[CollectorProcess]:
    collector = CollectorProcess(collector_db_url, tmp_path, workers=2, threads=4).start()
    try:
        yield collector
    finally:
        collector.stop()


def _ok(response: requests.Response) -> dict:
    assert response.status_code in (200, 201), response.text
    return response.json()


def _audit(proc: CollectorProcess, **params) -> tuple[list[dict], str]:
    response = proc.admin("GET", "/admin/v1/audit", params={"limit": 1000, **params})
    assert response.status_code == 200, response.text
    return response.json()["entries"], response.text


def _cli(proc: CollectorProcess, *args: str) -> str:
    env = {"SOLVERFLEET_COLLECTOR": proc.url, "SOLVERFLEET_TOKEN": proc.admin_token}
    result = CliRunner().invoke(main, ["audit", *args], env=env)
    assert result.exit_code == 0, result.output
    return result.stdout


def test_admin_changes_are_audited_once_each_without_secrets(proc: CollectorProcess) -> None:
    config = team_config(
        [user_config("alice", [key_config("alice-web", balance="1.00")])],
        low_balance_alert={
            "enabled": True,
            "threshold": "0.50",
            "webhooks": [{"url": HOOK_URL, "secret": HOOK_SECRET}],
        },
    )
    _ok(proc.admin("POST", "/admin/v1/apply", json=config))
    made = _ok(proc.admin("POST", "/admin/v1/tokens", json={"role": "admin", "label": "ops"}))
    ops, ops_actor = made["secret"], f"token:{made['token']['id']}"

    # Top-ups at once through both worker processes: one row each, in the top-up's own
    # transaction, so the balances the rows show are exactly the ledger's sequence.
    def topup(_: int) -> dict:
        return _ok(
            proc.request("POST", "/admin/v1/keys/alice-web/topup", ops, json={"amount": "0.25"})
        )

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(topup, range(TOPUPS)))
    rows, _ = _audit(proc, action="key.topup")
    assert len(rows) == TOPUPS and {r["actor"] for r in rows} == {ops_actor}
    assert sorted(r["after"]["transaction_id"] for r in rows) == sorted(
        a["transaction_id"] for a in answers
    )
    for r in rows:  # each row's before is the balance just before its own top-up
        assert float(r["after"]["balance"]) - float(r["before"]["balance"]) == pytest.approx(0.25)
    assert {r["after"]["balance"] for r in rows} == {
        f"{1 + 0.25 * (i + 1):.2f}" for i in range(TOPUPS)
    }

    _ok(proc.request("PATCH", "/admin/v1/keys/alice-web", ops, json={"cpm": 12}))
    _ok(proc.request("POST", "/admin/v1/keys/alice-web/deactivate", ops))
    rotated = _ok(proc.request("POST", "/admin/v1/keys/alice-web/rotate", ops, json={}))
    user_token = _ok(
        proc.request("POST", "/admin/v1/tokens", ops, json={"role": "user", "user_id": "alice"})
    )
    _ok(proc.request("POST", f"/admin/v1/tokens/{user_token['token']['id']}/revoke", ops))
    config["prices"]["turnstile"] = "0.004"
    _ok(proc.admin("POST", "/admin/v1/apply", json=config))

    entries, raw = _audit(proc)
    by_action = {}
    for e in entries:
        by_action.setdefault(e["action"], []).append(e)
    # Newest first: the second apply put the file's cpm and active flag back.
    assert [e["actor"] for e in by_action["key.update"]] == ["bootstrap", ops_actor]
    assert by_action["key.update"][0]["after"] == {"cpm": None, "active": True}
    assert by_action["key.update"][1]["before"] == {"cpm": None}
    assert by_action["key.update"][1]["after"] == {"cpm": 12}
    assert by_action["key.deactivate"][0]["after"]["active"] is False
    assert by_action["key.rotate"][0]["actor"] == ops_actor
    assert by_action["token.revoke"][0]["target_id"] == str(user_token["token"]["id"])
    assert by_action["price.update"][0]["after"] == {"price": "0.004", "scope": "account"}
    assert len(by_action["config.apply"]) == 2
    assert {e["actor"] for e in by_action["config.apply"]} == {"bootstrap"}

    # The CLI lists the same rows (its JSON is the API's answer) and filters the same way.
    listed = json.loads(
        _cli(proc, "--format", "json", "--actor", ops_actor, "--all", "--limit", "5")
    )
    assert [e["id"] for e in listed["entries"]] == [
        e["id"] for e in entries if e["actor"] == ops_actor
    ]
    table = _cli(proc, "--action", "key.update")
    assert "key.update" in table and "cpm=12" in table
    csv = _cli(proc, "--format", "csv", "--target-type", "token")
    assert csv.count("token.") == 3  # create ops, create user, revoke

    # The dashboard page shows them too (a real login with its CSRF token).
    page = _dashboard(proc, "/dashboard/audit?target_id=alice-web")
    assert page.count("data-audit=") == len([e for e in entries if e["target_id"] == "alice-web"])

    # No secret, token or hash anywhere: table rows, API answer, CLI output, page.
    secrets = [
        key_config("alice-web")["secret"],
        rotated["secret"],
        ops,
        user_token["secret"],
        proc.admin_token,
        HOOK_SECRET,
        "path-token-RRR",
    ]
    forbidden = secrets + [hash_secret(s) for s in secrets]
    outputs = [_table_dump(proc), raw, json.dumps(listed), table, csv, page]
    for text in forbidden:
        for out in outputs:
            assert text not in out, text


def _table_dump(proc: CollectorProcess) -> str:
    db = Database(proc.db_url)
    try:
        return json.dumps(db.read(lambda tx: tx.all("SELECT * FROM audit_log")), default=str)
    finally:
        db.close()


def _dashboard(proc: CollectorProcess, path: str) -> str:
    with requests.Session() as browser:
        form = browser.get(proc.url + "/dashboard/login", timeout=30).text
        csrf = re.search(r'name="csrf" value="([^"]+)"', form).group(1)
        login = browser.post(
            proc.url + "/dashboard/login",
            data={"token": proc.admin_token, "csrf": csrf},
            allow_redirects=False,
            timeout=30,
        )
        assert login.status_code == 303, login.text
        page = browser.get(proc.url + path, timeout=30)
        assert page.status_code == 200, page.text
        return page.text
