"""Typed, frozen records of the QBO entities we read: Invoice, Customer, Item.

Parsed from QBO JSON (numbers already Decimal via `fourdqbo.jsonio`), tolerant of extra
fields. Times are converted to aware UTC here, at the edge.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from fourdqbo.errors import MalformedPayload
from fourdqbo.money import to_decimal
from fourdqbo.timefmt import parse_instant


@dataclass(frozen=True)
class InvoiceLine:
    """A SalesItemLineDetail line: the part of an invoice line that we own."""

    item_id: str | None
    description: str
    amount: Decimal
    qty: Decimal | None
    unit_price: Decimal | None


@dataclass(frozen=True)
class Invoice:
    id: str
    sync_token: str
    doc_number: str | None
    txn_date: date | None
    customer_id: str | None
    customer_name: str | None
    lines: tuple[InvoiceLine, ...]
    custom_fields: Mapping[str, str]  # DefinitionId -> StringValue
    total: Decimal
    balance: Decimal
    created_at: datetime | None
    updated_at: datetime | None
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)
    private_note: str = ""
    email_status: str | None = None  # EmailStatus: NotSet, NeedToSend, EmailSent
    payment_ids: tuple[str, ...] = ()  # LinkedTxn of TxnType Payment

    @property
    def paid(self) -> bool:
        """A payment (or credit) has been applied: we must not touch it."""
        return self.balance != self.total

    @property
    def voided(self) -> bool:
        """Voided in QBO: kept with its DocNumber, every amount zero, and a PrivateNote that
        starts with "Voided". A zero total alone is not a void (a free follow-up visit)."""
        return (
            self.private_note.lstrip().lower().startswith("voided")
            and self.total == 0
            and self.balance == 0
            and all(line.amount == 0 for line in self.lines)
        )

    @classmethod
    def parse(cls, data: Any) -> Invoice:
        obj = _object(data, "Invoice")
        customer = _mapping(obj.get("CustomerRef"))
        lines = []
        for line in _list(obj.get("Line")):
            if not isinstance(line, Mapping) or line.get("DetailType") != "SalesItemLineDetail":
                continue  # QBO's SubTotalLineDetail and anything we did not write
            detail = _mapping(line.get("SalesItemLineDetail"))
            item = _mapping(detail.get("ItemRef"))
            lines.append(
                InvoiceLine(
                    item_id=None if item.get("value") is None else str(item["value"]),
                    description=str(line.get("Description") or ""),
                    amount=_money(line.get("Amount"), "Line.Amount"),
                    qty=None if detail.get("Qty") is None else _money(detail["Qty"], "Qty"),
                    unit_price=(
                        None
                        if detail.get("UnitPrice") is None
                        else _money(detail["UnitPrice"], "UnitPrice")
                    ),
                )
            )
        # A custom field without StringValue (QBO sends those on read) is empty.
        custom = {
            str(f.get("DefinitionId")): str(f.get("StringValue") or "")
            for f in _list(obj.get("CustomField"))
            if isinstance(f, Mapping) and f.get("DefinitionId") is not None
        }
        total = _money(obj.get("TotalAmt"), "TotalAmt")
        # A missing or null Balance means nothing was paid; reading null as 0 would
        # make every such invoice look paid and freeze it as a conflict.
        balance = obj.get("Balance")
        meta = _mapping(obj.get("MetaData"))
        return cls(
            id=_required(obj, "Id"),
            sync_token=_required(obj, "SyncToken"),
            doc_number=None if obj.get("DocNumber") is None else str(obj["DocNumber"]),
            txn_date=_date(obj.get("TxnDate")),
            customer_id=None if customer.get("value") is None else str(customer["value"]),
            customer_name=None if customer.get("name") is None else str(customer["name"]),
            lines=tuple(lines),
            custom_fields=custom,
            total=total,
            balance=total if balance is None else _money(balance, "Balance"),
            created_at=_instant(meta.get("CreateTime")),
            updated_at=_instant(meta.get("LastUpdatedTime")),
            raw=dict(obj),
            private_note=str(obj.get("PrivateNote") or ""),
            email_status=None if obj.get("EmailStatus") is None else str(obj["EmailStatus"]),
            payment_ids=tuple(
                str(link["TxnId"])
                for link in _list(obj.get("LinkedTxn"))
                if isinstance(link, Mapping)
                and str(link.get("TxnType") or "").lower() == "payment"
                and link.get("TxnId") is not None
            ),
        )


@dataclass(frozen=True)
class Customer:
    """A customer as QBO names it: an inactive one's DisplayName carries QBO's " (deleted)"
    suffix, kept here (planning decides what it means)."""

    id: str
    sync_token: str
    display_name: str
    active: bool
    updated_at: datetime | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def parse(cls, data: Any) -> Customer:
        obj = _object(data, "Customer")
        return cls(
            id=_required(obj, "Id"),
            sync_token=_required(obj, "SyncToken"),
            display_name=str(obj.get("DisplayName") or ""),
            active=_flag(obj.get("Active")),
            updated_at=last_updated(obj),
            raw=dict(obj),
        )


@dataclass(frozen=True)
class Item:
    id: str
    name: str
    active: bool = True

    @classmethod
    def parse(cls, data: Any) -> Item:
        obj = _object(data, "Item")
        return cls(
            id=_required(obj, "Id"),
            name=str(obj.get("Name") or ""),
            active=_flag(obj.get("Active")),
        )


@dataclass(frozen=True)
class Estimate:
    """An estimate, read for the operator's `qbo list-estimates` (fourdqbo never writes them)."""

    id: str
    sync_token: str
    doc_number: str | None
    txn_date: date | None
    customer_id: str | None
    customer_name: str | None
    status: str | None  # TxnStatus: Pending, Accepted, Closed, Rejected
    total: Decimal
    created_at: datetime | None
    updated_at: datetime | None
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def parse(cls, data: Any) -> Estimate:
        obj = _object(data, "Estimate")
        customer = _mapping(obj.get("CustomerRef"))
        meta = _mapping(obj.get("MetaData"))
        return cls(
            id=_required(obj, "Id"),
            sync_token=_required(obj, "SyncToken"),
            doc_number=None if obj.get("DocNumber") is None else str(obj["DocNumber"]),
            txn_date=_date(obj.get("TxnDate")),
            customer_id=None if customer.get("value") is None else str(customer["value"]),
            customer_name=None if customer.get("name") is None else str(customer["name"]),
            status=None if obj.get("TxnStatus") is None else str(obj["TxnStatus"]),
            total=_money(obj.get("TotalAmt"), "TotalAmt"),
            created_at=_instant(meta.get("CreateTime")),
            updated_at=_instant(meta.get("LastUpdatedTime")),
            raw=dict(obj),
        )


