"""The simulated QBO company's writes, batch, auth and protocol rules (API-NOTES.md)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import httpx

from fourdqbo.sandbox.server import Sandbox
from tests.sandbox.conftest import QboCaller, fault_codes


def item_id(sandbox: Sandbox, name: str) -> str:
    item = sandbox.company.item_by_name(name)
    assert item is not None
    return str(item["Id"])


def new_customer(qbo: QboCaller, name: str = "2001.AB") -> dict[str, Any]:
    response = qbo.post("customer", {"DisplayName": name})
    assert response.status_code == 200, response.text
    return dict(qbo.json(response)["Customer"])


def invoice_body(sandbox: Sandbox, customer_id: str, doc: str = "90001") -> dict[str, Any]:
    return {
        "DocNumber": doc,
        "TxnDate": "2025-03-05",
        "CustomerRef": {"value": customer_id},
        "CustomField": [
            {"DefinitionId": "1", "Name": "Quote Version", "Type": "StringType",
             "StringValue": "2"},
        ],
        "Line": [
            {"DetailType": "SalesItemLineDetail", "Amount": Decimal("7650.00"),
             "Description": "Rhinoplasty",
             "SalesItemLineDetail": {"ItemRef": {"value": item_id(sandbox, "Procedure")}}},
            {"DetailType": "SalesItemLineDetail", "Amount": Decimal("7.13"),
             "Description": "Post-op Ice Pack",
             "SalesItemLineDetail": {"ItemRef": {"value": item_id(sandbox, "Supplies Charge")},
                                     "Qty": Decimal("3"), "UnitPrice": Decimal("2.375")}},
        ],
    }  # fmt: skip


def create_invoice(sandbox: Sandbox, qbo: QboCaller, doc: str = "90001") -> dict[str, Any]:
    customer = new_customer(qbo, f"Customer for {doc}")
    response = qbo.post("invoice", invoice_body(sandbox, customer["Id"], doc))
    assert response.status_code == 200, response.text
    return dict(qbo.json(response)["Invoice"])


def test_created_invoice_has_totals_subtotal_line_and_local_offset(
    sandbox: Sandbox, qbo: QboCaller
) -> None:
    invoice = create_invoice(sandbox, qbo)
    assert invoice["Id"].isdigit() and invoice["SyncToken"] == "0"
    assert invoice["TotalAmt"] == Decimal("7657.13")
    assert invoice["Balance"] == invoice["TotalAmt"]
    kinds = [line["DetailType"] for line in invoice["Line"]]
    assert kinds == ["SalesItemLineDetail", "SalesItemLineDetail", "SubTotalLineDetail"]
    assert invoice["CustomerRef"]["name"] == "Customer for 90001"
    created = invoice["MetaData"]["CreateTime"]
    assert created[-6:] in ("-08:00", "-07:00")  # America/Los_Angeles
    assert {"DefinitionId": "1", "Name": "Quote Version", "Type": "StringType",
            "StringValue": "2"} in invoice["CustomField"]  # fmt: skip
    assert sandbox.company.invoices_by_doc("90001")[0]["Id"] == invoice["Id"]


def test_every_answer_carries_an_intuit_tid(qbo: QboCaller) -> None:
    ok = qbo.query("SELECT * FROM Item")
    bad = qbo.query("SELECT nonsense")
    assert ok.headers["intuit_tid"] and bad.headers["intuit_tid"]
    assert ok.headers["intuit_tid"] != bad.headers["intuit_tid"]


def test_minorversion_is_required(qbo: QboCaller) -> None:
    response = qbo.http.get(
        f"{qbo.base}/query", params={"query": "SELECT * FROM Item"}, headers=qbo.headers()
    )
    assert response.status_code == 400
    assert "Fault" in qbo.json(response)


def auth_fault(response: httpx.Response) -> dict[str, Any]:
    """The recorded 401: lower-case keys, epoch-ms time, and the Bearer challenge."""
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == 'Bearer realm="Intuit", error="invalid_token"'
    body = dict(QboCaller.json(response))
    assert set(body) == {"warnings", "fault", "time"} and body["warnings"] is None
    assert isinstance(body["time"], int) and body["time"] > 1_600_000_000_000
    assert body["fault"]["type"] == "AUTHENTICATION"
    [error] = body["fault"]["error"]
    assert error["message"] == "message=AuthenticationFailed; errorCode=003200; statusCode=401"
    assert (error["code"], error["element"]) == ("3200", None)
    return dict(error)


def test_bad_or_missing_bearer_token_is_the_recorded_401(qbo: QboCaller) -> None:
    for headers, shown in (
        ({"Authorization": "Bearer not-a-token-at-all"}, "not-a-to"),
        ({"Authorization": ""}, ""),
    ):
        response = qbo.http.get(
            f"{qbo.base}/query",
            params={"query": "SELECT * FROM Item", "minorversion": "75"},
            headers={**qbo.headers(), **headers},
        )
        assert auth_fault(response)["detail"] == f"Token expired: {shown}…"


def test_expired_access_token_is_401_quoting_the_start_of_the_token(
    sandbox: Sandbox, qbo: QboCaller
) -> None:
    assert qbo.query("SELECT * FROM Item").status_code == 200
    sandbox.clock.advance(3601)
    response = qbo.query("SELECT * FROM Item")
    error = auth_fault(response)
    assert error["detail"] == f"Token expired: {qbo.token[:8]}…"
    assert qbo.token[8:16] not in response.text  # only the start is repeated


def test_revoked_credentials_knob_answers_the_same_401(sandbox: Sandbox, qbo: QboCaller) -> None:
    sandbox.knobs.qbo.unauthorized = True
    error = auth_fault(qbo.query("SELECT * FROM Item"))
    assert error["detail"].startswith(f"Token expired: {qbo.token[:8]}")


def test_json_is_only_sent_to_clients_that_accept_it(qbo: QboCaller) -> None:
    response = qbo.http.get(
        f"{qbo.base}/query",
        params={"query": "SELECT * FROM Item", "minorversion": "75"},
        headers={"Authorization": f"Bearer {qbo.token}"},
    )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/xml")
    assert response.text.lstrip().startswith("<?xml")


def test_write_without_json_content_type_is_refused(sandbox: Sandbox, qbo: QboCaller) -> None:
    response = qbo.http.post(
        f"{qbo.base}/customer",
        params={"minorversion": "75"},
        content=b'{"DisplayName": "No Content Type"}',
        headers={"Authorization": f"Bearer {qbo.token}", "Accept": "application/json"},
    )
    assert response.status_code == 415
    assert sandbox.company.customer_by_name("No Content Type") is None


def test_amount_must_equal_qty_times_unit_price(sandbox: Sandbox, qbo: QboCaller) -> None:
    customer = new_customer(qbo)
    body = invoice_body(sandbox, customer["Id"])
    body["Line"][1]["Amount"] = Decimal("7.12")  # 3 x 2.375 = 7.125 -> 7.13
    response = qbo.post("invoice", body)
    assert response.status_code == 400
    assert fault_codes(qbo.json(response)) == ["6000"]
    assert sandbox.company.invoices_by_doc("90001") == []


def test_unknown_item_and_inactive_customer_are_refused(sandbox: Sandbox, qbo: QboCaller) -> None:
    customer = new_customer(qbo)
    body = invoice_body(sandbox, customer["Id"])
    body["Line"][0]["SalesItemLineDetail"]["ItemRef"] = {"value": "9999"}
    assert fault_codes(qbo.json(qbo.post("invoice", body))) == ["2500"]
    inactive_id = sandbox.facts.inactive_customer_id
    assert inactive_id is not None
    response = qbo.post("invoice", invoice_body(sandbox, inactive_id))
    assert response.status_code == 400
    assert fault_codes(qbo.json(response)) == ["2500"]


def test_duplicate_doc_number_is_6140_while_the_setting_is_on(
    sandbox: Sandbox, qbo: QboCaller
) -> None:
    invoice = create_invoice(sandbox, qbo)
    again = qbo.post("invoice", invoice_body(sandbox, invoice["CustomerRef"]["value"]))
    assert again.status_code == 400
    assert fault_codes(qbo.json(again)) == ["6140"]
    sandbox.company.settings.duplicate_doc_number_check = False
    allowed = qbo.post("invoice", invoice_body(sandbox, invoice["CustomerRef"]["value"]))
    assert allowed.status_code == 200
    assert len(sandbox.company.invoices_by_doc("90001")) == 2


def test_display_name_is_unique_across_inactive_customers_ignoring_case(
    sandbox: Sandbox, qbo: QboCaller
) -> None:
    inactive = next(c for c in sandbox.company.customers() if not c["Active"])
    response = qbo.post("customer", {"DisplayName": inactive["DisplayName"].lower()})
    assert response.status_code == 400
    body = qbo.json(response)
    assert fault_codes(body) == ["6240"]
    assert body["Fault"]["Error"][0]["Message"] == "Duplicate Name Exists Error"


def test_sparse_update_reactivates_a_customer(sandbox: Sandbox, qbo: QboCaller) -> None:
    inactive = next(c for c in sandbox.company.customers() if not c["Active"])
    response = qbo.post(
        "customer",
        {"Id": inactive["Id"], "SyncToken": inactive["SyncToken"], "sparse": True, "Active": True},
    )
    assert response.status_code == 200, response.text
    customer = qbo.json(response)["Customer"]
    assert customer["Active"] is True
    assert customer["DisplayName"] == inactive["DisplayName"]
    assert int(customer["SyncToken"]) == int(inactive["SyncToken"]) + 1


def test_stale_sync_token_is_5010_and_changes_nothing(sandbox: Sandbox, qbo: QboCaller) -> None:
    invoice = create_invoice(sandbox, qbo)
    update = {"Id": invoice["Id"], "SyncToken": "0", "sparse": True, "PrivateNote": "first"}
    first = qbo.post("invoice", update)
    assert first.status_code == 200
    assert qbo.json(first)["Invoice"]["SyncToken"] == "1"
    stale = qbo.post("invoice", {**update, "PrivateNote": "second"})
    assert stale.status_code == 400
    assert fault_codes(qbo.json(stale)) == ["5010"]
    assert sandbox.company.invoice(invoice["Id"])["PrivateNote"] == "first"


def test_sparse_update_replaces_lines_and_recomputes_balance(
    sandbox: Sandbox, qbo: QboCaller
) -> None:
    invoice = create_invoice(sandbox, qbo)
    sandbox.company.apply_payment(invoice["Id"], "100.00")
    current = sandbox.company.invoice(invoice["Id"])
    assert current["Balance"] == Decimal("7557.13")
    new_lines = [
        {"DetailType": "SalesItemLineDetail", "Amount": Decimal("8000.00"),
         "SalesItemLineDetail": {"ItemRef": {"value": item_id(sandbox, "Procedure")}}},
    ]  # fmt: skip
    response = qbo.post(
        "invoice",
        {"Id": current["Id"], "SyncToken": current["SyncToken"], "sparse": True,
         "Line": new_lines},
    )  # fmt: skip
    assert response.status_code == 200, response.text
    updated = qbo.json(response)["Invoice"]
    assert updated["TotalAmt"] == Decimal("8000.00")
    assert updated["Balance"] == Decimal("7900.00")
    assert updated["DocNumber"] == "90001"  # sparse: untouched fields stay


def test_full_update_clears_fields_it_does_not_send(sandbox: Sandbox, qbo: QboCaller) -> None:
    invoice = create_invoice(sandbox, qbo)
    body = invoice_body(sandbox, invoice["CustomerRef"]["value"])
    del body["CustomField"]
    body.update({"Id": invoice["Id"], "SyncToken": invoice["SyncToken"]})
    updated = qbo.json(qbo.post("invoice", body))["Invoice"]
    assert all("StringValue" not in field for field in updated["CustomField"])


def test_unknown_id_is_610(qbo: QboCaller) -> None:
    response = qbo.post("invoice", {"Id": "99999", "SyncToken": "0", "sparse": True})
    assert response.status_code == 400
    assert fault_codes(qbo.json(response)) == ["610"]
    assert fault_codes(qbo.json(qbo.get("invoice/99999"))) == ["610"]


def test_delete_removes_the_invoice_from_queries(sandbox: Sandbox, qbo: QboCaller) -> None:
    invoice = create_invoice(sandbox, qbo)
    response = qbo.post(
        "invoice", {"Id": invoice["Id"], "SyncToken": invoice["SyncToken"]}, operation="delete"
    )
    assert response.status_code == 200
    assert qbo.json(response)["Invoice"]["status"] == "Deleted"
    assert qbo.rows("SELECT * FROM Invoice WHERE DocNumber = '90001'") == []
    assert sandbox.company.invoices_by_doc("90001") == []


def test_void_zeroes_amounts_and_keeps_the_invoice(sandbox: Sandbox, qbo: QboCaller) -> None:
    invoice = create_invoice(sandbox, qbo)
    response = qbo.post(
        "invoice", {"Id": invoice["Id"], "SyncToken": invoice["SyncToken"]}, operation="void"
    )
    assert response.status_code == 200, response.text
    voided = qbo.json(response)["Invoice"]
    assert voided["TotalAmt"] == 0 and voided["Balance"] == 0
    assert voided["PrivateNote"] == "Voided"
    assert [r["Id"] for r in qbo.rows("SELECT * FROM Invoice WHERE DocNumber = '90001'")] == [
        invoice["Id"]
    ]


def test_requestid_replays_the_first_answer_without_writing_again(
    sandbox: Sandbox, qbo: QboCaller
) -> None:
    customer = new_customer(qbo)
    body = invoice_body(sandbox, customer["Id"])
    first = qbo.post("invoice", body, requestid="req-1")
    second = qbo.post("invoice", body, requestid="req-1")
    assert first.status_code == second.status_code == 200
    assert qbo.json(first)["Invoice"]["Id"] == qbo.json(second)["Invoice"]["Id"]
    assert len(sandbox.company.invoices_by_doc("90001")) == 1
    other = qbo.post("invoice", body, requestid="req-2")
    assert fault_codes(qbo.json(other)) == ["6140"]  # a new request id is a new write


def test_batch_answers_every_item_by_bid_in_shuffled_order(
    sandbox: Sandbox, qbo: QboCaller
) -> None:
    items = [
        {"bId": f"c{n}", "operation": "create", "Customer": {"DisplayName": f"Batch {n}"}}
        for n in range(12)
    ]
    items.append({"bId": "q", "Query": "SELECT * FROM Item WHERE Name = 'Procedure'"})
    response = qbo.batch(items)
    assert response.status_code == 200, response.text
    answers = qbo.json(response)["BatchItemResponse"]
    assert sorted(a["bId"] for a in answers) == sorted(i["bId"] for i in items)
    assert [a["bId"] for a in answers] != [i["bId"] for i in items]  # seeded shuffle
    by_id = {a["bId"]: a for a in answers}
    assert by_id["c3"]["Customer"]["DisplayName"] == "Batch 3"
    assert by_id["q"]["QueryResponse"]["Item"][0]["Name"] == "Procedure"


def test_batch_items_fail_independently(sandbox: Sandbox, qbo: QboCaller) -> None:
    taken = sandbox.company.customers()[0]["DisplayName"]
    items = [
        {"bId": "1", "operation": "create", "Customer": {"DisplayName": "Fresh Name"}},
        {"bId": "2", "operation": "create", "Customer": {"DisplayName": taken}},
        {"bId": "3", "Query": "SELECT * FROM Nowhere"},
        {"bId": "4", "operation": "update", "Invoice": {"Id": "99999", "SyncToken": "0"}},
    ]
    answers = {a["bId"]: a for a in qbo.json(qbo.batch(items))["BatchItemResponse"]}
    assert answers["1"]["Customer"]["DisplayName"] == "Fresh Name"
    assert fault_codes(answers["2"]) == ["6240"]
    assert fault_codes(answers["3"]) == ["4000"]
    assert fault_codes(answers["4"]) == ["610"]
    assert sandbox.company.customer_by_name("Fresh Name") is not None


def test_batch_of_31_items_is_refused_whole(sandbox: Sandbox, qbo: QboCaller) -> None:
    items = [
        {"bId": str(n), "operation": "create", "Customer": {"DisplayName": f"Too many {n}"}}
        for n in range(31)
    ]
    response = qbo.batch(items)
    assert response.status_code == 400
    assert "Fault" in qbo.json(response)
    assert sandbox.company.customer_by_name("Too many 0") is None
    assert qbo.batch(items[:30]).status_code == 200


def test_batch_can_update_delete_and_void_invoices(sandbox: Sandbox, qbo: QboCaller) -> None:
    one = create_invoice(sandbox, qbo, "91001")
    two = create_invoice(sandbox, qbo, "91002")
    three = create_invoice(sandbox, qbo, "91003")
    items = [
        {"bId": "u", "operation": "update",
         "Invoice": {"Id": one["Id"], "SyncToken": "0", "sparse": True, "PrivateNote": "x"}},
        {"bId": "d", "operation": "delete", "Invoice": {"Id": two["Id"], "SyncToken": "0"}},
        {"bId": "v", "operation": "void", "Invoice": {"Id": three["Id"], "SyncToken": "0"}},
    ]  # fmt: skip
    answers = {a["bId"]: a for a in qbo.json(qbo.batch(items))["BatchItemResponse"]}
    assert answers["u"]["Invoice"]["SyncToken"] == "1"
    assert answers["d"]["Invoice"]["status"] == "Deleted"
    assert answers["v"]["Invoice"]["TotalAmt"] == 0
    assert sandbox.company.invoices_by_doc("91002") == []


def test_apply_payment_lowers_balance(sandbox: Sandbox, qbo: QboCaller) -> None:
    invoice = create_invoice(sandbox, qbo)
    paid = sandbox.company.apply_payment(invoice["Id"], Decimal("57.13"))
    assert paid["Balance"] == Decimal("7600.00")
    assert paid["TotalAmt"] == Decimal("7657.13")
    assert paid["SyncToken"] == "1"
    customer = sandbox.company.customer(invoice["CustomerRef"]["value"])
    assert customer["Balance"] == Decimal("7600.00")


def test_wrong_realm_is_refused(sandbox: Sandbox, qbo: QboCaller) -> None:
    response = httpx.get(
        f"{sandbox.qbo_api_base_url}/v3/company/1111/query",
        params={"query": "SELECT * FROM Item", "minorversion": "75"},
        headers=qbo.headers(),
    )
    assert response.status_code == 403
