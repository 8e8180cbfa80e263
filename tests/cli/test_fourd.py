"""`fourdqbo 4d …` through the CLI runner, 4D answered by respx."""

from __future__ import annotations

import json
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx
from typer.testing import CliRunner

from fourdqbo import jsonio
from fourdqbo.cli.app import app
from fourdqbo.cli.fourd import quote_lines
from fourdqbo.emr.records import Quote
from tests.fixtures.settings import FOURD_TEST_ENV

BASE = FOURD_TEST_ENV["FOURD_BASE_URL"]

QUOTE = {
    "PriceQuoteNo": 10023,
    "Version": 3,
    "PriceQuoteDate": "2025-03-05T15:04:05.123Z",
    "CreatedBy": {"Id": 7, "Name": "Jane Q Doe"},
    "Patient": {"Id": 5501, "Name": "Seán O'Brien"},
    "Provider": {"Id": 2, "Name": "Dr. Kim"},
    "PriceQuoteStatus": {"Id": 4, "Name": "Completed"},
    "Procedures": [
        {"ProcedureName": "Rhinoplasty", "Amount": "4500.10", "DiscountAmount": "500.05"},
        {"ProcedureName": "Septoplasty", "Amount": 1200, "DiscountAmount": None},
    ],
    "Supplies": [
        {"ItemTitle": "Splint", "Quantity": 2, "UnitCost": "19.995", "ShowOnQuote": True},
        {"ItemTitle": "Hidden gauze", "Quantity": 1, "UnitCost": "3.10", "ShowOnQuote": False},
    ],
    "AnesthAmt": "850.00",
    "AnesthesiaGroup": {"Id": 2, "Name": "Bay Anesthesia"},
    "FacilityAmt": "1250.50",
    "TotalAmt": "7350.65",
}
# Amounts as JSON numbers with their exact digits, the way 4D sends them.
QUOTE_TEXT = jsonio.dumps(QUOTE).replace('"4500.10"', "4500.10").replace('"19.995"', "19.995")

EXAMPLES = {
    "get-patient": ["4d", "get-patient", "--help"],
    "list-appointments": ["4d", "list-appointments", "--help"],
    "list-quotes": ["4d", "list-quotes", "--help"],
    "get-quote": ["4d", "get-quote", "--help"],
    "list-charges": ["4d", "list-charges", "--help"],
}


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """4D settings only: no QBO keys, so a 4D command must not ask for them."""
    for name, value in FOURD_TEST_ENV.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("LOGS_DIR", str(tmp_path / "logs"))


@pytest.fixture
def fourd() -> Iterator[respx.MockRouter]:
    with respx.mock(base_url=BASE, assert_all_called=False) as mock:
        yield mock


def answer(body: Any, status: int = 200) -> httpx.Response:
    text = body if isinstance(body, str) else jsonio.dumps(body)
    return httpx.Response(
        status, content=text.encode(), headers={"Content-Type": "application/json"}
    )


def run(runner: CliRunner, *args: str) -> Any:
    return runner.invoke(app, list(args), catch_exceptions=False)


# --- help -----------------------------------------------------------------------------------


@pytest.mark.parametrize("command", sorted(EXAMPLES))
def test_every_command_has_help_with_an_example(runner: CliRunner, command: str) -> None:
    result = run(runner, *EXAMPLES[command])
    assert result.exit_code == 0
    assert f"Example: fourdqbo 4d {command}" in result.stdout
    assert "--json" in result.stdout


def test_group_help_lists_the_commands(runner: CliRunner) -> None:
    result = run(runner, "4d", "--help")
    assert result.exit_code == 0
    for command in EXAMPLES:
        assert command in result.stdout


# --- --json ---------------------------------------------------------------------------------


@pytest.mark.usefixtures("env")
def test_get_quote_json_keeps_money_exact(runner: CliRunner, fourd: respx.MockRouter) -> None:
    route = fourd.get("/quotes").mock(return_value=answer(QUOTE_TEXT))
    result = run(runner, "4d", "get-quote", "10023", "--json")
    assert result.exit_code == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["number"] == "10023"
    assert document["status"] == "completed"
    assert document["date"] == "2025-03-05T15:04:05Z"
    assert document["supplies"][1]["show_on_quote"] is False
    assert '"amount": 4500.10' in result.stdout  # Decimal written exactly, not 4500.1
    assert '"unit_cost": 19.995' in result.stdout
    assert jsonio.loads(result.stdout)["total_amount"] == jsonio.loads("7350.65")
    assert route.calls.last.request.url.params["quoteNumber"] == "10023"


