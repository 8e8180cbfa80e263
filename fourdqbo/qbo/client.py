"""The QuickBooks Online accounting API client: queries, paging, batch and single writes.

Built on `fourdqbo.http.HttpTransport` (retries, in-flight bound, request counting) and
responsible for everything QBO-specific on top of it:

- every call goes to `/v3/company/{realm}/…` with `minorversion`, a Bearer token from the
  token source and JSON headers; each answer's `intuit_tid` is logged (and named in errors);
- pacing below QBO's throttle: one token bucket for requests (a batch of N items costs
  N), one for batch POSTs, both charged again on every retry;
- throttling (a 429, or a 403 whose fault is ThrottleExceeded, XML or JSON) is retried
  by the transport's policy for up to one throttle window (`QBO_RATE_WINDOW_SECONDS`);
- a 401 (or a 3200 fault) is answered by exactly one forced token refresh and one retry;
- QBO faults, JSON or XML (`fourdqbo.qbo.faults`), become `QBOFault` with a scrubbed
  detail; unusable JSON becomes `MalformedPayload`;
- writes carry a `requestid` and are sent as non-idempotent, so a write whose answer is
  lost raises `OutcomeUnknown` instead of being repeated: the caller looks the document
  up (by DocNumber) before writing again. Every write answer's `intuit_tid` reaches the
  caller (`WriteAnswer.intuit_tid`, `BatchResult.intuit_tid`);
- reads (queries, query-only batches, CDC) and writes are counted apart
  (`requests_by_kind`): Intuit meters the reads. Nothing is read back that a write's
  answer already returned.

The client never prints; it returns typed records (`fourdqbo.qbo.records`) or raw dicts.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import date, datetime
from typing import Any, NamedTuple, Protocol
from urllib.parse import quote

import httpx

from fourdqbo import jsonio
from fourdqbo.config import Settings
from fourdqbo.errors import AuthError, MalformedPayload, OutcomeUnknown, QBOFault, UpstreamError
from fourdqbo.http import (
    ApiClient,
    HttpTransport,
    Pacing,
    RateLimiter,
    RequestCounter,
    RetryPolicy,
)
from fourdqbo.qbo import faults
from fourdqbo.qbo import query as q
from fourdqbo.qbo.cdc import CdcChanges, collect
from fourdqbo.qbo.faults import fault_from, with_tid
from fourdqbo.qbo.records import Customer, Invoice, Item

log = logging.getLogger(__name__)

SERVICE = "qbo"
MAX_BATCH_ITEMS = 30  # QBO's limit per batch POST
# Units that may go out at once (a fifth of 500 a minute); the rest is paced. More than one
# batch: a pause in the run (the writer waiting for the next chunk) leaves allowance
# the bucket would otherwise forget; the sliding log still caps every window.
REQUEST_BURST = 100
# Batch POSTs that may leave back to back before the batch limiter spaces them out (the
# sliding log still caps every window at QBO_MAX_BATCHES_PER_MINUTE). With 1, every run
# paid 60/40 = 1.5 s between its few batches (CDC, look-ups, customers, invoices) even
# when it was nowhere near the limit.
BATCH_BURST = 5
OUTCOME_UNKNOWN_CODE = "outcome-unknown"  # QBOFault.code of a batch item QBO did not answer
AUTH_FAULT_CODE = faults.AUTH_CODE
RELOGIN_HINT = "QBO refused the token: run `fourdqbo auth login`"

__all__ = [
    "MAX_BATCH_ITEMS",
    "OUTCOME_UNKNOWN_CODE",
    "BatchItem",
    "BatchResult",
    "CdcChanges",
    "QBOClient",
    "TokenSource",
    "WriteAnswer",
    "batch_chunks",
    "fault_from",
]


class TokenSource(Protocol):
    """What the client needs from the token store (`fourdqbo.qbo.tokens.TokenStore`)."""

    @property
    def realm_id(self) -> str: ...

    def access_token(self) -> str: ...

    def force_refresh(self, rejected: str) -> str: ...


@dataclass(frozen=True)
class BatchItem:
    """One item of a batch: an entity operation (`operation`, `entity`, `body`) or a `query`."""

    bid: str
    operation: str | None = None  # "create", "update", "delete" (QBO's batch operations)
    entity: str | None = None  # "Invoice", "Customer", …
    body: Mapping[str, Any] | None = None
    query: str | None = None

    def payload(self) -> dict[str, Any]:
        if not self.bid:
            raise ValueError("a batch item needs a bId")
        if self.query is not None:
            if self.operation or self.entity or self.body is not None:
                raise ValueError(f"batch item {self.bid}: a query item carries only the query")
            return {"bId": self.bid, "Query": self.query}
        if not (self.operation and self.entity and self.body is not None):
            raise ValueError(f"batch item {self.bid}: needs operation, entity and body")
        q.entity_name(self.entity)
        return {"bId": self.bid, "operation": self.operation, self.entity: dict(self.body)}


@dataclass(frozen=True)
class BatchResult:
    """QBO's answer to one batch item: exactly one of entity, query_response, fault is set.

    `intuit_tid` is the batch answer's (one per POST, shared by its items).
    """

    bid: str
    entity: dict[str, Any] | None = None
    query_response: dict[str, Any] | None = None
    fault: QBOFault | None = None
    intuit_tid: str | None = None

    @property
    def ok(self) -> bool:
        return self.fault is None

    @property
    def outcome_unknown(self) -> bool:
        """QBO did not answer this item: it may or may not have been applied."""
        return self.fault is not None and self.fault.code == OUTCOME_UNKNOWN_CODE


class WriteAnswer(dict[str, Any]):
    """A single-entity write's answer: the entity QBO returned, as the plain dict it always
    was (`answer.get("Id")`, `answer["SyncToken"]`), plus the answer's `intuit_tid`."""

    def __init__(self, entity: Mapping[str, Any], intuit_tid: str | None) -> None:
        super().__init__(entity)
        self.intuit_tid = intuit_tid


