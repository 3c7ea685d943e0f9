"""inventory/lab/<name>.ini: the lab's inventory copied into a checkout, removed on down."""

from __future__ import annotations

from pathlib import Path

import pytest

from solverfleet_dev.lab import inventory, repoinventory
from solverfleet_dev.lab.lab import Lab

pytestmark = pytest.mark.unit


def _checkout(root: Path) -> Path:
    (root / "playbooks").mkdir(parents=True)
    (root / "playbooks" / "site.yml").write_text("---\n")
    (root / "inventory" / "example").mkdir(parents=True)
    return root


def test_only_a_checkout_gets_an_inventory_dir(tmp_path: Path) -> None:
    assert repoinventory.checkout_inventory_dir(tmp_path) is None
    repo = _checkout(tmp_path / "repo")
    assert repoinventory.checkout_inventory_dir(repo) == repo / "inventory" / "lab"


def test_publish_copies_the_labs_inventory_and_withdraw_removes_it(tmp_path: Path) -> None:
    lab = Lab("pubtest", state_dir=tmp_path / "state")
    directory = _checkout(tmp_path / "repo") / "inventory" / "lab"
    assert repoinventory.publish(lab, directory) is None  # the lab never came up: nothing

    lab.inventory_path.parent.mkdir(parents=True)
    lab.inventory_path.write_text(inventory.render(lab.config))
    published = repoinventory.publish(lab, directory)
    assert published == directory / "pubtest.ini"
    text = published.read_text()
    assert text == lab.inventory_path.read_text()
    assert "[solvers]" in text and str(lab.config.key_path) in text  # absolute paths still work
    assert repoinventory.publish(lab, None) is None

    repoinventory.withdraw(lab, directory)
    assert not published.exists()
    repoinventory.withdraw(lab, directory)  # twice is fine
