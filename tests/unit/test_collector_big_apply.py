"""A team file of 100,000 keys applies whole under the default apply_max_body (#20); one key
too many for a smaller limit is a clear 413 naming the setting, and changes nothing."""

from __future__ import annotations

import json
from pathlib import Path

from solverfleet import teamconfig
from tests.support.collector import make_app, sqlite_url

KEYS, PER_USER = 100_000, 100


def _body(keys: int) -> bytes:
    users = [
        {
            "id": f"u{u}",
            "email": f"u{u}@example.test",
            "keys": [
                {
                    "id": f"k{u}-{i}",
                    "secret": f"sk_test_{u:05d}_{i:03d}_0123456789abcdef",
                    "balance": "1.00",
                }
                for i in range(PER_USER)
            ],
        }
        for u in range(keys // PER_USER)
    ]
    raw = {"account": "big", "prices": {"turnstile": "0.002"}, "users": users}
    return json.dumps(teamconfig.parse(raw)).encode()


def test_a_hundred_thousand_keys_apply_in_one_transaction(tmp_path: Path) -> None:
    h = make_app(sqlite_url(tmp_path / "c.db"))
    body = _body(KEYS)
    assert len(body) > h.state.settings.admin_max_body  # only apply's own limit lets it in
    response = h.admin("POST", "/admin/v1/apply", data=body, content_type="application/json")
    assert response.status_code == 200, response.get_json()
    assert (
        len(response.get_json()["created"]) == KEYS + KEYS // PER_USER + 2
    )  # + users, price, account
    count = h.db.read(lambda tx: tx.scalar("SELECT COUNT(*) FROM api_keys"))
    assert count == KEYS

    small = make_app(sqlite_url(tmp_path / "s.db"), apply_max_body=len(body) - 1)
    response = small.admin("POST", "/admin/v1/apply", data=body, content_type="application/json")
    assert response.status_code == 413
    assert "SOLVERFLEET_APPLY_MAX_BODY" in response.get_json()["message"]
    assert small.db.read(lambda tx: tx.scalar("SELECT COUNT(*) FROM api_keys")) == 0
