"""Checks that fail early with an actionable message instead of a traceback halfway through `up`."""

from __future__ import annotations

import os
import shutil

from solverfleet.lab.config import LabError

# binary -> Debian package that ships it (lab/requirements-apt.txt lists the same packages).
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
# sshd lives in /usr/sbin, which is not always on a non-root PATH.
_EXTRA_PATH = "/usr/local/sbin:/usr/sbin:/sbin"


def which(binary: str) -> str | None:
    path = os.environ.get("PATH", "") + os.pathsep + _EXTRA_PATH
    return shutil.which(binary, path=path)


def missing_binaries() -> dict[str, str]:
    return {b: pkg for b, pkg in REQUIRED_BINARIES.items() if which(b) is None}


def problem() -> str | None:
    """Why the lab cannot run here, or None. Tests use this as their skip reason."""
    if os.geteuid() != 0:
        return "solverfleet lab needs root (network namespaces)"
    missing = missing_binaries()
    if missing:
        names = ", ".join(sorted(missing))
        packages = " ".join(sorted(set(missing.values())))
        return f"solverfleet lab needs {names}: apt-get install -y {packages}"
    return None


def check() -> None:
    reason = problem()
    if reason:
        raise LabError(reason)
