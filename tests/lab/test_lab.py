"""The namespace lab: real hosts reachable over SSH from the controller, isolated from each other
and from the machine, idempotent `up`, and a `down` that leaves nothing behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
import pytest
from click.testing import CliRunner

from solverfleet_dev.lab import Lab, LabConfig, LabError, hosts, inventory, netns, nspawn, preflight
from solverfleet_dev.lab.cli import lab_group
from tests.support.lab import (
    lab_fixture,  # noqa: F401 - provides the `lab` fixture
    lab_name,
    root_namespace_fleet_config,
    skip_reason,
)

needs_lab = pytest.mark.skipif(skip_reason() is not None, reason=str(skip_reason()))


def wait_for(condition, *, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while not (result := condition()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)
    return result


# -- with the session lab -----------------------------------------------------------------------


@pytest.mark.lab
def test_every_host_answers_ssh_from_the_controller_with_its_own_hostname(lab: Lab) -> None:
    with ThreadPoolExecutor(len(lab.hosts)) as pool:
        answers = dict(
            zip(
                [h.name for h in lab.hosts],
                pool.map(lambda h: lab.ssh(h.name, ["hostname"], timeout=20), lab.hosts),
                strict=True,
            )
        )
    for name, proc in answers.items():
        assert proc.returncode == 0, f"{name}: {proc.stderr}"
        assert proc.stdout.strip() == name


@pytest.mark.lab
def test_hosts_have_private_etc_var_root_opt_run(lab: Lab) -> None:
    token = uuid.uuid4().hex[:12]
    paths = [f"/{d}/solverfleet-lab-test-{token}" for d in ("etc", "var", "root", "opt", "run")]
    try:
        lab.host_exec("solver1", ["touch", *paths], check=True)
        assert lab.host_exec("solver1", ["ls", *paths]).returncode == 0
        other = lab.host_exec("solver2", ["ls", *paths])
        assert other.returncode != 0 and other.stdout == ""
        assert not [p for p in paths if Path(p).exists()], "a host's write leaked to the machine"
    finally:
        lab.host_exec("solver1", ["rm", "-f", *paths])


@pytest.mark.lab
def test_hosts_have_own_hostname_resolver_and_hosts_file(lab: Lab) -> None:
    out = lab.host_exec("collector1", ["sh", "-c", "hostname; cat /etc/resolv.conf /etc/hosts"])
    lines = out.stdout.splitlines()
    assert lines[0] == "collector1"
    assert "nameserver 127.0.0.1" in lines
    assert f"{lab.address('solver2')}\tsolver2" in lines
    assert os.uname().nodename != "collector1"


@pytest.mark.lab
def test_a_host_reaches_another_hosts_address(lab: Lab) -> None:
    probe = f"exec 3<>/dev/tcp/{lab.address('solver2')}/22 && head -c 8 <&3"
    out = lab.host_exec("solver1", ["timeout", "5", "bash", "-c", probe], timeout=10)
    assert out.stdout == "SSH-2.0-", out.stderr


@pytest.mark.lab
def test_up_again_is_idempotent(lab: Lab) -> None:
    before = {h.name: lab.init_pid(h.name) for h in lab.hosts}
    result = Lab(lab.name).up()  # a fresh object, as a second `solverfleet lab up` would be
    assert result.started == [] and result.removed == []
    assert sorted(result.kept) == sorted(before)
    assert {h.name: lab.init_pid(h.name) for h in lab.hosts} == before


@pytest.mark.lab
def test_root_namespace_never_gets_fleet_addresses_or_routes(lab: Lab) -> None:
    assert root_namespace_fleet_config() == []
    assert lab.controller_exec(["ip", "-4", "-o", "addr", "show", "dev", "br0"]).stdout.count(
        f"{lab.gateway}/24"
    )


@pytest.mark.lab
def test_status_reports_every_host_reachable(lab: Lab) -> None:
    st = lab.status()
    assert st.healthy and st.strays == []
    result = CliRunner().invoke(lab_group, ["status", "--name", lab.name])
    assert result.exit_code == 0, result.output
    for host in lab.hosts:
        assert host.name in result.output


@pytest.mark.lab
def test_exec_command_passes_the_exit_status_through(lab: Lab) -> None:
    runner = CliRunner()
    assert runner.invoke(lab_group, ["exec", "--name", lab.name, "lb1", "true"]).exit_code == 0
    assert runner.invoke(lab_group, ["exec", "--name", lab.name, "lb1", "false"]).exit_code == 1
    unknown = runner.invoke(lab_group, ["exec", "--name", lab.name, "nosuch1", "true"])
    assert unknown.exit_code == 1 and "no host 'nosuch1'" in unknown.output


@pytest.mark.lab
def test_ansible_reaches_every_host_with_the_lab_inventory(lab: Lab) -> None:
    ansible = Path(sys.executable).parent / "ansible"
    if not ansible.exists():
        pytest.skip(f"ansible is not installed beside {sys.executable}")
    env = {**os.environ, "PATH": f"{ansible.parent}:{os.environ['PATH']}"}
    out = lab.controller_exec(
        [ansible, "all", "-i", lab.inventory_path, "-m", "ping"], env=env, timeout=60
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.count("SUCCESS") == len(lab.hosts)


# -- lifecycle, with labs of their own ----------------------------------------------------------


def _lab_processes(some: Lab) -> list[int]:
    names = [n for n in netns.list_netns() if some.config.owns_netns(n)]
    return [pid for pids in netns.pids_by_netns(names).values() for pid in pids]


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _leftovers(some: Lab) -> dict[str, list[str]]:
    """Everything of a lab that could outlive it: namespaces, processes that name its state
    directory (launchers, nspawn), mounts of its layers, cgroup directories, nspawn's state."""
    state = str(some.state_dir)
    procs = []
    for proc in psutil.process_iter(["cmdline"]):
        if any(state in part for part in proc.info["cmdline"] or []):
            procs.append(f"{proc.pid} {' '.join(proc.info['cmdline'])}")
    mounts = [ln for ln in Path("/proc/self/mountinfo").read_text().splitlines() if state in ln]
    nspawn_dirs = [
        str(p)
        for p in Path("/run/systemd/nspawn/propagate").glob(f"{some.config.machine_for('')}*")
    ]
    return {
        "namespaces": [n for n in netns.list_netns() if n.startswith(some.config.prefix)],
        "processes": procs,
        "mounts": mounts,
        "cgroups": nspawn.leftover_cgroups(some.config),
        "nspawn": nspawn_dirs,
    }