class _Answer(NamedTuple):
    document: dict[str, Any]
    intuit_tid: str | None


def batch_chunks(items: Sequence[BatchItem], size: int = MAX_BATCH_ITEMS) -> list[list[BatchItem]]:
    """Split items into batches QBO accepts (the caller sends each with `QBOClient.batch`)."""
    if not 1 <= size <= MAX_BATCH_ITEMS:
        raise ValueError(f"a batch holds 1 to {MAX_BATCH_ITEMS} items")
    return [list(items[i : i + size]) for i in range(0, len(items), size)]


class QBOClient(ApiClient):
    """QBO accounting API for one realm. Use as a context manager so connections close."""

    def __init__(
        self,
        settings: Settings,
        tokens: TokenSource,
        *,
        counter: RequestCounter | None = None,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        policy: RetryPolicy | None = None,
    ) -> None:
        settings.require_qbo()
        # Throttling is waited out for one rate window, as Intuit advises (a minute).
        policy = policy or RetryPolicy(throttle_window=settings.qbo_rate_window_seconds)
        if policy.throttle_marker is None:
            policy = replace(policy, throttle_marker=faults.is_throttle)
        self._tokens = tokens
        self._minor_version = settings.qbo_minor_version
        self._realm: str | None = None
        timeout = settings.http_timeout_seconds
        self._http = HttpTransport(
            service=SERVICE,
            base_url=settings.qbo_api_base_url,
            headers={"Accept": "application/json", "Content-Type": "application/json"},
            policy=policy,
            max_in_flight=settings.qbo_max_in_flight,
            counter=counter,
            timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
            transport=transport,
            sleep=sleep,
        )
        window = settings.qbo_rate_window_seconds
        self.request_limiter = RateLimiter(
            settings.qbo_max_requests_per_minute,
            window,
            burst=REQUEST_BURST,
            clock=clock,
            sleep=sleep,
        )
        self.batch_limiter = RateLimiter(
            settings.qbo_max_batches_per_minute, window, burst=BATCH_BURST, clock=clock, sleep=sleep
        )
        # The fewest items a batch sized to the room left in the window goes with: the
        # request limit over the batch limit (500 / 40: 13), so that batches filling every
        # gap still fit the batch limit. Less room is left to the next batch.
        requests = settings.qbo_max_requests_per_minute
        self.fill_least = min(MAX_BATCH_ITEMS, -(-requests // settings.qbo_max_batches_per_minute))

    # -- lifecycle ---------------------------------------------------------------------

    @property
    def before_write(self) -> Callable[[], None] | None:
        """Called right before each write is sent, after pacing and backoff waits."""
        return self._http.before_write

    @before_write.setter
    def before_write(self, check: Callable[[], None] | None) -> None:
        self._http.before_write = check

    @property
    def realm_id(self) -> str:
        if self._realm is None:
            self._realm = str(self._tokens.realm_id)
        return self._realm

    # -- queries -----------------------------------------------------------------------

    def query(self, statement: str) -> dict[str, Any]:
        """Run one statement; returns its `QueryResponse` object (`{}` when nothing matched)."""
        answer = self._call("GET", "query", params={"query": statement}, what="query").document
        response = answer.get("QueryResponse", {})
        if not isinstance(response, dict):
            raise MalformedPayload(
                "QBO query answer without a QueryResponse object", service=SERVICE
            )
        return response

    def query_all(
        self,
        entity: str,
        where: Sequence[str] = (),
        order_by: str | None = None,
        *,
        start: int = 1,
    ) -> list[dict[str, Any]]:
        """Every row of `SELECT * FROM entity WHERE …` from row `start` (1-based) on, paging
        1000 at a time until a short page."""
        rows: list[dict[str, Any]] = []
        while True:
            statement = q.select(entity, where, order_by, start=start, max_results=q.MAX_RESULTS)
            page = _rows(self.query(statement), entity)
            rows.extend(page)
            if len(page) < q.MAX_RESULTS:
                return rows
            start += len(page)

    def query_in(
        self,
        entity: str,
        field: str,
        values: Iterable[str],
        where: Sequence[str] = (),
        order_by: str | None = None,
    ) -> list[dict[str, Any]]:
        """Rows whose `field` is one of `values`, as several IN statements when the list is long."""
        reserve = q.statement_reserve(entity, where, order_by)
        rows: list[dict[str, Any]] = []
        for condition in q.chunk_in(field, values, reserve=reserve):
            rows.extend(self.query_all(entity, [*where, condition], order_by))
        return rows

    def find_invoices_by_doc_numbers(self, doc_numbers: Iterable[str]) -> list[Invoice]:
        rows = self.query_in("Invoice", "DocNumber", doc_numbers)
        return [Invoice.parse(row) for row in rows]

    def find_customers_by_names(
        self, names: Iterable[str], include_inactive: bool = True
    ) -> list[Customer]:
        """Customers by DisplayName; inactive ones too by default (their names stay taken)."""
        where = [_ANY_ACTIVE] if include_inactive else []
        rows = self.query_in("Customer", "DisplayName", names, where)
        return [Customer.parse(row) for row in rows]

    def find_items_by_names(
        self, names: Iterable[str], include_inactive: bool = False
    ) -> list[Item]:
        where = [_ANY_ACTIVE] if include_inactive else []
        rows = self.query_in("Item", "Name", names, where)
        return [Item.parse(row) for row in rows]

    def get_invoice_by_doc(self, doc_number: str) -> list[Invoice]:
        """Every invoice with this DocNumber (normally one; two is a conflict for the caller)."""
        rows = self.query_all("Invoice", [q.condition_eq("DocNumber", doc_number)])
        return [Invoice.parse(row) for row in rows]

    def get_customer_by_name(self, name: str, include_inactive: bool = True) -> Customer | None:
        where = [q.condition_eq("DisplayName", name)]
        if include_inactive:
            where.insert(0, _ANY_ACTIVE)
        rows = self.query_all("Customer", where)
        return Customer.parse(rows[0]) if rows else None

    def invoices_changed_since(self, since: datetime) -> list[Invoice]:
        rows = self._changed_since("Invoice", since)
        return [Invoice.parse(row) for row in rows]

    def estimates_changed_since(self, since: datetime) -> list[dict[str, Any]]:
        return self._changed_since("Estimate", since)

    def _changed_since(self, entity: str, since: datetime) -> list[dict[str, Any]]:
        condition = f"MetaData.LastUpdatedTime >= {q.datetime_literal(since)}"
        return self.query_all(entity, [condition], order_by="MetaData.LastUpdatedTime")

    def find_invoices_by_ids(self, ids: Iterable[str]) -> list[Invoice]:
        """Invoices by Id (`Id IN (…)`, as many statements as the list needs); ids QBO does
        not know are simply absent."""
        return [Invoice.parse(row) for row in self.query_in("Invoice", "Id", ids)]

    def find_customers_by_ids(
        self, ids: Iterable[str], *, include_inactive: bool = True
    ) -> list[Customer]:
        """Customers by Id (`Id IN (…)`), inactive ones too by default."""
        where = [_ANY_ACTIVE] if include_inactive else []
        return [Customer.parse(row) for row in self.query_in("Customer", "Id", ids, where)]

    def invoices_dated_since(self, day: date) -> list[Invoice]:
        """Every invoice with `TxnDate` on or after `day`, paged in Id order."""
        if isinstance(day, datetime) or not isinstance(day, date):
            raise TypeError("invoices_dated_since needs a date")
        condition = q.compare("TxnDate", ">=", day.isoformat())
        return [Invoice.parse(row) for row in self.query_all("Invoice", [condition], "Id")]

    def all_customers(self, *, include_inactive: bool = True) -> list[Customer]:
        """Every customer (inactive ones too by default: QBO hides them otherwise), paged."""
        where = [_ANY_ACTIVE] if include_inactive else []
        return [Customer.parse(row) for row in self.query_all("Customer", where, "Id")]

    def find_customers_like(
        self, patterns: Sequence[str], *, include_inactive: bool = True
    ) -> list[Customer]:
        """Customers whose DisplayName matches any of `patterns` (`%` is the wildcard).

        QBO has no OR: one `DisplayName LIKE` query per pattern, sent as the Query items of
        batches of up to 30 (one POST per 30 patterns, fewer when the window has less room;
        each item counts against the request limit). A pattern answering a full page is
        followed up with paged single queries; one QBO left unanswered in its batch is
        asked alone. An item answering with a fault raises it. Deduplicated by Id, first
        seen first.
        """
        extra = [_ANY_ACTIVE] if include_inactive else []
        wheres = {p: [q.condition_like("DisplayName", p), *extra] for p in dict.fromkeys(patterns)}
        found: dict[str, Customer] = {}
        pending = list(wheres)
        while pending:
            items = [
                BatchItem(f"l{n}", query=q.select("Customer", wheres[p], "Id", 1, q.MAX_RESULTS))
                for n, p in enumerate(pending[:MAX_BATCH_ITEMS])
            ]
            results = self.batch(items, fill=True)
            chunk, pending = pending[: len(results)], pending[len(results) :]
            for pattern, result in zip(chunk, results, strict=True):
                where = wheres[pattern]
                if result.outcome_unknown:
                    rows = self.query_all("Customer", where, "Id")
                elif result.fault is not None:
                    raise result.fault
                else:
                    rows = _rows(result.query_response or {}, "Customer")
                    if len(rows) >= q.MAX_RESULTS:
                        rows += self.query_all("Customer", where, "Id", start=len(rows) + 1)
                for row in rows:
                    customer = Customer.parse(row)
                    found.setdefault(customer.id, customer)
        return list(found.values())

    def cdc(self, entities: Sequence[str], changed_since: datetime) -> CdcChanges:
        """What changed in QBO since `changed_since` (aware), by change data capture.

        `entities` are among "Invoice" and "Customer". One `GET …/cdc` call, more when an
        answer is full (1,000 objects of one entity): see `fourdqbo.qbo.cdc`. QBO reaches
        30 days back; an older `changed_since` is QBO's fault to answer. Raises
        `CdcCannotAdvance` when a full answer cannot be paged past, `MalformedPayload` on
        answers of no sensible shape.
        """

        def fetch(group: Sequence[str], since: datetime) -> dict[str, Any]:
            params = {"entities": ",".join(group), "changedSince": q.instant_param(since)}
            return self._call("GET", "cdc", params=params, what="cdc").document

        return collect(fetch, entities, changed_since)

    # -- batch -------------------------------------------------------------------------

    def batch(self, items: Sequence[BatchItem], *, fill: bool = False) -> list[BatchResult]:
        """Send up to 30 items in one POST; results in the order of `items`, matched by bId.

        An item QBO did not answer gets a fault with code `OUTCOME_UNKNOWN_CODE`. A batch
        holding a write is itself a write: a lost answer raises `OutcomeUnknown`.

        With `fill`, only the first items that QBO's window has room for when the batch is
        due are sent (at least `fill_least`, see `RateLimiter.room`): the results are
        theirs, and the caller sends the rest.
        """
        if not items:
            return []
        if len(items) > MAX_BATCH_ITEMS:
            raise ValueError(
                f"a batch holds at most {MAX_BATCH_ITEMS} items, got {len(items)}: "
                "split it with batch_chunks()"
            )
        if fill and len(items) > self.fill_least:
            items = items[: self.request_limiter.room(len(items), least=self.fill_least)]
        payload = [item.payload() for item in items]
        bids = [item.bid for item in items]
        if len(set(bids)) != len(bids):
            raise ValueError("batch items need distinct bIds")
        read_only = all(item.query is not None for item in items)
        answer, tid = self._call(
            "POST",
            "batch",
            body={"BatchItemRequest": payload},
            write=not read_only,
            units=len(items),
            batch=True,
            what="batch",
        )
        responses = answer.get("BatchItemResponse")
        if not isinstance(responses, list):
            raise MalformedPayload("QBO batch answer without BatchItemResponse", service=SERVICE)
        by_bid: dict[str, Mapping[str, Any]] = {}
        for response in responses:
            if not isinstance(response, Mapping) or response.get("bId") is None:
                raise MalformedPayload("QBO batch answer item without a bId", service=SERVICE)
            by_bid[str(response["bId"])] = response
        unexpected = set(by_bid) - set(bids)
        if unexpected:
            log.warning("qbo: batch answer names %d bId(s) we did not send", len(unexpected))
        return [self._batch_result(item, by_bid.get(item.bid), tid) for item in items]

    def _batch_result(
        self, item: BatchItem, response: Mapping[str, Any] | None, tid: str | None
    ) -> BatchResult:
        if response is None:
            fault = QBOFault(
                with_tid(f"QBO batch: no answer for item {item.bid}; outcome unknown", tid),
                code=OUTCOME_UNKNOWN_CODE,
                intuit_tid=tid,
            )
            return BatchResult(item.bid, fault=fault, intuit_tid=tid)
        if "Fault" in response:
            fault = fault_from(response["Fault"], intuit_tid=tid)
            return BatchResult(item.bid, fault=fault, intuit_tid=tid)
        if item.query is not None:
            found = response.get("QueryResponse", {})
            if not isinstance(found, dict):
                raise MalformedPayload("QBO batch QueryResponse is not an object", service=SERVICE)
            return BatchResult(item.bid, query_response=found, intuit_tid=tid)
        entity = response.get(item.entity or "")
        if not isinstance(entity, dict):
            # Tolerate an answer keyed differently from what we sent (e.g. letter case).
            others = [v for k, v in response.items() if k not in ("bId", "time")]
            entity = others[0] if len(others) == 1 and isinstance(others[0], dict) else None
        if entity is None:
            raise MalformedPayload(
                f"QBO batch answer for item {item.bid} holds no {item.entity}", service=SERVICE
            )
        return BatchResult(item.bid, entity=entity, intuit_tid=tid)

    # -- single-entity writes ----------------------------------------------------------

    # Each returns the entity QBO answered (the new state: never read it back) as a
    # WriteAnswer, a dict carrying the answer's intuit_tid.

    def create(self, entity: str, body: Mapping[str, Any]) -> WriteAnswer:
        return self._write(entity, dict(body))

    def update(self, entity: str, body: Mapping[str, Any], sparse: bool = True) -> WriteAnswer:
        """Update with the body's Id and SyncToken (a stale SyncToken gives fault 5010)."""
        if body.get("Id") is None or body.get("SyncToken") is None:
            raise ValueError("an update needs Id and SyncToken")
        return self._write(entity, {**body, "sparse": sparse})

    def delete(self, entity: str, id: str, sync_token: str) -> WriteAnswer:
        """Answers `{"status": "Deleted", "domain": "QBO", "Id": …}`."""
        return self._write(entity, {"Id": id, "SyncToken": sync_token}, operation="delete")

    def void_invoice(self, id: str, sync_token: str) -> WriteAnswer:
        """Answers the whole voided invoice: amounts 0, SyncToken + 1, PrivateNote "Voided…"."""
        return self._write("Invoice", {"Id": id, "SyncToken": sync_token}, operation="void")

    def _write(
        self, entity: str, body: dict[str, Any], operation: str | None = None
    ) -> WriteAnswer:
        q.entity_name(entity)
        params = {"operation": operation} if operation else None
        what = f"{operation or 'write'} {entity}"
        answer, tid = self._call(
            "POST", entity.lower(), params=params, body=body, write=True, what=what
        )
        found = answer.get(entity)
        if not isinstance(found, dict):
            raise MalformedPayload(
                with_tid(f"QBO answer to {what} holds no {entity}", tid),
                service=SERVICE,
                intuit_tid=tid,
            )
        return WriteAnswer(found, tid)

    # -- transport ---------------------------------------------------------------------

    def _call(
        self,
        method: str,
        resource: str,
        *,
        params: Mapping[str, str] | None = None,
        body: Any = None,
        write: bool = False,
        units: int = 1,
        batch: bool = False,
        what: str,
    ) -> _Answer:
        """One API call with auth, pacing, one refresh-and-retry on 401, fault decoding."""
        url = f"/v3/company/{quote(self.realm_id, safe='')}/{resource}"
        query = {**(params or {}), "minorversion": self._minor_version}
        if write:
            # The same id on the retry after a 401: it is the same request.
            query["requestid"] = uuid.uuid4().hex
        content = jsonio.dumps(body) if body is not None else None
        pacing: Pacing = [(self.request_limiter, units)]
        if batch:
            pacing = [*pacing, (self.batch_limiter, 1)]
        token = self._tokens.access_token()
        response = self._send(method, url, query, content, token, write, pacing)
        refused = _auth_refusal(response, token)
        if refused is not None:
            log.info(
                "qbo: %s answered %d (fault %s); refreshing the token once",
                what,
                response.status_code,
                refused.code or "-",
            )
            token = self._tokens.force_refresh(token)
            response = self._send(method, url, query, content, token, write, pacing)
            refused = _auth_refusal(response, token)
            if refused is not None:
                raise AuthError(
                    with_tid(_relogin_message(refused), refused.intuit_tid),
                    service=SERVICE,
                    status=response.status_code,
                    intuit_tid=refused.intuit_tid,
                )
        return _Answer(_decode(response, what, write), response.headers.get("intuit_tid"))

    def _send(
        self,
        method: str,
        url: str,
        params: Mapping[str, str],
        content: str | None,
        token: str,
        write: bool,
        pacing: Pacing,
    ) -> httpx.Response:
        try:
            response = self._http.request(
                method,
                url,
                idempotent=not write,
                params=params,
                content=content,
                headers={"Authorization": f"Bearer {token}"},
                pacing=pacing,
            )
        except UpstreamError as exc:
            if exc.intuit_tid and exc.intuit_tid not in exc.message:
                exc.message = with_tid(exc.message, exc.intuit_tid)
                exc.args = (exc.message,)
            raise
        log.debug(
            "qbo %s %s -> %d intuit_tid=%s",
            method,
            url.rsplit("/", 1)[-1],
            response.status_code,
            response.headers.get("intuit_tid", "-"),
        )
        return response


_ANY_ACTIVE = "Active IN (true, false)"


def _parse_json(response: httpx.Response) -> Any:
    """The answer's JSON, or None when it is not JSON (an XML fault, an HTML error page)."""
    try:
        return jsonio.loads(response.content)
    except (ValueError, UnicodeDecodeError):
        return None


def _auth_refusal(response: httpx.Response, token: str) -> QBOFault | None:
    """The token refusal an answer reports (any 401; a 3200 fault with 400 or 403), its
    detail scrubbed of the token sent; None when the answer is no refusal."""
    status = response.status_code
    if status not in (400, 401, 403):
        return None
    fault = faults.response_fault(response, _parse_json(response), secrets=(token,))
    if status == 401:
        tid = response.headers.get("intuit_tid")
        return fault or QBOFault("QBO answered HTTP 401", status=status, intuit_tid=tid)
    return fault if fault is not None and fault.code == AUTH_FAULT_CODE else None


def _relogin_message(refused: QBOFault) -> str:
    """RELOGIN_HINT naming the refusal: code and (scrubbed) detail, e.g. "Token expired"."""
    reason = ": ".join(part for part in (refused.code, refused.detail[:120]) if part)
    if not reason:
        return RELOGIN_HINT
    return f"QBO refused the token (fault {reason}): run `fourdqbo auth login`"


def _decode(response: httpx.Response, what: str, write: bool) -> dict[str, Any]:
    status = response.status_code
    tid = response.headers.get("intuit_tid")
    document = _parse_json(response)
    fault = faults.response_fault(response, document)
    if fault is not None:
        raise fault
    if status == 403:
        raise AuthError(
            with_tid(f"QBO refused access to {what} (HTTP 403)", tid),
            service=SERVICE,
            status=status,
            intuit_tid=tid,
        )
    if status >= 500 and write:
        # A server error the transport does not retry (501, 505, …): the write may have
        # been applied before it failed.
        raise OutcomeUnknown(
            with_tid(f"QBO answered HTTP {status} to {what}; outcome unknown", tid),
            service=SERVICE,
            status=status,
            intuit_tid=tid,
        )
    if status >= 400 and faults.looks_like_xml(response.content):
        # XML QBO sends only for faults: one we cannot read is still a fault.
        raise QBOFault(
            with_tid(f"QBO answered HTTP {status} to {what} with an unreadable fault", tid),
            status=status,
            intuit_tid=tid,
        )
    if status >= 400:
        raise UpstreamError(
            with_tid(f"QBO answered HTTP {status} to {what}", tid),
            service=SERVICE,
            status=status,
            intuit_tid=tid,
        )
    if not isinstance(document, dict):
        raise MalformedPayload(
            with_tid(f"QBO answered {what} with something other than a JSON object", tid),
            service=SERVICE,
            status=status,
            intuit_tid=tid,
        )
    return document


def _rows(response: Mapping[str, Any], entity: str) -> list[dict[str, Any]]:
    rows = response.get(entity, [])
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise MalformedPayload(
            f"QBO {entity} query rows are not a list of objects", service=SERVICE
        )
    return rows
