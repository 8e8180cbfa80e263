"""What a person does in QBO: Company methods that change the books without an API request,
yet bump SyncToken and LastUpdatedTime and go into the change log as real edits do."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

import pytest

from fourdqbo.sandbox.qbo import QboFault
from fourdqbo.sandbox.server import Sandbox
from fourdqbo.timefmt import parse_instant
from tests.sandbox.conftest import QboCaller
from tests.sandbox.test_qbo_api import create_invoice, item_id


def amounts_hold(invoice: dict) -> None:
    """Amount == Qty x UnitPrice on every line; TotalAmt is their sum."""
    sales = [line for line in invoice["Line"] if line["DetailType"] == "SalesItemLineDetail"]
    for line in sales:
        detail = line["SalesItemLineDetail"]
        if "Qty" in detail and "UnitPrice" in detail:
            product = (detail["Qty"] * detail["UnitPrice"]).quantize(Decimal("0.01"))
            assert product == line["Amount"]
    assert invoice["TotalAmt"] == sum(line["Amount"] for line in sales)


def test_edit_invoice_changes_amounts_and_descriptions_and_stays_valid(
    sandbox: Sandbox, qbo: QboCaller
) -> None:
    invoice = create_invoice(sandbox, qbo)
    sandbox.clear_requests()
    sandbox.clock.advance(90)
    edited = sandbox.company.edit_invoice(
        invoice["Id"],
        line_amounts={1: "7000.00", 2: Decimal("9.00")},
        descriptions={1: "Rhinoplasty (revised)"},
        txn_date="2025-03-07",
    )
    assert sandbox.requests == []  # not an API request
    assert edited["SyncToken"] == "1"
    assert parse_instant(edited["MetaData"]["LastUpdatedTime"]) > parse_instant(
        invoice["MetaData"]["LastUpdatedTime"]
    )
    assert [line.get("Amount") for line in edited["Line"][:2]] == [
        Decimal("7000.00"),
        Decimal("9.00"),
    ]
    assert edited["Line"][1]["SalesItemLineDetail"]["Qty"] == Decimal("3")
    assert edited["Line"][1]["SalesItemLineDetail"]["UnitPrice"] == Decimal("3")
    assert edited["Line"][0]["Description"] == "Rhinoplasty (revised)"
    assert edited["TxnDate"] == "2025-03-07"
    assert edited["TotalAmt"] == edited["Balance"] == Decimal("7009.00")
    amounts_hold(edited)
    assert sandbox.company.invoice(invoice["Id"]) == edited


def test_an_amount_qty_does_not_divide_gets_a_seven_place_rate(
    sandbox: Sandbox, qbo: QboCaller
) -> None:
    invoice = create_invoice(sandbox, qbo)
    edited = sandbox.company.edit_invoice(invoice["Id"], line_amounts={2: "10.00"})  # / 3
    detail = edited["Line"][1]["SalesItemLineDetail"]
    assert (detail["Qty"], detail["UnitPrice"]) == (Decimal("3"), Decimal("3.3333333"))
    amounts_hold(edited)


def test_add_and_remove_lines_and_set_a_custom_field(sandbox: Sandbox, qbo: QboCaller) -> None:
    invoice = create_invoice(sandbox, qbo)
    sandbox.company.apply_payment(invoice["Id"], "100.00")
    edited = sandbox.company.edit_invoice(
        invoice["Id"],
        remove_lines=[2],
        add_line={"Amount": "250.00", "Description": "Late fee",
                  "SalesItemLineDetail": {"ItemRef": {"value": item_id(sandbox, "Services")}}},
        custom_fields={"Crew #": "7", "Quote Version": None},
    )  # fmt: skip
    sales = [line for line in edited["Line"] if line["DetailType"] == "SalesItemLineDetail"]
    assert [(line["LineNum"], line["Description"]) for line in sales] == [
        (1, "Rhinoplasty"),
        (2, "Late fee"),
    ]
    assert edited["TotalAmt"] == Decimal("7900.00")
    assert edited["Balance"] == Decimal("7800.00")  # the payment still counts
    assert edited["LinkedTxn"][0]["TxnType"] == "Payment"
    fields = {f["Name"]: f.get("StringValue") for f in edited["CustomField"]}
    assert fields == {"Quote Version": None, "Quoted By": None, "Crew #": "7"}


def test_edit_refuses_what_qbo_would_and_unknown_lines(sandbox: Sandbox, qbo: QboCaller) -> None:
    invoice = create_invoice(sandbox, qbo)
    with pytest.raises(KeyError):
        sandbox.company.edit_invoice(invoice["Id"], descriptions={9: "no such line"})
    with pytest.raises(KeyError):
        sandbox.company.edit_invoice("99999", line_amounts={1: "1.00"})
    bad_line = {"Amount": "5.00", "SalesItemLineDetail": {"ItemRef": {"value": "9999"}}}
    with pytest.raises(QboFault) as caught:
        sandbox.company.edit_invoice(invoice["Id"], add_line=bad_line)
    assert caught.value.code == "2500"
    assert sandbox.company.invoice(invoice["Id"])["SyncToken"] == "0"  # nothing changed


def test_a_client_holding_the_old_sync_token_meets_5010(sandbox: Sandbox, qbo: QboCaller) -> None:
    invoice = create_invoice(sandbox, qbo)
    sandbox.company.edit_invoice(invoice["Id"], descriptions={1: "changed by the bookkeeper"})
    response = qbo.post(
        "invoice", {"Id": invoice["Id"], "SyncToken": "0", "sparse": True, "PrivateNote": "x"}
    )
    assert response.status_code == 400
    assert qbo.json(response)["Fault"]["Error"][0]["code"] == "5010"


def test_delete_and_void_invoice(sandbox: Sandbox, qbo: QboCaller) -> None:
    one = create_invoice(sandbox, qbo, "94001")
    two = create_invoice(sandbox, qbo, "94002")
    assert sandbox.company.delete_invoice(one["Id"]) == {
        "status": "Deleted",
        "domain": "QBO",
        "Id": one["Id"],
    }
    assert sandbox.company.invoice(one["Id"]) is None
    assert qbo.json(qbo.get(f"invoice/{one['Id']}"))["Fault"]["Error"][0]["code"] == "610"
    voided = sandbox.company.void_invoice(two["Id"])
    assert (voided["TotalAmt"], voided["Balance"], voided["SyncToken"]) == (0, 0, "1")
    assert voided["PrivateNote"] == "Voided" and voided["DocNumber"] == "94002"
    kinds = [(c.entity, c.id, c.kind, c.by) for c in sandbox.company.changes("Invoice")][-2:]
    assert kinds == [
        ("Invoice", one["Id"], "delete", "person"),
        ("Invoice", two["Id"], "void", "person"),
    ]


def test_voiding_a_paid_invoice_unlinks_the_payment(sandbox: Sandbox, qbo: QboCaller) -> None:
    invoice = create_invoice(sandbox, qbo)
    sandbox.company.apply_payment(invoice["Id"], "57.13")
    voided = sandbox.company.void_invoice(invoice["Id"])
    assert voided["LinkedTxn"] == [] and voided["Balance"] == 0


def test_apply_payment_links_a_payment_and_logs_a_change(sandbox: Sandbox, qbo: QboCaller) -> None:
    invoice = create_invoice(sandbox, qbo)
    first = sandbox.company.apply_payment(invoice["Id"], "57.13")
    second = sandbox.company.apply_payment(invoice["Id"], "600.00")
    assert second["Balance"] == Decimal("7000.00") and second["SyncToken"] == "2"
    assert [link["TxnType"] for link in second["LinkedTxn"]] == ["Payment", "Payment"]
    assert first["LinkedTxn"][0]["TxnId"] != second["LinkedTxn"][1]["TxnId"]
    last = sandbox.company.changes("Invoice")[-1]
    assert (last.id, last.kind, last.by, last.sync_token) == (
        invoice["Id"],
        "payment",
        "person",
        "2",
    )


def test_send_invoice_email_changes_only_sync_token_and_email_status(
    sandbox: Sandbox, qbo: QboCaller
) -> None:
    invoice = create_invoice(sandbox, qbo)
    sent = sandbox.company.send_invoice_email(invoice["Id"])
    assert sent["SyncToken"] == "1" and sent["EmailStatus"] == "EmailSent"
    for name in ("Line", "TotalAmt", "Balance", "CustomField", "DocNumber", "TxnDate"):
        assert sent[name] == invoice[name]
    later = sandbox.company.edit_invoice(invoice["Id"], descriptions={1: "x"})
    assert later["EmailStatus"] == "EmailSent"  # an edit does not unsend it
    assert sandbox.company.changes("Invoice")[-2].kind == "email"


def test_person_methods_are_safe_while_clients_write(sandbox: Sandbox, qbo: QboCaller) -> None:
    invoice = create_invoice(sandbox, qbo)

    def pay(_: int) -> None:
        sandbox.company.apply_payment(invoice["Id"], "1.00")

    def read(_: int) -> int:
        return qbo.get(f"invoice/{invoice['Id']}").status_code

    with ThreadPoolExecutor(max_workers=4) as pool:
        paid = pool.map(pay, range(40))
        reads = pool.map(read, range(20))
        list(paid)
        assert set(reads) == {200}
    final = sandbox.company.invoice(invoice["Id"])
    assert final["SyncToken"] == "40"
    assert final["Balance"] == Decimal("7617.13")
