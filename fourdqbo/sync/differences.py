"""The one definition of "what differs" between a QBO invoice and a quote's draft (pure).

`invoice_differences` compares, field by field, what the sync owns on an invoice with
what the draft says, and names each difference with both values as text: the planner
(through `mapping.draft_matches` / `mapping.draft_differences`), `sync conflicts` and
`reconcile` all read this one answer, so "equal" and "what differs" can never disagree.

Compared: DocNumber, TxnDate, CustomerRef (ids), TotalAmt (against the draft's total),
each SalesItemLineDetail line by position (Description, Amount, Qty, UnitPrice, Item; a
missing or extra line as one difference), and the custom fields the draft sets (by their
Name; a field QBO leaves out counts as empty). Numbers compare by value (100 == 100.00).
Ignored: QBO's SubTotal line, Id, SyncToken, Balance, MetaData and other custom fields.
A TotalAmt that differs only by the sales tax QBO computes (`differs_only_by_tax`) is
still named here, but the planner and reconcile count such an invoice as in step.
Values are ids, dates, amounts, descriptions and field values the sync itself writes;
never a patient's name.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from decimal import Decimal

from fourdqbo.money import cents
from fourdqbo.qbo.records import Invoice, InvoiceLine
from fourdqbo.state.items import Difference
from fourdqbo.sync.mapping import (
    QUOTE_VERSION_FIELD_NAME,
    DraftLine,
    InvoiceDraft,
    LineKind,
    item_id_of,
)


def invoice_differences(
    draft: InvoiceDraft,
    customer_id: str | None,
    item_ids: Mapping[LineKind, str],
    invoice: Invoice,
    *,
    quote_version_field: str | None,
) -> tuple[Difference, ...]:
    """Every field the sync owns in which `invoice` differs from `draft`, in invoice order.

    Empty exactly when the invoice says what the draft says. `customer_id` None means the
    patient has no customer yet, so CustomerRef differs. `quote_version_field` is the
    DefinitionId of the "Quote Version" custom field to compare; None leaves the Version
    out (for a caller asking whether a person edited an invoice written from another
    Version of the quote). Raises LookupError when `item_ids` lacks a kind a line uses.
    """
    wanted_items = [item_id_of(item_ids, line.kind) for line in draft.lines]
    found: list[Difference] = []
    if invoice.doc_number != draft.doc_number:
        found.append(Difference("DocNumber", invoice.doc_number, draft.doc_number))
    if invoice.txn_date != draft.txn_date:
        found.append(
            Difference(
                "TxnDate",
                None if invoice.txn_date is None else invoice.txn_date.isoformat(),
                draft.txn_date.isoformat(),
            )
        )
    if customer_id is None or invoice.customer_id != customer_id:
        found.append(Difference("CustomerRef", invoice.customer_id, customer_id))
    if invoice.total != draft.total:
        found.append(Difference("TotalAmt", money_text(invoice.total), money_text(draft.total)))
    for number in range(1, max(len(draft.lines), len(invoice.lines)) + 1):
        line = draft.lines[number - 1] if number <= len(draft.lines) else None
        existing = invoice.lines[number - 1] if number <= len(invoice.lines) else None
        if line is None:
            assert existing is not None
            found.append(Difference(f"Line {number}", _line_text(existing), None))
        elif existing is None:
            found.append(Difference(f"Line {number}", None, _line_text(line)))
        else:
            found.extend(_line_differences(number, line, wanted_items[number - 1], existing))
    for field in draft.custom_fields:
        if field.name == QUOTE_VERSION_FIELD_NAME and field.definition_id != quote_version_field:
            continue
        value = invoice.custom_fields.get(field.definition_id, "")
        if value != field.value:
            found.append(Difference(f"CustomField {field.name}", value, field.value))
    return tuple(found)


def sales_tax(invoice: Invoice) -> Decimal:
    """The invoice's sales tax (`TxnTaxDetail.TotalTax`), which QBO computes; 0 without."""
    detail = invoice.raw.get("TxnTaxDetail")
    value = detail.get("TotalTax") if isinstance(detail, Mapping) else None
    try:
        return Decimal(str(value)) if value is not None else Decimal(0)
    except ArithmeticError:
        return Decimal(0)


def differs_only_by_tax(draft: InvoiceDraft, invoice: Invoice, fields: Iterable[str]) -> bool:
    """Whether the only difference is a TotalAmt that QBO's sales tax explains exactly.

    `fields` are difference field names ("TotalAmt", "Line 1 Amount", …). The sync owns
    the lines, not the total: QBO adds the tax again after every update, so such an
    invoice is in step with its quote, and writing it would be repeated forever.
    """
    names = {name.split(" ", 1)[0] for name in fields}
    tax = sales_tax(invoice)
    return names == {"TotalAmt"} and tax != 0 and invoice.total == draft.total + tax


def money_text(value: Decimal) -> str:
    """An amount as a decimal string with two places ("1250.00"); an amount with finer
    digits keeps them, so two different values never print alike."""
    rounded = cents(value)
    return f"{rounded:.2f}" if rounded == value else _number_text(value)


def _line_differences(
    number: int, line: DraftLine, item_id: str, existing: InvoiceLine
) -> list[Difference]:
    where = f"Line {number}"
    found: list[Difference] = []
    if existing.description != line.description:
        found.append(Difference(f"{where} Description", existing.description, line.description))
    if existing.amount != line.amount:
        found.append(
            Difference(f"{where} Amount", money_text(existing.amount), money_text(line.amount))
        )
    if line.qty is None and line.unit_price is None:
        # We sent neither; QBO may answer with Qty 1 and UnitPrice = Amount filled in.
        if existing.qty not in (None, 1):
            found.append(Difference(f"{where} Qty", _optional(existing.qty, _number_text), None))
        if existing.unit_price not in (None, line.amount):
            found.append(
                Difference(f"{where} UnitPrice", _optional(existing.unit_price, money_text), None)
            )
    else:
        for name, qbo, quote, text in (
            ("Qty", existing.qty, line.qty, _number_text),
            ("UnitPrice", existing.unit_price, line.unit_price, money_text),
        ):
            if qbo != quote:
                found.append(
                    Difference(f"{where} {name}", _optional(qbo, text), _optional(quote, text))
                )
    if existing.item_id != item_id:
        found.append(Difference(f"{where} Item", existing.item_id, item_id))
    return found


def _line_text(line: DraftLine | InvoiceLine) -> str:
    """A whole line in one value, for a line only one side has ("Rhinoplasty 7650.00")."""
    amount = money_text(line.amount)
    return f"{line.description} {amount}" if line.description else amount


def _number_text(value: Decimal) -> str:
    """A quantity by its value: 2.000 -> "2", 1.50 -> "1.5" (never an exponent)."""
    normal = value.normalize()
    return f"{normal:f}"


def _optional(value: Decimal | None, text: Callable[[Decimal], str]) -> str | None:
    return None if value is None else text(value)


__all__ = ["differs_only_by_tax", "invoice_differences", "money_text", "sales_tax"]
