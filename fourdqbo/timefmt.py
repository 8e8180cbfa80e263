"""Time at the edges: parsing and formatting of every date/time format we meet, in one place.

Inside the program every datetime is timezone-aware UTC. This module converts from
4D's `...Z` strings, QBO's `-08:00` offsets and the command line, and formats for 4D's
`fromDate` (UTC, no zone suffix) and for display (UTC, `Z`).
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

_FRACTION = re.compile(r"\.(\d+)")


def utcnow() -> datetime:
    return datetime.now(UTC)


def parse_instant(text: str) -> datetime:
    """Parse an ISO 8601 date-time that carries a zone (`Z` or an offset) into aware UTC.

    Fractions of any length are accepted (truncated to microseconds). A naive value is
    rejected: we never guess a zone for data from an API.
    """
    if not isinstance(text, str) or not text.strip():
        raise ValueError("empty date-time")
    value = text.strip()
    if value.endswith(("Z", "z")):
        value = value[:-1] + "+00:00"
    value = _FRACTION.sub(lambda m: "." + m.group(1)[:6].ljust(6, "0"), value, count=1)
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"not an ISO 8601 date-time: {text!r}") from None
    if parsed.tzinfo is None:
        raise ValueError(f"date-time without a zone: {text!r}")
    return parsed.astimezone(UTC)


def parse_cli_datetime(text: str) -> datetime:
    """A date-time from the command line or a setting: `2025-03-01`, `2025-03-01T08:00`,
    `2025-03-01T08:00:00Z` or with an offset. A value without a zone is taken as UTC.
    """
    value = text.strip()
    if not value:
        raise ValueError("empty date-time")
    try:
        if re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", value):
            return datetime.combine(date.fromisoformat(value), datetime.min.time(), UTC)
        if value.endswith(("Z", "z")):
            value = value[:-1] + "+00:00"
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(
            f"not a date-time: {text!r} (use YYYY-MM-DD or YYYY-MM-DDTHH:MM:SS[Z])"
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def parse_cli_date(text: str) -> date:
    """A plain calendar date from the command line, `YYYY-MM-DD` exactly."""
    value = text.strip()
    if not re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", value):
        raise ValueError(f"not a date: {text!r} (use YYYY-MM-DD)")
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise ValueError(f"not a date: {text!r} (use YYYY-MM-DD)") from None


def fourd_datetime(moment: datetime) -> str:
    """4D's `fromDate` format: UTC, `YYYY-MM-DDTHH:mm:ss`, no zone suffix."""
    return _seconds_text(moment)


def iso_z(moment: datetime) -> str:
    """UTC with a `Z`, second precision: how times are shown and stored."""
    return _seconds_text(moment) + "Z"


def _seconds_text(moment: datetime) -> str:
    # isoformat, not strftime("%Y"): glibc does not zero-pad years below 1000.
    return to_utc(moment).replace(microsecond=0, tzinfo=None).isoformat(timespec="seconds")


def to_utc(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        raise ValueError("naive datetime")
    return moment.astimezone(UTC)


def local_date(moment: datetime, zone: str) -> date:
    """The calendar date of an instant in the practice's time zone."""
    return to_utc(moment).astimezone(load_zone(zone)).date()


def load_zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        # OSError: a name that is a folder of the zone database ("America").
        raise ValueError(f"unknown time zone {name!r}") from None


def seconds(value: float) -> timedelta:
    return timedelta(seconds=value)
