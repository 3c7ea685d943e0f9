"""`solverfleet lab ...`: the lab from a shell. Registered in the main CLI as ``lab_group``."""

from __future__ import annotations

import functools
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from solverfleet_dev.lab import preflight, repoinventory
from solverfleet_dev.lab.config import DEFAULT_NAME, INITS, LabError
from solverfleet_dev.lab.lab import Lab, LabStatus

_PASSTHROUGH = {"ignore_unknown_options": True, "allow_interspersed_args": False}
_INIT = click.option(
    "--init",
    type=click.Choice(INITS),
    default=None,
    help="PID 1 of the hosts: systemd (systemd-nspawn --boot) or a shell init for supervisord "
    "[default: systemd, or as is].",
)


def _lab_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """--name/--prefix/--state-dir on every command; the command receives a ``Lab``."""

    @click.option(
        "--name",
        default=DEFAULT_NAME,
        show_default=True,
        envvar="SOLVERFLEET_LAB",
        help="Lab name; parallel labs need different names (env SOLVERFLEET_LAB).",
    )
    @click.option("--prefix", default=None, help="Namespace name prefix [default: from --name].")
    @click.option(
        "--state-dir",
        type=click.Path(file_okay=False),
        default=None,
        help="Keys, inventory, host layers [default: /var/tmp/solverfleet-lab/NAME].",
    )
    @functools.wraps(fn)
    def wrapper(name: str, prefix: str | None, state_dir: str | None, **kwargs: Any) -> Any:
        try:
            lab = Lab(name, prefix=prefix, state_dir=state_dir)
            return fn(lab, **kwargs)
        except LabError as exc:
            raise click.ClickException(str(exc)) from exc

    return wrapper


@click.group("lab")
def lab_group() -> None:
    """Test lab: fleet hosts as Linux network namespaces, reachable over SSH from a controller
    namespace (needs root). See docs/LAB.md."""


@lab_group.command()
@click.option("--solvers", type=int, default=None, help="Solver hosts [default: 3, or as is].")
@_INIT
@_lab_options
def up(lab: Lab, solvers: int | None, init: str | None) -> None:
    """Bring the lab up, or repair it; running hosts are left alone."""
    if init is not None:
        lab = Lab(lab.name, prefix=lab.config.prefix, state_dir=lab.state_dir, init=init)
    result = lab.up(solvers)
    _print_up(lab, result.started, result.kept, result.removed, result.seconds)


@lab_group.command()
@_lab_options
def down(lab: Lab) -> None:
    """Kill every process in the lab, delete its namespaces and state."""
    result = lab.down()
    repoinventory.withdraw(lab, repoinventory.checkout_inventory_dir())
    click.echo(
        f"lab {lab.name!r} down in {result.seconds:.2f}s: {len(result.namespaces)} namespaces "
        f"deleted, {len(set(result.killed))} processes killed"
    )


@lab_group.command()
@click.option("--solvers", type=int, default=None, help="Solver hosts [default: 3, or as is].")
@_INIT
@_lab_options
def reset(lab: Lab, solvers: int | None, init: str | None) -> None:
    """down + up: fresh hosts with empty copy-on-write layers."""
    result = lab.reset(solvers, init)
    _print_up(lab, result.started, result.kept, result.removed, result.seconds)


@lab_group.command()
@_lab_options
def status(lab: Lab) -> None:
    """Hosts, addresses, whether sshd answers from the controller namespace, pids."""
    st = lab.status()
    Console().print(_status_table(lab, st))
    if st.strays:
        click.echo(f"namespaces not in the plan (removed by the next up): {', '.join(st.strays)}")
    if not st.healthy:
        click.echo(f"lab {lab.name!r} is {'degraded' if st.exists else 'down'}")
        raise SystemExit(1)


@lab_group.command()
@click.option("--solvers", type=int, default=3, show_default=True, help="Solver hosts.")
@click.option(
    "--wheelhouse",
    type=click.Path(file_okay=False, exists=True),
    default="wheelhouse",
    show_default=True,
    help="Wheels to install on the hosts (`make wheelhouse`).",
)
@_lab_options
def demo(lab: Lab, solvers: int, wheelhouse: str) -> None:
    """Deploy a demo fleet with the playbooks: site.yml, team.yml, solves through HAProxy over
    TLS, health.yml. Run it from the repository checkout (`make demo` does)."""
    from solverfleet_dev.lab.demo import Demo

    repo = Path.cwd()
    if not (repo / "playbooks" / "site.yml").exists():
        raise LabError("run the demo from the solverfleet checkout (playbooks/site.yml not found)")
    Demo(lab, repo, Path(wheelhouse).resolve(), Console()).run(solvers)


@lab_group.command(context_settings=_PASSTHROUGH)
@click.argument("host")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@_lab_options
def ssh(lab: Lab, host: str, command: tuple[str, ...]) -> None:
    """SSH to HOST from the controller namespace (interactive without COMMAND)."""
    preflight.check()
    raise SystemExit(subprocess.call(lab.ssh_argv(host, command)))


@lab_group.command("exec", context_settings=_PASSTHROUGH)
@click.argument("host")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@_lab_options
def exec_(lab: Lab, host: str, command: tuple[str, ...]) -> None:
    """Run COMMAND inside HOST's namespaces directly (nsenter, no ssh)."""
    preflight.check()
    raise SystemExit(subprocess.call(lab.host_argv(host, command)))


def _print_up(
    lab: Lab, started: list[str], kept: list[str], removed: list[str], seconds: float
) -> None:
    parts = [f"started {', '.join(started)}" if started else "", f"kept {len(kept)} running"]
    if removed:
        parts.append(f"removed {', '.join(removed)}")
    click.echo(f"lab {lab.name!r} up in {seconds:.2f}s: {'; '.join(p for p in parts if p)}")
    click.echo(f"  inventory:  {lab.inventory_path}")
    published = repoinventory.publish(lab, repoinventory.checkout_inventory_dir())
    if published is not None:
        click.echo(f"              {published} (a copy in this checkout)")
    click.echo(f"  ssh:        solverfleet lab ssh --name {lab.name} solver1")
    click.echo(
        f"  ansible:    ip netns exec {lab.controller_netns} "
        f"ansible-playbook -i {lab.inventory_path} PLAYBOOK"
    )


def _pids(pids: list[int], limit: int = 6) -> str:
    shown = " ".join(map(str, pids[:limit]))
    return f"{shown} …(+{len(pids) - limit})" if len(pids) > limit else shown or "-"


def _status_table(lab: Lab, st: LabStatus) -> Table:
    title = f"lab {lab.name!r}: namespaces {lab.config.prefix}*, state {lab.state_dir}"
    table = Table(title=title)
    for col in ("host", "group", "address", "sshd", "init pid"):
        table.add_column(col, no_wrap=True)
    table.add_column("pids", overflow="fold")
    ctl = "[green]up[/]" if st.controller_up else "[red]missing[/]"
    table.add_row("ctl", "controller", lab.gateway, ctl, "-", _pids(st.controller_pids))
    for h in st.hosts:
        sshd = "[green]yes[/]" if h.sshd else ("[red]no[/]" if h.running else "[red]down[/]")
        row = [h.spec.name, h.spec.group, h.spec.address, sshd, str(h.init_pid or "-")]
        table.add_row(*row, _pids(h.pids))
    return table
