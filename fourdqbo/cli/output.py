"""Rendering for every command: rich tables on a terminal, plain text when piped, `--json`.

Commands build rows of plain values and hand them here; nothing else prints tables.
`--json` prints exactly one JSON document on stdout and nothing else there.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from fourdqbo import jsonio
from fourdqbo.errors import ConfigError
from fourdqbo.money import cents
from fourdqbo.timefmt import iso_z, parse_cli_date, parse_cli_datetime


@dataclass(frozen=True)
class Column:
    header: str
    justify: str = "left"  # "right" for money and counts


def stdout_is_terminal() -> bool:
    return sys.stdout.isatty()


def emit_json(document: Any) -> None:
    sys.stdout.write(jsonio.dumps(document, indent=2) + "\n")
    sys.stdout.flush()


def cell(value: Any) -> str:
    """How a value looks in a table: money with two decimals, times in UTC with Z."""
    if value is None:
        return ""
    if isinstance(value, Decimal):
        # Through cents(): format's own rounding is half-even (12.345 -> 12.34) and keeps
        # "-0.00"; a table must show what the invoice holds.
        return f"{cents(value):,.2f}" if value.is_finite() else str(value)
    if isinstance(value, datetime):
        return iso_z(value)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def emit_table(
    columns: Sequence[Column | str],
    rows: Sequence[Sequence[Any]],
    *,
    title: str | None = None,
    empty: str = "nothing found",
) -> None:
    cols = [c if isinstance(c, Column) else Column(c) for c in columns]
    text_rows = [[cell(v) for v in row] for row in rows]
    if not text_rows:
        print(empty, file=sys.stderr if not stdout_is_terminal() else sys.stdout)
        return
    if stdout_is_terminal():
        from rich.console import Console
        from rich.table import Table
        from rich.text import Text

        # Text, not str: values come from 4D and QBO, and "[...]" in them is data, not
        # rich markup (an unbalanced "[/x]" would even raise).
        table = Table(title=None if title is None else Text(title), header_style="bold")
        for col in cols:
            table.add_column(Text(col.header), justify=col.justify)  # type: ignore[arg-type]
        for row in text_rows:
            table.add_row(*(Text(value) for value in row))
        Console().print(table)
        return
    widths = [max(len(c.header), *(len(r[i]) for r in text_rows)) for i, c in enumerate(cols)]

    def line(values: Sequence[str]) -> str:
        parts = [
            v.rjust(w) if c.justify == "right" else v.ljust(w)
            for v, w, c in zip(values, widths, cols, strict=True)
        ]
        return "  ".join(parts).rstrip()

    if title:
        print(title)
    print(line([c.header for c in cols]))
    for row in text_rows:
        print(line(row))


def emit_pairs(pairs: Sequence[tuple[str, Any]], *, title: str | None = None) -> None:
    """A two-column key/value view (one record, settings, health)."""
    emit_table([Column("field"), Column("value")], [(k, v) for k, v in pairs], title=title)


def info(message: str) -> None:
    """A human message on stderr (never pollutes --json stdout)."""
    print(message, file=sys.stderr)


def date_option(value: str, flag: str) -> date:
    try:
        return parse_cli_date(value)
    except ValueError as exc:
        raise ConfigError(f"{flag}: {exc}") from None


def datetime_option(value: str, flag: str) -> datetime:
    try:
        return parse_cli_datetime(value)
    except ValueError as exc:
        raise ConfigError(f"{flag}: {exc}") from None


def required_text(value: str, name: str) -> str:
    """A positional argument that must not be empty (checked before any call)."""
    text = value.strip()
    if not text:
        raise ConfigError(f"{name} must not be empty")
    return text
