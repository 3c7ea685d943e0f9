"""Brute-force bans: the BanList on a driven clock, then /solve, /balance, in.php in-process."""

from __future__ import annotations

import logging

import pytest

from solverfleet.agent import metrics
from solverfleet.agent.bans import BanList, ban_key
from solverfleet.agent.clientip import parse_nets
from solverfleet.agent.settings import AgentSettings
from solverfleet.settings import SettingsError
from tests.support.fake_collector import (  # noqa: F401
    agent_settings,
    fake_collector,
    fake_worker,
    standard_setup,
)
from tests.unit.test_agent_app import BODY, Env


class Clock:
    def __init__(self, now: float = 1_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def bans(threshold=5, window=60.0, duration=300.0, max_ips=100, clock=None, exempt=()):
    return BanList(threshold, window, duration, max_ips, clock or Clock(), exempt)


def fail(bl: BanList, ip: str, times: int) -> list[bool]:
    return [bl.failed(ip) for _ in range(times)]


# ---- BanList --------------------------------------------------------------------------------


def test_fifth_unknown_key_bans_for_duration():
    clock = Clock()
    bl = bans(clock=clock)
    assert fail(bl, "203.0.113.7", 4) == [False] * 4
    assert bl.retry_after("203.0.113.7") is None
    assert bl.failed("203.0.113.7") is True
    assert bl.retry_after("203.0.113.7") == 300
    assert bl.retry_after("203.0.113.8") is None  # a neighbour is not affected
    clock.now += 299.5
    assert bl.retry_after("203.0.113.7") == 1
    clock.now += 0.5
    assert bl.retry_after("203.0.113.7") is None  # expired: served again
    assert bl.banned_count == 0
    assert fail(bl, "203.0.113.7", 4) == [False] * 4  # and counts from zero


def test_window_slides():
    clock = Clock()
    bl = bans(clock=clock)
    for _ in range(4):
        assert not bl.failed("198.51.100.1")
        clock.now += 20  # failures at 0, 20, 40, 60
    assert not bl.failed("198.51.100.1")  # at 80: the one at 0 and 20 left the window
    clock.now += 15
    assert not bl.failed("198.51.100.1")  # at 95: 40, 60, 80, 95 within 60 s
    clock.now += 1
    assert bl.failed("198.51.100.1")  # at 96: 40 is still inside (96 - 60 = 36)


def test_threshold_zero_turns_bans_off():
    bl = bans(threshold=0)
    assert fail(bl, "203.0.113.7", 50) == [False] * 50
    assert bl.retry_after("203.0.113.7") is None and len(bl) == 0


def test_ipv6_counts_per_slash_64():
    bl = bans()
    for host in range(1, 6):  # five different addresses of one /64
        bl.failed(f"2001:db8:1:2::{host:x}")
    assert bl.retry_after("2001:db8:1:2:ffff::1") == 300
    assert bl.retry_after("2001:db8:1:2:0:0:0:9") == 300  # any spelling
    assert bl.retry_after("2001:db8:1:3::1") is None  # the next /64 is not
    assert ban_key("::ffff:192.0.2.1") == ban_key("192.0.2.1")  # mapped IPv4 is IPv4


def test_memory_is_bounded_and_oldest_counter_goes_first():
    clock = Clock()
    bl = bans(max_ips=3, clock=clock)
    for ip in ("10.0.0.1", "10.0.0.2", "10.0.0.3"):
        fail(bl, ip, 4)
        clock.now += 1
    bl.failed("10.0.0.1")  # 1's fifth: banned
    assert bl.retry_after("10.0.0.1") == 300
    for n in range(1000):  # a flood of fresh addresses
        bl.failed(f"10.1.{n // 256}.{n % 256}")
        assert len(bl) <= 3
    assert bl.retry_after("10.0.0.1") == 300  # the flood evicted counters, never the ban
    assert not bl.failed("10.0.0.2")  # 2's counter was washed out: it starts again


def test_a_full_table_of_bans_evicts_the_oldest_ban():
    clock = Clock()
    bl = bans(threshold=1, max_ips=2, clock=clock)
    for n in range(3):
        assert bl.failed(f"10.0.0.{n}")
        clock.now += 1
    assert bl.banned_count == 2
    assert bl.retry_after("10.0.0.0") is None  # the one nearest to expiry made room
    assert bl.retry_after("10.0.0.1") == 298 and bl.retry_after("10.0.0.2") == 299


def test_expired_bans_are_dropped_to_make_room():
    clock = Clock()
    bl = bans(threshold=1, max_ips=2, clock=clock)
    bl.failed("10.0.0.1")
    clock.now += 301
    bl.failed("10.0.0.2")
    assert bl.banned_count == 1


def test_a_ban_counts_and_logs_once_without_key_text(caplog):
    bl = bans()
    before = metrics.IP_BANS._value.get()
    with caplog.at_level(logging.WARNING, logger="solverfleet.agent.bans"):
        fail(bl, "203.0.113.9", 5)
    assert metrics.IP_BANS._value.get() == before + 1
    records = [r for r in caplog.records if r.name == "solverfleet.agent.bans"]
    assert len(records) == 1 and records[0].client_ip == "203.0.113.9"


def test_settings_validate():
    base = {"collector_url": "http://c", "fleet_token": "t"}
    assert AgentSettings(**base).ban_threshold == 5
    for bad in ({"ban_threshold": -1}, {"ban_window": 0}, {"ban_duration": 0},
                {"ban_max_ips": 0}):  # fmt: skip
        with pytest.raises(SettingsError):
            AgentSettings(**base, **bad)


# ---- in-process app -------------------------------------------------------------------------


@pytest.fixture
def env(tmp_path, fake_collector, fake_worker):  # noqa: F811
    env = Env(tmp_path, fake_collector, fake_worker)
    env.start(trusted_proxies=("127.0.0.0/8",))
    yield env
    env.close()


def hdrs(ip: str, secret: str) -> dict[str, str]:
    return {"X-Forwarded-For": ip, "Authorization": f"Bearer {secret}"}


def test_solve_bans_after_five_unknown_keys_even_a_valid_key(env):
    good = env.secrets["alice-web"]
    for n in range(5):
        resp = env.client.post("/solve", json=BODY, headers=hdrs("203.0.113.5", f"sk_guess{n}"))
        assert resp.status_code == 401 and resp.json["error"] == "invalid_key"
    resp = env.client.post("/solve", json=BODY, headers=hdrs("203.0.113.5", good))
    assert resp.status_code == 429 and resp.json["error"] == "ip_banned"
    assert resp.headers["Retry-After"] == "300"
    assert env.client.get("/balance", headers=hdrs("203.0.113.5", good)).status_code == 429
    assert env.agent.spool.pending == 0 and not env.collector.events  # nothing recorded
    ok = env.client.post("/solve", json=BODY, headers=hdrs("203.0.113.6", good))
    assert ok.status_code == 200, ok.json  # another address is served


def test_missing_and_disabled_keys_do_not_count(env):
    for _ in range(10):  # no key at all: nothing guessed
        resp = env.client.post("/solve", json=BODY, headers={"X-Forwarded-For": "203.0.113.7"})
        assert resp.status_code == 401
    assert env.agent.bans.retry_after("203.0.113.7") is None and len(env.agent.bans) == 0


def test_balance_guesses_count_too(env):
    for n in range(5):
        assert env.client.get("/balance", headers=hdrs("203.0.113.8", f"x{n}")).status_code == 401
    assert env.agent.bans.retry_after("203.0.113.8") == 300


def test_in_php_and_res_php_answer_ip_banned(env):
    ip = {"X-Forwarded-For": "2001:db8::1"}
    for n in range(5):
        resp = env.client.post("/in.php", data={"key": f"bad{n}", "method": "turnstile"},
                               headers=ip)  # fmt: skip
        assert resp.get_data(as_text=True) == "ERROR_KEY_DOES_NOT_EXIST"
    good = env.secrets["alice-web"]
    resp = env.client.get(f"/in.php?key={good}&method=turnstile&json=1", headers=ip)
    assert resp.status_code == 200 and resp.json == {"status": 0, "request": "IP_BANNED"}
    resp = env.client.get(f"/res.php?key={good}&action=getbalance",
                          headers={"X-Forwarded-For": "2001:db8::2"})  # same /64  # fmt: skip
    assert resp.get_data(as_text=True) == "IP_BANNED"


def test_loopback_and_trusted_proxies_are_never_banned():
    bl = bans(exempt=parse_nets(("10.9.0.0/16",)))
    for ip in ("127.0.0.1", "::1", "::ffff:127.0.0.2", "10.9.1.1"):
        assert fail(bl, ip, 10) == [False] * 10
    assert len(bl) == 0
    assert fail(bl, "10.8.0.1", 5)[-1] is True


def test_a_proxy_without_forwarded_for_is_not_banned(env):
    # The peer 127.0.0.1 is a trusted proxy here; with no X-Forwarded-For it is the "client".
    for n in range(10):
        headers = {"Authorization": f"Bearer nope{n}"}
        assert env.client.post("/solve", json=BODY, headers=headers).status_code == 401
    assert len(env.agent.bans) == 0
