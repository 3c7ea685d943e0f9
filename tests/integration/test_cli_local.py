"""`solverfleet local` and LocalStack with the real collector, worker and agents."""

from __future__ import annotations

import json
import os
import signal
import stat
import sys

import psutil
import pytest
import requests

from solverfleet.adminclient import AdminClient
from solverfleet.process import Service, wait_until
from solverfleet_dev.localstack import LocalStack, StackError

CLI = [sys.executable, "-c", "from solverfleet.cli import main; main()"]
SECRET = "sk_local-stack-test-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {SECRET}"}
TEAM = {
    "account": "acme",
    "prices": {"turnstile": "0.002"},
    "users": [{"id": "alice", "keys": [{"id": "alice-web", "secret": SECRET, "balance": "1.00"}]}],
}
SOLVE = {"type": "turnstile", "url": "https://example.com/", "params": {}}


def solve(agent_url: str) -> requests.Response:
    return requests.post(f"{agent_url}/solve", json=SOLVE, headers=AUTH, timeout=15)


def successes(admin: AdminClient) -> int:
    return admin.summary()["successes"]


def test_local_command_serves_and_stops_cleanly_on_sigterm(tmp_path):
    state = tmp_path / "state"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SOLVERFLEET_")}
    argv = [*CLI, "local", "--agents", "2", "--state", str(state), "--worker-latency", "0"]
    cli = Service("cli", argv, env=env, log_dir=tmp_path).start()
    parts: list[psutil.Process] = []
    try:
        stack_file = state / "stack.json"
        wait_until(stack_file.exists, timeout=90, what="stack.json")
        assert stat.S_IMODE(stack_file.stat().st_mode) == 0o600
        stack = json.loads(stack_file.read_text())
        assert set(stack) == {"collector", "worker", "agents", "admin_token"}
        assert len(stack["agents"]) == 2
        # Every part runs in its own session; remember them to prove they all exit.
        parts = psutil.Process(cli.pid).children(recursive=True)
        assert len(parts) >= 8  # 4 gunicorn masters, each with a worker

        with AdminClient(stack["collector"], stack["admin_token"]) as admin:
            admin.apply(TEAM)
            for url in stack["agents"]:
                wait_until(
                    lambda url=url: requests.get(f"{url}/balance", headers=AUTH, timeout=2).ok,
                    timeout=30,
                    what=f"{url} to load the key",
                )
            resp = solve(stack["agents"][1])
            assert resp.status_code == 200, resp.text
            assert resp.json()["status"] == "success"

        # A second `local` on the same state dir is refused and leaves the running one's file.
        second = Service("second", argv, env=env, log_dir=tmp_path).start()
        assert second.proc.wait(60) == 1, second.log_tail()
        assert "in use by another local stack" in second.log_tail()
        assert json.loads(stack_file.read_text()) == stack

        # A crashed agent (its gunicorn master killed by pid) is restarted on its port.
        port = stack["agents"][0].rsplit(":", 1)[1]
        master = next(
            p for p in psutil.Process(cli.pid).children() if f"127.0.0.1:{port}" in p.cmdline()
        )
        master.kill()
        wait_until(lambda: "agent-0 exited" in cli.log_tail(400), timeout=30, what="restart")
        wait_until(
            lambda: requests.get(f"{stack['agents'][0]}/balance", headers=AUTH, timeout=2).ok,
            timeout=60,
            what="the restarted agent-0",
        )
        assert master.pid not in [p.pid for p in psutil.Process(cli.pid).children()]
        parts = psutil.Process(cli.pid).children(recursive=True)

        # At once, without waiting for the usage to be shipped: stopping the agents before the
        # collector is what must get it there.
        cli.signal(signal.SIGTERM)
        assert cli.proc.wait(150) == 0, cli.log_tail()
        assert not [p.pid for p in parts if _running(p)]
        output = cli.log_tail(400)
        assert f"dashboard  {stack['collector']}/dashboard/" in output
        warnings = [line for line in output.splitlines() if "warning" in line]
        assert "Stopped." in output and len(warnings) == 1, output
        assert "agent-0 exited (code -9); restarted it (restart 1 of at most 5)" in warnings[0]
        assert not stack_file.exists()
        assert (state / "collector.db").exists()
        assert (state / "logs" / "agent-1.log").exists()
        assert SECRET not in "".join(p.read_text() for p in (state / "logs").iterdir())

        # The same state dir again: the usage arrived and every lease was given back.
        with LocalStack(state, agents=0) as again, again.admin_client() as admin:
            summary = admin.summary()
        assert summary["successes"] == 1
        assert summary["keys"]["alice-web"]["leased_micros"] == 0
    finally:
        cli.stop(10)
        for p in parts:  # only if the test failed half-way
            if _running(p):
                p.kill()


