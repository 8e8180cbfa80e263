"""The convergence audit judges the shapes recorded QBO answers have: renamed inactive
customers, voided invoices known by their "Voided" note and zero amounts."""

from __future__ import annotations

from pathlib import Path

import pytest

from fourdqbo import jsonio
from fourdqbo.config import Settings, load_settings
from fourdqbo.emr.records import Quote
from fourdqbo.qbo.records import Invoice
from fourdqbo.sandbox.audit import HandChange, audit, is_voided, patient_customers
from fourdqbo.sandbox.qbo import plain_name
from fourdqbo.sandbox.server import Sandbox
from fourdqbo.sync.mapping import LineKind, MappingRules, invoice_payload, map_quote


@pytest.fixture
def settings(sandbox: Sandbox, tmp_path: Path) -> Settings:
    return load_settings(sandbox.env(tmp_path / "data"), dotenv_path=None)


def sync_by_hand(sandbox: Sandbox, settings: Settings) -> None:
    """What a correct sync leaves: each completed quote invoiced to its patient's customer
    (an inactive one reactivated under its plain name), the re-opened quote's invoice voided."""
    company, practice = sandbox.company, sandbox.practice
    rules = MappingRules.from_settings(settings)
    items = {i["Name"]: i["Id"] for i in company.items()}
    item_ids = {
        LineKind.PROCEDURE: items[settings.qbo_item_procedure],
        LineKind.SUPPLIES: items[settings.qbo_item_supplies],
        LineKind.ANESTHESIA: items[settings.qbo_item_anesthesia],
        LineKind.FACILITY: items[settings.qbo_item_facility],
    }
    for number in practice.completed_numbers():
        if company.invoices_by_doc(number):
            continue
        record = practice.quote(number)
        patient = practice.patient(record.patient_id)
        quote = Quote.parse(jsonio.loads(jsonio.dumps(record.full_json(patient.name))))
        draft = map_quote(quote, rules)
        ids = patient_customers(
            company.customers(), str(record.patient_id), settings.customer_name_template
        )
        if ids:
            customer = company.customer(ids.pop())
            if not customer["Active"]:
                company.update("Customer", {
                    "Id": customer["Id"], "SyncToken": customer["SyncToken"], "sparse": True,
                    "Active": True, "DisplayName": plain_name(customer["DisplayName"]),
                })  # fmt: skip
        else:
            customer = company.create("Customer", {"DisplayName": draft.customer_name})
        company.create("Invoice", invoice_payload(draft, customer["Id"], item_ids))
    company.void_invoice(sandbox.facts.reopened_invoice_id)


def test_a_fresh_company_misses_the_completed_quotes(sandbox: Sandbox, settings: Settings) -> None:
    result = audit(sandbox, settings)
    assert not result.converged
    assert sandbox.facts.reopened_quote in result.stray
    assert sandbox.facts.conflict_quote in result.paid
    expected = set(sandbox.practice.completed_numbers()) - {sandbox.facts.conflict_quote}
    assert set(result.missing) == expected
    assert result.duplicate_customers == []


def test_a_correct_sync_converges_with_voided_invoices_left_alone(
    sandbox: Sandbox, settings: Settings
) -> None:
    sync_by_hand(sandbox, settings)
    result = audit(sandbox, settings)
    assert result.converged, result.summary()
    voided = sandbox.company.invoice(sandbox.facts.reopened_invoice_id)
    assert is_voided(voided)


def test_zero_totals_without_the_voided_note_are_not_a_void(
    sandbox: Sandbox, settings: Settings
) -> None:
    sync_by_hand(sandbox, settings)
    company = sandbox.company
    stray = company.invoices_by_doc(sandbox.practice.completed_numbers()[0])[0]
    assert not is_voided({**stray, "TotalAmt": 0, "Balance": 0, "PrivateNote": "zeroed"})
    reopened = sandbox.facts.reopened_invoice_id
    lines = company.invoice(reopened)["Line"]
    company.update("Invoice", {
        "Id": reopened, "SyncToken": company.invoice(reopened)["SyncToken"], "sparse": True,
        "PrivateNote": "zeroed by hand", "Line": lines,
    })  # fmt: skip
    assert company.invoice(reopened)["TotalAmt"] == 0
    assert audit(sandbox, settings).stray == [sandbox.facts.reopened_quote]


def test_a_voided_invoice_updated_with_amounts_counts_again(
    sandbox: Sandbox, settings: Settings
) -> None:
    sync_by_hand(sandbox, settings)
    reopened = sandbox.facts.reopened_invoice_id
    edited = sandbox.company.edit_invoice(reopened, line_amounts={1: "125.00"})
    assert edited["PrivateNote"] == "Voided" and not is_voided(edited)
    assert audit(sandbox, settings).stray == [sandbox.facts.reopened_quote]


