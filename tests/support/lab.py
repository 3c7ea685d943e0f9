"""The `lab` fixture: a session-wide namespace lab (lb1, collector1, solver1..3) for tests that
need real hosts — Ansible roles, molecule, rolling updates. Import it where it is used (the
function is ``lab_fixture``, the fixture is named ``lab``, so ruff sees no redefinition):

    from tests.support.lab import lab_fixture  # noqa: F401

    @pytest.mark.lab
    def test_site(lab):
        lab.controller_exec(["ansible-playbook", "-i", str(lab.inventory_path), "site.yml"])

Each pytest process gets its own lab (name ``t<pid>``, namespaces ``sf-t<pid>-*``), so parallel
runs never collide; labs left by a killed run are removed by the next one.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
from collections.abc import Iterator

import psutil
import pytest

from solverfleet_dev.lab import Lab, preflight
from solverfleet_dev.lab.config import DEFAULT_PREFIX, MEMBER_RE
from solverfleet_dev.lab.netns import list_netns

SOLVERS = int(os.environ.get("SOLVERFLEET_LAB_TEST_SOLVERS", "3"))
_TEST_LAB_RE = re.compile(rf"^{re.escape(DEFAULT_PREFIX)}(t(\d+)(?:-[a-z0-9_]+)?)-([a-z0-9]+)$")


def lab_name(suffix: str = "") -> str:
    """A lab name unique to this pytest process (and ``suffix`` within it)."""
    return f"t{os.getpid()}{'-' + suffix if suffix else ''}"


def skip_reason() -> str | None:
    return preflight.problem()


def reap_stale_test_labs() -> list[str]:
    """Take down test labs whose pytest process is gone (killed by a timeout, ^C twice...)."""
    stale = set()
    for netns in list_netns():
        m = _TEST_LAB_RE.match(netns)
        if m and MEMBER_RE.match(m.group(3)) and not psutil.pid_exists(int(m.group(2))):
            stale.add(m.group(1))
    for name in sorted(stale):
        Lab(name).down()
    return sorted(stale)


@contextlib.contextmanager
def running_lab(name: str, solvers: int = SOLVERS, init: str = "systemd") -> Iterator[Lab]:
    """A lab that is up inside the block and gone after it, whatever happens inside."""
    lab = Lab(name, solvers=solvers, init=init)
    try:
        lab.up()
        yield lab
    finally:
        lab.down()


def root_namespace_fleet_config() -> list[str]:
    """Every address, route or rule of the root namespace that mentions the fleet range."""
    found = []
    for argv in (
        ["ip", "addr", "show"],
        ["ip", "-4", "route", "show", "table", "all"],
        ["ip", "-6", "route", "show", "table", "all"],
        ["ip", "-4", "rule", "show"],
    ):
        out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
        found += [f"{argv[1]}: {line}" for line in out.splitlines() if "198.51.100." in line]
    return found


@pytest.fixture(scope="session", name="lab")
def lab_fixture() -> Iterator[Lab]:
    reason = skip_reason()
    if reason:
        pytest.skip(reason)
    reap_stale_test_labs()
    with running_lab(lab_name()) as running:
        yield running