@pytest.mark.usefixtures("env")
def test_list_quotes_json_and_from_date_in_utc(runner: CliRunner, fourd: respx.MockRouter) -> None:
    route = fourd.get("/quotes/list").mock(
        return_value=answer(
            '[{"PriceQuoteNo": 10023, "Version": 3, "PriceQuoteStatus": {"Id": 4},'
            ' "Patient": {"Id": 5501, "Name": "Jane Doe"}},'
            ' {"PriceQuoteNo": "10024", "Version": 1, "PriceQuoteStatus": {"Id": 9}}]'
        )
    )
    result = run(runner, "4d", "list-quotes", "--from-date", "2025-03-01T08:00:00-05:00", "--json")
    assert result.exit_code == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["from_date"] == "2025-03-01T13:00:00Z"
    assert document["count"] == 2
    assert [(q["number"], q["version"], q["status"]) for q in document["quotes"]] == [
        ("10023", 3, "completed"),
        ("10024", 1, "unknown(9)"),
    ]
    assert route.calls.last.request.url.params["fromDate"] == "2025-03-01T13:00:00"


@pytest.mark.usefixtures("env")
def test_get_patient_json(runner: CliRunner, fourd: respx.MockRouter) -> None:
    fourd.get("/patients/42").mock(
        return_value=answer(
            {"Id": 42, "FirstName": "Zoë", "LastName": "Quinteros", "DateOfBirth": "1980-02-29"}
        )
    )
    result = run(runner, "4d", "get-patient", "42", "--json")
    assert result.exit_code == 0, result.stderr
    document = json.loads(result.stdout)
    assert (document["id"], document["name"], document["date_of_birth"]) == (
        "42",
        "Zoë Quinteros",
        "1980-02-29",
    )


@pytest.mark.usefixtures("env")
def test_list_appointments_json_sends_the_date(runner: CliRunner, fourd: respx.MockRouter) -> None:
    route = fourd.get("/appointments").mock(
        return_value=answer([{"Id": 1, "StartTime": "2025-03-05T14:00:00Z", "PatientId": 42}])
    )
    result = run(runner, "4d", "list-appointments", "--date", "2025-03-05", "--json")
    assert result.exit_code == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["date"] == "2025-03-05"
    assert document["appointments"][0]["patient_id"] == "42"
    assert dict(route.calls.last.request.url.params) == {"date": "2025-03-05"}


@pytest.mark.usefixtures("env")
def test_list_charges_json_with_exact_total(runner: CliRunner, fourd: respx.MockRouter) -> None:
    route = fourd.get("/reports/charges").mock(
        return_value=answer('[{"Id": 1, "Amount": 0.10}, {"Id": 2, "Amount": 0.20}]')
    )
    result = run(
        runner, "4d", "list-charges", "--from", "2025-03-01", "--to", "2025-03-31", "--json"
    )
    assert result.exit_code == 0, result.stderr
    document = json.loads(result.stdout)
    assert (document["from"], document["to"], document["count"]) == ("2025-03-01", "2025-03-31", 2)
    assert '"total": 0.30' in result.stdout  # Decimal sum, not 0.30000000000000004
    assert dict(route.calls.last.request.url.params) == {
        "beginDate": "2025-03-01",
        "endDate": "2025-03-31",
    }


@pytest.mark.usefixtures("env")
def test_empty_list_json_is_still_one_document(runner: CliRunner, fourd: respx.MockRouter) -> None:
    fourd.get("/quotes/list").mock(return_value=answer("[]"))
    result = run(runner, "4d", "list-quotes", "--from-date", "2025-03-01", "--json")
    assert result.exit_code == 0
    assert json.loads(result.stdout) == {
        "from_date": "2025-03-01T00:00:00Z",
        "count": 0,
        "quotes": [],
    }


# --- tables ---------------------------------------------------------------------------------


