"""playbooks/filter_plugins/solverfleet_health.py: health.yml's filters, loaded by the shim from
src/solverfleet/fleethealth by file path, in a Python that cannot import solverfleet (as the
controller's Ansible need not)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from solverfleet.fleethealth import rules

PLUGINS = Path(__file__).resolve().parents[2] / "playbooks" / "filter_plugins"
SHIM = PLUGINS / "solverfleet_health.py"
NOW = "2026-11-23T10:00:00+00:00"
FINDINGS = {"solvers": {"solver1": {"rc": 0, "stdout": "{}"}}, "collectors": {}, "lbs": {}}

_RUN = """
import importlib.util, json, sys
spec = importlib.util.spec_from_file_location("shim", sys.argv[1])
shim = importlib.util.module_from_spec(spec)
spec.loader.exec_module(shim)
filters = shim.FilterModule().filters()
try:
    import solverfleet
    sys.exit("solverfleet is importable here")
except ImportError:
    pass
colours = filters["solverfleet_health_default_colours"]("/opt/solverfleet")
print(json.dumps({
    "colours": colours,
    "args": filters["solverfleet_health_probe_args"](colours, ["/"]),
    "report": filters["solverfleet_health_report"](json.load(sys.stdin), {}, sys.argv[2]),
}))
"""


def test_filters_run_the_rules_where_solverfleet_is_not_installed():
    # -I -S: no PYTHONPATH, no site-packages.
    out = subprocess.run(
        [sys.executable, "-I", "-S", "-c", _RUN, str(SHIM), NOW],
        input=json.dumps(FINDINGS), capture_output=True, text=True, check=True,
    )  # fmt: skip
    got = json.loads(out.stdout)
    colours = rules.default_colours("/opt/solverfleet")
    assert got["colours"] == colours
    assert got["args"] == rules.probe_args(colours, ["/"])
    assert got["report"] == rules.health_report(FINDINGS, {}, NOW)
    assert got["report"]["unhealthy"]  # a real verdict, not an empty shell
