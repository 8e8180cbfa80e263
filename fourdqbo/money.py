"""Money: Decimal from the moment it leaves JSON, rounded half-up to cents in one place."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal, InvalidOperation, localcontext
from typing import Any

CENT = Decimal("0.01")
ZERO = Decimal("0")
# A quote line above this is a data error, not a procedure (and keeps Decimal digits sane).
MAX_AMOUNT = Decimal("100000000")


def cents(value: Decimal) -> Decimal:
    """Round to cents, half-up (0.005 -> 0.01, -0.005 -> -0.01), the way invoices are rounded.

    A result of zero is always `0.00`, never `-0.00` (a tiny negative discount must not
    show or be sent as "-0.00").
    """
    if not value.is_finite():
        raise ValueError(f"cannot round {value} to cents")
    with localcontext() as context:
        # Enough digits for any magnitude: quantize signals rather than round when the
        # result has more digits than the context's precision (28 by default).
        context.prec = max(context.prec, value.adjusted() + 4)
        rounded = value.quantize(CENT, rounding=ROUND_HALF_UP)
    return rounded.copy_abs() if rounded.is_zero() else rounded


def to_decimal(value: Any, field: str, *, allow_negative: bool = False) -> Decimal:
    """Convert a JSON amount to Decimal; None means 0.

    Accepts ints, Decimals and numeric strings. Floats are converted through their
    shortest repr (the JSON layer parses to Decimal, so a float here is a caller's
    literal). Booleans, NaN, infinities, absurd magnitudes and (unless allowed)
    negative values raise ValueError naming the field, never the value's context.
    """
    if value is None:
        return ZERO
    if isinstance(value, bool):
        raise ValueError(f"{field} is not a number")
    if isinstance(value, Decimal):
        number = value
    elif isinstance(value, int):
        number = Decimal(value)
    elif isinstance(value, float):
        number = Decimal(repr(value))
    elif isinstance(value, str):
        text = value.strip()
        if not text:
            return ZERO
        try:
            number = Decimal(text)
        except InvalidOperation:
            raise ValueError(f"{field} is not a number") from None
    else:
        raise ValueError(f"{field} is not a number")
    if not number.is_finite():
        raise ValueError(f"{field} is not a finite number")
    if abs(number) >= MAX_AMOUNT:
        raise ValueError(f"{field} is out of range")
    if number < 0 and not allow_negative:
        raise ValueError(f"{field} is negative")
    return number
