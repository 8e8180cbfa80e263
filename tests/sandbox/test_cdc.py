"""Change data capture: `GET cdc?entities=…&changedSince=…` over the company's change log."""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest

from fourdqbo.sandbox.server import QboLimits, Sandbox
from fourdqbo.timefmt import parse_instant
from tests.sandbox.conftest import QboCaller, fault_codes
from tests.sandbox.test_qbo_api import create_invoice, new_customer


def cdc(qbo: QboCaller, entities: str, since: datetime | str) -> httpx.Response:
    text = since if isinstance(since, str) else since.isoformat()
    return qbo.get("cdc", entities=entities, changedSince=text)


def quiet_since(sandbox: Sandbox) -> datetime:
    """A changedSince after everything the seed did while the sandbox was built."""
    sandbox.clock.advance(2)
    return sandbox.clock.now()


def answer(qbo: QboCaller, entities: str, since: datetime) -> list[dict[str, Any]]:
    response = cdc(qbo, entities, since)
    assert response.status_code == 200, response.text
    body = qbo.json(response)
    assert set(body) == {"CDCResponse", "time"}
    [only] = body["CDCResponse"]
    return list(only["QueryResponse"])


def test_answers_one_query_response_per_entity_in_request_order(
    sandbox: Sandbox, qbo: QboCaller
) -> None:
    since = quiet_since(sandbox)
    invoice = create_invoice(sandbox, qbo)  # also creates its customer
    answers = answer(qbo, "Invoice,Item,Customer", since)
    assert len(answers) == 3
    invoices, items, customers = answers
    assert invoices == {
        "Invoice": [sandbox.company.invoice(invoice["Id"])],
        "startPosition": 1,
        "maxResults": 1,
    }
    assert items == {}
    assert [c["Id"] for c in customers["Customer"]] == [invoice["CustomerRef"]["value"]]
    assert customers["maxResults"] == 1


def test_each_object_appears_once_in_its_current_state(sandbox: Sandbox, qbo: QboCaller) -> None:
    since = quiet_since(sandbox)
    invoice = create_invoice(sandbox, qbo)
    sandbox.company.apply_payment(invoice["Id"], "57.13")
    sandbox.company.send_invoice_email(invoice["Id"])
    [invoices] = answer(qbo, "Invoice", since)
    [only] = invoices["Invoice"]
    assert only["SyncToken"] == "2" and only["Balance"] == Decimal("7600.00")
    assert only["EmailStatus"] == "EmailSent"


def test_a_deleted_invoice_is_only_the_deleted_stub(sandbox: Sandbox, qbo: QboCaller) -> None:
    invoice = create_invoice(sandbox, qbo)
    since = quiet_since(sandbox)
    sandbox.clock.advance(3)
    sandbox.company.delete_invoice(invoice["Id"])
    [invoices] = answer(qbo, "Invoice", since)
    [stub] = invoices["Invoice"]
    assert set(stub) == {"domain", "status", "Id", "MetaData"}
    assert (stub["domain"], stub["status"], stub["Id"]) == ("QBO", "Deleted", invoice["Id"])
    assert set(stub["MetaData"]) == {"LastUpdatedTime"}
    deleted_at = parse_instant(stub["MetaData"]["LastUpdatedTime"])
    assert deleted_at >= since.replace(microsecond=0) + timedelta(seconds=3)


def test_changes_before_changed_since_are_left_out(sandbox: Sandbox, qbo: QboCaller) -> None:
    old = create_invoice(sandbox, qbo, "93001")
    sandbox.clock.advance(60)
    since = sandbox.clock.now()
    new = create_invoice(sandbox, qbo, "93002")
    [invoices] = answer(qbo, "Invoice", since)
    assert [i["Id"] for i in invoices["Invoice"]] == [new["Id"]]
    sandbox.company.edit_invoice(old["Id"], descriptions={1: "Revision rhinoplasty"})
    [invoices] = answer(qbo, "Invoice", since)
    assert [i["Id"] for i in invoices["Invoice"]] == [new["Id"], old["Id"]]  # by last change


def test_changed_since_is_inclusive_at_the_second_metadata_shows(
    sandbox: Sandbox, qbo: QboCaller
) -> None:
    invoice = create_invoice(sandbox, qbo)
    shown = invoice["MetaData"]["LastUpdatedTime"]  # seconds, company offset
    [invoices] = answer(qbo, "Invoice", parse_instant(shown))
    assert invoice["Id"] in [i["Id"] for i in invoices["Invoice"]]


def test_z_and_offset_forms_mean_the_same_instant(sandbox: Sandbox, qbo: QboCaller) -> None:
    since = quiet_since(sandbox).replace(microsecond=0)
    create_invoice(sandbox, qbo)
    zulu = qbo.json(cdc(qbo, "Invoice", since.strftime("%Y-%m-%dT%H:%M:%SZ")))
    local = qbo.json(cdc(qbo, "Invoice", since.astimezone(sandbox.company.zone).isoformat()))
    assert zulu["CDCResponse"] == local["CDCResponse"]
    assert zulu["CDCResponse"][0]["QueryResponse"][0]["maxResults"] == 1


