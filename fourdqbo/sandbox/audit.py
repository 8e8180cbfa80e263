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
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from fourdqbo import jsonio
from fourdqbo.config import Settings
from fourdqbo.emr.records import Quote
from fourdqbo.qbo.records import Invoice
from fourdqbo.sandbox.qbo import VOIDED_NOTE, plain_name
from fourdqbo.sync.mapping import LineKind, MappingRules, draft_matches, map_quote
from fourdqbo.sync.planning import customer_key


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

    @property
    def converged(self) -> bool:
        return not (
            self.duplicates
            or self.missing
            or self.mismatched
            or self.stray
            or self.duplicate_customers
        )

    def summary(self) -> str:
        return (
            f"{len(self.duplicates)} duplicates, {len(self.mismatched)} mismatches, "
            f"{len(self.missing)} missing, {len(self.stray)} stray, "
            f"{len(self.duplicate_customers)} duplicate customers"
        )


def audit(sandbox: object, settings: Settings) -> Audit:
    """Compare the sandbox's company with what its practice says it should hold."""
    practice = sandbox.practice  # type: ignore[attr-defined]
    company = sandbox.company  # type: ignore[attr-defined]
    rules = MappingRules.from_settings(settings)
    items = {item["Name"]: str(item["Id"]) for item in company.items()}
    item_ids = {
        LineKind.PROCEDURE: items[settings.qbo_item_procedure],
        LineKind.SUPPLIES: items[settings.qbo_item_supplies],
        LineKind.ANESTHESIA: items[settings.qbo_item_anesthesia],
        LineKind.FACILITY: items[settings.qbo_item_facility],
    }
    customers = company.customers(include_inactive=True)
    result = Audit()
    names = Counter(customer_key(plain_name(c["DisplayName"])) for c in customers)
    result.duplicate_customers = sorted(name for name, n in names.items() if n > 1)
    for record in practice.quotes():
        invoices = [Invoice.parse(raw) for raw in company.invoices_by_doc(record.number)]
        if len(invoices) > 1:
            result.duplicates.append(record.number)
            continue
        invoice = invoices[0] if invoices else None
        if invoice is not None and invoice.paid:
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
    return result


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
