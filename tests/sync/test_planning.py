"""Planning: every row of the reconciliation table of DESIGN.md point 4, and the customers."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fourdqbo.emr.records import STATUS_ACTIVE, STATUS_COMPLETED, STATUS_INACTIVE
from fourdqbo.qbo.records import Customer, Invoice
from fourdqbo.state.items import Acceptance, AttentionKind, LedgerEntry
from fourdqbo.sync.customers import PatientCustomerWant, resolve_customers
from fourdqbo.sync.mapping import InvoiceDraft, LineKind
from fourdqbo.sync.planning import (
    Action,
    CustomerToCreate,
    Plan,
    QuoteInput,
    QuotePlan,
    customer_key,
    is_voided,
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


def test_a_voided_invoice_is_not_deleted_either() -> None:
    _, quote = plan_one(reopened(), [voided_invoice()], reopened_action="delete")
    assert quote.action is Action.UNCHANGED and "voided" in quote.reason


def test_a_zero_invoice_nobody_voided_is_deleted_when_the_action_is_delete() -> None:
    zero = Invoice.parse({**voided_invoice().raw, "PrivateNote": "free consultation"})
    _, quote = plan_one(reopened(), [zero], reopened_action="delete")
    assert quote.action is Action.DELETE


def test_a_zero_invoice_nobody_voided_is_voided_when_the_action_is_void() -> None:
    # Zero totals alone are no void: voiding it is the write the re-opened quote needs.
    zero = Invoice.parse({**voided_invoice().raw, "PrivateNote": "free consultation"})
    _, quote = plan_one(reopened(), [zero], reopened_action="void")
    assert quote.action is Action.VOID and quote.invoice == zero


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


# --- 0.2: the ledger, people in QBO, acceptances, apply -----------------------------------

QV = "1"  # the "Quote Version" DefinitionId of MappingRules()
AT = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def entry(
    version: int = 3,
    *,
    action: str = "created",
    invoice_id: str | None = "145",
    token: str | None = "0",
    number: str = "10023",
) -> LedgerEntry:
    return LedgerEntry(number, invoice_id, version, token, "run-1", AT, action=action)


def touched(body: dict[str, Any]) -> None:
    """A bookkeeper's change to a field the sync owns."""
    body["TxnDate"] = "2025-01-01"


def plan_02(
    quote: QuoteInput,
    invoices: list[Invoice],
    ledger: LedgerEntry | None = None,
    **kwargs: Any,
) -> QuotePlan:
    kwargs.setdefault("quote_version_field", QV)
    plan = plan_sync(
        [quote],
        invoices,
        [customer()],
        ITEM_IDS,
        kwargs.pop("reopened_action", "delete"),
        ledger={} if ledger is None else {ledger.quote: ledger},
        **kwargs,
    )
    (only,) = plan.quotes
    return only


_TABLE = [
    # (version, invoice, paid, ledger, edits) -> (action, kind)
    (version, state, pay, led, edits, *expected)
    for version in ("same", "newer")
    for state in ("equal", "differs")
    for pay in ("paid", "unpaid")
    for led in ("ledger", "no_ledger")
    for edits in ("report", "revert")
    for expected in [
        (Action.UNCHANGED, None)
        if state == "equal"
        else (Action.CONFLICT, AttentionKind.EDITED_IN_QBO)
        if version == "same" and (pay == "paid" or edits == "report")
        else (Action.UPDATE, None)
        if pay == "unpaid"
        else (Action.CONFLICT, AttentionKind.PAID)
    ]
]


@pytest.mark.parametrize(("version", "state", "pay", "led", "edits", "action", "kind"), _TABLE)
def test_completed_quote_drift_table(
    version: str,
    state: str,
    pay: str,
    led: str,
    edits: str,
    action: Action,
    kind: AttentionKind | None,
) -> None:
    current = draft()  # Version 3
    written_from = current if version == "same" or state == "equal" else draft(Version=2)
    existing = qbo_answer(
        written_from,
        "58",
        sync_token="1",
        balance=Decimal("100.00") if pay == "paid" else None,
        edit=touched if state == "differs" and version == "same" else None,
    )
    ledger = entry(3 if version == "same" else 2) if led == "ledger" else None
    plan = plan_02(completed(current), [existing], ledger, edits=edits)
    assert (plan.action, plan.kind) == (action, kind), plan.reason
    assert plan.kind is not None or plan.action is not Action.CONFLICT
    if action is Action.UPDATE and version == "same":
        assert "reverted" in plan.reason
    if state == "differs":
        assert "TxnDate" in plan.reason or "CustomField" in plan.reason