def test_person_edits_deactivation_and_voids_are_logged(sandbox: Sandbox, qbo: QboCaller) -> None:
    one = create_invoice(sandbox, qbo, "93101")
    two = create_invoice(sandbox, qbo, "93102")
    customer = new_customer(qbo, "2950.XY")
    sandbox.clock.advance(10)
    since = sandbox.clock.now()
    sandbox.company.void_invoice(one["Id"])
    sandbox.company.edit_invoice(two["Id"], line_amounts={1: "7000.00"})
    sandbox.company.deactivate_customer(customer["Id"])
    invoices, customers = answer(qbo, "Invoice,Customer", since)
    assert [i["Id"] for i in invoices["Invoice"]] == [one["Id"], two["Id"]]
    assert invoices["Invoice"][0]["PrivateNote"] == "Voided"
    assert [c["DisplayName"] for c in customers["Customer"]] == ["2950.XY (deleted)"]
    kinds = [(c.kind, c.by) for c in sandbox.company.changes() if c.at >= since]
    assert kinds == [("void", "person"), ("update", "person"), ("deactivate", "person")]


def test_more_than_1000_changes_answer_the_earliest_1000_ascending() -> None:
    with Sandbox(seed=5, quotes=2, preexisting=False, limits=QboLimits(10_000)) as sandbox:
        company = sandbox.company
        start = sandbox.clock.now()
        for number in range(1005):
            company.insert("Customer", {"DisplayName": f"Bulk {number}"})
            sandbox.clock.advance(1)
        company.rename_customer(company.customer_by_name("Bulk 0")["Id"], "Bulk 0 renamed")
        caller = QboCaller(sandbox, sandbox.oauth.mint()["access_token"])
        [customers] = answer(caller, "Customer", start)
        rows = customers["Customer"]
        assert customers["maxResults"] == len(rows) == 1000
        assert [r["DisplayName"] for r in rows[:2]] == ["Bulk 1", "Bulk 2"]  # Bulk 0 is late
        times = [parse_instant(r["MetaData"]["LastUpdatedTime"]) for r in rows]
        assert times == sorted(times)
        # Paging forward from the last one's time reaches the rest (and re-sends the last).
        [rest] = answer(caller, "Customer", times[-1])
        names = [r["DisplayName"] for r in rest["Customer"]]
        assert names == ["Bulk 1000", "Bulk 1001", "Bulk 1002", "Bulk 1003", "Bulk 1004",
                         "Bulk 0 renamed"]  # fmt: skip
        caller.http.close()


def test_changed_since_older_than_30_days_is_a_validation_fault(
    sandbox: Sandbox, qbo: QboCaller
) -> None:
    too_old = sandbox.clock.now() - timedelta(days=30, seconds=5)
    response = cdc(qbo, "Invoice", too_old)
    assert response.status_code == 400
    body = qbo.json(response)
    assert body["Fault"]["type"] == "ValidationFault"
    [error] = body["Fault"]["Error"]
    assert (error["code"], error["element"]) == ("2010", "changedSince")
    assert error["Detail"].startswith("Operation cdc with changedSince date ")
    assert "older than fixed days is not supported" in error["Detail"]
    assert "30 days" in error["Detail"]
    assert cdc(qbo, "Invoice", too_old + timedelta(seconds=30)).status_code == 200


def test_reach_is_measured_in_simulated_time(sandbox: Sandbox, qbo: QboCaller) -> None:
    since = sandbox.clock.now()
    assert cdc(qbo, "Invoice", since).status_code == 200
    sandbox.clock.advance(31 * 86400)
    qbo.token = sandbox.oauth.mint()["access_token"]  # the first one expired long ago
    assert cdc(qbo, "Invoice", since).status_code == 400


@pytest.mark.parametrize(
    ("params", "code"),
    [
        ({"changedSince": "2025-03-01T09:00:00-08:00"}, "2020"),
        ({"entities": "Invoice"}, "2020"),
        ({"entities": "", "changedSince": "2025-03-01T09:00:00Z"}, "2020"),
        ({"entities": "Invoice", "changedSince": "yesterday"}, "2010"),
        ({"entities": "Invoice", "changedSince": "2025-03-01T09:00:00"}, "2010"),  # no zone
        ({"entities": "Invoice,Payment", "changedSince": "2025-03-01T09:00:00Z"}, "2010"),
    ],
)
def test_missing_or_malformed_parameters_are_400(
    qbo: QboCaller, params: dict[str, str], code: str
) -> None:
    response = qbo.get("cdc", **params)
    assert response.status_code == 400
    assert fault_codes(qbo.json(response)) == [code]


def test_cdc_needs_minorversion_counts_as_one_request_and_is_logged(
    sandbox: Sandbox, qbo: QboCaller
) -> None:
    since = sandbox.clock.now().isoformat()
    bare = qbo.http.get(
        f"{qbo.base}/cdc",
        params={"entities": "Invoice", "changedSince": since},
        headers=qbo.headers(),
    )
    assert bare.status_code == 400
    sandbox.clear_requests()
    assert cdc(qbo, "Invoice,Customer", since).status_code == 200
    [record] = sandbox.requests
    assert (record.service, record.path, record.outcome) == (
        "qbo",
        f"v3/company/{sandbox.realm_id}/cdc",
        "ok",
    )
    assert record.query["entities"] == ["Invoice,Customer"]


def test_cdc_is_throttled_like_any_read() -> None:
    limits = QboLimits(requests_per_window=2, window_seconds=30)
    with Sandbox(seed=3, quotes=2, limits=limits) as sandbox:
        caller = QboCaller(sandbox, sandbox.oauth.mint()["access_token"])
        since = sandbox.clock.now()
        assert cdc(caller, "Invoice,Customer,Item", since).status_code == 200
        assert cdc(caller, "Invoice", since).status_code == 200
        assert cdc(caller, "Invoice", since).status_code == 429
        caller.http.close()
