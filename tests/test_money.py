"""Money: half-up rounding to cents and strict conversion of JSON amounts."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fourdqbo.money import CENT, MAX_AMOUNT, ZERO, cents, to_decimal


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("0.005", "0.01"),
        ("0.004", "0.00"),
        ("0.015", "0.02"),  # half-up, not banker's (half-even would give 0.02 too)
        ("0.025", "0.03"),  # half-even would give 0.02
        ("2.675", "2.68"),  # the float 2.675 is 2.67499..., Decimal is exact
        ("1.005", "1.01"),
        ("10", "10.00"),
        ("12.5", "12.50"),
        ("99.999", "100.00"),
        ("-0.005", "-0.01"),  # half away from zero for negatives
        ("-2.675", "-2.68"),
        ("-0.004", "0.00"),
        ("-1.234", "-1.23"),
        ("0", "0.00"),
    ],
)
def test_cents_rounds_half_up(value: str, expected: str) -> None:
    result = cents(Decimal(value))
    assert str(result) == expected
    assert result.as_tuple().exponent == -2


@pytest.mark.parametrize("value", ["-0.001", "-0.004", "-0", "-0.00"])
def test_cents_never_gives_negative_zero(value: str) -> None:
    # Regression: cents(Decimal("-0.001")) was Decimal("-0.00"), shown and sent as "-0.00".
    result = cents(Decimal(value))
    assert str(result) == "0.00"
    assert not result.is_signed()


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity", "sNaN"])
def test_cents_refuses_non_finite(value: str) -> None:
    with pytest.raises(ValueError, match="cannot round"):
        cents(Decimal(value))


def test_cents_of_huge_value_is_exact() -> None:
    # Regression: more than 28 digits made quantize signal InvalidOperation.
    value = Decimal("123456789012345678901234567890.125")
    assert cents(value) == Decimal("123456789012345678901234567890.13")


@given(
    st.decimals(
        min_value=Decimal("-1E+12"),
        max_value=Decimal("1E+12"),
        allow_nan=False,
        allow_infinity=False,
    )
)
def test_cents_is_within_half_a_cent(value: Decimal) -> None:
    result = cents(value)
    assert result.as_tuple().exponent == -2
    assert abs(result - value) <= Decimal("0.005")
    # Half-up: exactly half a cent always rounds away from zero.
    if abs(result - value) == Decimal("0.005"):
        assert abs(result) > abs(value)


@given(st.decimals(allow_nan=False, allow_infinity=False, places=2))
def test_cents_keeps_values_already_in_cents(value: Decimal) -> None:
    if value.is_zero():
        assert cents(value) == ZERO
    else:
        assert cents(value) == value


@given(st.decimals(min_value=-10_000, max_value=10_000, allow_nan=False, allow_infinity=False))
def test_cents_is_idempotent(value: Decimal) -> None:
    once = cents(value)
    assert cents(once) == once
    assert str(cents(once)) == str(once)


# --- to_decimal -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, Decimal("0")),
        ("", Decimal("0")),
        ("   ", Decimal("0")),
        (0, Decimal("0")),
        (125, Decimal("125")),
        ("12.50", Decimal("12.50")),
        (" 7.1 ", Decimal("7.1")),
        ("1e3", Decimal("1000")),
        (Decimal("3.333"), Decimal("3.333")),
        (0.1, Decimal("0.1")),  # through the float's shortest repr, not its binary value
        (2.675, Decimal("2.675")),
        (Decimal("99999999.99"), Decimal("99999999.99")),
    ],
)
def test_to_decimal_accepts(value: object, expected: Decimal) -> None:
    result = to_decimal(value, "Amount")
    assert isinstance(result, Decimal)
    assert result == expected


def test_to_decimal_keeps_the_digits() -> None:
    assert str(to_decimal("12.50", "Amount")) == "12.50"
    assert str(to_decimal(0.1, "Amount")) == "0.1"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (True, "Amount is not a number"),
        (False, "Amount is not a number"),
        ("abc", "Amount is not a number"),
        ("12,50", "Amount is not a number"),
        ("$5", "Amount is not a number"),
        ([1], "Amount is not a number"),
        ({"value": 1}, "Amount is not a number"),
        ("NaN", "Amount is not a finite number"),
        ("nan", "Amount is not a finite number"),
        ("sNaN", "Amount is not a finite number"),
        ("Infinity", "Amount is not a finite number"),
        ("-Infinity", "Amount is not a finite number"),
        (Decimal("NaN"), "Amount is not a finite number"),
        (float("nan"), "Amount is not a finite number"),
        (float("inf"), "Amount is not a finite number"),
        (MAX_AMOUNT, "Amount is out of range"),
        ("1e999999", "Amount is out of range"),
        (10**30, "Amount is out of range"),
        ("-1e999999", "Amount is out of range"),
        (-1, "Amount is negative"),
        ("-0.01", "Amount is negative"),
        (Decimal("-5"), "Amount is negative"),
    ],
)
def test_to_decimal_refuses(value: object, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        to_decimal(value, "Amount")
    assert str(caught.value) == message


def test_to_decimal_negative_allowed_when_asked() -> None:
    assert to_decimal("-12.5", "DiscountAmount", allow_negative=True) == Decimal("-12.5")
    assert to_decimal(-3, "DiscountAmount", allow_negative=True) == Decimal("-3")
    with pytest.raises(ValueError, match="out of range"):
        to_decimal("-1e12", "DiscountAmount", allow_negative=True)


def test_to_decimal_error_names_the_field_not_the_value() -> None:
    with pytest.raises(ValueError) as caught:
        to_decimal("Jane Doe", "Supplies[2].UnitCost")
    assert "Supplies[2].UnitCost" in str(caught.value)
    assert "Jane" not in str(caught.value)


@given(st.decimals(min_value=0, max_value=MAX_AMOUNT - CENT, allow_nan=False, places=4))
def test_to_decimal_round_trips_its_text(value: Decimal) -> None:
    assert to_decimal(str(value), "Amount") == value
    assert to_decimal(value, "Amount") == value
