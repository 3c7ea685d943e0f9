"""A whole local fleet (real collector, worker and agents under gunicorn) on either store.

Registered as a plugin in tests/conftest.py: a test takes ``fleet_factory``; ``store_url`` is
parametrized over SQLite and a private MariaDB, so every fleet test runs
against both stores.
"""

from __future__ import annotations

import itertools
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path

import pytest
import requests

from solverfleet import teamconfig
from solverfleet_dev.localstack import LocalStack
from tests.support.mariadb import MariaDBServer

PRICE = "0.010"
_SECRETS = itertools.count(1)


def new_secret(label: str) -> str:
    return f"sk_test-{label}-{next(_SECRETS):04d}-0123456789abcdef"


def auth(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def solve(
    agent_url: str, secret: str, *, url: str = "https://example.test/", **params
) -> requests.Response:
    body = {"type": "turnstile", "url": url, "params": params}
    return requests.post(f"{agent_url}/solve", json=body, headers=auth(secret), timeout=30)


def balance(agent_url: str, secret: str) -> requests.Response:
    return requests.get(f"{agent_url}/balance", headers=auth(secret), timeout=5)


def team(*users: dict, prices: dict | None = None) -> dict:
    return teamconfig.parse(
        {"account": "acme", "prices": prices or {"turnstile": PRICE}, "users": list(users)}
    )


def user(uid: str, *keys: dict, daily_limit: int | None = None, active: bool = True) -> dict:
    entry: dict = {"id": uid, "email": f"{uid}@example.test", "active": active, "keys": list(keys)}
    if daily_limit is not None:
        entry["daily_limit"] = daily_limit
    return entry


def key(kid: str, secret: str, balance: str = "10.00", **extra) -> dict:
    return {"id": kid, "secret": secret, "balance": balance, **extra}


def micros(text: str) -> int:
    return int(Decimal(text) * 1_000_000)


@pytest.fixture(params=["sqlite", "mariadb"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'collector.db'}"
    server: MariaDBServer = request.getfixturevalue("mariadb_server")
    return server.create_database()


@pytest.fixture
def fleet_factory(tmp_path: Path, store_url: str) -> Iterator[Callable[..., LocalStack]]:
    """``fleet_factory(agents=2, **LocalStack kwargs)`` -> a started stack, stopped at teardown."""
    stacks: list[LocalStack] = []

    def start(agents: int = 2, **kwargs) -> LocalStack:
        kwargs.setdefault("worker_latency_ms", "0")
        stack = LocalStack(tmp_path / f"stack{len(stacks)}", agents, db_url=store_url, **kwargs)
        stacks.append(stack)
        return stack.start()

    try:
        yield start
    finally:
        for stack in stacks:
            stack.stop()


def hammer(
    agent_urls: list[str], secret: str, clients: int, per_client: int
) -> tuple[Counter, int]:
    """``clients`` threads each calling ``/solve`` ``per_client`` times, round-robin over the
    agents; returns (status counts, peak calls in flight across all of them)."""
    lock = threading.Lock()
    in_flight = peak = 0

    def client(c: int) -> Counter:
        nonlocal in_flight, peak
        seen: Counter = Counter()
        for i in range(per_client):
            with lock:
                in_flight += 1
                peak = max(peak, in_flight)
            try:
                seen[solve(agent_urls[(c + i) % len(agent_urls)], secret).status_code] += 1
            finally:
                with lock:
                    in_flight -= 1
        return seen

    with ThreadPoolExecutor(clients) as pool:
        totals = sum(pool.map(client, range(clients)), Counter())
    return totals, peak
