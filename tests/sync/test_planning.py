"""Planning: every row of the reconciliation table of DESIGN.md point 4, and the customers."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from fourdqbo.emr.records import STATUS_ACTIVE, STATUS_COMPLETED, STATUS_INACTIVE
from fourdqbo.qbo.records import Customer, Invoice
from fourdqbo.sync.mapping import InvoiceDraft, LineKind
from fourdqbo.sync.planning import (
    Action,
    CustomerToCreate,
    Plan,
    QuoteInput,
    customer_key,
    plan_sync,
)
from tests.sync.test_mapping import ITEM_IDS, PATIENT_NAME, draft_of, qbo_answer


def draft(number: int = 10023, patient: int = 77, **overrides: Any) -> InvoiceDraft:
    return draft_of(PriceQuoteNo=number, Patient={"Id": patient, "Name": PATIENT_NAME}, **overrides)


def completed(d: InvoiceDraft, version: int = 3) -> QuoteInput:
    return QuoteInput(
        number=d.doc_number,
        version=version,
        status_id=STATUS_COMPLETED,
        patient_id=d.patient_id,
        draft=d,
    )


def reopened(number: str = "10023", status_id: int | None = STATUS_ACTIVE) -> QuoteInput:
    return QuoteInput(number=number, version=4, status_id=status_id, patient_id="77", draft=None)


def customer(
    ident: str = "58", name: str = "77.JQD", *, active: bool = True, token: str = "0"
) -> Customer:
    return Customer.parse({"Id": ident, "SyncToken": token, "DisplayName": name, "Active": active})


def invoice_for(
    d: InvoiceDraft, customer_id: str = "58", *, invoice_id: str = "145", **kwargs: Any
) -> Invoice:
    return qbo_answer(d, customer_id, invoice_id=invoice_id, **kwargs)


def paid(d: InvoiceDraft, customer_id: str = "58", **kwargs: Any) -> Invoice:
    return invoice_for(d, customer_id, balance=Decimal("100.00"), **kwargs)


def voided_invoice(number: str = "10023") -> Invoice:
    """How QBO shows a voided invoice: amounts zeroed, nothing owed."""
    return Invoice.parse(
        {
            "Id": "145",
            "SyncToken": "3",
            "DocNumber": number,
            "TxnDate": "2025-03-05",
            "CustomerRef": {"value": "58"},
            "PrivateNote": "Voided",
            "Line": [
                {
                    "DetailType": "SalesItemLineDetail",
                    "Amount": 0,
                    "Description": "Rhinoplasty",
                    "SalesItemLineDetail": {"ItemRef": {"value": "11"}, "Qty": 0},
                },
                {"DetailType": "SubTotalLineDetail", "Amount": 0, "SubTotalLineDetail": {}},
            ],
            "TotalAmt": 0,
            "Balance": 0,
        }
    )


def plan_one(
    quote: QuoteInput,
    invoices: list[Invoice] | None = None,
    customers: list[Customer] | None = None,
    reopened_action: str = "delete",
) -> tuple[Plan, Any]:
    plan = plan_sync([quote], invoices or [], customers or [], ITEM_IDS, reopened_action)
    (only,) = plan.quotes
    return plan, only


# --- completed quotes -----------------------------------------------------------------


def test_completed_without_invoice_is_created_for_an_existing_customer() -> None:
    d = draft()
    plan, quote = plan_one(completed(d), customers=[customer()])
    assert quote.action is Action.CREATE
    assert (quote.number, quote.version, quote.status) == ("10023", 3, "completed")
    assert quote.draft == d and quote.invoice is None
    assert (quote.customer_name, quote.customer_id) == ("77.JQD", "58")
    assert plan.customers_to_create == () and plan.customers_to_reactivate == ()


def test_completed_without_invoice_or_customer_creates_both() -> None:
    plan, quote = plan_one(completed(draft()))
    assert quote.action is Action.CREATE and quote.customer_id is None
    assert "customer to create" in quote.reason
    assert plan.customers_to_create == (CustomerToCreate("77.JQD", "77"),)


def test_completed_without_invoice_reactivates_an_inactive_customer() -> None:
    sleeper = customer(active=False)
    plan, quote = plan_one(completed(draft()), customers=[sleeper])
    assert quote.action is Action.CREATE and quote.customer_id == "58"
    assert "reactivate" in quote.reason
    assert plan.customers_to_reactivate == (sleeper,)
    assert plan.customers_to_create == ()


def test_customer_names_match_regardless_of_case_and_surrounding_space() -> None:
    plan, quote = plan_one(completed(draft()), customers=[customer(name=" 77.jqd")])
    assert quote.action is Action.CREATE and quote.customer_id == "58"
    assert plan.customers_to_create == ()
    assert customer_key("77.JQD") == customer_key("77.jqd ") != customer_key("77.JQ")


def test_an_active_customer_wins_over_an_inactive_namesake() -> None:
    customers = [customer("60", active=False), customer("58", name="77.jqd")]
    plan, quote = plan_one(completed(draft()), customers=customers)
    assert quote.customer_id == "58"
    assert plan.customers_to_reactivate == ()


def test_completed_with_an_equal_invoice_is_unchanged() -> None:
    d = draft()
    existing = invoice_for(d)
    plan, quote = plan_one(completed(d), [existing], [customer()])
    assert quote.action is Action.UNCHANGED
    assert quote.invoice == existing and quote.customer_id == "58"
    assert plan.customers_to_create == () and plan.customers_to_reactivate == ()


def test_equal_invoice_of_an_inactive_customer_is_unchanged_without_reactivating() -> None:
    d = draft()
    plan, quote = plan_one(completed(d), [invoice_for(d)], [customer(active=False)])
    assert quote.action is Action.UNCHANGED
    assert plan.customers_to_reactivate == ()


def test_equal_but_paid_invoice_is_unchanged_not_a_conflict() -> None:
    d = draft()
    _, quote = plan_one(completed(d), [paid(d)], [customer()])
    assert quote.action is Action.UNCHANGED


def test_completed_with_a_differing_unpaid_invoice_is_updated() -> None:
    old = draft(Version=2)
    new = draft(Version=3, FacilityAmt="1500.00")
    existing = invoice_for(old)
    plan, quote = plan_one(completed(new), [existing], [customer()])
    assert quote.action is Action.UPDATE
    assert quote.invoice == existing and quote.draft == new and quote.customer_id == "58"
    assert quote.reason == "invoice differs in Line, CustomField"
    assert plan.customers_to_create == ()


def test_an_invoice_of_a_customer_that_does_not_exist_yet_differs() -> None:
    d = draft()
    plan, quote = plan_one(completed(d), [invoice_for(d, "58")], customers=[])
    assert quote.action is Action.UPDATE and "CustomerRef" in quote.reason
    assert plan.customers_to_create == (CustomerToCreate("77.JQD", "77"),)


def test_an_update_reactivates_the_customer_it_needs() -> None:
    d = draft()
    sleeper = customer("60", active=False)
    plan, quote = plan_one(completed(d), [invoice_for(d, "58")], [sleeper])
    assert quote.action is Action.UPDATE and quote.customer_id == "60"
    assert plan.customers_to_reactivate == (sleeper,)


def test_completed_with_a_differing_paid_invoice_is_a_conflict_without_writes() -> None:
    old = draft(Version=2)
    new = draft(Version=3)
    existing = paid(old)
    plan, quote = plan_one(completed(new), [existing], customers=[])
    assert quote.action is Action.CONFLICT
    assert "payment applied" in quote.reason
    assert quote.invoice == existing
    assert plan.customers_to_create == () and plan.customers_to_reactivate == ()


def test_a_credit_that_raises_the_balance_is_also_payment_applied() -> None:
    old, new = draft(Version=2), draft(Version=3)
    _, quote = plan_one(completed(new), [invoice_for(old, balance=Decimal("99999"))], [customer()])
    assert quote.action is Action.CONFLICT


def test_completed_quote_without_draft_fails() -> None:
    quote_input = QuoteInput("10023", 3, STATUS_COMPLETED, "77", draft=None)
    _, quote = plan_one(quote_input)
    assert quote.action is Action.FAIL and "draft" in quote.reason


# --- re-opened quotes -------------------------------------------------------------------


@pytest.mark.parametrize("status_id", [STATUS_ACTIVE, STATUS_INACTIVE])
def test_reopened_quote_with_unpaid_invoice_deletes_it(status_id: int) -> None:
    existing = invoice_for(draft())
    plan, quote = plan_one(reopened(status_id=status_id), [existing])
    assert quote.action is Action.DELETE and quote.invoice == existing
    assert quote.status == ("active" if status_id == STATUS_ACTIVE else "inactive")
    assert plan.customers_to_create == ()


@pytest.mark.parametrize("status_id", [STATUS_ACTIVE, STATUS_INACTIVE])
def test_reopened_quote_with_unpaid_invoice_voids_it_when_configured(status_id: int) -> None:
    existing = invoice_for(draft())
    _, quote = plan_one(reopened(status_id=status_id), [existing], reopened_action="void")
    assert quote.action is Action.VOID and quote.invoice == existing


def test_an_already_voided_invoice_is_not_voided_twice() -> None:
    _, quote = plan_one(reopened(), [voided_invoice()], reopened_action="void")
    assert quote.action is Action.UNCHANGED and "voided" in quote.reason


def test_a_zero_invoice_is_deleted_when_the_action_is_delete() -> None:
    _, quote = plan_one(reopened(), [voided_invoice()], reopened_action="delete")
    assert quote.action is Action.DELETE


@pytest.mark.parametrize("action", ["delete", "void"])
@pytest.mark.parametrize("status_id", [STATUS_ACTIVE, STATUS_INACTIVE])
def test_reopened_quote_with_paid_invoice_is_a_conflict(status_id: int, action: str) -> None:
    existing = paid(draft())
    _, quote = plan_one(reopened(status_id=status_id), [existing], reopened_action=action)
    assert quote.action is Action.CONFLICT and "payment applied" in quote.reason


@pytest.mark.parametrize("status_id", [STATUS_ACTIVE, STATUS_INACTIVE])
def test_reopened_quote_without_invoice_needs_nothing(status_id: int) -> None:
    _, quote = plan_one(reopened(status_id=status_id))
    assert quote.action is Action.UNCHANGED
    assert quote.reason == "not completed, no invoice"


# --- skips, duplicates, failures ----------------------------------------------------------


@pytest.mark.parametrize(
    ("status_id", "label"),
    [(2, "unknown(2)"), (7, "unknown(7)"), (-1, "unknown(-1)"), (None, "unknown")],
)
def test_unknown_status_is_skipped_even_with_an_invoice(status_id: int | None, label: str) -> None:
    d = draft()
    quote_input = QuoteInput("10023", 3, status_id, "77", draft=d)
    plan, quote = plan_one(quote_input, [invoice_for(d)])
    assert quote.action is Action.SKIP and quote.status == label
    assert "status" in quote.reason
    assert plan.customers_to_create == ()


@pytest.mark.parametrize(
    "quote_input",
    [
        completed(draft()),
        reopened(status_id=STATUS_ACTIVE),
        reopened(status_id=STATUS_INACTIVE),
        reopened(status_id=9),
    ],
    ids=["completed", "active", "inactive", "unknown"],
)
def test_two_invoices_sharing_the_doc_number_are_a_conflict(quote_input: QuoteInput) -> None:
    d = draft()
    twins = [invoice_for(d, invoice_id="145"), invoice_for(d, invoice_id="146")]
    plan, quote = plan_one(quote_input, twins, customers=[])
    assert quote.action is Action.CONFLICT
    assert "2 QBO invoices" in quote.reason and "145" in quote.reason and "146" in quote.reason
    assert plan.customers_to_create == ()


def test_the_same_invoice_listed_twice_is_not_a_duplicate() -> None:
    d = draft()
    existing = invoice_for(d)
    _, quote = plan_one(completed(d), [existing, existing], [customer()])
    assert quote.action is Action.UNCHANGED


def test_a_quote_with_an_error_fails_with_that_error() -> None:
    quote_input = QuoteInput(
        "10023",
        3,
        STATUS_COMPLETED,
        "77",
        draft=None,
        error="quote 10023: PriceQuoteDate is missing",
    )
    existing = invoice_for(draft())
    plan, quote = plan_one(quote_input, [existing])
    assert quote.action is Action.FAIL
    assert quote.reason == "quote 10023: PriceQuoteDate is missing"
    assert quote.invoice == existing
    assert plan.customers_to_create == ()


def test_an_error_wins_over_everything_else() -> None:
    d = draft()
    quote_input = QuoteInput("10023", 3, None, None, draft=None, error="fetch failed: HTTP 500")
    twins = [invoice_for(d, invoice_id="1"), invoice_for(d, invoice_id="2")]
    _, quote = plan_one(quote_input, twins)
    assert quote.action is Action.FAIL


# --- customers across quotes --------------------------------------------------------------


def test_a_new_customer_is_created_once_for_several_quotes_of_the_patient() -> None:
    quotes = [completed(draft(10023)), completed(draft(10024)), completed(draft(10025))]
    plan = plan_sync(quotes, [], [], ITEM_IDS)
    assert [q.action for q in plan.quotes] == [Action.CREATE] * 3
    assert {q.customer_name for q in plan.quotes} == {"77.JQD"}
    assert plan.customers_to_create == (CustomerToCreate("77.JQD", "77"),)


def test_each_new_patient_gets_one_customer_in_first_seen_order() -> None:
    quotes = [
        completed(draft(1, patient=80)),
        completed(draft(2, patient=77)),
        completed(draft(3, patient=80)),
    ]
    plan = plan_sync(quotes, [], [], ITEM_IDS)
    assert plan.customers_to_create == (
        CustomerToCreate("80.JQD", "80"),
        CustomerToCreate("77.JQD", "77"),
    )


def test_an_inactive_customer_is_reactivated_once_for_several_quotes() -> None:
    sleeper = customer(active=False)
    plan = plan_sync([completed(draft(1)), completed(draft(2))], [], [sleeper], ITEM_IDS)
    assert plan.customers_to_reactivate == (sleeper,)
    assert [q.customer_id for q in plan.quotes] == ["58", "58"]


def test_only_creates_and_updates_ask_for_customers() -> None:
    d_unchanged = draft(1, patient=81)
    d_conflict_old, d_conflict_new = draft(2, patient=82, Version=1), draft(2, patient=82)
    d_twins = draft(3, patient=83)
    d_skip = draft(4, patient=84)
    quotes = [
        completed(d_unchanged),
        completed(d_conflict_new),
        completed(d_twins),
        QuoteInput("4", 3, 5, "84", draft=d_skip),
        QuoteInput("5", 3, STATUS_COMPLETED, "85", draft=None, error="boom"),
    ]
    invoices = [
        invoice_for(d_unchanged, "81", invoice_id="1"),
        paid(d_conflict_old, "82", invoice_id="2"),
        invoice_for(d_twins, invoice_id="3"),
        invoice_for(d_twins, invoice_id="4"),
    ]
    customers = [customer("81", "81.JQD", active=False)]
    plan = plan_sync(quotes, invoices, customers, ITEM_IDS)
    assert [q.action for q in plan.quotes] == [
        Action.UNCHANGED,
        Action.CONFLICT,
        Action.CONFLICT,
        Action.SKIP,
        Action.FAIL,
    ]
    assert plan.customers_to_create == () and plan.customers_to_reactivate == ()


# --- the plan as a whole ------------------------------------------------------------------


def test_a_mixed_window_gets_one_plan_per_quote_in_order() -> None:
    new, same, changed = draft(1), draft(2), draft(3, FacilityAmt=5)
    quotes = [
        completed(new),
        completed(same),
        completed(changed),
        reopened("4"),
        reopened("5", status_id=STATUS_INACTIVE),
        reopened("6", status_id=11),
    ]
    invoices = [
        invoice_for(same, invoice_id="20"),
        invoice_for(draft(3), invoice_id="30"),
        invoice_for(draft(4), invoice_id="40"),
    ]
    plan = plan_sync(quotes, invoices, [customer()], ITEM_IDS)
    assert [(q.number, q.action) for q in plan.quotes] == [
        ("1", Action.CREATE),
        ("2", Action.UNCHANGED),
        ("3", Action.UPDATE),
        ("4", Action.DELETE),
        ("5", Action.UNCHANGED),
        ("6", Action.SKIP),
    ]
    assert [q.number for q in plan.by_action(Action.UNCHANGED)] == ["2", "5"]
    assert plan.by_action(Action.VOID) == []


def test_a_quote_given_twice_is_planned_once_from_its_latest_version() -> None:
    old, new = draft(Version=2), draft(Version=3, FacilityAmt=9)
    plan = plan_sync(
        [completed(new, version=3), completed(old, version=2), completed(draft(2))],
        [],
        [],
        ITEM_IDS,
    )
    assert [(q.number, q.version) for q in plan.quotes] == [("10023", 3), ("2", 3)]
    assert plan.quotes[0].draft == new


def test_invoices_of_other_doc_numbers_are_ignored() -> None:
    _, quote = plan_one(completed(draft(1)), [invoice_for(draft(2))], [customer()])
    assert quote.action is Action.CREATE


def test_reasons_never_hold_patient_names() -> None:
    d = draft()
    quotes = [completed(d), reopened("2"), QuoteInput("3", 1, 8, "77", draft=None)]
    plan = plan_sync(quotes, [paid(draft(Version=1))], [], ITEM_IDS)
    for quote in plan.quotes:
        for part in ("Jane", "Doe", PATIENT_NAME):
            assert part not in quote.reason


def test_an_unknown_reopened_action_is_refused() -> None:
    with pytest.raises(ValueError, match="delete, void"):
        plan_sync([], [], [], ITEM_IDS, reopened_action="archive")


def test_a_missing_item_id_is_a_lookup_error() -> None:
    d = draft()
    with pytest.raises(LookupError):
        plan_sync([completed(d)], [invoice_for(d)], [customer()], {LineKind.PROCEDURE: "11"})


def test_an_empty_window_is_an_empty_plan() -> None:
    assert plan_sync([], [], [], ITEM_IDS) == Plan((), (), ())
