"""AgentSettings: the architecture's fields and defaults, env loading, validation."""

from __future__ import annotations

import pytest

from solverfleet.agent.settings import AgentSettings
from solverfleet.settings import SettingsError, load_settings

REQUIRED = {
    "SOLVERFLEET_COLLECTOR_URL": "http://127.0.0.1:8400/",
    "SOLVERFLEET_FLEET_TOKEN": "ENV:FLEET",
    "FLEET": "t0ken",
}


def test_defaults_match_the_architecture_table():
    s = load_settings(AgentSettings, env=REQUIRED)
    assert s.collector_url == "http://127.0.0.1:8400"  # trailing slash dropped
    assert s.fleet_token == "t0ken"  # ENV: reference resolved
    assert s.worker_url == "http://127.0.0.1:8500"
    assert s.state_dir == "/var/lib/solverfleet/agent"
    assert s.trusted_proxies == ()
    assert (s.worker_timeout, s.sync_interval, s.offline_grace, s.drain_grace) == (
        30,
        0.25,
        60,
        30,
    )
    assert s.offline_allowance == "0" and s.offline_allowance_micros == 0
    assert s.lease_wait == 1.0
    assert s.agent_id  # hostname


def test_environment_overrides():
    env = {
        **REQUIRED,
        "SOLVERFLEET_TRUSTED_PROXIES": "198.51.100.0/24, 127.0.0.1/32",
        "SOLVERFLEET_OFFLINE_ALLOWANCE": "0.50",
        "SOLVERFLEET_AGENT_ID": "solver7",
        "SOLVERFLEET_SYNC_INTERVAL": "0.1",
    }
    s = load_settings(AgentSettings, env=env)
    assert s.trusted_proxies == ("198.51.100.0/24", "127.0.0.1/32")
    assert s.offline_allowance_micros == 500_000
    assert (s.agent_id, s.sync_interval) == ("solver7", 0.1)


@pytest.mark.parametrize(
    ("var", "value", "message"),
    [
        ("SOLVERFLEET_COLLECTOR_URL", "127.0.0.1:8400", "collector_url"),
        ("SOLVERFLEET_TRUSTED_PROXIES", "10.0.0.0/33", "trusted_proxies"),
        ("SOLVERFLEET_OFFLINE_ALLOWANCE", "0.0000001", "offline_allowance"),
        ("SOLVERFLEET_OFFLINE_ALLOWANCE", "-1", "offline_allowance"),
        ("SOLVERFLEET_SYNC_INTERVAL", "0", "sync_interval"),
        ("SOLVERFLEET_DRAIN_GRACE", "-1", "drain_grace"),
    ],
)
def test_bad_values_are_errors(var, value, message):
    with pytest.raises(SettingsError, match=message):
        load_settings(AgentSettings, env={**REQUIRED, var: value})


def test_required_fields():
    with pytest.raises(SettingsError):
        load_settings(AgentSettings, env={"SOLVERFLEET_COLLECTOR_URL": "http://x"})


def test_fleet_token_stays_out_of_repr():
    s = load_settings(AgentSettings, env=REQUIRED)
    assert "t0ken" not in repr(s)


def test_gunicorn_conf_is_one_gevent_worker_sized_for_the_stop(monkeypatch):
    import importlib

    for name, value in {**REQUIRED, "SOLVERFLEET_DRAIN_GRACE": "40"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("SOLVERFLEET_BIND", "127.0.0.1:8611")
    import solverfleet.agent.gunicorn_conf as conf

    conf = importlib.reload(conf)
    assert (conf.workers, conf.worker_class, conf.worker_connections) == (1, "gevent", 10000)
    assert conf.bind == "127.0.0.1:8611" and conf.control_socket_disable is True
    assert conf.graceful_timeout >= 40 + conf._settings.ship_timeout
    assert callable(conf.post_worker_init) and callable(conf.worker_exit)
