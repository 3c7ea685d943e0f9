"""Reading a JSON request body from outside, for every surface (agent and collector).

``json.loads`` recurses once per nesting level (100,000 levels is a RecursionError, a 500)
and accepts any string escape and any size of number. ``loads`` first scans the raw text for
its nesting depth, a linear pass that counts brackets outside strings, and refuses a deep
document before parsing it; after parsing it walks the (now shallow) result once and refuses
text that is not valid (``textcheck``), whole numbers outside signed 64 bits, NaN/Infinity
and arrays longer than ``max_items``. Every refusal is a ``BodyError`` naming the limit.
"""

from __future__ import annotations

import json
import math
from typing import Any

from solverfleet.textcheck import int_problem, text_problem

MAX_DEPTH = 32  # the deepest real body (a team config) is 6 levels
MAX_ITEMS = 10_000  # items in any one JSON array, unless the caller says otherwise


class BodyError(ValueError):
    """A body that is not acceptable JSON; the message says why (for a 400)."""


def depth(text: str, limit: int) -> int:
    """The nesting depth of JSON ``text``, scanning no further once it passes ``limit``."""
    deepest = level = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            level += 1
            if level > deepest:
                deepest = level
                if deepest > limit:
                    return deepest
        elif char in "]}":
            level -= 1
    return deepest


def _reject_constant(name: str) -> Any:
    raise BodyError(f"{name} is not a number")


def loads(
    raw: bytes | str,
    *,
    max_depth: int = MAX_DEPTH,
    max_items: int = MAX_ITEMS,
    text: bool = True,
    **kwargs: Any,
) -> Any:
    """``raw`` parsed as JSON within the limits above; ``BodyError`` says what is wrong.

    ``text=False`` leaves strings to the caller (usage ingest cleans an already charged
    event's text instead of refusing it: a refused batch would stall the agent's spool)."""
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise BodyError("body is not UTF-8") from None
    if depth(raw, max_depth) > max_depth:
        raise BodyError(f"JSON nested deeper than {max_depth} levels")
    try:
        data = json.loads(raw, parse_constant=_reject_constant, **kwargs)
    except BodyError:
        raise
    except ValueError as exc:
        raise BodyError(f"malformed JSON: {exc}") from None
    check(data, max_items=max_items, text=text)
    return data


def check(data: Any, *, max_items: int = MAX_ITEMS, text: bool = True, where: str = "") -> None:
    """Refuse bad text, out-of-range numbers and long arrays anywhere in parsed ``data``."""
    stack: list[tuple[Any, str]] = [(data, where)]
    while stack:
        value, path = stack.pop()
        if isinstance(value, str):
            if not text:
                continue
            problem = text_problem(value, multiline=True)
            if problem:
                raise BodyError(f"{path or 'value'}: {problem}")
        elif isinstance(value, float):
            if not math.isfinite(value):  # 1e999 parses as inf without parse_constant
                raise BodyError(f"{path or 'value'}: number out of range")
        elif isinstance(value, bool) or value is None:
            continue
        elif isinstance(value, int):
            problem = int_problem(value)
            if problem:
                raise BodyError(f"{path or 'value'}: number {problem}")
        elif isinstance(value, dict):
            for key, item in value.items():
                problem = text and text_problem(key, multiline=False)
                if problem:
                    raise BodyError(f"{path or 'object'}: a field name {problem}")
                stack.append((item, f"{path}.{key}" if path else key))
        elif isinstance(value, list):
            if len(value) > max_items:
                raise BodyError(f"{path or 'array'}: more than {max_items} items")
            stack.extend((item, f"{path}[{i}]") for i, item in enumerate(value))
