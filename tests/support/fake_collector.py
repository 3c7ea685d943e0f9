"""A small, threaded stand-in for the collector's side of the fleet protocol, plus a tiny worker.

Unit-level only: in-memory state, the grant policy and idempotent ingest of ARCHITECTURE.md,
and switches to make it fail. End-to-end tests run the real collector instead.

Daily leases here follow the contract's wording: ``held`` is granted minus returned (ingest
does not shrink it); a reset voids the agent's leases and keeps its consumed tokens counted.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
import uuid
from collections import Counter
from typing import Any

import pytest
from flask import Flask, jsonify, request
from werkzeug.serving import make_server

from solverfleet.agent import agent_of
from solverfleet.agent import create_app as create_agent
from solverfleet.keyhash import hash_secret, tokens_equal
from solverfleet.process import free_port, wait_until

FLEET_TOKEN = "test-fleet-token"
EVENT_FIELDS = {
    "event_id", "ts_ms", "request_id", "agent_id", "key_id", "user_id", "user_email", "account",
    "project", "environment", "type", "url", "status", "error", "message", "source_ip",
    "duration_ms", "cost_micros",
}  # fmt: skip
OPTIONAL_EVENT_FIELDS = {"soft_id"}  # only when the client sent one (agent/usage.py)


def _day_of(ts_ms: int) -> str:
    return dt.datetime.fromtimestamp(ts_ms / 1000, dt.UTC).date().isoformat()


class Served:
    """A Flask app on a loopback port in a thread."""

    def __init__(self, app: Flask) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._server = make_server("127.0.0.1", self.port, app, threaded=True)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._thread.join(5)
        self._server.server_close()


class FakeCollector:
    def __init__(self, fleet_token: str = FLEET_TOKEN) -> None:
        self.fleet_token = fleet_token
        self.lock = threading.RLock()
        self.version = 1
        self.prices: dict[str, int] = {}
        self.users: dict[str, dict[str, Any]] = {}
        self.keys: dict[str, dict[str, Any]] = {}
        self.balance_held: dict[tuple[str, str], int] = {}  # (agent, key)
        self.cpm_held: dict[tuple[str, str, int], int] = {}  # (agent, key, window)
        self.cpm_voided: Counter[tuple[str, int]] = Counter()
        self.daily_held: dict[tuple[str, str, str], int] = {}  # (agent, user, day)
        self.daily_used: Counter[tuple[str, str, str]] = Counter()
        self.daily_voided: Counter[tuple[str, str]] = Counter()
        self.events: dict[str, dict[str, Any]] = {}
        self.received: list[str] = []  # every event id posted, duplicates included
        self.duplicates = 0
        self.log: list[tuple[str, dict[str, Any]]] = []  # (endpoint, payload), in order
        self.sync_down = False
        self.sync_status = 503  # what a down sync answers (401: the credential is refused)
        self.sync_extra: dict[str, Any] = {}  # merged into every sync answer (e.g. peers)
        self.usage_down = False
        self.usage_fail_next = 0
        self.usage_status = 503
        self.served: Served | None = None

    # ---- admin side (tests) -----------------------------------------------------------------

    def _bump(self) -> None:
        self.version += 1

    def set_price(self, slug: str, micros: int) -> None:
        with self.lock:
            self.prices[slug] = micros
            self._bump()

    def add_user(self, user_id: str, *, daily_limit: int | None = None, active: bool = True,
                 email: str | None = None, account: str = "acme") -> None:  # fmt: skip
        with self.lock:
            self.users[user_id] = {
                "id": user_id, "email": email or f"{user_id}@example.com", "role": "user",
                "daily_limit": daily_limit, "active": active, "account": account,
            }  # fmt: skip
            self._bump()

    def add_key(self, key_id: str, user_id: str, *, secret: str | None = None,
                balance: int = 10_000_000, allowed_types: list[str] | None = None,
                cpm: int | None = None, ip_allowlist: list[str] | None = None,
                active: bool = True) -> str:  # fmt: skip
        secret = secret or f"sk_test_{key_id}_secret"
        with self.lock:
            if user_id not in self.users:
                self.add_user(user_id)
            self.keys[key_id] = {
                "id": key_id, "secret_hash": hash_secret(secret), "user_id": user_id,
                "account": self.users[user_id]["account"], "project": "web",
                "environment": "prod", "allowed_types": allowed_types, "cpm": cpm,
                "ip_allowlist": ip_allowlist, "active": active, "balance_micros": balance,
            }  # fmt: skip
            self._bump()
        return secret

    def update_key(self, key_id: str, **fields: Any) -> None:
        with self.lock:
            self.keys[key_id].update(fields)
            self._bump()

    def update_user(self, user_id: str, **fields: Any) -> None:
        with self.lock:
            self.users[user_id].update(fields)
            self._bump()

    def topup(self, key_id: str, micros: int) -> None:
        with self.lock:
            self.keys[key_id]["balance_micros"] += micros

    # ---- views (tests) ----------------------------------------------------------------------

    def balance(self, key_id: str) -> int:
        with self.lock:
            return self.keys[key_id]["balance_micros"]

    def leased(self, key_id: str) -> int:
        with self.lock:
            return sum(v for (_, k), v in self.balance_held.items() if k == key_id)

    def calls(self, endpoint: str) -> list[dict[str, Any]]:
        with self.lock:
            return [payload for name, payload in self.log if name == endpoint]

    def successes(self, key_id: str | None = None) -> list[dict[str, Any]]:
        with self.lock:
            return [
                e for e in self.events.values()
                if e["status"] == "success" and key_id in (None, e["key_id"])
            ]  # fmt: skip

    # ---- protocol ---------------------------------------------------------------------------

    def _config(self) -> dict[str, Any]:
        return {
            "prices": dict(self.prices),
            "users": [dict(u) for u in self.users.values()],
            "keys": [dict(k) for k in self.keys.values()],
        }

    def sync(self, body: dict[str, Any]) -> dict[str, Any]:
        agent = body["agent_id"]
        if body.get("reset"):
            self._void(agent)
        grants = [self._grant(agent, item) for item in body.get("leases") or []]
        balances = {}
        for key_id in body.get("watch") or []:
            if key_id in self.keys:
                mine = self.balance_held.get((agent, key_id), 0)
                balances[key_id] = self.keys[key_id]["balance_micros"] - mine
        changed = body.get("config_version") != self.version
        return {
            "config_version": self.version,
            "config": self._config() if changed else None,
            "grants": [g for g in grants if g is not None],
            "balances": balances,
            "server_time": time.time(),
            **self.sync_extra,
        }

    def _void(self, agent: str) -> None:
        for ident in [i for i in self.balance_held if i[0] == agent]:
            del self.balance_held[ident]
        for ident in [i for i in self.cpm_held if i[0] == agent]:
            self.cpm_voided[ident[1], ident[2]] += self.cpm_held.pop(ident)
        for ident in [i for i in self.daily_held if i[0] == agent]:
            del self.daily_held[ident]
            self.daily_voided[ident[1], ident[2]] += self.daily_used.pop(ident, 0)

    @staticmethod
    def _policy(want: int, pool: int, min_unit: int) -> int:
        pool = max(0, pool)
        return max(0, min(want, max(pool // 2, min(pool, min_unit))))

    def _grant(self, agent: str, item: dict[str, Any]) -> dict[str, Any] | None:
        kind = item["kind"]
        if kind == "balance":
            key = self.keys.get(item["key_id"])
            if key is None:
                return None
            ident = (agent, key["id"])
            held = max(0, self.balance_held.get(ident, 0) - int(item.get("return_micros") or 0))
            pool = key["balance_micros"] - sum(
                v for (a, k), v in self.balance_held.items() if k == key["id"] and a != agent
            ) - held  # fmt: skip
            minimum = int(item.get("min_micros") or 0)
            granted = self._policy(int(item.get("want_micros") or 0), pool, minimum)
            if granted < minimum:
                granted = 0
            self.balance_held[ident] = held + granted
            return {"kind": "balance", "key_id": key["id"], "granted_micros": granted,
                    "held_micros": held + granted}  # fmt: skip
        if kind == "cpm":
            key = self.keys.get(item["key_id"])
            if key is None or key["cpm"] is None:
                return None
            window = int(item["window"])
            ident = (agent, key["id"], window)
            used = sum(
                v for (_, k, w), v in self.cpm_held.items() if k == key["id"] and w == window
            )
            pool = key["cpm"] - used - self.cpm_voided[key["id"], window]
            granted = self._policy(int(item.get("want") or 0), pool, 1)
            self.cpm_held[ident] = self.cpm_held.get(ident, 0) + granted
            return {"kind": "cpm", "key_id": key["id"], "window": window, "granted": granted,
                    "held": self.cpm_held[ident]}  # fmt: skip
        if kind == "daily":
            user = self.users.get(item["user_id"])
            if user is None or user["daily_limit"] is None:
                return None
            day = item["day"]
            ident = (agent, user["id"], day)
            held = max(0, self.daily_held.get(ident, 0) - int(item.get("return") or 0))
            others = sum(
                v for (a, u, d), v in self.daily_held.items()
                if u == user["id"] and d == day and a != agent
            )  # fmt: skip
            pool = user["daily_limit"] - others - held - self.daily_voided[user["id"], day]
            granted = self._policy(int(item.get("want") or 0), pool, 1)
            self.daily_held[ident] = held + granted
            return {"kind": "daily", "user_id": user["id"], "day": day, "granted": granted,
                    "held": held + granted}  # fmt: skip
        raise ValueError(f"unknown lease kind {kind!r}")

    def usage(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        events = body.get("events")
        if not isinstance(events, list) or not all(
            isinstance(e, dict) and set(e) - OPTIONAL_EVENT_FIELDS == EVENT_FIELDS for e in events
        ):
            return 400, {"error": "bad_request", "message": "malformed batch"}
        accepted = duplicates = 0
        for event in events:
            self.received.append(event["event_id"])
            if event["event_id"] in self.events:
                duplicates += 1
                continue
            accepted += 1
            self.events[event["event_id"]] = event
            if event["status"] == "success":
                key = self.keys[event["key_id"]]
                key["balance_micros"] -= event["cost_micros"]
                ident = (event["agent_id"], event["key_id"])
                if ident in self.balance_held:
                    self.balance_held[ident] = max(
                        0, self.balance_held[ident] - event["cost_micros"]
                    )
                self.daily_used[event["agent_id"], event["user_id"], _day_of(event["ts_ms"])] += 1
        self.duplicates += duplicates
        return 200, {"accepted": accepted, "duplicates": duplicates}

    def release(self, body: dict[str, Any]) -> dict[str, Any]:
        agent = body["agent_id"]
        returned = []
        for item in body.get("leases") or []:
            if item["kind"] == "balance":
                ident = (agent, item["key_id"])
                amount = min(self.balance_held.get(ident, 0), int(item["return_micros"]))
                self.balance_held[ident] = self.balance_held.get(ident, 0) - amount
                returned.append({**item, "return_micros": amount})
            elif item["kind"] == "daily":
                ident = (agent, item["user_id"], item["day"])
                amount = min(self.daily_held.get(ident, 0), int(item["return"]))
                self.daily_held[ident] = self.daily_held.get(ident, 0) - amount
                returned.append({**item, "return": amount})
        return {"returned": returned}

    # ---- HTTP -------------------------------------------------------------------------------

    def make_app(self) -> Flask:
        app = Flask("fake_collector")

        def guarded(name: str, handler):
            def view():
                auth = request.headers.get("Authorization", "")
                if not tokens_equal(auth.removeprefix("Bearer "), self.fleet_token):
                    return jsonify(error="unauthorized", message="bad fleet token"), 401
                body = request.get_json(silent=True)
                if not isinstance(body, dict) or "agent_id" not in body:
                    return jsonify(error="bad_request", message="body"), 400
                with self.lock:
                    self.log.append((name, body))
                    return handler(body)

            view.__name__ = name
            app.post(f"/agent/v1/{name}")(view)

        def sync(body):
            if self.sync_down:
                return jsonify(error="unavailable", message="down"), self.sync_status
            return jsonify(self.sync(body))

        def usage(body):
            if self.usage_down or self.usage_fail_next > 0:
                self.usage_fail_next = max(0, self.usage_fail_next - 1)
                return jsonify(error="unavailable", message="down"), self.usage_status
            status, answer = self.usage(body)
            return jsonify(answer), status

        guarded("sync", sync)
        guarded("usage", usage)
        guarded("release", lambda body: jsonify(self.release(body)))
        return app

    def start(self) -> str:
        self.served = Served(self.make_app())
        return self.served.url

    @property
    def url(self) -> str:
        assert self.served is not None
        return self.served.url

    def stop(self) -> None:
        if self.served is not None:
            self.served.stop()
            self.served = None


class FakeWorker:
    """``POST /work`` -> ``{"result": ...}``; switches for failure, latency and holding calls.

    Per call, ``params.fake`` may set ``status`` (answer with that code), ``latency`` (s) or
    ``hold`` (wait for ``release()``), so one worker serves every test case.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.arrived = 0
        self.finished = 0
        self.gate = threading.Event()
        self.gate.set()
        self.served: Served | None = None
        app = Flask("fake_worker")

        @app.post("/work")
        def work():
            body = request.get_json(force=True)
            fake = (body.get("params") or {}).get("fake") or {}
            with self.lock:
                self.arrived += 1
            try:
                if fake.get("hold"):
                    self.gate.wait(30)
                if fake.get("latency"):
                    time.sleep(float(fake["latency"]))
                status = int(fake.get("status", 200))
                if status >= 300:
                    return jsonify(error="failed on purpose"), status
                if fake.get("no_result"):
                    return jsonify(nothing=True), 200
                return jsonify(result=f"token-for-{body['type']}"), status
            finally:
                with self.lock:
                    self.finished += 1

        self.app = app

    def hold(self) -> None:
        self.gate.clear()

    def release(self) -> None:
        self.gate.set()

    def start(self) -> str:
        self.served = Served(self.app)
        return self.served.url

    @property
    def url(self) -> str:
        assert self.served is not None
        return self.served.url

    def stop(self) -> None:
        self.release()
        if self.served is not None:
            self.served.stop()
            self.served = None


