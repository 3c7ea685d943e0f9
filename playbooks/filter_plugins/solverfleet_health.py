"""Filters for playbooks/health.yml: the fleet health rules, loaded from this checkout.

The rules live beside the probe in src/solverfleet/fleethealth/ (``rules``, ``colours``:
standard library only). The controller's Ansible Python need not have solverfleet installed,
so the package is loaded by file path, under a private name.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from typing import Any

_PACKAGE_DIR = Path(__file__).resolve().parents[2] / "src" / "solverfleet" / "fleethealth"
_PACKAGE = "_solverfleet_fleethealth"


def _rules() -> Any:
    if _PACKAGE not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            _PACKAGE, _PACKAGE_DIR / "__init__.py", submodule_search_locations=[str(_PACKAGE_DIR)]
        )
        assert spec is not None and spec.loader is not None
        package = importlib.util.module_from_spec(spec)
        sys.modules[_PACKAGE] = package  # where importing its modules looks it up
        spec.loader.exec_module(package)
    return importlib.import_module(f"{_PACKAGE}.rules")


class FilterModule:
    def filters(self) -> dict[str, Any]:
        rules = _rules()
        return {
            "solverfleet_health_report": rules.health_report,
            "solverfleet_health_probe_args": rules.probe_args,
            "solverfleet_health_default_colours": rules.default_colours,
        }
