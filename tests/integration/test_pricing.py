"""Prices on real processes (collector, worker, two agents under gunicorn; both stores): the seed
format's defaults, type aliases on /solve and in.php, per-account prices, and team files that
keep to their own account. Agents speak with per-host (bound) tokens, so the collector checks
every charge against the key's account's price at ingest."""

from __future__ import annotations

import json
import time

import pytest
import requests

from solverfleet import teamconfig
from solverfleet.adminclient import AdminError
from solverfleet.process import wait_until
from tests.support.fleet import auth, key, micros, new_secret, user

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]
TURNSTILE = {"method": "turnstile", "sitekey": "0x4AAAAAAA", "pageurl": "https://shop.test/"}


def bound_fleet(fleet_factory):
    """Two agents, each restarted with a service token bound to its own agent id."""
    tokens: dict[int, dict[str, str]] = {}
    stack = fleet_factory(agents=2, extra_agent_env=lambda i: tokens.get(i, {}))
    with stack.admin_client() as admin:
        for i in range(2):
            made = admin.create_token("service", agent_id=stack.agent_id(i))
            tokens[i] = {"SOLVERFLEET_FLEET_TOKEN": made["secret"]}
    for i in range(2):
        stack.stop_agent(i)
        stack.start_agent(i)
    return stack


def solve(session, url: str, secret: str, type_: str) -> requests.Response:
    body = {"type": type_, "url": "https://shop.test/", "params": {}}
    return session.post(f"{url}/solve", json=body, headers=auth(secret), timeout=30)


def in_php(url: str, secret: str) -> str:
    """One in.php task on ``url``, polled there until answered: the answer text."""
    resp = requests.post(f"{url}/in.php", data={"key": secret, **TURNSTILE}, timeout=10)
    assert resp.status_code == 200 and resp.text.startswith("OK|"), resp.text
    task = resp.text[3:]
    deadline = time.monotonic() + 30
    while True:
        text = requests.get(
            f"{url}/res.php", params={"key": secret, "action": "get", "id": task}, timeout=10
        ).text
        if text != "CAPCHA_NOT_READY" or time.monotonic() > deadline:
            return text
        time.sleep(0.05)  # a client's poll interval, not a settle wait


def settle(stack, events: int) -> dict:
    """The collector's summary once ``events`` usage events arrived (refused ones never do)."""

    def arrived():
        with stack.admin_client() as admin:
            summary = admin.summary()
        return summary if summary["events"] == events else False

    return wait_until(arrived, timeout=20, what=f"{events} usage events at the collector")


def test_seed_file_gets_500_a_day_at_0_003_and_aliases_cost_the_same(fleet_factory, tmp_path):
    stack = bound_fleet(fleet_factory)
    seed_secret = new_secret("seed")
    path = tmp_path / "team.json"
    path.write_text(
        json.dumps({"users": [{"id": "sam", "api_key": "ENV:SAM_KEY", "role": "user"}]})
    )
    seed = teamconfig.load_file(path, env={"SAM_KEY": seed_secret})  # what the CLI sends
    acme_secret = new_secret("acme")
    own = teamconfig.parse(
        {
            "account": "acme",
            "prices": {"cloudflare-turnstile": "0.002"},  # priced under its alias
            "users": [
                user(
                    "ann",
                    key("ann-web", acme_secret, "1.00", allowed_types=["cloudflare-turnstile"]),
                )
            ],
        }
    )
    with stack.admin_client() as admin:
        admin.apply(seed)
        admin.apply(own)
        admin.topup("sam", "2.00")
        assert [u["daily_limit"] for u in admin.list_users() if u["id"] == "sam"] == [500]
    stack.wait_for_key(seed_secret)
    stack.wait_for_key(acme_secret)
    agent = stack.agent_url(0)

    # The seed user: 500 calls a day at 0.003 (its own default price), then 429.
    with requests.Session() as session:
        codes = [solve(session, agent, seed_secret, "turnstile").status_code for _ in range(500)]
        assert codes == [200] * 500
        over = solve(session, agent, seed_secret, "geetest")
        assert over.status_code == 429 and over.json()["error"] == "daily_limit_reached", over.text
        # Aliases: both names on /solve, and in.php's turnstile, cost acme's 0.002 each.
        names = ("cloudflare-turnstile", "turnstile")
        answers = [solve(session, agent, acme_secret, name) for name in names]
        assert [(r.status_code, r.json()["cost"]) for r in answers] == [(200, "0.002")] * 2
        other = solve(session, agent, acme_secret, "recaptcha-v2")
        assert other.status_code in (400, 403)  # not priced for acme, nor allowed
    assert in_php(stack.agent_url(1), acme_secret).startswith("OK|")

    summary = settle(stack, 503)
    assert summary["keys"]["sam"]["balance_micros"] == micros("2.00") - 500 * 3000
    assert summary["keys"]["ann-web"]["balance_micros"] == micros("1.00") - 3 * 2000
    assert summary["usage_micros"] == 500 * 3000 + 3 * 2000
    with stack.admin_client() as admin:
        events = admin.usage(key_id="ann-web", limit=10)["events"]
    assert sorted(e["type"] for e in events) == ["turnstile"] * 3  # recorded under the slug


def test_accounts_keep_their_keys_and_their_prices(fleet_factory):
    stack = bound_fleet(fleet_factory)
    a_secret, b_secret = new_secret("acct-a"), new_secret("acct-b")

    def config(account: str, price: str, *keys: dict) -> dict:
        users = [user(f"{account}-user", *keys)]
        return teamconfig.parse(
            {"account": account, "prices": {"turnstile": price}, "users": users}
        )

    with stack.admin_client() as admin:
        admin.apply(config("acme", "0.002", key("a-key", a_secret)))
        admin.apply(config("beta", "0.005", key("b-key", b_secret)))
        before = (admin.list_keys(), admin.list_users(), admin.summary())
        # Beta's file naming acme's key: refused whole, naming the key; nothing changes.
        taking = config("beta", "0.009", key("b-key", b_secret), key("a-key", new_secret("x")))
        with pytest.raises(AdminError) as refused:
            admin.apply(taking)
        assert refused.value.status == 409 and refused.value.code == "owned_by_another_account"
        assert "'a-key' (account 'acme')" in str(refused.value)
        assert (admin.list_keys(), admin.list_users(), admin.summary()) == before
    stack.wait_for_key(a_secret)
    stack.wait_for_key(b_secret)

    with requests.Session() as session:
        for i in range(4):  # both agents, both keys
            url = stack.agent_url(i % 2)
            a = solve(session, url, a_secret, "turnstile")
            b = solve(session, url, b_secret, "turnstile")
            assert (a.json()["cost"], b.json()["cost"]) == ("0.002", "0.005"), (a.text, b.text)
    summary = settle(stack, 8)
    assert summary["keys"]["a-key"]["balance_micros"] == micros("10.00") - 4 * 2000
    assert summary["keys"]["b-key"]["balance_micros"] == micros("10.00") - 4 * 5000
