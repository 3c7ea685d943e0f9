"""One lab host's lifecycle: wire it into the controller's bridge, boot its init, inspect it,
destroy it. The controller namespace is wired here too; it runs no processes of its own."""

from __future__ import annotations

import subprocess
from collections.abc import Collection
from dataclasses import dataclass, field

from solverfleet_dev.lab import netns, nspawn
from solverfleet_dev.lab.config import BRIDGE, HOST_IFACE, HostSpec, LabConfig, LabError, mac_for

# Hosts start from a clean environment, as after a boot, not with the caller's venv and vars.
HOST_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "LANG": "C.UTF-8",
    "HOME": "/root",
}
UNSHARE = [
    "unshare",
    "--mount",
    "--uts",
    "--pid",
    "--fork",
    "--mount-proc",
    "--kill-child",
    "--propagation",
    "private",
]


# -- controller ---------------------------------------------------------------------------------


def create_controller(cfg: LabConfig) -> None:
    netns.add(cfg.controller_netns)
    netns.ip_batch_in(
        cfg.controller_netns,
        [
            "link set lo up",
            f"link add {BRIDGE} address {mac_for(cfg.gateway)} type bridge",
            f"addr add {cfg.gateway}/{cfg.prefixlen} dev {BRIDGE}",
            f"link set {BRIDGE} up",
            # Hosts route everything else here; answer "no route to host" at once instead of
            # dropping silently (that needs forwarding on). There is no link out of the lab.
            "route add unreachable default",
        ],
    )
    netns.write_sysctl(cfg.controller_netns, "net.ipv4.ip_forward", "1")
    netns.write_sysctl(cfg.controller_netns, "net.ipv4.icmp_ratelimit", "0")


def controller_ok(cfg: LabConfig) -> bool:
    if not netns.exists(cfg.controller_netns):
        return False
    try:
        links = netns.ip_json_in(cfg.controller_netns, "addr", "show", "dev", BRIDGE)
    except (LabError, ValueError):  # no bridge: not ok
        return False
    if not links or "UP" not in links[0].get("flags", []):
        return False
    return any(a.get("local") == cfg.gateway for a in links[0].get("addr_info", []))


def controller_links(cfg: LabConfig) -> dict[str, dict]:
    """Links in the controller namespace by name (one `ip` call for all hosts' veth ends)."""
    if not netns.exists(cfg.controller_netns):
        return {}
    return {link["ifname"]: link for link in netns.ip_json_in(cfg.controller_netns, "link")}


# -- hosts --------------------------------------------------------------------------------------


@dataclass
class HostState:
    spec: HostSpec
    netns_exists: bool = False
    wired: bool = False
    init_pid: int | None = None
    pids: list[int] = field(default_factory=list)

    @property
    def running(self) -> bool:
        return self.netns_exists and self.wired and self.init_pid is not None


def inspect(
    cfg: LabConfig, spec: HostSpec, ctl_links: dict[str, dict], pids: list[int]
) -> HostState:
    state = HostState(spec, netns_exists=netns.exists(spec.netns), pids=pids)
    if not state.netns_exists:
        return state
    state.init_pid = netns.init_of(pids)
    veth = ctl_links.get(spec.veth)
    if veth and veth.get("master") == BRIDGE and "UP" in veth.get("flags", []):
        try:
            addrs = netns.ip_json_in(spec.netns, "addr", "show", "dev", HOST_IFACE)
        except (LabError, ValueError):  # eth0 gone: not wired
            addrs = []
        state.wired = any(
            a.get("local") == spec.address for link in addrs for a in link.get("addr_info", [])
        )
    return state


