"""Settings for every service: a dataclass per service, filled from a YAML file and the environment.

Precedence: dataclass default < file named by ``SOLVERFLEET_CONFIG`` (or passed in) <
``SOLVERFLEET_<FIELD>`` environment variables. Any string value may be ``ENV:NAME``; it is
resolved from the environment when loaded, and an unresolved one is an error. Unknown keys in
the file are an error, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml

from solverfleet import safeyaml

ENV_PREFIX = "SOLVERFLEET_"
CONFIG_FILE_VAR = "SOLVERFLEET_CONFIG"
T = TypeVar("T")


class SettingsError(ValueError):
    """A setting that is unknown, malformed or refers to an unset environment variable."""


def resolve_env_ref(value: Any, env: Mapping[str, str], where: str) -> Any:
    """``"ENV:NAME"`` -> ``env["NAME"]``; anything else unchanged."""
    if isinstance(value, str) and value.startswith("ENV:"):
        name = value[4:]
        if not name:
            raise SettingsError(f"{where}: empty ENV: reference")
        if name not in env:
            raise SettingsError(f"{where}: environment variable {name} is not set")
        return env[name]
    return value


def _coerce(value: Any, hint: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None or (isinstance(value, str) and value == "" and type(None) in args):
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], where)
    if origin in (list, tuple):
        if isinstance(value, str):
            items = [part.strip() for part in value.split(",") if part.strip()]
        elif isinstance(value, list | tuple):
            items = list(value)
        else:
            raise SettingsError(f"{where}: expected a list, got {value!r}")
        coerced = [_coerce(item, args[0] if args else str, where) for item in items]
        return tuple(coerced) if origin is tuple else coerced
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("1", "true", "yes", "on"):
            return True
        if isinstance(value, str) and value.lower() in ("0", "false", "no", "off"):
            return False
        raise SettingsError(f"{where}: expected true/false, got {value!r}")
    if hint in (int, float):
        if isinstance(value, bool):
            raise SettingsError(f"{where}: expected a number, got {value!r}")
        try:
            return hint(value)
        except (TypeError, ValueError):
            raise SettingsError(f"{where}: expected a number, got {value!r}") from None
    if hint is str:
        if isinstance(value, str | int) and not isinstance(value, bool):
            return str(value)
        raise SettingsError(f"{where}: expected a string, got {value!r}")
    return value


def load_settings(
    cls: type[T],
    *,
    env: Mapping[str, str] | None = None,
    file: str | os.PathLike[str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> T:
    """Build ``cls`` (a dataclass) from file, environment and explicit overrides, in that order."""
    env = os.environ if env is None else env
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    raw: dict[str, tuple[Any, str]] = {}

    path = file if file is not None else env.get(CONFIG_FILE_VAR)
    if path:
        try:
            loaded = safeyaml.load(Path(path).read_text()) or {}
        except OSError as exc:
            raise SettingsError(f"cannot read settings file {path}: {exc.strerror}") from None
        except yaml.YAMLError as exc:
            raise SettingsError(f"settings file {path} is not valid YAML: {exc}") from None
        if not isinstance(loaded, dict):
            raise SettingsError(f"settings file {path} must be a mapping")
        unknown = sorted(set(loaded) - names)
        if unknown:
            raise SettingsError(f"settings file {path}: unknown setting(s): {', '.join(unknown)}")
        for key, value in loaded.items():
            raw[key] = (value, f"{path}: {key}")

    for name in names:
        var = ENV_PREFIX + name.upper()
        if var in env:
            raw[name] = (env[var], var)

    for key, value in (overrides or {}).items():
        if key not in names:
            raise SettingsError(f"unknown setting: {key}")
        raw[key] = (value, key)

    values = {}
    for name, (value, where) in raw.items():
        value = resolve_env_ref(value, env, where)
        values[name] = _coerce(value, hints[name], where)
    try:
        return cls(**values)
    except TypeError as exc:
        raise SettingsError(str(exc)) from None
