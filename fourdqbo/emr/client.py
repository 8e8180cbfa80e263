"""The 4D EMR public API client: read-only calls, turned into typed records.

Built on `fourdqbo.http.HttpTransport` (retries on 429/5xx/network errors honouring
`Retry-After`, a bound on requests in flight, a request counter). Every call is a read,
so every call may be retried.

Errors: 401/403 become `AuthError` carrying 4D's own short message; 404 on a single
patient or quote becomes `NotFound`; other refusals `UpstreamError` with the status; a
body that is not JSON or has the wrong shape, or a record that fails to parse, becomes
`MalformedPayload` naming the quote number when known and never patient data.

Privacy: every patient name and birth date this client parses is registered with
`fourdqbo.log.register_sensitive`, so the log filter scrubs it wherever it might appear.
Log lines carry quote numbers, patient ids and counts only.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from datetime import date, datetime
from typing import Any, TypeVar
from urllib.parse import quote as url_quote

import httpx

from fourdqbo import jsonio
from fourdqbo.config import Settings
from fourdqbo.emr.records import (
    Appointment,
    Charge,
    Patient,
    Quote,
    QuoteSummary,
    RecordError,
    quote_number,
)
from fourdqbo.errors import (
    AuthError,
    ConfigError,
    FourdqboError,
    MalformedPayload,
    UpstreamError,
)
from fourdqbo.http import ApiClient, HttpTransport, RequestCounter, RetryPolicy
from fourdqbo.log import REDACTED, redact, register_sensitive
from fourdqbo.timefmt import fourd_datetime

log = logging.getLogger(__name__)

SERVICE = "fourd"
# Keys under which a paged answer may hold its list, most likely first. The page shape of
# `patients` is not documented; other list endpoints are tolerated the same way.
LIST_KEYS = (
    "Items",
    "items",
    "Data",
    "data",
    "Results",
    "results",
    "Patients",
    "patients",
    "Quotes",
    "quotes",
    "Appointments",
    "appointments",
    "Charges",
    "charges",
    "Records",
    "records",
    "Value",
    "value",
)
# Generic wrappers a single record might arrive in (domain keys such as "Procedures" excluded).
ENVELOPE_KEYS = ("Data", "data", "Items", "items", "Result", "result", "Value", "value")
RECORD_KEYS = ("PriceQuoteNo", "Id", "PatientId", "id")
TOTAL_KEYS = ("TotalCount", "totalCount", "Total", "total", "TotalRecords", "totalRecords")
MAX_PAGES = 100  # a search that needs more pages than this is not an operator's search
MESSAGE_KEYS = ("message", "Message", "error_description", "error", "Error", "detail", "title")
MAX_MESSAGE = 160
# 502/503/504 say 4D (or its gateway) is down as a whole, not that one quote is bad.
SERVICE_DOWN_STATUSES = frozenset({429, 502, 503, 504})

R = TypeVar("R")


class NotFound(UpstreamError):
    """4D has no patient or quote with that id/number (HTTP 404)."""


def aborts_run(error: BaseException) -> bool:
    """True when an error from 4D means the whole run must stop rather than one quote fail.

    Refused credentials, an unreachable host and a throttled or down service affect every
    later call too; a 404, a 500 on one quote or a malformed record do not.
    """
    if isinstance(error, AuthError):
        return True
    if isinstance(error, NotFound | MalformedPayload | ConfigError):
        return False
    if isinstance(error, UpstreamError):
        return error.status is None or error.status in SERVICE_DOWN_STATUSES
    return not isinstance(error, FourdqboError)


class FourDClient(ApiClient):
    """Read-only client of the 4D EMR public API. Use as a context manager."""

    def __init__(
        self,
        settings: Settings,
        *,
        counter: RequestCounter | None = None,
        transport: httpx.BaseTransport | None = None,
        policy: RetryPolicy | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        settings.require_fourd()
        self._secrets = tuple(
            s for s in (settings.fourd_client_secret, settings.fourd_subscription_key) if s
        )
        register_sensitive(*self._secrets)
        self.max_in_flight = settings.fourd_max_in_flight
        timeout = settings.http_timeout_seconds
        self._http = HttpTransport(
            service=SERVICE,
            base_url=settings.fourd_base_url.rstrip("/") + "/",
            headers={
                "client-id": settings.fourd_client_id,
                "client-secret": settings.fourd_client_secret,
                "subscription-key": settings.fourd_subscription_key,
                "Accept": "application/json",
            },
            policy=policy,
            max_in_flight=self.max_in_flight,
            counter=counter,
            timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
            transport=transport,
            sleep=sleep,
        )

    # -- patients ----------------------------------------------------------------------

    def get_patient(self, patient_id: str) -> Patient:
        ident = str(patient_id).strip()
        if not ident:
            raise ConfigError("a patient id is required")
        missing = f"4D has no patient {ident}"
        document = self._get(
            f"patients/{url_quote(ident, safe='')}", what=f"patient {ident}", missing=missing
        )
        record = _single(document)
        if record is None:
            raise NotFound(missing, service=SERVICE, status=404)
        patient = self._parse(Patient.parse, record, f"patient {ident}")
        _register_patient(patient)
        log.debug("4d: fetched patient %s", patient.id)
        return patient

    def search_patients(
        self,
        first_name: str | None = None,
        last_name: str | None = None,
        dob: date | None = None,
    ) -> list[Patient]:
        params: dict[str, str] = {}
        if first_name:
            params["firstname"] = first_name
        if last_name:
            params["lastname"] = last_name
        if dob is not None:
            params["dob"] = dob.isoformat()
        # The search terms are patient data too: scrub them from any error or log line.
        register_sensitive(*params.values())
        patients: list[Patient] = []
        seen: set[str] = set()
        page = 1
        while True:
            # The page shape is not documented: follow `page=` only while the answer says
            # there are more (a total count) and each page brings patients not seen yet.
            query = params if page == 1 else {**params, "page": str(page)}
            document = self._get("patients", params=query, what="patients")
            fresh: list[Patient] = []
            for i, item in enumerate(_items(document, "patients")):
                patient = self._parse(Patient.parse, item, f"patient #{i + 1} of the search")
                _register_patient(patient)
                if patient.id not in seen:
                    seen.add(patient.id)
                    fresh.append(patient)
            patients.extend(fresh)
            total = _total_count(document)
            if total is None or not fresh or len(patients) >= total or page >= MAX_PAGES:
                break
            page += 1
        log.debug("4d: patient search found %d in %d page(s)", len(patients), page)
        return patients

    # -- appointments and charges ------------------------------------------------------

    def list_appointments(self, on: date | None = None) -> list[Appointment]:
        params = {"date": on.isoformat()} if on is not None else None
        document = self._get("appointments", params=params, what="appointments")
        appointments = [
            self._parse(Appointment.parse, item, f"appointment #{i + 1}")
            for i, item in enumerate(_items(document, "appointments"))
        ]
        for appointment in appointments:
            register_sensitive(appointment.patient_name, *_patient_values(appointment.raw))
        log.debug("4d: %d appointments", len(appointments))
        return appointments

    def list_charges(self, begin: date, end: date) -> list[Charge]:
        if begin > end:
            raise ConfigError("the charges period ends before it begins")
        params = {"beginDate": begin.isoformat(), "endDate": end.isoformat()}
        document = self._get("reports/charges", params=params, what="charges")
        charges = [
            self._parse(Charge.parse, item, f"charge #{i + 1}")
            for i, item in enumerate(_items(document, "charges"))
        ]
        for charge in charges:
            register_sensitive(charge.patient_name, *_patient_values(charge.raw))
        log.debug("4d: %d charges %s..%s", len(charges), begin, end)
        return charges

    # -- quotes ------------------------------------------------------------------------

    def list_quotes(self, since: datetime) -> list[QuoteSummary]:
        """Summaries of the quotes changed since `since` (an aware datetime)."""
        params = {"fromDate": fourd_datetime(since)}
        document = self._get("quotes/list", params=params, what="quotes/list")
        summaries: list[QuoteSummary] = []
        for i, item in enumerate(_items(document, "quotes/list")):
            summary = self._parse(
                QuoteSummary.parse, item, f"{_quote_label(item)} in quotes/list (row {i + 1})"
            )
            register_sensitive(summary.patient_name)
            summaries.append(summary)
        log.info("4d: %d quotes changed since %s", len(summaries), params["fromDate"])
        return summaries

    def get_quote(self, number: str) -> Quote:
        """One quote in full. Raises NotFound when 4D has no such quote."""
        try:
            wanted = quote_number(number)
        except RecordError:
            raise ConfigError("not a price quote number") from None
        missing = f"4D has no quote {wanted}"
        document = self._get(
            "quotes", params={"quoteNumber": wanted}, what=f"quote {wanted}", missing=missing
        )
        record = _single(document)
        if record is None:
            raise NotFound(missing, service=SERVICE, status=404)
        quote = self._parse(Quote.parse, record, f"quote {wanted}")
        register_sensitive(quote.patient_name)
        if quote.number != wanted:
            # Never let the answer for another quote stand in for this one.
            raise MalformedPayload(
                f"4D answered quote {wanted} with quote {quote.number}", service=SERVICE
            )
        log.debug("4d: fetched quote %s version %d", quote.number, quote.version)
        return quote

    def get_quotes(self, numbers: Iterable[str]) -> dict[str, Quote | FourdqboError]:
        """Fetch quotes concurrently (at most FOURD_MAX_IN_FLIGHT at once).

        A failure that concerns one quote (not found, malformed, a 500 on it) becomes that
        quote's value; one that concerns 4D as a whole (credentials refused, unreachable,
        throttled or down, see `aborts_run`) is raised, since the run must stop. Keys are
        the numbers as given, in their first-seen order.
        """
        wanted = list(dict.fromkeys(str(n) for n in numbers))
        results: dict[str, Quote | FourdqboError] = {}
        if not wanted:
            return results
        pool = ThreadPoolExecutor(
            max_workers=min(self.max_in_flight, len(wanted)), thread_name_prefix="fourd"
        )
        aborted = False
        try:
            futures: dict[Future[Quote], str] = {pool.submit(self.get_quote, n): n for n in wanted}
            pending = set(futures)
            while pending:
                done, pending = wait(pending, return_when=FIRST_EXCEPTION)
                for future in done:
                    error = future.exception()
                    if error is not None and aborts_run(error):
                        aborted = True
                        raise error
        finally:
            # Aborting, the fetches still under way are not waited for: the run must stop
            # writing now, not once they are answered (they are cancelled if not begun).
            pool.shutdown(wait=not aborted, cancel_futures=True)
        for future, number in futures.items():
            error = future.exception()
            if error is None:
                results[number] = future.result()
            elif isinstance(error, FourdqboError):
                results[number] = error
            else:  # pragma: no cover - aborts_run already raised anything unexpected
                raise error
        failed = sum(1 for value in results.values() if isinstance(value, FourdqboError))
        log.info("4d: fetched %d quotes, %d failed", len(wanted) - failed, failed)
        return results

    # -- plumbing ----------------------------------------------------------------------

    def _get(
        self,
        path: str,
        *,
        what: str,
        params: Mapping[str, str] | None = None,
        missing: str | None = None,
    ) -> Any:
        """GET a path below the base URL and return its JSON (None for a 204).

        `missing` is the NotFound message for a 404; without it a 404 means the path
        itself is wrong (most likely FOURD_BASE_URL).
        """
        response = self._http.request("GET", path, idempotent=True, params=params)
        status = response.status_code
        if status in (401, 403):
            raise AuthError(
                f"4D refused the credentials (HTTP {status}): {self._short_message(response)}",
                service=SERVICE,
                status=status,
            )
        if status == 404 and missing is not None:
            raise NotFound(missing, service=SERVICE, status=404)
        if status == 404:
            raise UpstreamError(
                f"4D answered HTTP 404 for {what} (check FOURD_BASE_URL): "
                f"{self._short_message(response)}",
                service=SERVICE,
                status=404,
            )
        if not 200 <= status < 300:
            raise UpstreamError(
                f"4D answered HTTP {status} for {what}: {self._short_message(response)}",
                service=SERVICE,
                status=status,
            )
        if status == 204 or not response.content.strip():
            if status == 204:
                return None
            raise MalformedPayload(f"4D sent an empty answer for {what}", service=SERVICE)
        try:
            return jsonio.loads(response.content)
        except (ValueError, RecursionError):
            # ValueError covers bad JSON, bad UTF-8 and integers too long to convert.
            raise MalformedPayload(
                f"4D sent an answer for {what} that is not JSON", service=SERVICE, status=status
            ) from None

    def _parse(self, parse: Callable[[Any], R], data: Any, what: str) -> R:
        try:
            return parse(data)
        except RecordError as exc:
            if isinstance(data, Mapping):
                # Unusable, but still patient data: keep its names out of any later log line.
                register_sensitive(*_patient_values(data))
            error = MalformedPayload(f"4D sent a malformed {what}: {exc}", service=SERVICE)
            version = data.get("Version") if isinstance(data, Mapping) else None
            if isinstance(version, int) and not isinstance(version, bool):
                error.version = version
            raise error from None

    def _short_message(self, response: httpx.Response) -> str:
        """4D's own explanation, on one short line, with any secret blanked out."""
        text = ""
        try:
            document = jsonio.loads(response.content) if response.content.strip() else None
        except (ValueError, RecursionError):
            document = None
        if isinstance(document, Mapping):
            text = _message_in(document)
        elif isinstance(document, str):
            text = document
        elif document is None:
            text = response.content.decode("utf-8", errors="replace")
        line = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
        if not line:
            line = response.reason_phrase or "no message"
        for secret in self._secrets:
            line = line.replace(secret, REDACTED)
        line = redact(line)
        if len(line) > MAX_MESSAGE:
            line = line[: MAX_MESSAGE - 1].rstrip() + "…"
        return line