def wire(cfg: LabConfig, spec: HostSpec) -> None:
    """A fresh netns whose eth0 is a veth into the controller's bridge."""
    netns.add(spec.netns)
    # Both veth ends are created inside the controller namespace, the peer moved straight into
    # the host: the root namespace never sees either end.
    netns.ip_batch_in(
        cfg.controller_netns,
        [
            f"link add {spec.veth} type veth"
            f" peer name {HOST_IFACE} address {spec.mac} netns {spec.netns}",
            f"link set {spec.veth} master {BRIDGE}",
            f"link set {spec.veth} up",
        ],
    )
    netns.ip_batch_in(
        spec.netns,
        [
            "link set lo up",
            f"addr add {spec.address}/{cfg.prefixlen} dev {HOST_IFACE}",
            f"link set {HOST_IFACE} up",
            # Like a real server, so facts such as ansible_default_ipv4 name the fleet address.
            # The controller has no route beyond the fleet /24: nothing leaves the lab.
            f"route add default via {cfg.gateway} dev {HOST_IFACE}",
        ],
    )


def boot(cfg: LabConfig, spec: HostSpec) -> None:
    """Start the host's init detached: `setsid -f` double-forks, so the host is nobody's child
    here (no zombies in a long-lived caller such as pytest) and survives the launching shell."""
    host_dir = cfg.host_dir(spec.name)
    host_dir.mkdir(parents=True, exist_ok=True)
    if cfg.init == "systemd":
        argv = nspawn.launcher_argv(cfg, spec.name)  # nspawn joins the namespace itself
    else:
        argv = netns.exec_argv(spec.netns, [*UNSHARE, "bash", str(cfg.init_script_path), spec.name])
    with open(host_dir / "console.log", "ab") as log:
        subprocess.run(
            ["setsid", "-f", *argv],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=HOST_ENV,
            check=True,
        )


def launched_pids(cfg: LabConfig, names: Collection[str] | None = None) -> list[int]:
    """This lab's host launchers (`unshare ... init.sh HOST` or `bash nspawn.sh HOST`), found
    by their exact argv: the script paths are unique per lab. Unlike `ip netns pids`, this still
    finds a host whose namespace was deleted under it (`ip netns del` by hand)."""
    head = [*UNSHARE, "bash", str(cfg.init_script_path)]
    systemd = nspawn.launched_pids(cfg, names)

    def ours(argv: list[str]) -> bool:
        return (
            len(argv) == len(head) + 1
            and argv[: len(head)] == head
            and (names is None or argv[-1] in names)
        )

    return systemd + netns.pids_with_argv(ours)


def stop(cfg: LabConfig, specs: Collection[HostSpec]) -> list[int]:
    """End the hosts' inits: systemd hosts power off in order (all at once), then every launcher
    is SIGKILLed; `--kill-child` takes a shell-init host's whole pid namespace with it."""
    names = [s.name for s in specs]
    stopped = nspawn.stop(cfg, specs)
    find = lambda: launched_pids(cfg, names)  # noqa: E731
    return stopped + netns.kill_until_gone(find, f"lab {cfg.name} hosts")


def destroy(cfg: LabConfig, spec: HostSpec, ctl_links: dict[str, dict]) -> list[int]:
    """Kill everything in the host, drop its veth and namespace. Keeps its overlay layers, so a
    repaired host comes back like a rebooted machine."""
    killed = stop(cfg, [spec]) + netns.kill_all([spec.netns])
    if spec.veth in ctl_links:
        # Deleting one veth end deletes both at once. The kernel may beat us to it: a namespace
        # whose last process just died takes its veth pair along, asynchronously.
        try:
            netns.ip_in(cfg.controller_netns, "link", "del", spec.veth)
        except LabError:
            if spec.veth in controller_links(cfg):
                raise
    netns.delete(spec.netns)
    return killed


def console_tail(cfg: LabConfig, host: str, lines: int = 15) -> str:
    try:
        text = (cfg.host_dir(host) / "console.log").read_text(errors="replace")
    except OSError:
        return "(no console.log)"
    return "\n".join(text.splitlines()[-lines:]) or "(console.log is empty)"
