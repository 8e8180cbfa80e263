"""Inactive customers are renamed " (deleted)" as recorded QBO answers show (API-NOTES.md)."""

from __future__ import annotations

from typing import Any

import pytest

from fourdqbo.sandbox.qbo import QboFault, plain_name
from fourdqbo.sandbox.server import Sandbox
from tests.sandbox.conftest import QboCaller, fault_codes

# The recorded 6240 fault (qbo_api cassettes), whoever holds the name.
DUPLICATE_NAME = {
    "Message": "Duplicate Name Exists Error",
    "Detail": "The name supplied already exists. : Another customer, vendor or employee is "
    "already using this name. Please use a different name.",
    "code": "6240",
    "element": "",
}


def create(qbo: QboCaller, name: str) -> dict[str, Any]:
    response = qbo.post("customer", {"DisplayName": name})
    assert response.status_code == 200, response.text
    return dict(qbo.json(response)["Customer"])


def sparse(qbo: QboCaller, customer: dict[str, Any], **fields: Any) -> Any:
    body = {"Id": customer["Id"], "SyncToken": customer["SyncToken"], "sparse": True, **fields}
    return qbo.post("customer", body)


def deactivate(qbo: QboCaller, customer: dict[str, Any]) -> dict[str, Any]:
    response = sparse(qbo, customer, Active=False)
    assert response.status_code == 200, response.text
    return dict(qbo.json(response)["Customer"])


def test_sparse_update_active_false_appends_deleted_and_frees_the_name(
    sandbox: Sandbox, qbo: QboCaller
) -> None:
    customer = create(qbo, "2903.JD")
    inactive = deactivate(qbo, customer)
    assert inactive["Active"] is False
    assert inactive["DisplayName"] == "2903.JD (deleted)"
    assert inactive["FullyQualifiedName"] == "2903.JD (deleted)"
    assert inactive["PrintOnCheckName"] == "2903.JD"
    assert inactive["SyncToken"] == "1"
    fresh = create(qbo, "2903.JD")  # the plain name is free again
    assert fresh["Id"] != customer["Id"] and fresh["Active"] is True
    names = {c["Id"]: c["DisplayName"] for c in sandbox.company.customers()}
    assert (names[customer["Id"]], names[fresh["Id"]]) == ("2903.JD (deleted)", "2903.JD")


def test_the_suffixed_name_itself_is_taken(qbo: QboCaller) -> None:
    deactivate(qbo, create(qbo, "2904.AB"))
    response = qbo.post("customer", {"DisplayName": "2904.ab (DELETED)"})
    assert response.status_code == 400
    assert qbo.json(response)["Fault"]["Error"] == [DUPLICATE_NAME]


def test_legacy_spelling_knob_writes_capital_d(sandbox: Sandbox, qbo: QboCaller) -> None:
    sandbox.company.settings.legacy_deleted_spelling = True
    inactive = deactivate(qbo, create(qbo, "2905.CD"))
    assert inactive["DisplayName"] == "2905.CD (Deleted)"
    assert plain_name(inactive["DisplayName"]) == "2905.CD"


def test_a_second_inactive_customer_of_the_same_name_stays_unique(qbo: QboCaller) -> None:
    first = deactivate(qbo, create(qbo, "2906.EF"))
    second = deactivate(qbo, create(qbo, "2906.EF"))
    assert first["DisplayName"] == "2906.EF (deleted)"
    assert second["DisplayName"] == "2906.EF (deleted-2)"
    assert plain_name(second["DisplayName"]) == "2906.EF"


def test_person_knob_renames_as_the_api_does(sandbox: Sandbox, qbo: QboCaller) -> None:
    customer = create(qbo, "2907.GH")
    inactive = sandbox.company.deactivate_customer(customer["Id"])
    assert (inactive["DisplayName"], inactive["Active"]) == ("2907.GH (deleted)", False)
    assert inactive["PrintOnCheckName"] == "2907.GH"
    assert inactive["SyncToken"] == "1"
    assert sandbox.requests[-1].method == "POST"  # the knob made no request of its own
    assert [r.body for r in sandbox.requests if r.method == "POST"] == [{"DisplayName": "2907.GH"}]


def test_reactivation_without_a_name_keeps_the_suffix(qbo: QboCaller) -> None:
    inactive = deactivate(qbo, create(qbo, "2908.IJ"))
    response = sparse(qbo, inactive, Active=True)
    assert response.status_code == 200, response.text
    active = qbo.json(response)["Customer"]
    assert (active["Active"], active["DisplayName"]) == (True, "2908.IJ (deleted)")
    assert active["SyncToken"] == "2"


