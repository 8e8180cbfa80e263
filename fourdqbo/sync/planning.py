"""Planning a sync run: what to do with each quote, given what QBO already holds (pure).

DESIGN.md "Sync semantics" point 4, every row of its table, and the 0.2 rules of "People
work in QBO too" and "What needs a person": from the quotes of the window (with their
invoice drafts), the invoices QBO has under those DocNumbers, the patients' customers, the
item ids, the ledger of what the sync last wrote and the acceptances a bookkeeper gave,
decide one action per quote, and which customers must be created or reactivated first.
Every CONFLICT carries the kind of attention it needs. No I/O; the execution engine carries
the plan out. Reasons name fields, ids and Versions, never patient data.

Without the 0.2 inputs (no ledger, no acceptances, no customer resolution) the plan is the
0.1 plan: a differing unpaid invoice is updated, a missing one created.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from decimal import Decimal
from enum import StrEnum

from fourdqbo.emr.records import (
    STATUS_ACTIVE,
    STATUS_COMPLETED,
    STATUS_INACTIVE,
    status_label,
)
from fourdqbo.qbo.records import Customer, Invoice
from fourdqbo.state.items import Acceptance, AttentionKind, LedgerEntry
from fourdqbo.sync.customers import (
    CustomerResolution,
    CustomerToCreate,
    CustomerToReactivate,
    customer_key,
)
from fourdqbo.sync.differences import differs_only_by_tax, sales_tax
from fourdqbo.sync.mapping import InvoiceDraft, LineKind, draft_differences

REOPENED_ACTIONS = ("delete", "void")
EDITS_POLICIES = ("report", "revert")
DELETES_POLICIES = ("report", "recreate")
_REOPENED_STATUSES = (STATUS_ACTIVE, STATUS_INACTIVE)
# Ledger actions after which the invoice the sync wrote should still be there, so its
# absence (or a void) is a person's doing.
_WRITTEN = frozenset({"created", "updated", "adopted"})


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
    kind: AttentionKind | None = None  # set on every CONFLICT: what a person must look at
    # An UPDATE from a newer Version overwrites a change a person made in QBO after the
    # sync's last write (its SyncToken moved on): the report says so.
    replaced_qbo_change: bool = False
    note: str | None = None  # about the customer (e.g. reactivated without its plain name)


@dataclass(frozen=True)
class Plan:
    quotes: tuple[QuotePlan, ...]
    customers_to_create: tuple[CustomerToCreate, ...]  # once per patient (0.1: per name)
    customers_to_reactivate: tuple[Customer, ...]  # inactive customers a CREATE/UPDATE needs
    # The same customers with the DisplayName to restore (the name without " (deleted)"),
    # when a customer resolution was given; 0.1 plans restore no name.
    reactivations: tuple[CustomerToReactivate, ...] = ()

    def by_action(self, action: Action) -> list[QuotePlan]:
        return [plan for plan in self.quotes if plan.action == action]

    def by_kind(self, kind: AttentionKind) -> list[QuotePlan]:
        return [plan for plan in self.quotes if plan.kind == kind]


def plan_sync(
    quotes: Sequence[QuoteInput],
    invoices: Sequence[Invoice],
    customers: Sequence[Customer],
    item_ids: Mapping[LineKind, str],
    reopened_action: str = "delete",
    *,
    ledger: Mapping[str, LedgerEntry] | None = None,
    accepted: Mapping[str, Acceptance] | None = None,
    edits: str = "report",
    deletes: str = "report",
    resolution: CustomerResolution | None = None,
    quote_version_field: str | None = None,
    apply: bool = False,
    allow_paid: bool = False,
) -> Plan:
    """One QuotePlan per quote number, in the order the quotes came.

    A number given twice (e.g. from the window and from the retry queue) is planned once,
    from its highest version (the later input on a tie), so it can never be created twice.
    An invoice given twice (same Id) counts once.

    0.2 inputs (keyword-only; their defaults give the 0.1 plan):
    - `ledger`: quote number -> the sync's last write for it; `accepted`: quote number ->
      the bookkeeper's acceptance (honoured at exactly the quote's Version).
    - `edits` ("report"|"revert") and `deletes` ("report"|"recreate"): SYNC_QBO_EDITS and
      SYNC_QBO_DELETES, what to do with an invoice a person changed, deleted or voided.
    - `resolution`: each patient's customer (`customers.resolve_customers`); when given it
      decides the customer instead of the exact-name match on `customers`.
    - `quote_version_field`: the DefinitionId of the "Quote Version" custom field, which
      ties an invoice to the Version it was written from when the ledger has no entry.
    - `apply` (`sync apply`): write the quote whatever a person did or accepted; a paid
      invoice only with `allow_paid` (`--paid`) and when the quote's total covers what was
      paid. A re-opened quote's paid invoice is never deleted or voided.

    Raises ValueError for an unknown `reopened_action`, `edits` or `deletes`, and
    LookupError when `item_ids` lacks a kind a draft uses.
    """
    for value, allowed, what in (
        (reopened_action, REOPENED_ACTIONS, "reopened action"),
        (edits, EDITS_POLICIES, "QBO edits policy"),
        (deletes, DELETES_POLICIES, "QBO deletes policy"),
    ):
        if value not in allowed:
            raise ValueError(f"{what} must be one of {', '.join(allowed)}")
    planner = _Planner(
        invoices,
        customers,
        item_ids,
        _Policy(
            reopened_action=reopened_action,
            ledger={k.strip(): v for k, v in (ledger or {}).items()},
            accepted={k.strip(): v for k, v in (accepted or {}).items()},
            revert_edits=edits == "revert" or apply,
            recreate_deleted=deletes == "recreate" or apply,
            quote_version_field=quote_version_field or None,
            apply=apply,
            allow_paid=allow_paid,
        ),
        resolution,
    )
    plans = tuple(planner.plan(quote) for quote in _latest_per_number(quotes))
    return Plan(
        quotes=plans,
        customers_to_create=tuple(planner.to_create.values()),
        customers_to_reactivate=tuple(planner.to_reactivate.values()),
        reactivations=tuple(planner.reactivations.values()),
    )


@dataclass(frozen=True)
class _Policy:
    reopened_action: str
    ledger: Mapping[str, LedgerEntry]
    accepted: Mapping[str, Acceptance]
    revert_edits: bool
    recreate_deleted: bool
    quote_version_field: str | None
    apply: bool
    allow_paid: bool


@dataclass(frozen=True)
class _Customer:
    """The customer a completed quote's invoice goes to, as the planner sees it."""

    id: str | None  # None: to be created
    record: Customer | None = None  # for an inactive one: what to reactivate
    reactivation: CustomerToReactivate | None = None
    ambiguous: tuple[str, ...] = ()  # candidate Ids when several customers are the patient
    note: str | None = None


