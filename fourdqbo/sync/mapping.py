"""Mapping a 4D quote to a QBO invoice draft, and a draft to the QBO JSON we write (pure).

DESIGN.md "Sync semantics" point 5 lives here: DocNumber, TxnDate in the practice's time
zone, custom fields, the order and kind of the lines, the customer DisplayName. Also
"the invoice in QBO still says what the draft says" (`draft_matches`) and the names of
the fields that differ, both read from `fourdqbo.sync.differences`, the one definition
of what differs. No I/O: data in, data out.

Money is Decimal throughout and rounded half-up to cents by `fourdqbo.money.cents`; the
rounding rules that keep QBO's `Amount == Qty × UnitPrice` check and the invoice total
exact are documented on `_allocate_cents` and `_supply_line`.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from decimal import ROUND_FLOOR, Decimal, Inexact, localcontext
from enum import StrEnum
from typing import Any

from fourdqbo.config import Settings
from fourdqbo.emr.records import Quote, Supply
from fourdqbo.money import CENT, ZERO, cents
from fourdqbo.qbo.records import Invoice
from fourdqbo.state.items import Difference
from fourdqbo.timefmt import load_zone, local_date

# QBO limits on what we write.
DESCRIPTION_MAX_CHARS = 4000
DISPLAY_NAME_MAX_CHARS = 500
CUSTOM_FIELD_MAX_CHARS = 31  # QBO's limit on a sales-form string custom field
# We send a supply's own Qty only when it has at most this many decimal places: we do not
# rely on QBO keeping finer quantities, and a Qty it rounded would no longer multiply out
# to the Amount we sent.
QTY_MAX_PLACES = 5

QUOTE_VERSION_FIELD_NAME = "Quote Version"
QUOTED_BY_FIELD_NAME = "Quoted By"
ANESTHESIA_DESCRIPTION = "Anesthesia Fee"

# Exact arithmetic on the quote's amounts: enough digits that no sum or product of sane
# amounts rounds; a quote whose amounts would need more is refused, never silently rounded.
_EXACT_DIGITS = 80
# A QBO DisplayName may not hold these (":" separates a sub-customer from its parent).
_DISPLAY_NAME_FORBIDDEN = frozenset(":")


class LineKind(StrEnum):
    """What a line bills; each kind has its own QBO product/service item."""

    PROCEDURE = "procedure"
    SUPPLIES = "supplies"
    ANESTHESIA = "anesthesia"
    FACILITY = "facility"


class MappingError(ValueError):
    """A quote that cannot become an invoice. The message names the quote and the field,
    never patient data."""


@dataclass(frozen=True)
class MappingRules:
    """The settings the mapping needs, nothing else."""

    timezone: str = "America/New_York"
    customer_name_template: str = "{patient_id}.{initials}"
    facility_fee_description: str = "Facility Fee"
    quote_version_field: str = "1"  # DefinitionId; empty turns the field off
    quoted_by_field: str = "2"

    def __post_init__(self) -> None:
        # Fail once, when the rules are built, rather than once per quote.
        load_zone(self.timezone)
        try:
            self.customer_name_template.format(patient_id="1", initials="AB")
        except (KeyError, IndexError, ValueError):
            raise ValueError(
                "customer name template may use only {patient_id} and {initials}"
            ) from None

    @classmethod
    def from_settings(cls, settings: Settings) -> MappingRules:
        return cls(
            timezone=settings.sync_timezone,
            customer_name_template=settings.customer_name_template,
            facility_fee_description=settings.facility_fee_description,
            quote_version_field=settings.qbo_custom_field_quote_version,
            quoted_by_field=settings.qbo_custom_field_quoted_by,
        )


@dataclass(frozen=True)
class DraftLine:
    kind: LineKind
    description: str
    amount: Decimal
    qty: Decimal | None = None
    unit_price: Decimal | None = None


@dataclass(frozen=True)
class CustomFieldValue:
    definition_id: str
    name: str
    value: str


@dataclass(frozen=True)
class InvoiceDraft:
    """The invoice a completed quote should have, before customer and item ids are known."""

    doc_number: str
    version: int
    txn_date: date
    patient_id: str
    customer_name: str
    lines: tuple[DraftLine, ...]
    custom_fields: tuple[CustomFieldValue, ...]

    @property
    def total(self) -> Decimal:
        return sum((line.amount for line in self.lines), ZERO)


def initials(name: str | None) -> str:
    """First letter of each word holding no digit, upper-cased ("Jane Q Doe" -> "JQD").

    A word's first letter is its first alphabetic character ("O'Brien" -> "O",
    "(Jim)" -> "J"); a word without letters adds nothing. The name is NFC-normalised first
    so that an accented capital written as letter + combining mark stays one letter.
    """
    if not name:
        return ""
    letters = []
    for word in unicodedata.normalize("NFC", name).split():
        if any(ch.isdigit() for ch in word):
            continue
        first = next((ch for ch in word if ch.isalpha()), None)
        if first is not None:
            letters.append(first.upper())
    return "".join(letters)


def customer_display_name(patient_id: str, patient_name: str | None, template: str) -> str:
    """The QBO customer DisplayName of a patient, from CUSTOMER_NAME_TEMPLATE.

    Surrounding whitespace is dropped (QBO trims it, and a name that differed only there
    would never match again). Raises MappingError for a name QBO would refuse.
    """
    name = template.format(patient_id=patient_id, initials=initials(patient_name)).strip()
    name = name[:DISPLAY_NAME_MAX_CHARS].rstrip()
    if not name:
        raise MappingError("customer DisplayName is empty")
    if any(ch in _DISPLAY_NAME_FORBIDDEN or unicodedata.category(ch) == "Cc" for ch in name):
        raise MappingError("customer DisplayName holds a colon or a control character")
    return name


def map_quote(quote: Quote, rules: MappingRules) -> InvoiceDraft:
    """The invoice draft of a quote (DESIGN.md point 5). Raises MappingError."""
    where = f"quote {quote.number}"
    patient_id = (quote.patient_id or "").strip()
    if not patient_id:
        raise MappingError(f"{where}: Patient.Id is missing")
    if quote.date is None:
        raise MappingError(f"{where}: PriceQuoteDate is missing")
    if quote.date.tzinfo is None:
        raise MappingError(f"{where}: PriceQuoteDate has no time zone")
    try:
        customer_name = customer_display_name(
            patient_id, quote.patient_name, rules.customer_name_template
        )
    except MappingError as exc:
        raise MappingError(f"{where}: {exc}") from None

    # (kind, description, exact value, supply) in invoice order; exact values are rounded
    # to cents together at the end so that the lines add up to the quote's total.
    pieces: list[tuple[LineKind, str, Decimal, Supply | None]] = []
    with localcontext() as exact:
        exact.prec = _EXACT_DIGITS
        exact.traps[Inexact] = True
        try:
            for index, procedure in enumerate(quote.procedures):
                field = f"Procedures[{index}]"
                _not_negative(procedure.amount, f"{where}: {field}.Amount")
                _not_negative(procedure.discount, f"{where}: {field}.DiscountAmount")
                net = procedure.amount - procedure.discount
                if net < 0:
                    raise MappingError(f"{where}: {field}.DiscountAmount exceeds its Amount")
                pieces.append((LineKind.PROCEDURE, procedure.name, net, None))
            for index, supply in enumerate(quote.supplies):
                if not supply.show_on_quote:
                    continue  # hidden supplies are the practice's cost, not billed
                field = f"Supplies[{index}]"
                _not_negative(supply.quantity, f"{where}: {field}.Quantity")
                _not_negative(supply.unit_cost, f"{where}: {field}.UnitCost")
                value = supply.quantity * supply.unit_cost
                pieces.append((LineKind.SUPPLIES, supply.title, value, supply))
            _not_negative(quote.anesthesia_amount, f"{where}: AnesthAmt")
            if quote.anesthesia_amount > 0:
                pieces.append(
                    (
                        LineKind.ANESTHESIA,
                        _anesthesia_description(quote),
                        quote.anesthesia_amount,
                        None,
                    )
                )
            _not_negative(quote.facility_amount, f"{where}: FacilityAmt")
            if quote.facility_amount > 0:
                pieces.append(
                    (LineKind.FACILITY, rules.facility_fee_description, quote.facility_amount, None)
                )
            values = [value for _, _, value, _ in pieces]
            exact_total = sum(values, ZERO)
        except Inexact:
            raise MappingError(f"{where}: amounts carry too many decimal places") from None
    if not pieces:
        # QBO refuses an invoice without lines; a quote with nothing on it is a data error.
        raise MappingError(f"{where}: no billable lines")
    amounts = _allocate_cents(values, exact_total)

    lines = []
    for (kind, description, _, supply), amount in zip(pieces, amounts, strict=True):
        text = _description(description)
        if supply is not None:
            lines.append(_supply_line(text, supply, amount))
        else:
            lines.append(DraftLine(kind=kind, description=text, amount=amount))

    return InvoiceDraft(
        doc_number=quote.number,
        version=quote.version,
        txn_date=local_date(quote.date, rules.timezone),
        patient_id=patient_id,
        customer_name=customer_name,
        lines=tuple(lines),
        custom_fields=_custom_fields(quote, rules),
    )


def invoice_payload(
    draft: InvoiceDraft, customer_id: str, item_ids: Mapping[LineKind, str]
) -> dict[str, Any]:
    """The QBO JSON body that creates the invoice (values Decimal: write with jsonio.dumps)."""
    body: dict[str, Any] = {
        "DocNumber": draft.doc_number,
        "TxnDate": draft.txn_date.isoformat(),
        "CustomerRef": {"value": customer_id},
        "Line": [_line_payload(line, item_ids) for line in draft.lines],
    }
    if draft.custom_fields:
        body["CustomField"] = [
            {
                "DefinitionId": field.definition_id,
                "Name": field.name,
                "Type": "StringType",
                "StringValue": field.value,
            }
            for field in draft.custom_fields
        ]
    return body


def update_payload(
    draft: InvoiceDraft,
    customer_id: str,
    item_ids: Mapping[LineKind, str],
    existing: Invoice,
) -> dict[str, Any]:
    """A sparse update of `existing` to the draft: only the fields we own are sent.

    `Line` replaces all of the invoice's lines (QBO keeps no line a sparse update omits), so
    lines added by hand in QBO are dropped; every other field of the invoice is left alone.
    """
    return {
        "Id": existing.id,
        "SyncToken": existing.sync_token,
        "sparse": True,
        **invoice_payload(draft, customer_id, item_ids),
    }


def draft_matches(
    draft: InvoiceDraft,
    customer_id: str,
    item_ids: Mapping[LineKind, str],
    existing: Invoice,
) -> bool:
    """True when `existing` says what the draft says, in the fields we own.

    The comparison is `fourdqbo.sync.differences.invoice_differences` (the one definition
    of what differs), with every custom field the draft sets, the Quote Version included.
    """
    return not _differences(draft, customer_id, item_ids, existing)


def draft_differences(
    draft: InvoiceDraft,
    customer_id: str | None,
    item_ids: Mapping[LineKind, str],
    existing: Invoice,
) -> list[str]:
    """The QBO field names in which `existing` differs from the draft (see `draft_matches`).

    For reports: names of fields only, never their values: "DocNumber", "TxnDate",
    "CustomerRef", "Line" (any line or their number) and "CustomField"; "TotalAmt" only
    when the lines agree and the total still differs (a discount or tax line added in
    QBO). `customer_id` None means the customer does not exist yet, so CustomerRef differs.
    """
    names: dict[str, None] = {}
    for difference in _differences(draft, customer_id, item_ids, existing):
        names.setdefault(difference.field.split(" ", 1)[0], None)
    if "TotalAmt" in names and "Line" in names:
        del names["TotalAmt"]  # the lines already say why the total differs
    order = ("DocNumber", "TxnDate", "CustomerRef", "Line", "TotalAmt", "CustomField")
    return [name for name in order if name in names]


def _differences(
    draft: InvoiceDraft,
    customer_id: str | None,
    item_ids: Mapping[LineKind, str],
    existing: Invoice,
) -> tuple[Difference, ...]:
    # Imported here because differences.py builds on this module's draft types.
    from fourdqbo.sync.differences import invoice_differences

    version_field = next(
        (f.definition_id for f in draft.custom_fields if f.name == QUOTE_VERSION_FIELD_NAME),
        None,
    )
    return invoice_differences(
        draft, customer_id, item_ids, existing, quote_version_field=version_field
    )


def _allocate_cents(values: Sequence[Decimal], exact_total: Decimal) -> list[Decimal]:
    """Round each exact line value to cents so the lines add up to the cents of their sum.

    Rounding every line half-up on its own can make the invoice total drift from the
    quote's total (two lines of 0.495 give 1.00 where the quote says 0.99). Instead each
    line gets its value rounded down, and the cents still missing to reach the half-up
    cents of the exact total go, one each, to the lines with the largest remainders
    (earlier line first on a tie). So every line is within a cent of its exact value, a
    lone fractional line is rounded half-up as usual, and a line that is already a whole
    number of cents (nearly all of them) is never touched.
    """
    with localcontext() as wide:
        wide.prec = _EXACT_DIGITS  # remainders of long decimals stay exact
        floors = [value.quantize(CENT, rounding=ROUND_FLOOR) for value in values]
        pennies = int((cents(exact_total) - sum(floors, ZERO)) / CENT)
        remainders = [value - floor for value, floor in zip(values, floors, strict=True)]
    by_remainder = sorted(range(len(values)), key=lambda i: (-remainders[i], i))
    amounts = list(floors)
    for index in by_remainder[:pennies]:
        amounts[index] += CENT
    return amounts


def _supply_line(description: str, supply: Supply, amount: Decimal) -> DraftLine:
    """A supply line whose Amount is exactly Qty × UnitPrice, as QBO insists.

    The rule: keep `UnitPrice` at whole cents and `Qty` as given, and send the quote's own
    `Qty` = Quantity and `UnitPrice` = UnitCost only when UnitCost is a whole number of
    cents, Quantity has at most QTY_MAX_PLACES decimals and their product equals the line's
    amount exactly (the usual case, e.g. 3 × 12.50 = 37.50). Otherwise - a unit cost in
    fractions of a cent, or a product with more than two decimals such as 1.5 × 0.33 -
    the product cannot be sent as an amount, and whether QBO would compare the rounded
    product with the amount is not something to bet an invoice on; so we send `Qty` = 1 and
    `UnitPrice` = Amount, which is exact under any comparison. The amount itself is the
    line's value rounded to cents (see `_allocate_cents`), so the invoice total is right.
    """
    quantity = supply.quantity
    unit_cost = supply.unit_cost
    with localcontext() as wide:
        wide.prec = _EXACT_DIGITS  # so that the product below is exact, never rounded
        fits = (
            cents(unit_cost) == unit_cost
            and _decimal_places(quantity) <= QTY_MAX_PLACES
            and quantity * unit_cost == amount
        )
    if fits:
        return DraftLine(
            kind=LineKind.SUPPLIES,
            description=description,
            amount=amount,
            qty=quantity,
            unit_price=cents(unit_cost),
        )
    return DraftLine(
        kind=LineKind.SUPPLIES,
        description=description,
        amount=amount,
        qty=Decimal(1),
        unit_price=amount,
    )


def _custom_fields(quote: Quote, rules: MappingRules) -> tuple[CustomFieldValue, ...]:
    fields = []
    if rules.quote_version_field:
        fields.append(
            CustomFieldValue(
                rules.quote_version_field, QUOTE_VERSION_FIELD_NAME, str(quote.version)
            )
        )
    if rules.quoted_by_field:
        author = quote.created_by.name if quote.created_by is not None else None
        fields.append(
            CustomFieldValue(
                rules.quoted_by_field,
                QUOTED_BY_FIELD_NAME,
                initials(author)[:CUSTOM_FIELD_MAX_CHARS],
            )
        )
    return tuple(fields)


def _anesthesia_description(quote: Quote) -> str:
    group = quote.anesthesia_group
    name = (group.name or "").strip() if group is not None else ""
    return f"{name} Fee" if name else ANESTHESIA_DESCRIPTION


def _description(text: str) -> str:
    # Stripped because QBO does not keep surrounding whitespace, and a description that
    # differed only there would look changed on every run.
    return text.strip()[:DESCRIPTION_MAX_CHARS].rstrip()


def _decimal_places(value: Decimal) -> int:
    """Digits after the point that matter (2.500 has one)."""
    exponent = value.normalize().as_tuple().exponent
    return max(0, -exponent) if isinstance(exponent, int) else 0


def _not_negative(value: Decimal, what: str) -> None:
    if value < 0:
        raise MappingError(f"{what} is negative")


def item_id_of(item_ids: Mapping[LineKind, str], kind: LineKind) -> str:
    """The QBO Item id for a line kind; LookupError when the run resolved none."""
    item_id = item_ids.get(kind)
    if not item_id:
        raise LookupError(f"no QBO item id for {kind} lines")
    return str(item_id)


def _line_payload(line: DraftLine, item_ids: Mapping[LineKind, str]) -> dict[str, Any]:
    detail: dict[str, Any] = {"ItemRef": {"value": item_id_of(item_ids, line.kind)}}
    if line.qty is not None:
        detail["Qty"] = line.qty
    if line.unit_price is not None:
        detail["UnitPrice"] = line.unit_price
    payload: dict[str, Any] = {"DetailType": "SalesItemLineDetail", "Amount": line.amount}
    if line.description:
        payload["Description"] = line.description
    payload["SalesItemLineDetail"] = detail
    return payload


__all__ = [
    "CustomFieldValue",
    "DraftLine",
    "InvoiceDraft",
    "LineKind",
    "MappingError",
    "MappingRules",
    "customer_display_name",
    "draft_differences",
    "draft_matches",
    "initials",
    "invoice_payload",
    "item_id_of",
    "map_quote",
    "update_payload",
]
