"""The blue-green colours, as both sides of the fleet health report write and read them.

The colour table is ``solverfleet_colours`` in roles/solverfleet_common/defaults/main/
colours.json: the Ansible default that the roles and playbooks read, and the report's default
here. A colour reaches the probe on its command line as ``NAME:PORT:LINK`` (``format_colour``
writes it on the controller, ``parse_colour`` reads it on the host), and a host's colour.json
(its active colour and history) is read by ``parse_colour_state`` for the probe and for the
balancer's answer alike.

Standard library only: the probe imports this on a solver host, the rules in the controller's
Ansible Python, where solverfleet is not installed. The table is read only when asked for, since
a host has the package without the repository around it.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# This file is src/solverfleet/fleethealth/colours.py in the repository.
TABLE_FILE = (
    Path(__file__).resolve().parents[3]
    / "roles"
    / "solverfleet_common"
    / "defaults"
    / "main"
    / "colours.json"
)


def colour_table(path: Path = TABLE_FILE) -> dict[str, dict[str, Any]]:
    """``solverfleet_colours``: name -> {port, release_link, backend, service, suffix,
    node_offset}."""
    return json.loads(path.read_text())["solverfleet_colours"]


def default_colours(base_dir: str, table: dict[str, Any] | None = None) -> list[dict]:
    """``[{name, port, link, backend}]`` from a colour table (default: ``colour_table()``), blue
    first: the report takes the first colour as active when the balancer names none."""
    table = table or colour_table()
    return [
        {"name": name, "port": int(spec["port"]),
         "link": f"{base_dir.rstrip('/')}/{spec['release_link']}",
         "backend": spec.get("backend")}
        for name, spec in sorted(table.items(), key=lambda kv: kv[0] != "blue")
    ]  # fmt: skip


@dataclass(frozen=True)
class Colour:
    name: str
    port: int
    link: str


def format_colour(name: str, port: int | str, link: str) -> str:
    """The probe's ``--colour`` value; ``parse_colour`` reads it back."""
    return f"{name}:{int(port)}:{link}"


def parse_colour(text: str) -> Colour:
    """``NAME:PORT:LINK`` (the link is the colour's release symlink)."""
    parts = text.split(":", 2)
    if len(parts) != 3 or not parts[0] or not parts[2]:
        raise argparse.ArgumentTypeError(f"expected NAME:PORT:LINK, got {text!r}")
    try:
        port = int(parts[1])
    except ValueError:
        raise argparse.ArgumentTypeError(f"port must be a number in {text!r}") from None
    if not 0 < port < 65536:
        raise argparse.ArgumentTypeError(f"port out of range in {text!r}")
    return Colour(parts[0], port, parts[2])


def unreadable_colour_state(error: str) -> dict[str, Any]:
    """A colour.json that exists but says nothing usable."""
    return {"present": True, "active": None, "switches": 0, "last": None, "error": error}


def parse_colour_state(text: str | None, source: str = "") -> dict[str, Any]:
    """colour.json's text (None: no file, which means blue and no history) as the report shows
    it. ``source`` (the file's path) starts the error message when given."""
    if text is None:
        return {"present": False, "active": "blue", "switches": 0, "last": None, "error": None}
    try:
        data = json.loads(text)
        active, history = data["active"], data.get("history") or []
        if not isinstance(active, str) or not isinstance(history, list):
            raise TypeError("'active' must be a string and 'history' a list")
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        where = f"{source} is " if source else ""
        return unreadable_colour_state(f"{where}not valid colour state: {exc}")
    return {
        "present": True,
        "active": active,
        "switches": len(history),
        "last": history[-1] if history else None,
        "error": None,
    }
