"""Time at the edges: API instants to UTC, command-line dates, 4D's fromDate, local dates."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fourdqbo.timefmt import (
    fourd_datetime,
    iso_z,
    load_zone,
    local_date,
    parse_cli_date,
    parse_cli_datetime,
    parse_instant,
    to_utc,
    utcnow,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2025-03-01T08:00:00Z", datetime(2025, 3, 1, 8, 0, tzinfo=UTC)),
        ("2025-03-01T08:00:00z", datetime(2025, 3, 1, 8, 0, tzinfo=UTC)),
        ("2025-03-01T08:00:00+00:00", datetime(2025, 3, 1, 8, 0, tzinfo=UTC)),
        ("2025-03-01T08:00:00.1Z", datetime(2025, 3, 1, 8, 0, 0, 100000, tzinfo=UTC)),
        ("2025-03-01T08:00:00.12Z", datetime(2025, 3, 1, 8, 0, 0, 120000, tzinfo=UTC)),
        ("2025-03-01T08:00:00.123Z", datetime(2025, 3, 1, 8, 0, 0, 123000, tzinfo=UTC)),
        ("2025-03-01T08:00:00.1234Z", datetime(2025, 3, 1, 8, 0, 0, 123400, tzinfo=UTC)),
        ("2025-03-01T08:00:00.12345Z", datetime(2025, 3, 1, 8, 0, 0, 123450, tzinfo=UTC)),
        ("2025-03-01T08:00:00.123456Z", datetime(2025, 3, 1, 8, 0, 0, 123456, tzinfo=UTC)),
        ("2025-03-01T08:00:00.1234567Z", datetime(2025, 3, 1, 8, 0, 0, 123456, tzinfo=UTC)),
        ("2025-03-01T08:00:00.12345678Z", datetime(2025, 3, 1, 8, 0, 0, 123456, tzinfo=UTC)),
        ("2025-03-01T08:00:00.123456789Z", datetime(2025, 3, 1, 8, 0, 0, 123456, tzinfo=UTC)),
        # QBO's Pacific offsets: winter -08:00, summer -07:00.
        ("2025-01-15T16:30:00-08:00", datetime(2025, 1, 16, 0, 30, tzinfo=UTC)),
        ("2025-07-15T16:30:00-07:00", datetime(2025, 7, 15, 23, 30, tzinfo=UTC)),
        ("2025-07-15T16:30:00.5-07:00", datetime(2025, 7, 15, 23, 30, 0, 500000, tzinfo=UTC)),
        ("2025-12-31T23:59:59-08:00", datetime(2026, 1, 1, 7, 59, 59, tzinfo=UTC)),
        ("2025-03-01T05:30:00+05:30", datetime(2025, 3, 1, 0, 0, tzinfo=UTC)),
        ("  2025-03-01T08:00:00Z  ", datetime(2025, 3, 1, 8, 0, tzinfo=UTC)),
    ],
)
def test_parse_instant_to_utc(text: str, expected: datetime) -> None:
    parsed = parse_instant(text)
    assert parsed == expected
    assert parsed.tzinfo is UTC
    assert parsed.utcoffset() == timedelta(0)


@pytest.mark.parametrize(
    "text",
    [
        "2025-03-01T08:00:00",  # naive: never guess a zone for API data
        "2025-03-01T08:00:00.123",
        "2025-03-01",
        "",
        "   ",
        "yesterday",
        "2025-13-01T00:00:00Z",
        "2025-02-30T00:00:00Z",
        "2025-03-01T25:00:00Z",
    ],
)
def test_parse_instant_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        parse_instant(text)


def test_parse_instant_refuses_naive_with_a_clear_message() -> None:
    with pytest.raises(ValueError, match="without a zone"):
        parse_instant("2025-03-01T08:00:00")


@pytest.mark.parametrize("value", [None, 1700000000, b"2025-03-01T08:00:00Z"])
def test_parse_instant_refuses_non_text(value: object) -> None:
    with pytest.raises(ValueError):
        parse_instant(value)  # type: ignore[arg-type]


@given(st.datetimes(timezones=st.just(UTC)), st.integers(min_value=-14 * 60, max_value=14 * 60))
def test_parse_instant_round_trips_any_offset(moment: datetime, offset_minutes: int) -> None:
    zone = timezone(timedelta(minutes=offset_minutes))
    try:
        local = moment.astimezone(zone)
    except OverflowError:
        return  # near year 1 or 9999: not an instant any API sends
    assert parse_instant(local.isoformat()) == moment


# --- fourd_datetime and iso_z -----------------------------------------------------------


def test_fourd_datetime_is_utc_without_suffix() -> None:
    moment = datetime(2025, 3, 1, 8, 5, 9, 999999, tzinfo=UTC)
    assert fourd_datetime(moment) == "2025-03-01T08:05:09"


def test_fourd_datetime_converts_offsets_to_utc() -> None:
    moment = datetime(2025, 3, 1, 20, 0, tzinfo=timezone(timedelta(hours=-8)))
    assert fourd_datetime(moment) == "2025-03-02T04:00:00"


def test_fourd_datetime_pads_early_years_and_single_digits() -> None:
    assert fourd_datetime(datetime(999, 1, 2, 3, 4, 5, tzinfo=UTC)) == "0999-01-02T03:04:05"


def test_iso_z_format() -> None:
    moment = datetime(2025, 7, 15, 16, 30, 1, 500, tzinfo=timezone(timedelta(hours=-7)))
    assert iso_z(moment) == "2025-07-15T23:30:01Z"


@pytest.mark.parametrize("formatter", [fourd_datetime, iso_z, to_utc])
def test_naive_datetimes_are_refused_on_output(formatter: object) -> None:
    with pytest.raises(ValueError, match="naive"):
        formatter(datetime(2025, 3, 1, 8, 0))  # type: ignore[operator]


def test_iso_z_reads_back() -> None:
    moment = datetime(2025, 3, 1, 8, 0, 7, tzinfo=UTC)
    assert parse_instant(iso_z(moment)) == moment


def test_utcnow_is_aware_utc() -> None:
    now = utcnow()
    assert now.tzinfo is UTC
    assert abs((datetime.now(UTC) - now).total_seconds()) < 5


# --- command line -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2025-03-01", date(2025, 3, 1)),
        ("2024-02-29", date(2024, 2, 29)),
        (" 2025-12-31 ", date(2025, 12, 31)),
    ],
)
def test_parse_cli_date(text: str, expected: date) -> None:
    assert parse_cli_date(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "2025-02-30",
        "2025-02-29",
        "2025-13-01",
        "2025-00-10",
        "2025-2-1",
        "2025-02-1",
        "25-02-01",
        "20250201",
        "2025/02/01",
        "02/01/2025",
        "2025-02-01T00:00:00",
        "",
        "   ",
        "yesterday",
        "today",
        "٢٠٢٥-٠١-٠١",  # Arabic-Indic digits match \d, not YYYY-MM-DD
    ],
)
def test_parse_cli_date_is_strict(text: str) -> None:
    with pytest.raises(ValueError, match="use YYYY-MM-DD"):
        parse_cli_date(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2025-03-01", datetime(2025, 3, 1, tzinfo=UTC)),
        ("2025-03-01T08:00", datetime(2025, 3, 1, 8, 0, tzinfo=UTC)),
        ("2025-03-01T08:00:30", datetime(2025, 3, 1, 8, 0, 30, tzinfo=UTC)),
        ("2025-03-01 08:00:30", datetime(2025, 3, 1, 8, 0, 30, tzinfo=UTC)),
        ("2025-03-01T08:00:00Z", datetime(2025, 3, 1, 8, 0, tzinfo=UTC)),
        ("2025-03-01T08:00:00-08:00", datetime(2025, 3, 1, 16, 0, tzinfo=UTC)),
        ("2025-07-01T08:00:00-07:00", datetime(2025, 7, 1, 15, 0, tzinfo=UTC)),
        ("2025-03-01T08:00:00.250Z", datetime(2025, 3, 1, 8, 0, 0, 250000, tzinfo=UTC)),
    ],
)
def test_parse_cli_datetime(text: str, expected: datetime) -> None:
    parsed = parse_cli_datetime(text)
    assert parsed == expected
    assert parsed.tzinfo is UTC


@pytest.mark.parametrize(
    "text", ["", "  ", "yesterday", "2025-02-30", "2025-2-1", "2025-03-01T25:00", "03/01/2025"]
)
def test_parse_cli_datetime_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        parse_cli_datetime(text)


def test_parse_cli_datetime_error_shows_the_accepted_forms() -> None:
    with pytest.raises(ValueError, match="YYYY-MM-DD"):
        parse_cli_datetime("last tuesday")


# --- practice-local dates ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("instant", "expected"),
    [
        # Winter, EST = UTC-5: 04:59Z is still the previous evening.
        ("2025-01-15T04:59:59Z", date(2025, 1, 14)),
        ("2025-01-15T05:00:00Z", date(2025, 1, 15)),
        # Summer, EDT = UTC-4.
        ("2025-07-15T03:59:59Z", date(2025, 7, 14)),
        ("2025-07-15T04:00:00Z", date(2025, 7, 15)),
        # Spring forward, 2025-03-09 02:00 EST -> 03:00 EDT (07:00Z).
        ("2025-03-09T04:59:59Z", date(2025, 3, 8)),
        ("2025-03-09T05:00:00Z", date(2025, 3, 9)),
        ("2025-03-10T03:59:59Z", date(2025, 3, 9)),
        ("2025-03-10T04:00:00Z", date(2025, 3, 10)),
        # Fall back, 2025-11-02 02:00 EDT -> 01:00 EST (06:00Z).
        ("2025-11-02T03:59:59Z", date(2025, 11, 1)),
        ("2025-11-02T04:00:00Z", date(2025, 11, 2)),
        ("2025-11-03T04:59:59Z", date(2025, 11, 2)),
        ("2025-11-03T05:00:00Z", date(2025, 11, 3)),
        # New Year's Eve in New York is already the 1st in UTC.
        ("2026-01-01T03:00:00Z", date(2025, 12, 31)),
    ],
)
def test_local_date_in_new_york_across_dst(instant: str, expected: date) -> None:
    assert local_date(parse_instant(instant), "America/New_York") == expected


def test_local_date_other_zones() -> None:
    moment = parse_instant("2025-03-01T23:30:00Z")
    assert local_date(moment, "UTC") == date(2025, 3, 1)
    assert local_date(moment, "Asia/Tokyo") == date(2025, 3, 2)
    assert local_date(moment, "America/Los_Angeles") == date(2025, 3, 1)


def test_local_date_refuses_naive_and_unknown_zone() -> None:
    with pytest.raises(ValueError):
        local_date(datetime(2025, 3, 1), "America/New_York")
    with pytest.raises(ValueError, match="unknown time zone"):
        local_date(utcnow(), "America/Nowhere")


@pytest.mark.parametrize("name", ["Mars/Olympus", "America", "../etc/passwd", "/etc/localtime", ""])
def test_load_zone_refuses_with_value_error(name: str) -> None:
    # Regression: "America" (a folder of the zone database) raised IsADirectoryError.
    with pytest.raises(ValueError, match="unknown time zone"):
        load_zone(name)