def test_a_completed_quotes_invoice_voided_by_a_person_is_reported_apart(
    sandbox: Sandbox, settings: Settings
) -> None:
    sync_by_hand(sandbox, settings)
    number = sandbox.facts.inactive_customer_quote
    sandbox.company.void_invoice(sandbox.company.invoices_by_doc(number)[0]["Id"])
    result = audit(sandbox, settings)
    assert result.voided == [number]
    assert result.converged and number not in result.mismatched


def test_a_second_customer_beside_the_renamed_inactive_one_is_a_duplicate(
    sandbox: Sandbox, settings: Settings
) -> None:
    inactive = sandbox.company.customer(sandbox.facts.inactive_customer_id)
    plain = plain_name(inactive["DisplayName"])
    sandbox.company.create("Customer", {"DisplayName": plain})  # QBO allows it
    assert audit(sandbox, settings).duplicate_customers == [plain.casefold()]


def test_the_invoice_must_go_to_a_customer_of_its_patient(
    sandbox: Sandbox, settings: Settings
) -> None:
    sync_by_hand(sandbox, settings)
    company = sandbox.company
    number = sandbox.practice.completed_numbers()[0]
    invoice = Invoice.parse(company.invoices_by_doc(number)[0])
    company.rename_customer(invoice.customer_id, f"{invoice.customer_name}X")  # initials moved
    assert audit(sandbox, settings).converged
    other = company.create("Customer", {"DisplayName": "9999.ZZ"})
    company.update("Invoice", {"Id": invoice.id, "SyncToken": company.invoice(invoice.id)[
        "SyncToken"], "sparse": True, "CustomerRef": {"value": other["Id"]}})  # fmt: skip
    assert audit(sandbox, settings).mismatched == [number]


def test_patient_customers_reads_the_template_around_the_id() -> None:
    customers = [
        {"Id": "1", "DisplayName": "1003.JD"},
        {"Id": "2", "DisplayName": "1003.JQ (deleted)"},
        {"Id": "3", "DisplayName": "10031.JD"},
        {"Id": "4", "DisplayName": "Dr 1003.jd (Deleted)"},
    ]
    assert patient_customers(customers, "1003", "{patient_id}.{initials}") == {"1", "2"}
    assert patient_customers(customers, "1003", "Dr {patient_id}.{initials}") == {"4"}


def hand_changed(sandbox: Sandbox, settings: Settings) -> dict[str, HandChange]:
    """After a correct sync, a person edits one invoice, deletes another, pays a third."""
    sync_by_hand(sandbox, settings)
    company = sandbox.company
    skip = {sandbox.facts.conflict_quote, sandbox.facts.reopened_quote}
    numbers = [n for n in sandbox.practice.completed_numbers() if n not in skip][:3]
    ids = [company.invoices_by_doc(n)[0]["Id"] for n in numbers]
    edited = company.edit_invoice(ids[0], descriptions={1: "changed by the bookkeeper"})
    company.delete_invoice(ids[1])
    paid = company.apply_payment(ids[2], "10.00")
    return {
        numbers[0]: HandChange("edited", ids[0], edited["SyncToken"]),
        numbers[1]: HandChange("deleted", ids[1], None),
        numbers[2]: HandChange("paid", ids[2], paid["SyncToken"]),
    }


def test_hand_changes_left_as_made_and_reported_with_their_kind_converge(
    sandbox: Sandbox, settings: Settings
) -> None:
    hand = hand_changed(sandbox, settings)
    edited, deleted, paid = hand
    items = {edited: "edited_in_qbo", deleted: "deleted_in_qbo"}
    result = audit(sandbox, settings, hand, items)
    assert result.converged, result.summary()
    assert (result.reported, result.quiet) == (sorted([edited, deleted]), [paid])
    # Without the items the same books are not enough: the changes went unreported.
    assert audit(sandbox, settings, hand, {}).unreported == [edited, deleted]
    # An item of the wrong kind, or one for the payment, is unexplained.
    wrong = audit(sandbox, settings, hand, {**items, edited: "deleted_in_qbo", paid: "paid"})
    assert wrong.unreported == [edited] and f"{paid}:paid" in wrong.unexplained
    assert not wrong.converged


def test_a_hand_change_written_over_or_recreated_while_reported_is_undone(
    sandbox: Sandbox, settings: Settings
) -> None:
    hand = hand_changed(sandbox, settings)
    edited, deleted, _ = hand
    company = sandbox.company
    current = company.invoice(hand[edited].invoice_id)
    company.update("Invoice", {**current, "sparse": True})  # the sync wrote over it
    items = {edited: "edited_in_qbo", deleted: "deleted_in_qbo"}
    assert audit(sandbox, settings, hand, items).undone == [edited]
    # In repair mode the same books are judged against the quote instead.
    repaired = audit(sandbox, settings, hand, {}, repaired=True)
    assert edited in repaired.mismatched and deleted in repaired.missing
    assert not repaired.converged
