from dataclasses import dataclass

import pytest

from solverfleet.settings import SettingsError, load_settings

pytestmark = pytest.mark.unit


@dataclass
class Example:
    url: str = "http://x"
    interval: float = 0.25
    workers: int = 1
    enabled: bool = False
    proxies: list[str] | None = None
    token: str | None = None


def test_defaults_file_env_precedence(tmp_path):
    cfg = tmp_path / "s.yml"
    cfg.write_text("interval: 0.5\nworkers: 3\nproxies: [10.0.0.0/8]\n")
    env = {"SOLVERFLEET_WORKERS": "4", "SOLVERFLEET_ENABLED": "yes"}
    s = load_settings(Example, env=env, file=cfg)
    assert (s.url, s.interval, s.workers, s.enabled, s.proxies) == (
        "http://x",
        0.5,
        4,
        True,
        ["10.0.0.0/8"],
    )


def test_env_reference_resolved_and_unresolved_refused(tmp_path):
    cfg = tmp_path / "s.yml"
    cfg.write_text("token: ENV:FLEET_TOKEN\n")
    assert load_settings(Example, env={"FLEET_TOKEN": "t0k"}, file=cfg).token == "t0k"
    with pytest.raises(SettingsError, match="FLEET_TOKEN is not set"):
        load_settings(Example, env={}, file=cfg)


def test_unknown_key_and_bad_values_refused(tmp_path):
    cfg = tmp_path / "s.yml"
    cfg.write_text("workerz: 2\n")
    with pytest.raises(SettingsError, match="unknown setting"):
        load_settings(Example, env={}, file=cfg)
    with pytest.raises(SettingsError, match="expected a number"):
        load_settings(Example, env={"SOLVERFLEET_WORKERS": "many"})
    with pytest.raises(SettingsError, match="true/false"):
        load_settings(Example, env={"SOLVERFLEET_ENABLED": "maybe"})


def test_comma_lists_from_env():
    s = load_settings(Example, env={"SOLVERFLEET_PROXIES": "10.0.0.0/8, 127.0.0.1/32"})
    assert s.proxies == ["10.0.0.0/8", "127.0.0.1/32"]