def _running(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.fixture
def stack(tmp_path):
    with LocalStack(tmp_path / "stack", agents=2, worker_latency_ms="0") as running:
        yield running


def test_parts_restart_in_place(stack):
    urls = stack.urls
    with stack.admin_client() as admin:
        admin.apply(TEAM)
        stack.wait_agents_ready(timeout=30)
        stack.wait_for_key(SECRET)
        assert solve(urls["agents"][0]).status_code == 200
        wait_until(lambda: successes(admin) == 1, timeout=30, what="first usage")

        # A crash: SIGKILL, then the same agent comes back on the same port and state.
        stack.kill_agent(0)
        assert ("agent-0", -signal.SIGKILL) in stack.dead_parts()
        stack.start_agent(0)
        assert stack.urls == urls
        stack.wait_for_key(SECRET)
        assert solve(urls["agents"][0]).status_code == 200

        # The collector restarts on its port with its database.
        stack.stop_collector()
        stack.start_collector()
        assert [k["id"] for k in admin.list_keys()] == ["alice-web"]
        wait_until(lambda: successes(admin) == 2, timeout=30, what="second usage")

        # Graceful agent stops (collector still up) give every lease back.
        assert stack.stop_agent(0) == 0
        assert stack.stop_agent(1) == 0
        assert admin.summary()["keys"]["alice-web"]["leased_micros"] == 0

    codes = stack.stop()
    assert codes == {"agent-0": 0, "agent-1": 0, "worker": 0, "collector": 0}
    assert not stack.stack_file.exists()


def test_a_part_that_cannot_start_is_reported_and_nothing_is_left(tmp_path):
    stack = LocalStack(
        tmp_path / "stack",
        agents=1,
        extra_collector_env={"SOLVERFLEET_LEASE_TTL": "-1"},  # the collector refuses this
    )
    with pytest.raises(StackError) as info:
        stack.start()
    message = str(info.value)
    assert message.startswith("collector exited with code")
    assert "lease_ttl" in message  # the log tail says why
    assert stack.worker is not None and not stack.worker.alive()
    assert stack.agents == []
    assert not stack.stack_file.exists()


def test_sigterm_during_start_leaves_no_process(tmp_path):
    state = tmp_path / "state"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SOLVERFLEET_")}
    argv = [*CLI, "local", "--agents", "2", "--state", str(state)]
    cli = Service("cli", argv, env=env, log_dir=tmp_path).start()
    try:
        wait_until((state / "logs" / "collector.log").exists, timeout=30, what="collector start")
        cli.signal(signal.SIGTERM)
        assert cli.proc.wait(60) == 0, cli.log_tail()
        assert _processes_using(state) == []
        assert not (state / "stack.json").exists()
    finally:
        cli.stop(10)
        for proc in _processes_using(state):
            proc.kill()


def _processes_using(state) -> list[psutil.Process]:
    """Processes whose environment points into ``state`` (every part the stack starts)."""
    found = []
    for proc in psutil.process_iter():
        try:
            if any(str(state) in value for value in proc.environ().values()):
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found
