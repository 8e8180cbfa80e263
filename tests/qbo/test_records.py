"""QBO records: what we read from invoices, customers, items and estimates."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import pytest

from fourdqbo import jsonio
from fourdqbo.errors import MalformedPayload
from fourdqbo.qbo.records import Customer, Estimate, Invoice, InvoiceLine, Item

INVOICE_JSON = """
{"Id": "145", "SyncToken": "3", "DocNumber": 10023, "TxnDate": "2025-03-05",
 "CustomerRef": {"value": "58", "name": "1042.JQD"},
 "CustomField": [
   {"DefinitionId": "1", "Name": "Quote Version", "Type": "StringType", "StringValue": "3"},
   {"DefinitionId": "2", "Name": "Quoted By", "Type": "StringType"}],
 "Line": [
   {"Id": "1", "LineNum": 1, "DetailType": "SalesItemLineDetail", "Amount": 1250.00,
    "Description": "Rhinoplasty",
    "SalesItemLineDetail": {"ItemRef": {"value": "12", "name": "Procedure"},
                            "Qty": 1, "UnitPrice": 1250.00}},
   {"Id": "2", "LineNum": 2, "DetailType": "SalesItemLineDetail", "Amount": 19.98,
    "Description": "Gauze",
    "SalesItemLineDetail": {"ItemRef": {"value": "13"}, "Qty": 2, "UnitPrice": 9.99}},
   {"DetailType": "SubTotalLineDetail", "Amount": 1269.98, "SubTotalLineDetail": {}}],
 "TotalAmt": 1269.98, "Balance": 1269.98,
 "MetaData": {"CreateTime": "2025-03-05T10:21:33-08:00",
              "LastUpdatedTime": "2025-07-01T09:00:00.123-07:00"},
 "domain": "QBO", "sparse": false}
"""


def invoice(**changes: Any) -> Invoice:
    data = jsonio.loads(INVOICE_JSON)
    data.update(changes)
    return Invoice.parse(data)


def test_invoice_lines_skip_the_subtotal_line() -> None:
    parsed = invoice()
    assert parsed.lines == (
        InvoiceLine("12", "Rhinoplasty", Decimal("1250.00"), Decimal("1"), Decimal("1250.00")),
        InvoiceLine("13", "Gauze", Decimal("19.98"), Decimal("2"), Decimal("9.99")),
    )


def test_invoice_fields() -> None:
    parsed = invoice()
    assert parsed.id == "145"
    assert parsed.sync_token == "3"
    assert parsed.doc_number == "10023"  # a number in JSON is still a string to us
    assert parsed.txn_date == date(2025, 3, 5)
    assert (parsed.customer_id, parsed.customer_name) == ("58", "1042.JQD")
    assert parsed.custom_fields == {"1": "3", "2": ""}
    assert parsed.total == Decimal("1269.98")
    assert isinstance(parsed.total, Decimal)
    assert parsed.raw["domain"] == "QBO"


def test_pacific_standard_and_daylight_offsets_become_utc() -> None:
    parsed = invoice()
    assert parsed.created_at == datetime(2025, 3, 5, 18, 21, 33, tzinfo=UTC)
    assert parsed.updated_at == datetime(2025, 7, 1, 16, 0, 0, 123000, tzinfo=UTC)
    assert parsed.updated_at.utcoffset().total_seconds() == 0


def test_unpaid_invoice_is_not_paid() -> None:
    assert invoice().paid is False


def test_payment_applied_means_paid() -> None:
    assert invoice(Balance=Decimal("269.98")).paid is True
    assert invoice(Balance=0).paid is True


def test_equal_amounts_with_different_scale_are_not_paid() -> None:
    assert invoice(TotalAmt=Decimal("100"), Balance=Decimal("100.00")).paid is False


def test_missing_or_null_balance_counts_as_unpaid() -> None:
    data = jsonio.loads(INVOICE_JSON)
    del data["Balance"]
    assert Invoice.parse(data).paid is False
    assert invoice(Balance=None).paid is False


def test_odd_shapes_are_tolerated() -> None:
    parsed = invoice(CustomerRef=None, Line=None, CustomField={"x": 1}, MetaData="?")
    assert parsed.customer_id is None
    assert parsed.lines == ()
    assert parsed.custom_fields == {}
    assert parsed.updated_at is None


def test_line_without_detail_object_is_kept_without_item() -> None:
    parsed = invoice(Line=[{"DetailType": "SalesItemLineDetail", "Amount": 5}])
    assert parsed.lines == (InvoiceLine(None, "", Decimal("5"), None, None),)


@pytest.mark.parametrize(
    "changes",
    [
        {"Id": None},
        {"SyncToken": {"x": 1}},
        {"TotalAmt": "lots"},
        {"TxnDate": "05/03/2025"},
        {"MetaData": {"LastUpdatedTime": "2025-03-05T10:21:33"}},  # no zone: never guessed
    ],
)
def test_unusable_invoices_are_malformed(changes: dict[str, Any]) -> None:
    with pytest.raises(MalformedPayload):
        invoice(**changes)


def test_non_object_is_malformed() -> None:
    with pytest.raises(MalformedPayload):
        Invoice.parse(["not", "an", "invoice"])


def test_customer_parse_and_active_flag() -> None:
    customer = Customer.parse(
        {
            "Id": "58",
            "SyncToken": "0",
            "DisplayName": "1042.JQD",
            "Active": False,
            "MetaData": {"LastUpdatedTime": "2025-01-10T08:00:00-08:00"},
        }
    )
    assert customer == Customer("58", "0", "1042.JQD", False, datetime(2025, 1, 10, 16, tzinfo=UTC))
    assert Customer.parse({"Id": 1, "SyncToken": 0, "Active": "false"}).active is False
    assert Customer.parse({"Id": 1, "SyncToken": 0}).active is True
    assert Customer.parse({"Id": 1, "SyncToken": 0, "Active": None}).active is True


def test_item_parse() -> None:
    assert Item.parse({"Id": "12", "Name": "Procedure", "Active": True}) == Item("12", "Procedure")
    assert Item.parse({"Id": "13", "Name": "Old", "Active": "false"}).active is False


def test_estimate_parse() -> None:
    estimate = Estimate.parse(
        {
            "Id": "7",
            "SyncToken": "1",
            "DocNumber": "E-1",
            "TxnDate": "2025-02-01",
            "CustomerRef": {"value": "58", "name": "1042.JQD"},
            "TxnStatus": "Pending",
            "TotalAmt": 300.5,
            "MetaData": {"LastUpdatedTime": "2025-02-01T12:00:00-08:00"},
        }
    )
    assert estimate.status == "Pending"
    assert estimate.total == Decimal("300.5")
    assert estimate.updated_at == datetime(2025, 2, 1, 20, tzinfo=UTC)


# --- as real QBO answers show it (API-NOTES.md, last section) ---------------------------


def voided(**changes: Any) -> Invoice:
    """The invoice as QBO's void answer has it: kept, every amount 0, PrivateNote 'Voided'."""
    data = jsonio.loads(INVOICE_JSON)
    for line in data["Line"]:
        line["Amount"] = 0
    data.update(TotalAmt=0, Balance=0, SyncToken="4", PrivateNote="Voided")
    data.update(changes)
    return Invoice.parse(data)


