"""/metrics on the agent and the collector: what is counted, gauges read at scrape time, and
who may scrape. Counters are process-wide (shared by every app of this process): deltas."""

from __future__ import annotations

import pytest

from solverfleet.agent import agent_of
from solverfleet.agent import create_app as create_agent
from solverfleet.collector import metrics as cmetrics
from solverfleet.collector.store import Database
from solverfleet.process import wait_until
from tests.support.collector import event, make_app, sqlite_url
from tests.support.fake_collector import (  # noqa: F401
    agent_settings,
    fake_collector,
    fake_worker,
    standard_setup,
)

pytest_plugins = ["tests.support.collector"]
BODY = {"type": "turnstile", "url": "https://shop.example/", "params": {}}
FORWARDED = {"X-Forwarded-For": "203.0.113.9"}


def scrape(app, **kwargs) -> dict[tuple[str, tuple], float]:
    """``{(name, sorted label pairs): value}`` from the app's /metrics."""
    from prometheus_client.parser import text_string_to_metric_families

    resp = app.test_client().get("/metrics", **kwargs)
    assert resp.status_code == 200, resp.get_data(as_text=True)
    assert resp.mimetype == "text/plain"
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(resp.get_data(as_text=True))
        for s in family.samples
    }


def value(samples, name, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.fixture
def agent_env(tmp_path, fake_collector, fake_worker):  # noqa: F811
    secrets = standard_setup(fake_collector)
    app = create_agent(agent_settings(tmp_path, fake_collector.url, fake_worker.url))
    client = app.test_client()
    wait_until(lambda: client.get("/readyz").status_code == 200, timeout=10, what="agent ready")
    yield app, secrets, fake_collector
    agent = agent_of(app)
    agent.shutdown(drain_grace=0, ship_timeout=1)
    agent.close()


def _bare_agent(tmp_path, name, **overrides):
    settings = agent_settings(tmp_path / name, "http://127.0.0.1:9", **overrides)
    return create_agent(settings, start_background=False)


# ---- agent ---------------------------------------------------------------------------------


def test_agent_counts_solves_by_type_and_status(agent_env):
    app, secrets, _ = agent_env
    client = app.test_client()
    ok = {"Authorization": f"Bearer {secrets['alice-web']}"}
    before = scrape(app)
    assert client.post("/solve", json=BODY, headers=ok).status_code == 200
    assert client.post("/solve", json=BODY, headers=ok).status_code == 200
    failing = {**BODY, "params": {"fake": {"status": 500}}}
    assert client.post("/solve", json=failing, headers=ok).status_code == 502
    poor = {"Authorization": f"Bearer {secrets['alice-off']}"}
    assert client.post("/solve", json=BODY, headers=poor).status_code == 403  # refused
    after = scrape(app)

    def delta(name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("solverfleet_agent_solves_total", type="turnstile", status="success") == 2
    assert delta("solverfleet_agent_solves_total", type="turnstile", status="failed") == 1
    assert delta("solverfleet_agent_solve_seconds_count", type="turnstile") == 3
    # A refusal is no solve; it shows in the request counter by status code.
    assert delta("solverfleet_agent_http_requests_total", endpoint="agent.solve", code="403") == 1
    assert delta("solverfleet_agent_http_requests_total", endpoint="agent.solve", code="200") == 2


def test_agent_state_gauges_are_read_when_scraped(agent_env):
    app, secrets, _ = agent_env
    agent = agent_of(app)
    ok = {"Authorization": f"Bearer {secrets['alice-web']}"}
    assert app.test_client().post("/solve", json=BODY, headers=ok).status_code == 200
    agent.begin_work()
    agent.begin_work()
    try:
        samples = scrape(app)
    finally:
        agent.end_work()
        agent.end_work()
    assert value(samples, "solverfleet_agent_in_flight") == 2
    assert value(samples, "solverfleet_agent_ready") == 1
    assert value(samples, "solverfleet_agent_collector_online") == 1
    assert value(samples, "solverfleet_agent_leased_keys") >= 1
    assert value(samples, "solverfleet_agent_lease_held_micros") > 0
    assert value(samples, "solverfleet_agent_last_sync_age_seconds") < 5
    assert value(samples, "solverfleet_agent_compat_tasks") == 0
    assert value(samples, "solverfleet_agent_pingbacks_queued") == 0
    assert value(samples, "solverfleet_agent_pingbacks_sent_total") == 0
    assert value(samples, "solverfleet_agent_pingbacks_failed_total") == 0
    assert value(samples, "solverfleet_agent_banned_ips") == 0
    for _ in range(agent.settings.ban_threshold):
        agent.bans.failed("203.0.113.7")
    assert value(scrape(app), "solverfleet_agent_banned_ips") == 1
    agent.begin_drain(quiet=True)
    samples = scrape(app)
    assert value(samples, "solverfleet_agent_in_flight") == 0
    assert value(samples, "solverfleet_agent_draining") == 1
    assert value(samples, "solverfleet_agent_ready") == 0


def test_a_lease_that_never_comes_counts_a_lease_wait_timeout(
    tmp_path,
    fake_collector,  # noqa: F811
    fake_worker,  # noqa: F811
):
    secrets = standard_setup(fake_collector)
    settings = agent_settings(
        tmp_path, fake_collector.url, fake_worker.url, sync_interval=3600, lease_wait=0.2
    )
    app = create_agent(settings)
    agent = agent_of(app)
    client = app.test_client()
    try:
        wait_until(lambda: client.get("/readyz").status_code == 200, timeout=10, what="ready")
        agent.loop.trigger = lambda: None  # the sync the call asks for never happens
        before = scrape(app)
        ok = {"Authorization": f"Bearer {secrets['alice-web']}"}
        assert client.post("/solve", json=BODY, headers=ok).status_code == 402
        after = scrape(app)
    finally:
        agent.shutdown(drain_grace=0, ship_timeout=1)
        agent.close()
    name, limit = "solverfleet_agent_lease_wait_timeouts_total", "insufficient_balance"
    assert value(after, name, limit=limit) - value(before, name, limit=limit) == 1


def test_spool_backlog_is_the_spools_pending_count(tmp_path):
    app = _bare_agent(tmp_path, "a")
    agent = agent_of(app)
    try:
        agent.spool.append({"event_id": "e" * 32, "key_id": "k", "cost_micros": 0})
        assert value(scrape(app), "solverfleet_agent_spool_backlog") == agent.spool.pending == 1
    finally:
        agent.close()


def test_many_apps_in_one_process_scrape_their_own_state(tmp_path):
    apps = [_bare_agent(tmp_path, name) for name in ("a", "b")]
    try:
        agent_of(apps[0]).begin_work()
        assert value(scrape(apps[0]), "solverfleet_agent_in_flight") == 1
        assert value(scrape(apps[1]), "solverfleet_agent_in_flight") == 0
        agent_of(apps[0]).end_work()
    finally:
        for app in apps:
            agent_of(app).close()


def test_agent_metrics_only_for_allowed_unforwarded_peers(tmp_path):
    default = _bare_agent(tmp_path, "a")
    fleet = _bare_agent(tmp_path, "b", metrics_allow=("10.0.0.0/8",))
    try:
        c = default.test_client()
        assert c.get("/metrics").status_code == 200  # loopback
        for kwargs in (
            {"headers": FORWARDED},  # through the load balancer
            {"headers": {"Forwarded": "for=203.0.113.9"}},
            {"environ_base": {"REMOTE_ADDR": "10.1.2.3"}},  # not in the default list
        ):
            resp = c.get("/metrics", **kwargs)
            assert resp.status_code == 403 and resp.json["error"] == "forbidden", kwargs
        f = fleet.test_client()
        assert f.get("/metrics", environ_base={"REMOTE_ADDR": "10.1.2.3"}).status_code == 200
        mapped = {"REMOTE_ADDR": "::ffff:10.1.2.3"}
        assert f.get("/metrics", environ_base=mapped).status_code == 200
        assert f.get("/metrics").status_code == 403  # loopback is not in this list
    finally:
        agent_of(default).close()
        agent_of(fleet).close()


# ---- collector -----------------------------------------------------------------------------


def test_collector_counts_ingest_and_grants(collector_app):
    h = collector_app
    h.apply(_team())
    before = scrape(h.app)
    h.sync(leases=[{"kind": "balance", "key_id": "alice-web", "want_micros": 100_000}])
    events = [event(), event()]
    assert h.usage(events) == {"accepted": 2, "duplicates": 0}
    assert h.usage(events) == {"accepted": 0, "duplicates": 2}  # a re-ship
    after = scrape(h.app)

    def delta(name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("solverfleet_collector_usage_events_total", result="stored") == 2
    assert delta("solverfleet_collector_usage_events_total", result="duplicate") == 2
    assert delta("solverfleet_collector_ingest_batch_events_count") == 2
    assert delta("solverfleet_collector_ingest_batch_events_sum") == 4
    assert delta("solverfleet_collector_ingest_seconds_count") == 2
    assert delta("solverfleet_collector_leases_granted_total", kind="balance") == 1
    assert delta("solverfleet_collector_lease_granted_micros_total") == 100_000
    assert (
        delta("solverfleet_collector_http_requests_total", endpoint="agent.usage", code="200") == 2
    )


def test_report_lag_follows_the_newest_stored_event(collector_app):
    h = collector_app
    h.apply(_team())
    samples = scrape(h.app)
    assert value(samples, "solverfleet_collector_store_up") == 1
    assert ("solverfleet_collector_report_lag_seconds", ()) not in samples  # nothing stored
    h.usage([event()])
    h.clock.advance(42)
    assert value(scrape(h.app), "solverfleet_collector_report_lag_seconds") == 42
    h.usage([event()])
    assert value(scrape(h.app), "solverfleet_collector_report_lag_seconds") == 0


def test_ingest_lag_is_the_oldest_new_events_age(collector_app):
    h = collector_app
    h.apply(_team())
    name = "solverfleet_collector_ingest_lag_seconds"
    before = scrape(h.app)
    h.clock.advance(90)  # events recorded at T0 reach the store 90 s later
    events = [event(), event(ts=h.clock() - 5)]
    assert h.usage(events)["accepted"] == 2
    assert h.usage(events)["accepted"] == 0  # a re-ship stores nothing: no lag observed
    after = scrape(h.app)
    assert value(after, f"{name}_count") - value(before, f"{name}_count") == 1
    assert value(after, f"{name}_sum") - value(before, f"{name}_sum") == pytest.approx(90)
    assert value(after, f"{name}_bucket", le="60.0") == value(before, f"{name}_bucket", le="60.0")


def test_low_balance_keys_by_account_and_level(collector_app):
    from tests.support.collector import key_config, team_config, user_config

    h = collector_app
    keys = [
        key_config("k-empty", "0.00"),
        key_config("k-low", "0.04"),
        key_config("k-at", "0.05"),
        key_config("k-fine", "5.00"),
        key_config("k-off", "0.00", active=False),
    ]
    alert = {"enabled": True, "threshold": "0.05", "webhooks": []}
    h.apply(team_config([user_config("alice", keys)], low_balance_alert=alert))
    name = "solverfleet_collector_low_balance_keys"
    samples = scrape(h.app)
    assert value(samples, name, account="acme", level="zero") == 1
    assert value(samples, name, account="acme", level="threshold") == 2
    h.apply(team_config([user_config("alice", keys, active=False)], low_balance_alert=alert))
    assert not [k for k in scrape(h.app) if k[0] == name]  # a deactivated user's keys: none


def test_store_down_shows_as_store_up_zero(tmp_path):
    from prometheus_client import CollectorRegistry, generate_latest

    db = Database(sqlite_url(tmp_path / "missing-dir" / "c.db"))
    registry = CollectorRegistry()
    registry.register(cmetrics.StoreCollector(db))
    text = generate_latest(registry).decode()
    assert "solverfleet_collector_store_up 0.0" in text
    assert "report_lag" not in text


def test_notifications_counter_is_exported(collector_app):
    before = value(
        scrape(collector_app.app),
        "solverfleet_collector_notifications_total",
        kind="low_balance",
        result="sent",
    )
    cmetrics.NOTIFICATIONS_SENT.labels(kind="low_balance", result="sent").inc()
    after = value(
        scrape(collector_app.app),
        "solverfleet_collector_notifications_total",
        kind="low_balance",
        result="sent",
    )
    assert after - before == 1


def test_collector_metrics_need_an_allowed_peer_or_the_admin_token(fast_dir):
    h = make_app(sqlite_url(fast_dir / "c.db"))
    c = h.app.test_client()
    outside = {"REMOTE_ADDR": "198.51.100.7"}
    assert c.get("/metrics").status_code == 200  # loopback
    assert c.get("/metrics", environ_base=outside).status_code == 401
    assert c.get("/metrics", headers=FORWARDED).status_code == 401
    wrong = {"Authorization": "Bearer nope"}
    assert c.get("/metrics", environ_base=outside, headers=wrong).status_code == 401
    admin = {"Authorization": f"Bearer {h.admin_token}"}
    assert c.get("/metrics", environ_base=outside, headers=admin).status_code == 200
    fleet = {"Authorization": f"Bearer {h.fleet_token}"}  # a service token is no admin
    assert c.get("/metrics", environ_base=outside, headers=fleet).status_code == 403


def _team():
    from tests.support.collector import team_config

    return team_config()
