"""The simulated QuickBooks Online company and its v3 accounting API.

`Company` holds the entities (Invoice, Customer, Item, Estimate) and enforces QBO's rules:
string Ids, a `SyncToken` that grows on every change (stale token: fault 5010), unknown
Id (610), unique customer `DisplayName` across customers, vendors and employees (6240),
duplicate `DocNumber` (6140, a company setting), `Amount == Qty x UnitPrice` on sales
lines (6000), references that must exist and be active (2500), `TotalAmt`/`Balance`
computed with Decimal, `MetaData` times with seconds and the company's offset (following
daylight saving), voids and deletes. Shapes follow the recorded answers of API-NOTES.md:

- A customer made inactive is renamed "<name> (deleted)" (DisplayName and
  FullyQualifiedName; PrintOnCheckName keeps the plain name; legacy " (Deleted)" with
  `CompanySettings.legacy_deleted_spelling`), freeing the plain name. Made active again
  without a DisplayName it keeps the suffix; with one, the name is checked for uniqueness.
- A void keeps the invoice with every amount 0 and PrivateNote "Voided" (see `_void` for
  what a later update does); a delete answers `{"status": "Deleted", "domain", "Id"}`.
- A change log (`changes()`) of every create, update, delete, void, payment,
  (de)activation and email, by the API or by the methods that stand for a person working
  in QBO (`edit_invoice`, `delete_invoice`, `void_invoice`, `apply_payment`,
  `send_invoice_email`, `deactivate_customer`, `set_customer_active`, `rename_customer`),
  in simulated time. `cdc()` answers from it.

`QboService` is the HTTP face under `/v3/company/{realmId}/`: Bearer token checked (401
in QBO's lower-case AUTHENTICATION shape), `minorversion` required, JSON content type
required on writes, `query`, `batch` (at most 30 independent items, answered in a
shuffled order), `cdc`, single-entity reads and writes, `requestid` replays, and an
`intuit_tid` header on every answer. Throttling lives in `server.py`.
"""

from __future__ import annotations

import random
import re
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any
from zoneinfo import ZoneInfo

from fourdqbo import jsonio
from fourdqbo.money import cents
from fourdqbo.sandbox import qbo_query
from fourdqbo.sandbox.base import SimClock, SimRequest, SimResponse
from fourdqbo.timefmt import parse_instant

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
    "BillAddr",
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
# What QBO appends to the DisplayName of a customer made inactive; older answers spell it
# with a capital D (CompanySettings.legacy_deleted_spelling).
INACTIVE_SUFFIX = " (deleted)"
LEGACY_INACTIVE_SUFFIX = " (Deleted)"
# A name already carrying the suffix, in either spelling, or our "(deleted-2)" for the
# second customer of the same name made inactive.
_SUFFIXED = re.compile(r"^(?P<plain>.*?) \(deleted(?:-\d+)?\)$", re.IGNORECASE | re.DOTALL)
# How many leading characters of a refused bearer token QBO's 401 detail repeats.
TOKEN_ECHO = 8
CDC_REACH = timedelta(days=30)
CDC_MAX_OBJECTS = 1000
VOIDED_NOTE = "Voided"


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


def duplicate_name() -> QboFault:
    """6240 as recorded: the same words whether a customer, vendor or employee has it."""
    return QboFault(
        "6240",
        "Duplicate Name Exists Error",
        "The name supplied already exists. : Another customer, vendor or employee is already "
        "using this name. Please use a different name.",
    )


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
    # Spell the inactive-customer suffix " (Deleted)" as older QBO answers do.
    legacy_deleted_spelling: bool = False


@dataclass(frozen=True)
class ChangeRecord:
    """One entry of the company's change log: what CDC answers from.

    `kind` is "create", "update", "delete", "void", "payment", "deactivate",
    "reactivate" or "email"; `by` is "api" (a request), "person" (the methods standing for
    someone working in QBO) or "seed".
    """

    at: datetime  # aware UTC, simulated time
    entity: str
    id: str
    kind: str
    by: str
    sync_token: str | None  # after the change; None for a delete


def plain_name(display_name: str) -> str:
    """A DisplayName without the suffix QBO gives inactive customers (either spelling)."""
    match = _SUFFIXED.match(display_name)
    return match.group("plain") if match else display_name


