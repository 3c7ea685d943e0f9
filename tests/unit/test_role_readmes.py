"""Role READMEs are generated from meta/argument_specs.yml (scripts/role_readmes.py): the
committed files must equal a fresh render, and a role's defaults and spec must name the same
variables with the same literal defaults."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("role_readmes", ROOT / "scripts" / "role_readmes.py")
role_readmes = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(role_readmes)

ROLE_DIRS = role_readmes.role_dirs()


def test_every_role_has_a_spec():
    assert {p.name for p in ROLE_DIRS} == {p.parent.name for p in ROOT.glob("roles/*/tasks")}


@pytest.mark.parametrize("role_dir", ROLE_DIRS, ids=lambda p: p.name)
def test_readme_is_the_render_of_the_spec(role_dir):
    committed = (role_dir / "README.md").read_text()
    assert committed == role_readmes.render(role_dir), (
        f"roles/{role_dir.name}/README.md differs from its meta/argument_specs.yml: "
        f"run `{role_readmes.COMMAND}` and commit the result"
    )


@pytest.mark.parametrize("role_dir", ROLE_DIRS, ids=lambda p: p.name)
def test_defaults_and_spec_agree(role_dir):
    assert role_readmes.spec_problems(role_dir) == []


def _copy_role(tmp_path: Path, name: str) -> Path:
    target = tmp_path / name
    shutil.copytree(ROOT / "roles" / name, target)
    return target


def test_an_edited_spec_is_drift(tmp_path):
    role = _copy_role(tmp_path, "solverfleet_worker")
    spec = role / "meta" / "argument_specs.yml"
    spec.write_text(spec.read_text().replace("Seconds to wait for it.", "Seconds to wait."))
    assert role_readmes.render(role) != (role / "README.md").read_text()


def test_a_default_missing_from_the_spec_and_a_wrong_literal_are_reported(tmp_path):
    role = _copy_role(tmp_path, "solverfleet_worker")
    defaults = role / "defaults" / "main.yml"
    text = defaults.read_text().replace(
        "solverfleet_worker_health_timeout: 60", "solverfleet_worker_health_timeout: 61"
    )
    defaults.write_text(text + "solverfleet_worker_unknown: 1\n")
    problems = role_readmes.spec_problems(role)
    assert any("solverfleet_worker_unknown is in defaults but in no spec" in p for p in problems)
    assert any("solverfleet_worker_health_timeout defaults to 61" in p for p in problems)


def test_ansible_markup_becomes_markdown():
    text = "C(a(b)) I(it) B(bold) U(https://x) L(docs,https://y) ENV(x)"
    assert role_readmes.markup(text) == "`a(b)` *it* **bold** <https://x> [docs](https://y) ENV(x)"
