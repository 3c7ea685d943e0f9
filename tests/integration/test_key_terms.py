"""Key expiry, key delete, automatic refill and the rate-limit headers end to end (real
collector, worker and two agents under gunicorn; SQLite and MariaDB).

- Expiry is enforced by each agent's own clock: with the collector stopped after the agents
  learned the expiry, both still refuse the key within a second of it.
- A deleted key's secret is refused on both agents within about a second; its usage stays in
  the reports, and re-applying a file that still declares it is refused.
- Refill: the live collector's thread refills a key whose period turned, and the agents see
  the balance; two processes running the collector's refill pass at the same boundary on one
  database credit the key once, with one ledger row.
- ``RateLimit-*`` on successes and 429s from real agents, ``Retry-After`` on every 429.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
import requests
from click.testing import CliRunner

from solverfleet.cli import main
from solverfleet.collector.store import Database
from solverfleet.process import wait_until
from solverfleet.teamconfig.fields import format_time
from tests.support.fleet import auth, balance, key, new_secret, solve, team, user

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

TURNSTILE = {"method": "turnstile", "sitekey": "0x4AAAAAAA", "pageurl": "https://example.test/"}
DAY_MS = 86_400_000


def _cli(stack, *args: str) -> str:
    result = CliRunner().invoke(main, [*args, "--stack", str(stack.state_dir)])
    assert result.exit_code == 0, result.output
    return result.stdout


def _in_php(agent_url: str, secret: str) -> str:
    resp = requests.post(f"{agent_url}/in.php", data={"key": secret, **TURNSTILE}, timeout=10)
    assert resp.status_code == 200
    return resp.text


def _refused_everywhere(
    stack, secret: str, status: int, code: str, since: float
) -> tuple[float, int]:
    """Seconds from ``since`` until both agents refuse ``secret`` on /solve and in.php, and
    how many calls they served meanwhile (before the change reached them)."""
    served = [0]
    for i in range(2):
        url = stack.agent_url(i)

        def refused(url: str = url) -> bool:
            resp = solve(url, secret)
            served[0] += resp.status_code == 200
            return resp.status_code == status and resp.json()["error"] == code

        wait_until(refused, timeout=5, interval=0.01, what=f"agent {i} to refuse the key")
    late = time.time() - since
    for i in range(2):
        assert _in_php(stack.agent_url(i), secret) == "ERROR_KEY_DOES_NOT_EXIST"
    return late, served[0]


def test_an_expired_key_is_refused_on_both_agents_by_their_own_clocks(fleet_factory):
    stack = fleet_factory(agents=2)
    secret = new_secret("expire")
    with stack.admin_client() as admin:
        admin.apply(team(user("erin", key("erin-web", secret, "5.00"))))
    stack.wait_for_key(secret)
    for i in range(2):
        assert solve(stack.agent_url(i), secret).status_code == 200
        assert _in_php(stack.agent_url(i), secret).startswith("OK|")

    # A moment ahead; a CPM ceiling in the same change shows (RateLimit-Policy) that an agent
    # has the new config, expiry included.
    expires = time.time() + 6
    _cli(stack, "keys", "set", "erin-web", "--expires-at", format_time(int(expires * 1000)),
         "--cpm", "1000")  # fmt: skip
    for i in range(2):
        url = stack.agent_url(i)
        wait_until(
            lambda url=url: solve(url, secret).headers.get("RateLimit-Policy") == "1000;w=60",
            timeout=5,
            what=f"agent {i} to load the expiry",
        )
    assert time.time() < expires, "the agents took longer than the margin to load the expiry"
    stack.stop_collector()  # from here on, no sync could tell the agents anything

    wait_until(lambda: time.time() >= expires, timeout=10, what="the expiry time")
    late, served = _refused_everywhere(stack, secret, 403, "key_expired", expires)
    assert served == 0  # the agents knew the expiry before it came
    print(f"expiry -> refused on both agents after {late * 1000:.0f} ms (collector down)")
    assert late < 1.0
    for i in range(2):
        assert balance(stack.agent_url(i), secret).status_code == 403


def test_a_deleted_key_is_refused_everywhere_and_its_usage_stays(fleet_factory):
    stack = fleet_factory(agents=2)
    secret, other = new_secret("delete"), new_secret("keep")
    config = team(user("dora", key("dora-web", secret, "5.00"), key("dora-ci", other, "5.00")))
    with stack.admin_client() as admin:
        admin.apply(config)
    stack.wait_for_key(secret)
    for i in range(2):
        assert solve(stack.agent_url(i), secret).status_code == 200

    started = time.time()
    out = _cli(stack, "keys", "delete", "dora-web", "--yes")
    assert "Deleted dora-web" in out
    late, served = _refused_everywhere(stack, secret, 401, "invalid_key", started)
    print(f"delete -> refused on both agents after {late * 1000:.0f} ms")
    assert late < 1.5
    assert solve(stack.agent_url(0), other).status_code == 200  # the other key is untouched

    with stack.admin_client() as admin:

        def spent() -> int:
            rows = admin.report("keys")["keys"]
            return next((r["solves"] for r in rows if r["key_id"] == "dora-web"), 0)

        # Every success is in the reports, those served before the delete reached an agent too.
        want = 2 + served
        wait_until(lambda: spent() == want, timeout=15, what="the deleted key's usage in reports")
        assert admin.usage("dora-web")["count"] == want
        assert "dora-web" not in [k["id"] for k in admin.list_keys()]
        with pytest.raises(Exception) as refused:
            admin.apply(config)
        assert "key_deleted" in str(refused.value) or "deleted" in str(refused.value)


RACE = r"""
import json, os, sys, time
from solverfleet.collector.refill import Refiller
from solverfleet.collector.store import Database
url, at_ms, go = sys.argv[1], int(sys.argv[2]), sys.argv[3]
db = Database(url)
while not os.path.exists(go):
    time.sleep(0.001)