def usage_event(**overrides: Any) -> dict[str, Any]:
    """One usage event as the agent writes it (key ``k1`` of user ``u1`` unless overridden)."""
    event = {
        "event_id": uuid.uuid4().hex, "ts_ms": int(time.time() * 1000), "request_id": "r",
        "agent_id": "a1", "key_id": "k1", "user_id": "u1", "user_email": None, "account": "acme",
        "project": None, "environment": None, "type": "turnstile", "url": "https://x.test/",
        "status": "success", "error": None, "message": None, "source_ip": "10.0.0.1",
        "duration_ms": 5, "cost_micros": 2000,
    }  # fmt: skip
    event.update(overrides)
    return event


def standard_setup(collector: FakeCollector) -> dict[str, str]:
    """Prices and keys most agent tests use; returns the secrets by key id."""
    collector.set_price("turnstile", 2000)
    collector.set_price("recaptcha-v2", 3000)
    collector.add_user("alice", daily_limit=None)
    collector.add_user("bob", daily_limit=3)
    collector.add_user("carol", active=False)
    return {
        "alice-web": collector.add_key("alice-web", "alice", balance=1_000_000),
        "alice-poor": collector.add_key("alice-poor", "alice", balance=2500),
        "alice-off": collector.add_key("alice-off", "alice", active=False),
        "alice-typed": collector.add_key("alice-typed", "alice", allowed_types=["recaptcha-v2"]),
        "alice-ip": collector.add_key("alice-ip", "alice", ip_allowlist=["10.0.0.0/8"]),
        "alice-cpm": collector.add_key("alice-cpm", "alice", cpm=2),
        "bob-web": collector.add_key("bob-web", "bob"),
        "carol-web": collector.add_key("carol-web", "carol"),
    }


