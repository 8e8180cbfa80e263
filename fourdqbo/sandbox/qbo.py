"""The simulated QuickBooks Online company and its v3 accounting API.

`Company` holds the entities (Invoice, Customer, Item, Estimate) and enforces QBO's rules:
string Ids, a `SyncToken` that grows on every change (stale token: fault 5010), unknown
Id (610), unique customer `DisplayName` across active and inactive customers (6240),
duplicate `DocNumber` (6140, a company setting), `Amount == Qty x UnitPrice` on sales
lines (6000), references that must exist and be active (2500), `TotalAmt`/`Balance`
computed with Decimal, `MetaData` times with the company's UTC offset, voids and deletes.

`QboService` is the HTTP face under `/v3/company/{realmId}/`: Bearer token checked (401,
fault 3200), `minorversion` required, JSON content type required on writes, `query`,
`batch` (at most 30 independent items, answered in a shuffled order), single-entity
reads and writes, `requestid` replays, and an `intuit_tid` header on every answer.
"""

from __future__ import annotations

import copy
import random
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any
from zoneinfo import ZoneInfo

from fourdqbo import jsonio
from fourdqbo.money import cents
from fourdqbo.sandbox import qbo_query
from fourdqbo.sandbox.base import SimClock, SimRequest, SimResponse

ENTITIES = ("Invoice", "Customer", "Item", "Estimate")
RESOURCES = {name.lower(): name for name in ENTITIES}
TRANSACTIONS = frozenset({"Invoice", "Estimate"})
MAX_BATCH_ITEMS = 30
DOC_NUMBER_MAX = 21
CUSTOM_FIELD_MAX = 31
# The invoice custom fields the company has defined (QBO allows three string fields).
CUSTOM_FIELD_DEFINITIONS = {"1": "Quote Version", "2": "Quoted By", "3": "Crew #"}
USD = {"value": "USD", "name": "United States Dollar"}
TRANSACTION_FIELDS = (
    "DocNumber",
    "TxnDate",
    "DueDate",
    "CustomerRef",
    "Line",
    "CustomField",
    "PrivateNote",
    "CustomerMemo",
    "BillEmail",
    "SalesTermRef",
)
CUSTOMER_FIELDS = (
    "DisplayName",
    "GivenName",
    "MiddleName",
    "FamilyName",
    "Title",
    "Suffix",
    "CompanyName",
    "PrimaryEmailAddr",
    "PrimaryPhone",
    "BillAddr",
    "Notes",
    "Active",
)
ITEM_FIELDS = ("Name", "Description", "Active", "Type", "UnitPrice", "Sku", "IncomeAccountRef")


class QboFault(Exception):
    """A QBO fault: what the API answers when it refuses a request or a batch item."""

    def __init__(
        self,
        code: str,
        message: str,
        detail: str,
        *,
        element: str = "",
        status: int = 400,
        kind: str = "ValidationFault",
    ) -> None:
        super().__init__(f"{code} {message}: {detail}")
        self.code = code
        self.message = message
        self.detail = detail
        self.element = element
        self.status = status
        self.kind = kind

    def fault(self) -> dict[str, Any]:
        return {
            "Error": [
                {
                    "Message": self.message,
                    "Detail": self.detail,
                    "code": self.code,
                    "element": self.element,
                }
            ],
            "type": self.kind,
        }


def required(name: str) -> QboFault:
    return QboFault(
        "2020",
        "Required param missing, need to supply the required value for the API",
        f"Required parameter {name} is missing in the request",
        element=name,
    )


def invalid_property(name: str) -> QboFault:
    return QboFault(
        "2010",
        "Request has invalid or unsupported property",
        f"Property Name:{name} specified is unsupported or invalid",
        element=name,
    )


def not_found(entity: str, ident: Any) -> QboFault:
    return QboFault(
        "610",
        "Object Not Found",
        "Object Not Found : Something you're trying to use has been made inactive. Check the "
        f"fields with accounts, customers, items, vendors or employees. ({entity} Id={ident})",
    )


def stale(entity: str, ident: str) -> QboFault:
    return QboFault(
        "5010",
        "Stale Object Error",
        "Stale Object Error : You and Sandbox were working on this at the same time. Sandbox "
        f"finished before you did, so your work was not saved. ({entity} Id={ident})",
    )


def invalid_reference(what: str, ident: Any, *, inactive: bool = False) -> QboFault:
    detail = (
        "Invalid Reference Id : Something you're trying to use has been made inactive. Check "
        "the fields with accounts, customers, items, vendors or employees."
        if inactive
        else f"Invalid Reference Id : {what} element id {ident} not found"
    )
    return QboFault("2500", "Invalid Reference Id", detail, element=what)


def business(detail: str, element: str = "") -> QboFault:
    return QboFault(
        "6000",
        "A business validation error has occurred while processing your request",
        f"Business Validation Error: {detail}",
        element=element,
    )


