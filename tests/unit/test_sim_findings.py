"""Unit-level regressions for the fleet simulator's findings (issue 19; tests/sim/README.md).
Findings 2 and 3, fixed: each failed before its fix."""

from __future__ import annotations

from solverfleet.agent.limiter import Hold, Limiter, Refusal
from tests.unit.test_agent_limiter import NOW, admit, balance_grant, make_snap

WINDOW = int(NOW // 60)


def cpm_grant(tokens: int, held: int | None = None) -> dict:
    held = tokens if held is None else held
    return {"kind": "cpm", "key_id": "k", "window": WINDOW, "granted": tokens, "held": held}


def test_a_reclaimed_cpm_lease_is_not_the_offline_fallback() -> None:
    """A lease the collector answered and then reclaimed, followed by a failed sync, must not
    fall back to enforcing the whole ceiling on this agent alone."""
    snap, limiter = make_snap(cpm=6, balance_micros=100_000), Limiter()
    assert isinstance(admit(limiter, snap), Refusal)  # demand: the leases are asked for
    limiter.lease_requests(snap, NOW, 60.0)
    limiter.apply_grants([balance_grant(20_000), cpm_grant(2)])  # answered
    assert isinstance(admit(limiter, snap), Hold)
    assert isinstance(admit(limiter, snap), Hold)  # both tokens used
    limiter.reclaim([{"kind": "cpm", "key_id": "k", "window": WINDOW}])
    limiter.lease_requests(snap, NOW + 0.05, 60.0)  # the handback's sync ...
    limiter.sync_failed()  # ... is lost: the fleet loop is offline now
    assert isinstance(admit(limiter, snap, now=NOW + 0.1, offline=True), Refusal)


def test_a_reclaim_order_survives_a_lost_answer(tmp_path) -> None:
    """A daily limit lowered while an agent holds tokens orders a reclaim; the answer that
    carries the order is lost. The agent's next sync must still carry the order (or its lease
    must no longer hold the tokens): otherwise it keeps them under the lowered limit."""
    from tests.support.collector import key_config, make_app, sqlite_url, team_config
    from tests.support.collector import user_config as user

    h = make_app(sqlite_url(tmp_path / "c.db"))
    try:
        config = team_config([user("alice", [key_config("alice-web")], daily_limit=15)])
        h.apply(config)
        day = h.sync("a1")["server_time"]  # any sync: the collector's clock
        day_s = _day(day)
        lease = {"kind": "daily", "user_id": "alice", "day": day_s, "want": 3, "return": 0}
        grant = h.sync("a1", [lease])["grants"][0]
        assert grant["held"] == 3
        config["users"][0]["daily_limit"] = 3
        h.apply(config)
        lost = h.sync("a1")  # this answer never reaches the agent
        assert lost["reclaim"], "the limit change orders a reclaim"
        again = h.sync("a1")
        held = h.db.read(
            lambda tx: tx.all("SELECT granted - used FROM lease_daily WHERE agent_id = 'a1'")
        )
        assert again["reclaim"] or not any(int(r[0]) for r in held)
    finally:
        h.db.close()


def _day(unix: float) -> str:
    from solverfleet.agent.leases import day_str

    return day_str(int(unix // 86400))
