"""`fourdqbo qbo …` through the CLI runner, QBO answered by respx, a real token file."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx
from typer.testing import CliRunner

from fourdqbo import jsonio
from fourdqbo.cli.app import app
from tests.fixtures.settings import QBO_TEST_ENV

BASE = QBO_TEST_ENV["QBO_API_BASE_URL"]
REALM = "4620816365"
QUERY = f"/v3/company/{REALM}/query"

INVOICE = {
    "Id": "145",
    "SyncToken": "2",
    "DocNumber": "10023",
    "TxnDate": "2025-03-05",
    "CustomerRef": {"value": "58", "name": "1042.JQD"},
    "CustomField": [{"DefinitionId": "1", "StringValue": "3"}],
    "Line": [
        {
            "DetailType": "SalesItemLineDetail",
            "Amount": "1250.10",
            "Description": "Procedure A",
            "SalesItemLineDetail": {"ItemRef": {"value": "12"}, "Qty": 1, "UnitPrice": "1250.10"},
        },
        {"DetailType": "SubTotalLineDetail", "Amount": "1250.10"},
    ],
    "TotalAmt": "1250.10",
    "Balance": "250.10",
    "MetaData": {
        "CreateTime": "2025-03-05T10:21:33-08:00",
        "LastUpdatedTime": "2025-07-01T09:00:00-07:00",
    },
}
ESTIMATE = {
    "Id": "9",
    "SyncToken": "0",
    "DocNumber": "E-7",
    "TxnDate": "2025-03-02",
    "CustomerRef": {"value": "58", "name": "1042.JQD"},
    "TxnStatus": "Pending",
    "TotalAmt": "99.99",
    "MetaData": {"LastUpdatedTime": "2025-03-02T23:30:00-08:00"},
}
CUSTOMER = {
    "Id": "58",
    "SyncToken": "1",
    "DisplayName": "1042.O'B",
    "Active": False,
    "MetaData": {"LastUpdatedTime": "2025-01-10T08:00:00-08:00"},
}


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """QBO settings only (no 4D ones) and a fresh token file; returns the token file path."""
    for name, value in QBO_TEST_ENV.items():
        monkeypatch.setenv(name, value)
    token_file = tmp_path / "data" / "qbo_token.json"
    monkeypatch.setenv("QBO_TOKEN_FILE", str(token_file))
    monkeypatch.setenv("LOGS_DIR", str(tmp_path / "logs"))
    token_file.parent.mkdir(parents=True)
    now = datetime.now(UTC)
    token_file.write_text(
        json.dumps(
            {
                "access_token": "access-abc",
                "refresh_token": "refresh-abc",
                "realm_id": REALM,
                "expires_at": (now + timedelta(hours=1)).isoformat(),
                "refresh_expires_at": (now + timedelta(days=90)).isoformat(),
            }
        )
    )
    token_file.chmod(0o600)
    return token_file


@pytest.fixture
def qbo() -> Iterator[respx.MockRouter]:
    with respx.mock(base_url=BASE, assert_all_called=False) as router:
        yield router


def entity_answer(request: httpx.Request) -> httpx.Response:
    statement = request.url.params["query"]
    entity = re.search(r"FROM (\w+)", statement).group(1)
    rows = {"Invoice": [INVOICE], "Estimate": [ESTIMATE], "Customer": [CUSTOMER]}[entity]
    return httpx.Response(200, content=jsonio.dumps({"QueryResponse": {entity: rows}}))


def run(*args: str) -> Any:
    return CliRunner().invoke(app, ["qbo", *args])


@pytest.mark.parametrize(
    "args",
    [
        ["list-invoices", "--from-date", "2025-03-01"],
        ["list-estimates", "--from-date", "2025-03-01"],
        ["get-invoice", "10023"],
        ["get-customer", "1042.O'B"],
    ],
)
def test_every_command_prints_parseable_json(
    env: Path, qbo: respx.MockRouter, args: list[str]
) -> None:
    route = qbo.get(QUERY).mock(side_effect=entity_answer)
    result = run(*args, "--json")
    assert result.exit_code == 0, result.output
    json.loads(result.stdout)
    assert route.call_count == 1
    request = route.calls.last.request
    assert request.headers["Authorization"] == "Bearer access-abc"
    assert request.url.params["minorversion"] == "75"


def test_list_invoices_json_has_utc_times_and_exact_money(env: Path, qbo: respx.MockRouter) -> None:
    route = qbo.get(QUERY).mock(side_effect=entity_answer)
    result = run("list-invoices", "--from-date", "2025-03-01", "--json")
    [invoice] = jsonio.loads(result.stdout)
    assert invoice["updated_at"] == "2025-07-01T16:00:00Z"
    assert invoice["created_at"] == "2025-03-05T18:21:33Z"
    assert str(invoice["total"]) == "1250.10" and str(invoice["balance"]) == "250.10"
    assert invoice["paid"] is True
    assert invoice["doc_number"] == "10023" and invoice["customer_name"] == "1042.JQD"
    assert (
        "MetaData.LastUpdatedTime >= '2025-03-01T00:00:00+00:00'"
        in (route.calls.last.request.url.params["query"])
    )


def test_list_invoices_table_shows_the_bookkeepers_columns_in_utc(
    env: Path, qbo: respx.MockRouter
) -> None:
    qbo.get(QUERY).mock(side_effect=entity_answer)
    result = run("list-invoices", "--from-date", "2025-03-01")
    assert result.exit_code == 0, result.output
    header, row = result.stdout.strip().splitlines()
    columns = "DocNumber customer date total balance last updated (UTC)"
    assert header.split() == columns.split()
    assert row.split() == [
        "10023",
        "1042.JQD",
        "2025-03-05",
        "1,250.10",
        "250.10",
        "2025-07-01T16:00:00Z",
    ]


def test_list_estimates_table(env: Path, qbo: respx.MockRouter) -> None:
    qbo.get(QUERY).mock(side_effect=entity_answer)
    result = run("list-estimates", "--from-date", "2025-03-01")
    assert result.exit_code == 0, result.output
    assert "2025-03-03T07:30:00Z" in result.stdout  # 23:30 at -08:00 is the next day in UTC
    assert "Pending" in result.stdout and "99.99" in result.stdout


def test_get_invoice_shows_fields_and_lines(env: Path, qbo: respx.MockRouter) -> None:
    route = qbo.get(QUERY).mock(side_effect=entity_answer)
    result = run("get-invoice", "10023")
    assert result.exit_code == 0, result.output
    assert "2025-07-01T16:00:00Z" in result.stdout
    assert "Procedure A" in result.stdout
    assert "DocNumber = '10023'" in route.calls.last.request.url.params["query"]
    json_result = run("get-invoice", "10023", "--json")
    [document] = jsonio.loads(json_result.stdout)
    assert document["lines"] == [
        {
            "item_id": "12",
            "description": "Procedure A",
            "qty": 1,
            "unit_price": jsonio.loads("1250.10"),
            "amount": jsonio.loads("1250.10"),
        }
    ]


def test_get_customer_escapes_the_name_and_includes_inactive(
    env: Path, qbo: respx.MockRouter
) -> None:
    route = qbo.get(QUERY).mock(side_effect=entity_answer)
    result = run("get-customer", "1042.O'B", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {
        "id": "58",
        "display_name": "1042.O'B",
        "active": False,
        "sync_token": "1",
        "updated_at": "2025-01-10T16:00:00Z",
    }
    statement = route.calls.last.request.url.params["query"]
    assert "Active IN (true, false)" in statement
    assert "DisplayName = '1042.O\\'B'" in statement


def test_not_found_exits_1_with_empty_json(env: Path, qbo: respx.MockRouter) -> None:
    qbo.get(QUERY).mock(return_value=httpx.Response(200, json={"QueryResponse": {}}))
    invoice = run("get-invoice", "404", "--json")
    assert invoice.exit_code == 1
    assert json.loads(invoice.stdout) == []
    assert "no invoice with DocNumber 404" in invoice.stderr
    customer = run("get-customer", "nobody", "--json")
    assert customer.exit_code == 1
    assert json.loads(customer.stdout) is None


@pytest.mark.parametrize("command", ["list-invoices", "list-estimates"])
@pytest.mark.parametrize("bad", ["2025-13-01", "yesterday", "2025-02-30", "03/01/2025"])
def test_bad_dates_exit_2_before_any_call(
    env: Path, qbo: respx.MockRouter, command: str, bad: str
) -> None:
    result = run(command, "--from-date", bad)
    assert result.exit_code == 2
    assert "--from-date" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert qbo.calls.call_count == 0


def test_bad_date_wins_even_without_any_settings(qbo: respx.MockRouter) -> None:
    result = run("list-invoices", "--from-date", "nope")
    assert result.exit_code == 2
    assert "--from-date" in result.stderr


def test_missing_qbo_settings_exit_2_naming_them_and_no_4d_ones(
    env: Path, qbo: respx.MockRouter, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("QBO_CLIENT_ID")
    result = run("get-invoice", "10023")
    assert result.exit_code == 2
    assert "QBO_CLIENT_ID" in result.stderr and "FOURD" not in result.stderr
    assert qbo.calls.call_count == 0


def test_missing_token_file_exits_2_with_one_line(env: Path, qbo: respx.MockRouter) -> None:
    env.unlink()
    result = run("list-invoices", "--from-date", "2025-03-01")
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "fourdqbo auth login" in lines[0]
    assert "Traceback" not in result.output
    assert qbo.calls.call_count == 0


def test_qbo_fault_is_one_line_exit_3_with_intuit_tid(env: Path, qbo: respx.MockRouter) -> None:
    qbo.get(QUERY).mock(
        return_value=httpx.Response(
            400,
            json={"Fault": {"Error": [{"Message": "Invalid query", "code": "4000"}]}},
            headers={"intuit_tid": "tid-xyz"},
        )
    )
    result = run("get-customer", "x")
    assert result.exit_code == 3
    [line] = result.stderr.strip().splitlines()
    assert "4000" in line and "tid-xyz" in line


def test_every_qbo_command_has_an_example_in_its_help() -> None:
    for command in ["list-invoices", "list-estimates", "get-invoice", "get-customer"]:
        result = run(command, "--help")
        assert result.exit_code == 0
        assert "Example: fourdqbo qbo " + command in result.stdout
        assert "--json" in result.stdout


@pytest.mark.parametrize("command", ["get-invoice", "get-customer"])
def test_empty_argument_is_exit_2_before_any_call(command: str) -> None:
    with respx.mock(assert_all_called=False) as router:
        result = CliRunner().invoke(app, ["qbo", command, "  "], env=dict(QBO_TEST_ENV))
        assert router.calls.call_count == 0
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [
        f"fourdqbo: {'DOCNUMBER' if command == 'get-invoice' else 'DISPLAY_NAME'} must not be empty"
    ]