def _assert_gone(gone: Lab, pids: list[int]) -> None:
    assert _leftovers(gone) == {k: [] for k in _leftovers(gone)}
    assert [p for p in pids if _alive(p)] == []
    assert not gone.state_dir.exists()
    assert root_namespace_fleet_config() == []


@pytest.mark.lab
@needs_lab
@pytest.mark.parametrize("init", ["systemd", "supervisor"])
def test_up_repairs_broken_hosts_and_down_leaves_nothing(init: str) -> None:
    assert root_namespace_fleet_config() == []
    lc = Lab(lab_name(f"lc-{init[:3]}"), solvers=2, init=init)
    before = _leftovers(lc)
    assert before == {k: [] for k in before}, "a lab of this name is already there"
    pids: list[int] = []
    inits: set[int] = set()
    try:
        first = lc.up()
        assert first.started == ["lb1", "collector1", "solver1", "solver2"]
        assert _leftovers(lc)["namespaces"], "the check sees a running lab"
        pid1 = lc.host_exec("solver1", ["cat", "/proc/1/comm"]).stdout.strip()
        assert pid1 == ("systemd" if init == "systemd" else "bash")
        # Break it three ways: a dead host, a cut cable, a namespace deleted under its host.
        os.kill(lc.init_pid("solver1"), signal.SIGKILL)
        netns.ip_in(lc.controller_netns, "link", "del", "ve-lb1")
        netns.delete(lc.host("solver2").netns)
        wait_for(lambda: not lc.status().hosts[2].running, timeout=5, what="solver1 to be down")
        again = lc.up()
        assert sorted(again.started) == ["lb1", "solver1", "solver2"]
        assert again.kept == ["collector1"]
        st = lc.status()
        assert st.healthy, st
        assert lc.ssh("solver2", ["hostname"], timeout=20).stdout.strip() == "solver2"
        # Fewer solvers: the extra host goes away.
        assert lc.up(solvers=1).removed == ["solver2"]
        pids = _lab_processes(lc)
        inits = {lc.init_pid(h.name) for h in lc.hosts}
        assert pids
    finally:
        down = lc.down()
    # Every host's init is accounted for; short-lived processes of a booted system may end on
    # their own before `down` (all of them are checked gone below).
    assert inits <= set(down.killed)
    _assert_gone(lc, pids)
    assert hosts.launched_pids(lc.config) == []  # no host survived without its namespace


