"""The simulated 4D EMR: a practice's patients and price quotes behind 4D's public API.

`Practice` holds the data (mutable by tests: advance the clock, change a quote's status,
edit it, add quotes); `FourDService` answers the endpoints of API-NOTES.md the way the
API gateway and 4D do: the three credential headers checked (401 with a short message),
`quotes/list?fromDate=` accepting only `YYYY-MM-DDTHH:mm:ss` (UTC, no zone) and filtering
on each quote's last-modified time, 404 for an unknown quote or patient, 400 for a bad
parameter. Query parameter names are matched case-insensitively, as ASP.NET does.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from fourdqbo.sandbox.base import SimClock, SimRequest, SimResponse

STATUS_NAMES = {0: "Inactive", 1: "Active", 4: "Completed", 7: "Archived"}
FROM_DATE_FORMAT = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}")
PLAIN_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
PAGE_SIZE = 50
_KEEP: Any = object()  # "leave this field as it is" in edit_quote


@dataclass
class PatientRecord:
    id: int
    first_name: str
    last_name: str
    middle_name: str | None = None
    suffix: str | None = None
    date_of_birth: date = date(1980, 1, 1)
    gender: str = "U"

    @property
    def name(self) -> str:
        parts = [self.first_name, self.middle_name, self.last_name, self.suffix]
        return " ".join(part for part in parts if part)

    def to_json(self) -> dict[str, Any]:
        return {
            "Id": self.id,
            "FirstName": self.first_name,
            "MiddleName": self.middle_name,
            "LastName": self.last_name,
            "Name": self.name,
            "DateOfBirth": self.date_of_birth.isoformat() + "T00:00:00",
            "Gender": self.gender,
        }


@dataclass
class QuoteRecord:
    """One price quote. `modified_at` is 4D's internal last-modified time (not in the JSON)."""

    number: str
    version: int
    status_id: int
    patient_id: int
    quote_date: datetime
    modified_at: datetime
    created_by: dict[str, Any] | None = None
    provider: dict[str, Any] | None = None
    procedures: list[dict[str, Any]] | None = field(default_factory=list)
    supplies: list[dict[str, Any]] | None = field(default_factory=list)
    anesth_amt: Decimal | None = None
    anesthesia_group: dict[str, Any] | None = None
    facility_amt: Decimal | None = None
    number_is_text: bool = False  # PriceQuoteNo written as a JSON string, not a number
    date_fraction_digits: int = 0  # 0: "...:31Z", 3: "...:31.537Z", 7: "...:31.5370000Z"
    omitted: frozenset[str] = frozenset()  # keys left out of the full quote entirely
    external_id: str | None = None

    @property
    def status_name(self) -> str:
        return STATUS_NAMES.get(self.status_id, "Unknown")

    @property
    def completed(self) -> bool:
        return self.status_id == 4

    def total(self) -> Decimal:
        """4D's TotalAmt: net procedures, every supply, anesthesia and facility."""
        total = Decimal("0")
        for procedure in self.procedures or []:
            total += Decimal(procedure.get("Amount") or 0) - Decimal(
                procedure.get("DiscountAmount") or 0
            )
        for supply in self.supplies or []:
            total += Decimal(supply.get("Quantity") or 0) * Decimal(supply.get("UnitCost") or 0)
        total += (self.anesth_amt or Decimal("0")) + (self.facility_amt or Decimal("0"))
        return total.quantize(Decimal("0.01"))

    def price_quote_no(self) -> int | str:
        return self.number if self.number_is_text else int(self.number)

    def date_text(self) -> str:
        moment = self.quote_date.astimezone(UTC)
        text = moment.strftime("%Y-%m-%dT%H:%M:%S")
        if self.date_fraction_digits:
            text += "." + f"{moment.microsecond:06d}0"[: self.date_fraction_digits]
        return text + "Z"

    def summary_json(self, patient_name: str | None) -> dict[str, Any]:
        procedures = self.procedures or []
        return {
            "PriceQuoteNo": self.price_quote_no(),
            "Version": self.version,
            "PriceQuoteStatus": {"Id": self.status_id, "Name": self.status_name},
            "Patient": {"Id": self.patient_id, "Name": patient_name},
            "ExternalId": self.external_id,
            "ProcedureDescription": procedures[0].get("ProcedureName") if procedures else None,
        }

    def full_json(self, patient_name: str | None) -> dict[str, Any]:
        body: dict[str, Any] = {
            "PriceQuoteNo": self.price_quote_no(),
            "Version": self.version,
            "PriceQuoteDate": self.date_text(),
            "CreatedBy": self.created_by,
            "Patient": {"Id": self.patient_id, "Name": patient_name},
            "Provider": self.provider,
            "PriceQuoteStatus": {"Id": self.status_id, "Name": self.status_name},
            "Procedures": _copy_list(self.procedures),
            "Supplies": _copy_list(self.supplies),
            "AnesthAmt": self.anesth_amt,
            "AnesthesiaGroup": self.anesthesia_group,
            "FacilityAmt": self.facility_amt,
            "TotalAmt": self.total(),
            "ExternalId": self.external_id,
        }
        for key in self.omitted:
            body.pop(key, None)
        return body


