from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from solverfleet.money import MoneyError, format_micros, to_micros

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("text", "micros"),
    [("25.00", 25_000_000), ("0.003", 3_000), ("0", 0), ("1", 1_000_000), (" 2.5 ", 2_500_000)],
)
def test_parses_decimal_strings(text, micros):
    assert to_micros(text) == micros


@pytest.mark.parametrize(
    "bad",
    [0.1, True, "abc", "", "NaN", "Infinity", "0.0000001", None, [], "1e3", "1_000", "1e30", "+1"],
)
def test_refuses_inexact_or_non_decimal(bad):
    with pytest.raises(MoneyError):
        to_micros(bad)


def test_negative_only_when_allowed():
    with pytest.raises(MoneyError, match="negative"):
        to_micros("-1.00")
    assert to_micros("-1.00", allow_negative=True) == -1_000_000


@pytest.mark.parametrize(
    ("micros", "text"),
    [(25_000_000, "25.00"), (3_000, "0.003"), (0, "0.00"), (-1_500_000, "-1.50"), (1, "0.000001")],
)
def test_formats_with_at_least_two_decimals(micros, text):
    assert format_micros(micros) == text


@given(st.integers(min_value=-(10**17), max_value=10**17))
def test_round_trip_is_exact(micros):
    assert to_micros(format_micros(micros), allow_negative=True) == micros
    assert Decimal(format_micros(micros)) * 1_000_000 == micros
