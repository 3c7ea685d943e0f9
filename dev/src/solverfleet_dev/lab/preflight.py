"""Checks that fail early with an actionable message instead of a traceback halfway through `up`."""

from __future__ import annotations

import os
import shutil

from solverfleet_dev.lab.config import LabError

# binary -> Debian package that ships it (scripts/requirements-apt.txt lists the same packages).
REQUIRED_BINARIES = {
    "ip": "iproute2",
    "unshare": "util-linux",
    "nsenter": "util-linux",
    "setsid": "util-linux",
    "mount": "mount",
    "bash": "bash",
    "sshd": "openssh-server",
    "ssh": "openssh-client",
    "ssh-keygen": "openssh-client",
}
# Only systemd hosts need it (lab up --init systemd, the default).
NSPAWN = {"systemd-nspawn": "systemd-container", "systemd-id128": "systemd"}
# sshd lives in /usr/sbin, which is not always on a non-root PATH.
_EXTRA_PATH = "/usr/local/sbin:/usr/sbin:/sbin"


def which(binary: str) -> str | None:
    path = os.environ.get("PATH", "") + os.pathsep + _EXTRA_PATH
    return shutil.which(binary, path=path)


def missing_binaries(init: str = "systemd") -> dict[str, str]:
    wanted = REQUIRED_BINARIES | (NSPAWN if init == "systemd" else {})
    return {b: pkg for b, pkg in wanted.items() if which(b) is None}


def problem(init: str = "systemd") -> str | None:
    """Why the lab cannot run here, or None. Tests use this as their skip reason."""
    if os.geteuid() != 0:
        return "solverfleet lab needs root (network namespaces)"
    missing = missing_binaries(init)
    if missing:
        names = ", ".join(sorted(missing))
        packages = " ".join(sorted(set(missing.values())))
        return f"solverfleet lab needs {names}: apt-get install -y {packages}"
    return None


def check(init: str = "supervisor") -> None:
    reason = problem(init)
    if reason:
        raise LabError(reason)