@pytest.mark.usefixtures("env")
def test_get_quote_table_shows_header_lines_and_total(
    runner: CliRunner, fourd: respx.MockRouter
) -> None:
    fourd.get("/quotes").mock(return_value=answer(QUOTE_TEXT))
    result = run(runner, "4d", "get-quote", "10023")
    assert result.exit_code == 0, result.stderr
    out = result.stdout
    for expected in ("10023", "completed", "2025-03-05T15:04:05Z", "5501", "7,350.65"):
        assert expected in out
    lines = out.splitlines()
    rhino = next(line for line in lines if "Rhinoplasty" in line)
    assert "4,500.10" in rhino and "500.05" in rhino and "4,000.05" in rhino
    hidden = next(line for line in lines if "Hidden gauze" in line)
    assert hidden.rstrip().endswith("no")
    splint = next(line for line in lines if "Splint" in line)
    assert splint.split()[1:5] == ["Splint", "2", "19.995", "39.99"]  # unit cost exact
    assert splint.rstrip().endswith("yes")
    assert any(line.startswith("anesthesia") and "Bay Anesthesia" in line for line in lines)
    assert any(line.startswith("facility") and "1,250.50" in line for line in lines)


@pytest.mark.usefixtures("env")
def test_list_quotes_table_columns(runner: CliRunner, fourd: respx.MockRouter) -> None:
    fourd.get("/quotes/list").mock(
        return_value=answer(
            '[{"PriceQuoteNo": 10023, "Version": 3, "PriceQuoteStatus": {"Id": 4},'
            ' "Patient": {"Id": 5501, "Name": "Jane Doe"}}]'
        )
    )
    result = run(runner, "4d", "list-quotes", "--from-date", "2025-03-01")
    assert result.exit_code == 0
    header = next(line for line in result.stdout.splitlines() if line.startswith("number"))
    assert header.split() == ["number", "version", "status", "patient", "id"]
    row = next(line for line in result.stdout.splitlines() if line.startswith("10023"))
    assert row.split() == ["10023", "3", "completed", "5501"]
    assert "Jane" not in result.stdout  # the list shows patient ids only


@pytest.mark.usefixtures("env")
def test_get_patient_table_shows_the_other_fields(
    runner: CliRunner, fourd: respx.MockRouter
) -> None:
    fourd.get("/patients/42").mock(
        return_value=answer(
            {
                "Id": 42,
                "Name": "Zoë Quinteros",
                "DateOfBirth": "1980-02-29T00:00:00",
                "Gender": "F",
                "Address": {"City": "Springfield"},
            }
        )
    )
    result = run(runner, "4d", "get-patient", "42")
    assert result.exit_code == 0
    out = result.stdout
    assert "Zoë Quinteros" in out and "1980-02-29T00:00:00" in out
    assert any(line.split() == ["Gender", "F"] for line in out.splitlines())
    assert "Springfield" in out


@pytest.mark.usefixtures("env")
def test_empty_list_says_so_on_stderr(runner: CliRunner, fourd: respx.MockRouter) -> None:
    fourd.get("/appointments").mock(return_value=answer("[]"))
    result = run(runner, "4d", "list-appointments", "--date", "2025-03-05")
    assert result.exit_code == 0
    assert result.stdout == ""
    assert "no appointments on 2025-03-05" in result.stderr


# --- refusals before any call ---------------------------------------------------------------


@pytest.mark.usefixtures("env")
@pytest.mark.parametrize(
    ("args", "flag"),
    [
        (["list-appointments", "--date", "2025-02-30"], "--date"),
        (["list-appointments", "--date", "tomorrow"], "--date"),
        (["list-quotes", "--from-date", "yesterday"], "--from-date"),
        (["list-quotes", "--from-date", "2025-03-01T25:00"], "--from-date"),
        (["list-charges", "--from", "03/01/2025", "--to", "2025-03-31"], "--from"),
        (["list-charges", "--from", "2025-03-01", "--to", "2025-3-31"], "--to"),
        (["list-charges", "--from", "2025-03-02", "--to", "2025-03-01"], "--from"),
        (["get-quote", "10'23"], "PRICE_QUOTE_NO"),
        (["get-patient", " "], "PATIENT_ID"),
    ],
)
def test_bad_arguments_exit_2_without_any_http_call(
    runner: CliRunner, fourd: respx.MockRouter, args: list[str], flag: str
) -> None:
    result = run(runner, "4d", *args, "--json")
    assert result.exit_code == 2
    assert flag in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert result.stdout == ""
    assert not fourd.calls


def test_missing_4d_settings_exit_2_naming_them_and_nothing_else(
    runner: CliRunner, fourd: respx.MockRouter
) -> None:
    result = run(runner, "4d", "get-quote", "10023")
    assert result.exit_code == 2
    for name in ("FOURD_CLIENT_ID", "FOURD_CLIENT_SECRET", "FOURD_SUBSCRIPTION_KEY"):
        assert name in result.stderr
    assert "QBO" not in result.stderr
    assert not fourd.calls


