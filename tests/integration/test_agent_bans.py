"""Brute-force bans through a real agent under gunicorn (behind a "proxy" on loopback).

The test client is the trusted proxy: each X-Forwarded-For value is another client address.
"""

from __future__ import annotations

import json

import pytest
import requests

from solverfleet.process import wait_until
from tests.support.fleet import key, new_secret, team, user

pytestmark = [
    pytest.mark.integration,
    pytest.mark.timeout(120),
    # The ban list is in the agent's memory; the store plays no part.
    pytest.mark.parametrize("store_url", ["sqlite"], indirect=True),
]
BODY = {"type": "turnstile", "url": "https://shop.test/", "params": {}}


def post_solve(url: str, ip: str, secret: str) -> requests.Response:
    headers = {"Authorization": f"Bearer {secret}", "X-Forwarded-For": ip}
    return requests.post(f"{url}/solve", json=BODY, headers=headers, timeout=10)


def in_php(url: str, ip: str, secret: str) -> str:
    fields = {"key": secret, "method": "turnstile", "sitekey": "0x4AAA", "pageurl": BODY["url"]}
    resp = requests.post(f"{url}/in.php", data=fields, headers={"X-Forwarded-For": ip}, timeout=10)
    assert resp.status_code == 200
    return resp.text


def test_unknown_keys_ban_an_address_until_the_ban_ends(fleet_factory):
    stack = fleet_factory(
        agents=1,
        extra_agent_env={
            "SOLVERFLEET_TRUSTED_PROXIES": "127.0.0.0/8",
            "SOLVERFLEET_BAN_DURATION": "3",  # short, so the test sees it end
        },
    )
    secret = new_secret("bans")
    with stack.admin_client() as admin:
        admin.apply(team(user("alice", key("alice-web", secret, "1.00"))))
    stack.wait_for_key(secret)
    url = stack.agent_url(0)
    guesses = [new_secret("guess") for _ in range(5)]

    for guess in guesses:
        assert post_solve(url, "203.0.113.10", guess).status_code == 401
    banned = post_solve(url, "203.0.113.10", secret)  # a valid key from a banned address
    assert banned.status_code == 429 and banned.json()["error"] == "ip_banned"
    assert 1 <= int(banned.headers["Retry-After"]) <= 3
    assert in_php(url, "203.0.113.10", secret) == "IP_BANNED"
    assert post_solve(url, "203.0.113.11", secret).status_code == 200  # others are served

    for guess in guesses:  # the 2captcha surface counts as well
        assert in_php(url, "2001:db8:5::1", guess) == "ERROR_KEY_DOES_NOT_EXIST"
    assert post_solve(url, "2001:db8:5::99", secret).status_code == 429  # same /64

    wait_until(lambda: post_solve(url, "203.0.113.10", secret).status_code == 200, timeout=15,
               interval=0.2, what="ban over")  # fmt: skip

    scrape = requests.get(f"{url}/metrics", timeout=5).text
    [line] = [ln for ln in scrape.splitlines() if ln.startswith("solverfleet_agent_ip_bans_total")]
    ban_count = float(line.split()[-1])
    lines = [json.loads(ln) for ln in (stack.log_dir / "agent-0.log").read_text().splitlines()
             if ln.startswith("{")]  # fmt: skip
    ban_lines = [ln for ln in lines if ln["logger"] == "solverfleet.agent.bans"]
    # stack.wait_for_key polled with the key before it synced: loopback is never banned.
    assert [ln["client_ip"] for ln in ban_lines] == ["203.0.113.10", "2001:db8:5::1"]
    assert ban_count == 2.0
    text = (stack.log_dir / "agent-0.log").read_text()
    assert not any(guess in text for guess in [*guesses, secret])
