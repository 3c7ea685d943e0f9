"""Reading a JSON request body from outside, for every surface (agent and collector).

``json.loads`` recurses once per nesting level (100,000 levels is a RecursionError, a 500)
and accepts any string escape and any size of number. ``loads`` first scans the raw bytes for
their nesting depth, a linear pass that counts brackets outside strings (on a 2 MB usage
batch well under its parse time), and refuses a deep document before parsing it. After
parsing it walks the (now shallow) result once and refuses text that is not valid
(``textcheck``), whole numbers outside signed 64 bits, NaN/Infinity and arrays longer than
``max_items``. Every refusal is a ``BodyError`` naming the limit.
"""

from __future__ import annotations

import json
import math
import re
from itertools import accumulate
from typing import Any

from solverfleet.textcheck import int_problem, text_problem

MAX_DEPTH = 32  # the deepest real body (a team config) is 6 levels
MAX_ITEMS = 10_000  # items in any one JSON array, unless the caller says otherwise
_ESCAPE = re.compile(rb"\\.", re.DOTALL)
_NOT_STRUCTURAL = bytes(range(256)).translate(None, b'"[]{}')
_STEP = {ord("["): 1, ord("{"): 1, ord("]"): -1, ord("}"): -1}


class BodyError(ValueError):
    """A body that is not acceptable JSON; the message says why (for a 400)."""


def depth(raw: bytes) -> int:
    """The nesting depth of JSON ``raw``, in linear time and mostly in C: drop escape pairs,
    keep only quotes and brackets, drop what lies between quotes, then count."""
    kept = _ESCAPE.sub(b"", raw).translate(None, _NOT_STRUCTURAL)
    outside = b"".join(kept.split(b'"')[::2])  # with escapes gone, every quote toggles
    return max(accumulate(map(_STEP.__getitem__, outside)), default=0)


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
    if isinstance(raw, str):
        raw = raw.encode("utf-8", "surrogatepass")
    if depth(raw) > max_depth:
        raise BodyError(f"JSON nested deeper than {max_depth} levels")
    try:
        decoded = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise BodyError("body is not UTF-8") from None
    try:
        data = json.loads(decoded, parse_constant=_reject_constant, **kwargs)
    except BodyError:
        raise
    except ValueError as exc:
        raise BodyError(f"malformed JSON: {exc}") from None
    check(data, max_items=max_items, text=text)
    return data


def check(data: Any, *, max_items: int = MAX_ITEMS, text: bool = True) -> None:
    """Refuse bad text, out-of-range numbers and long arrays anywhere in parsed ``data``.

    One pass without paths (a usage batch holds 100,000 values); only a refusal looks up
    where the offending value sits, for its message."""
    stack = [data]
    while stack:
        value = stack.pop()
        kind = type(value)
        if kind is str:
            problem = text and text_problem(value, multiline=True)
        elif kind is dict:
            if text:
                for key in value:
                    problem = text_problem(key)
                    if problem:
                        raise BodyError(f"{_where(data, key, True)}: a field name {problem}")
            stack.extend(value.values())
            continue
        elif kind is list:
            problem = len(value) > max_items and f"more than {max_items} items"
            stack.extend(value)
        elif kind is int:
            problem = int_problem(value)
            problem = problem and f"number {problem}"
        elif kind is float:
            problem = not math.isfinite(value) and "number out of range"
        else:
            continue
        if problem:
            raise BodyError(f"{_where(data, value, False)}: {problem}")


def _where(data: Any, target: Any, is_key: bool) -> str:
    """The path of ``target`` (the object itself, or a field name) in ``data``."""
    stack: list[tuple[Any, str]] = [(data, "")]
    while stack:
        value, path = stack.pop()
        if value is target and not is_key:
            return path or "body"
        if isinstance(value, dict):
            for key, item in value.items():
                if key is target and is_key:
                    return path or "body"
                stack.append((item, f"{path}.{key}" if path else key))
        elif isinstance(value, list):
            stack.extend((item, f"{path}[{i}]") for i, item in enumerate(value))
    return "body"
