"""What every text field and number from outside must be: one validator for both surfaces.

A lone surrogate cannot be stored (UnicodeEncodeError at insert); a NUL or other control
character would be charged, logged and rendered raw. So text is refused, not cleaned: the
caller learns what is wrong. ``\\t``, ``\\n`` and ``\\r`` are allowed only in free (multi-line)
text; ids, keys, URLs and other single-line fields refuse them too.

Numbers are checked against the store's signed 64-bit columns: a larger one is an
``OverflowError`` at insert, so it is refused first.
"""

from __future__ import annotations

import re

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1

# C0 controls except tab/newline/carriage return, DEL, C1 controls, and UTF-16 surrogates
# (which only a \\udxxx JSON escape or a surrogateescape decode can produce).
_BAD_FREE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]")
_BAD_LINE = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


def text_problem(value: str, *, multiline: bool = False) -> str | None:
    """Why ``value`` is not acceptable text, or None."""
    found = (_BAD_FREE if multiline else _BAD_LINE).search(value)
    if found is None:
        return None
    char = found.group()
    what = "a lone surrogate" if "\ud800" <= char <= "\udfff" else "a control character"
    return f"contains {what} (U+{ord(char):04X}) at position {found.start()}"


def int_problem(value: int, low: int = INT64_MIN, high: int = INT64_MAX) -> str | None:
    """Why the whole number ``value`` is out of range, or None."""
    if low <= value <= high:
        return None
    return f"out of range ({low} to {high})"


def scrub(value: str, *, multiline: bool = False) -> str:
    """``value`` with every character ``text_problem`` refuses replaced by U+FFFD: for text
    that must be kept though it arrived bad (an already charged usage event)."""
    return (_BAD_FREE if multiline else _BAD_LINE).sub("\ufffd", value)