print(json.dumps(Refiller(db).run_once(at_ms)))
db.close()
"""


def _ledger_refills(stack, key_id: str) -> list[tuple[str, str]]:
    with stack.admin_client() as admin:
        rows = admin.key_transactions(key_id)
    return [(t["reason"], t["balance_after"]) for t in rows if t["reason"].startswith("refill")]


def _successes(stack, key_id: str) -> int:
    with stack.admin_client() as admin:
        return admin.summary()["keys"][key_id]["successes"]


def test_refills_by_the_live_collector_and_once_with_two_racing(fleet_factory, tmp_path, store_url):
    stack = fleet_factory(agents=2)
    secret = new_secret("refill")
    refill = {"amount": "3.00", "interval": "daily"}
    with stack.admin_client() as admin:
        admin.apply(team(user("rick", key("rick-web", secret, "1.00", refill=refill))))
    stack.wait_for_key(secret)
    assert solve(stack.agent_url(0), secret).status_code == 200  # spends 0.010
    wait_until(lambda: _successes(stack, "rick-web") == 1, timeout=15, what="usage shipped")

    # The live collector's refill thread: once the period turns (here: the key's last refilled
    # period is set back a day), it tops the key up within refill_poll_interval.
    now_ms = int(time.time() * 1000)
    today, yesterday = format_time(now_ms)[:10], format_time(now_ms - DAY_MS)[:10]
    db = Database(store_url)
    try:
        db.transaction(
            lambda tx: tx.execute(
                "UPDATE api_keys SET refilled_period = ? WHERE id = ?", (yesterday, "rick-web")
            )
        )
    finally:
        db.close()
    wait_until(
        lambda: _ledger_refills(stack, "rick-web") == [(f"refill daily {today}", "3.00")],
        timeout=20,
        what="the collector's refill thread",
    )
    for i in range(2):  # the agents see it (an agent's own unshipped spend aside)
        url = stack.agent_url(i)
        wait_until(
            lambda url=url: balance(url, secret).json()["balance"] in ("3.00", "2.99"),
            timeout=10,
            what=f"agent {i} to see the refill",
        )
    assert solve(stack.agent_url(1), secret).status_code == 200
    wait_until(lambda: _successes(stack, "rick-web") == 2, timeout=15, what="usage shipped")

    # The next 00:00 UTC, reached through the refill pass's clock seam: two processes run the
    # collector's refill pass at that moment on the one database.
    midnight = (now_ms // DAY_MS + 1) * DAY_MS
    go = tmp_path / "go"
    racers = [
        subprocess.Popen(
            [sys.executable, "-c", RACE, store_url, str(midnight), str(go)],
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    go.touch()
    results = [json.loads(p.communicate(timeout=60)[0]) for p in racers]
    assert all(p.returncode == 0 for p in racers)
    assert sorted(len(r) for r in results) == [0, 1]
    done = next(r for r in results if r)[0]
    assert (done["credited"], done["balance"]) == (10_000, 3_000_000)
    tomorrow = format_time(midnight)[:10]
    assert _ledger_refills(stack, "rick-web") == [
        (f"refill daily {tomorrow}", "3.00"),
        (f"refill daily {today}", "3.00"),
    ]


def test_rate_limit_headers_and_retry_after_from_real_agents(fleet_factory):
    stack = fleet_factory(agents=2)
    secret = new_secret("limits")
    with stack.admin_client() as admin:
        admin.apply(team(user("lena", key("lena-web", secret, "5.00"), daily_limit=3)))
    stack.wait_for_key(secret)
    url = stack.agent_url(0)
    seen = []
    for _ in range(3):
        resp = solve(url, secret)
        assert resp.status_code == 200, resp.text
        h = resp.headers
        assert (h["RateLimit-Limit"], h["RateLimit-Policy"]) == ("3", "3;w=86400")
        assert 0 < int(h["RateLimit-Reset"]) <= 86400
        seen.append(int(h["RateLimit-Remaining"]))
    assert seen == [2, 1, 0]  # the other agent served nothing
    for i in range(2):
        refused = solve(stack.agent_url(i), secret)
        assert (refused.status_code, refused.json()["error"]) == (429, "daily_limit_reached")
        h = refused.headers
        assert h["RateLimit-Remaining"] == "0" and h["RateLimit-Limit"] == "3"
        assert 0 < int(h["Retry-After"]) <= 86400
        assert h["Retry-After"] == h["RateLimit-Reset"]
    unknown = requests.post(f"{url}/solve", json={}, headers=auth("sk_nobody_12345678"), timeout=5)
    assert unknown.status_code == 401 and "RateLimit-Limit" not in unknown.headers
