"""Planning a sync run: what to do with each quote, given what QBO already holds (pure).

DESIGN.md "Sync semantics" point 4, every row of its table: from the quotes of the window
(with their invoice drafts), the invoices QBO has under those DocNumbers, the customers it
has under the drafts' DisplayNames (inactive ones included) and the item ids, decide one
action per quote, and which customers must be created or reactivated first. No I/O; the
execution engine carries the plan out. Reasons name fields and ids, never patient data.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

from fourdqbo.emr.records import (
    STATUS_ACTIVE,
    STATUS_COMPLETED,
    STATUS_INACTIVE,
    status_label,
)
from fourdqbo.qbo.records import Customer, Invoice
from fourdqbo.sync.mapping import InvoiceDraft, LineKind, draft_differences

REOPENED_ACTIONS = ("delete", "void")
_REOPENED_STATUSES = (STATUS_ACTIVE, STATUS_INACTIVE)


class Action(StrEnum):
    CREATE = "create"
    UPDATE = "update"
    DELETE = "delete"
    VOID = "void"
    UNCHANGED = "unchanged"
    SKIP = "skip"
    CONFLICT = "conflict"
    FAIL = "fail"


@dataclass(frozen=True)
class QuoteInput:
    """What execution hands the planner for one quote."""

    number: str
    version: int
    status_id: int | None
    patient_id: str | None
    draft: InvoiceDraft | None  # None when the quote is not completed or mapping failed
    error: str | None = None  # fetch or mapping error: the quote fails


@dataclass(frozen=True)
class CustomerToCreate:
    display_name: str
    patient_id: str


@dataclass(frozen=True)
class QuotePlan:
    number: str
    version: int
    status: str
    action: Action
    reason: str
    draft: InvoiceDraft | None = None
    invoice: Invoice | None = None
    customer_name: str | None = None
    # The existing QBO customer the invoice goes to (for CREATE/UPDATE/UNCHANGED of a
    # completed quote), reactivated first if inactive; None when it is still to be created
    # (then it is in `Plan.customers_to_create` under `customer_name`).
    customer_id: str | None = None


@dataclass(frozen=True)
class Plan:
    quotes: tuple[QuotePlan, ...]
    customers_to_create: tuple[CustomerToCreate, ...]  # once per display name
    customers_to_reactivate: tuple[Customer, ...]  # inactive customers a CREATE/UPDATE needs

    def by_action(self, action: Action) -> list[QuotePlan]:
        return [plan for plan in self.quotes if plan.action == action]


def customer_key(display_name: str) -> str:
    """How DisplayNames are compared: QBO holds them unique regardless of case (and trims
    them), so "123.jd" and "123.JD " name the same customer."""
    return display_name.strip().casefold()


def plan_sync(
    quotes: Sequence[QuoteInput],
    invoices: Sequence[Invoice],
    customers: Sequence[Customer],
    item_ids: Mapping[LineKind, str],
    reopened_action: str = "delete",
) -> Plan:
    """One QuotePlan per quote number, in the order the quotes came.

    A number given twice (e.g. from the window and from the retry queue) is planned once,
    from its highest version (the later input on a tie), so it can never be created twice.
    An invoice given twice (same Id) counts once. Raises ValueError for an unknown
    `reopened_action` and LookupError when `item_ids` lacks a kind a draft uses.
    """
    if reopened_action not in REOPENED_ACTIONS:
        raise ValueError(f"reopened action must be one of {', '.join(REOPENED_ACTIONS)}")
    planner = _Planner(invoices, customers, item_ids, reopened_action)
    plans = tuple(planner.plan(quote) for quote in _latest_per_number(quotes))
    return Plan(
        quotes=plans,
        customers_to_create=tuple(planner.to_create.values()),
        customers_to_reactivate=tuple(planner.to_reactivate.values()),
    )


class _Planner:
    """The lookups of one planning pass and the customers its writes need."""

    def __init__(
        self,
        invoices: Sequence[Invoice],
        customers: Sequence[Customer],
        item_ids: Mapping[LineKind, str],
        reopened_action: str,
    ) -> None:
        self.invoices = _invoices_by_doc_number(invoices)
        self.customers = _customers_by_key(customers)
        self.item_ids = item_ids
        self.reopened_action = reopened_action
        self.to_create: dict[str, CustomerToCreate] = {}
        self.to_reactivate: dict[str, Customer] = {}

    def plan(self, quote: QuoteInput) -> QuotePlan:
        found = self.invoices.get(quote.number.strip(), [])
        if quote.error:
            return _plan(quote, Action.FAIL, quote.error, draft=quote.draft, found=found)
        if len(found) > 1:
            ids = ", ".join(invoice.id for invoice in found)
            reason = f"{len(found)} QBO invoices share DocNumber {quote.number} (Ids {ids})"
            return _plan(quote, Action.CONFLICT, reason, draft=quote.draft)
        invoice = found[0] if found else None
        if quote.status_id == STATUS_COMPLETED:
            return self._completed(quote, invoice)
        if quote.status_id in _REOPENED_STATUSES:
            return self._reopened(quote, invoice)
        reason = (
            f"unknown status id {quote.status_id}"
            if quote.status_id is not None
            else ("no status id")
        )
        return _plan(quote, Action.SKIP, reason, draft=quote.draft, invoice=invoice)

    def _completed(self, quote: QuoteInput, invoice: Invoice | None) -> QuotePlan:
        draft = quote.draft
        if draft is None:
            return _plan(quote, Action.FAIL, "completed quote without an invoice draft")
        customer = self.customers.get(customer_key(draft.customer_name))
        customer_id = customer.id if customer is not None else None
        if invoice is None:
            return self._write(quote, Action.CREATE, "no invoice yet", draft, None, customer)
        differences = draft_differences(draft, customer_id, self.item_ids, invoice)
        if not differences:
            return _plan(
                quote,
                Action.UNCHANGED,
                "invoice equals the quote",
                draft=draft,
                invoice=invoice,
                customer_id=customer_id,
            )
        differ = "invoice differs in " + ", ".join(differences)
        if invoice.paid:
            return _plan(
                quote,
                Action.CONFLICT,
                f"{differ} but has a payment applied (Balance != TotalAmt)",
                draft=draft,
                invoice=invoice,
                customer_id=customer_id,
            )
        return self._write(quote, Action.UPDATE, differ, draft, invoice, customer)

    def _reopened(self, quote: QuoteInput, invoice: Invoice | None) -> QuotePlan:
        if invoice is None:
            return _plan(quote, Action.UNCHANGED, "not completed, no invoice")
        if invoice.paid:
            return _plan(
                quote,
                Action.CONFLICT,
                "quote is no longer completed but its invoice has a payment applied",
                invoice=invoice,
            )
        if self.reopened_action == "void":
            if invoice.total == 0 and invoice.balance == 0:
                # What a voided invoice looks like; voiding it again would be a needless write.
                return _plan(quote, Action.UNCHANGED, "invoice already voided", invoice=invoice)
            return _plan(quote, Action.VOID, "quote is no longer completed", invoice=invoice)
        return _plan(quote, Action.DELETE, "quote is no longer completed", invoice=invoice)

    def _write(
        self,
        quote: QuoteInput,
        action: Action,
        reason: str,
        draft: InvoiceDraft,
        invoice: Invoice | None,
        customer: Customer | None,
    ) -> QuotePlan:
        """A CREATE or UPDATE, recording the customer it needs."""
        if customer is None:
            key = customer_key(draft.customer_name)
            self.to_create.setdefault(key, CustomerToCreate(draft.customer_name, draft.patient_id))
            reason += "; customer to create"
        elif not customer.active:
            self.to_reactivate.setdefault(customer.id, customer)
            reason += "; customer to reactivate"
        return QuotePlan(
            number=quote.number,
            version=quote.version,
            status=status_label(quote.status_id),
            action=action,
            reason=reason,
            draft=draft,
            invoice=invoice,
            customer_name=draft.customer_name,
            customer_id=None if customer is None else customer.id,
        )


def _plan(
    quote: QuoteInput,
    action: Action,
    reason: str,
    *,
    draft: InvoiceDraft | None = None,
    invoice: Invoice | None = None,
    found: Sequence[Invoice] = (),
    customer_id: str | None = None,
) -> QuotePlan:
    if invoice is None and len(found) == 1:
        invoice = found[0]
    return QuotePlan(
        number=quote.number,
        version=quote.version,
        status=status_label(quote.status_id),
        action=action,
        reason=reason,
        draft=draft,
        invoice=invoice,
        customer_name=None if draft is None else draft.customer_name,
        customer_id=customer_id,
    )


def _latest_per_number(quotes: Iterable[QuoteInput]) -> list[QuoteInput]:
    chosen: dict[str, QuoteInput] = {}
    for quote in quotes:
        key = quote.number.strip()
        current = chosen.get(key)
        if current is None or quote.version >= current.version:
            chosen[key] = quote  # a dict keeps the first position of a replaced key
    return list(chosen.values())


def _invoices_by_doc_number(invoices: Iterable[Invoice]) -> dict[str, list[Invoice]]:
    by_number: dict[str, list[Invoice]] = {}
    seen: set[str] = set()
    for invoice in invoices:
        if invoice.doc_number is None or invoice.id in seen:
            continue
        seen.add(invoice.id)
        by_number.setdefault(invoice.doc_number.strip(), []).append(invoice)
    return by_number


def _customers_by_key(customers: Iterable[Customer]) -> dict[str, Customer]:
    """DisplayName key -> customer; an active customer wins over an inactive namesake."""
    by_key: dict[str, Customer] = {}
    for customer in customers:
        key = customer_key(customer.display_name)
        current = by_key.get(key)
        if current is None or (customer.active and not current.active):
            by_key[key] = customer
    return by_key


__all__ = [
    "REOPENED_ACTIONS",
    "Action",
    "CustomerToCreate",
    "Plan",
    "QuoteInput",
    "QuotePlan",
    "customer_key",
    "plan_sync",
]
