"""Does a sandbox QBO company match its 4D practice? The convergence check.

Used by the integration tests, the chaos suite and the benchmarks: after sync runs (with
faults, kills, restarts), every completed quote must have exactly one invoice equal to
its draft, billed to a customer of its patient, no other quote a live invoice (unless a
payment makes it a conflict), and no two customers share a name.

Shapes as recorded QBO answers have them (API-NOTES.md): an inactive customer is named
"<name> (deleted)" (or "(Deleted)"), so names are compared without that suffix, and a
patient's customer is any customer whose name fits CUSTOMER_NAME_TEMPLATE with the
patient's id (its initials may have changed since). A voided invoice is recognised by
PrivateNote starting with "Voided" AND zero amounts: a voided invoice updated later
carries amounts again and is judged like any other.

People work in QBO too (DESIGN.md 0.2). A scenario that plays the bookkeeper tells the
audit what it did (`HandChange` by quote number) and which items the sync's state lists as
needing a person; the audit then says, from the books alone, whether each hand change was
left as the person made it and reported with the right kind (`edited_in_qbo`,
`deleted_in_qbo`; none for a payment, an email or a note), or, with `repaired=True`
(SYNC_QBO_EDITS=revert, SYNC_QBO_DELETES=recreate), brought back to the quote. It knows
nothing of how the sync decides: only what the person did and what the books hold.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from fourdqbo import jsonio
from fourdqbo.config import Settings
from fourdqbo.emr.records import Quote
from fourdqbo.qbo.records import Invoice
from fourdqbo.sandbox.qbo import VOIDED_NOTE, plain_name
from fourdqbo.sync.mapping import LineKind, MappingRules, draft_matches, map_quote
from fourdqbo.sync.planning import customer_key

# What a person may do to an invoice in QBO, and the kind of item each leaves when the
# sync reports rather than repairs it (None: nothing needs a person, it is no change to
# what the sync writes).
HandKind = Literal["edited", "deleted", "voided", "paid", "emailed", "noted"]
REPORTED_AS: dict[str, str | None] = {
    "edited": "edited_in_qbo",
    "deleted": "deleted_in_qbo",
    "voided": "deleted_in_qbo",
    "paid": None,
    "emailed": None,
    "noted": None,
}


@dataclass(frozen=True)
class HandChange:
    """What a person did to the invoice of a quote in QBO, as the scenario that did it
    knows: the invoice and its SyncToken right after the change (None once deleted)."""

    kind: HandKind
    invoice_id: str
    sync_token: str | None


@dataclass
class Audit:
    duplicates: list[str] = field(default_factory=list)  # DocNumbers with 2+ invoices
    missing: list[str] = field(default_factory=list)  # completed quotes without an invoice
    mismatched: list[str] = field(default_factory=list)  # invoice differs from the draft
    stray: list[str] = field(default_factory=list)  # unpaid invoice of a non-completed quote
    duplicate_customers: list[str] = field(default_factory=list)
    paid: list[str] = field(default_factory=list)  # left alone on purpose (conflicts)
    # A completed quote whose invoice a person voided: the sync reports it and leaves it
    # (DESIGN.md 0.2, deleted_in_qbo), so it does not count against convergence.
    voided: list[str] = field(default_factory=list)
    # Hand changes (only when the audit was told of them):
    hand_changes: int = 0
    reported: list[str] = field(default_factory=list)  # left as made, item of the right kind
    repaired: list[str] = field(default_factory=list)  # brought back to the quote
    quiet: list[str] = field(default_factory=list)  # payment/email/note: nothing to report
    undone: list[str] = field(default_factory=list)  # the sync wrote over a person's change
    unreported: list[str] = field(default_factory=list)  # left, but no item of the right kind
    # Items needing a person that nothing explains (not a hand change of that kind, not a
    # paid invoice that differs): "quote:kind".
    unexplained: list[str] = field(default_factory=list)

    @property
    def converged(self) -> bool:
        return not (
            self.duplicates
            or self.missing
            or self.mismatched
            or self.stray
            or self.duplicate_customers
            or self.undone
            or self.unreported
            or self.unexplained
        )

    def summary(self) -> str:
        text = (
            f"{len(self.duplicates)} duplicates, {len(self.mismatched)} mismatches, "
            f"{len(self.missing)} missing, {len(self.stray)} stray, "
            f"{len(self.duplicate_customers)} duplicate customers"
        )
        if self.hand_changes:
            text += (
                f"; {self.hand_changes} hand changes: {len(self.reported)} reported, "
                f"{len(self.repaired)} repaired, {len(self.quiet)} needing nobody, "
                f"{len(self.undone)} undone, {len(self.unreported)} unreported, "
                f"{len(self.unexplained)} unexplained items"
            )
        return text


def audit(
    sandbox: object,
    settings: Settings,
    hand_changes: Mapping[str, HandChange] | None = None,
    open_items: Mapping[str, str] | None = None,
    *,
    repaired: bool = False,
) -> Audit:
    """Compare the sandbox's company with what its practice says it should hold.

    `hand_changes` (quote number -> what a person did to its invoice) and `open_items`
    (quote number -> kind of the item the sync's state lists) judge the people's side:
    reported (`repaired=False`) or repaired (`repaired=True`), see the module docstring.
    A quote with a hand change must not have changed in 4D since (the scenario's rule).
    """
    hand = dict(hand_changes or {})
    items = dict(open_items or {})
    practice = sandbox.practice  # type: ignore[attr-defined]
    company = sandbox.company  # type: ignore[attr-defined]
    rules = MappingRules.from_settings(settings)
    by_name = {item["Name"]: str(item["Id"]) for item in company.items()}
    item_ids = {
        LineKind.PROCEDURE: by_name[settings.qbo_item_procedure],
        LineKind.SUPPLIES: by_name[settings.qbo_item_supplies],
        LineKind.ANESTHESIA: by_name[settings.qbo_item_anesthesia],
        LineKind.FACILITY: by_name[settings.qbo_item_facility],
    }
    customers = company.customers(include_inactive=True)
    result = Audit(hand_changes=len(hand))
    names = Counter(customer_key(plain_name(c["DisplayName"])) for c in customers)
    result.duplicate_customers = sorted(name for name, n in names.items() if n > 1)
    for record in practice.quotes():
        invoices = [Invoice.parse(raw) for raw in company.invoices_by_doc(record.number)]
        change = hand.get(record.number)
        if change is not None and not repaired and _left_as_made(change, invoices, result):
            kind = REPORTED_AS[change.kind]
            if kind is None or items.get(record.number) == kind:
                (result.quiet if kind is None else result.reported).append(record.number)
            else:
                result.unreported.append(record.number)
            if kind is not None:
                continue  # what the person left is judged, not the quote's draft
        if len(invoices) > 1:
            result.duplicates.append(record.number)
            continue
        invoice = invoices[0] if invoices else None
        hand_paid = change is not None and change.kind == "paid"
        if invoice is not None and invoice.paid and not hand_paid:
            result.paid.append(record.number)
            continue
        if record.status_id != 4:
            if invoice is not None and not is_voided(invoice.raw):
                result.stray.append(record.number)
            continue
        if invoice is None:
            result.missing.append(record.number)
            continue
        if is_voided(invoice.raw):
            result.voided.append(record.number)
            continue
        patient = practice.patient(record.patient_id)
        quote = Quote.parse(jsonio.loads(jsonio.dumps(record.full_json(patient.name))))
        draft = map_quote(quote, rules)
        theirs = patient_customers(customers, str(record.patient_id), rules.customer_name_template)
        if invoice.customer_id not in theirs or not draft_matches(
            draft, invoice.customer_id, item_ids, invoice
        ):
            result.mismatched.append(record.number)
        elif change is not None and repaired:
            kind = REPORTED_AS[change.kind]
            (result.quiet if kind is None else result.repaired).append(record.number)
    for number, kind in sorted(items.items()):
        change = hand.get(number)
        if change is not None and not repaired and REPORTED_AS[change.kind] == kind:
            continue
        if kind == "paid" and number in result.paid:
            continue  # a payment on an invoice that differs: the sync's documented conflict
        result.unexplained.append(f"{number}:{kind}")
    return result


def _left_as_made(change: HandChange, invoices: list[Invoice], result: Audit) -> bool:
    """Whether the books still hold what the person left; if not, the change was undone
    (noted in `result.undone`). A payment, an email or a note leaves the invoice for the
    sync to keep equal to the quote, so only its presence is checked here."""
    number = ""
    if invoices:
        number = invoices[0].doc_number or ""
    if change.kind == "deleted":
        if not invoices:
            return True
        result.undone.append(number)  # re-created while the person's delete stood
        return False
    same = [i for i in invoices if i.id == change.invoice_id]
    if change.kind in ("paid", "emailed", "noted"):
        return True
    if len(invoices) == 1 and same and same[0].sync_token == change.sync_token:
        return True
    result.undone.append(number or change.invoice_id)
    return False


def is_voided(invoice: Mapping[str, Any]) -> bool:
    """Voided as QBO shows it: PrivateNote starting "Voided" and nothing left to pay."""
    note = str(invoice.get("PrivateNote") or "")
    return (
        note.startswith(VOIDED_NOTE)
        and _zero(invoice.get("TotalAmt"))
        and _zero(invoice.get("Balance"))
        and all(_zero(line.get("Amount")) for line in invoice.get("Line") or [])
    )


def patient_customers(customers: list[dict[str, Any]], patient_id: str, template: str) -> set[str]:
    """Ids of the customers whose name, without QBO's inactive suffix, fits the template
    with this patient's id (any text where the other placeholders are)."""
    pattern = "".join(
        re.escape(patient_id) if part == "{patient_id}" else ".*" if part.startswith("{")
        else re.escape(part)
        for part in re.split(r"(\{[a-z_]+\})", template.strip())
    )  # fmt: skip
    fits = re.compile(pattern, re.IGNORECASE | re.DOTALL)
    return {str(c["Id"]) for c in customers if fits.fullmatch(plain_name(c["DisplayName"]).strip())}


def _zero(value: Any) -> bool:
    try:
        return float(value or 0) == 0
    except (TypeError, ValueError):
        return False