def test_a_newer_version_over_a_touched_invoice_says_it_replaced_a_qbo_change() -> None:
    existing = qbo_answer(draft(Version=2), sync_token="4")
    plan = plan_02(completed(draft()), [existing], entry(2, token="2"))
    assert plan.action is Action.UPDATE and plan.replaced_qbo_change
    assert "replaces a change made in QBO" in plan.reason


def test_a_newer_version_over_our_own_write_replaces_nothing() -> None:
    existing = qbo_answer(draft(Version=2), sync_token="2")
    plan = plan_02(completed(draft()), [existing], entry(2, token="2"))
    assert plan.action is Action.UPDATE and not plan.replaced_qbo_change


def test_without_the_version_field_a_differing_invoice_is_updated_as_in_0_1() -> None:
    existing = qbo_answer(draft(), edit=touched)
    plan = plan_02(completed(draft()), [existing], quote_version_field=None)
    assert plan.action is Action.UPDATE


def test_a_ledger_entry_of_another_invoice_is_not_this_invoices_version() -> None:
    existing = qbo_answer(draft(), edit=touched, invoice_id="146")
    plan = plan_02(completed(draft()), [existing], entry(3, invoice_id="145"))
    assert plan.action is Action.UPDATE


@pytest.mark.parametrize(
    ("ledger", "deletes", "action", "kind"),
    [
        (entry(3), "report", Action.CONFLICT, AttentionKind.DELETED_IN_QBO),
        (entry(3), "recreate", Action.CREATE, None),
        (entry(3, action="updated"), "report", Action.CONFLICT, AttentionKind.DELETED_IN_QBO),
        (entry(3, action="adopted"), "report", Action.CONFLICT, AttentionKind.DELETED_IN_QBO),
        (entry(3, action="deleted", invoice_id=None, token=None), "report", Action.CREATE, None),
        (entry(3, action="voided"), "report", Action.CREATE, None),
        (entry(2), "report", Action.CREATE, None),
        (None, "report", Action.CREATE, None),
        (None, "recreate", Action.CREATE, None),
    ],
)
def test_a_missing_invoice(
    ledger: LedgerEntry | None, deletes: str, action: Action, kind: AttentionKind | None
) -> None:
    plan = plan_02(completed(draft()), [], ledger, deletes=deletes)
    assert (plan.action, plan.kind) == (action, kind), plan.reason
    if kind is not None:
        assert "145" in plan.reason and "Version 3" in plan.reason


def voided_of(d: InvoiceDraft, invoice_id: str = "145") -> Invoice:
    def void(body: dict[str, Any]) -> None:
        body["PrivateNote"] = "Voided"
        for line in body["Line"]:
            line["Amount"] = Decimal(0)
            line["SalesItemLineDetail"]["Qty"] = Decimal(0)

    return qbo_answer(d, edit=void, sync_token="7", invoice_id=invoice_id)


@pytest.mark.parametrize(
    ("ledger", "deletes", "action", "kind"),
    [
        (entry(3), "report", Action.CONFLICT, AttentionKind.DELETED_IN_QBO),
        (entry(3), "recreate", Action.UPDATE, None),
        (entry(3, action="voided"), "report", Action.UPDATE, None),
        (entry(2, action="voided"), "report", Action.UPDATE, None),
        (entry(3, action="voided"), "recreate", Action.UPDATE, None),
        (entry(2), "report", Action.UPDATE, None),
        (None, "report", Action.UPDATE, None),
    ],
)
def test_a_voided_invoice_of_a_completed_quote(
    ledger: LedgerEntry | None, deletes: str, action: Action, kind: AttentionKind | None
) -> None:
    voided = voided_of(draft())
    plan = plan_02(completed(draft()), [voided], ledger, deletes=deletes)
    assert (plan.action, plan.kind) == (action, kind), plan.reason
    assert plan.invoice == voided  # brought back in place, never a second invoice


def test_is_voided_needs_the_note_and_zero_amounts() -> None:
    assert is_voided(voided_of(draft()))
    assert not is_voided(invoice_for(draft()))
    assert not is_voided(Invoice.parse({**voided_of(draft()).raw, "PrivateNote": "paid cash"}))
    assert not is_voided(Invoice.parse({**invoice_for(draft()).raw, "PrivateNote": "Voided"}))


