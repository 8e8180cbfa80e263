"""Typed, frozen records of 4D EMR objects, parsed tolerantly from JSON.

Parsing accepts missing and null fields and ignores extra ones; it raises `RecordError`
(a ValueError) only when a value we rely on is unusable. `PriceQuoteNo` is always a
string, amounts are Decimal, times aware UTC. Patient names live only in these records
(for the operator's own screens); they must never reach logs or the run history.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from fourdqbo.money import ZERO, to_decimal
from fourdqbo.timefmt import iso_z, parse_instant

STATUS_INACTIVE = 0
STATUS_ACTIVE = 1
STATUS_COMPLETED = 4
STATUS_NAMES = {STATUS_INACTIVE: "inactive", STATUS_ACTIVE: "active", STATUS_COMPLETED: "completed"}


class RecordError(ValueError):
    """A 4D record that cannot be used; the message names the field, never its content."""


@dataclass(frozen=True)
class Ref:
    """An `{Id, Name}` pair as 4D nests them."""

    id: str | None = None
    name: str | None = None

    @classmethod
    def parse(cls, value: Any) -> Ref | None:
        if value is None:
            return None
        if not isinstance(value, Mapping):
            raise RecordError("expected an {Id, Name} object")
        ident = value.get("Id")
        name = value.get("Name")
        return cls(
            id=None if ident is None else _scalar_text(ident, "Id"),
            name=_optional_text(name),
        )


@dataclass(frozen=True)
class Procedure:
    name: str
    amount: Decimal
    discount: Decimal


@dataclass(frozen=True)
class Supply:
    title: str
    quantity: Decimal
    unit_cost: Decimal
    show_on_quote: bool


@dataclass(frozen=True)
class QuoteSummary:
    """One row of `quotes/list`."""

    number: str
    version: int
    status_id: int | None
    status_name: str | None
    patient_id: str | None
    patient_name: str | None = field(default=None, repr=False)
    external_id: str | None = None
    procedure_description: str | None = field(default=None, repr=False)

    @property
    def status(self) -> str:
        return status_label(self.status_id)

    @classmethod
    def parse(cls, data: Any) -> QuoteSummary:
        obj = _object(data, "quote summary")
        status = Ref.parse(obj.get("PriceQuoteStatus")) or Ref()
        patient = Ref.parse(obj.get("Patient")) or Ref()
        external = obj.get("ExternalId")
        return cls(
            number=quote_number(obj.get("PriceQuoteNo")),
            version=_version(obj.get("Version")),
            status_id=_status_id(status.id),
            status_name=status.name,
            patient_id=patient.id,
            patient_name=patient.name,
            external_id=None if external is None else str(external),
            procedure_description=_optional_text(obj.get("ProcedureDescription")),
        )


@dataclass(frozen=True)
class Quote:
    """A full quote from `quotes?quoteNumber=`."""

    number: str
    version: int
    date: datetime | None
    status_id: int | None
    status_name: str | None
    patient_id: str | None
    patient_name: str | None = field(repr=False)
    created_by: Ref | None = field(repr=False)
    provider: Ref | None = field(repr=False)
    procedures: tuple[Procedure, ...]
    supplies: tuple[Supply, ...]
    anesthesia_amount: Decimal
    anesthesia_group: Ref | None
    facility_amount: Decimal
    total_amount: Decimal | None

    @property
    def status(self) -> str:
        return status_label(self.status_id)

    @classmethod
    def parse(cls, data: Any) -> Quote:
        obj = _object(data, "quote")
        status = Ref.parse(obj.get("PriceQuoteStatus")) or Ref()
        patient = Ref.parse(obj.get("Patient")) or Ref()
        raw_date = obj.get("PriceQuoteDate")
        try:
            when = None if raw_date in (None, "") else parse_instant(str(raw_date))
        except (ValueError, OverflowError):
            # OverflowError: a zone offset that pushes year 1 or 9999 out of range.
            raise RecordError("PriceQuoteDate is not an ISO 8601 UTC date-time") from None
        total = obj.get("TotalAmt")
        return cls(
            number=quote_number(obj.get("PriceQuoteNo")),
            version=_version(obj.get("Version")),
            date=when,
            status_id=_status_id(status.id),
            status_name=status.name,
            patient_id=patient.id,
            patient_name=patient.name,
            created_by=Ref.parse(obj.get("CreatedBy")),
            provider=Ref.parse(obj.get("Provider")),
            procedures=tuple(
                Procedure(
                    name=_optional_text(p.get("ProcedureName")) or "",
                    amount=_amount(p.get("Amount"), "Procedures.Amount"),
                    discount=_amount(p.get("DiscountAmount"), "Procedures.DiscountAmount"),
                )
                for p in _objects(obj.get("Procedures"), "Procedures")
            ),
            supplies=tuple(
                Supply(
                    title=_optional_text(s.get("ItemTitle")) or "",
                    quantity=_amount(s.get("Quantity"), "Supplies.Quantity"),
                    unit_cost=_amount(s.get("UnitCost"), "Supplies.UnitCost"),
                    show_on_quote=_flag(s.get("ShowOnQuote")),
                )
                for s in _objects(obj.get("Supplies"), "Supplies")
            ),
            anesthesia_amount=_amount(obj.get("AnesthAmt"), "AnesthAmt"),
            anesthesia_group=Ref.parse(obj.get("AnesthesiaGroup")),
            facility_amount=_amount(obj.get("FacilityAmt"), "FacilityAmt"),
            total_amount=None if total is None else _amount(total, "TotalAmt"),
        )


@dataclass(frozen=True)
class Patient:
    id: str
    name: str | None = field(repr=False)
    first_name: str | None = field(default=None, repr=False)
    last_name: str | None = field(default=None, repr=False)
    date_of_birth: str | None = field(default=None, repr=False)
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def parse(cls, data: Any) -> Patient:
        obj = _object(data, "patient")
        ident = _first(obj, "Id", "PatientId", "id", "patientId")
        if ident is None:
            raise RecordError("patient without an Id")
        first = _optional_text(_first(obj, "FirstName", "firstName", "Firstname"))
        last = _optional_text(_first(obj, "LastName", "lastName", "Lastname"))
        name = _optional_text(_first(obj, "Name", "FullName", "name"))
        if name is None and (first or last):
            name = " ".join(part for part in (first, last) if part)
        return cls(
            id=_scalar_text(ident, "Id"),
            name=name,
            first_name=first,
            last_name=last,
            date_of_birth=_optional_text(
                _first(obj, "DateOfBirth", "Dob", "DOB", "dob", "BirthDate")
            ),
            raw=dict(obj),
        )


@dataclass(frozen=True)
class Appointment:
    id: str | None
    start: str | None
    patient_id: str | None
    patient_name: str | None = field(repr=False)
    provider: str | None
    kind: str | None
    status: str | None
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def parse(cls, data: Any) -> Appointment:
        obj = _object(data, "appointment")
        patient = _nested_ref(obj.get("Patient"))
        provider = _nested_ref(obj.get("Provider"))
        ident = _first(obj, "Id", "AppointmentId", "id")
        return cls(
            id=None if ident is None else _scalar_text(ident, "Id"),
            start=_optional_text(_first(obj, "StartTime", "Start", "AppointmentDate", "Date")),
            patient_id=patient.id or _optional_text(obj.get("PatientId")),
            patient_name=patient.name or _optional_text(obj.get("PatientName")),
            provider=provider.name or _optional_text(obj.get("ProviderName")),
            kind=_optional_text(_first(obj, "AppointmentType", "Type", "Reason")),
            status=_optional_text(_nested_name(_first(obj, "Status", "AppointmentStatus"))),
            raw=dict(obj),
        )


@dataclass(frozen=True)
class Charge:
    id: str | None
    date: str | None
    patient_id: str | None
    patient_name: str | None = field(repr=False)
    code: str | None
    description: str | None = field(repr=False)
    amount: Decimal
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def parse(cls, data: Any) -> Charge:
        obj = _object(data, "charge")
        patient = _nested_ref(obj.get("Patient"))
        ident = _first(obj, "Id", "ChargeId", "id")
        return cls(
            id=None if ident is None else _scalar_text(ident, "Id"),
            date=_optional_text(_first(obj, "ServiceDate", "ChargeDate", "Date", "PostDate")),
            patient_id=patient.id or _optional_text(obj.get("PatientId")),
            patient_name=patient.name or _optional_text(obj.get("PatientName")),
            code=_optional_text(_first(obj, "Code", "ProcedureCode", "CptCode")),
            description=_optional_text(_first(obj, "Description", "ProcedureName")),
            # Charges may be negative (adjustments, refunds).
            amount=_amount(
                _first(obj, "Amount", "ChargeAmount", "Fee"), "Amount", allow_negative=True
            ),
            raw=dict(obj),
        )


def status_label(status_id: int | None) -> str:
    if status_id is None:
        return "unknown"
    return STATUS_NAMES.get(status_id, f"unknown({status_id})")


def quote_number(value: Any) -> str:
    """`PriceQuoteNo` comes as a number or a string; we always use the string.

    Numbers must be whole (`10023` and `10023.0` both give "10023"); strings are kept as
    given, trimmed. The result is safe as a QBO DocNumber (at most 21 characters) and
    inside a quoted query value (no quotes, backslashes or control characters).
    """
    if value is None or isinstance(value, bool):
        raise RecordError("quote without PriceQuoteNo")
    if isinstance(value, float | Decimal | int):
        value = _whole(value, "PriceQuoteNo", digits=21)
    elif not isinstance(value, str):
        raise RecordError("PriceQuoteNo is not a string or number")
    text = value.strip() if isinstance(value, str) else str(value)
    if not text or len(text) > 21 or any(ch in text for ch in "'\\\"") or not text.isprintable():
        raise RecordError("PriceQuoteNo is empty or not a document number")
    return text


def record_document(record: Any) -> dict[str, Any]:
    """A record as a plain dict for `--json` output: field names as keys, Decimal kept exact,
    times as UTC `...Z` strings, and the status label next to a quote's status id.
    """
    document = {
        item.name: _plain(getattr(record, item.name)) for item in dataclasses.fields(record)
    }
    if isinstance(record, Quote | QuoteSummary):
        document["status"] = record.status
    return document


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {item.name: _plain(getattr(value, item.name)) for item in dataclasses.fields(value)}
    if isinstance(value, datetime):
        return iso_z(value)
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, float | Decimal):
        # Raw 4D fields are passed through untouched, so they may hold what JSON cannot
        # write (a NaN/Infinity literal) or an exponent that would print a billion digits.
        number = Decimal(repr(value)) if isinstance(value, float) else value
        if not number.is_finite() or abs(number.adjusted()) > 100:
            return str(value)
    return value


def _whole(value: float | Decimal | int, what: str, *, digits: int) -> int:
    """A JSON number that must be a whole number of at most `digits` digits.

    Bounded before converting, so a hostile `1e999999999` cannot make a giant int.
    """
    if isinstance(value, int):
        number = value
    else:
        decimal = Decimal(repr(value)) if isinstance(value, float) else value
        if not decimal.is_finite() or decimal.adjusted() >= digits:
            raise RecordError(f"{what} is not a whole number in range")
        if decimal != decimal.to_integral_value():
            raise RecordError(f"{what} is not a whole number")
        number = int(decimal)
    if abs(number) >= 10**digits:
        raise RecordError(f"{what} is out of range")
    return number


def _version(value: Any) -> int:
    if value is None:
        return 0
    if isinstance(value, bool):
        raise RecordError("Version is not a whole number")
    if isinstance(value, str):
        try:
            value = Decimal(value.strip())
        except ArithmeticError:
            raise RecordError("Version is not a whole number") from None
    if not isinstance(value, int | float | Decimal):
        raise RecordError("Version is not a whole number")
    number = _whole(value, "Version", digits=10)
    if number < 0 or number > 10**9:
        raise RecordError("Version is out of range")
    return number


def _status_id(value: str | None) -> int | None:
    if value is None:
        return None
    text = value.strip()
    if text.isascii() and text.lstrip("-").isdigit() and len(text) < 10:
        return int(text)
    return -1  # present but not a whole number: an unknown status, skipped by the planner


def _amount(value: Any, field_name: str, *, allow_negative: bool = False) -> Decimal:
    try:
        return to_decimal(value, field_name, allow_negative=allow_negative)
    except ValueError as exc:
        raise RecordError(str(exc)) from None
    except ArithmeticError:
        # decimal.Overflow: JSON such as 1e999999999 parses to a Decimal beyond the context.
        raise RecordError(f"{field_name} is out of range") from None


def _flag(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int | Decimal):
        return value != 0
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1", "yes", "y")
    return False


def _object(data: Any, what: str) -> Mapping[str, Any]:
    if not isinstance(data, Mapping):
        raise RecordError(f"{what} is not a JSON object")
    return data


def _objects(value: Any, what: str) -> list[Mapping[str, Any]]:
    if value is None:
        return []
    if not isinstance(value, list | tuple):
        raise RecordError(f"{what} is not a list")
    if not all(isinstance(item, Mapping) for item in value):
        raise RecordError(f"{what} holds something that is not an object")
    return list(value)


def _scalar_text(value: Any, what: str) -> str:
    """An identifier: a string, or a whole number written without a fraction."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool) or not isinstance(value, int | Decimal):
        raise RecordError(f"{what} is not a string or number")
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise RecordError(f"{what} is not a finite number")
        if value != value.to_integral_value():
            return str(value)
    return str(_whole(value, what, digits=30))


def _optional_text(value: Any) -> str | None:
    """Free text where 4D might send anything: objects, lists and absurd numbers give None."""
    if value is None or isinstance(value, Mapping | list | tuple):
        return None
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10**30:
        return None
    return str(value)


def _first(obj: Mapping[str, Any], *keys: str) -> Any:
    for key in keys:
        if obj.get(key) is not None:
            return obj[key]
    return None


def _nested_ref(value: Any) -> Ref:
    try:
        return Ref.parse(value) or Ref()
    except RecordError:
        return Ref()


def _nested_name(value: Any) -> Any:
    if isinstance(value, Mapping):
        return value.get("Name")
    return value


__all__ = [
    "STATUS_ACTIVE",
    "STATUS_COMPLETED",
    "STATUS_INACTIVE",
    "ZERO",
    "Appointment",
    "Charge",
    "Patient",
    "Procedure",
    "Quote",
    "QuoteSummary",
    "RecordError",
    "Ref",
    "Supply",
    "quote_number",
    "record_document",
    "status_label",
]
