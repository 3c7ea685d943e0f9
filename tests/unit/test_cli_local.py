"""LocalStack and `solverfleet local` without starting processes: layout, ports, argv, env,
the stack file, argument checks and the demo's burst plan."""

from __future__ import annotations

import json
import os
import stat

import pytest
from click.testing import CliRunner

from solverfleet import teamconfig
from solverfleet.cli import main
from solverfleet_dev.local_demo import BURST_REQUESTS, burst_plan, find_team_file
from solverfleet_dev.localstack import LocalStack, StackError, _base_env, _gunicorn


def test_urls_are_stable_and_distinct(tmp_path):
    stack = LocalStack(tmp_path, agents=3)
    first = stack.urls
    assert first == stack.urls  # picked once, kept for restarts
    ports = [first["collector"], first["worker"], *first["agents"]]
    assert len(set(ports)) == 5
    assert all(url.startswith("http://127.0.0.1:") for url in ports)


def test_agent_port_base_and_identity(tmp_path):
    stack = LocalStack(tmp_path / "s", agents=2, agent_port_base=19100)
    assert stack.urls["agents"] == ["http://127.0.0.1:19100", "http://127.0.0.1:19101"]
    assert [stack.agent_id(i) for i in range(2)] == ["local-agent-0", "local-agent-1"]
    assert stack.agent_state_dir(1) == (tmp_path / "s" / "agent-1").resolve()
    assert stack.db_url == f"sqlite:///{(tmp_path / 's' / 'collector.db').resolve()}"


def test_agent_index_is_checked(tmp_path):
    stack = LocalStack(tmp_path, agents=1)
    for method in (stack.stop_agent, stack.kill_agent, stack.start_agent):
        with pytest.raises(IndexError):
            method(1)


def test_stop_before_start_is_harmless(tmp_path):
    stack = LocalStack(tmp_path, agents=2)
    stack.stop()
    assert stack.stop_agent(0) is None
    assert stack.dead_parts() == []


def test_stack_file_is_private_and_complete(tmp_path):
    stack = LocalStack(tmp_path, agents=2)
    stack._lock_state_dir()  # as start() does: only the holder of the state dir writes it
    stack._write_stack_file()
    mode = stat.S_IMODE(os.stat(stack.stack_file).st_mode)
    assert mode == 0o600
    data = json.loads(stack.stack_file.read_text())
    assert data == {**stack.urls, "admin_token": stack.admin_token}
    stack.stop()  # removes it: it describes a running stack
    assert not stack.stack_file.exists()


def test_a_refused_second_stack_leaves_the_running_ones_file(tmp_path):
    running = LocalStack(tmp_path, agents=0)
    running._lock_state_dir()
    running._write_stack_file()
    second = LocalStack(tmp_path, agents=0)
    with pytest.raises(StackError, match="in use by another local stack"):
        second.start()
    second.stop()  # what `solverfleet local` does after any failure
    assert json.loads(running.stack_file.read_text())["admin_token"] == running.admin_token
    running.stop()
    assert not running.stack_file.exists()


def test_tokens_are_fresh_per_stack(tmp_path):
    a, b = LocalStack(tmp_path), LocalStack(tmp_path)
    assert a.admin_token != b.admin_token and a.fleet_token != b.fleet_token
    assert len(a.admin_token) >= 32


def test_gunicorn_argv_uses_conf_module_when_present():
    conf = "solverfleet.worker.gunicorn_conf"
    argv = _gunicorn("solverfleet.worker:create_app()", "127.0.0.1:1", conf=conf)
    assert argv[argv.index("-c") + 1] == "python:solverfleet.worker.gunicorn_conf"
    assert argv[-3:] == ["--bind", "127.0.0.1:1", "solverfleet.worker:create_app()"]
    for missing in ("solverfleet.no_such_conf", "no_such.module_conf"):
        fallback = _gunicorn("x:app()", "127.0.0.1:2", conf=missing, fallback=["-w", "1"])
        assert "-c" not in fallback and fallback[3:5] == ["-w", "1"]