@pytest.mark.parametrize(
    "existing",
    [
        qbo_answer(draft(), edit=touched),
        qbo_answer(draft(), edit=touched, balance=Decimal("1.00")),
        None,
    ],
)
def test_an_acceptance_at_the_quotes_version_keeps_qbo_as_it_is(existing: Invoice | None) -> None:
    accepted = {"10023": Acceptance("10023", 3, AT, AttentionKind.EDITED_IN_QBO)}
    invoices = [] if existing is None else [existing]
    plan = plan_02(completed(draft()), invoices, entry(3), accepted=accepted)
    assert plan.action is Action.UNCHANGED and plan.kind is None
    assert "accepted" in plan.reason


def test_an_acceptance_of_an_older_version_is_void() -> None:
    accepted = {"10023": Acceptance("10023", 2, AT)}
    existing = qbo_answer(draft(Version=2))
    plan = plan_02(completed(draft()), [existing], entry(2), accepted=accepted)
    assert plan.action is Action.UPDATE


def test_an_acceptance_holds_for_a_reopened_quote_too() -> None:
    accepted = {"10023": Acceptance("10023", 4, AT)}
    plan = plan_02(reopened(), [invoice_for(draft())], accepted=accepted)
    assert plan.action is Action.UNCHANGED


def test_an_acceptance_holds_for_a_quote_that_fails_at_that_version() -> None:
    # `sync accept` of a quote that gave up: this Version is left alone, failing or not.
    broken = QuoteInput("10023", 3, STATUS_COMPLETED, "77", None, error="negative amount")
    accepted = {"10023": Acceptance("10023", 3, AT, AttentionKind.GAVE_UP)}
    assert plan_02(broken, [], accepted=accepted).action is Action.UNCHANGED
    newer = QuoteInput("10023", 4, STATUS_COMPLETED, "77", None, error="negative amount")
    assert plan_02(newer, [], accepted=accepted).action is Action.FAIL
    assert plan_02(broken, [], accepted=accepted, apply=True).action is Action.FAIL


def test_apply_ignores_acceptance_and_edits() -> None:
    accepted = {"10023": Acceptance("10023", 3, AT)}
    existing = qbo_answer(draft(), edit=touched)
    plan = plan_02(completed(draft()), [existing], entry(3), accepted=accepted, apply=True)
    assert plan.action is Action.UPDATE


def test_apply_recreates_what_a_person_deleted() -> None:
    assert plan_02(completed(draft()), [], entry(3), apply=True).action is Action.CREATE


def paid_by(amount: str) -> Invoice:
    """An invoice from Version 2 (total 6941.00) with `amount` paid on it."""
    older = draft(Version=2, AnesthAmt="900.00")
    assert older.total == Decimal("6941.00")
    return qbo_answer(older, balance=older.total - Decimal(amount))


@pytest.mark.parametrize(
    ("amount", "allow_paid", "action"),
    [
        ("6841.00", True, Action.UPDATE),  # the new total (6841.00) covers the payment
        ("6000.00", True, Action.UPDATE),
        ("6841.01", True, Action.CONFLICT),
        ("6841.00", False, Action.CONFLICT),
    ],
)
def test_apply_paid_only_when_the_total_covers_the_payment(
    amount: str, allow_paid: bool, action: Action
) -> None:
    current = draft()
    assert current.total == Decimal("6841.00")
    plan = plan_02(completed(current), [paid_by(amount)], apply=True, allow_paid=allow_paid)
    assert plan.action is action, plan.reason
    if action is Action.CONFLICT:
        assert plan.kind is AttentionKind.PAID and amount in plan.reason
        assert ("credit memo" in plan.reason) is allow_paid
        assert ("--paid" in plan.reason) is not allow_paid


@pytest.mark.parametrize("apply", [False, True])
@pytest.mark.parametrize("action", ["delete", "void"])
def test_a_reopened_quotes_paid_invoice_is_never_removed(apply: bool, action: str) -> None:
    plan = plan_02(
        reopened(), [paid(draft())], reopened_action=action, apply=apply, allow_paid=True
    )
    assert plan.action is Action.CONFLICT and plan.kind is AttentionKind.PAID
    assert "6741.00" in plan.reason


def test_every_conflict_has_a_kind() -> None:
    d = draft()
    duplicate = plan_02(completed(d), [invoice_for(d), invoice_for(d, invoice_id="146")])
    assert duplicate.kind is AttentionKind.DUPLICATE_INVOICES
    differs_paid = plan_02(completed(d), [paid(draft(Version=2))], quote_version_field=None)
    assert differs_paid.kind is AttentionKind.PAID


# --- 0.2: customers by patient ------------------------------------------------------------


