"""Exact money: integer micro-units inside, decimal strings at every API edge.

One unit of currency (USD) is 1_000_000 micros. Floats never touch money: parsing rejects
them and formatting goes through ``Decimal``.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

MICROS_PER_UNIT = 1_000_000
CURRENCY = "USD"
_QUANTUM = Decimal("0.000001")
_PLAIN_DECIMAL = re.compile(r"-?[0-9]+(\.[0-9]+)?")
# Far above any real balance, far below BIGINT: 10^12 units is 10^18 micros.
MAX_UNITS = 10**12
# The largest single amount accepted anywhere (team config, top-up): 10^9 units keeps every
# sum of amounts far inside a signed 64-bit count of micros.
MAX_AMOUNT_MICROS = 10**15


class MoneyError(ValueError):
    """An amount that is not an exact, representable decimal."""


def to_micros(value: str | int | Decimal, *, allow_negative: bool = False) -> int:
    """Parse ``"25.00"``, ``"0.003"``, ``Decimal`` or an ``int`` of whole units into micros.

    Refuses floats (inexact), bools, non-finite values, more than 6 decimal places and,
    unless ``allow_negative``, negative amounts.
    """
    if isinstance(value, (bool, float)):
        raise MoneyError(f"amount must be a decimal string, not {type(value).__name__}")
    if isinstance(value, int):
        dec = Decimal(value)
    elif isinstance(value, Decimal):
        dec = value
    elif isinstance(value, str):
        text = value.strip()
        # Plain digits only: no exponents ("1e3"), underscores, NaN or Infinity.
        if not _PLAIN_DECIMAL.fullmatch(text):
            raise MoneyError(f"not a decimal amount: {value!r}")
        dec = Decimal(text)
    else:
        raise MoneyError(f"amount must be a decimal string, not {type(value).__name__}")
    if not dec.is_finite():
        raise MoneyError(f"not a finite amount: {value!r}")
    if abs(dec) >= MAX_UNITS:
        raise MoneyError(f"amount {value!r} is out of range")
    try:
        exact = dec == dec.quantize(_QUANTUM)
    except InvalidOperation:
        exact = False
    if not exact:
        raise MoneyError(f"amount {value!r} has more than 6 decimal places")
    if dec < 0 and not allow_negative:
        raise MoneyError(f"amount must not be negative: {value!r}")
    return int(dec * MICROS_PER_UNIT)


def from_micros(micros: int) -> Decimal:
    return Decimal(micros) / MICROS_PER_UNIT


def format_micros(micros: int) -> str:
    """``25_000_000 -> "25.00"``, ``3_000 -> "0.003"``: at least two decimals, no trailing noise."""
    if isinstance(micros, bool) or not isinstance(micros, int):
        raise MoneyError(f"micros must be an int, not {type(micros).__name__}")
    dec = from_micros(micros).normalize()
    exponent = dec.as_tuple().exponent
    if isinstance(exponent, int) and exponent > -2:
        dec = dec.quantize(Decimal("0.01"))
    return format(dec, "f")
