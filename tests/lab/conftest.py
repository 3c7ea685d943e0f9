"""The shared deployed fleet (tests.support.labfleet) for every lab module, and their order:
site.yml deploys first; modules that switch colours or stop services come after; the secret
scan comes last."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.labfleet import fleet_fixture, lab_wheelhouse_fixture  # noqa: F401

# Modules not listed run after these, in their usual order.
_ORDER = [
    "test_lab.py",
    "test_site.py",
    "test_production.py",
    "test_team.py",
    "test_blue_green.py",
    "test_health.py",
]
# ... and these after every other module: the secret scan looks at what the whole session did.
_LAST = ["test_secret_scan.py"]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # The hook sees the whole session: reorder only this folder's items, in their own slots.
    here = Path(__file__).parent
    slots = [i for i, item in enumerate(items) if item.path.parent == here]

    def rank(item: pytest.Item) -> int:
        name = item.path.name
        if name in _LAST:
            return len(_ORDER) + 1 + _LAST.index(name)
        return _ORDER.index(name) if name in _ORDER else len(_ORDER)

    ordered = sorted((items[i] for i in slots), key=rank)  # stable: module order kept
    for slot, item in zip(slots, ordered, strict=True):
        items[slot] = item
