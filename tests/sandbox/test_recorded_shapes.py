"""Answers shaped as the recorded QBO exchanges show them (API-NOTES.md, last section):
query paging keys, times, delete and void, custom fields without a value, read lines."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from fourdqbo.sandbox.server import Sandbox
from tests.sandbox.conftest import QboCaller
from tests.sandbox.test_qbo_api import create_invoice, invoice_body, item_id, new_customer

RESPONSE_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}-0[78]:00$")  # ...07.300-07:00
ENTITY_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d-0[78]:00$")  # ...33-08:00
# A read invoice lists every string field the company defined; unset ones have no value.
UNSET_CREW = {"DefinitionId": "3", "Name": "Crew #", "Type": "StringType"}


def test_maxresults_over_1000_is_the_recorded_4001(qbo: QboCaller) -> None:
    response = qbo.query("SELECT * FROM Invoice MAXRESULTS 1500")
    assert response.status_code == 400
    body = qbo.json(response)
    assert body["Fault"]["type"] == "ValidationFault"
    [error] = body["Fault"]["Error"]
    assert error["code"] == "4001"
    assert error["Detail"] == (
        "QueryValidationError: value 1500 is too large. Max allowed value is 1000"
    )
    assert RESPONSE_TIME.match(body["time"])


def test_maxresults_is_the_number_of_rows_returned(sandbox: Sandbox, qbo: QboCaller) -> None:
    body = qbo.json(qbo.query("SELECT * FROM Item MAXRESULTS 1000"))
    answer = body["QueryResponse"]
    assert set(answer) == {"Item", "startPosition", "maxResults"}  # no totalCount
    assert (
        answer["maxResults"]
        == len(answer["Item"])
        == len([i for i in sandbox.company.items() if i["Active"]])
    )
    assert answer["startPosition"] == 1


def test_count_star_answers_only_total_count(sandbox: Sandbox, qbo: QboCaller) -> None:
    body = qbo.json(qbo.query("SELECT COUNT(*) FROM Customer WHERE Active IN (true, false)"))
    assert body["QueryResponse"] == {"totalCount": len(sandbox.company.customers())}
    assert RESPONSE_TIME.match(body["time"])


def test_a_page_past_the_end_has_no_paging_keys(qbo: QboCaller) -> None:
    body = qbo.json(qbo.query("SELECT * FROM Item STARTPOSITION 900 MAXRESULTS 10"))
    assert body["QueryResponse"] == {}
    assert set(body) == {"QueryResponse", "time"}


def test_times_have_the_company_offset_with_daylight_saving(
    sandbox: Sandbox, qbo: QboCaller
) -> None:
    invoice = create_invoice(sandbox, qbo)
    assert ENTITY_TIME.match(invoice["MetaData"]["CreateTime"])
    assert ENTITY_TIME.match(invoice["MetaData"]["LastUpdatedTime"])
    company = sandbox.company
    assert company.stamp(datetime(2025, 7, 1, 12, 0, 0, 500000, UTC)) == (
        "2025-07-01T05:00:00-07:00"
    )
    assert company.stamp(datetime(2025, 1, 15, 12, 0, 0, tzinfo=UTC)) == (
        "2025-01-15T04:00:00-08:00"
    )
    assert RESPONSE_TIME.match(qbo.json(qbo.query("SELECT * FROM Item"))["time"])


def test_delete_answers_the_recorded_stub_single_and_in_batch(
    sandbox: Sandbox, qbo: QboCaller
) -> None:
    one = create_invoice(sandbox, qbo, "92001")
    two = create_invoice(sandbox, qbo, "92002")
    single = qbo.json(qbo.post("invoice", {"Id": one["Id"], "SyncToken": "0"}, operation="delete"))
    assert single["Invoice"] == {"status": "Deleted", "domain": "QBO", "Id": one["Id"]}
    assert RESPONSE_TIME.match(single["time"])
    items = [{"bId": "d", "operation": "delete", "Invoice": {"Id": two["Id"], "SyncToken": "0"}}]
    [answer] = qbo.json(qbo.batch(items))["BatchItemResponse"]
    assert answer == {
        "bId": "d",
        "Invoice": {"status": "Deleted", "domain": "QBO", "Id": two["Id"]},
    }


def void(qbo: QboCaller, invoice: dict[str, Any]) -> dict[str, Any]:
    response = qbo.post(
        "invoice", {"Id": invoice["Id"], "SyncToken": invoice["SyncToken"]}, operation="void"
    )
    assert response.status_code == 200, response.text
    return dict(qbo.json(response)["Invoice"])


def test_void_answers_the_whole_invoice_with_every_amount_zero(
    sandbox: Sandbox, qbo: QboCaller
) -> None:
    invoice = create_invoice(sandbox, qbo)
    voided = void(qbo, invoice)
    assert (voided["Id"], voided["DocNumber"]) == (invoice["Id"], "90001")
    assert voided["CustomerRef"] == invoice["CustomerRef"]
    assert voided["SyncToken"] == "1"
    assert voided["TotalAmt"] == 0 and voided["Balance"] == 0
    assert voided["PrivateNote"].startswith("Voided")
    assert len(voided["Line"]) == len(invoice["Line"])
    for line in voided["Line"]:
        assert line["Amount"] == 0
        detail = line.get("SalesItemLineDetail", {})
        if "Qty" in detail and "UnitPrice" in detail:
            assert detail["Qty"] * detail["UnitPrice"] == 0
    assert voided["Line"][1]["SalesItemLineDetail"]["Qty"] == Decimal("3")
    assert [line["Description"] for line in voided["Line"][:2]] == [
        "Rhinoplasty",
        "Post-op Ice Pack",
    ]


def test_void_keeps_an_earlier_private_note_after_the_word_voided(
    sandbox: Sandbox, qbo: QboCaller
) -> None:
    invoice = create_invoice(sandbox, qbo)
    noted = qbo.json(
        qbo.post(
            "invoice",
            {"Id": invoice["Id"], "SyncToken": "0", "sparse": True, "PrivateNote": "call Bo"},
        )
    )["Invoice"]
    assert void(qbo, noted)["PrivateNote"] == "Voided - call Bo"


def test_a_voided_invoice_can_be_updated_and_carries_amounts_again(
    sandbox: Sandbox, qbo: QboCaller
) -> None:
    voided = void(qbo, create_invoice(sandbox, qbo))
    lines = [
        {"DetailType": "SalesItemLineDetail", "Amount": Decimal("120.00"),
         "SalesItemLineDetail": {"ItemRef": {"value": item_id(sandbox, "Procedure")}}},
    ]  # fmt: skip
    response = qbo.post(
        "invoice",
        {"Id": voided["Id"], "SyncToken": voided["SyncToken"], "sparse": True, "Line": lines},
    )
    assert response.status_code == 200, response.text
    updated = qbo.json(response)["Invoice"]
    assert updated["TotalAmt"] == updated["Balance"] == Decimal("120.00")
    assert updated["SyncToken"] == "2"
    assert updated["PrivateNote"] == "Voided"  # an update does not touch what it leaves out


def test_read_invoice_lists_custom_fields_without_a_value(sandbox: Sandbox, qbo: QboCaller) -> None:
    invoice = create_invoice(sandbox, qbo)
    read = qbo.json(qbo.get(f"invoice/{invoice['Id']}"))["Invoice"]
    assert read["CustomField"] == [
        {"DefinitionId": "1", "Name": "Quote Version", "Type": "StringType",
         "StringValue": "2"},
        {"DefinitionId": "2", "Name": "Quoted By", "Type": "StringType"},
        UNSET_CREW,
    ]  # fmt: skip


def test_read_lines_carry_linenum_id_and_tax_code(sandbox: Sandbox, qbo: QboCaller) -> None:
    invoice = create_invoice(sandbox, qbo)
    read = qbo.json(qbo.get(f"invoice/{invoice['Id']}"))["Invoice"]
    sales = [line for line in read["Line"] if line["DetailType"] == "SalesItemLineDetail"]
    assert [(line["LineNum"], line["Id"]) for line in sales] == [(1, "1"), (2, "2")]
    assert all(line["SalesItemLineDetail"]["TaxCodeRef"] == {"value": "NON"} for line in sales)
    assert read["Line"][-1]["DetailType"] == "SubTotalLineDetail"
    assert read["TxnTaxDetail"] == {"TotalTax": 0}
    assert read["DueDate"] == "2025-03-05" and read["LinkedTxn"] == []


def test_a_line_with_only_amount_and_item_is_accepted(sandbox: Sandbox, qbo: QboCaller) -> None:
    customer = new_customer(qbo)
    body = invoice_body(sandbox, customer["Id"])
    body["Line"] = [
        {"DetailType": "SalesItemLineDetail", "Amount": Decimal("99.50"),
         "SalesItemLineDetail": {"ItemRef": {"value": item_id(sandbox, "Procedure")}}},
    ]  # fmt: skip
    response = qbo.post("invoice", body)
    assert response.status_code == 200, response.text
    line = qbo.json(response)["Invoice"]["Line"][0]
    assert line["Amount"] == Decimal("99.50")
    assert "Qty" not in line["SalesItemLineDetail"]


def test_a_payment_shows_as_linked_txn(sandbox: Sandbox, qbo: QboCaller) -> None:
    invoice = create_invoice(sandbox, qbo)
    sandbox.company.apply_payment(invoice["Id"], "7.13")
    read = qbo.json(qbo.get(f"invoice/{invoice['Id']}"))["Invoice"]
    [link] = read["LinkedTxn"]
    assert set(link) == {"TxnId", "TxnType"} and link["TxnType"] == "Payment"
    assert read["Balance"] == Decimal("7650.00")


def test_an_invoice_takes_the_customers_bill_address(sandbox: Sandbox, qbo: QboCaller) -> None:
    address = {"Line1": "12 Elm St", "City": "Fresno", "CountrySubDivisionCode": "CA"}
    response = qbo.post("customer", {"DisplayName": "2990.BA", "BillAddr": address})
    customer = qbo.json(response)["Customer"]
    invoice = qbo.json(qbo.post("invoice", invoice_body(sandbox, customer["Id"])))["Invoice"]
    assert invoice["BillAddr"] == address
    own = {"Line1": "PO Box 9"}
    body = {"Id": invoice["Id"], "SyncToken": "0", "sparse": True, "BillAddr": own}
    assert qbo.json(qbo.post("invoice", body))["Invoice"]["BillAddr"] == own
