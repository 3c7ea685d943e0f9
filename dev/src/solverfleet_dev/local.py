"""``solverfleet local``: run a whole fleet on this machine in the foreground until stopped."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from types import FrameType

import click

from solverfleet.cli.common import CliError, console
from solverfleet.settings import SettingsError
from solverfleet.worker import WorkerSettings
from solverfleet_dev.localstack import STACK_FILE, LocalStack, StackError


def _latency(ctx: click.Context, param: click.Parameter, value: str) -> str:
    try:
        WorkerSettings(latency_ms=value)
    except SettingsError as exc:
        raise click.BadParameter(str(exc)) from None
    return value


@click.command("local")
@click.option("--agents", type=click.IntRange(0, 64), default=3, show_default=True)
@click.option(
    "--state",
    "state_dir",
    type=click.Path(file_okay=False),
    default=".demo",
    show_default=True,
    help="Database, agent state, logs and stack.json live here; kept after stopping.",
)
@click.option("--demo", is_flag=True, help="Apply a demo team, print a guide, run a short burst.")
@click.option(
    "--team",
    type=click.Path(dir_okay=False, exists=True),
    help="Team config for --demo [default: the example in the package, solverfleet_dev/examples].",
)
@click.option(
    "--agent-port-base",
    type=click.IntRange(1024, 65000),
    default=None,
    help="Agent i listens on PORT+i [default: any free port].",
)
@click.option(
    "--worker-latency",
    default="50",
    show_default=True,
    callback=_latency,
    help="Demo worker latency in ms: fixed (50) or a range (20-80).",
)
@click.option("--worker-failure-rate", type=click.FloatRange(0, 1), default=0.0, show_default=True)
def local_command(
    agents: int,
    state_dir: str,
    demo: bool,
    team: str | None,
    agent_port_base: int | None,
    worker_latency: str,
    worker_failure_rate: float,
) -> None:
    """Run a collector, a demo solver worker and N agents on 127.0.0.1, until Ctrl-C or SIGTERM.

    Writes STATE/stack.json (URLs and the admin token, mode 0600) once everything is ready.
    Stopping is graceful: agents first (they ship their usage), then worker and collector.
    """
    if demo and agents < 1:
        raise CliError("--demo needs at least one agent", exit_code=2)
    if demo:
        from solverfleet_dev.local_demo import find_team_file, run_demo

        team_file = find_team_file(team)
    stack = LocalStack(
        state_dir,
        agents=agents,
        worker_latency_ms=worker_latency,
        worker_failure_rate=worker_failure_rate,
        agent_port_base=agent_port_base,
    )
    previous = _on_stop_signals(_interrupt)
    failed: Exception | None = None
    try:
        console.print(f"Starting collector, worker and {agents} agent(s) in {state_dir} ...")
        stack.start()
        _print_stack(stack)
        if demo:
            run_demo(stack, team_file)
        console.print("\nRunning. Ctrl-C (or SIGTERM) stops everything gracefully.")
        _watch(stack)
    except KeyboardInterrupt:
        pass
    except (StackError, CliError, OSError) as exc:
        failed = exc
    finally:
        # A second Ctrl-C must not abandon the children half-stopped.
        _on_stop_signals(_stopping)
        console.print("\nStopping: agents (shipping usage), worker, collector ...")
        for name, code in stack.stop().items():
            if code:
                console.print(f"[yellow]warning:[/] {name} exited with code {code}; see its log")
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if failed is not None:
        raise failed if isinstance(failed, CliError) else CliError(str(failed)) from None
    console.print(f"Stopped. Database, agent state and logs are kept in {state_dir}.")


def _print_stack(stack: LocalStack) -> None:
    urls = stack.urls
    echo = click.echo  # plain text: URLs must stay whole for copying
    echo("")
    echo(f"collector  {urls['collector']}   (admin API; token in {_rel(stack.stack_file)})")
    echo(f"dashboard  {urls['collector']}/dashboard/   (log in with that admin token)")
    echo(f"worker     {urls['worker']}   (demo solver, latency {stack.worker_latency_ms} ms)")
    for i, url in enumerate(urls["agents"]):
        echo(f"agent {i:<4} {url}   (agent id {stack.agent_id(i)})")
    echo(f"logs       {_rel(stack.log_dir)}/")
    echo(f"stop       Ctrl-C here, or: kill -TERM {os.getpid()}")


class AgentRestarts:
    """Restart an agent that exited on its own: at most ``MAX_RESTARTS`` times in a row, the
    first at once, the next ones 1, 2, 4, 8 s after the previous start; an agent that then ran
    ``STABLE_SECONDS`` starts the count afresh.
    The collector and worker are only reported: agents hold no state a restart would lose."""

    MAX_RESTARTS = 5
    STABLE_SECONDS = 60.0

    def __init__(self, stack: LocalStack) -> None:
        self.stack = stack
        self.count: dict[int, int] = {}
        self.last_start: dict[int, float] = {}
        self.given_up: set[int] = set()

    def check(self, now: float) -> None:
        for i, svc in enumerate(self.stack.agents):
            if svc is None or svc.alive() or i in self.given_up:
                continue
            if now - self.last_start.get(i, 0.0) >= self.STABLE_SECONDS:
                self.count[i] = 0
            n = self.count.get(i, 0)
            log = _rel(self.stack.log_dir / f"{svc.name}.log")
            if n >= self.MAX_RESTARTS:
                self.given_up.add(i)
                console.print(
                    f"[red]warning:[/] {svc.name} exited (code {svc.proc.returncode}) after "
                    f"{n} restarts; not restarting it again; see {log}"
                )
                continue
            if now - self.last_start.get(i, 0.0) < 2 ** max(n - 1, 0):
                continue  # back off before the next try
            code = svc.proc.returncode
            svc.kill()  # reaps it and any orphaned gunicorn worker still holding the port
            self.stack.start_agent(i, wait=False)
            self.count[i], self.last_start[i] = n + 1, now
            console.print(
                f"[yellow]warning:[/] {svc.name} exited (code {code}); restarted it "
                f"(restart {n + 1} of at most {self.MAX_RESTARTS}); see {log}"
            )


def _watch(stack: LocalStack) -> None:
    """Stay in the foreground; restart crashed agents, report the other parts that exit."""
    reported: set[str] = set()
    restarts = AgentRestarts(stack)
    while True:
        time.sleep(1.0)
        restarts.check(time.monotonic())
        for name, code in stack.dead_parts():
            if name not in reported and not name.startswith("agent-"):
                reported.add(name)
                console.print(
                    f"[red]warning:[/] {name} exited (code {code}); "
                    f"see {_rel(stack.log_dir / (name + '.log'))}"
                )


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _stopping(signum: int, frame: FrameType | None) -> None:
    os.write(2, b"\nalready stopping; waiting for agents to ship usage ...\n")


def _on_stop_signals(handler) -> dict:
    return {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}


def _rel(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


__all__ = ["STACK_FILE", "local_command"]
