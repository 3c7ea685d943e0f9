"""Render each role's README.md from its meta/argument_specs.yml (the one source of role docs).

``python scripts/role_readmes.py`` rewrites every ``roles/*/README.md``; ``--check`` only
reports the ones that differ (``make role-readmes`` runs the former; tests/unit/
test_role_readmes.py fails on drift). Also compares a role's defaults with its spec, so a
variable cannot be added to one and forgotten in the other.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
ROLES = ROOT / "roles"
COMMAND = "make role-readmes"
HEADER = (
    "<!-- Generated from meta/argument_specs.yml by scripts/role_readmes.py: edit the spec, "
    f"then run `{COMMAND}`. -->"
)

# Ansible's documentation markup -> Markdown. L(text,url) first: its text may hold C().
_MARKUP = [
    (re.compile(r"\bL\(([^,()]+),\s*([^()]+)\)"), r"[\1](\2)"),
    (re.compile(r"\bU\(([^()]+)\)"), r"<\1>"),
    (re.compile(r"\b[COV]\(((?:[^()]|\([^()]*\))+)\)"), r"`\1`"),
    (re.compile(r"\bI\(([^()]+)\)"), r"*\1*"),
    (re.compile(r"\bB\(([^()]+)\)"), r"**\1**"),
]


def markup(text: str) -> str:
    for pattern, repl in _MARKUP:
        text = pattern.sub(repl, text)
    return text


def paragraphs(description: str | list[str] | None) -> list[str]:
    if description is None:
        return []
    items = [description] if isinstance(description, str) else description
    return [markup(item.strip()) for item in items]


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _default(option: dict, where: str | None) -> str:
    if "default" not in option:
        # Computed (or a table) in the role's defaults, too long for a cell: say where it is.
        return f"in [{where}]({where})" if where else ""
    value = option["default"]
    shown = value if isinstance(value, str) else json.dumps(value)
    return f"`{shown}`" if shown != "" else '`""`'


def _type(option: dict) -> str:
    kind = option.get("type", "str")
    return f"{kind} of {option['elements']}" if "elements" in option else kind


def options_table(options: dict, where: dict[str, str]) -> list[str]:
    lines = [
        "| Variable | Type | Default | Required | Choices | Description |",
        "|---|---|---|---|---|---|",
    ]
    for name, option in options.items():
        choices = ", ".join(f"`{c}`" for c in option.get("choices", []))
        text = "<br>".join(paragraphs(option.get("description")))
        required = "yes" if option.get("required") else ""
        row = [
            f"`{name}`",
            _type(option),
            _default(option, where.get(name)),
            required,
            choices,
            text,
        ]
        lines.append("| " + " | ".join(_cell(c) for c in row) + " |")
    return lines


def render(role_dir: Path) -> str:
    specs = yaml.safe_load((role_dir / "meta" / "argument_specs.yml").read_text())["argument_specs"]
    meta = yaml.safe_load((role_dir / "meta" / "main.yml").read_text()) or {}
    main = specs["main"]
    where = {name: path for path, values in default_files(role_dir).items() for name in values}
    out = [HEADER, "", f"# {role_dir.name}", "", f"**{markup(main['short_description'])}**", ""]
    for para in paragraphs(main.get("description")):
        out += [para, ""]
    out += ["## Variables", "", *options_table(main.get("options", {}), where), ""]
    for name, spec in specs.items():
        if name == "main":
            continue
        out += [f"## Entry point `{name}`", ""]
        if spec == main:
            out += ["The same as `main`.", ""]
            continue
        out += [f"**{markup(spec['short_description'])}**", ""]
        for para in paragraphs(spec.get("description")):
            out += [para, ""]
        shared = main.get("options", {})
        own = {k: v for k, v in spec.get("options", {}).items() if shared.get(k) != v}
        if len(own) < len(spec.get("options", {})):
            out += ["Takes the variables of `main`, and:", ""]
        out += [*options_table(own, where), ""]
    deps = [d["role"] if isinstance(d, dict) else d for d in meta.get("dependencies") or []]
    out += ["## Dependencies", "", ", ".join(f"`{d}`" for d in deps) or "None.", ""]
    license_ = (meta.get("galaxy_info") or {}).get("license")
    if license_:
        out += ["## License", "", license_, ""]
    return "\n".join(out).rstrip("\n") + "\n"


def default_files(role_dir: Path) -> dict[str, dict]:
    """The role's defaults per file (relative to the role): defaults/main.yml, or every
    YAML/JSON file under defaults/main/."""
    single = role_dir / "defaults" / "main.yml"
    files = [single] if single.is_file() else sorted((role_dir / "defaults" / "main").glob("*"))
    return {
        str(path.relative_to(role_dir)): yaml.safe_load(path.read_text()) or {}
        for path in files
        if path.suffix in {".yml", ".yaml", ".json"}
    }


def defaults(role_dir: Path) -> dict:
    merged: dict = {}
    for values in default_files(role_dir).values():
        merged.update(values)
    return merged


def _templated(value: object) -> bool:
    return isinstance(value, str) and "{{" in value


def spec_problems(role_dir: Path) -> list[str]:
    """Where the role's defaults and its spec disagree (names, and literal default values)."""
    specs = yaml.safe_load((role_dir / "meta" / "argument_specs.yml").read_text())["argument_specs"]
    main = specs["main"].get("options", {})
    # An entry point's own parameter (e.g. the release link) may have a role default too.
    known = {n: o for s in specs.values() for n, o in s.get("options", {}).items()}
    values = defaults(role_dir)
    role = role_dir.name
    problems = [f"{role}: {n} is in defaults but in no spec" for n in values if n not in known]
    problems += [f"{role}: {n} is in the main spec only" for n in main if n not in values]
    for name, value in values.items():
        option = known.get(name, {})
        if "default" in option and not _templated(value) and option["default"] != value:
            spec = option["default"]
            problems.append(f"{role}: {name} defaults to {value!r}, the spec says {spec!r}")
    return problems


def role_dirs(roles: Path = ROLES) -> list[Path]:
    return sorted(p for p in roles.iterdir() if (p / "meta" / "argument_specs.yml").is_file())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report READMEs that differ")
    args = parser.parse_args(argv)
    status = 0
    for role_dir in role_dirs():
        for problem in spec_problems(role_dir):
            print(problem, file=sys.stderr)
            status = 1
        readme, text = role_dir / "README.md", render(role_dir)
        if readme.is_file() and readme.read_text() == text:
            continue
        if args.check:
            print(f"{readme.relative_to(ROOT)} is stale: run `{COMMAND}`", file=sys.stderr)
            status = 1
        else:
            readme.write_text(text)
            print(f"wrote {readme.relative_to(ROOT)}")
    return status


if __name__ == "__main__":
    sys.exit(main())
