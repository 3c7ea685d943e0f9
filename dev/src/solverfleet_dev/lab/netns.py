"""Network namespaces through iproute2, plus the two things `ip` cannot do fast: find the pids
in many namespaces at once, and open a socket inside a namespace from this process.

Safety: every link/address/route command goes through ``ip_in`` / ``ip_batch_in``, which always
pass ``-n NS`` — with a missing namespace `ip` fails instead of falling back to the root one.
Nothing in the lab ever configures the root namespace.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from solverfleet_dev.lab.config import LabError

NETNS_DIR = Path("/run/netns")
_CLONE_NEWNET = 0x40000000


def _run(argv: Sequence[str], *, stdin: str | None = None) -> str:
    proc = subprocess.run(list(argv), input=stdin, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip()
        raise LabError(f"`{' '.join(argv)}` failed ({proc.returncode}): {detail}")
    return proc.stdout


def list_netns() -> list[str]:
    """Names from /run/netns: what `ip netns list` prints, without a process per call."""
    try:
        return sorted(p.name for p in NETNS_DIR.iterdir())
    except FileNotFoundError:
        return []


def exists(netns: str) -> bool:
    return (NETNS_DIR / netns).exists()


def add(netns: str) -> None:
    _run(["ip", "netns", "add", netns])


def delete(netns: str) -> None:
    if exists(netns):
        _run(["ip", "netns", "del", netns])


def _machine_ns() -> tuple[int, int] | None:
    # PID 1's namespace; where PID 1 is not inspectable (some VMs), kthreadd's, which is
    # always the initial namespace.
    return _ns_id("/proc/1/ns/net") or _ns_id("/proc/2/ns/net")


def guard(netns: str) -> None:
    """Refuse a namespace name that is really the machine's own namespace (`ip netns attach`
    can name it): configuring or killing in it would hit the machine itself."""
    ident = _ns_id(NETNS_DIR / netns)
    if ident is not None and ident == _machine_ns():
        raise LabError(f"{netns} is the machine's own network namespace; refusing to touch it")


def ip_in(netns: str, *args: str) -> str:
    guard(netns)
    return _run(["ip", "-n", netns, *args])


def ip_batch_in(netns: str, lines: Iterable[str]) -> None:
    """Several `ip` commands in one process, all inside ``netns``."""
    guard(netns)
    _run(["ip", "-n", netns, "-batch", "-"], stdin="".join(f"{line}\n" for line in lines))


def ip_json_in(netns: str, *args: str) -> list[dict[str, Any]]:
    return json.loads(ip_in(netns, "-json", *args) or "[]")


def exec_argv(netns: str, argv: Sequence[str]) -> list[str]:
    return ["ip", "netns", "exec", netns, *argv]


# -- processes ----------------------------------------------------------------------------------


def _ns_id(path: str | os.PathLike[str]) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:  # the process exited, or it is a zombie (no ns links)
        return None
    return (st.st_dev, st.st_ino)


def pids_by_netns(names: Iterable[str]) -> dict[str, list[int]]:
    """For each namespace, the pids whose network namespace it is — `ip netns pids NS` for many
    namespaces in one pass over /proc (same test: st_dev/st_ino of /proc/PID/ns/net)."""
    wanted = {}
    for name in names:
        guard(name)
        ident = _ns_id(NETNS_DIR / name)
        if ident is not None:
            wanted[ident] = name
    found: dict[str, list[int]] = {name: [] for name in wanted.values()}
    if not wanted:
        return found
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            ident = _ns_id(f"/proc/{entry.name}/ns/net")
            if ident in wanted:
                found[wanted[ident]].append(int(entry.name))
    for pids in found.values():
        pids.sort()
    return found


def namespace_pid(pid: int) -> int | None:
    """The pid of ``pid`` inside its innermost pid namespace (NSpid's last field)."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("NSpid:"):
                    return int(line.split()[-1])
    except (OSError, ValueError):
        return None
    return None


def init_of(pids: Iterable[int]) -> int | None:
    """A host's init: of ``pids``, the process that is PID 1 of a pid namespace below ours."""
    for pid in pids:
        if namespace_pid(pid) == 1:
            return pid
    return None


def kill_until_gone(find: Callable[[], list[int]], what: str, timeout: float = 10.0) -> list[int]:
    """SIGKILL whatever ``find()`` returns until it returns nothing; returns what was killed.

    SIGKILL because `unshare --fork` ignores SIGTERM and a host's init (PID 1 of its pid
    namespace) only takes signals it handles. Loops because a dying process tree can fork."""
    killed: list[int] = []
    deadline = time.monotonic() + timeout
    while True:
        pids = find()
        if not pids:
            return killed
        if time.monotonic() > deadline:
            raise LabError(f"processes survived SIGKILL in {what}: {pids}")
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            killed.append(pid)
        time.sleep(0.01)


def kill_all(names: Iterable[str], *, timeout: float = 10.0) -> list[int]:
    """Kill every process in the namespaces: `ip netns pids NS | xargs kill -9`, until empty."""
    names = list(names)

    def find() -> list[int]:
        return [pid for group in pids_by_netns(names).values() for pid in group]

    return kill_until_gone(find, ", ".join(names), timeout)


def pids_with_argv(match: Callable[[list[str]], bool]) -> list[int]:
    """Pids whose command line satisfies ``match`` (zombies have none and never match)."""
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/cmdline", "rb") as fh:
                raw = fh.read()
        except OSError:
            continue
        if raw and match(raw.decode(errors="replace").rstrip("\0").split("\0")):
            found.append(int(entry.name))
    return sorted(found)


# -- sockets inside a namespace -----------------------------------------------------------------

_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd: int) -> None:
    if _libc.setns(fd, _CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


@contextlib.contextmanager
def entered(netns: str) -> Iterator[None]:
    """Run the body with this *thread* in ``netns``. Sockets created inside keep that namespace
    after the thread switches back, which is how we probe hosts without spawning processes."""
    guard(netns)
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        target = os.open(NETNS_DIR / netns, os.O_RDONLY)
        try:
            _setns(target)
            try:
                if _ns_id("/proc/thread-self/ns/net") != _ns_id(f"/proc/self/fd/{target}"):
                    raise LabError(f"setns into {netns} did not take effect")
                yield
            finally:
                _setns(home)
        finally:
            os.close(target)
    finally:
        os.close(home)


def write_sysctl(netns: str, key: str, value: str) -> None:
    """Set a per-namespace sysctl (``net.ipv4.ip_forward``) in ``netns``: /proc/sys/net shows
    the namespace of the thread that opens it."""
    if not key.startswith("net."):
        raise ValueError(f"only net.* sysctls are per network namespace: {key}")
    with entered(netns), open(f"/proc/sys/{key.replace('.', '/')}", "w") as fh:
        fh.write(value)


def ssh_banner(netns: str, address: str, port: int = 22, timeout: float = 1.0) -> str | None:
    """The SSH banner read from ``address`` inside ``netns``, or None when nothing answers."""
    try:
        with entered(netns):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    except OSError:
        return None
    with sock:
        sock.settimeout(timeout)
        try:
            sock.connect((address, port))
            banner = sock.recv(256).decode("ascii", "replace").strip()
        except OSError:
            return None
    return banner if banner.startswith("SSH-") else None
