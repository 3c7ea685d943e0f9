"""The agent's side of key expiry and of the rate-limit headers, in-process (Flask test client,
fake collector, tiny worker): expiry is enforced by the agent's own clock on every surface,
``RateLimit-*`` describe the most constraining budget, and every 429 carries Retry-After."""

from __future__ import annotations

import time

import pytest

from solverfleet.agent import ratelimit
from solverfleet.agent.keystore import Key, User
from solverfleet.agent.leases import CountLease
from solverfleet.agent.limiter import Limiter
from solverfleet.process import wait_until
from tests.support.fake_collector import (  # noqa: F401
    fake_collector,
    fake_worker,
)
from tests.unit.test_agent_app import NOW, Env, assert_error, fake

TURNSTILE = {"method": "turnstile", "sitekey": "0x4AAAAAAA", "pageurl": "https://shop.example/"}


@pytest.fixture
def ready(tmp_path, fake_collector, fake_worker):  # noqa: F811
    env = Env(tmp_path, fake_collector, fake_worker)
    yield env.start()
    env.close()


def compat(env: Env, path: str, key_id: str = "alice-web", **fields: str) -> str:
    resp = env.client.post(path, data={"key": env.secrets[key_id], **fields})
    assert resp.status_code == 200
    return resp.get_data(as_text=True)


# ---- expiry ---------------------------------------------------------------------------------


def test_an_expired_key_is_refused_on_every_surface_by_the_agent_clock(ready):
    assert ready.solve().status_code == 200
    task = compat(ready, "/in.php", **TURNSTILE)
    assert task.startswith("OK|")
    # A moment ahead: the agent has the time before it passes, and needs no sync after.
    expires_ms = int(time.time() * 1000) + 400
    ready.collector.update_key("alice-web", expires_at_ms=expires_ms)
    wait_until(
        lambda: ready.agent.keystore.snapshot.keys["alice-web"].expires_at is not None,
        timeout=5,
        what="the expiry at the agent",
    )
    wait_until(lambda: time.time() * 1000 >= expires_ms, timeout=5, what="the expiry time")
    assert_error(ready.solve(), 403, "key_expired")
    resp = ready.client.get("/balance", headers={"X-API-Key": ready.secrets["alice-web"]})
    assert_error(resp, 403, "key_expired")
    assert compat(ready, "/in.php", **TURNSTILE) == "ERROR_KEY_DOES_NOT_EXIST"
    task_id = task.split("|", 1)[1]
    assert compat(ready, "/res.php", action="get", id=task_id) == "ERROR_KEY_DOES_NOT_EXIST"
    assert compat(ready, "/res.php", action="getbalance") == "ERROR_KEY_DOES_NOT_EXIST"
    # Another key is unaffected; clearing the expiry lets the key in again.
    assert ready.solve("bob-web").status_code == 200
    ready.collector.update_key("alice-web", expires_at_ms=None)
    wait_until(lambda: ready.solve().status_code == 200, timeout=5, what="expiry cleared")


# ---- rate-limit headers ---------------------------------------------------------------------


def limits(resp) -> tuple:
    h = resp.headers
    return (
        h.get("RateLimit-Limit"),
        h.get("RateLimit-Remaining"),
        h.get("RateLimit-Reset"),
        h.get("RateLimit-Policy"),
    )


def test_cpm_headers_on_success_and_on_the_429(ready):
    remaining = []
    for _ in range(2):
        resp = ready.solve("alice-cpm")
        assert resp.status_code == 200
        limit, left, reset, policy = limits(resp)
        assert (limit, reset, policy) == ("2", "30", "2;w=60")  # NOW is 30 s into its minute
        remaining.append(int(left))
    assert remaining == [1, 0]  # one agent: the limit less the calls made
    resp = ready.solve("alice-cpm")
    assert_error(resp, 429, "cpm_exceeded")
    assert limits(resp) == ("2", "0", "30", "2;w=60")
    assert resp.headers["Retry-After"] == "30"


def test_daily_headers_on_success_and_on_the_429(ready):
    reset = str(86400 - int(NOW % 86400))
    lefts = []
    for _ in range(3):
        resp = ready.solve("bob-web")
        assert resp.status_code == 200
        limit, left, got_reset, policy = limits(resp)
        assert (limit, got_reset, policy) == ("3", reset, "3;w=86400")
        lefts.append(int(left))
    assert lefts == [2, 1, 0]
    resp = ready.solve("bob-web")
    assert_error(resp, 429, "daily_limit_reached")
    assert limits(resp) == ("3", "0", reset, "3;w=86400")
    assert resp.headers["Retry-After"] == reset


