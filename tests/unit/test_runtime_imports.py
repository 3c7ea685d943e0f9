"""The runtime package never imports the developer distribution (solverfleet-dev, dev/).

Fleet hosts install the runtime wheel alone: an import of ``solverfleet_dev`` anywhere in
``src/solverfleet`` would fail there, possibly only on a rarely used path.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

RUNTIME = Path(__file__).resolve().parents[2] / "src" / "solverfleet"
DEV_PACKAGE = "solverfleet_dev"


def dev_imports(source: str) -> list[str]:
    """The modules of the dev package that ``source`` imports, at any depth (lazy imports too)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        found += [n for n in names if n == DEV_PACKAGE or n.startswith(DEV_PACKAGE + ".")]
    return found


def test_the_scan_sees_top_level_and_lazy_imports():
    source = "import solverfleet_dev.lab\ndef f():\n    from solverfleet_dev import local\n"
    assert dev_imports(source) == ["solverfleet_dev.lab", "solverfleet_dev"]
    assert dev_imports("import solverfleet\nfrom solverfleet.cli import main\n") == []


def test_the_runtime_never_imports_the_dev_package():
    files = sorted(RUNTIME.rglob("*.py"))
    assert len(files) > 50  # the scan reads the runtime package, not an empty folder
    offenders = {
        str(f.relative_to(RUNTIME)): hits for f in files if (hits := dev_imports(f.read_text()))
    }
    assert offenders == {}