def length_fault(name: str, maximum: int, length: int) -> QboFault:
    return QboFault(
        "2050",
        "String length is either shorter or longer than supported by specification",
        f"String length specified does not match the supported length. Min:0 Max:{maximum} "
        f"supported. Supplied length:{length}",
        element=name,
    )


@dataclass
class CompanySettings:
    """Company preferences that change QBO's behaviour."""

    # "Custom transaction numbers" with the duplicate-number warning on: 6140 on reuse.
    duplicate_doc_number_check: bool = True
    # Whether a write repeated with the same `requestid` is answered from the first one.
    honour_requestid: bool = True
    timezone: str = "America/Los_Angeles"


class Company:
    """A QBO company's entities and rules. Every method is thread-safe."""

    def __init__(
        self, clock: SimClock, *, realm_id: str, settings: CompanySettings | None = None
    ) -> None:
        self.clock = clock
        self.realm_id = realm_id
        self.settings = settings or CompanySettings()
        self.zone = ZoneInfo(self.settings.timezone)
        self.lock = threading.RLock()
        self._store: dict[str, dict[str, dict[str, Any]]] = {name: {} for name in ENTITIES}
        self._next_id = {"Invoice": 130, "Customer": 58, "Item": 1, "Estimate": 100}
        self._paid: dict[str, Decimal] = {}
        # (entity, DocNumber) -> Ids: the duplicate check must stay cheap with thousands.
        self._docs: dict[tuple[str, str], set[str]] = {}
        self._balances_stale = False  # an invoice changed since balances were summed
        self._payment_ids = 500
        self.deleted: list[dict[str, Any]] = []  # deleted entities, for tests
        self.company_name = "Sandbox Surgical Arts"
        # DisplayNames of vendors and employees: QBO keeps names unique across all three
        # lists, but a Customer query never shows these.
        self.other_names: set[str] = set()

    # -- time ------------------------------------------------------------------------------

    def stamp(self, moment: datetime | None = None) -> str:
        """A QBO entity time: company local time with its offset, e.g. ...-08:00."""
        moment = moment or self.clock.now()
        return moment.astimezone(self.zone).isoformat(timespec="seconds")

    def response_time(self) -> str:
        """The `time` of an answer: local time with milliseconds and offset."""
        return self.clock.now().astimezone(self.zone).isoformat(timespec="milliseconds")

    def today(self) -> date:
        return self.clock.now().astimezone(self.zone).date()

    # -- inspection for tests --------------------------------------------------------------

    def _list(self, entity: str) -> list[dict[str, Any]]:
        with self.lock:
            if entity == "Customer":
                self._refresh_balances()
            rows = list(self._store[entity].values())
            return copy.deepcopy(sorted(rows, key=lambda e: int(e["Id"])))

    def invoices(self) -> list[dict[str, Any]]:
        return self._list("Invoice")

    def invoice(self, ident: str) -> dict[str, Any] | None:
        with self.lock:
            found = self._store["Invoice"].get(str(ident))
            return copy.deepcopy(found) if found else None

    def invoices_by_doc(self, doc_number: str | int) -> list[dict[str, Any]]:
        """From the DocNumber index, copying only the matches (audits call it per quote)."""
        with self.lock:
            ids = self._docs.get(("Invoice", str(doc_number)), set())
            rows = [self._store["Invoice"][i] for i in ids if i in self._store["Invoice"]]
            return copy.deepcopy(sorted(rows, key=lambda e: int(e["Id"])))

    def customers(self, *, include_inactive: bool = True) -> list[dict[str, Any]]:
        return [c for c in self._list("Customer") if include_inactive or c.get("Active")]

    def customer(self, ident: str) -> dict[str, Any] | None:
        with self.lock:
            self._refresh_balances()
            found = self._store["Customer"].get(str(ident))
            return copy.deepcopy(found) if found else None

    def customer_by_name(self, display_name: str) -> dict[str, Any] | None:
        wanted = display_name.strip().casefold()
        for customer in self.customers():
            if customer["DisplayName"].casefold() == wanted:
                return customer
        return None

    def items(self) -> list[dict[str, Any]]:
        return self._list("Item")

    def item_by_name(self, name: str) -> dict[str, Any] | None:
        return next((i for i in self.items() if i["Name"] == name), None)

    def estimates(self) -> list[dict[str, Any]]:
        return self._list("Estimate")

    # -- test mutations --------------------------------------------------------------------

    def apply_payment(self, invoice_id: str, amount: Decimal | str | int) -> dict[str, Any]:
        """Receive a payment against an invoice: Balance drops, SyncToken grows."""
        value = cents(Decimal(str(amount)))
        with self.lock:
            invoice = self._store["Invoice"].get(str(invoice_id))
            if invoice is None:
                raise KeyError(invoice_id)
            self._paid[invoice["Id"]] = self._paid.get(invoice["Id"], Decimal("0")) + value
            self._payment_ids += 1
            invoice.setdefault("LinkedTxn", []).append(
                {"TxnId": str(self._payment_ids), "TxnType": "Payment"}
            )
            invoice["Balance"] = cents(invoice["TotalAmt"] - self._paid[invoice["Id"]])
            self._touch(invoice)
            return copy.deepcopy(invoice)

    def add_vendor(self, display_name: str) -> None:
        """A vendor (or employee) holding a name, invisible to Customer queries."""
        with self.lock:
            self.other_names.add(display_name.casefold())

    def set_customer_active(self, customer_id: str, active: bool) -> dict[str, Any]:
        with self.lock:
            customer = self._store["Customer"][str(customer_id)]
            customer["Active"] = active
            self._touch(customer)
            return copy.deepcopy(customer)

    def insert(
        self, entity: str, body: Mapping[str, Any], *, at: datetime | None = None
    ) -> dict[str, Any]:
        """Create an entity through the normal rules, back-dated to `at` (for seeding)."""
        with self.lock:
            created = self.create(entity, body)
            if at is not None:
                stored = self._store[entity][created["Id"]]
                stored["MetaData"] = {
                    "CreateTime": self.stamp(at),
                    "LastUpdatedTime": self.stamp(at),
                }
                created = copy.deepcopy(stored)
            return created

    # -- the API operations ----------------------------------------------------------------

    def read(self, entity: str, ident: str) -> dict[str, Any]:
        with self.lock:
            if entity == "Customer":
                self._refresh_balances()
            found = self._store[entity].get(str(ident))
            if found is None:
                raise not_found(entity, ident)
            return copy.deepcopy(found)

    def query(self, statement: str) -> dict[str, Any]:
        """The `QueryResponse` of a statement, or QboFault."""
        try:
            parsed = qbo_query.parse(statement)
        except qbo_query.QueryError as exc:
            raise QboFault(exc.code, exc.message, exc.detail) from None
        with self.lock:
            if parsed.entity == "Customer":
                self._refresh_balances()
            if parsed.entity == "CompanyInfo":
                objects = [self.company_info()]
            else:
                objects = list(self._store[parsed.entity].values())
            try:
                result = qbo_query.evaluate(parsed, objects, self.zone)
            except qbo_query.QueryError as exc:
                raise QboFault(exc.code, exc.message, exc.detail) from None
            return copy.deepcopy(result.response())

    def company_info(self) -> dict[str, Any]:
        return {
            "Id": "1",
            "SyncToken": "3",
            "CompanyName": self.company_name,
            "LegalName": self.company_name,
            "Country": "US",
            "domain": "QBO",
            "sparse": False,
            "MetaData": {
                "CreateTime": "2023-01-09T10:12:48-08:00",
                "LastUpdatedTime": "2024-06-11T14:02:31-07:00",
            },
        }

    def create(self, entity: str, body: Any) -> dict[str, Any]:
        body = _object_body(body)
        if body.get("Id") not in (None, ""):
            return self.update(entity, body)
        with self.lock:
            if entity in TRANSACTIONS:
                stored = self._build_transaction(entity, body, None)
            elif entity == "Customer":
                stored = self._build_customer(body, None)
            else:
                stored = self._build_item(body, None)
            ident = str(self._next_id[entity])
            self._next_id[entity] += 1
            now = self.stamp()
            stored = {
                "Id": ident,
                "SyncToken": "0",
                "domain": "QBO",
                "sparse": False,
                "MetaData": {"CreateTime": now, "LastUpdatedTime": now},
                **stored,
            }
            if entity == "Invoice":
                stored["Balance"] = stored["TotalAmt"]
            self._store[entity][ident] = stored
            self._index_doc(entity, stored)
            self._balances_stale = True
            return copy.deepcopy(stored)

    def update(self, entity: str, body: Any) -> dict[str, Any]:
        body = _object_body(body)
        with self.lock:
            current = self._current(entity, body)
            sparse = body.get("sparse") is True or str(body.get("sparse")).lower() == "true"
            fields = _writable(entity)
            if sparse:
                merged = {k: copy.deepcopy(current[k]) for k in fields if k in current}
                merged.update({k: body[k] for k in fields if k in body})
            else:
                merged = {k: body[k] for k in fields if k in body}
                if entity == "Customer" and "Active" not in merged:
                    merged["Active"] = current.get("Active", True)
            if entity in TRANSACTIONS:
                built = self._build_transaction(entity, merged, current)
            elif entity == "Customer":
                built = self._build_customer(merged, current)
            else:
                built = self._build_item(merged, current)
            stored = {
                "Id": current["Id"],
                "SyncToken": current["SyncToken"],
                "domain": "QBO",
                "sparse": False,
                "MetaData": dict(current["MetaData"]),
                **built,
            }
            if entity == "Invoice":
                stored["LinkedTxn"] = current.get("LinkedTxn", [])
                paid = self._paid.get(current["Id"], Decimal("0"))
                stored["Balance"] = cents(stored["TotalAmt"] - paid)
            self._touch(stored)
            self._unindex_doc(entity, current)
            self._store[entity][current["Id"]] = stored
            self._index_doc(entity, stored)
            return copy.deepcopy(stored)

    def delete(self, entity: str, body: Any) -> dict[str, Any]:
        body = _object_body(body)
        if entity not in TRANSACTIONS:
            raise QboFault("500", "Unsupported Operation", "Operation Delete is not supported.")
        with self.lock:
            current = self._current(entity, body)
            del self._store[entity][current["Id"]]
            self._unindex_doc(entity, current)
            self._balances_stale = True
            self._paid.pop(current["Id"], None)
            self.deleted.append(copy.deepcopy(current))
            return {"status": "Deleted", "domain": "QBO", "Id": current["Id"]}

    def void(self, entity: str, body: Any) -> dict[str, Any]:
        body = _object_body(body)
        if entity != "Invoice":
            raise QboFault("500", "Unsupported Operation", "Operation Void is not supported.")
        with self.lock:
            current = self._current(entity, body)
            for line in current["Line"]:
                line["Amount"] = Decimal("0.00")
                detail = line.get("SalesItemLineDetail")
                if isinstance(detail, dict) and "UnitPrice" in detail:
                    detail["UnitPrice"] = Decimal("0")
            current["TotalAmt"] = Decimal("0.00")
            current["Balance"] = Decimal("0.00")
            current["PrivateNote"] = "Voided"
            self._paid.pop(current["Id"], None)
            self._touch(current)
            return copy.deepcopy(current)

    # -- rules -----------------------------------------------------------------------------

    def _current(self, entity: str, body: Mapping[str, Any]) -> dict[str, Any]:
        ident = body.get("Id")
        if ident in (None, ""):
            raise required("Id")
        current = self._store[entity].get(str(ident))
        if current is None:
            raise not_found(entity, ident)
        token = body.get("SyncToken")
        if token in (None, ""):
            raise required("SyncToken")
        if str(token) != current["SyncToken"]:
            raise stale(entity, current["Id"])
        return current

    def _touch(self, stored: dict[str, Any]) -> None:
        self._balances_stale = True
        stored["SyncToken"] = str(int(stored["SyncToken"]) + 1)
        stored["MetaData"]["LastUpdatedTime"] = self.stamp()

    def _index_doc(self, entity: str, stored: Mapping[str, Any]) -> None:
        if stored.get("DocNumber"):
            self._docs.setdefault((entity, stored["DocNumber"]), set()).add(stored["Id"])

    def _unindex_doc(self, entity: str, stored: Mapping[str, Any]) -> None:
        if stored.get("DocNumber"):
            self._docs.get((entity, stored["DocNumber"]), set()).discard(stored["Id"])

    def _refresh_balances(self) -> None:
        """Customer balances = open invoice balances, recomputed in one pass when read."""
        if not self._balances_stale:
            return
        self._balances_stale = False
        totals: dict[str, Decimal] = {}
        for invoice in self._store["Invoice"].values():
            key = invoice["CustomerRef"]["value"]
            totals[key] = totals.get(key, Decimal("0.00")) + invoice["Balance"]
        for customer in self._store["Customer"].values():
            balance = totals.get(customer["Id"], Decimal("0.00"))
            customer["Balance"] = balance
            customer["BalanceWithJobs"] = balance

    def _build_transaction(
        self, entity: str, body: Mapping[str, Any], current: Mapping[str, Any] | None
    ) -> dict[str, Any]:
        customer = self._customer_ref(body.get("CustomerRef"))
        lines = self._lines(body.get("Line"))
        total = sum((line["Amount"] for line in lines), Decimal("0.00"))
        doc_number = body.get("DocNumber")
        if doc_number is not None:
            if isinstance(doc_number, bool | dict | list):
                raise invalid_property("DocNumber")
            doc_number = str(doc_number)
            if len(doc_number) > DOC_NUMBER_MAX:
                raise length_fault("DocNumber", DOC_NUMBER_MAX, len(doc_number))
            if self.settings.duplicate_doc_number_check and doc_number:
                for other_id in sorted(self._docs.get((entity, doc_number), ())):
                    other = self._store[entity][other_id]
                    if current is None or other["Id"] != current["Id"]:
                        raise QboFault(
                            "6140",
                            "Duplicate Document Number Error",
                            "Duplicate Document Number Error : You must specify a different "
                            f"number. This number has already been used. DocNumber={doc_number} "
                            f"is assigned to TxnType={entity} with TxnId={other['Id']}",
                        )
        txn_date = _date_field(body.get("TxnDate"), "TxnDate") or self.today()
        due_date = _date_field(body.get("DueDate"), "DueDate") or txn_date
        built: dict[str, Any] = {
            "CustomField": self._custom_fields(body.get("CustomField")),
            "TxnDate": txn_date.isoformat(),
            "DueDate": due_date.isoformat(),
            "CurrencyRef": dict(USD),
            "LinkedTxn": [],
            "Line": [
                *lines,
                {
                    "Amount": total,
                    "DetailType": "SubTotalLineDetail",
                    "SubTotalLineDetail": {},
                },
            ],
            "TxnTaxDetail": {"TotalTax": Decimal("0")},
            "CustomerRef": customer,
            "TotalAmt": total,
            "PrintStatus": "NotSet",
            "EmailStatus": "NotSet",
        }
        if doc_number is not None:
            built["DocNumber"] = doc_number
        for name in ("PrivateNote", "CustomerMemo", "BillEmail", "SalesTermRef"):
            if body.get(name) is not None:
                built[name] = copy.deepcopy(body[name])
        if entity == "Estimate":
            built["TxnStatus"] = "Pending"
        return built

    def _customer_ref(self, ref: Any) -> dict[str, Any]:
        if not isinstance(ref, Mapping) or ref.get("value") in (None, ""):
            raise required("CustomerRef")
        customer = self._store["Customer"].get(str(ref["value"]))
        if customer is None:
            raise invalid_reference("CustomerRef", ref["value"])
        if not customer.get("Active", True):
            raise invalid_reference("CustomerRef", ref["value"], inactive=True)
        return {"value": customer["Id"], "name": customer["DisplayName"]}

    def _lines(self, raw: Any) -> list[dict[str, Any]]:
        if raw is None or (isinstance(raw, list) and not raw):
            raise required("Line")
        if not isinstance(raw, list):
            raise invalid_property("Line")
        lines: list[dict[str, Any]] = []
        for entry in raw:
            if not isinstance(entry, Mapping):
                raise invalid_property("Line")
            kind = entry.get("DetailType")
            if kind == "SubTotalLineDetail":
                continue  # QBO computes its own subtotal
            if kind == "DescriptionOnly":
                line: dict[str, Any] = {
                    "Description": str(entry.get("Description") or ""),
                    "DetailType": "DescriptionOnly",
                    "DescriptionLineDetail": {},
                    "Amount": Decimal("0.00"),
                }
            elif kind == "SalesItemLineDetail":
                line = self._sales_line(entry)
            elif kind is None:
                raise required("Line.DetailType")
            else:
                raise invalid_property("Line.DetailType")
            line["Id"] = str(len(lines) + 1)
            line["LineNum"] = len(lines) + 1
            lines.append(line)
        if not lines:
            raise required("Line")
        return lines

    def _sales_line(self, entry: Mapping[str, Any]) -> dict[str, Any]:
        detail = entry.get("SalesItemLineDetail")
        if detail is None:
            detail = {}
        if not isinstance(detail, Mapping):
            raise invalid_property("SalesItemLineDetail")
        amount = _number(entry.get("Amount"), "Line.Amount")
        if amount is None:
            raise required("Line.Amount")
        qty = _number(detail.get("Qty"), "Line.SalesItemLineDetail.Qty")
        unit_price = _number(detail.get("UnitPrice"), "Line.SalesItemLineDetail.UnitPrice")
        if qty is not None and unit_price is not None and cents(qty * unit_price) != cents(amount):
            raise business(
                f"Amount is not equal to UnitPrice * Qty. Supplied value:{amount}",
                element="Line.Amount",
            )
        item_ref = detail.get("ItemRef")
        if item_ref is None:
            item = self._store["Item"]["1"]  # QBO's default "Services" item
        else:
            if not isinstance(item_ref, Mapping) or item_ref.get("value") in (None, ""):
                raise required("Line.SalesItemLineDetail.ItemRef")
            item = self._store["Item"].get(str(item_ref["value"]))
            if item is None:
                raise invalid_reference("ItemRef", item_ref["value"])
            if not item.get("Active", True):
                raise invalid_reference("ItemRef", item_ref["value"], inactive=True)
        out_detail: dict[str, Any] = {"ItemRef": {"value": item["Id"], "name": item["Name"]}}
        if qty is not None:
            out_detail["Qty"] = qty
        if unit_price is not None:
            out_detail["UnitPrice"] = unit_price
        out_detail["TaxCodeRef"] = {"value": "NON"}
        line: dict[str, Any] = {
            "Amount": cents(amount),
            "DetailType": "SalesItemLineDetail",
            "SalesItemLineDetail": out_detail,
        }
        if entry.get("Description") is not None:
            description = str(entry["Description"])
            if len(description) > 4000:
                raise length_fault("Line.Description", 4000, len(description))
            line["Description"] = description
        return line

    def _custom_fields(self, raw: Any) -> list[dict[str, Any]]:
        values: dict[str, str] = {}
        if raw is not None:
            if not isinstance(raw, list):
                raise invalid_property("CustomField")
            for entry in raw:
                if not isinstance(entry, Mapping):
                    raise invalid_property("CustomField")
                definition = str(entry.get("DefinitionId") or "")
                if definition not in CUSTOM_FIELD_DEFINITIONS:
                    continue  # QBO ignores fields the company has not defined
                value = entry.get("StringValue")
                if value is None:
                    continue
                value = str(value)
                if len(value) > CUSTOM_FIELD_MAX:
                    raise length_fault("CustomField.StringValue", CUSTOM_FIELD_MAX, len(value))
                values[definition] = value
        fields: list[dict[str, Any]] = []
        for definition, name in CUSTOM_FIELD_DEFINITIONS.items():
            field = {"DefinitionId": definition, "Name": name, "Type": "StringType"}
            if definition in values:
                field["StringValue"] = values[definition]
            fields.append(field)
        return fields

    def _build_customer(
        self, body: Mapping[str, Any], current: Mapping[str, Any] | None
    ) -> dict[str, Any]:
        name_parts = [
            body.get(k) for k in ("Title", "GivenName", "MiddleName", "FamilyName", "Suffix")
        ]
        display = body.get("DisplayName")
        if display is None or str(display).strip() == "":
            display = " ".join(str(p) for p in name_parts if p)
        display = str(display).strip()
        if not display:
            raise required("DisplayName")
        if len(display) > 500:
            raise length_fault("DisplayName", 500, len(display))
        if ":" in display:
            raise invalid_property("DisplayName")
        if display.casefold() in self.other_names:
            raise QboFault(
                "6240",
                "Duplicate Name Exists Error",
                "The name supplied already exists. : Another customer, vendor or employee "
                "is already using this name. Please use a different name.",
            )
        for other in self._store["Customer"].values():
            if other["DisplayName"].casefold() == display.casefold() and (
                current is None or other["Id"] != current["Id"]
            ):
                raise QboFault(
                    "6240",
                    "Duplicate Name Exists Error",
                    "The name supplied already exists. : Another customer, vendor or employee "
                    f"is already using this name. Please use a different name. Id={other['Id']}",
                )
        active = body.get("Active", True)
        built: dict[str, Any] = {
            "DisplayName": display,
            "FullyQualifiedName": display,
            "PrintOnCheckName": display,
            "Active": active is True or str(active).lower() == "true",
            "Taxable": False,
            "Job": False,
            "BillWithParent": False,
            "Balance": current.get("Balance", Decimal("0.00")) if current else Decimal("0.00"),
            "BalanceWithJobs": (
                current.get("BalanceWithJobs", Decimal("0.00")) if current else Decimal("0.00")
            ),
            "CurrencyRef": dict(USD),
            "PreferredDeliveryMethod": "Print",
        }
        for name in CUSTOMER_FIELDS:
            if name not in ("DisplayName", "Active") and body.get(name) is not None:
                built[name] = copy.deepcopy(body[name])
        return built

    def _build_item(
        self, body: Mapping[str, Any], current: Mapping[str, Any] | None
    ) -> dict[str, Any]:
        name = str(body.get("Name") or "").strip()
        if not name:
            raise required("Name")
        for other in self._store["Item"].values():
            if other["Name"].casefold() == name.casefold() and (
                current is None or other["Id"] != current["Id"]
            ):
                raise QboFault(
                    "6240",
                    "Duplicate Name Exists Error",
                    f"The name supplied already exists. : Id={other['Id']}",
                )
        active = body.get("Active", True)
        built: dict[str, Any] = {
            "Name": name,
            "FullyQualifiedName": name,
            "Active": active is True or str(active).lower() == "true",
            "Type": str(body.get("Type") or "Service"),
            "Taxable": False,
            "UnitPrice": _number(body.get("UnitPrice"), "UnitPrice") or Decimal("0"),
            "IncomeAccountRef": body.get("IncomeAccountRef")
            or {"value": "79", "name": "Sales of Product Income"},
        }
        for field in ("Description", "Sku"):
            if body.get(field) is not None:
                built[field] = str(body[field])
        return built