def _copy_list(value: list[dict[str, Any]] | None) -> list[dict[str, Any]] | None:
    return None if value is None else [dict(entry) for entry in value]


class Practice:
    """The practice's data, shared by the 4D service and the tests. Thread-safe."""

    def __init__(self, clock: SimClock) -> None:
        self.clock = clock
        self.lock = threading.RLock()
        self.patients: dict[int, PatientRecord] = {}
        self.quotes_by_number: dict[str, QuoteRecord] = {}
        self.appointments: list[dict[str, Any]] = []
        self.charges: list[dict[str, Any]] = []
        # Builds a new quote with realistic content; set by the seed (see seed.QuoteFactory).
        self.factory: Callable[..., QuoteRecord] | None = None

    # -- reading ------------------------------------------------------------------------

    def quote(self, number: str | int) -> QuoteRecord:
        with self.lock:
            return self.quotes_by_number[str(number)]

    def quotes(self) -> list[QuoteRecord]:
        with self.lock:
            return sorted(self.quotes_by_number.values(), key=lambda q: int(q.number))

    def numbers_with_status(self, status_id: int) -> list[str]:
        return [q.number for q in self.quotes() if q.status_id == status_id]

    def completed_numbers(self) -> list[str]:
        return self.numbers_with_status(4)

    def patient(self, patient_id: int | str) -> PatientRecord:
        with self.lock:
            return self.patients[int(patient_id)]

    def patient_of(self, number: str | int) -> PatientRecord:
        return self.patient(self.quote(number).patient_id)

    def oldest_modified(self) -> datetime:
        """The earliest last-modified time of any quote (now, when there are none)."""
        with self.lock:
            return min(
                (q.modified_at for q in self.quotes_by_number.values()), default=self.clock.now()
            )

    # -- changing (what happens in 4D between two sync runs) -----------------------------

    def set_status(self, number: str | int, status_id: int) -> QuoteRecord:
        """Change a quote's status: last-modified becomes now; the Version stays."""
        with self.lock:
            quote = self.quote(number)
            quote.status_id = status_id
            quote.modified_at = self.clock.now()
            return quote

    def edit_quote(
        self,
        number: str | int,
        *,
        procedures: Any = _KEEP,
        supplies: Any = _KEEP,
        anesth_amt: Any = _KEEP,
        anesthesia_group: Any = _KEEP,
        facility_amt: Any = _KEEP,
        status_id: int | None = None,
    ) -> QuoteRecord:
        """Edit a quote's content: Version + 1, last-modified becomes now.

        Fields not given stay. Without any field, the first procedure's amount grows by 10.
        """
        with self.lock:
            quote = self.quote(number)
            changes = {
                "procedures": procedures,
                "supplies": supplies,
                "anesth_amt": anesth_amt,
                "anesthesia_group": anesthesia_group,
                "facility_amt": facility_amt,
            }
            given = {name: value for name, value in changes.items() if value is not _KEEP}
            if not given:
                procedures_now = [dict(p) for p in quote.procedures or []]
                if procedures_now:
                    amount = Decimal(procedures_now[0].get("Amount") or 0) + Decimal("10.00")
                    procedures_now[0]["Amount"] = amount
                else:
                    procedures_now = [
                        {
                            "ProcedureName": "Consultation",
                            "Amount": Decimal("150.00"),
                            "DiscountAmount": None,
                        }
                    ]
                given["procedures"] = procedures_now
            for name, value in given.items():
                if name in ("anesth_amt", "facility_amt") and value is not None:
                    value = Decimal(str(value))
                setattr(quote, name, value)
            if status_id is not None:
                quote.status_id = status_id
            quote.version += 1
            quote.modified_at = self.clock.now()
            return quote

    def add_quote(self, **overrides: Any) -> QuoteRecord:
        """A new quote (next number, modified now); `overrides` set QuoteRecord fields."""
        if self.factory is None:
            raise RuntimeError("practice has no quote factory (not seeded)")
        with self.lock:
            quote = self.factory(**overrides)
            self.quotes_by_number[quote.number] = quote
            return quote

    def touch(self, number: str | int) -> QuoteRecord:
        """Bump last-modified without any change (4D does this on a mere save)."""
        with self.lock:
            quote = self.quote(number)
            quote.modified_at = self.clock.now()
            return quote


