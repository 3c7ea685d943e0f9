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

from solverfleet import jsonbody, safeyaml
from solverfleet.teamconfig.problems import Invalid, Problems, TeamConfigError, join
from solverfleet.textcheck import text_problem

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
    if len(text.encode("utf-8", "surrogatepass")) > safeyaml.MAX_BYTES:
        raise TeamConfigError(f"document over {safeyaml.MAX_BYTES} bytes")
    if text.lstrip()[:1] in ("{", "["):
        if (
            jsonbody.depth(text.encode("utf-8", "surrogatepass")) > MAX_DEPTH
        ):  # before json.loads recurses away
            raise TeamConfigError(f"nested deeper than {MAX_DEPTH} levels")
        try:
            return json.loads(text, object_pairs_hook=_json_pairs)
        except json.JSONDecodeError as exc:
            json_error = f"invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
        except _DuplicateKey as exc:
            raise TeamConfigError(f"duplicate key {exc.key!r}") from None
        # A YAML flow mapping also starts with "{"; only blame JSON if YAML fails as well.
        try:
            return safeyaml.load(text)
        except yaml.YAMLError:
            raise TeamConfigError(json_error) from None
    try:
        return safeyaml.load(text)
    except safeyaml.DuplicateKey as exc:
        raise TeamConfigError(f"duplicate key {exc.key!r}{_yaml_where(exc, False)}") from None
    except safeyaml.YamlRefused as exc:
        raise TeamConfigError(str(exc)) from None
    except yaml.YAMLError as exc:
        raise TeamConfigError(f"invalid YAML{_yaml_where(exc)}") from None


class _DuplicateKey(Exception):
    def __init__(self, key: Any) -> None:
        self.key = key


def _json_pairs(pairs: list[tuple[str, Any]]) -> dict:
    out: dict = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKey(key)
        out[key] = value
    return out


def _yaml_where(exc: yaml.YAMLError, with_problem: bool = True) -> str:
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) if with_problem else None
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
    if isinstance(value, str) and text_problem(value, multiline=True):
        # Every string of a team file, once: no lone surrogates or control characters.
        problems.fail(path, text_problem(value, multiline=True) or "")
        return value
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
