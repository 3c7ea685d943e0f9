"""Model-based test of the lease ledger: random syncs, spends, returns, resets, top-ups,
silent agents (quarantined, then forgotten); after every step the collector agrees with a
simple model and Σ held ≤ balance for every key (promise 3: bounded overdraft, fleet-wide)."""

from __future__ import annotations

import tempfile
import uuid
from pathlib import Path

from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from solverfleet.collector import accounts, ingest, leases
from solverfleet.collector.protocol import LeaseRequest, SyncRequest
from tests.support.collector import FakeClock, key_config, make_app, sqlite_url, team_config
from tests.support.collector import user_config as user

KEYS = ["k0", "k1"]
AGENTS = ["a0", "a1", "a2"]
COST = 1000
TTL = 120


class LeaseLedger(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        # tmpfs when there is one: hundreds of tiny transactions, each an fsync on disk
        shm = "/dev/shm" if Path("/dev/shm").is_dir() else None
        self.tmp = tempfile.TemporaryDirectory(prefix="sf-model-", dir=shm)
        self.clock = FakeClock()
        self.h = make_app(sqlite_url(Path(self.tmp.name) / "m.db"), self.clock, lease_ttl=TTL)
        keys = [key_config(k, balance="0.05") for k in KEYS]
        self.h.apply(team_config([user("u", keys)]))
        self.balance = {k: 50_000 for k in KEYS}
        self.held = {(a, k): 0 for a in AGENTS for k in KEYS}  # what each agent believes
        self.last_seen = {a: self.clock() for a in AGENTS}
        self.incarnation: dict[str, int] = {}

    def teardown(self) -> None:
        self.h.db.close()
        self.tmp.cleanup()

    def _sync(self, agent: str, requests: list[LeaseRequest], reset: bool = False) -> None:
        if reset:  # a new process: a new instance (a process resets once)
            self.incarnation[agent] = self.incarnation.get(agent, 0) + 1
        instance = f"{agent}-{self.incarnation.get(agent, 0)}"
        req = SyncRequest(agent, instance, None, reset, None, requests)
        result = leases.sync_leases(self.h.db, req, now_ms=self.h.state.now_ms(), ttl_ms=TTL * 1000)
        self.last_seen[agent] = self.clock()
        if reset:
            for k in KEYS:
                self.held[(agent, k)] = 0
        for grant in result["grants"]:
            self.held[(agent, grant["key_id"])] = grant["held_micros"]

    @rule(
        agent=st.sampled_from(AGENTS),
        key=st.sampled_from(KEYS),
        want=st.integers(0, 60_000),
        min_unit=st.sampled_from([0, 1000, 5000]),
        give_back=st.integers(0, 30_000),
    )
    def sync(self, agent: str, key: str, want: int, min_unit: int, give_back: int) -> None:
        self._sync(
            agent,
            [
                LeaseRequest(
                    "balance", key_id=key, want=want, min_unit=min_unit, give_back=give_back
                )
            ],
        )

    @rule(agent=st.sampled_from(AGENTS), key=st.sampled_from(KEYS), n=st.integers(1, 8))
    def spend(self, agent: str, key: str, n: int) -> None:
        n = min(n, self.held[(agent, key)] // COST)  # an agent spends only from its lease
        if not n:
            return
        events = [
            {
                "event_id": uuid.uuid4().hex,
                "ts_ms": self.h.state.now_ms(),
                "key_id": key,
                "user_id": "u",
                "agent_id": agent,
                "status": "success",
                "cost_micros": COST,
            }
            for _ in range(n)
        ]
        rows = ingest.parse_batch({"agent_id": agent, "events": events})[1]
        assert ingest.ingest(self.h.db, rows, now_ms=0).accepted == n
        assert ingest.ingest(self.h.db, rows, now_ms=0).accepted == 0  # a replay
        self.held[(agent, key)] -= n * COST
        self.balance[key] -= n * COST

    @rule(agent=st.sampled_from(AGENTS))
    def restart(self, agent: str) -> None:
        self._sync(agent, [], reset=True)

    @rule(agent=st.sampled_from(AGENTS))
    def forget(self, agent: str) -> None:
        """An operator forgets an agent: refused while it synced within the TTL."""
        now_ms, silent = self.h.state.now_ms(), self.clock() - self.last_seen[agent] > TTL
        try:
            done = leases.forget(self.h.db, agent, now_ms=now_ms, ttl_ms=TTL * 1000)
        except leases.AgentAlive:
            assert not silent
            return
        assert silent or done is None
        for k in KEYS:
            self.held[(agent, k)] = 0

    @rule(key=st.sampled_from(KEYS), amount=st.integers(1, 20_000))
    def topup(self, key: str, amount: int) -> None:
        accounts.topup(self.h.db, key, amount, "model", now_ms=0)
        self.balance[key] += amount

    @rule(seconds=st.sampled_from([1, 30, 90, 121]))
    def time_passes(self, seconds: int) -> None:
        self.clock.advance(seconds)

    @invariant()
    def collector_agrees(self) -> None:
        summary = self.h.summary()["keys"]
        rows = self.h.db.read(
            lambda tx: tx.all("SELECT agent_id, key_id, held_micros FROM lease_balance")
        )
        db_held = {(a, k): int(v) for a, k, v in rows}
        for k in KEYS:
            assert summary[k]["balance_micros"] == self.balance[k]
            assert 0 <= summary[k]["leased_micros"] <= self.balance[k]
            for a in AGENTS:
                assert db_held.get((a, k), 0) == self.held[(a, k)]


LeaseLedger.TestCase.settings = settings(
    max_examples=25,
    stateful_step_count=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    # No shrinking: it replays hundreds of database-backed runs; a failure prints its steps.
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
)
TestLeaseLedger = LeaseLedger.TestCase