def test_reactivation_with_the_plain_name_restores_it(qbo: QboCaller) -> None:
    inactive = deactivate(qbo, create(qbo, "2909.KL"))
    response = sparse(qbo, inactive, Active=True, DisplayName="2909.KL")
    assert response.status_code == 200, response.text
    active = qbo.json(response)["Customer"]
    assert (active["Active"], active["DisplayName"]) == (True, "2909.KL")
    assert active["FullyQualifiedName"] == "2909.KL"


@pytest.mark.parametrize("holder", ["customer", "vendor"])
def test_reactivation_with_a_taken_name_is_6240_and_changes_nothing(
    sandbox: Sandbox, qbo: QboCaller, holder: str
) -> None:
    inactive = deactivate(qbo, create(qbo, "2910.MN"))
    if holder == "customer":
        create(qbo, "2910.MN")
    else:
        sandbox.company.add_vendor("2910.mn")
    response = sparse(qbo, inactive, Active=True, DisplayName="2910.MN")
    assert response.status_code == 400
    assert qbo.json(response)["Fault"]["Error"] == [DUPLICATE_NAME]
    after = sandbox.company.customer(inactive["Id"])
    assert (after["Active"], after["DisplayName"], after["SyncToken"]) == (
        False,
        "2910.MN (deleted)",
        "1",
    )


def test_exact_name_queries_miss_the_inactive_customer_and_like_finds_it(
    qbo: QboCaller,
) -> None:
    deactivate(qbo, create(qbo, "2903.JD"))
    both = "Active IN (true, false)"
    assert qbo.rows(f"SELECT * FROM Customer WHERE DisplayName = '2903.JD' AND {both}") == []
    assert qbo.rows(f"SELECT * FROM Customer WHERE DisplayName IN ('2903.JD') AND {both}") == []
    found = qbo.rows(f"SELECT * FROM Customer WHERE DisplayName LIKE '2903.%' AND {both}")
    assert [c["DisplayName"] for c in found] == ["2903.JD (deleted)"]
    assert qbo.rows("SELECT * FROM Customer WHERE DisplayName LIKE '2903.%'") == []  # active only


@pytest.mark.parametrize(
    "pattern",
    ["2911.%", "%(deleted)", "%.op%", "2911%op (DEL%", "%", "2911.OP (deleted)"],
)
def test_like_matches_percent_anywhere_ignoring_case(qbo: QboCaller, pattern: str) -> None:
    deactivate(qbo, create(qbo, "2911.OP"))
    rows = qbo.rows(f"SELECT * FROM Customer WHERE DisplayName LIKE '{pattern}' AND Active = false")
    assert "2911.OP (deleted)" in [c["DisplayName"] for c in rows]


def test_like_with_an_escaped_apostrophe(qbo: QboCaller) -> None:
    deactivate(qbo, create(qbo, "2912.O'B"))
    rows = qbo.rows(
        r"SELECT * FROM Customer WHERE DisplayName LIKE '2912.o\'b%' AND Active IN (true, false)"
    )
    assert [c["DisplayName"] for c in rows] == ["2912.O'B (deleted)"]


def test_invoices_show_the_customers_current_name(sandbox: Sandbox, qbo: QboCaller) -> None:
    customer = create(qbo, "2913.QR")
    body = {
        "CustomerRef": {"value": customer["Id"]},
        "Line": [{"DetailType": "SalesItemLineDetail", "Amount": 10,
                  "SalesItemLineDetail": {"ItemRef": {"value": "1"}}}],
    }  # fmt: skip
    invoice = qbo.json(qbo.post("invoice", body))["Invoice"]
    sandbox.company.rename_customer(customer["Id"], "2913.QS")
    read = qbo.json(qbo.get(f"invoice/{invoice['Id']}"))["Invoice"]
    assert read["CustomerRef"] == {"value": customer["Id"], "name": "2913.QS"}
    assert read["SyncToken"] == invoice["SyncToken"]  # the invoice itself did not change


def test_rename_customer_checks_uniqueness(sandbox: Sandbox, qbo: QboCaller) -> None:
    one = create(qbo, "2914.ST")
    create(qbo, "2914.SU")
    with pytest.raises(QboFault) as caught:
        sandbox.company.rename_customer(one["Id"], "2914.su")
    assert fault_codes({"Fault": caught.value.fault()}) == ["6240"]
    assert sandbox.company.customer(one["Id"])["DisplayName"] == "2914.ST"
