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