def resolution_for(*drafts: InvoiceDraft, existing: list[Customer] | None = None) -> Any:
    wants = [PatientCustomerWant(d.patient_id, d.customer_name) for d in drafts]
    return resolve_customers(wants, [], existing or [], "{patient_id}.{initials}")


def test_a_resolution_decides_the_customer_by_patient() -> None:
    d = draft()  # 77.JQD; QBO has the patient as 77.JD
    resolution = resolution_for(d, existing=[customer("60", "77.JD")])
    plan = plan_sync([completed(d)], [], [], ITEM_IDS, resolution=resolution)
    (quote,) = plan.quotes
    assert quote.action is Action.CREATE and quote.customer_id == "60"
    assert plan.customers_to_create == ()


def test_a_resolution_creates_a_patients_customer_once() -> None:
    a, b = draft(10023), draft(10024)
    other = draft_of(PriceQuoteNo=10024, Patient={"Id": 77, "Name": "Jane Smith"})
    resolution = resolution_for(a, b, other)
    plan = plan_sync(
        [completed(a), completed(b), completed(other)], [], [], ITEM_IDS, resolution=resolution
    )
    assert plan.customers_to_create == (CustomerToCreate("77.JQD", "77"),)
    assert {q.customer_name for q in plan.quotes} == {"77.JQD"}
    assert all("customer to create" in q.reason for q in plan.quotes)


def test_a_resolution_reactivates_and_names_back() -> None:
    d = draft()
    old = customer("60", "77.JQD (deleted)", active=False)
    resolution = resolution_for(d, existing=[old])
    plan = plan_sync([completed(d)], [], [], ITEM_IDS, resolution=resolution)
    assert plan.customers_to_reactivate == (old,)
    (reactivation,) = plan.reactivations
    assert reactivation.restore_name == "77.JQD"
    assert plan.quotes[0].customer_id == "60"


def test_an_ambiguous_patient_gets_no_write() -> None:
    d, e = draft(10023), draft(10024)
    twins = [customer("60", "77.JQD"), customer("61", "77.JD")]
    resolution = resolution_for(d, e, existing=twins)
    equal = invoice_for(e, "61")
    plan = plan_sync(
        [completed(d), completed(e), reopened("10025")],
        [equal, invoice_for(draft(10025), "61", invoice_id="146")],
        [],
        ITEM_IDS,
        resolution=resolution,
    )
    create, unchanged, delete = plan.quotes
    assert create.action is Action.CONFLICT and create.kind is AttentionKind.CUSTOMER_AMBIGUOUS
    assert "60" in create.reason and "61" in create.reason
    assert unchanged.action is Action.UNCHANGED  # nothing to write: no conflict
    assert delete.action is Action.DELETE  # a re-opened quote needs no customer
    assert plan.customers_to_create == () and plan.customers_to_reactivate == ()


# --- 0.2: properties ----------------------------------------------------------------------

_POOL_DRAFTS = {
    (number, patient, version): draft_of(
        PriceQuoteNo=number,
        Version=version,
        Patient={"Id": patient, "Name": PATIENT_NAME},
        AnesthAmt=str(700 + 100 * version),
    )
    for number in (1, 2, 3, 4)
    for patient in (7, 8)
    for version in (1, 2, 3)
}


