"""Hypothesis strategies for hostile input: text that is not valid text, numbers out of any
range, deep or long structures. Shared by the agent and collector fuzzers
(tests/unit/test_hostile_fuzz.py)."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from hypothesis import strategies as st

# Each one a past or plausible failure: lone surrogates, NUL and other controls, terminal
# escapes, line breaks where one line is expected, huge digit strings, lookalike digits.
NASTY_TEXT = [
    "\ud800", "a\udfffb", "\x00", "x\x00y", "\x07", "\x1b[31mred", "\x7f", "\x85", "\u2028",
    "a\nb", "\t", "\r\n", "", " ", "ENV:HOME", "../../etc/passwd", "%00", "<script>x</script>",
    "9" * 30, "²", "١٢٣", "-0", "1e999", "NaN", "x" * 5000,
]  # fmt: skip
NASTY_NUMBERS = [
    2**63, 2**63 - 1, -(2**63) - 1, 2**64, 10**30, -(10**30), -1, 0, 1.5, 1e300, -0.0,
]  # fmt: skip

hostile_text = st.one_of(
    st.sampled_from(NASTY_TEXT),
    st.text(max_size=40),
    st.text(st.characters(codec=None, categories=["Cc", "Cs", "Zl", "Zp"]), max_size=8),
)
hostile_number = st.one_of(
    st.sampled_from(NASTY_NUMBERS),
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
)
hostile_scalar = st.one_of(hostile_text, hostile_number, st.booleans(), st.none())
hostile_value = st.one_of(
    hostile_scalar,
    st.lists(hostile_scalar, max_size=4),
    st.dictionaries(hostile_text, hostile_scalar, max_size=3),
)


def as_url_part(value: Any) -> str:
    """``value`` percent-encoded as one path segment or query value (surrogates as bytes)."""
    return quote(str(value).encode("utf-8", "surrogatepass"), safe="")


def query(fields: dict[str, Any]) -> str:
    return "&".join(f"{as_url_part(k)}={as_url_part(v)}" for k, v in fields.items())
