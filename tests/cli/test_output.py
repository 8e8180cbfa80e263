"""Rendering: --json documents, plain tables when piped, rich tables on a terminal."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal

import pytest

from fourdqbo.cli import output
from fourdqbo.cli.output import (
    Column,
    cell,
    date_option,
    datetime_option,
    emit_json,
    emit_pairs,
    emit_table,
    info,
)
from fourdqbo.errors import ConfigError


@pytest.fixture
def terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(output, "stdout_is_terminal", lambda: True)


def test_emit_json_is_one_document_with_exact_money(capsys: pytest.CaptureFixture[str]) -> None:
    emit_json({"total": Decimal("1234.50"), "when": datetime(2025, 3, 1, tzinfo=UTC), "n": 3})
    captured = capsys.readouterr()
    assert captured.err == ""
    assert captured.out.endswith("}\n")
    assert '"total": 1234.50' in captured.out
    assert json.loads(captured.out) == {
        "total": 1234.5,
        "when": "2025-03-01T00:00:00+00:00",
        "n": 3,
    }


def test_emit_json_list_and_unicode(capsys: pytest.CaptureFixture[str]) -> None:
    emit_json([{"customer": "12.JQD", "name": "Zoë"}])
    assert json.loads(capsys.readouterr().out) == [{"customer": "12.JQD", "name": "Zoë"}]


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (None, ""),
        (Decimal("1234.5"), "1,234.50"),
        (Decimal("0"), "0.00"),
        (Decimal("-12.345"), "-12.35"),  # half-up like cents(), not format's half-even
        (Decimal("12.345"), "12.35"),
        (Decimal("-0.001"), "0.00"),
        (Decimal("NaN"), "NaN"),
        (Decimal("1000000"), "1,000,000.00"),
        (
            datetime(2025, 1, 15, 16, 30, tzinfo=timezone(timedelta(hours=-8))),
            "2025-01-16T00:30:00Z",
        ),
        (date(2025, 3, 1), "2025-03-01"),
        (True, "yes"),
        (False, "no"),
        (7, "7"),
        ("O'Brien", "O'Brien"),
    ],
)
def test_cell(value: object, text: str) -> None:
    assert cell(value) == text


def test_plain_table_when_piped(capsys: pytest.CaptureFixture[str]) -> None:
    emit_table(
        [Column("DocNumber"), "Customer", Column("Total", justify="right")],
        [("10023", "12.JQD", Decimal("1500")), ("9", "4411.AB", Decimal("12.5"))],
    )
    lines = capsys.readouterr().out.splitlines()
    assert lines == [
        "DocNumber  Customer     Total",
        "10023      12.JQD    1,500.00",
        "9          4411.AB      12.50",
    ]


def test_plain_table_title_and_no_markup(capsys: pytest.CaptureFixture[str]) -> None:
    emit_table(["a"], [("[bold]x[/bold]",)], title="Invoices")
    assert capsys.readouterr().out.splitlines() == ["Invoices", "a", "[bold]x[/bold]"]


def test_empty_table_message_goes_to_stderr_when_piped(capsys: pytest.CaptureFixture[str]) -> None:
    emit_table(["a", "b"], [], empty="no invoices changed since 2025-03-01")
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == "no invoices changed since 2025-03-01\n"


def test_rich_table_on_a_terminal(terminal: None, capsys: pytest.CaptureFixture[str]) -> None:
    emit_table(
        [Column("DocNumber"), Column("Total", justify="right")],
        [("10023", Decimal("1500"))],
        title="Invoices",
    )
    out = capsys.readouterr().out
    assert "Invoices" in out
    assert "DocNumber" in out
    assert "10023" in out
    assert "1,500.00" in out
    assert "┃" in out or "│" in out or "|" in out  # drawn as a table


@pytest.mark.parametrize("text", ["[/bold]", "[redacted]", "O'Brien [VIP]", "[link=x]y"])
def test_rich_table_shows_brackets_literally(
    terminal: None, capsys: pytest.CaptureFixture[str], text: str
) -> None:
    # Regression: cells went through rich markup, so "[/bold]" in a 4D description raised
    # MarkupError and "[redacted]" vanished.
    emit_table(["Description"], [(text,)], title="[not markup]")
    out = capsys.readouterr().out
    assert text in out
    assert "[not markup]" in out


def test_empty_table_on_terminal_goes_to_stdout(
    terminal: None, capsys: pytest.CaptureFixture[str]
) -> None:
    emit_table(["a"], [])
    assert capsys.readouterr().out == "nothing found\n"


def test_emit_pairs(capsys: pytest.CaptureFixture[str]) -> None:
    emit_pairs([("realm", "1234"), ("expires", datetime(2025, 3, 1, 8, tzinfo=UTC))])
    assert capsys.readouterr().out.splitlines() == [
        "field    value",
        "realm    1234",
        "expires  2025-03-01T08:00:00Z",
    ]


def test_info_goes_to_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    info("token refreshed")
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == "token refreshed\n"


def test_date_option_accepts_a_date() -> None:
    assert date_option("2025-03-01", "--from-date") == date(2025, 3, 1)


@pytest.mark.parametrize("value", ["2025-02-30", "2025-2-1", "", "yesterday", "03/01/2025"])
def test_date_option_bad_date_is_config_error(value: str) -> None:
    with pytest.raises(ConfigError) as caught:
        date_option(value, "--from-date")
    assert caught.value.exit_code == 2
    assert str(caught.value).startswith("--from-date: not a date")
    assert "\n" not in str(caught.value)


def test_datetime_option() -> None:
    assert datetime_option("2025-03-01T08:00:00-08:00", "--since") == datetime(
        2025, 3, 1, 16, tzinfo=UTC
    )
    with pytest.raises(ConfigError, match=r"^--since: not a date-time") as caught:
        datetime_option("soon", "--since")
    assert caught.value.exit_code == 2