def test_void_answer_is_voided_and_keeps_its_doc_number() -> None:
    parsed = voided()
    assert parsed.voided is True
    assert parsed.doc_number == "10023"
    assert parsed.private_note == "Voided"


@pytest.mark.parametrize("note", ["Voided", "voided 2025-03-05", "VOIDED by QBO", "  Voided"])
def test_void_note_is_matched_case_insensitively(note: str) -> None:
    assert voided(PrivateNote=note).voided is True


def test_zero_total_alone_is_not_a_void() -> None:
    # A free follow-up visit is an invoice of 0: no note, so not voided.
    assert voided(PrivateNote=None).voided is False
    assert voided(PrivateNote="free follow-up").voided is False


def test_void_note_with_amounts_left_is_not_a_void() -> None:
    # Someone typed "Voided…" into the memo of a live invoice: amounts decide.
    assert invoice(PrivateNote="Voided by mistake?").voided is False
    line = {"DetailType": "SalesItemLineDetail", "Amount": 5, "SalesItemLineDetail": {}}
    assert voided(Line=[line]).voided is False


def test_private_note_and_email_status() -> None:
    assert invoice().private_note == "" and invoice().email_status is None
    parsed = invoice(PrivateNote="call first", EmailStatus="EmailSent")
    assert (parsed.private_note, parsed.email_status) == ("call first", "EmailSent")


def test_linked_payments_are_read_and_other_links_ignored() -> None:
    parsed = invoice(
        LinkedTxn=[
            {"TxnId": "310", "TxnType": "Payment"},
            {"TxnId": "77", "TxnType": "Estimate"},
            {"TxnId": 311, "TxnType": "payment"},
            {"TxnType": "Payment"},
            "junk",
        ]
    )
    assert parsed.payment_ids == ("310", "311")
    assert invoice(LinkedTxn=None).payment_ids == ()
    assert invoice().payment_ids == ()


def test_custom_field_without_string_value_is_empty() -> None:
    parsed = invoice(
        CustomField=[
            {"DefinitionId": "1", "Name": "Crew #", "Type": "StringType"},
            {"DefinitionId": "2", "Name": "Quoted By", "Type": "StringType", "StringValue": None},
            {"DefinitionId": "3", "Name": "X", "Type": "StringType", "StringValue": "7"},
        ]
    )
    assert parsed.custom_fields == {"1": "", "2": "", "3": "7"}


def test_inactive_customer_keeps_the_name_qbo_gave_it() -> None:
    customer = Customer.parse(
        {"Id": "9", "SyncToken": "3", "DisplayName": "1042.JQD (deleted)", "Active": False}
    )
    assert customer.display_name == "1042.JQD (deleted)"
    assert customer.active is False