class FourDService:
    """4D's public API behind its API gateway, over a `Practice`."""

    def __init__(
        self, practice: Practice, *, client_id: str, client_secret: str, subscription_key: str
    ) -> None:
        self.practice = practice
        self.client_id = client_id
        self.client_secret = client_secret
        self.subscription_key = subscription_key

    def handle(self, request: SimRequest) -> SimResponse:
        refusal = self._check_credentials(request)
        if refusal is not None:
            return refusal
        if request.method != "GET":
            return _message(
                405, f"The requested resource does not support http method '{request.method}'."
            )
        params = {name.lower(): values[0] for name, values in request.query.items() if values}
        path = request.path.strip("/")
        with self.practice.lock:
            if path == "quotes/list":
                return self._quote_list(params)
            if path == "quotes":
                return self._quote(params)
            if path == "patients":
                return self._patient_search(params)
            if path.startswith("patients/") and path.count("/") == 1:
                return self._patient(path.split("/", 1)[1])
            if path == "appointments":
                return self._appointments(params)
            if path == "reports/charges":
                return self._charges(params)
        return SimResponse(404, {"statusCode": 404, "message": "Resource not found"})

    def _check_credentials(self, request: SimRequest) -> SimResponse | None:
        # The gateway checks the subscription key first (Azure API Management style).
        key = request.header("subscription-key")
        if not key:
            return SimResponse(
                401,
                {
                    "statusCode": 401,
                    "message": "Access denied due to missing subscription key. Make sure to "
                    "include subscription key when making requests to an API.",
                },
            )
        if key != self.subscription_key:
            return SimResponse(
                401,
                {
                    "statusCode": 401,
                    "message": "Access denied due to invalid subscription key. Make sure to "
                    "provide a valid key for an active subscription.",
                },
            )
        client_id = request.header("client-id")
        client_secret = request.header("client-secret")
        if not client_id or not client_secret:
            return _message(401, "Missing credentials")
        if client_id != self.client_id or client_secret != self.client_secret:
            return _message(401, "Invalid client-id or client-secret")
        return None

    def _quote_list(self, params: dict[str, str]) -> SimResponse:
        text = params.get("fromdate")
        if text is None:
            return _message(400, "The fromDate field is required.")
        if not FROM_DATE_FORMAT.fullmatch(text):
            return _message(400, f"The value '{text}' is not valid for fromDate.")
        try:
            since = datetime.fromisoformat(text).replace(tzinfo=UTC)
        except ValueError:
            return _message(400, f"The value '{text}' is not valid for fromDate.")
        rows = [
            quote.summary_json(self._patient_name(quote.patient_id))
            for quote in self.practice.quotes()
            if quote.modified_at >= since
        ]
        return SimResponse(200, rows)

    def _quote(self, params: dict[str, str]) -> SimResponse:
        number = params.get("quotenumber")
        if not number:
            return _message(400, "The quoteNumber field is required.")
        quote = self.practice.quotes_by_number.get(number.strip())
        if quote is None:
            return _message(404, "Price quote not found")
        return SimResponse(200, quote.full_json(self._patient_name(quote.patient_id)))

    def _patient(self, ident: str) -> SimResponse:
        patient = self.practice.patients.get(int(ident)) if ident.isdigit() else None
        if patient is None:
            return _message(404, "Patient not found")
        return SimResponse(200, patient.to_json())

    def _patient_search(self, params: dict[str, str]) -> SimResponse:
        first = (params.get("firstname") or "").strip().casefold()
        last = (params.get("lastname") or "").strip().casefold()
        dob_text = (params.get("dob") or "").strip()
        if not (first or last or dob_text):
            return _message(400, "At least one of firstname, lastname or dob is required.")
        dob: date | None = None
        if dob_text:
            if not PLAIN_DATE.fullmatch(dob_text):
                return _message(400, f"The value '{dob_text}' is not valid for dob.")
            try:
                dob = date.fromisoformat(dob_text)
            except ValueError:
                return _message(400, f"The value '{dob_text}' is not valid for dob.")
        page = _positive(params.get("page"), 1)
        size = _positive(params.get("pagesize"), PAGE_SIZE)
        found = [
            p
            for p in sorted(self.practice.patients.values(), key=lambda p: p.id)
            if (not first or p.first_name.casefold() == first)
            and (not last or p.last_name.casefold() == last)
            and (dob is None or p.date_of_birth == dob)
        ]
        items = found[(page - 1) * size : page * size]
        return SimResponse(
            200,
            {
                "Items": [p.to_json() for p in items],
                "TotalCount": len(found),
                "Page": page,
                "PageSize": size,
            },
        )

    def _appointments(self, params: dict[str, str]) -> SimResponse:
        day = params.get("date")
        if day is not None and not _is_date(day):
            return _message(400, f"The value '{day}' is not valid for date.")
        rows = [
            dict(a) for a in self.practice.appointments if day is None or a["StartTime"][:10] == day
        ]
        return SimResponse(200, rows)

    def _charges(self, params: dict[str, str]) -> SimResponse:
        begin = params.get("begindate")
        end = params.get("enddate")
        for name, value in (("beginDate", begin), ("endDate", end)):
            if value is None:
                return _message(400, f"The {name} field is required.")
            if not _is_date(value):
                return _message(400, f"The value '{value}' is not valid for {name}.")
        assert begin is not None and end is not None
        rows = [dict(c) for c in self.practice.charges if begin <= c["ServiceDate"][:10] <= end]
        return SimResponse(200, rows)

    def _patient_name(self, patient_id: int) -> str | None:
        patient = self.practice.patients.get(patient_id)
        return None if patient is None else patient.name


def _message(status: int, message: str) -> SimResponse:
    return SimResponse(status, {"message": message})


def _is_date(text: str) -> bool:
    if not PLAIN_DATE.fullmatch(text):
        return False
    try:
        date.fromisoformat(text)
    except ValueError:
        return False
    return True


def _positive(text: str | None, default: int) -> int:
    if text is None or not text.isdigit() or int(text) < 1:
        return default
    return int(text)


def patient_names(patients: Iterable[PatientRecord]) -> list[str]:
    """Every patient name (for tests that check nothing leaked into logs)."""
    return [p.name for p in patients]
