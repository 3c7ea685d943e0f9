"""The lab's inventory published into the checkout: ``inventory/lab/<name>.ini``.

The lab writes its inventory into its state dir (keys and SSH config sit beside it). Run from a
solverfleet checkout, ``lab up``/``reset``/``demo`` also put a copy under ``inventory/lab/`` next
to ``inventory/example/``, so ``ansible-playbook -i inventory/lab/<name>.ini`` works from the
repository; ``lab down`` removes it. The copy points at the state dir's absolute paths.
"""

from __future__ import annotations

from pathlib import Path

from solverfleet_dev.lab.lab import Lab


def checkout_inventory_dir(cwd: Path | None = None) -> Path | None:
    """``<checkout>/inventory/lab`` when ``cwd`` is a solverfleet checkout, else ``None``."""
    here = cwd or Path.cwd()
    if (here / "playbooks" / "site.yml").is_file() and (here / "inventory").is_dir():
        return here / "inventory" / "lab"
    return None


def publish(lab: Lab, directory: Path | None) -> Path | None:
    """Copy the lab's inventory to ``directory/<name>.ini``; the path, or ``None`` if none."""
    if directory is None or not lab.inventory_path.is_file():
        return None
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / f"{lab.name}.ini"
    tmp = target.with_suffix(".ini.tmp")
    tmp.write_text(lab.inventory_path.read_text())
    tmp.replace(target)
    return target


def withdraw(lab: Lab, directory: Path | None) -> None:
    """Remove ``directory/<name>.ini`` (after ``lab down``)."""
    if directory is not None:
        (directory / f"{lab.name}.ini").unlink(missing_ok=True)