def test_malformed_4d_setting_is_named(
    runner: CliRunner, fourd: respx.MockRouter, env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FOURD_BASE_URL", "http://emr.example.com/api/public")
    result = run(runner, "4d", "list-quotes", "--from-date", "2025-03-01")
    assert result.exit_code == 2
    assert "FOURD_BASE_URL" in result.stderr and "https" in result.stderr
    assert not fourd.calls


# --- upstream failures ----------------------------------------------------------------------


@pytest.mark.usefixtures("env")
@pytest.mark.parametrize(
    "message", ["Missing credentials", "Invalid credentials", "Invalid client-id or client-secret"]
)
def test_401_exits_3_with_4ds_message_on_one_line(
    runner: CliRunner, fourd: respx.MockRouter, message: str
) -> None:
    fourd.get("/quotes/list").mock(return_value=answer({"message": message}, 401))
    result = run(runner, "4d", "list-quotes", "--from-date", "2025-03-01", "--json")
    assert result.exit_code == 3
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert message in lines[0]
    assert "Traceback" not in result.output
    assert "test-secret-4d" not in result.output


@pytest.mark.usefixtures("env")
def test_unknown_quote_exits_1_like_qbo_get_invoice(
    runner: CliRunner, fourd: respx.MockRouter
) -> None:
    fourd.get("/quotes").mock(return_value=answer({"message": "Price quote not found"}, 404))
    result = run(runner, "4d", "get-quote", "10023")
    assert result.exit_code == 1
    assert result.stderr.strip() == "no price quote 10023 in 4D"
    assert result.stdout == ""


@pytest.mark.usefixtures("env")
def test_unknown_patient_exits_1(runner: CliRunner, fourd: respx.MockRouter) -> None:
    fourd.get("/patients/999").mock(return_value=answer({"message": "Patient not found"}, 404))
    result = run(runner, "4d", "get-patient", "999")
    assert result.exit_code == 1
    assert result.stderr.strip() == "no patient 999 in 4D"


@pytest.mark.usefixtures("env")
def test_malformed_answer_exits_3_without_patient_data(
    runner: CliRunner, fourd: respx.MockRouter
) -> None:
    fourd.get("/quotes").mock(return_value=answer({**QUOTE, "FacilityAmt": "-1"}))
    result = run(runner, "4d", "get-quote", "10023", "--json")
    assert result.exit_code == 3
    assert "quote 10023" in result.stderr and "FacilityAmt" in result.stderr
    assert "Brien" not in result.output
    assert "Traceback" not in result.output


# --- legacy names ---------------------------------------------------------------------------


def test_legacy_4d_names_from_dotenv_in_the_working_directory(
    runner: CliRunner, fourd: respx.MockRouter, tmp_path: Path
) -> None:
    (tmp_path / ".env").write_text(
        "4D_BASE_URL=https://fourd.test/api/public\n"
        "4D_CLIENT_ID=legacy-id\n"
        "4D_CLIENT_SECRET=legacy-secret\n"
        "4D_SUBSCRIPTION_KEY=legacy-key\n"
        f"LOGS_DIR={tmp_path / 'logs'}\n"
    )
    route = fourd.get("/quotes/list").mock(return_value=answer("[]"))
    result = run(runner, "4d", "list-quotes", "--from-date", "2025-03-01", "--json")
    assert result.exit_code == 0, result.stderr
    headers = route.calls.last.request.headers
    assert (headers["client-id"], headers["client-secret"], headers["subscription-key"]) == (
        "legacy-id",
        "legacy-secret",
        "legacy-key",
    )


def test_quote_lines_round_half_up_to_cents_and_keep_unit_cost_digits() -> None:
    quote = Quote.parse(
        {
            "PriceQuoteNo": 1,
            "Procedures": [{"ProcedureName": "P", "Amount": "0.125", "DiscountAmount": None}],
            "Supplies": [{"ItemTitle": "S", "Quantity": "3", "UnitCost": "0.335"}],
            "AnesthAmt": 0,
            "FacilityAmt": "0.005",
        }
    )
    rows = quote_lines(quote)
    assert rows[0][4:7] == (Decimal("0.13"), Decimal("0.00"), Decimal("0.13"))
    assert rows[1][2:7] == ("3", "0.335", Decimal("1.01"), None, Decimal("1.01"))
    assert rows[1][7] is False
    assert [row[0] for row in rows] == ["procedure", "supply", "facility"]  # no zero anesthesia
    assert rows[2][6] == Decimal("0.01")