def _message_in(document: Mapping[str, Any]) -> str:
    for key in MESSAGE_KEYS:
        value = document.get(key)
        if isinstance(value, str) and value.strip():
            return value
        if isinstance(value, Mapping):
            nested = _message_in(value)
            if nested:
                return nested
    return ""


def _items(document: Any, what: str) -> list[Any]:
    """The list in an answer: a bare list, or an object holding one (key unknown)."""
    if document is None:
        return []
    if isinstance(document, list):
        return document
    if isinstance(document, Mapping):
        for key in LIST_KEYS:
            value = document.get(key)
            if isinstance(value, list):
                return value
            if key in document and value is None:
                return []
        lists = [value for value in document.values() if isinstance(value, list)]
        if len(lists) == 1:
            log.info("4d: %s answer holds its list under an unexpected key", what)
            return lists[0]
    raise MalformedPayload(f"4D sent an answer for {what} that holds no list", service=SERVICE)


def _total_count(document: Any) -> int | None:
    """The total number of matches a paged answer announces, if it announces one."""
    if not isinstance(document, Mapping):
        return None
    for key in TOTAL_KEYS:
        value = document.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return value
    return None


def _single(document: Any) -> Any:
    """One object from an answer that may also come as a one-element list or wrapped in a
    generic envelope (`{"Data": {...}}`, `{"items": [...]}`); None if empty.
    """
    if isinstance(document, Mapping) and not any(key in document for key in RECORD_KEYS):
        for key in ENVELOPE_KEYS:
            if isinstance(document.get(key), list | Mapping):
                return _single(document[key])
    if isinstance(document, list):
        if not document:
            return None
        if len(document) > 1:
            raise MalformedPayload(
                "4D sent several records where one was expected", service=SERVICE
            )
        return document[0]
    return document


