"""A deterministic fleet simulator: N agents running the real agent lease code (Limiter with its
negotiation, Spool, Shipper, FleetLoop rounds) and the real collector Flask app (SQLite, fake
clock), joined by a simulated network that drops requests, drops answers after the collector
applied them, duplicates and delays usage batches, and partitions agents. No threads: every
step is a call the scheduler makes, so a schedule (a list of ops) replays exactly.

The invariants (checked after every op, and at quiescence) are in ``Sim.check_*``; see
tests/sim/README.md for the bounds they use.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import random
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from solverfleet.agent import precheck, solvepath
from solverfleet.agent.fleetclient import CollectorError
from solverfleet.agent.keystore import KeyStore
from solverfleet.agent.limiter import Limiter
from solverfleet.agent.settings import AgentSettings
from solverfleet.agent.shipper import Shipper
from solverfleet.agent.spool import Spool
from solverfleet.agent.sync import FleetLoop
from solverfleet.collector import refill
from tests.support.collector import FakeClock, make_app, sqlite_url

PRICE = 2000  # turnstile, micros
TTL = 120.0
SYNC = 0.25  # agent sync_interval
GRACE = 60.0  # agent offline_grace
# key -> (user, opening micros, cpm); user -> daily limit. Small, so pools run dry and leases
# are contended (reclaims, starvation, limits all get exercised).
KEYS = {"k0": ("u0", 50_000, 6), "k1": ("u0", 30_000, None), "k2": ("u1", 40_000, None)}
USERS = {"u0": 15, "u1": 8}
STRICT_OFFLINE = os.environ.get("SIM_STRICT_OFFLINE", "") not in ("", "0")
CPM_CHOICES = [None, 2, 4, 6, 12]
DAILY_CHOICES = [None, 3, 6, 10, 20]


class SimFailure(AssertionError):
    pass


def check(cond: bool, message: str) -> None:
    if not cond:
        raise SimFailure(message)


@dataclass
class Call:
    decision: precheck.Decision
    key: str
    user: str
    day: int


@dataclass
class Stats:
    steps: int = 0
    calls: int = 0
    admitted: int = 0
    successes: int = 0
    failures: int = 0
    refusals: dict[str, int] = field(default_factory=dict)
    faults: dict[str, int] = field(default_factory=dict)
    rounds: int = 0
    probes: int = 0
    false_refusals: int = 0
    fallback_admits: int = 0
    revocation_checks: int = 0  # calls checked against a deactivation 2+ syncs old

    def fault(self, kind: str) -> None:
        self.faults[kind] = self.faults.get(kind, 0) + 1


class SimNet:
    """The transport one agent's FleetClient would be: posts into the collector's test client.
    ``faults`` (set by the op driving a round) are the chances of each fault per request."""

    def __init__(self, sim: Sim, agent_id: str) -> None:
        self.sim = sim
        self.agent_id = agent_id
        self.faults: dict[str, float] = {}
        self.rng = random.Random(0)
        self.partitioned = False

    def post(self, path: str, payload: dict[str, Any], timeout: float | None = None) -> Any:
        sim = self.sim
        if self.partitioned:
            sim.stats.fault("partitioned_request")
            raise CollectorError("partitioned")
        if sim.outage:  # the collector (or its database) is down: 503, nothing applied
            sim.stats.fault("outage_request")
            raise CollectorError("503 Service Unavailable", 503)
        body = json.loads(json.dumps(payload))  # what goes over the wire
        roll = self.rng.random
        if roll() < self.faults.get("drop_request", 0):
            sim.stats.fault("drop_request")
            raise CollectorError("request lost")
        kind = path.rsplit("/", 1)[1]
        if roll() < self.faults.get("delay", 0):
            sim.stats.fault("delay_" + kind)
            sim.delayed.append((path, body))  # arrives later, after the agent gave up on it
            raise CollectorError("timed out")
        answer = sim.deliver(path, body)
        if roll() < self.faults.get("duplicate", 0):
            sim.stats.fault("duplicate_" + kind)  # a retry by a proxy: the agent hears one
            answer = sim.deliver(path, body)
        if roll() < self.faults.get("drop_answer", 0):
            sim.stats.fault("drop_answer_" + kind)
            if isinstance(answer, dict) and answer.get("reclaim"):
                sim.stats.fault("reclaim_order_lost")  # finding 3: never sent again
            raise CollectorError("answer lost")
        return answer


class SimAgent:
    def __init__(self, sim: Sim, index: int) -> None:
        self.sim = sim
        self.id = f"a{index}"
        self.dir = sim.tmp / self.id
        self.net = SimNet(sim, self.id)
        self.settings = AgentSettings(
            collector_url="http://collector.sim",
            fleet_token="fleet-token",
            agent_id=self.id,
            state_dir=str(self.dir),
            sync_interval=SYNC,
            offline_grace=GRACE,
        )
        self.up = False
        self.incarnation = 0
        self.ok_syncs = 0  # answers this agent applied (across restarts)
        self.in_flight: list[Call] = []
        self.start()

    def start(self) -> None:
        self.incarnation += 1
        self.spool = Spool(self.dir / "spool")
        self.limiter = Limiter(
            lease_calls=self.settings.lease_calls, lease_seconds=self.settings.lease_seconds
        )
        self.keystore = KeyStore()
        self.shipper = Shipper(self.spool, self.net, self.limiter, self.id, batch=7)
        self.loop = FleetLoop(
            self.settings,
            self.net,  # type: ignore[arg-type]
            self.keystore,
            self.limiter,
            self.shipper,
            f"{int(self.sim.clock() * 1000):013d}-{self.id}-{self.incarnation}",
            stats=lambda: {"in_flight": len(self.in_flight), "spool_backlog": self.spool.pending},
            clock=self.sim.clock,
            monotonic=self.sim.clock,
        )
        self.up = True

    def stop(self) -> None:
        """A graceful stop (``Agent.shutdown``), its calls already finished: ship the spool,
        return the leases (either may fail under faults), keep the spool directory."""
        try:
            for _ in range(50):  # bounded: 7 events a batch
                if self.shipper.ship_batch(None) == 0:
                    break
            self.sim.stats.fault("release" if self.loop.release(5.0) else "release_empty")
        except CollectorError:
            self.sim.stats.fault("release_failed")
        self.spool.close()
        self.up = False

    def crash(self) -> None:
        """kill -9: memory (leases, holds, in-flight calls) gone, the spool directory kept."""
        self.spool.close()
        self.in_flight.clear()  # their clients got a broken connection; nothing is charged
        self.up = False

    def round(self) -> bool:
        if not self.up:
            return False
        self.sim.stats.rounds += 1
        before = self.loop.rounds_done
        ok = self.loop.run_once()
        assert self.loop.rounds_done == before + 1
        return ok

    def ready(self) -> bool:
        loop = self.loop
        if self.keystore.snapshot is None or not loop.reset_done or loop.last_ok is None:
            return False
        return self.sim.clock() - loop.last_ok <= GRACE


class Sim:
    def __init__(self, agents: int = 3) -> None:
        shm = "/dev/shm" if Path("/dev/shm").is_dir() else None
        self.tmp = Path(tempfile.mkdtemp(prefix="sf-sim-", dir=shm))
        self.clock = FakeClock()
        self.db_url = sqlite_url(self.tmp / "collector.db")
        self.h = make_app(self.db_url, self.clock, lease_ttl=TTL)
        self.stats = Stats()
        self.delayed: list[tuple[str, dict]] = []
        self.outage = False
        # the model
        self.cpm = {k: c for k, (_, _, c) in KEYS.items()}
        self.daily = dict(USERS)
        self.key_active = {k: True for k in KEYS}
        self.user_active = {u: True for u in USERS}
        self.funded = {k: opening for k, (_, opening, _) in KEYS.items()}  # opening + top-ups
        self.succeeded: dict[str, str] = {}  # event id -> key
        self.failed: set[str] = set()
        self.admits: dict[tuple[str, int], int] = {}  # (key, window) -> calls admitted
        self.success_day: dict[tuple[str, int], int] = {}  # (user, day) -> successes
        # limit changes: per key / user, the change number; per agent, the number it has seen
        self.cpm_change = {k: 0 for k in KEYS}
        self.daily_change = {u: 0 for u in USERS}
        self.cpm_base: dict[tuple[str, int], int] = {}
        # Calls of the minute admitted before a ceiling was set where there was none: never
        # recorded, so the ceiling (and any later one in the minute) counts on top of them.
        self.cpm_unlimited: dict[tuple[str, int], int] = {}
        self.daily_base: dict[tuple[str, int], int] = {}
        self.cpm_slack: dict[tuple[str, int], int] = {}
        self.daily_slack: dict[tuple[str, int], int] = {}
        self.off_since: dict[tuple[str, str], dict[str, int]] = {}  # ("key"|"user", id) -> ok_syncs
        # Key expiry (unix s) and each agent's ok_syncs when it was set; refill amounts (micros).
        self.expires: dict[str, float | None] = {k: None for k in KEYS}
        self.expiry_since: dict[str, dict[str, int]] = {}
        self.refill: dict[str, int | None] = {k: None for k in KEYS}
        self.max_overshoot = {"cpm": 0, "daily": 0}
        self.crash_windows: set[int] = set()
        self.ids = random.Random(1)
        self.strict_probe = False
        self.strict_offline = STRICT_OFFLINE
        self.h.apply(self.team_config())
        self.agents = [SimAgent(self, i) for i in range(agents)]
        self.seen_change: dict[str, dict[str, int]] = {
            a.id: {**self.cpm_change, **self.daily_change} for a in self.agents
        }

    def close(self) -> None:
        for agent in self.agents:
            if agent.up:
                agent.spool.close()
        self.h.db.close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    # ---- collector side -------------------------------------------------------------------

    def team_config(self) -> dict:
        users = []
        for u, limit in self.daily.items():
            keys = [
                {
                    "id": k,
                    "secret": f"sk_test_{k}_secret",
                    "project": None,
                    "environment": None,
                    "balance": f"{opening / 1e6:.6f}",
                    "allowed_types": None,
                    "cpm": self.cpm[k],
                    "ip_allowlist": None,
                    "active": self.key_active[k],
                    "expires_at": _iso(self.expires[k]),
                    "refill": _refill_config(self.refill[k]),
                }
                for k, (owner, opening, _) in KEYS.items()
                if owner == u
            ]
            users.append(
                {
                    "id": u,
                    "email": f"{u}@example.com",
                    "role": "user",
                    "daily_limit": limit,
                    "active": self.user_active[u],
                    "keys": keys,
                }
            )
        return {
            "account": "acme",
            "low_balance_alert": None,
            "prices": {"turnstile": "0.002"},
            "users": users,
        }

    def deliver(self, path: str, body: dict) -> Any:
        response = self.h.agent("POST", path, json=body)
        if response.status_code != 200:
            raise CollectorError(f"{path}: {response.status_code}", response.status_code)
        return response.get_json()

    def deliver_delayed(self) -> None:
        """Requests held up in the network arrive, in a shuffled order; their answers reach
        nobody (the agents gave up on them). A refusal (a stale request) is fine."""
        pending, self.delayed = self.delayed, []
        random.Random(len(pending)).shuffle(pending)
        for path, body in pending:
            try:
                self.deliver(path, body)
            except CollectorError:
                self.stats.fault("late_request_refused")

    def admin(self, method: str, path: str, **kw: Any) -> dict:
        response = self.h.admin(method, path, **kw)
        check(response.status_code == 200, f"admin {method} {path}: {response.get_json()}")
        return response.get_json()

    def restart_collector(self) -> None:
        self.h.db.close()
        self.h = make_app(self.db_url, self.clock, lease_ttl=TTL)

    def applied(self, agent: SimAgent) -> None:
        """The agent applied a sync answer: from now on it knows every earlier change."""
        agent.ok_syncs += 1
        self.seen_change[agent.id] = {**self.cpm_change, **self.daily_change}

    # ---- the model's views ----------------------------------------------------------------

    def in_flight(self, key: str | None = None, user: str | None = None) -> int:
        return sum(
            1
            for a in self.agents
            for c in a.in_flight
            if (key is None or c.key == key) and (user is None or c.user == user)
        )

    def spent(self, key: str) -> int:
        return PRICE * sum(1 for k in self.succeeded.values() if k == key)

    # ---- invariants -----------------------------------------------------------------------

    def check_step(self) -> None:
        summary = self.h.summary()["keys"]
        for k in KEYS:
            floor = -self.in_flight(key=k) * PRICE
            model = self.funded[k] - self.spent(k)
            check(model >= floor, f"{k}: spent past the balance: model balance {model} < {floor}")
            stored = summary[k]["balance_micros"]
            check(stored >= floor, f"{k}: collector balance {stored} < {floor}")
            check(
                stored >= model,
                f"{k}: collector charged more than the successes: {stored} < {model}",
            )

    def check_quiescent(self) -> None:
        rows = self.h.db.read(
            lambda tx: tx.all("SELECT event_id, status, cost_micros, key_id FROM usage_events")
        )
        ids = [r[0] for r in rows]
        check(len(ids) == len(set(ids)), "an event id stored twice")
        success = {r[0] for r in rows if r[1] == "success"}
        failed = {r[0] for r in rows if r[1] != "success"}
        check(
            success == set(self.succeeded),
            f"usage records != client successes: "
            f"missing {sorted(set(self.succeeded) - success)[:3]}, "
            f"extra {sorted(success - set(self.succeeded))[:3]}",
        )
        check(not (success & self.failed), "usage charged for a failed call")
        check(failed == self.failed, "failed calls' events not all stored")
        summary = self.h.summary()["keys"]
        for k in KEYS:
            want = self.funded[k] - self.spent(k)
            got = summary[k]["balance_micros"]
            check(got == want, f"{k}: balance {got} != opening+topups-successes*price {want}")

    def note_admit(self, agent: SimAgent, key: str, user: str, now: float) -> None:
        window, day = int(now // 60), int(now // 86400)
        self.admits[key, window] = self.admits.get((key, window), 0) + 1
        seen = self.seen_change[agent.id]
        if seen.get(key, 0) < self.cpm_change[key]:
            self.cpm_slack[key, window] = self.cpm_slack.get((key, window), 0) + 1
        if seen.get(user, 0) < self.daily_change[user]:
            self.daily_slack[user, day] = self.daily_slack.get((user, day), 0) + 1
        # Admitted on the offline fallback (the last sync failed and the lease was never
        # answered, or a reclaim cleared `answered`): the agent enforces the whole ceiling
        # alone. Finding 3: counted as slack unless SIM_STRICT_OFFLINE=1.
        if not agent.loop.online:
            lease = agent.limiter.cpm.get((key, window))
            if self.cpm[key] is not None and lease is not None and not lease.answered:
                self.stats.fallback_admits += 1
                if not self.strict_offline:
                    self.cpm_slack[key, window] = self.cpm_slack.get((key, window), 0) + 1
            lease = agent.limiter.daily.get((user, day))
            if self.daily[user] is not None and lease is not None and not lease.answered:
                self.stats.fallback_admits += 1
                if not self.strict_offline:
                    self.daily_slack[user, day] = self.daily_slack.get((user, day), 0) + 1
        cap = self.cpm[key]
        if cap is not None:
            count = self.admits[key, window]
            offset = self.cpm_unlimited.get((key, window), 0)
            bound = max(cap + offset, self.cpm_base.get((key, window), 0))
            over = count - bound
            self.max_overshoot["cpm"] = max(self.max_overshoot["cpm"], over)
            check(
                over <= self.cpm_slack.get((key, window), 0),
                f"{key}: {count} calls admitted in minute {window}, limit {cap} "
                f"(base {bound}, slack {self.cpm_slack.get((key, window), 0)})",
            )

    def note_success(self, user: str, day: int) -> None:
        self.success_day[user, day] = self.success_day.get((user, day), 0) + 1
        limit = self.daily[user]
        if limit is None or day != int(self.clock() // 86400):
            return  # a call admitted yesterday counts on yesterday's lease, under its limit
        count = self.success_day[user, day]
        bound = max(limit, self.daily_base.get((user, day), 0))
        over = count - bound
        self.max_overshoot["daily"] = max(self.max_overshoot["daily"], over)
        check(
            over <= self.daily_slack.get((user, day), 0),
            f"{user}: {count} successes on day {day}, daily limit {limit} (base {bound}, "
            f"slack {self.daily_slack.get((user, day), 0)})",
        )

    # ---- client side ----------------------------------------------------------------------

    def call(self, agent: SimAgent, key: str, waits: int) -> precheck.Decision | None:
        """A client call to ``agent``: admission as solvepath.admit_waiting does it, a wait
        being one fleet-loop round of this agent (``waits`` of them at most)."""
        if not agent.up:
            return None
        self.stats.calls += 1
        user = KEYS[key][0]
        if not agent.ready():
            self.refused("not_ready")
            return None
        snap = agent.keystore.snapshot
        assert snap is not None
        secret = f"sk_test_{key}_secret"
        while True:
            now = self.clock()
            auth = precheck.authenticate(snap, secret, now)
            if isinstance(auth, precheck.Decision):
                decision = auth
                break
            decision = precheck.admit(
                snap,
                agent.limiter,
                auth[0],
                auth[1],
                "turnstile",
                "203.0.113.9",
                now,
                offline=not agent.loop.online,
                allowance=0,
            )
            if decision.allowed or not decision.wait or waits <= 0:
                break
            waits -= 1
            self.clock.advance(0.05)
            self.agent_round(agent)
            if not agent.up or not agent.ready():
                break
            snap = agent.keystore.snapshot
        self.check_revoked(agent, key, user, decision)
        if not decision.allowed:
            self.refused(decision.code or "?")
            return decision
        self.stats.admitted += 1
        now = self.clock()
        self.note_admit(agent, key, user, now)
        agent.in_flight.append(Call(decision, key, user, int(now // 86400)))
        return decision

    def check_revoked(self, agent: SimAgent, key: str, user: str, decision) -> None:
        expires, since = self.expires[key], self.expiry_since.get(key) or {}
        known = agent.ok_syncs - since.get(agent.id, agent.ok_syncs) >= 2
        if expires is not None and self.clock() >= expires and known:
            self.stats.revocation_checks += 1
            check(
                not decision.allowed,
                f"{agent.id}: key {key} expired, known for "
                f"{agent.ok_syncs - since[agent.id]} syncs, call answered "
                f"{decision.code or 'allowed'}",
            )
        for scope, ident in (("key", key), ("user", user)):
            since = self.off_since.get((scope, ident))
            if since is None or agent.ok_syncs - since.get(agent.id, 0) < 2:
                continue
            self.stats.revocation_checks += 1
            check(
                # key_expired comes before user_disabled in the pre-check's order
                decision.code in ("key_disabled", "user_disabled", "key_expired"),
                f"{agent.id}: {scope} {ident} deactivated {agent.ok_syncs - since[agent.id]} "
                f"syncs ago, call answered {decision.code or 'allowed'}",
            )

    def refused(self, code: str) -> None:
        self.stats.refusals[code] = self.stats.refusals.get(code, 0) + 1

    def finish(self, agent: SimAgent, index: int, ok: bool) -> None:
        if not agent.up or not agent.in_flight:
            return
        call = agent.in_flight.pop(index % len(agent.in_flight))
        event = solvepath.usage_event(
            agent.id,
            call.decision,
            request_id=f"r{self.ids.getrandbits(32):08x}",
            slug="turnstile",
            url="https://example.com/",
            ok=ok,
            error=None if ok else "worker_error",
            message=None,
            source_ip="203.0.113.9",
            duration_ms=100,
        )
        event["event_id"] = f"{self.ids.getrandbits(128):032x}"
        event["ts_ms"] = int(self.clock() * 1000)
        agent.spool.append(event)
        hold = call.decision.hold
        assert hold is not None
        if ok:
            agent.limiter.commit(hold)
            self.succeeded[event["event_id"]] = call.key
            self.stats.successes += 1
            self.note_success(call.user, call.day)
        else:
            agent.limiter.release(hold)
            self.failed.add(event["event_id"])
            self.stats.failures += 1

    def agent_round(self, agent: SimAgent) -> bool:
        ok = agent.round()  # True: the sync answer was applied
        if ok:
            self.applied(agent)
        return ok

    # ---- admin side -----------------------------------------------------------------------

    def set_cpm(self, key: str, cpm: int | None) -> None:
        if cpm == self.cpm[key]:
            return
        window = int(self.clock() // 60)
        base = self.admits.get((key, window), 0)
        if self.cpm[key] is None and cpm is not None:
            # A key without a ceiling has nothing recorded (ARCHITECTURE "Protocol details"):
            # a ceiling set mid-minute counts from the change, not from the minute's start.
            self.cpm_unlimited[key, window] = base
            base += cpm
        self.cpm_base[key, window] = max(self.cpm_base.get((key, window), 0), base)
        self.admin("PATCH", f"/admin/v1/keys/{key}", json={"cpm": cpm})
        self.cpm[key] = cpm
        self.cpm_change[key] += 1

    def set_daily(self, user: str, limit: int | None) -> None:
        if limit == self.daily[user]:
            return
        day = int(self.clock() // 86400)
        base = self.success_day.get((user, day), 0) + self.in_flight(user=user)
        if self.daily[user] is None and limit is not None:
            # Calls in flight (and successes not yet shipped) were admitted without a lease:
            # nothing recorded them, so the collector cannot count them yet. As for CPM, a
            # limit set where there was none is held from the change on.
            base += limit
        self.daily_base[user, day] = max(self.daily_base.get((user, day), 0), base)
        self.daily[user] = limit
        self.h.apply(self.team_config())
        self.daily_change[user] += 1

    def set_active(self, scope: str, ident: str, active: bool) -> None:
        table = self.key_active if scope == "key" else self.user_active
        if table[ident] == active:
            return
        verb = "activate" if active else "deactivate"
        self.admin("POST", f"/admin/v1/{scope}s/{ident}/{verb}")
        table[ident] = active
        if active:
            self.off_since.pop((scope, ident), None)
        else:
            self.off_since[scope, ident] = {a.id: a.ok_syncs for a in self.agents}

    def set_expiry(self, key: str, seconds: float | None) -> None:
        """Expire ``key`` ``seconds`` from now (None: never). Agents refuse it by their own
        clock once they have the snapshot that says so."""
        at = None if seconds is None else int(self.clock() + seconds)
        self.admin("PATCH", f"/admin/v1/keys/{key}", json={"expires_at": _iso(at)})
        self.expires[key] = at
        self.expiry_since[key] = {a.id: a.ok_syncs for a in self.agents}

    def set_refill(self, key: str, micros: int | None) -> None:
        self.admin("PATCH", f"/admin/v1/keys/{key}", json={"refill": _refill_config(micros)})
        self.refill[key] = micros

    def run_refills(self) -> None:
        """The collector's refill pass at the simulated time (its thread is off in tests):
        credits count as funding, like top-ups."""
        for done in refill.Refiller(self.h.db).run_once(int(self.clock() * 1000)):
            self.funded[done["key"]] += int(done["credited"])
            if done["credited"]:
                self.stats.fault("refill")

    def topup(self, key: str, micros: int) -> None:
        self.admin(
            "POST",
            f"/admin/v1/keys/{key}/topup",
            json={"amount": f"{micros / 1e6:.6f}", "reason": "sim"},
        )
        self.funded[key] += micros

    # ---- refusal probe: promise 10 ------------------------------------------------------

    def room(self, key: str) -> bool:
        """Whether the model says the fleet can afford one more call of ``key`` now."""
        user = KEYS[key][0]
        expires = self.expires[key]
        if expires is not None and self.clock() >= expires - 1:
            return False  # expired (or about to: agents' clocks decide)
        if not (self.key_active[key] and self.user_active[user]):
            return False
        now = self.clock()
        window, day = int(now // 60), int(now // 86400)
        if self.funded[key] - self.spent(key) - self.in_flight(key=key) * PRICE < PRICE:
            return False
        cap = self.cpm[key]
        if cap is not None:
            if window in self.crash_windows or window - 1 in self.crash_windows:
                return False  # a crashed agent's CPM tokens stay spent until the minute ends
            if self.admits.get((key, window), 0) >= cap:
                return False
        limit = self.daily[user]
        used = self.success_day.get((user, day), 0) + self.in_flight(user=user)
        return limit is None or used < limit


def _iso(unix: float | None) -> str | None:
    if unix is None:
        return None
    return dt.datetime.fromtimestamp(unix, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _refill_config(micros: int | None) -> dict | None:
    return None if micros is None else {"amount": f"{micros / 1e6:.6f}", "interval": "daily"}