def _writable(entity: str) -> tuple[str, ...]:
    if entity in TRANSACTIONS:
        return TRANSACTION_FIELDS
    if entity == "Customer":
        return CUSTOMER_FIELDS
    return ITEM_FIELDS


def _object_body(body: Any) -> dict[str, Any]:
    if not isinstance(body, Mapping):
        raise QboFault(
            "2310",
            "Request has invalid or unsupported property",
            "Request body is not a JSON object",
        )
    return dict(body)


def _number(value: Any, name: str) -> Decimal | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | Decimal | str | float):
        raise invalid_property(name)
    try:
        number = Decimal(str(value))
    except InvalidOperation:
        raise invalid_property(name) from None
    if not number.is_finite():
        raise invalid_property(name)
    return number


def _date_field(value: Any, name: str) -> date | None:
    if value in (None, ""):
        return None
    if not isinstance(value, str):
        raise invalid_property(name)
    try:
        return date.fromisoformat(value.strip()[:10])
    except ValueError:
        raise QboFault(
            "2010",
            "Request has invalid or unsupported property",
            f"Property Name:{name} specified is unsupported or invalid (not a date)",
            element=name,
        ) from None


# --- the HTTP face --------------------------------------------------------------------------


class QboService:
    """QBO's v3 accounting API for one company, served under `v3/company/{realmId}/`."""

    def __init__(
        self,
        company: Company,
        *,
        check_access: Callable[[str], str],
        rng: random.Random | None = None,
    ) -> None:
        self.company = company
        self.check_access = check_access
        self.rng = rng or random.Random(0)
        self._rng_lock = threading.Lock()
        self._replies: dict[tuple[str, str], SimResponse] = {}
        self._replies_lock = threading.Lock()

    def new_tid(self) -> str:
        with self._rng_lock:
            return f"1-{self.rng.getrandbits(32):08x}-{self.rng.getrandbits(96):024x}"

    def handle(self, request: SimRequest) -> SimResponse:
        tid = self.new_tid()
        try:
            response = self._handle(request)
        except QboFault as fault:
            response = self.fault_response(fault)
        response.headers.setdefault("intuit_tid", tid)
        accept = (request.header("accept") or "").lower()
        if "application/json" not in accept and isinstance(response.body, dict):
            # QBO answers XML unless the client asks for JSON.
            response.body = to_xml(response.body)
            response.content_type = "application/xml"
        return response

    def fault_response(self, fault: QboFault) -> SimResponse:
        return SimResponse(
            fault.status, {"Fault": fault.fault(), "time": self.company.response_time()}
        )

    def authentication_failed(self, detail: str) -> SimResponse:
        return self.fault_response(
            QboFault(
                "3200",
                "message=AuthenticationFailed; errorCode=003200; statusCode=401",
                detail,
                status=401,
                kind="AUTHENTICATION",
            )
        )

    def _handle(self, request: SimRequest) -> SimResponse:
        parts = request.path.strip("/").split("/")
        if len(parts) < 4 or parts[0] != "v3" or parts[1] != "company":
            return SimResponse(404, {"error": "not found"})
        authorization = request.header("authorization") or ""
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return self.authentication_failed("Authorization header missing or not Bearer")
        verdict = self.check_access(token.strip())
        if verdict != "ok":
            return self.authentication_failed(
                "Token expired" if verdict == "expired" else "Token invalid"
            )
        if parts[2] != self.company.realm_id:
            raise QboFault(
                "3100",
                "message=ApplicationAuthorizationFailed; errorCode=003100; statusCode=403",
                f"Not authorized for realm {parts[2]}",
                status=403,
                kind="AUTHORIZATION",
            )
        minor = request.param("minorversion")
        if minor is None or not minor.strip().isdigit():
            raise QboFault(
                "4001",
                "Invalid minorversion",
                "minorversion query parameter is required and must be a number "
                "(send minorversion=75)",
            )
        resource = parts[3].lower()
        rest = parts[4:]
        if resource == "query":
            return self._query(request)
        if resource == "batch" and not rest:
            return self._replayable(request, self._batch)
        if resource == "companyinfo" and request.method == "GET":
            return self._ok({"CompanyInfo": self.company.company_info()})
        entity = RESOURCES.get(resource)
        if entity is None:
            return SimResponse(
                404,
                {
                    "Fault": QboFault(
                        "610", "Object Not Found", f"Unsupported resource {parts[3]}"
                    ).fault(),
                    "time": self.company.response_time(),
                },
            )
        if request.method == "GET" and len(rest) == 1:
            return self._ok({entity: self.company.read(entity, rest[0])})
        if request.method == "POST" and not rest:
            return self._replayable(request, lambda r: self._write(r, entity))
        return SimResponse(405, {"error": "method not allowed"})

    def _ok(self, body: dict[str, Any]) -> SimResponse:
        body["time"] = self.company.response_time()
        return SimResponse(200, body)

    def _query(self, request: SimRequest) -> SimResponse:
        if request.method == "GET":
            statement = request.param("query")
        elif request.method == "POST":
            content_type = (request.header("content-type") or "").lower()
            if not content_type.startswith(("application/text", "text/plain")):
                return _unsupported_media_type(self.company)
            statement = request.body.decode("utf-8", errors="replace")
        else:
            return SimResponse(405, {"error": "method not allowed"})
        if statement is None:
            raise required("query")
        return self._ok({"QueryResponse": self.company.query(statement)})

    def _replayable(
        self, request: SimRequest, action: Callable[[SimRequest], SimResponse]
    ) -> SimResponse:
        """Answer a write, or replay the stored answer of an earlier one with its requestid."""
        request_id = request.param("requestid")
        if not request_id or not self.company.settings.honour_requestid:
            return _faults_as_responses(self, action, request)
        key = (request.path, request_id)
        with self._replies_lock:
            stored = self._replies.get(key)
            if stored is not None:
                return copy.deepcopy(stored)
            response = _faults_as_responses(self, action, request)
            self._replies[key] = copy.deepcopy(response)
            return response

    def _write(self, request: SimRequest, entity: str) -> SimResponse:
        body = _json_body(request, self.company)
        if isinstance(body, SimResponse):
            return body
        operation = (request.param("operation") or "").lower()
        if operation in ("", "create", "update"):
            if operation == "update" and (not isinstance(body, Mapping) or "Id" not in body):
                raise required("Id")
            result = self.company.create(entity, body)
        elif operation == "delete":
            result = self.company.delete(entity, body)
        elif operation == "void":
            result = self.company.void(entity, body)
        else:
            raise QboFault(
                "500", "Unsupported Operation", f"Operation {operation} is not supported."
            )
        return self._ok({entity: result})

    def _batch(self, request: SimRequest) -> SimResponse:
        body = _json_body(request, self.company)
        if isinstance(body, SimResponse):
            return body
        items = body.get("BatchItemRequest") if isinstance(body, Mapping) else None
        if not isinstance(items, list) or not items:
            raise required("BatchItemRequest")
        if len(items) > MAX_BATCH_ITEMS:
            raise QboFault(
                "4001",
                "Too many batch items",
                f"The maximum number of batch items is {MAX_BATCH_ITEMS}; "
                f"this request has {len(items)}",
            )
        ids = [item.get("bId") if isinstance(item, Mapping) else None for item in items]
        if any(i in (None, "") for i in ids):
            raise required("BatchItemRequest.bId")
        if len({str(i) for i in ids}) != len(ids):
            raise QboFault("4001", "Duplicate bId", "Each batch item needs its own bId")
        answers = [self._batch_item(item) for item in items]
        with self._rng_lock:
            self.rng.shuffle(answers)  # items are independent: QBO answers in any order
        return self._ok({"BatchItemResponse": answers})

    def _batch_item(self, item: Mapping[str, Any]) -> dict[str, Any]:
        bid = str(item["bId"])
        try:
            if "Query" in item:
                return {"bId": bid, "QueryResponse": self.company.query(str(item["Query"]))}
            entities = [key for key in item if key in ENTITIES]
            if len(entities) != 1:
                raise invalid_property("BatchItemRequest entity")
            entity = entities[0]
            operation = str(item.get("operation") or "").lower()
            payload = item[entity]
            if operation == "create":
                if isinstance(payload, Mapping) and payload.get("Id") not in (None, ""):
                    raise invalid_property("Id")
                result = self.company.create(entity, payload)
            elif operation == "update":
                if not isinstance(payload, Mapping) or payload.get("Id") in (None, ""):
                    raise required("Id")
                result = self.company.update(entity, payload)
            elif operation == "delete":
                result = self.company.delete(entity, payload)
            elif operation == "void":
                result = self.company.void(entity, payload)
            elif not operation:
                raise required("operation")
            else:
                raise QboFault(
                    "500", "Unsupported Operation", f"Operation {operation} is not supported."
                )
            return {"bId": bid, entity: result}
        except QboFault as fault:
            return {"bId": bid, "Fault": fault.fault()}


