"""monitoring/'s alert rules pass ``promtool check rules`` and their unit tests
(``promtool test rules``: each alert fired from synthetic series). promtool comes with Debian's
prometheus package (scripts/install-system-deps.sh); the other checks of monitoring/ are
tests/unit/test_monitoring.py."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
MONITORING = Path(__file__).resolve().parents[2] / "monitoring"
RULES = MONITORING / "prometheus" / "solverfleet-alerts.yml"
RULE_TESTS = sorted((MONITORING / "tests").glob("*.yml"))


def promtool() -> str:
    path = shutil.which("promtool")
    assert path, "promtool is missing: `make system-deps` installs Debian's prometheus package"
    return path


def test_promtool_checks_the_rules_and_runs_their_unit_tests():
    check = subprocess.run(
        [promtool(), "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert RULE_TESTS
    run = subprocess.run(
        [promtool(), "test", "rules", *map(str, RULE_TESTS)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stdout + run.stderr