def test_children_do_not_inherit_solverfleet_settings(monkeypatch):
    monkeypatch.setenv("SOLVERFLEET_CONFIG", "/etc/somewhere.yaml")
    monkeypatch.setenv("UNRELATED", "kept")
    env = _base_env()
    assert "SOLVERFLEET_CONFIG" not in env
    assert env["UNRELATED"] == "kept" and env["PYTHONUNBUFFERED"] == "1"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--demo", "--agents", "0"], "--demo needs at least one agent"),
        (["--worker-latency", "fast"], "latency_ms must be like"),
        (["--worker-failure-rate", "2"], "--worker-failure-rate"),
        (["--agents", "-1"], "--agents"),
    ],
)
def test_local_refuses_bad_arguments(tmp_path, args, message):
    result = CliRunner().invoke(main, ["local", "--state", str(tmp_path), *args])
    assert result.exit_code == 2
    assert message in result.stderr
    assert not (tmp_path / "logs").exists()  # nothing was started


def test_the_demo_team_ships_in_the_package(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no examples/ around: the package's own copy is used
    team = find_team_file(None)
    assert teamconfig.load_file(team, env={})["users"]
    assert "site-packages" in str(team) or str(team).endswith("solverfleet_dev/examples/team.yaml")


def _demo_config():
    config = teamconfig.load_file(find_team_file(None), env={})
    secrets = {k["id"]: f"sk_{k['id']}-0123456789" for u in config["users"] for k in u["keys"]}
    return config, secrets


def test_demo_plan_shows_every_refusal_and_is_bounded():
    config, secrets = _demo_config()
    plan = burst_plan(config, secrets)
    assert len(plan.calls) == BURST_REQUESTS
    assert plan.guide_key == "alice-web"  # usable from loopback, the largest balance
    by_key = {c.key_id for c in plan.calls}
    assert {"unknown", "ci-bot-office", "mallory-old", "bob-scraper", "ci-bot-main"} <= by_key
    assert sum(c.fail for c in plan.calls) == 2
    wrong = [c for c in plan.calls if c.key_id == "alice-web" and c.type == "image-to-text"]
    assert len(wrong) == 1
    # ci-bot-main (cpm 6) and bob-scraper (five solves' worth) get enough calls to hit limits.
    assert sum(c.key_id == "ci-bot-main" for c in plan.calls) > 6
    assert sum(c.key_id == "bob-scraper" and c.type == "image-to-text" for c in plan.calls) > 5
    assert burst_plan(config, secrets) == plan  # deterministic


def test_demo_plan_without_secrets_is_empty():
    config, _ = _demo_config()
    assert burst_plan(config, {}).calls == []


def test_one_stack_per_state_dir(tmp_path):
    first, second = LocalStack(tmp_path), LocalStack(tmp_path)
    first._lock_state_dir()
    try:
        with pytest.raises(
            StackError, match=rf"in use by another local stack \(pid {os.getpid()}\)"
        ):
            second.start()
        assert not (tmp_path / "logs" / "collector.log").exists()  # nothing was started
    finally:
        first.stop()
    second._lock_state_dir()  # free again once the first stack stopped
    second.stop()


class _Agent:
    """Stands in for an agent's Service: dead until restarted."""

    def __init__(self) -> None:
        self.name, self.proc, self.up = "agent-0", type("P", (), {"returncode": -9})(), False

    def alive(self) -> bool:
        return self.up

    def kill(self) -> None:
        pass


def test_a_crashed_agent_is_restarted_with_backoff_and_then_given_up(tmp_path, capsys):
    from solverfleet_dev.local import AgentRestarts

    agent = _Agent()
    stack = type("S", (), {"agents": [agent], "log_dir": tmp_path})()
    starts: list[float] = []

    def start_agent(i: int, wait: bool) -> None:
        starts.append(now)
        agent.up = False  # crashes again at once

    stack.start_agent = start_agent
    restarts = AgentRestarts(stack)
    for now in [1000.0 + 0.5 * t for t in range(80)]:  # 40 s, checked every 0.5 s
        restarts.check(now)
    assert [s - 1000 for s in starts] == [0, 1, 3, 7, 15]  # at once, then 1, 2, 4, 8 s apart
    out = capsys.readouterr().out
    assert out.count("restarted it") == 5 and "not restarting it again" in out