def _quote_label(item: Any) -> str:
    """`quote 10023` when the row's number is usable, else just `quote` (never other content)."""
    if isinstance(item, Mapping):
        try:
            return f"quote {quote_number(item.get('PriceQuoteNo'))}"
        except RecordError:
            pass
    return "quote"


PATIENT_KEY_HINTS = ("name", "birth", "dob")


def _register_patient(patient: Patient) -> None:
    register_sensitive(
        patient.name,
        patient.first_name,
        patient.last_name,
        patient.date_of_birth,
        *_patient_values(patient.raw, every_key=True),
    )


def _patient_values(raw: Mapping[str, Any], *, every_key: bool = False) -> list[str]:
    """Name and birth-date values in a raw record, to register as sensitive.

    In a patient record every `*name*`/`*birth*`/`*dob*` key counts (middle names,
    preferred names...). Elsewhere only keys that say they are the patient's, and the
    fields of a nested `Patient` object, so staff and procedure names stay readable.
    """
    found: list[str] = []
    for key, value in raw.items():
        lowered = str(key).lower()
        if isinstance(value, str) and any(hint in lowered for hint in PATIENT_KEY_HINTS):
            if every_key or lowered.startswith("patient"):
                found.append(value)
        elif isinstance(value, Mapping) and lowered == "patient":
            found.extend(_patient_values(value, every_key=True))
    return found


__all__ = ["FourDClient", "NotFound", "aborts_run"]
