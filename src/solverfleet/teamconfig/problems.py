"""Team config problems: every error with its path, all of them at once.

A validator records a problem with ``fail(path, message)`` and carries on, so one pass reports
everything wrong (``users[0].keys[1].ip_allowlist[0]: ...``). A value that came from an
``ENV:NAME`` reference is never shown; messages name the variable instead.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

MAX_ERRORS = 50


def join(path: str, field: str) -> str:
    """The path of ``field`` inside ``path`` (``users[0]`` + ``id`` -> ``users[0].id``)."""
    return f"{path}.{field}" if path else field


class TeamConfigError(ValueError):
    """An invalid team config. ``errors`` lists every problem as ``"path: message"``."""

    def __init__(self, errors: list[str] | str) -> None:
        self.errors = [errors] if isinstance(errors, str) else list(errors)
        if len(self.errors) == 1:
            text = self.errors[0]
        else:
            text = f"{len(self.errors)} problems:\n" + "\n".join(f"  {e}" for e in self.errors)
        super().__init__(text)


class Invalid(Exception):
    """Internal: one field failed; already recorded."""


class Problems:
    """The problems found so far, at most one per path and ``MAX_ERRORS`` in all."""

    def __init__(self) -> None:
        self.errors: list[str] = []
        self.failed: set[str] = set()
        self.env_paths: dict[str, str] = {}  # path -> ENV name, so messages hide the value

    def fail(self, path: str, message: str) -> Invalid:
        # One message per path: an unresolved ENV: value is not also "not a decimal amount".
        if path not in self.failed and len(self.errors) < MAX_ERRORS:
            self.errors.append(f"{path or '(top level)'}: {message}")
        self.failed.add(path)
        return Invalid()

    def show(self, path: str, value: Any) -> str:
        """``value`` as a message may show it: the ENV: reference it came from, if any."""
        if path in self.env_paths:
            return f"(value of ENV:{self.env_paths[path]})"
        return repr(value)

    def source(self, path: str) -> str:
        """`` (value of ENV:NAME)`` when the value at ``path`` came from one, else ``""``."""
        return f" (value of ENV:{self.env_paths[path]})" if path in self.env_paths else ""

    def field(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run one field validator; on failure keep going so every problem is reported."""
        try:
            return fn(*args)
        except Invalid:
            return None

    def check(self) -> None:
        """Raise ``TeamConfigError`` with every problem, if any was found."""
        if self.failed:
            raise TeamConfigError(self.errors)
