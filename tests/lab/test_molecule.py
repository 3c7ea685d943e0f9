"""`molecule test` for the scenarios in molecule/: default (site.yml, idempotence, a solve
through the balancer, the health play), rolling_update and blue_green. `make test` runs
`default`; SOLVERFLEET_MOLECULE_SCENARIOS=all (or a comma list) runs the others as well: about
3.5 min each on 2 cores, and test_site.py / test_blue_green.py already run those playbooks under
load on the shared lab fleet. Each scenario makes its
own lab (create = `lab reset`, destroy = `lab down`) named after this pytest process, so a lab a
killed run leaves behind is reaped by the next one; a finalizer takes it down by name whatever
happens. The wheelhouse is built once from this checkout for all of them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from solverfleet.process import Service
from solverfleet_dev.lab import Lab
from tests.support.ansible import REPO, VENV_BIN, build_wheelhouse
from tests.support.lab import lab_name, reap_stale_test_labs
from tests.support.labfleet import SKIP

pytestmark = [pytest.mark.lab, pytest.mark.skipif(SKIP is not None, reason=str(SKIP))]

# Scenario -> lab name suffix (lab names: at most 24 characters with the t<pid>- prefix).
SCENARIOS = {
    "default": "mol_default",
    "rolling_update": "mol_rolling",
    "blue_green": "mol_bluegreen",
}
SELECTED = os.environ.get("SOLVERFLEET_MOLECULE_SCENARIOS", "default")
RUN = set(SCENARIOS) if SELECTED == "all" else {s.strip() for s in SELECTED.split(",") if s}
if RUN - set(SCENARIOS):
    raise ValueError(f"SOLVERFLEET_MOLECULE_SCENARIOS: unknown {sorted(RUN - set(SCENARIOS))}")
PARAMS = [
    pytest.param(
        name,
        marks=pytest.mark.skipif(
            name not in RUN, reason=f"set SOLVERFLEET_MOLECULE_SCENARIOS=all (or {name}) to run"
        ),
    )
    for name in SCENARIOS
]
# One scenario: a lab boot, site.yml from bare hosts, then its own playbooks. Measured on 2 cores:
# 200-230 s each at load average 1-5, up to 18 min when other work held the load near 15.
SCENARIO_TIMEOUT = 1500


@pytest.fixture(scope="module")
def wheelhouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_wheelhouse(tmp_path_factory.mktemp("molecule-wheelhouse"))


@pytest.fixture
def molecule_lab(request: pytest.FixtureRequest) -> Iterator[Lab]:
    """The scenario's lab, by name: whatever molecule did, it is down after the test."""
    reap_stale_test_labs()
    lab = Lab(lab_name(SCENARIOS[request.node.callspec.params["scenario"]]))
    try:
        yield lab
    finally:
        lab.down()
        # `down` keeps what the plays wrote there (tokens, keys); destroy.yml removes it too.
        shutil.rmtree(lab.state_dir, ignore_errors=True)


def molecule_env(lab: Lab, wheelhouse: Path, ephemeral: Path) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("ANSIBLE_", "MOLECULE_", "SOLVERFLEET_"))
        or k == "SOLVERFLEET_LAB_STATE_ROOT"
    }
    env.update(
        # molecule/bin first: its ansible-playbook runs the venv's inside the lab's controller.
        PATH=os.pathsep.join([str(REPO / "molecule" / "bin"), str(VENV_BIN), env.get("PATH", "")]),
        SOLVERFLEET_MOLECULE_LAB=lab.name,
        SOLVERFLEET_WHEELHOUSE=str(wheelhouse),
        MOLECULE_EPHEMERAL_DIRECTORY=str(ephemeral),
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_FORCE_COLOR="0",
        NO_COLOR="1",
        PY_COLORS="0",
        PYTHONUNBUFFERED="1",
    )
    return env


@pytest.mark.timeout(SCENARIO_TIMEOUT + 120)
@pytest.mark.parametrize("scenario", PARAMS)
def test_molecule_scenario(
    scenario: str, molecule_lab: Lab, wheelhouse: Path, tmp_path: Path
) -> None:
    env = molecule_env(molecule_lab, wheelhouse, tmp_path / "ephemeral")
    run = Service(
        f"molecule-{scenario}",
        [str(VENV_BIN / "molecule"), "test", "-s", scenario],
        env=env,
        log_dir=tmp_path,
        cwd=REPO,
    )
    started = time.monotonic()
    run.start()
    try:
        returncode = run.proc.wait(SCENARIO_TIMEOUT)
    except subprocess.TimeoutExpired:
        returncode = None
    finally:
        run.stop()
    seconds = time.monotonic() - started
    print(f"\nmolecule test -s {scenario}: {seconds:.0f}s, exit {returncode}, log {run.log_path}")
    assert returncode == 0, (
        f"molecule test -s {scenario} "
        f"{'timed out' if returncode is None else f'exited {returncode}'} after {seconds:.0f}s\n"
        f"--- {run.log_path} tail ---\n{run.log_tail(120)}"
    )
    # Its own destroy took the lab down.
    assert not Lab(molecule_lab.name).status().exists, f"lab {molecule_lab.name} still up"
