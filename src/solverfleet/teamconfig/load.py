"""Reading a team config: YAML or JSON text into plain data, and ``ENV:NAME`` references.

Duplicate mapping keys are refused (PyYAML and ``json`` silently keep the last one).
``ENV:NAME`` strings anywhere in the data are replaced from an environment, field by field,
so one unset variable does not hide the others; the paths of resolved values are remembered
so that no message ever shows them.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

import yaml

from solverfleet.teamconfig.problems import Invalid, Problems, TeamConfigError, join

ENV_PREFIX = "ENV:"
MAX_DEPTH = 20


def read_text(path: str | os.PathLike[str] | Traversable) -> str:
    """A file's text (a path, or a package resource); an unreadable or non-UTF-8 file is a
    ``TeamConfigError``."""
    source = Path(path) if isinstance(path, str | os.PathLike) else path
    try:
        return source.read_text(encoding="utf-8")
    except OSError as exc:
        raise TeamConfigError(f"cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise TeamConfigError("not UTF-8 text") from None


def loads(text: str) -> Any:
    """Parse YAML or JSON text (chosen by content) into plain data, refusing duplicate keys."""
    if not text.strip():
        raise TeamConfigError("empty document")
    if text.lstrip()[:1] in ("{", "["):
        try:
            return json.loads(text, object_pairs_hook=_json_pairs)
        except json.JSONDecodeError as exc:
            json_error = f"invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
        except _DuplicateKey as exc:
            raise TeamConfigError(f"duplicate key {exc.key!r}") from None
        # A YAML flow mapping also starts with "{"; only blame JSON if YAML fails as well.
        try:
            return yaml.load(text, Loader=_StrictLoader)
        except (yaml.YAMLError, _DuplicateKey):
            raise TeamConfigError(json_error) from None
    try:
        return yaml.load(text, Loader=_StrictLoader)
    except _DuplicateKey as exc:
        raise TeamConfigError(f"duplicate key {exc.key!r}{exc.where}") from None
    except yaml.YAMLError as exc:
        raise TeamConfigError(f"invalid YAML{_yaml_where(exc)}") from None


class _DuplicateKey(Exception):
    def __init__(self, key: Any, where: str = "") -> None:
        self.key = key
        self.where = where


def _json_pairs(pairs: list[tuple[str, Any]]) -> dict:
    out: dict = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKey(key)
        out[key] = value
    return out


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate mapping keys (PyYAML silently keeps the last)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: set = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            try:
                duplicate = key in seen
            except TypeError:  # unhashable key; let PyYAML report it
                break
            if duplicate:
                mark = key_node.start_mark
                raise _DuplicateKey(key, f" at line {mark.line + 1} column {mark.column + 1}")
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _yaml_where(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None)
    where = f" at line {mark.line + 1} column {mark.column + 1}" if mark else ""
    return f"{where}: {problem}" if problem else where


# --- ENV: references --------------------------------------------------------------------------


def resolve_env(
    value: Any,
    env: Mapping[str, str] | None,
    problems: Problems,
    path: str = "",
    depth: int = 0,
) -> Any:
    """``value`` with every ``ENV:NAME`` string replaced by ``env[NAME]``.

    With ``env=None`` any ``ENV:`` value is an error. A value that cannot be resolved stays as
    it was, its problem recorded in ``problems``; a resolved one's path goes into
    ``problems.env_paths``. ``depth`` is how deep ``value`` sits in its document.
    """
    if isinstance(value, dict | list) and depth >= MAX_DEPTH:
        # A valid config is 5 levels deep; this keeps hostile input from recursing away.
        problems.fail(path, "nested too deeply")
        return None
    if isinstance(value, dict):
        return {
            k: resolve_env(v, env, problems, join(path, str(k)), depth + 1)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [
            resolve_env(v, env, problems, f"{path}[{i}]", depth + 1) for i, v in enumerate(value)
        ]
    try:
        return _resolve(value, env, problems, path)
    except Invalid:
        return value


def _resolve(value: Any, env: Mapping[str, str] | None, problems: Problems, path: str) -> Any:
    if not (isinstance(value, str) and value.startswith(ENV_PREFIX)):
        return value
    name = value[len(ENV_PREFIX) :]
    if not name:
        raise problems.fail(path, "empty ENV: reference")
    if env is None:
        raise problems.fail(path, f"ENV:{name} is not resolved (no environment here)")
    if name not in env:
        raise problems.fail(path, f"environment variable {name} is not set")
    problems.env_paths[path] = name
    return env[name]