def test_the_most_constraining_policy_is_shown(ready):
    ready.secrets["bob-cpm"] = ready.collector.add_key("bob-cpm", "bob", cpm=50)
    wait_until(lambda: ready.solve("bob-cpm").status_code == 200, timeout=5, what="new key")
    resp = ready.solve("bob-cpm")
    assert resp.status_code == 200
    limit, left, reset, policy = limits(resp)
    assert policy == "50;w=60, 3;w=86400"
    assert (limit, left) == ("3", "1")  # 1 daily call left is fewer than 48 CPM tokens
    assert reset == str(86400 - int(NOW % 86400))


def test_no_headers_without_a_budget_and_none_before_the_key_is_known(ready):
    resp = ready.solve()
    assert resp.status_code == 200
    assert limits(resp) == (None, None, None, None)
    assert limits(ready.solve("nobody")) == (None, None, None, None)  # 401: no key, no policy


def test_failed_and_refused_calls_show_the_budget_too(ready):
    resp = ready.solve("bob-web", body=fake(status=500))
    assert resp.status_code == 502
    assert limits(resp)[0] == "3"


def test_every_429_has_retry_after(env):
    env.start(ban_threshold=2, ban_window=60, ban_duration=120)
    away = {"REMOTE_ADDR": "203.0.113.5"}  # loopback is never banned
    statuses = [env.solve("nobody", environ_base=away).status_code for _ in range(2)]
    assert statuses == [401, 401]
    resp = env.solve(environ_base=away)  # banned before the (valid) key is looked up
    assert_error(resp, 429, "ip_banned")
    assert 1 <= int(resp.headers["Retry-After"]) <= 120


@pytest.fixture
def env(tmp_path, fake_collector, fake_worker):  # noqa: F811
    env = Env(tmp_path, fake_collector, fake_worker)
    yield env
    env.close()


def test_error_helper_never_sends_a_429_without_retry_after(ready):
    from solverfleet.agent.routes import error

    with ready.app.test_request_context():
        assert error("x", "y", 429).headers["Retry-After"] == "1"
        assert error("x", "y", 429, 7).headers["Retry-After"] == "7"
        assert "Retry-After" not in error("x", "y", 403).headers


# ---- ratelimit.headers, pure ----------------------------------------------------------------


def key(cpm: int | None) -> Key:
    return Key("k", "h", "u", None, None, None, None, cpm, None, True, 0)


def user(daily: int | None) -> User:
    return User("u", None, "user", daily, True, None)


def lease(granted: int, used: int = 0, holds: int = 0) -> CountLease:
    count = CountLease()
    count.granted, count.held, count.used, count.holds, count.answered = (
        granted, granted, used, holds, True,
    )  # fmt: skip
    return count


DAY_RESET = str(86400 - int(NOW % 86400))


def starved(granted: int, used: int = 0) -> CountLease:
    count = lease(granted, used)
    count.starved = True  # the collector said the pool is empty
    return count


@pytest.mark.parametrize(
    ("cpm", "cpm_lease", "daily", "daily_lease", "refused", "want"),
    [
        (None, None, None, None, None, {}),
        (10, lease(6, used=2), None, None, None, ("10", "8", "30", "10;w=60")),
        (10, lease(6, used=2, holds=1), None, None, None, ("10", "7", "30", "10;w=60")),
        (10, None, None, None, None, ("10", "10", "30", "10;w=60")),  # nothing used here
        (10, starved(6, used=2), None, None, None, ("10", "4", "30", "10;w=60")),
        (10, lease(10, used=3), None, None, None, ("10", "7", "30", "10;w=60")),  # all ours
        (10, lease(6, used=2), None, None, "cpm_exceeded", ("10", "0", "30", "10;w=60")),
        (None, None, 5, lease(5, used=1, holds=1), None, ("5", "3", DAY_RESET, "5;w=86400")),
        (10, lease(6), 5, lease(5, used=1), None, ("5", "4", DAY_RESET, "10;w=60, 5;w=86400")),
        (10, starved(3), 5, lease(5), None, ("10", "3", "30", "10;w=60, 5;w=86400")),
        (
            10,
            lease(6),
            5,
            lease(5),
            "daily_limit_reached",
            ("5", "0", DAY_RESET, "10;w=60, 5;w=86400"),
        ),
        # A tie: the later reset constrains more.
        (
            10,
            lease(4, used=6),
            5,
            lease(5, used=1),
            None,
            ("5", "4", DAY_RESET, "10;w=60, 5;w=86400"),
        ),
    ],
)
def test_headers_pick_the_fewest_remaining(cpm, cpm_lease, daily, daily_lease, refused, want):
    limiter = Limiter()
    if cpm_lease is not None:
        limiter.cpm[("k", int(NOW // 60))] = cpm_lease
    if daily_lease is not None:
        limiter.daily[("u", int(NOW // 86400))] = daily_lease
    got = ratelimit.headers(limiter, key(cpm), user(daily), NOW, refused=refused)
    if not want:
        assert got == {}
        return
    names = ("RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset", "RateLimit-Policy")
    assert tuple(got[n] for n in names) == want