@st.composite
def scenarios(draw: st.DrawFn) -> dict[str, Any]:
    quotes: list[QuoteInput] = []
    invoices: list[Invoice] = []
    ledger: dict[str, LedgerEntry] = {}
    accepted: dict[str, Acceptance] = {}
    next_id = 100
    carried: set[str] = set()
    # A number may come twice (window and retry queue); most have one invoice.
    numbers = draw(st.lists(st.sampled_from([1, 2, 3, 4]), max_size=4, unique=True))
    for number in numbers + draw(st.lists(st.sampled_from(numbers or [1]), max_size=1)):
        patient = draw(st.sampled_from([7, 8]))
        version = draw(st.integers(1, 3))
        status = draw(st.sampled_from([STATUS_COMPLETED, STATUS_ACTIVE, 99]))
        current = _POOL_DRAFTS[(number, patient, version)]
        quotes.append(
            QuoteInput(
                str(number),
                version,
                status,
                str(patient),
                current if status == STATUS_COMPLETED else None,
            )
        )
        for _ in range(0 if str(number) in carried else draw(st.sampled_from([0, 1, 1, 1, 2]))):
            written = _POOL_DRAFTS[(number, patient, draw(st.integers(1, 3)))]
            next_id += 1
            invoice = qbo_answer(
                written,
                draw(st.sampled_from(["60", "61", "62"])),
                invoice_id=str(next_id),
                sync_token=str(draw(st.integers(0, 3))),
                balance=draw(st.sampled_from([None, Decimal(0), Decimal("250.00"), Decimal(150)])),
                edit=draw(st.sampled_from([None, touched])),
            )
            invoices.append(
                draw(st.sampled_from([invoice, invoice, voided_of(written, invoice.id)]))
            )
            carried.add(str(number))
        if draw(st.booleans()):
            ledger[str(number)] = entry(
                draw(st.integers(1, 3)),
                action=draw(st.sampled_from(["created", "updated", "deleted", "voided"])),
                invoice_id=str(draw(st.integers(100, next_id + 1))),
                token=str(draw(st.integers(0, 3))),
                number=str(number),
            )
        if draw(st.booleans()):
            accepted[str(number)] = Acceptance(str(number), draw(st.integers(1, 3)), AT)
    existing = draw(
        st.lists(
            st.sampled_from(
                [
                    customer("60", "7.JQD"),
                    customer("61", "7.AB (deleted)", active=False),
                    customer("62", "8.JQD", active=False),
                ]
            ),
            unique_by=lambda c: c.id,
        )
    )
    drafts = [q.draft for q in quotes if q.draft is not None]
    return {
        "quotes": quotes,
        "invoices": invoices,
        "ledger": ledger,
        "accepted": accepted,
        "resolution": resolution_for(*drafts, existing=existing),
        "edits": draw(st.sampled_from(["report", "revert"])),
        "deletes": draw(st.sampled_from(["report", "recreate"])),
        "apply": draw(st.booleans()),
        "allow_paid": draw(st.booleans()),
        "reopened": draw(st.sampled_from(["delete", "void"])),
    }


@given(scenarios())
@settings(max_examples=150, deadline=None)
def test_planning_properties(s: dict[str, Any]) -> None:
    plan = plan_sync(
        s["quotes"],
        s["invoices"],
        [],
        ITEM_IDS,
        s["reopened"],
        ledger=s["ledger"],
        accepted=s["accepted"],
        edits=s["edits"],
        deletes=s["deletes"],
        resolution=s["resolution"],
        quote_version_field=QV,
        apply=s["apply"],
        allow_paid=s["allow_paid"],
    )
    numbers = [q.number for q in plan.quotes]
    assert len(numbers) == len(set(numbers)) == len({q.number for q in s["quotes"]})
    carried = {i.doc_number for i in s["invoices"]}
    ambiguous = set(s["resolution"].ambiguous_ids())
    for quote in plan.quotes:
        invoice = quote.invoice
        if invoice is not None and invoice.paid:
            assert quote.action not in (Action.DELETE, Action.VOID)
            if quote.action is Action.UPDATE:
                assert s["apply"] and s["allow_paid"]
                assert quote.draft is not None
                assert quote.draft.total >= invoice.total - invoice.balance
        if quote.number in carried:
            assert quote.action is not Action.CREATE
        if quote.action is Action.CONFLICT:
            assert quote.kind is not None
        if quote.action in (Action.CREATE, Action.UPDATE):
            assert quote.draft is not None
            assert quote.draft.patient_id not in ambiguous
    created = [c.patient_id for c in plan.customers_to_create]
    assert len(created) == len(set(created))


def test_a_customer_note_reaches_the_quotes_that_need_that_customer() -> None:
    d = draft()
    old = customer("60", "77.AB (deleted)", active=False)
    wants = [PatientCustomerWant("77", "77.JQD")]
    # 61 holds the plain name (seen in the exact answer only): reactivate without renaming.
    template = "{patient_id}.{initials}"
    resolution = resolve_customers(wants, [customer("61", "77.AB")], [old], template)
    assert resolution.ambiguous == ()
    plan = plan_sync([completed(d)], [], [], ITEM_IDS, resolution=resolution)
    (quote,) = plan.quotes
    assert quote.note is not None and "61" in quote.note


@pytest.mark.parametrize("policy", [{"edits": "ignore"}, {"deletes": "keep"}])
def test_an_unknown_qbo_policy_is_refused(policy: dict[str, str]) -> None:
    with pytest.raises(ValueError, match="policy"):
        plan_sync([], [], [], ITEM_IDS, **policy)


def test_duplicates_of_a_reopened_quote_are_a_duplicate_invoices_conflict() -> None:
    d = draft()
    plan = plan_02(reopened(), [invoice_for(d), invoice_for(d, invoice_id="146")])
    assert plan.action is Action.CONFLICT and plan.kind is AttentionKind.DUPLICATE_INVOICES
