"""The Lab: bring a set of namespace hosts up (idempotently), down, and run things in them."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from solverfleet_dev.lab import hosts, initscript, inventory, netns, nspawn, preflight, sshconf
from solverfleet_dev.lab.config import (
    DEFAULT_INIT,
    DEFAULT_NAME,
    DEFAULT_SOLVERS,
    FLEET_NETWORK,
    HostSpec,
    LabConfig,
    LabError,
)

# Where the roles put supervisord's config on shell-init hosts (solverfleet_supervisor_config).
SUPERVISOR_CONFIG = "/etc/solverfleet/supervisord.conf"
BOOT_TIMEOUT = 60.0  # s for every sshd to answer and systemd to finish; 5 hosts take ~3 s

# What `down` may delete in a state dir; anything else there (a user's --state-dir) is kept.
_STATE_FILES = (
    "id_ed25519",
    "id_ed25519.pub",
    "ssh_host_ed25519_key",
    "ssh_host_ed25519_key.pub",
    "ssh_config",
    "known_hosts",
    "inventory.ini",
    "lab.json",
    "init.sh",
    "nspawn.sh",
    "etc-hosts",
)
_STATE_DIRS = ("hosts", "ansible-cp")


@dataclass
class UpResult:
    started: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    seconds: float = 0.0


@dataclass
class DownResult:
    namespaces: list[str] = field(default_factory=list)
    killed: list[int] = field(default_factory=list)  # every process that was in the lab
    seconds: float = 0.0


@dataclass
class HostStatus:
    spec: HostSpec
    running: bool
    sshd: bool
    init_pid: int | None
    pids: list[int]


@dataclass
class LabStatus:
    name: str
    controller_netns: str
    controller_up: bool
    controller_pids: list[int]
    hosts: list[HostStatus]
    namespaces: list[str]  # every namespace of this lab that exists
    strays: list[str]  # of those, the ones not in the plan (e.g. after --solvers 1)

    @property
    def healthy(self) -> bool:
        return self.controller_up and all(h.running and h.sshd for h in self.hosts)

    @property
    def exists(self) -> bool:
        return bool(self.namespaces)


class Lab:
    """A named lab. Cheap to construct (no side effects); ``up()``/``down()`` do the work.

    ``solvers=None`` keeps the count of an existing lab (from its lab.json), else 3; the same
    for ``init`` (systemd or supervisor, default systemd). A running lab changes its init only
    through ``reset``.
    """

    def __init__(
        self,
        name: str = DEFAULT_NAME,
        *,
        solvers: int | None = None,
        prefix: str | None = None,
        state_dir: str | os.PathLike[str] | None = None,
        init: str | None = None,
    ) -> None:
        probe = LabConfig.for_name(name, prefix=prefix, state_dir=state_dir)
        saved = _read_json(probe.state_file)
        self.config = LabConfig.for_name(
            name,
            prefix=prefix if prefix is not None else saved.get("prefix"),
            state_dir=probe.state_dir,
            solvers=solvers if solvers is not None else saved.get("solvers", DEFAULT_SOLVERS),
            init=init if init is not None else saved.get("init", DEFAULT_INIT),
        )
        self._saved_init = saved.get("init")

    # -- what the lab looks like ----------------------------------------------------------------

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def hosts(self) -> list[HostSpec]:
        return self.config.hosts

    def host(self, name: str) -> HostSpec:
        return self.config.host(name)

    def address(self, host: str) -> str:
        return self.config.host(host).address

    @property
    def controller_netns(self) -> str:
        return self.config.controller_netns

    @property
    def gateway(self) -> str:
        return self.config.gateway

    @property
    def state_dir(self) -> Path:
        return self.config.state_dir

    @property
    def inventory_path(self) -> Path:
        return self.config.inventory_path

    @property
    def ssh_config_path(self) -> Path:
        return self.config.ssh_config_path

    @property
    def key_path(self) -> Path:
        return self.config.key_path

    def __repr__(self) -> str:
        cfg = self.config
        return f"Lab(name={cfg.name!r}, prefix={cfg.prefix!r}, solvers={cfg.solvers})"

    # -- lifecycle ------------------------------------------------------------------------------

    def up(self, solvers: int | None = None) -> UpResult:
        """Make the lab match the plan: create what is missing, rebuild what is broken, remove
        hosts beyond the solver count, keep what runs. Returns once every sshd answers (and,
        on systemd hosts, systemd has finished booting)."""
        preflight.check(self.config.init)
        if self._saved_init not in (None, self.config.init) and self.status().exists:
            raise LabError(
                f"lab {self.name!r} runs {self._saved_init} hosts; "
                f"`solverfleet lab reset --init {self.config.init}` to change that"
            )
        if solvers is not None:
            self.config = self.config.with_solvers(solvers)
        cfg = self.config
        result = UpResult()
        started = time.monotonic()
        with self._locked():
            self._write_files()
            if not hosts.controller_ok(cfg):
                # A half-built controller is rebuilt whole; hosts lose their veths with it and
                # are rebuilt below because they no longer count as wired.
                netns.kill_all([cfg.controller_netns])
                netns.delete(cfg.controller_netns)
                hosts.create_controller(cfg)
            ctl_links = hosts.controller_links(cfg)
            wanted = {h.netns: h for h in cfg.hosts}
            members = [n for n in netns.list_netns() if cfg.owns_netns(n)]
            pids = netns.pids_by_netns(members)
            for stray in sorted(set(members) - set(wanted) - {cfg.controller_netns}):
                name = stray[len(cfg.prefix) :]
                hosts.destroy(cfg, HostSpec(name, "", "", stray), ctl_links)
                result.removed.append(name)
            for spec in cfg.hosts:
                state = hosts.inspect(cfg, spec, ctl_links, pids.get(spec.netns, []))
                if state.running:
                    result.kept.append(spec.name)
                    continue
                hosts.destroy(cfg, spec, ctl_links)  # whatever is left of it, possibly nothing
                hosts.wire(cfg, spec)
                if cfg.init == "systemd":
                    sshd = sshconf.sshd_config(spec, nspawn.LAB_SSH_HOST_KEY)
                    nspawn.prepare(cfg, spec, sshd, cfg.etc_hosts_path.read_text())
                hosts.boot(cfg, spec)
                result.started.append(spec.name)
            deadline = time.monotonic() + BOOT_TIMEOUT
            self._wait_for_sshd(BOOT_TIMEOUT)
            if cfg.init == "systemd":
                for name in result.started:
                    nspawn.wait_running(self.host_exec, name, deadline - time.monotonic())
            self._save_state()
        result.seconds = time.monotonic() - started
        return result

    def down(self) -> DownResult:
        """Remove the lab entirely, also when it is only partly up: processes, mounts (they go
        with the hosts' mount namespaces), cgroup directories, namespaces, state. Idempotent."""
        preflight.check()
        cfg = self.config
        result = DownResult()
        started = time.monotonic()
        with self._locked():
            members = [n for n in netns.list_netns() if cfg.owns_netns(n)]
            # Hosts first, controller last: it holds the other end of every veth.
            members.sort(key=lambda n: n == cfg.controller_netns)
            doomed = set(hosts.launched_pids(cfg))
            doomed.update(pid for pids in netns.pids_by_netns(members).values() for pid in pids)
            doomed.update(hosts.stop(cfg, cfg.hosts) + netns.kill_all(members))
            nspawn.remove_lab_cgroups(cfg)
            result.killed = sorted(doomed)
            for name in members:
                netns.delete(name)
            result.namespaces = members
            self._remove_files()
        result.seconds = time.monotonic() - started
        return result

    def reset(self, solvers: int | None = None, init: str | None = None) -> UpResult:
        self.down()
        if init is not None:
            self.config = LabConfig.for_name(
                self.name,
                prefix=self.config.prefix,
                state_dir=self.state_dir,
                solvers=self.config.solvers,
                init=init,
            )
        self._saved_init = None
        return self.up(solvers)

    def status(self, probe_timeout: float = 1.0) -> LabStatus:
        preflight.check()
        cfg = self.config
        members = [n for n in netns.list_netns() if cfg.owns_netns(n)]
        pids = netns.pids_by_netns(members)
        ctl_links = hosts.controller_links(cfg)
        ctl_up = hosts.controller_ok(cfg)
        rows = []
        for spec in cfg.hosts:
            state = hosts.inspect(cfg, spec, ctl_links, pids.get(spec.netns, []))
            sshd = ctl_up and state.running and self._sshd_answers(spec, probe_timeout)
            rows.append(HostStatus(spec, state.running, sshd, state.init_pid, state.pids))
        planned = {h.netns for h in cfg.hosts} | {cfg.controller_netns}
        return LabStatus(
            name=cfg.name,
            controller_netns=cfg.controller_netns,
            controller_up=ctl_up,
            controller_pids=pids.get(cfg.controller_netns, []),
            hosts=rows,
            namespaces=sorted(members),
            strays=sorted(set(members) - planned),
        )

    # -- running things -------------------------------------------------------------------------

    def controller_argv(self, argv: Sequence[str]) -> list[str]:
        """``argv`` wrapped to run inside the controller namespace (for Popen-style callers)."""
        return netns.exec_argv(self.controller_netns, [str(a) for a in argv])

    def controller_exec(
        self,
        argv: Sequence[str],
        *,
        check: bool = False,
        capture: bool = True,
        timeout: float | None = None,
        env: Mapping[str, str] | None = None,
        cwd: str | os.PathLike[str] | None = None,
        input: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` in the controller namespace, where the fleet addresses are reachable
        (ansible-playbook, ssh, curl, load clients). ``env`` replaces the environment."""
        return _run(self.controller_argv(argv), check, capture, timeout, env, cwd, input)

    def host_argv(self, host: str, argv: Sequence[str]) -> list[str]:
        """``argv`` wrapped to run inside a host (its net, mount, uts, pid, and on systemd
        hosts ipc and cgroup namespaces), outside the host's own cgroup tree."""
        pid = self.init_pid(host)
        systemd = self.config.init == "systemd"
        spaces = ["--all"] if systemd else ["--mount", "--uts", "--net", "--pid"]
        # A clean environment, as after a login on the host: the caller's (a venv, pyenv shims
        # that cd to $PWD, a checkout under /tmp that a systemd host cannot see) stays out.
        clean = ["env", "-i", *(f"{k}={v}" for k, v in hosts.HOST_ENV.items())]
        return ["nsenter", f"--target={pid}", *spaces, "--wd=/root", "--", *clean, *map(str, argv)]

    def host_exec(
        self,
        host: str,
        argv: Sequence[str],
        *,
        check: bool = False,
        capture: bool = True,
        timeout: float | None = None,
        env: Mapping[str, str] | None = None,
        input: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` directly inside ``host``, without ssh."""
        return _run(self.host_argv(host, argv), check, capture, timeout, env, None, input)

    def ssh_argv(self, host: str, command: Sequence[str] = ()) -> list[str]:
        self.config.host(host)  # clear error for an unknown host
        ssh = ["ssh", "-F", str(self.ssh_config_path), host, *command]
        return self.controller_argv(ssh)

    def ssh(
        self, host: str, command: Sequence[str], *, check: bool = False, timeout: float = 30.0
    ) -> subprocess.CompletedProcess[str]:
        """Run a command on ``host`` over SSH from the controller namespace, like Ansible does."""
        return _run(self.ssh_argv(host, command), check, True, timeout, None, None, None)

    def service(
        self, host: str, action: str, service: str, *, timeout: float = 120.0
    ) -> subprocess.CompletedProcess[str]:
        """``action`` (start, stop, restart) a service the roles installed on ``host``, through
        the host's service manager, over SSH as an operator would."""
        if self.config.init == "systemd":
            argv = ["systemctl", action, service]
        else:
            argv = ["supervisorctl", "-c", SUPERVISOR_CONFIG, action, service]
        return self.ssh(host, argv, check=True, timeout=timeout)

    def init_pid(self, host: str) -> int:
        spec = self.config.host(host)
        pids = netns.pids_by_netns([spec.netns]).get(spec.netns, [])
        pid = netns.init_of(pids)
        if pid is None:
            raise LabError(f"host {host} of lab {self.name!r} is not running (solverfleet lab up)")
        return pid

    # -- internals ------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """One `up`/`down` at a time per lab, across processes."""
        lock = self.config.lock_path
        lock.parent.mkdir(parents=True, exist_ok=True)
        with open(lock, "w") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            yield

    def _write_files(self) -> None:
        cfg = self.config
        cfg.state_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(cfg.state_dir, 0o700)  # holds the lab's private keys
        (cfg.state_dir / "ansible-cp").mkdir(exist_ok=True)
        sshconf.ensure_keypair(cfg.key_path, f"solverfleet-lab-{cfg.name}")
        sshconf.ensure_keypair(cfg.host_key_path, f"solverfleet-lab-{cfg.name}-host")
        files = {
            cfg.ssh_config_path: sshconf.ssh_config(cfg),
            cfg.known_hosts_path: sshconf.known_hosts(cfg),
            cfg.inventory_path: inventory.render(cfg),
            cfg.init_script_path: initscript.render(cfg),
            cfg.nspawn_script_path: nspawn.render_launcher(cfg),
            cfg.etc_hosts_path: "".join(f"{h.address}\t{h.name}\n" for h in cfg.hosts),
        }
        for spec in cfg.hosts:
            cfg.host_dir(spec.name).mkdir(parents=True, exist_ok=True)
            files[cfg.host_dir(spec.name) / "sshd_config"] = sshconf.sshd_config(spec)
        for path, text in files.items():
            _write_atomic(path, text)

    def _remove_files(self) -> None:
        cfg = self.config
        for name in _STATE_FILES:
            (cfg.state_dir / name).unlink(missing_ok=True)
        for name in _STATE_DIRS:
            shutil.rmtree(cfg.state_dir / name, ignore_errors=True)
        with contextlib.suppress(OSError):
            cfg.state_dir.rmdir()  # only if nothing else is left in it
        cfg.lock_path.unlink(missing_ok=True)

    def _sshd_answers(self, spec: HostSpec, timeout: float = 1.0) -> bool:
        return netns.ssh_banner(self.controller_netns, spec.address, timeout=timeout) is not None

    def _wait_for_sshd(self, timeout: float) -> None:
        pending = {h.name: h for h in self.hosts}
        deadline = time.monotonic() + timeout
        while pending:
            for name, spec in list(pending.items()):
                if self._sshd_answers(spec, timeout=0.5):
                    del pending[name]
            if not pending:
                return
            if time.monotonic() > deadline:
                details = "\n".join(
                    f"--- {n} console.log:\n{hosts.console_tail(self.config, n)}" for n in pending
                )
                raise LabError(
                    f"lab {self.name!r}: sshd did not answer within {timeout:.0f}s on "
                    f"{', '.join(sorted(pending))}\n{details}"
                )
            time.sleep(0.02)

    def _save_state(self) -> None:
        cfg = self.config
        pids = netns.pids_by_netns([cfg.controller_netns, *(h.netns for h in cfg.hosts)])
        state = {
            "name": cfg.name,
            "prefix": cfg.prefix,
            "state_dir": str(cfg.state_dir),
            "solvers": cfg.solvers,
            "init": cfg.init,
            "network": str(FLEET_NETWORK),
            "controller": {
                "netns": cfg.controller_netns,
                "gateway": cfg.gateway,
                "pids": pids.get(cfg.controller_netns, []),
            },
            "hosts": [
                {
                    "name": h.name,
                    "group": h.group,
                    "address": h.address,
                    "netns": h.netns,
                    "init_pid": netns.init_of(pids.get(h.netns, [])),
                    "pids": pids.get(h.netns, []),
                }
                for h in cfg.hosts
            ],
            "inventory": str(cfg.inventory_path),
            "ssh_config": str(cfg.ssh_config_path),
            "private_key": str(cfg.key_path),
            "updated": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        _write_atomic(cfg.state_file, json.dumps(state, indent=2) + "\n")


def _run(
    argv: list[str],
    check: bool,
    capture: bool,
    timeout: float | None,
    env: Mapping[str, str] | None,
    cwd: str | os.PathLike[str] | None,
    input: str | None,
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv,
        check=check,
        capture_output=capture,
        text=True,
        timeout=timeout,
        env=dict(env) if env is not None else None,
        cwd=cwd,
        input=input,
        stdin=None if input is not None else subprocess.DEVNULL,
    )


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
