"""What ships where: the runtime wheel (fleet hosts) against solverfleet-dev (dev/).

The runtime wheel is built the way `make wheelhouse` builds it and installed alone into a
throwaway venv; its `solverfleet --help` lists operator commands only. Installing the dev wheel
beside it adds the developer commands. No index is consulted: the runtime's dependencies come
from the venv running the tests, minus every solverfleet distribution it holds.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
import venv
import zipfile
from pathlib import Path

import pytest

from solverfleet.cli import main

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
DEV_PROJECT = tomllib.loads((REPO / "dev" / "pyproject.toml").read_text())
DEV_COMMANDS = set(DEV_PROJECT["project"]["entry-points"]["solverfleet.commands"])
# Paths of developer material in a wheel: none of them may reach a fleet host.
DEV_PATH = re.compile(
    r"(^|/)(solverfleet_dev|lab|examples)/|(^|/)(localstack|local|local_demo)\.py$"
)


def build_wheel(project: Path, dest: Path) -> Path:
    subprocess.run(
        [
            sys.executable, "-m", "pip", "wheel", "-q", "--disable-pip-version-check",
            "--no-deps", "-w", str(dest), str(project),
        ],
        check=True, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    (wheel,) = dest.glob("*.whl")
    return wheel


@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("wheels")
    return {
        "runtime": build_wheel(REPO, out / "runtime"),
        "dev": build_wheel(REPO / "dev", out / "dev"),
    }


def deps_only_site(dest: Path) -> Path:
    """The site-packages this process sees, without any solverfleet distribution: links."""
    dest.mkdir()
    sites = [Path(p) for p in sys.path if Path(p).name in {"site-packages", "dist-packages"}]
    for entry in (e for site in sites if site.is_dir() for e in site.iterdir()):
        name = entry.name.lower()
        skip = "solverfleet" in name or name.endswith(".pth") or (dest / entry.name).exists()
        if not skip:
            (dest / entry.name).symlink_to(entry)
    return dest


def pip_install(python: Path, wheel: Path) -> None:
    subprocess.run(
        [
            sys.executable, "-m", "pip", "--python", str(python), "install", "-q",
            "--disable-pip-version-check", "--no-deps", "--no-index", str(wheel),
        ],
        check=True, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def commands(bin_dir: Path) -> set[str]:
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "PYTHONHOME"}}
    out = subprocess.run(
        [str(bin_dir / "solverfleet"), "--help"],
        check=True, capture_output=True, text=True, timeout=60, env=env,
    ).stdout  # fmt: skip
    listing = out.split("Commands:\n", 1)[1]
    return {m.group(1) for m in re.finditer(r"^  (\S+)", listing, re.MULTILINE)}


def test_the_runtime_wheel_carries_no_developer_material(wheels):
    names = zipfile.ZipFile(wheels["runtime"]).namelist()
    assert "solverfleet/cli/__init__.py" in names and "solverfleet/agent/__init__.py" in names
    assert [n for n in names if DEV_PATH.search(n)] == []
    dev_names = zipfile.ZipFile(wheels["dev"]).namelist()
    assert "solverfleet_dev/lab/cli.py" in dev_names
    assert "solverfleet_dev/examples/team.yaml" in dev_names
    assert not any(n.startswith("solverfleet/") for n in dev_names)


def test_a_host_lists_operator_commands_only_and_the_dev_wheel_adds_its_own(wheels, tmp_path):
    target = tmp_path / "venv"
    venv.EnvBuilder(with_pip=False).create(target)
    python = target / "bin" / "python"
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip
    (Path(purelib) / "runtime_deps.pth").write_text(f"{deps_only_site(tmp_path / 'deps')}\n")

    pip_install(python, wheels["runtime"])
    operator = set(main.commands) - DEV_COMMANDS
    assert {"apply", "keys", "tokens"} <= operator
    assert commands(target / "bin") == operator

    pip_install(python, wheels["dev"])
    assert {"lab", "local"} <= DEV_COMMANDS
    assert commands(target / "bin") == operator | DEV_COMMANDS
