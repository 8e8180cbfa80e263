"""Reconcile: audit every 4D quote changed since a date against what QBO holds.

DESIGN.md "Reconcile". Two halves, like the sync:

- the pure core, `reconcile_findings`: from the quotes (as `planning.QuoteInput`), the
  invoices, the customers, the item ids and the acceptances, one `Finding` per quote, the
  invoices not from 4D, counts and totals. What differs comes from
  `fourdqbo.sync.differences`, the same definition the planner uses.
- the shell, `Reconciler`: reads in bulk (4D `quotes/list` plus the completed quotes'
  bodies; QBO the items once, the invoices dated since the day, the rest of the quotes'
  invoices by DocNumber, every customer in pages), never one QBO read per quote. It is
  read-only and lock-free, and never moves the watermark, the retry queue or the CDC
  cursor. `fix_quotes` says which quotes `--fix` may hand to the engine.

Findings hold quote numbers, ids, amounts and field values the sync writes; never a
patient's name.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any, Protocol

from fourdqbo.config import Settings
from fourdqbo.emr.records import (
    STATUS_ACTIVE,
    STATUS_COMPLETED,
    STATUS_INACTIVE,
    Quote,
    QuoteSummary,
    RecordError,
    quote_number,
    status_label,
)
from fourdqbo.errors import FourdqboError
from fourdqbo.money import ZERO
from fourdqbo.qbo.records import Customer, Invoice
from fourdqbo.state.items import Acceptance, Difference, LedgerEntry
from fourdqbo.sync.customers import customer_key, patient_pattern, strip_deleted_suffix
from fourdqbo.sync.differences import (
    differs_only_by_tax,
    invoice_differences,
    money_text,
    sales_tax,
)
from fourdqbo.sync.engine import Progress, SilentProgress
from fourdqbo.sync.mapping import (
    QUOTE_VERSION_FIELD_NAME,
    InvoiceDraft,
    LineKind,
    MappingError,
    MappingRules,
    map_quote,
)
from fourdqbo.sync.planning import QuoteInput, is_voided
from fourdqbo.timefmt import iso_z, local_date


class FindingKind(StrEnum):
    OK = "ok"
    MISSING = "missing"  # completed, no invoice (or only a voided one)
    DIFFERS = "differs"  # unpaid invoice not equal to the draft
    PAID_DIFFERS = "paid_differs"
    ORPHAN = "orphan"  # not completed, unpaid invoice exists
    PAID_ORPHAN = "paid_orphan"
    DUPLICATE = "duplicate"  # several invoices carry its DocNumber
    CUSTOMER_MISMATCH = "customer_mismatch"  # the invoice is not the patient's customer's
    ACCEPTED = "accepted"  # differs, but a person accepted this Version
    UNKNOWN_STATUS = "unknown_status"
    FAILED = "failed"  # 4D could not give the quote, or it cannot become an invoice


# Findings that need nothing from anyone: exit 0 when every finding is one of these.
SETTLED = frozenset({FindingKind.OK, FindingKind.ACCEPTED})
# What `--fix` may write (as the sync would, 4D winning): never paid or accepted invoices,
# never a duplicate (which one is right is a person's call).
FIXABLE = frozenset(
    {
        FindingKind.MISSING,
        FindingKind.DIFFERS,
        FindingKind.ORPHAN,
        FindingKind.CUSTOMER_MISMATCH,
    }
)


@dataclass(frozen=True)
class Finding:
    quote: str
    version: int
    status: str
    finding: FindingKind
    invoice_id: str | None = None  # several, comma-separated, for a duplicate
    quote_total: Decimal | None = None  # the draft's total (completed quotes)
    invoice_total: Decimal | None = None  # TotalAmt (summed over a duplicate's invoices)
    differences: tuple[Difference, ...] = ()
    reason: str = ""
    paid: bool = False  # a payment is applied to the invoice
    ledger: LedgerEntry | None = None  # the sync's last write for the quote, if known

    def as_dict(self) -> dict[str, Any]:
        entry = self.ledger
        return {
            "quote": self.quote,
            "version": self.version,
            "status": self.status,
            "finding": self.finding.value,
            "invoice_id": self.invoice_id,
            "quote_total": _money(self.quote_total),
            "invoice_total": _money(self.invoice_total),
            "differences": [
                {"field": d.field, "qbo": d.qbo, "quote": d.quote} for d in self.differences
            ],
            "reason": self.reason,
            "ledger": None if entry is None else entry.as_json(),
        }


@dataclass(frozen=True)
class ForeignInvoice:
    """An invoice dated in the period whose DocNumber is no quote 4D knows."""

    invoice_id: str
    doc_number: str | None
    txn_date: date | None
    customer_id: str | None
    total: Decimal

    def as_dict(self) -> dict[str, Any]:
        return {
            "invoice_id": self.invoice_id,
            "doc_number": self.doc_number,
            "txn_date": None if self.txn_date is None else self.txn_date.isoformat(),
            "customer_id": self.customer_id,
            "total": money_text(self.total),
        }


@dataclass(frozen=True)
class ReconcileResult:
    since: datetime
    findings: tuple[Finding, ...]
    not_from_4d: tuple[ForeignInvoice, ...]
    quotes_total: Decimal  # sum of the completed quotes' totals
    invoices_total: Decimal  # sum of their invoices' TotalAmt
    requests: Mapping[str, int] = field(default_factory=dict)

    @property
    def difference(self) -> Decimal:
        return self.quotes_total - self.invoices_total

    def counts(self) -> dict[str, int]:
        """Findings per kind, every kind named (0 where none)."""
        counts = {kind.value: 0 for kind in FindingKind}
        for finding in self.findings:
            counts[finding.finding.value] += 1
        return counts

    @property
    def exit_code(self) -> int:
        return 0 if all(f.finding in SETTLED for f in self.findings) else 1

    def as_dict(self) -> dict[str, Any]:
        return {
            "since": iso_z(self.since),
            "findings": [f.as_dict() for f in self.findings],
            "not_from_4d": [i.as_dict() for i in self.not_from_4d],
            "counts": self.counts(),
            "totals": {
                "quotes": money_text(self.quotes_total),
                "invoices": money_text(self.invoices_total),
                "difference": money_text(self.difference),
            },
            "requests": {
                "fourd": self.requests.get("fourd", 0),
                "qbo": self.requests.get("qbo", 0),
            },
        }


# --- the pure core --------------------------------------------------------------------------


def reconcile_findings(
    quotes: Sequence[QuoteInput],
    invoices: Sequence[Invoice],
    customers: Sequence[Customer],
    item_ids: Mapping[LineKind, str],
    accepted: Mapping[str, Acceptance],
    template: str,
    since: datetime,
    *,
    timezone: str = "America/New_York",
    known_elsewhere: Iterable[str] = (),
    ledger: Mapping[str, LedgerEntry] | None = None,
) -> ReconcileResult:
    """One finding per quote number (its highest Version when given twice), in order.

    `invoices` are every invoice QBO has under the quotes' DocNumbers plus those dated on or
    after `since` (in `timezone`); an invoice of the period whose DocNumber is neither a
    quote given nor in `known_elsewhere` (quotes 4D knows outside the period) is
    `not_from_4d`. `template` is CUSTOMER_NAME_TEMPLATE, to find the patient's customers.
    `ledger` (quote -> the sync's last write) is shown with each finding, and says when an
    invoice differs from or is missing after the very Version the sync wrote (a person's
    doing in QBO). Raises LookupError when `item_ids` lacks a kind a draft uses.
    """
    by_doc = _invoices_by_doc(invoices)
    patients = _PatientCustomers(customers, template)
    findings: list[Finding] = []
    quotes_total = invoices_total = ZERO
    for quote in _latest(quotes):
        finding = _finding(
            quote, by_doc.get(quote.number.strip(), []), patients, item_ids, accepted
        )
        entry = (ledger or {}).get(quote.number.strip())
        if entry is not None:
            finding = replace(finding, ledger=entry, reason=_history(finding, entry))
        findings.append(finding)
        if quote.status_id == STATUS_COMPLETED and quote.draft is not None:
            quotes_total += quote.draft.total
            invoices_total += finding.invoice_total or ZERO
    numbers = {quote.number.strip() for quote in quotes} | {n.strip() for n in known_elsewhere}
    day = local_date(since, timezone)
    foreign = tuple(
        ForeignInvoice(i.id, i.doc_number, i.txn_date, i.customer_id, i.total)
        for i in _unique_invoices(invoices)
        if i.txn_date is not None
        and i.txn_date >= day
        and (i.doc_number or "").strip() not in numbers
    )
    return ReconcileResult(
        since=since,
        findings=tuple(findings),
        not_from_4d=foreign,
        quotes_total=quotes_total,
        invoices_total=invoices_total,
    )


def _history(finding: Finding, entry: LedgerEntry) -> str:
    """The finding's reason, with what the ledger says a person did since the last write."""
    same = entry.version == finding.version and entry.action in ("created", "updated", "adopted")
    if not same:
        return finding.reason
    if finding.finding in (FindingKind.DIFFERS, FindingKind.PAID_DIFFERS) and (
        entry.invoice_id == finding.invoice_id
    ):
        return (
            f"{finding.reason}: changed in QBO after run {entry.run_id} wrote "
            f"Version {entry.version}"
        )
    if finding.finding is FindingKind.MISSING:
        return (
            f"{finding.reason}: invoice {entry.invoice_id} written from Version "
            f"{entry.version} by run {entry.run_id} was deleted or voided in QBO"
        )
    return finding.reason


def fix_quotes(result: ReconcileResult) -> tuple[str, ...]:
    """The quotes `--fix` hands to the sync: unpaid, not accepted, one invoice at most."""
    return tuple(f.quote for f in result.findings if f.finding in FIXABLE and not f.paid)


def patient_customer_ids(
    customers: Sequence[Customer], template: str, patient_id: str, display_name: str
) -> tuple[str, ...]:
    """The ids of the customers that are this patient (DESIGN.md "Customers are patients").

    The exact DisplayName, or a name that, with a trailing " (deleted)" dropped, fits
    `template` with `{patient_id}` filled in and every other placeholder free: the
    canonical matcher of `sync/customers.py`, as the sync uses it.
    """
    return _PatientCustomers(customers, template).ids(patient_id, display_name)


def _finding(
    quote: QuoteInput,
    found: Sequence[Invoice],
    patients: _PatientCustomers,
    item_ids: Mapping[LineKind, str],
    accepted: Mapping[str, Acceptance],
) -> Finding:
    status = status_label(quote.status_id)
    draft = quote.draft
    base = {
        "quote": quote.number,
        "version": quote.version,
        "status": status,
        "quote_total": draft.total if draft is not None else None,
    }
    acceptance = accepted.get(quote.number)
    is_accepted = acceptance is not None and acceptance.version == quote.version

    def finding(kind: FindingKind, reason: str, **extra: Any) -> Finding:
        if is_accepted and kind not in (FindingKind.OK, FindingKind.UNKNOWN_STATUS):
            reason = f"accepted in QBO as it is ({kind.value}: {reason})"
            kind = FindingKind.ACCEPTED
        return Finding(finding=kind, reason=reason, **base, **extra)  # type: ignore[arg-type]

    live = [i for i in found if not is_voided(i)]
    invoice = live[0] if len(live) == 1 else None
    on_invoice: dict[str, Any] = {}
    if invoice is not None:
        on_invoice = {
            "invoice_id": invoice.id,
            "invoice_total": invoice.total,
            "paid": invoice.paid,
        }
    if quote.error:
        return Finding(finding=FindingKind.FAILED, reason=quote.error, **base, **on_invoice)
    if quote.status_id not in (STATUS_COMPLETED, STATUS_ACTIVE, STATUS_INACTIVE):
        return finding(FindingKind.UNKNOWN_STATUS, f"status {status}", **on_invoice)
    if len(live) > 1:
        return finding(
            FindingKind.DUPLICATE,
            f"{len(live)} QBO invoices carry DocNumber {quote.number}",
            invoice_id=", ".join(i.id for i in live),
            invoice_total=sum((i.total for i in live), ZERO),
            paid=any(i.paid for i in live),
        )
    if quote.status_id != STATUS_COMPLETED:
        if invoice is None:
            return finding(FindingKind.OK, "not completed, no invoice")
        if invoice.paid:
            return finding(
                FindingKind.PAID_ORPHAN, "not completed, invoice has a payment", **on_invoice
            )
        return finding(FindingKind.ORPHAN, "not completed, invoice still there", **on_invoice)
    if draft is None:
        return Finding(finding=FindingKind.FAILED, reason="completed quote without a draft", **base)
    if invoice is None:
        if found:  # only voided ones: name the last, so a person can find it
            return finding(FindingKind.MISSING, "invoice voided in QBO", invoice_id=found[-1].id)
        return finding(FindingKind.MISSING, "no invoice in QBO")
    customer_ids = patients.ids(draft.patient_id, draft.customer_name)
    if invoice.customer_id in customer_ids:
        customer_id: str | None = invoice.customer_id
    else:
        customer_id = customer_ids[0] if customer_ids else None
    version_field = next(
        (f.definition_id for f in draft.custom_fields if f.name == QUOTE_VERSION_FIELD_NAME),
        None,
    )
    differences = invoice_differences(
        draft, customer_id, item_ids, invoice, quote_version_field=version_field
    )
    on_invoice["differences"] = differences
    if invoice.customer_id not in customer_ids:
        return finding(
            FindingKind.CUSTOMER_MISMATCH,
            "the invoice belongs to another customer than the patient's",
            **on_invoice,
        )
    if not differences:
        return finding(FindingKind.OK, "invoice equals the quote", **on_invoice)
    if differs_only_by_tax(draft, invoice, (d.field for d in differences)):
        # In step as the sync sees it (no update can change QBO's tax); the totals show it.
        reason = f"invoice equals the quote; QBO adds {money_text(sales_tax(invoice))} sales tax"
        return finding(FindingKind.OK, reason, **{**on_invoice, "differences": ()})
    if invoice.paid:
        return finding(FindingKind.PAID_DIFFERS, "differs, and a payment is applied", **on_invoice)
    return finding(FindingKind.DIFFERS, "differs from the quote", **on_invoice)


class _PatientCustomers:
    """Which customers are a patient: the exact DisplayName, or a name the canonical
    patient-id matcher (`customers.patient_pattern`) accepts — inactive customers and
    those QBO renamed "… (deleted)" included — exactly as the sync finds them."""

    def __init__(self, customers: Sequence[Customer], template: str) -> None:
        self.template = template
        self.by_name: dict[str, list[Customer]] = {}
        for customer in customers:
            bare = strip_deleted_suffix(customer.display_name)
            self.by_name.setdefault(customer_key(bare), []).append(customer)
        # Sorted by name, so the candidates of a LIKE 'prefix%' are one slice (thousands of
        # quotes against thousands of customers must not be a product of the two).
        self.sorted = sorted(
            ((customer_key(c.display_name), c) for c in customers), key=lambda pair: pair[0]
        )
        self.keys = [key for key, _ in self.sorted]

    def ids(self, patient_id: str, display_name: str) -> tuple[str, ...]:
        exact = self.by_name.get(customer_key(display_name), [])
        pattern = patient_pattern(self.template, patient_id)
        prefix = pattern.like.split("%", 1)[0].casefold()
        start = bisect_left(self.keys, prefix)
        by_id = []
        for key, customer in self.sorted[start:]:
            if not key.startswith(prefix):
                break
            if pattern.matches(customer.display_name):
                by_id.append(customer)
        return tuple(dict.fromkeys(c.id for c in [*exact, *by_id]))


def _latest(quotes: Iterable[QuoteInput]) -> list[QuoteInput]:
    chosen: dict[str, QuoteInput] = {}
    for quote in quotes:
        key = quote.number.strip()
        if key not in chosen or quote.version >= chosen[key].version:
            chosen[key] = quote
    return list(chosen.values())


def _unique_invoices(invoices: Iterable[Invoice]) -> list[Invoice]:
    return list({invoice.id: invoice for invoice in invoices}.values())


def _invoices_by_doc(invoices: Iterable[Invoice]) -> dict[str, list[Invoice]]:
    by_doc: dict[str, list[Invoice]] = {}
    for invoice in _unique_invoices(invoices):
        if invoice.doc_number is not None:
            by_doc.setdefault(invoice.doc_number.strip(), []).append(invoice)
    return by_doc


def _money(value: Decimal | None) -> str | None:
    return None if value is None else money_text(value)


# --- the shell ------------------------------------------------------------------------------


class FourDReads(Protocol):
    """What reconcile reads from 4D (`fourdqbo.emr.client.FourDClient`)."""

    @property
    def request_count(self) -> int: ...

    def list_quotes(self, since: datetime) -> list[QuoteSummary]: ...

    def get_quotes(self, numbers: Iterable[str]) -> Mapping[str, Quote | FourdqboError]: ...


class QBOReads(Protocol):
    """What reconcile reads from QBO (`fourdqbo.qbo.client.QBOClient`)."""

    @property
    def request_count(self) -> int: ...

    def invoices_dated_since(self, day: date) -> list[Invoice]: ...

    def all_customers(self, *, include_inactive: bool = True) -> list[Customer]: ...

    def find_invoices_by_doc_numbers(self, doc_numbers: Iterable[str]) -> list[Invoice]: ...


@dataclass
class Reconciler:
    """One reconcile: reads 4D and QBO in bulk and hands them to `reconcile_findings`.

    `item_ids` resolves the line kinds to QBO Item ids (one read; the engine's rule);
    `accepted` holds the acceptances by quote number, `ledger` reads the sync's last
    writes. Writes nothing, takes no lock.
    """

    settings: Settings
    fourd: FourDReads
    qbo: QBOReads
    item_ids: Callable[[], Mapping[LineKind, str]]
    accepted: Mapping[str, Acceptance] = field(default_factory=dict)
    progress: Progress = field(default_factory=SilentProgress)
    # The state store's `ledger(quotes)` read (no QBO request), to show each finding's
    # last write; None shows none.
    ledger: Callable[[Sequence[str]], Mapping[str, LedgerEntry]] | None = None

    def run(self, since: datetime) -> ReconcileResult:
        fourd_before, qbo_before = self.fourd.request_count, self.qbo.request_count
        self.progress.phase("listing changed quotes")
        summaries: dict[str, QuoteSummary] = {}
        for summary in self.fourd.list_quotes(since):
            summaries.setdefault(summary.number, summary)
        # Only completed quotes need their body (to build the draft); a summary tells
        # the status, Version and patient of the others.
        completed = [n for n, s in summaries.items() if s.status_id == STATUS_COMPLETED]
        self.progress.window(len(completed))
        self.progress.phase("fetching quotes")
        fetched = self.fourd.get_quotes(completed) if completed else {}
        self.progress.quotes_done(len(completed))
        rules = MappingRules.from_settings(self.settings)
        inputs = [_input(s, fetched.get(n), rules) for n, s in summaries.items()]

        self.progress.phase("reading QBO")
        item_ids = self.item_ids() if any(i.draft is not None for i in inputs) else {}
        day = local_date(since, self.settings.sync_timezone)
        dated = self.qbo.invoices_dated_since(day)
        have = {(i.doc_number or "").strip() for i in dated}
        rest = [n for n in summaries if n.strip() not in have]
        older = self.qbo.find_invoices_by_doc_numbers(rest) if rest else []
        customers = (
            self.qbo.all_customers(include_inactive=True)
            if any(i.draft is not None for i in inputs)
            else []
        )
        # An invoice dated on the first day may belong to a quote 4D last changed just
        # before `since`: ask 4D about those few before calling them not from 4D.
        first_day = _unique(
            (i.doc_number or "").strip()
            for i in dated
            if i.txn_date == day and (i.doc_number or "").strip() not in summaries
        )
        first_day = [n for n in first_day if _is_quote_number(n)]
        known = []
        if first_day:
            answers = self.fourd.get_quotes(first_day)
            known = [n for n, answer in answers.items() if not isinstance(answer, FourdqboError)]
        result = reconcile_findings(
            inputs,
            [*dated, *older],
            customers,
            item_ids,
            self.accepted,
            self.settings.customer_name_template,
            since,
            timezone=self.settings.sync_timezone,
            known_elsewhere=known,
            ledger=self.ledger(list(summaries)) if self.ledger is not None and summaries else {},
        )
        requests = {
            "fourd": self.fourd.request_count - fourd_before,
            "qbo": self.qbo.request_count - qbo_before,
        }
        return replace(result, requests=requests)


def acceptances_of(state: Any) -> dict[str, Acceptance]:
    """The acceptances the state store holds, by quote number ({} before stores have them)."""
    read = getattr(state, "acceptances", None)
    if read is None:
        return {}
    found = read()
    if isinstance(found, Mapping):
        return {str(k): v for k, v in found.items()}
    return {a.quote: a for a in found}


def _input(
    summary: QuoteSummary, fetched: Quote | FourdqboError | None, rules: MappingRules
) -> QuoteInput:
    if isinstance(fetched, FourdqboError):
        return QuoteInput(
            summary.number,
            summary.version,
            summary.status_id,
            summary.patient_id,
            None,
            error=str(fetched),
        )
    if fetched is None:
        return QuoteInput(
            summary.number, summary.version, summary.status_id, summary.patient_id, None
        )
    draft: InvoiceDraft | None = None
    error = None
    if fetched.status_id == STATUS_COMPLETED:
        try:
            draft = map_quote(fetched, rules)
        except MappingError as exc:
            error = str(exc)
    return QuoteInput(
        fetched.number, fetched.version, fetched.status_id, fetched.patient_id, draft, error=error
    )


def _is_quote_number(text: str) -> bool:
    try:
        quote_number(text)
    except RecordError:
        return False
    return True


def _unique(values: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(v for v in values if v))


__all__ = [
    "FIXABLE",
    "SETTLED",
    "Finding",
    "FindingKind",
    "ForeignInvoice",
    "ReconcileResult",
    "Reconciler",
    "acceptances_of",
    "fix_quotes",
    "is_voided",
    "patient_customer_ids",
    "reconcile_findings",
]