class _Planner:
    """The lookups of one planning pass and the customers its writes need."""

    def __init__(
        self,
        invoices: Sequence[Invoice],
        customers: Sequence[Customer],
        item_ids: Mapping[LineKind, str],
        policy: _Policy,
        resolution: CustomerResolution | None,
    ) -> None:
        self.invoices = _invoices_by_doc_number(invoices)
        self.customers = _customers_by_key(customers)
        self.item_ids = item_ids
        self.policy = policy
        self.resolution = resolution
        self.to_create: dict[str, CustomerToCreate] = {}
        self.to_reactivate: dict[str, Customer] = {}
        self.reactivations: dict[str, CustomerToReactivate] = {}

    def plan(self, quote: QuoteInput) -> QuotePlan:
        found = self.invoices.get(quote.number.strip(), [])
        # An acceptance first: a bookkeeper who accepted a quote that gave up (it cannot be
        # read or mapped) asked for this Version to be left alone, failing or not.
        acceptance = self.policy.accepted.get(quote.number.strip())
        if acceptance is not None and acceptance.version == quote.version and not self.policy.apply:
            reason = f"accepted as QBO holds it at Version {quote.version}"
            return _plan(quote, Action.UNCHANGED, reason, draft=quote.draft, found=found)
        if quote.error:
            return _plan(quote, Action.FAIL, quote.error, draft=quote.draft, found=found)
        if len(found) > 1:
            ids = ", ".join(invoice.id for invoice in found)
            reason = f"{len(found)} QBO invoices share DocNumber {quote.number} (Ids {ids})"
            return _conflict(quote, AttentionKind.DUPLICATE_INVOICES, reason, draft=quote.draft)
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
        customer = self._customer(draft, invoice)
        plan = self._decide(quote, draft, invoice, customer)
        if plan.action not in (Action.CREATE, Action.UPDATE):
            return plan
        if customer.ambiguous:
            reason = (
                f"{len(customer.ambiguous)} QBO customers are patient {draft.patient_id} "
                f"(Ids {', '.join(customer.ambiguous)}); nothing written"
            )
            return replace(
                plan,
                action=Action.CONFLICT,
                kind=AttentionKind.CUSTOMER_AMBIGUOUS,
                reason=reason,
                replaced_qbo_change=False,
            )
        return self._needs_customer(plan, draft, customer)

    def _decide(
        self,
        quote: QuoteInput,
        draft: InvoiceDraft,
        invoice: Invoice | None,
        customer: _Customer,
    ) -> QuotePlan:
        """The action for a completed quote before its customer is ensured."""
        policy = self.policy
        entry = policy.ledger.get(quote.number.strip())
        # The invoice the sync wrote from this very Version and should still find as it left
        # it; None when the ledger knows of no such write.
        written_id = (
            entry.invoice_id
            if entry is not None and entry.version == quote.version and entry.action in _WRITTEN
            else None
        )

        def plan(action: Action, reason: str, *, replaced: bool = False) -> QuotePlan:
            return _plan(
                quote,
                action,
                reason,
                draft=draft,
                invoice=invoice,
                customer_id=customer.id,
                replaced_qbo_change=replaced,
            )

        if invoice is None:
            deleted = f"invoice {written_id} written from Version {quote.version} was deleted"
            if written_id is not None and policy.recreate_deleted:
                return plan(Action.CREATE, f"{deleted} in QBO; re-created")
            if written_id is not None:
                return _conflict(
                    quote,
                    AttentionKind.DELETED_IN_QBO,
                    f"{deleted} in QBO",
                    draft=draft,
                    customer_id=customer.id,
                )
            return plan(Action.CREATE, "no invoice yet")
        if is_voided(invoice):
            by_us = (
                entry is not None and entry.action == "voided" and entry.invoice_id == invoice.id
            )
            by_person = written_id == invoice.id
            if by_person and not policy.recreate_deleted:
                return _conflict(
                    quote,
                    AttentionKind.DELETED_IN_QBO,
                    f"invoice {invoice.id} written from Version {quote.version} was voided in QBO",
                    draft=draft,
                    invoice=invoice,
                    customer_id=customer.id,
                )
            if by_person:
                reason = f"invoice {invoice.id} was voided in QBO; brought back to the quote"
            elif by_us:
                reason = f"invoice {invoice.id} voided by the sync; the quote is completed again"
            else:
                reason = f"invoice {invoice.id} is voided; brought back to the quote"
            return plan(Action.UPDATE, reason)
        differences = draft_differences(draft, customer.id, self.item_ids, invoice)
        if not differences:
            return plan(Action.UNCHANGED, "invoice equals the quote")
        if differs_only_by_tax(draft, invoice, differences):
            # An update would send the same lines and QBO would add the same tax again:
            # written every run, forever. The lines are what the sync owns.
            return plan(
                Action.UNCHANGED,
                f"invoice equals the quote line by line; its total {invoice.total} holds "
                f"{sales_tax(invoice)} sales tax QBO adds",
            )
        differ = "invoice differs in " + ", ".join(differences)
        same_version = (
            entry.version == quote.version and entry.invoice_id == invoice.id
            if entry is not None
            else policy.quote_version_field is not None
            and invoice.custom_fields.get(policy.quote_version_field) == str(quote.version)
        )
        if invoice.paid and (policy.apply or not same_version):
            return self._paid_update(quote, draft, invoice, customer, differ)
        if same_version:
            edited = f"{differ}: changed in QBO after it was written from Version {quote.version}"
            if invoice.paid or not policy.revert_edits:
                paid = " (a payment is applied)" if invoice.paid else ""
                return _conflict(
                    quote,
                    AttentionKind.EDITED_IN_QBO,
                    edited + paid,
                    draft=draft,
                    invoice=invoice,
                    customer_id=customer.id,
                )
            return plan(Action.UPDATE, f"{edited}; the change made in QBO is reverted")
        # Someone touched the invoice after our last write (its SyncToken moved on).
        token = entry.sync_token if entry is not None and entry.invoice_id == invoice.id else None
        replaced = token is not None and token != invoice.sync_token
        if replaced:
            differ += (
                f"; Version {quote.version} replaces a change made in QBO "
                f"(SyncToken {token} -> {invoice.sync_token})"
            )
        return plan(Action.UPDATE, differ, replaced=replaced)

    def _paid_update(
        self,
        quote: QuoteInput,
        draft: InvoiceDraft,
        invoice: Invoice,
        customer: _Customer,
        differ: str,
    ) -> QuotePlan:
        """A differing invoice with a payment applied: only `sync apply --paid` may write it,
        and only when the quote's total still covers what was paid."""
        amount_paid = invoice.total - invoice.balance
        if self.policy.apply and self.policy.allow_paid and draft.total >= amount_paid:
            reason = f"{differ}; updated with {amount_paid} paid (quote total {draft.total})"
            return _plan(
                quote,
                Action.UPDATE,
                reason,
                draft=draft,
                invoice=invoice,
                customer_id=customer.id,
            )
        if not self.policy.apply:
            reason = f"{differ} but has a payment applied (Balance != TotalAmt)"
        elif not self.policy.allow_paid:
            reason = f"{differ} but {_paid_text(amount_paid)} is paid: use --paid"
        else:
            reason = (
                f"{differ} but {_paid_text(amount_paid)} is paid and the quote's total is "
                f"{draft.total}: a credit memo is needed"
            )
        return _conflict(
            quote,
            AttentionKind.PAID,
            reason,
            draft=draft,
            invoice=invoice,
            customer_id=customer.id,
        )

    def _reopened(self, quote: QuoteInput, invoice: Invoice | None) -> QuotePlan:
        if invoice is None:
            return _plan(quote, Action.UNCHANGED, "not completed, no invoice")
        if is_voided(invoice):
            return _plan(quote, Action.UNCHANGED, "invoice already voided", invoice=invoice)
        if invoice.paid:
            return _conflict(
                quote,
                AttentionKind.PAID,
                "quote is no longer completed but its invoice has a payment applied "
                f"({_paid_text(invoice.total - invoice.balance)} paid)",
                invoice=invoice,
            )
        if self.policy.reopened_action == "void":
            # A void is told by `is_voided` above (PrivateNote "Voided" and zero amounts):
            # an invoice a person zeroed without voiding is voided like any other.
            return _plan(quote, Action.VOID, "quote is no longer completed", invoice=invoice)
        return _plan(quote, Action.DELETE, "quote is no longer completed", invoice=invoice)

    def _customer(self, draft: InvoiceDraft, invoice: Invoice | None) -> _Customer:
        if self.resolution is None:
            found = self.customers.get(customer_key(draft.customer_name))
            if found is None:
                return _Customer(None)
            return _Customer(found.id, record=None if found.active else found)
        resolution = self.resolution
        candidates = resolution.ambiguous_ids().get(draft.patient_id)
        if candidates is not None:
            # Compared with the customer the invoice already has, if it is one of them: an
            # invoice that needs no write is no conflict.
            current = (
                invoice.customer_id
                if invoice is not None and invoice.customer_id in candidates
                else None
            )
            return _Customer(current, ambiguous=candidates)
        customer_id = resolution.customer_ids.get(draft.patient_id)
        if customer_id is None:
            return _Customer(None)
        reactivation = resolution.reactivation_of(customer_id)
        return _Customer(
            customer_id,
            record=None if reactivation is None else reactivation.customer,
            reactivation=reactivation,
            note=resolution.notes.get(draft.patient_id),
        )

    def _needs_customer(
        self, plan: QuotePlan, draft: InvoiceDraft, customer: _Customer
    ) -> QuotePlan:
        """A CREATE or UPDATE, recording the customer it needs."""
        reason = plan.reason
        name = draft.customer_name
        if customer.id is None:
            if self.resolution is None:
                key = customer_key(draft.customer_name)
            else:
                # Once per patient, under the name the resolution chose (the first quote's).
                key = draft.patient_id
                name = next(
                    (c.display_name for c in self.resolution.to_create if c.patient_id == key),
                    draft.customer_name,
                )
            name = self.to_create.setdefault(
                key, CustomerToCreate(name, draft.patient_id)
            ).display_name
            reason += "; customer to create"
        elif customer.record is not None:
            self.to_reactivate.setdefault(customer.record.id, customer.record)
            self.reactivations.setdefault(
                customer.record.id,
                customer.reactivation or CustomerToReactivate(customer.record, None),
            )
            reason += "; customer to reactivate"
        return replace(plan, reason=reason, customer_name=name, note=customer.note)


def is_voided(invoice: Invoice) -> bool:
    """What a voided invoice looks like (`Invoice.voided`: QBO notes "Voided" and zeroes
    its amounts; a zero total alone is no void)."""
    return invoice.voided


def _paid_text(amount: Decimal) -> str:
    return f"{amount:.2f}"


def _conflict(
    quote: QuoteInput,
    kind: AttentionKind,
    reason: str,
    *,
    draft: InvoiceDraft | None = None,
    invoice: Invoice | None = None,
    customer_id: str | None = None,
) -> QuotePlan:
    return replace(
        _plan(
            quote,
            Action.CONFLICT,
            reason,
            draft=draft,
            invoice=invoice,
            customer_id=customer_id,
        ),
        kind=kind,
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
    replaced_qbo_change: bool = False,
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
        replaced_qbo_change=replaced_qbo_change,
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
    "DELETES_POLICIES",
    "EDITS_POLICIES",
    "REOPENED_ACTIONS",
    "Action",
    "CustomerToCreate",
    "Plan",
    "QuoteInput",
    "QuotePlan",
    "customer_key",
    "is_voided",
    "plan_sync",
]