@pytest.mark.lab
@needs_lab
def test_down_cleans_a_half_built_lab_with_strangers_in_the_controller() -> None:
    lc = Lab(lab_name("half"), solvers=1)
    cfg = lc.config
    try:
        hosts.create_controller(cfg)
        hosts.wire(cfg, cfg.host("lb1"))  # wired, never booted
        sleeper = subprocess.Popen(lc.controller_argv(["sleep", "60"]), start_new_session=True)
        wait_for(lambda: _lab_processes(lc), timeout=5, what="the sleeper to enter the lab")
    finally:
        down = lc.down()
    sleeper.wait(timeout=5)
    assert sleeper.pid in down.killed
    assert sorted(down.namespaces) == sorted([cfg.controller_netns, cfg.netns_for("lb1")])
    _assert_gone(lc, [sleeper.pid])
    assert lc.down().namespaces == []  # and again: nothing to do


@pytest.mark.lab
@needs_lab
def test_a_namespace_name_for_the_machine_itself_is_refused() -> None:
    # Only harmless calls here: if the guard ever broke, they would merely read.
    name = f"{Lab(lab_name('guard')).config.prefix}solver1"
    subprocess.run(["ip", "netns", "attach", name, str(os.getpid())], check=True)
    try:
        for call in (
            lambda: netns.pids_by_netns([name]),
            lambda: netns.ip_in(name, "link", "show"),
            lambda: netns.ssh_banner(name, "127.0.0.1"),
        ):
            with pytest.raises(LabError, match="machine's own network namespace"):
                call()
    finally:
        subprocess.run(["ip", "netns", "del", name], check=True)


# -- pure logic ---------------------------------------------------------------------------------


@pytest.mark.unit
def test_addressing_plan_and_names() -> None:
    cfg = LabConfig.for_name("ci7", solvers=3)
    assert cfg.prefix == "sf-ci7-" and cfg.controller_netns == "sf-ci7-ctl"
    assert [(h.name, h.group, h.address) for h in cfg.hosts] == [
        ("lb1", "lb", "198.51.100.10"),
        ("collector1", "collector", "198.51.100.20"),
        ("solver1", "solvers", "198.51.100.101"),
        ("solver2", "solvers", "198.51.100.102"),
        ("solver3", "solvers", "198.51.100.103"),
    ]
    assert cfg.host("solver1").mac == "02:00:c6:33:64:65"
    assert LabConfig.for_name().prefix == "sf-"
    # The default lab never claims another lab's namespaces.
    assert LabConfig.for_name().owns_netns("sf-solver1")
    assert not LabConfig.for_name().owns_netns("sf-ci7-solver1")
    assert not LabConfig.for_name().owns_netns("sf-ctl2")
    with pytest.raises(LabError):
        LabConfig.for_name("Bad Name")
    with pytest.raises(LabError):
        LabConfig.for_name("x", solvers=155)


@pytest.mark.unit
def test_inventory_has_groups_and_runs_ssh_through_the_lab_config() -> None:
    cfg = LabConfig.for_name("ci7", state_dir="/var/tmp/x", solvers=2)
    text = inventory.render(cfg)
    # The operators' door on the balancer admits the controller (the gateway) only.
    lb = "lb1 ansible_host=198.51.100.10 solverfleet_lb_admin_allow=\"['198.51.100.1/32']\""
    assert f"[lb]\n{lb}\n" in text
    assert "[collector]\ncollector1 ansible_host=198.51.100.20\n" in text
    assert (
        "[solvers]\nsolver1 ansible_host=198.51.100.101\nsolver2 ansible_host=198.51.100.102"
        in (text)
    )
    for line in (
        "ansible_user=root",
        "ansible_ssh_private_key_file=/var/tmp/x/id_ed25519",
        "ansible_ssh_common_args='-F /var/tmp/x/ssh_config'",
        "ansible_control_path_dir=/var/tmp/x/ansible-cp",
    ):
        assert line in text.splitlines()


@pytest.mark.unit
def test_clear_errors_without_root_or_binaries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    result = CliRunner().invoke(lab_group, ["up", "--name", "nope"])
    assert result.exit_code == 1
    assert "solverfleet lab needs root (network namespaces)" in result.output
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(preflight, "which", lambda b: None if b == "sshd" else f"/usr/bin/{b}")
    assert preflight.problem() == ("solverfleet lab needs sshd: apt-get install -y openssh-server")
