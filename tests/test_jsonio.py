"""JSON with money as Decimal: exact digits in, exact digits out."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fourdqbo import jsonio


def test_loads_gives_decimal_for_fractions_and_int_for_integers() -> None:
    value = jsonio.loads('{"Amount": 12.50, "Qty": 3, "Big": 12345678901234567890, "E": 1e2}')
    assert value["Amount"] == Decimal("12.50")
    assert isinstance(value["Amount"], Decimal)
    assert str(value["Amount"]) == "12.50"
    assert value["Qty"] == 3
    assert type(value["Qty"]) is int
    assert value["Big"] == 12345678901234567890
    assert isinstance(value["E"], Decimal)
    assert value["E"] == 100


def test_loads_accepts_bytes_and_unicode() -> None:
    raw = json.dumps({"Name": "José O'Brien-Ünal 山田"}, ensure_ascii=False).encode("utf-8")
    assert jsonio.loads(raw) == {"Name": "José O'Brien-Ünal 山田"}
    assert jsonio.loads('"\\u00e9"') == "é"


@pytest.mark.parametrize("text", ["NaN", "[Infinity]", '{"a": -Infinity}', "[1, NaN]"])
def test_loads_refuses_nan_and_infinity(text: str) -> None:
    # Regression: Python's json accepts these and gave a float NaN for an amount.
    with pytest.raises(json.JSONDecodeError):
        jsonio.loads(text)


@pytest.mark.parametrize("text", ["", "{", "[1,]", "{'a': 1}"])
def test_loads_refuses_invalid_json(text: str) -> None:
    with pytest.raises(ValueError):
        jsonio.loads(text)


def test_format_f_of_exponent_decimal_is_plain() -> None:
    # The property dumps relies on.
    assert format(Decimal("1E+2"), "f") == "100"
    assert format(Decimal("1.50E-3"), "f") == "0.00150"


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (Decimal("0.10"), "0.10"),
        (Decimal("12.50"), "12.50"),
        (Decimal("1E+2"), "100"),
        (Decimal("2.5E+3"), "2500"),
        (Decimal("1.50E-3"), "0.00150"),
        (Decimal("-3.333"), "-3.333"),
        (Decimal("0"), "0"),
        (Decimal("0.00"), "0.00"),
        (Decimal("123456789012345678901234567890.12"), "123456789012345678901234567890.12"),
    ],
)
def test_dumps_writes_decimal_digits_exactly(value: Decimal, text: str) -> None:
    assert jsonio.dumps(value) == text
    assert jsonio.dumps({"Amount": value}) == '{"Amount": ' + text + "}"
    # Valid JSON that reads back to the same number.
    assert jsonio.loads(jsonio.dumps(value)) == value


def test_dumps_never_goes_through_float() -> None:
    assert jsonio.dumps(Decimal("0.1") + Decimal("0.2")) == "0.3"
    assert jsonio.dumps(Decimal("1.10")) == "1.10"


@pytest.mark.parametrize(
    "value",
    [
        Decimal("NaN"),
        Decimal("sNaN"),
        Decimal("Infinity"),
        Decimal("-Infinity"),
        float("nan"),
        float("inf"),
        [1, {"a": Decimal("NaN")}],
    ],
)
def test_dumps_refuses_nan_and_infinity(value: Any) -> None:
    with pytest.raises(ValueError, match="cannot write"):
        jsonio.dumps(value)


@pytest.mark.parametrize("value", [{1, 2}, object(), b"bytes", {"a": [complex(1, 2)]}])
def test_dumps_refuses_unknown_types(value: Any) -> None:
    with pytest.raises(TypeError, match="cannot write"):
        jsonio.dumps(value)


def test_dumps_scalars_like_json() -> None:
    for value in [None, True, False, 0, -7, "text", 1.5, 1e16, ""]:
        assert jsonio.dumps(value) == json.dumps(value)


def test_dumps_unicode_unescaped_and_valid() -> None:
    value = {"Name": 'José O\'Brien "Jr" \\ 山田\n\t'}
    text = jsonio.dumps(value)
    assert "José" in text
    assert "山田" in text
    assert json.loads(text) == value


def test_dumps_dates_as_iso_text() -> None:
    value = {"TxnDate": date(2025, 3, 1), "At": datetime(2025, 3, 1, 8, 0, tzinfo=UTC)}
    assert json.loads(jsonio.dumps(value)) == {
        "TxnDate": "2025-03-01",
        "At": "2025-03-01T08:00:00+00:00",
    }


def test_dumps_nested_matches_json_layout() -> None:
    value = {"a": [1, {"b": [], "c": {}}, [2, [3]]], "d": {"e": None}, "t": (1, 2)}
    assert jsonio.dumps(value) == json.dumps(value)
    assert jsonio.dumps(value, indent=2) == json.dumps(value, indent=2)
    assert jsonio.dumps(value, indent=0) == json.dumps(value, indent=0)


def test_dumps_indent_with_decimals() -> None:
    text = jsonio.dumps({"Line": [{"Amount": Decimal("10.00")}]}, indent=2)
    assert text == '{\n  "Line": [\n    {\n      "Amount": 10.00\n    }\n  ]\n}'


def test_dumps_keys_become_strings() -> None:
    assert json.loads(jsonio.dumps({1: "a", "b": 2})) == {"1": "a", "b": 2}


# --- round trip -------------------------------------------------------------------------

# Bounded: an integer literal of more than 4300 digits is refused by Python's int().
decimals = st.decimals(
    min_value=Decimal("-1E+40"), max_value=Decimal("1E+40"), allow_nan=False, allow_infinity=False
)
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.text(max_size=20)
    | decimals
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner, max_size=5)
    ),
    max_leaves=25,
)


@given(json_values)
def test_round_trip(value: Any) -> None:
    assert jsonio.loads(jsonio.dumps(value)) == value
    assert jsonio.loads(jsonio.dumps(value, indent=2)) == value


@given(json_values)
def test_output_is_standard_json(value: Any) -> None:
    # Any strict JSON parser reads it (floats there, but it parses).
    json.loads(jsonio.dumps(value), parse_constant=lambda name: pytest.fail(name))


@given(decimals)
def test_decimal_round_trip_keeps_fraction_digits(value: Decimal) -> None:
    back = jsonio.loads(jsonio.dumps(value))
    assert back == value
    exponent = value.as_tuple().exponent
    assert isinstance(exponent, int)
    if exponent < 0:
        # A fraction stays a Decimal with the same number of fraction digits (0.10 -> 0.10).
        assert isinstance(back, Decimal)
        assert back.as_tuple().exponent == exponent
    else:
        assert type(back) is int


# --- the C encoder's text is the walk's text ---------------------------------------------

# Strings that hold the mark the compact path gives a Decimal (NUL), its escaped form and
# what it is made of: those must fall back to the walk, never come out unquoted.
tricky_text = st.text(alphabet=st.sampled_from(["\x00", "\\", "u", "0", '"', "1", ".", "-", "é"]))
tricky_values = st.recursive(
    scalars | tricky_text | st.dates() | st.datetimes(timezones=st.just(UTC)),
    lambda inner: (
        st.lists(inner, max_size=5)
        | st.dictionaries(tricky_text | st.text(max_size=8), inner, max_size=5)
    ),
    max_leaves=25,
)


def _walked(value: Any) -> str:
    parts: list[str] = []
    jsonio._encode(value, parts, None, 0)
    return "".join(parts)


@given(tricky_values)
def test_compact_dumps_is_the_same_text_as_the_walk(value: Any) -> None:
    assert jsonio.dumps(value) == _walked(value)


def test_a_string_holding_the_mark_stays_a_string() -> None:
    for text in ["\x00123", "\\u0000123", "a\x00", "\x00"]:
        value = {"Note": text, "Amount": Decimal("1.50")}
        assert jsonio.dumps(value) == _walked(value)
        assert jsonio.loads(jsonio.dumps(value)) == value