def json_copy(value: Any) -> Any:
    """A copy of a JSON tree (dicts and lists of immutable scalars: str, int, Decimal, bool,
    None): what `copy.deepcopy` makes of one, without its memo, at a fraction of the cost.
    Every answer and every stored entity is copied, so this is the sandbox's hottest path."""
    if isinstance(value, dict):
        return {key: json_copy(item) for key, item in value.items()}
    if isinstance(value, list):
        return [json_copy(item) for item in value]
    return value


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
        # casefolded Customer DisplayName -> Ids: the uniqueness check on every customer
        # write must not scan thousands of customers.
        self._names: dict[str, set[str]] = {}
        self._balances_stale = False  # an invoice changed since balances were summed
        self._payment_ids = 500
        self.deleted: list[dict[str, Any]] = []  # deleted entities, for tests
        self.company_name = "Sandbox Surgical Arts"
        # DisplayNames of vendors and employees: QBO keeps names unique across all three
        # lists, but a Customer query never shows these.
        self.other_names: set[str] = set()
        # The change log CDC answers from: every change, and per entity the latest one of
        # each Id (ordered by time, then by log position).
        self._changes: list[ChangeRecord] = []
        self._latest: dict[str, dict[str, tuple[datetime, int]]] = {name: {} for name in ENTITIES}

    @property
    def inactive_suffix(self) -> str:
        return LEGACY_INACTIVE_SUFFIX if self.settings.legacy_deleted_spelling else INACTIVE_SUFFIX

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
            return json_copy(sorted(rows, key=lambda e: int(e["Id"])))

    def invoices(self) -> list[dict[str, Any]]:
        return self._list("Invoice")

    def invoice(self, ident: str) -> dict[str, Any] | None:
        with self.lock:
            found = self._store["Invoice"].get(str(ident))
            return json_copy(found) if found else None

    def invoices_by_doc(self, doc_number: str | int) -> list[dict[str, Any]]:
        """From the DocNumber index, copying only the matches (audits call it per quote)."""
        with self.lock:
            ids = self._docs.get(("Invoice", str(doc_number)), set())
            rows = [self._store["Invoice"][i] for i in ids if i in self._store["Invoice"]]
            return json_copy(sorted(rows, key=lambda e: int(e["Id"])))

    def customers(self, *, include_inactive: bool = True) -> list[dict[str, Any]]:
        return [c for c in self._list("Customer") if include_inactive or c.get("Active")]

    def customer(self, ident: str) -> dict[str, Any] | None:
        with self.lock:
            self._refresh_balances()
            found = self._store["Customer"].get(str(ident))
            return json_copy(found) if found else None

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

    def changes(self, entity: str | None = None) -> list[ChangeRecord]:
        """The change log (oldest first), for tests and the chaos suite."""
        with self.lock:
            return [c for c in self._changes if entity is None or c.entity == entity]

    # -- what a person does in QBO -----------------------------------------------------------
    # Not API requests (so not in the request log), but real changes: they bump SyncToken
    # and LastUpdatedTime and go into the change log with by="person". An unknown Id is a
    # KeyError; an edit QBO would refuse raises the QboFault the API would answer.

    def apply_payment(self, invoice_id: str, amount: Decimal | str | int) -> dict[str, Any]:
        """Receive a payment against an invoice: a Payment is linked, Balance drops."""
        value = cents(Decimal(str(amount)))
        with self.lock:
            invoice = self._person_target("Invoice", invoice_id)
            self._paid[invoice["Id"]] = self._paid.get(invoice["Id"], Decimal("0")) + value
            self._payment_ids += 1
            invoice.setdefault("LinkedTxn", []).append(
                {"TxnId": str(self._payment_ids), "TxnType": "Payment"}
            )
            invoice["Balance"] = cents(invoice["TotalAmt"] - self._paid[invoice["Id"]])
            self._touch(invoice, "Invoice", "payment", "person")
            return json_copy(invoice)

    def edit_invoice(
        self,
        invoice_id: str,
        *,
        line_amounts: Mapping[int, Decimal | str | int] | None = None,
        descriptions: Mapping[int, str] | None = None,
        txn_date: date | str | None = None,
        due_date: date | str | None = None,
        add_line: Mapping[str, Any] | None = None,
        remove_lines: Iterable[int] = (),
        custom_fields: Mapping[str, str | None] | None = None,
        private_note: str | None = None,
    ) -> dict[str, Any]:
        """Edit an invoice as a bookkeeper does in QBO's invoice form.

        Lines are named by their `LineNum` (1-based, as a read shows them). A new amount
        keeps `Amount == Qty x UnitPrice` (to the cent, as QBO checks): the rate becomes
        amount / Qty rounded to 7 places, or Qty 1 and rate = amount when even that does not
        multiply back. `add_line` is a line in the API's shape
        (DetailType defaults to SalesItemLineDetail). `custom_fields` maps a field's Name
        or DefinitionId to its new value (None clears it). TotalAmt and Balance follow.
        """
        with self.lock:
            current = self._person_target("Invoice", invoice_id)
            lines = [
                json_copy(line)
                for line in current["Line"]
                if line.get("DetailType") != "SubTotalLineDetail"
            ]
            by_num = {line["LineNum"]: line for line in lines}
            for number, amount in (line_amounts or {}).items():
                _set_line_amount(by_num[number], Decimal(str(amount)))
            for number, text in (descriptions or {}).items():
                by_num[number]["Description"] = text
            removed = set(remove_lines)
            if removed - set(by_num):
                raise KeyError(sorted(removed - set(by_num)))
            lines = [line for line in lines if line["LineNum"] not in removed]
            if add_line is not None:
                lines.append({"DetailType": "SalesItemLineDetail", **json_copy(add_line)})
            body: dict[str, Any] = {
                "Id": current["Id"],
                "SyncToken": current["SyncToken"],
                "sparse": True,
                "Line": lines,
            }
            if txn_date is not None:
                body["TxnDate"] = str(txn_date)
            if due_date is not None:
                body["DueDate"] = str(due_date)
            if private_note is not None:
                body["PrivateNote"] = private_note
            if custom_fields:
                values = {f["DefinitionId"]: f.get("StringValue") for f in current["CustomField"]}
                for key, value in custom_fields.items():
                    definition = next(
                        (d for d, n in CUSTOM_FIELD_DEFINITIONS.items() if key in (d, n)), None
                    )
                    if definition is None:
                        raise KeyError(key)
                    values[definition] = value
                body["CustomField"] = [
                    {"DefinitionId": d, "StringValue": v} for d, v in values.items() if v
                ]
            return self._update("Invoice", body, by="person")

    def delete_invoice(self, invoice_id: str) -> dict[str, Any]:
        """Delete an invoice (QBO's "Delete" in the invoice form)."""
        with self.lock:
            current = self._person_target("Invoice", invoice_id)
            return self._delete("Invoice", current, by="person")

    def void_invoice(self, invoice_id: str) -> dict[str, Any]:
        """Void an invoice (QBO's "Void"): kept, amounts zero, PrivateNote "Voided"."""
        with self.lock:
            current = self._person_target("Invoice", invoice_id)
            return self._void(current, by="person")

    def send_invoice_email(self, invoice_id: str) -> dict[str, Any]:
        """Email an invoice from QBO: EmailStatus and a new SyncToken, no content change."""
        with self.lock:
            invoice = self._person_target("Invoice", invoice_id)
            invoice["EmailStatus"] = "EmailSent"
            invoice["DeliveryInfo"] = {"DeliveryType": "Email", "DeliveryTime": self.stamp()}
            self._touch(invoice, "Invoice", "email", "person")
            return json_copy(invoice)

    def deactivate_customer(self, customer_id: str) -> dict[str, Any]:
        """Make a customer inactive: its DisplayName gains " (deleted)"."""
        return self.set_customer_active(customer_id, False)

    def set_customer_active(self, customer_id: str, active: bool) -> dict[str, Any]:
        """Make a customer (in)active as the API's sparse update of `Active` does: made
        active again, it keeps its suffixed name until someone renames it."""
        with self.lock:
            current = self._person_target("Customer", customer_id)
            body = {"Id": current["Id"], "SyncToken": current["SyncToken"], "sparse": True}
            return self._update("Customer", {**body, "Active": active}, by="person")

    def rename_customer(self, customer_id: str, name: str) -> dict[str, Any]:
        """Change a customer's DisplayName (6240 QboFault when another holds the name)."""
        with self.lock:
            current = self._person_target("Customer", customer_id)
            body = {"Id": current["Id"], "SyncToken": current["SyncToken"], "sparse": True}
            return self._update("Customer", {**body, "DisplayName": name}, by="person")

    def add_vendor(self, display_name: str) -> None:
        """A vendor (or employee) holding a name, invisible to Customer queries."""
        with self.lock:
            self.other_names.add(display_name.casefold())

    def _person_target(self, entity: str, ident: str) -> dict[str, Any]:
        found = self._store[entity].get(str(ident))
        if found is None:
            raise KeyError(ident)
        return found

    def insert(
        self, entity: str, body: Mapping[str, Any], *, at: datetime | None = None
    ) -> dict[str, Any]:
        """Create an entity through the normal rules, back-dated to `at` (for seeding)."""
        with self.lock:
            return self._create(entity, _object_body(body), by="seed", at=at)

    # -- the API operations ----------------------------------------------------------------

    def read(self, entity: str, ident: str) -> dict[str, Any]:
        with self.lock:
            if entity == "Customer":
                self._refresh_balances()
            found = self._store[entity].get(str(ident))
            if found is None:
                raise not_found(entity, ident)
            return json_copy(found)

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
            return json_copy(result.response())

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
            return self._create(entity, body, by="api")

    def _create(
        self, entity: str, body: dict[str, Any], *, by: str, at: datetime | None = None
    ) -> dict[str, Any]:
        if entity in TRANSACTIONS:
            stored = self._build_transaction(entity, body, None)
        elif entity == "Customer":
            stored = self._build_customer(body, None)
        else:
            stored = self._build_item(body, None)
        ident = str(self._next_id[entity])
        self._next_id[entity] += 1
        now = self.stamp(at)
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
        self._log_change(entity, ident, "create", by, "0", at)
        return json_copy(stored)

    def update(self, entity: str, body: Any) -> dict[str, Any]:
        body = _object_body(body)
        with self.lock:
            return self._update(entity, body, by="api")

    def _update(self, entity: str, body: dict[str, Any], *, by: str) -> dict[str, Any]:
        current = self._current(entity, body)
        sparse = body.get("sparse") is True or str(body.get("sparse")).lower() == "true"
        fields = _writable(entity)
        if sparse:
            merged = {k: json_copy(current[k]) for k in fields if k in current}
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
            for name in ("EmailStatus", "DeliveryInfo"):
                if name in current:
                    stored[name] = current[name]  # emailing is not undone by an edit
        kind = "update"
        if entity == "Customer" and stored.get("Active") != current.get("Active"):
            kind = "reactivate" if stored.get("Active") else "deactivate"
        self._touch(stored, entity, kind, by)
        self._unindex_doc(entity, current)
        self._store[entity][current["Id"]] = stored
        self._index_doc(entity, stored)
        if entity == "Customer" and stored["DisplayName"] != current["DisplayName"]:
            self._rename_references(stored)
        return json_copy(stored)

    def delete(self, entity: str, body: Any) -> dict[str, Any]:
        body = _object_body(body)
        if entity not in TRANSACTIONS:
            raise QboFault("500", "Unsupported Operation", "Operation Delete is not supported.")
        with self.lock:
            return self._delete(entity, self._current(entity, body), by="api")

    def _delete(self, entity: str, current: dict[str, Any], *, by: str) -> dict[str, Any]:
        del self._store[entity][current["Id"]]
        self._unindex_doc(entity, current)
        self._balances_stale = True
        self._paid.pop(current["Id"], None)
        self.deleted.append(json_copy(current))
        self._log_change(entity, current["Id"], "delete", by, None)
        return {"status": "Deleted", "domain": "QBO", "Id": current["Id"]}

    def void(self, entity: str, body: Any) -> dict[str, Any]:
        body = _object_body(body)
        if entity != "Invoice":
            raise QboFault("500", "Unsupported Operation", "Operation Void is not supported.")
        with self.lock:
            return self._void(self._current(entity, body), by="api")

    def _void(self, current: dict[str, Any], *, by: str) -> dict[str, Any]:
        """QBO keeps a voided invoice (DocNumber, customer, lines) with every amount zero.

        PrivateNote becomes "Voided", or "Voided - <the note it had>". It is ordinary data
        afterwards: a later update of the voided invoice (new lines, amounts again) keeps
        it unless the update sends its own PrivateNote, as QBO does not touch fields an
        update leaves out. So "voided" means PrivateNote starting with "Voided" AND zero
        amounts, never either alone. Applied payments are unlinked (they become credit).
        """
        for line in current["Line"]:
            line["Amount"] = Decimal("0.00")
            detail = line.get("SalesItemLineDetail")
            if isinstance(detail, dict) and "UnitPrice" in detail:
                detail["UnitPrice"] = Decimal("0")  # Qty x 0 = 0: the line stays valid
        current["TotalAmt"] = Decimal("0.00")
        current["Balance"] = Decimal("0.00")
        current["TxnTaxDetail"] = {"TotalTax": Decimal("0")}
        note = str(current.get("PrivateNote") or "")
        if not note.startswith(VOIDED_NOTE):
            current["PrivateNote"] = f"{VOIDED_NOTE} - {note}" if note else VOIDED_NOTE
        current["LinkedTxn"] = [
            link for link in current.get("LinkedTxn", []) if link.get("TxnType") != "Payment"
        ]
        self._paid.pop(current["Id"], None)
        self._touch(current, "Invoice", "void", by)
        return json_copy(current)

    # -- change data capture ---------------------------------------------------------------

    def cdc(self, entities: Sequence[str], since: datetime) -> list[dict[str, Any]]:
        """The `QueryResponse` list of a CDC answer: one object per entity, in order.

        Changes at or after `since` (inclusive, compared at the second MetaData shows, so
        a client may pass the last LastUpdatedTime it saw and lose nothing) count; each
        changed object appears once, as it is now, or as a deleted stub. More than
        CDC_MAX_OBJECTS changed: the ones whose last change is EARLIEST, ordered by last
        change ascending, so a client pages forward by time from the last one it got.
        `since` more than CDC_REACH before now: QboFault 400 (see `cdc_too_old`).
        """
        with self.lock:
            now = self.clock.now()
            since = since.replace(microsecond=0)
            if since < now - CDC_REACH:
                raise cdc_too_old(since.astimezone(self.zone), now - CDC_REACH, self.zone)
            if "Customer" in entities:
                self._refresh_balances()
            answers: list[dict[str, Any]] = []
            for entity in entities:
                changed = sorted(
                    (
                        (at, seq, ident)
                        for ident, (at, seq) in self._latest[entity].items()
                        if at.replace(microsecond=0) >= since
                    ),
                )[:CDC_MAX_OBJECTS]
                objects = [self._cdc_object(entity, ident, at) for at, _, ident in changed]
                if objects:
                    answers.append(
                        {entity: objects, "startPosition": 1, "maxResults": len(objects)}
                    )
                else:
                    answers.append({})
            return answers

    def _cdc_object(self, entity: str, ident: str, at: datetime) -> dict[str, Any]:
        stored = self._store[entity].get(ident)
        if stored is None:
            return {
                "domain": "QBO",
                "status": "Deleted",
                "Id": ident,
                "MetaData": {"LastUpdatedTime": self.stamp(at)},
            }
        return json_copy(stored)

    def _log_change(
        self,
        entity: str,
        ident: str,
        kind: str,
        by: str,
        sync_token: str | None,
        at: datetime | None = None,
    ) -> None:
        moment = at or self.clock.now()
        self._changes.append(ChangeRecord(moment, entity, ident, kind, by, sync_token))
        self._latest[entity][ident] = (moment, len(self._changes))

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

    def _touch(self, stored: dict[str, Any], entity: str, kind: str, by: str) -> None:
        self._balances_stale = True
        stored["SyncToken"] = str(int(stored["SyncToken"]) + 1)
        now = self.clock.now()
        stored["MetaData"]["LastUpdatedTime"] = self.stamp(now)
        self._log_change(entity, stored["Id"], kind, by, stored["SyncToken"], now)

    def _rename_references(self, customer: Mapping[str, Any]) -> None:
        """A transaction's CustomerRef.name is the customer's name now (QBO joins it)."""
        for entity in TRANSACTIONS:
            for stored in self._store[entity].values():
                if stored["CustomerRef"]["value"] == customer["Id"]:
                    stored["CustomerRef"]["name"] = customer["DisplayName"]

    def _index_doc(self, entity: str, stored: Mapping[str, Any]) -> None:
        if stored.get("DocNumber"):
            self._docs.setdefault((entity, stored["DocNumber"]), set()).add(stored["Id"])
        if entity == "Customer":
            self._names.setdefault(stored["DisplayName"].casefold(), set()).add(stored["Id"])

    def _unindex_doc(self, entity: str, stored: Mapping[str, Any]) -> None:
        if stored.get("DocNumber"):
            self._docs.get((entity, stored["DocNumber"]), set()).discard(stored["Id"])
        if entity == "Customer":
            self._names.get(stored["DisplayName"].casefold(), set()).discard(stored["Id"])

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
        for name in ("PrivateNote", "CustomerMemo", "BillEmail", "SalesTermRef", "BillAddr"):
            if body.get(name) is not None:
                built[name] = json_copy(body[name])
        billed = self._store["Customer"][customer["value"]]
        if "BillAddr" not in built and billed.get("BillAddr"):
            built["BillAddr"] = json_copy(billed["BillAddr"])  # QBO fills it in
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
        active = body.get("Active", True)
        active = active is True or str(active).lower() == "true"
        if not active:
            display = self._inactive_name(display, current)
        if display.casefold() in self.other_names or self._name_holder(display, current):
            raise duplicate_name()
        built: dict[str, Any] = {
            "DisplayName": display,
            "FullyQualifiedName": display,
            "PrintOnCheckName": plain_name(display),
            "Active": active,
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
                built[name] = json_copy(body[name])
        return built

    def _name_holder(
        self, display: str, current: Mapping[str, Any] | None
    ) -> dict[str, Any] | None:
        """The other customer whose stored DisplayName is `display` (ignoring case)."""
        holders = self._names.get(display.casefold(), set())
        for ident in sorted(holders, key=int):  # the oldest first, as a scan in Id order
            if current is None or ident != current["Id"]:
                return self._store["Customer"][ident]
        return None

    def _inactive_name(self, display: str, current: Mapping[str, Any] | None) -> str:
        """The DisplayName of an inactive customer: it always carries the suffix.

        A name that already has it (either spelling) is kept. When another inactive
        customer already holds "<name> (deleted)" we write "<name> (deleted-2)", then -3:
        the names stay unique; real QBO's choice here is not recorded in our notes.
        """
        if _SUFFIXED.match(display):
            return display
        suffix = self.inactive_suffix
        candidate = display + suffix
        number = 2
        while self._name_holder(candidate, current) is not None:
            candidate = f"{display}{suffix[:-1]}-{number})"
            number += 1
        return candidate

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


def cdc_too_old(since: datetime, earliest: datetime, zone: Any) -> QboFault:
    """CDC reaches 30 days back; the detail opens with real QBO's words for it."""
    return QboFault(
        "2010",
        "Request has invalid or unsupported property",
        f"Operation cdc with changedSince date {since.isoformat(timespec='seconds')} which is "
        f"older than fixed days is not supported. CDC reaches 30 days back: changedSince "
        f"must be on or after {earliest.astimezone(zone).isoformat(timespec='seconds')}",
        element="changedSince",
    )


def _set_line_amount(line: dict[str, Any], amount: Decimal) -> None:
    """A new line amount as QBO's form sets it, keeping Amount == Qty x UnitPrice."""
    line["Amount"] = cents(amount)
    detail = line.get("SalesItemLineDetail")
    if not isinstance(detail, dict) or "UnitPrice" not in detail:
        return
    qty = detail.get("Qty")
    if qty:
        rate = (cents(amount) / Decimal(str(qty))).quantize(Decimal("0.0000001"))
        if cents(rate * Decimal(str(qty))) == cents(amount):
            detail["UnitPrice"] = Decimal(format(rate.normalize(), "f"))
            return
    detail["Qty"] = Decimal("1")
    detail["UnitPrice"] = cents(amount)


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
        self._pending: dict[tuple[str, str], threading.Lock] = {}  # requestids being answered

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

    def authentication_failed(self, token: str) -> SimResponse:
        """QBO's 401: not the usual Fault shape (lower-case keys, epoch-ms `time`), always
        JSON, and its detail quotes the start of the token presented (TOKEN_ECHO chars):
        the reason a client must scrub it before logging."""
        body = {
            "warnings": None,
            "fault": {
                "error": [
                    {
                        "message": "message=AuthenticationFailed; errorCode=003200; statusCode=401",
                        "detail": f"Token expired: {token[:TOKEN_ECHO]}…",
                        "code": "3200",
                        "element": None,
                    }
                ],
                "type": "AUTHENTICATION",
            },
            "time": int(self.company.clock.now().timestamp() * 1000),
        }
        return SimResponse(
            401,
            jsonio.dumps(body).encode(),
            headers={"WWW-Authenticate": 'Bearer realm="Intuit", error="invalid_token"'},
        )

    def _handle(self, request: SimRequest) -> SimResponse:
        parts = request.path.strip("/").split("/")
        if len(parts) < 4 or parts[0] != "v3" or parts[1] != "company":
            return SimResponse(404, {"error": "not found"})
        authorization = request.header("authorization") or ""
        scheme, _, token = authorization.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token or self.check_access(token) != "ok":
            return self.authentication_failed(token)
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
        if resource == "cdc" and not rest:
            if request.method != "GET":
                return SimResponse(405, {"error": "method not allowed"})
            return self._cdc(request)
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

    def _cdc(self, request: SimRequest) -> SimResponse:
        """`GET cdc?entities=Invoice,Customer&changedSince=<ISO date-time with a zone>`."""
        raw_entities = request.param("entities")
        raw_since = request.param("changedSince")
        if raw_entities is None or not raw_entities.strip():
            raise required("entities")
        if raw_since is None or not raw_since.strip():
            raise required("changedSince")
        entities: list[str] = []
        for name in raw_entities.split(","):
            entity = RESOURCES.get(name.strip().lower())
            if entity is None:
                raise QboFault(
                    "2010",
                    "Request has invalid or unsupported property",
                    f"Property Name:entities specified is unsupported or invalid: "
                    f"{name.strip()!r} is not an entity CDC answers for "
                    f"({', '.join(ENTITIES)})",
                    element="entities",
                )
            if entity not in entities:
                entities.append(entity)
        try:
            since = parse_instant(raw_since)
        except ValueError:
            raise QboFault(
                "2010",
                "Request has invalid or unsupported property",
                "Property Name:changedSince specified is unsupported or invalid: "
                f"{raw_since!r} is not an ISO 8601 date-time with Z or an offset",
                element="changedSince",
            ) from None
        answers = self.company.cdc(entities, since)
        return self._ok({"CDCResponse": [{"QueryResponse": answers}]})

    def _replayable(
        self, request: SimRequest, action: Callable[[SimRequest], SimResponse]
    ) -> SimResponse:
        """Answer a write, or replay the stored answer of an earlier one with its requestid.

        Only requests with one requestid wait for each other (a retry arriving while the
        first attempt is still being answered gets its answer); others run at once, as
        they do in QBO."""
        request_id = request.param("requestid")
        if not request_id or not self.company.settings.honour_requestid:
            return _faults_as_responses(self, action, request)
        key = (request.path, request_id)
        with self._replies_lock:
            stored = self._replies.get(key)
            if stored is not None:
                return _copied_response(stored)
            gate = self._pending.setdefault(key, threading.Lock())
        with gate:
            with self._replies_lock:
                stored = self._replies.get(key)
            if stored is not None:
                return _copied_response(stored)
            response = _faults_as_responses(self, action, request)
            with self._replies_lock:
                self._replies[key] = _copied_response(response)
                self._pending.pop(key, None)
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


def _copied_response(response: SimResponse) -> SimResponse:
    return replace(response, body=json_copy(response.body), headers=dict(response.headers))


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