def last_updated(obj: Mapping[str, Any]) -> datetime | None:
    """An entity's `MetaData.LastUpdatedTime` as aware UTC (None when absent)."""
    return _instant(_mapping(obj.get("MetaData")).get("LastUpdatedTime"))


def _flag(value: Any) -> bool:
    """QBO's Active: true unless it says false (absent or null means active)."""
    if value is None:
        return True
    return value is True or str(value).strip().lower() == "true"


def _mapping(value: Any) -> Mapping[str, Any]:
    """A nested object, or an empty one when QBO sent null or an unexpected shape."""
    return value if isinstance(value, Mapping) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _object(data: Any, what: str) -> Mapping[str, Any]:
    if not isinstance(data, Mapping):
        raise MalformedPayload(f"QBO {what} is not a JSON object", service="qbo")
    return data


def _required(obj: Mapping[str, Any], key: str) -> str:
    value = obj.get(key)
    if value is None or isinstance(value, Mapping | list):
        raise MalformedPayload(f"QBO entity without {key}", service="qbo")
    return str(value)


def _money(value: Any, what: str) -> Decimal:
    try:
        return to_decimal(value, what, allow_negative=True)
    except ValueError as exc:
        raise MalformedPayload(f"QBO {exc}", service="qbo") from None


def _date(value: Any) -> date | None:
    if value in (None, ""):
        return None
    try:
        return date.fromisoformat(str(value))
    except ValueError:
        raise MalformedPayload("QBO TxnDate is not a date", service="qbo") from None


def _instant(value: Any) -> datetime | None:
    if value in (None, ""):
        return None
    try:
        return parse_instant(str(value))
    except ValueError:
        raise MalformedPayload("QBO MetaData time is not ISO 8601", service="qbo") from None
