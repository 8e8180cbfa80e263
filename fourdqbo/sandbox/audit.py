"""Does a sandbox QBO company match its 4D practice? The convergence check.

Used by the integration tests, the chaos suite and the benchmarks: after sync runs (with
faults, kills, restarts), every completed quote must have exactly one invoice equal to
its draft, no other quote an invoice (unless a payment makes it a conflict), and no two
customers share a DisplayName.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from fourdqbo import jsonio
from fourdqbo.config import Settings
from fourdqbo.emr.records import Quote
from fourdqbo.qbo.records import Invoice
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
    names = Counter(customer_key(c["DisplayName"]) for c in customers)
    result.duplicate_customers = sorted(name for name, n in names.items() if n > 1)
    by_name = {customer_key(c["DisplayName"]): str(c["Id"]) for c in customers}
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
            if invoice is not None and not (invoice.total == 0 and invoice.balance == 0):
                result.stray.append(record.number)
            continue
        patient = practice.patient(record.patient_id)
        quote = Quote.parse(jsonio.loads(jsonio.dumps(record.full_json(patient.name))))
        draft = map_quote(quote, rules)
        if invoice is None:
            result.missing.append(record.number)
            continue
        customer_id = by_name.get(customer_key(draft.customer_name))
        if customer_id is None or not draft_matches(draft, customer_id, item_ids, invoice):
            result.mismatched.append(record.number)
    return result
