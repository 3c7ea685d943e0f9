"""Shared pytest setup. Fixtures for a subsystem live in tests/support/<area>.py and are imported
by the test modules that use them."""

from __future__ import annotations

import pytest

# Helpers in tests/support assert too: their failures should show values, as a test's do.
pytest.register_assert_rewrite("tests.support")

# Fixtures shared across folders: the whole-fleet factory (both stores) and private MariaDB;
# and the logs of the services a failing test started, in its report.
pytest_plugins = ["tests.support.fleet", "tests.support.mariadb", "tests.support.servicelogs"]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Every test sits in exactly one tier; a test without a tier marker defaults by folder.
    tiers = {"unit", "integration", "lab", "chaos"}
    for item in items:
        if tiers.isdisjoint(m.name for m in item.iter_markers()):
            in_integration = "/integration/" in str(item.fspath)
            item.add_marker(pytest.mark.integration if in_integration else pytest.mark.unit)