def agent_settings(tmp_path, collector_url: str, worker_url: str = "http://127.0.0.1:9",
                   **overrides: Any):  # fmt: skip
    from solverfleet.agent.settings import AgentSettings

    values: dict[str, Any] = {
        "collector_url": collector_url,
        "fleet_token": FLEET_TOKEN,
        "worker_url": worker_url,
        "agent_id": "test-agent",
        "state_dir": str(tmp_path / "agent-state"),
        "sync_interval": 0.05,
        "worker_timeout": 2.0,
        "drain_grace": 5.0,
        "ship_timeout": 5.0,
        "collector_timeout": 2.0,
    }
    values.update(overrides)
    return AgentSettings(**values)


@pytest.fixture
def fake_collector():
    collector = FakeCollector()
    collector.start()
    yield collector
    collector.stop()


@pytest.fixture
def fake_worker():
    worker = FakeWorker()
    worker.start()
    yield worker
    worker.stop()


@pytest.fixture
def agent_app(tmp_path, fake_collector, fake_worker):
    """An in-process agent app on the standard setup, ready: ``(app, secrets by key id)``."""
    secrets = standard_setup(fake_collector)
    app = create_agent(agent_settings(tmp_path, fake_collector.url, fake_worker.url))
    client = app.test_client()
    wait_until(lambda: client.get("/readyz").status_code == 200, timeout=10, what="agent ready")
    yield app, secrets
    agent = agent_of(app)
    agent.shutdown(drain_grace=0, ship_timeout=1)
    agent.close()