def _faults_as_responses(
    service: QboService, action: Callable[[SimRequest], SimResponse], request: SimRequest
) -> SimResponse:
    try:
        return action(request)
    except QboFault as fault:
        return service.fault_response(fault)


def _unsupported_media_type(company: Company) -> SimResponse:
    return SimResponse(
        415,
        {
            "Fault": QboFault(
                "4000",
                "Unsupported Media Type",
                "Content-Type must be application/json",
                status=415,
            ).fault(),
            "time": company.response_time(),
        },
    )


def _json_body(request: SimRequest, company: Company) -> Any:
    content_type = (request.header("content-type") or "").lower()
    if not content_type.startswith("application/json"):
        return _unsupported_media_type(company)
    try:
        return jsonio.loads(request.body or b"")
    except (ValueError, UnicodeDecodeError):
        raise QboFault(
            "4000",
            "Error parsing object",
            "ObjectParserError: Request Body is not valid JSON",
        ) from None


def batch_size(request: SimRequest) -> int:
    """How many requests a batch counts as against the throttle (its item count)."""
    try:
        body = jsonio.loads(request.body or b"")
    except (ValueError, UnicodeDecodeError):
        return 1
    items = body.get("BatchItemRequest") if isinstance(body, Mapping) else None
    return len(items) if isinstance(items, list) and items else 1


def to_xml(body: Mapping[str, Any]) -> str:
    """A JSON answer in QBO's default XML dress (`IntuitResponse`)."""
    parts = ['<?xml version="1.0" encoding="UTF-8" standalone="yes"?>']
    time_text = body.get("time", "")
    parts.append(f'<IntuitResponse xmlns="http://schema.intuit.com/finance/v3" time="{time_text}">')
    for key, value in body.items():
        if key != "time":
            _xml_element(key, value, parts)
    parts.append("</IntuitResponse>")
    return "".join(parts)


def _xml_element(name: str, value: Any, parts: list[str]) -> None:
    if isinstance(value, list):
        for entry in value:
            _xml_element(name, entry, parts)
        return
    if isinstance(value, Mapping):
        parts.append(f"<{name}>")
        for key, inner in value.items():
            _xml_element(key, inner, parts)
        parts.append(f"</{name}>")
        return
    if value is None:
        return
    text = str(value).lower() if isinstance(value, bool) else str(value)
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    parts.append(f"<{name}>{text}</{name}>")
