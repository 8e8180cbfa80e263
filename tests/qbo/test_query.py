"""Query building: escaping that no string can break, SELECT shape, IN chunking."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fourdqbo.qbo import query as q


def parse_literal(text: str, start: int = 0) -> tuple[str, int]:
    """Read one QBO string literal at `start` the way QBO does; returns (value, end index)."""
    assert text[start] == "'", f"no literal at {start}: {text[start : start + 10]!r}"
    out: list[str] = []
    i = start + 1
    while i < len(text):
        char = text[i]
        if char == "\\":
            out.append(text[i + 1])
            i += 2
        elif char == "'":
            return "".join(out), i + 1
        else:
            out.append(char)
            i += 1
    raise AssertionError("unterminated literal")


def parse_in(condition: str, field: str) -> list[str]:
    """The values of `field IN ('a', 'b')`, checking that nothing follows the list."""
    prefix = f"{field} IN ("
    assert condition.startswith(prefix)
    values: list[str] = []
    i = len(prefix)
    while True:
        value, i = parse_literal(condition, i)
        values.append(value)
        if condition[i] == ")":
            assert i == len(condition) - 1, "text after the IN list"
            return values
        assert condition[i : i + 2] == ", "
        i += 2


def test_apostrophe_is_escaped_with_a_backslash() -> None:
    assert q.quote_literal("O'Brien") == "'O\\'Brien'"


def test_backslash_is_escaped_before_the_quote() -> None:
    assert q.quote_literal("a\\") == "'a\\\\'"
    assert q.quote_literal("\\'") == "'\\\\\\''"


def test_non_string_literal_is_refused() -> None:
    with pytest.raises(TypeError):
        q.quote_literal(12)  # type: ignore[arg-type]


@given(st.text())
def test_any_string_round_trips_through_its_literal(value: str) -> None:
    literal = q.quote_literal(value)
    parsed, end = parse_literal(literal)
    assert parsed == value
    assert end == len(literal)  # the literal cannot end before its last character


@given(st.text(alphabet=st.sampled_from(["'", "\\", "a", " ", ")", "é", "%", "O"])))
def test_a_value_cannot_inject_a_condition(value: str) -> None:
    statement = q.select("Customer", [q.condition_eq("DisplayName", value)])
    prefix = "SELECT * FROM Customer WHERE DisplayName = "
    assert statement.startswith(prefix)
    parsed, end = parse_literal(statement, len(prefix))
    assert parsed == value
    assert end == len(statement)


@given(st.lists(st.text(), min_size=1, max_size=20))
def test_in_condition_round_trips(values: list[str]) -> None:
    assert parse_in(q.condition_in("DocNumber", values), "DocNumber") == values


def test_in_condition_refuses_an_empty_list() -> None:
    with pytest.raises(ValueError):
        q.condition_in("DocNumber", [])


def test_select_with_every_clause() -> None:
    statement = q.select(
        "Invoice",
        ["DocNumber = '1'", "TotalAmt > '0'"],
        order_by="MetaData.LastUpdatedTime  desc",
        start=1001,
        max_results=1000,
    )
    assert statement == (
        "SELECT * FROM Invoice WHERE DocNumber = '1' AND TotalAmt > '0' "
        "ORDERBY MetaData.LastUpdatedTime desc STARTPOSITION 1001 MAXRESULTS 1000"
    )


def test_select_without_clauses() -> None:
    assert q.select("Item") == "SELECT * FROM Item"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"entity": "Invoice; DROP"},
        {"entity": "invoice"},
        {"entity": "Invoice", "order_by": "Id; x"},
        {"entity": "Invoice", "start": 0},
        {"entity": "Invoice", "max_results": 1001},
        {"entity": "Invoice", "max_results": 0},
    ],
)
def test_select_refuses_unsafe_or_impossible_clauses(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        q.select(**kwargs)


def test_field_names_are_checked() -> None:
    with pytest.raises(ValueError):
        q.condition_eq("DisplayName = 'x' OR", "y")
    with pytest.raises(ValueError):
        q.compare("DocNumber", "OR", "1")
    assert q.compare("TotalAmt", "like", "1%") == "TotalAmt LIKE '1%'"


def test_datetime_literal_is_utc_with_offset() -> None:
    pacific = timezone(timedelta(hours=-8))
    moment = datetime(2025, 3, 5, 10, 21, 33, 999, tzinfo=pacific)
    assert q.datetime_literal(moment) == "'2025-03-05T18:21:33+00:00'"
    assert q.datetime_literal(datetime(2025, 1, 1, tzinfo=UTC)) == "'2025-01-01T00:00:00+00:00'"


def test_datetime_literal_refuses_naive_times() -> None:
    with pytest.raises(ValueError):
        q.datetime_literal(datetime(2025, 1, 1))


def test_chunk_in_keeps_short_lists_whole() -> None:
    assert q.chunk_in("DocNumber", ["1", "2", "1"]) == ["DocNumber IN ('1', '2')"]
    assert q.chunk_in("DocNumber", []) == []


def test_chunk_in_splits_at_max_values() -> None:
    values = [str(n) for n in range(2500)]
    chunks = q.chunk_in("DocNumber", values, max_statement_chars=10**9)
    assert [len(parse_in(c, "DocNumber")) for c in chunks] == [1000, 1000, 500]


def test_chunk_in_splits_long_names_under_the_statement_budget() -> None:
    names = [f"{n}.O'Brién-{'x' * 40}" for n in range(300)]
    reserve = q.statement_reserve("Customer", ["Active IN (true, false)"])
    chunks = q.chunk_in("DisplayName", names, reserve=reserve)
    assert len(chunks) > 1
    for condition in chunks:
        statement = q.select(
            "Customer",
            ["Active IN (true, false)", condition],
            start=999_001,
            max_results=1000,
        )
        assert q.encoded_length(statement) <= q.MAX_STATEMENT_CHARS
    assert [v for c in chunks for v in parse_in(c, "DisplayName")] == names


def test_chunk_in_gives_an_oversized_value_its_own_condition() -> None:
    huge = "y" * 500
    chunks = q.chunk_in("Name", ["a", huge, "b"], max_statement_chars=100)
    assert [parse_in(c, "Name") for c in chunks] == [["a"], [huge], ["b"]]


def test_chunk_in_refuses_a_budget_with_no_room() -> None:
    with pytest.raises(ValueError):
        q.chunk_in("Name", ["a"], max_statement_chars=50, reserve=45)


@settings(max_examples=60)
@given(
    values=st.lists(st.text(max_size=60), max_size=80),
    budget=st.integers(min_value=40, max_value=600),
    max_values=st.integers(min_value=1, max_value=12),
)
def test_chunk_in_covers_every_value_once_within_limits(
    values: list[str], budget: int, max_values: int
) -> None:
    chunks = q.chunk_in("Name", values, max_statement_chars=budget, max_values=max_values)
    parsed = [parse_in(c, "Name") for c in chunks]
    assert [v for chunk in parsed for v in chunk] == list(dict.fromkeys(values))
    for condition, chunk in zip(chunks, parsed, strict=True):
        assert len(chunk) <= max_values
        assert q.encoded_length(condition) <= budget or len(chunk) == 1


def test_like_condition_keeps_the_wildcard_and_escapes_the_rest() -> None:
    assert q.condition_like("DisplayName", "1003.%") == "DisplayName LIKE '1003.%'"
    assert q.condition_like("DisplayName", "O'B%\\") == "DisplayName LIKE 'O\\'B%\\\\'"


def test_instant_param_is_utc_iso_with_offset_in_whole_seconds() -> None:
    pacific = timezone(timedelta(hours=-8))
    moment = datetime(2025, 3, 1, 9, 0, 0, 750000, tzinfo=pacific)
    assert q.instant_param(moment) == "2025-03-01T17:00:00+00:00"
    with pytest.raises(ValueError):
        q.instant_param(datetime(2025, 3, 1, 9, 0))
