"""Lab naming, paths and the addressing plan: pure data, no side effects.

Every lab lives in its own controller namespace, so two labs may reuse the same addresses without
ever seeing each other. What must differ between parallel labs is what lives in shared places:
namespace names (``/run/netns``) and the state directory. Both derive from the lab name.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
from dataclasses import dataclass
from pathlib import Path

DEFAULT_NAME = "default"
DEFAULT_SOLVERS = 3
DEFAULT_PREFIX = "sf-"
# PID 1 of a lab host: systemd (systemd-nspawn --boot, the production shape) or a small shell
# init under which the roles run their services with supervisord.
INITS = ("systemd", "supervisor")
DEFAULT_INIT = "systemd"
STATE_ROOT = Path(os.environ.get("SOLVERFLEET_LAB_STATE_ROOT", "/var/tmp/solverfleet-lab"))

# The only range the lab ever uses; 192.0.2.0/24 is this machine's uplink, never touch it.
FLEET_NETWORK = ipaddress.IPv4Network("198.51.100.0/24")
GATEWAY = FLEET_NETWORK[1]
LB_ADDRESS = FLEET_NETWORK[10]
COLLECTOR_ADDRESS = FLEET_NETWORK[20]
# HAProxy's operators' door to the collector (roles/solverfleet_lb: solverfleet_lb_admin_port).
ADMIN_PORT = 8443
SOLVER_BASE = 100  # solverN = .(100 + N)
MAX_SOLVERS = FLEET_NETWORK.num_addresses - 2 - SOLVER_BASE  # .101 .. .254

CONTROLLER = "ctl"
BRIDGE = "br0"
HOST_IFACE = "eth0"

_NAME_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,23}")
_PREFIX_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,31}")
# A namespace belongs to a lab only if, after the prefix, it is exactly one of these names.
# That keeps `sf-` (the default lab) from ever matching `sf-t42-solver1` (another lab).
MEMBER_RE = re.compile(r"^(ctl|lb1|collector1|solver[1-9][0-9]*)$")


def mac_for(address: str) -> str:
    """A fixed, locally administered MAC per address (02:00 + the four octets). A rebuilt host
    keeps its MAC, so the neighbours' ARP caches stay right and it is reachable at once."""
    octets = ipaddress.IPv4Address(address).packed
    return "02:00:" + ":".join(f"{b:02x}" for b in octets)


class LabError(RuntimeError):
    """Anything the operator has to fix: missing root, binaries, a host that does not boot."""


@dataclass(frozen=True)
class HostSpec:
    name: str  # also the hostname and the ssh alias
    group: str  # Ansible group: lb, collector, solvers
    address: str
    netns: str

    @property
    def mac(self) -> str:
        return mac_for(self.address)

    @property
    def veth(self) -> str:
        """The host's veth end in the controller namespace (IFNAMSIZ: at most 15 chars)."""
        return f"ve-{self.name}"


@dataclass(frozen=True)
class LabConfig:
    name: str = DEFAULT_NAME
    prefix: str = DEFAULT_PREFIX
    state_dir: Path = STATE_ROOT / DEFAULT_NAME
    solvers: int = DEFAULT_SOLVERS
    init: str = DEFAULT_INIT

    @classmethod
    def for_name(
        cls,
        name: str = DEFAULT_NAME,
        *,
        prefix: str | None = None,
        state_dir: str | os.PathLike[str] | None = None,
        solvers: int = DEFAULT_SOLVERS,
        init: str = DEFAULT_INIT,
    ) -> LabConfig:
        if not _NAME_RE.fullmatch(name):
            raise LabError(f"bad lab name {name!r}: use 1-24 of a-z 0-9 _ - (starting alnum)")
        if prefix is None:
            prefix = DEFAULT_PREFIX if name == DEFAULT_NAME else f"{DEFAULT_PREFIX}{name}-"
        if not _PREFIX_RE.fullmatch(prefix):
            raise LabError(f"bad namespace prefix {prefix!r}: use 1-32 of A-Z a-z 0-9 _ . -")
        if init not in INITS:
            raise LabError(f"--init must be one of {', '.join(INITS)}, got {init!r}")
        path = Path(state_dir) if state_dir is not None else STATE_ROOT / name
        cfg = cls(name=name, prefix=prefix, state_dir=path.absolute(), init=init)
        return cfg.with_solvers(solvers)

    def with_solvers(self, solvers: int) -> LabConfig:
        if not 0 <= solvers <= MAX_SOLVERS:
            raise LabError(f"--solvers must be between 0 and {MAX_SOLVERS}, got {solvers}")
        return dataclasses.replace(self, solvers=solvers)

    # -- naming ---------------------------------------------------------------------------------

    @property
    def controller_netns(self) -> str:
        return f"{self.prefix}{CONTROLLER}"

    def netns_for(self, host: str) -> str:
        return f"{self.prefix}{host}"

    def machine_for(self, host: str) -> str:
        """systemd-nspawn's machine name: the namespace name, as a valid hostname."""
        return re.sub(r"[^A-Za-z0-9-]", "-", self.netns_for(host))

    @property
    def cgroup(self) -> str:
        """This lab's cgroup directory, below each hierarchy's root (one subdirectory a host)."""
        return f"solverfleet-lab/{self.name}"

    def owns_netns(self, netns: str) -> bool:
        return netns.startswith(self.prefix) and bool(MEMBER_RE.match(netns[len(self.prefix) :]))

    # -- addressing plan ------------------------------------------------------------------------

    @property
    def hosts(self) -> list[HostSpec]:
        plan = [("lb1", "lb", LB_ADDRESS), ("collector1", "collector", COLLECTOR_ADDRESS)]
        plan += [
            (f"solver{i}", "solvers", FLEET_NETWORK[SOLVER_BASE + i])
            for i in range(1, self.solvers + 1)
        ]
        return [HostSpec(n, g, str(a), self.netns_for(n)) for n, g, a in plan]

    def host(self, name: str) -> HostSpec:
        for spec in self.hosts:
            if spec.name == name:
                return spec
        known = ", ".join(h.name for h in self.hosts)
        raise LabError(f"no host {name!r} in lab {self.name!r} (hosts: {known})")

    @property
    def gateway(self) -> str:
        return str(GATEWAY)

    @property
    def prefixlen(self) -> int:
        return FLEET_NETWORK.prefixlen

    # -- files in the state directory -----------------------------------------------------------

    @property
    def lock_path(self) -> Path:
        # Beside the state dir, not in it: `down` deletes the state dir while holding the lock.
        return self.state_dir.with_name(f".{self.state_dir.name}.lock")

    @property
    def key_path(self) -> Path:
        return self.state_dir / "id_ed25519"

    @property
    def host_key_path(self) -> Path:
        return self.state_dir / "ssh_host_ed25519_key"

    @property
    def ssh_config_path(self) -> Path:
        return self.state_dir / "ssh_config"

    @property
    def known_hosts_path(self) -> Path:
        return self.state_dir / "known_hosts"

    @property
    def inventory_path(self) -> Path:
        return self.state_dir / "inventory.ini"

    @property
    def state_file(self) -> Path:
        return self.state_dir / "lab.json"

    @property
    def init_script_path(self) -> Path:
        return self.state_dir / "init.sh"

    @property
    def etc_hosts_path(self) -> Path:
        return self.state_dir / "etc-hosts"

    @property
    def nspawn_script_path(self) -> Path:
        return self.state_dir / "nspawn.sh"

    def host_dir(self, host: str) -> Path:
        """Per host: sshd_config, console.log and the overlay layers (upper/, work/)."""
        return self.state_dir / "hosts" / host
