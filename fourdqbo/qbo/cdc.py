"""QBO change data capture (`GET …/cdc`): reading its answers and paging past full ones.

Pure: `collect` drives the paging through a `fetch` callable (the client passes one HTTP
call), so the rules below are tested without any network.

An answer is `{"CDCResponse": [{"QueryResponse": [{"Invoice": [...], "startPosition": 1,
"maxResults": n}, {"Customer": [...]}]}], "time": "…"}`; an entity type without changes
gives `{}` in that list; a deleted entity is only `{"domain": "QBO", "status": "Deleted",
"Id": "266", "MetaData": {"LastUpdatedTime": "…"}}`.

QBO answers at most `MAX_CDC_OBJECTS` objects per entity. Our documented assumption (the
sandbox behaves so): those are the objects with the earliest last change, ascending, and
`changedSince` is inclusive. So an entity whose answer is full is asked again from the
latest `LastUpdatedTime` in that answer, and the answers are merged by Id (the newest
state wins), until an answer is not full. A full answer whose objects all share one time
cannot be paged past: `CdcCannotAdvance`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from fourdqbo.errors import CdcCannotAdvance, MalformedPayload
from fourdqbo.qbo.faults import fault_from
from fourdqbo.qbo.records import Customer, Invoice, last_updated
from fourdqbo.timefmt import parse_instant

log = logging.getLogger(__name__)

MAX_CDC_OBJECTS = 1000
ENTITIES = ("Invoice", "Customer")
_NEVER = datetime.min.replace(tzinfo=UTC)
_PAGING_KEYS = frozenset({"startPosition", "maxResults", "totalCount"})

Row = Mapping[str, Any]
# fetch(entities, changed_since) -> the parsed JSON answer of one CDC call
Fetch = Callable[[Sequence[str], datetime], Any]


@dataclass(frozen=True)
class CdcChanges:
    """What changed in QBO since a moment, every page merged (the newest state per Id).

    `server_time` is the first answer's top-level `time` (aware UTC): nothing changed after
    it is missing from these changes, so it is a safe next `changed_since`.
    `latest_change` is the latest `LastUpdatedTime` seen. `requests` counts CDC calls
    (pages; the transport's retries not included).
    """

    invoices: tuple[Invoice, ...] = ()
    deleted_invoice_ids: tuple[str, ...] = ()
    customers: tuple[Customer, ...] = ()
    deleted_customer_ids: tuple[str, ...] = ()
    server_time: datetime | None = None
    latest_change: datetime | None = None
    requests: int = 0


def check_entities(entities: Iterable[str]) -> tuple[str, ...]:
    """The entity names, deduplicated in order; only those CdcChanges has room for."""
    wanted = tuple(dict.fromkeys(entities))
    unknown = [e for e in wanted if e not in ENTITIES]
    if unknown or not wanted:
        raise ValueError(f"CDC reads {', '.join(ENTITIES)}, not {unknown or 'nothing'}")
    return wanted


def collect(fetch: Fetch, entities: Sequence[str], changed_since: datetime) -> CdcChanges:
    """Every change of `entities` since `changed_since`, paging past full answers.

    Entities still paging at the same moment share one call.
    """
    wanted = check_entities(entities)
    if changed_since.tzinfo is None or changed_since.utcoffset() is None:
        raise ValueError("CDC needs a timezone-aware changed_since")
    since = dict.fromkeys(wanted, changed_since)
    newest: dict[str, dict[str, Row]] = {e: {} for e in wanted}
    server_time: datetime | None = None
    requests = 0
    pending = list(wanted)
    while pending:
        moment = min(since[e] for e in pending)
        group = [e for e in pending if since[e] == moment]
        answer = fetch(group, moment)
        requests += 1
        rows, answered_at = parse_answer(answer, group)
        if server_time is None:
            server_time = answered_at
        for entity in group:
            _merge(newest[entity], rows[entity])
            following = next_since(rows[entity], moment, entity)
            if following is None:
                pending.remove(entity)
            else:
                log.info("qbo: CDC answer for %s is full; asking again from %s", entity, following)
                since[entity] = following
    return _changes(newest, server_time, requests)


def parse_answer(
    document: Any, entities: Sequence[str]
) -> tuple[dict[str, list[Row]], datetime | None]:
    """Rows per requested entity, and the answer's `time`, from one CDC answer.

    Extra keys and entities we did not ask for are ignored; missing lists mean no change.
    """
    if not isinstance(document, Mapping) or "CDCResponse" not in document:
        raise MalformedPayload("QBO CDC answer without CDCResponse", service="qbo")
    by_name = {e.lower(): e for e in entities}
    rows: dict[str, list[Row]] = {e: [] for e in entities}
    for response in _as_list(document["CDCResponse"], "CDCResponse"):
        if not isinstance(response, Mapping):
            raise MalformedPayload("QBO CDCResponse item is not an object", service="qbo")
        if response.get("Fault") is not None:
            raise fault_from(response["Fault"])
        for part in _as_list(response.get("QueryResponse"), "QueryResponse"):
            if not isinstance(part, Mapping):
                raise MalformedPayload("QBO CDC QueryResponse item is not an object", service="qbo")
            for key, value in part.items():
                entity = by_name.get(str(key).lower())
                if entity is None:
                    if key not in _PAGING_KEYS:
                        log.debug("qbo: CDC answer holds %r, not asked for", key)
                    continue
                found = [] if value is None else value
                if not isinstance(found, list) or not all(isinstance(r, Mapping) for r in found):
                    raise MalformedPayload(f"QBO CDC {entity} rows are not objects", service="qbo")
                rows[entity].extend(found)
    return rows, _answer_time(document.get("time"))


def next_since(rows: Sequence[Row], since: datetime, entity: str = "entity") -> datetime | None:
    """Where to ask again after an answer of `rows`: None when the answer was not full."""
    if len(rows) < MAX_CDC_OBJECTS:
        return None
    times = [t for t in (changed_at(row) for row in rows) if t is not None]
    if not times:
        raise CdcCannotAdvance(
            f"QBO CDC answer holds {len(rows)} {entity} changes without times; "
            "cannot ask for the rest",
            service="qbo",
        )
    # QBO's times are whole seconds; a fraction dropped can only ask for more, not less.
    latest = max(times).replace(microsecond=0)
    if latest <= since or min(times).replace(microsecond=0) == latest:
        raise CdcCannotAdvance(
            f"QBO CDC answer holds {len(rows)} {entity} changes at one time "
            f"({latest.isoformat()}); cannot page past them",
            service="qbo",
        )
    return latest


changed_at = last_updated  # a row's LastUpdatedTime, aware UTC, or None


def is_deleted(row: Row) -> bool:
    return str(row.get("status") or "").strip().lower() == "deleted"


def _merge(newest: dict[str, Row], rows: Iterable[Row]) -> None:
    """Keep each Id's newest state; at equal times the later answer wins."""
    for row in rows:
        key = row.get("Id")
        if key is None or isinstance(key, Mapping | list):
            raise MalformedPayload("QBO CDC row without Id", service="qbo")
        known = newest.get(str(key))
        if known is not None and _later(known, row):
            continue
        newest[str(key)] = row


def _later(known: Row, row: Row) -> bool:
    """`known` changed strictly later than `row`."""
    known_at, row_at = changed_at(known), changed_at(row)
    return known_at is not None and (row_at is None or known_at > row_at)


def _changes(
    newest: Mapping[str, Mapping[str, Row]], server_time: datetime | None, requests: int
) -> CdcChanges:
    invoices, deleted_invoices = _split(newest.get("Invoice", {}).values())
    customers, deleted_customers = _split(newest.get("Customer", {}).values())
    times = [t for rows in newest.values() for t in map(changed_at, rows.values()) if t]
    return CdcChanges(
        invoices=tuple(Invoice.parse(row) for row in invoices),
        deleted_invoice_ids=tuple(str(row["Id"]) for row in deleted_invoices),
        customers=tuple(Customer.parse(row) for row in customers),
        deleted_customer_ids=tuple(str(row["Id"]) for row in deleted_customers),
        server_time=server_time,
        latest_change=max(times, default=None),
        requests=requests,
    )


def _split(rows: Iterable[Row]) -> tuple[list[Row], list[Row]]:
    """(changed, deleted), each oldest change first (rows without a time first), then by Id."""
    ordered = sorted(rows, key=lambda r: (changed_at(r) or _NEVER, str(r["Id"])))
    return [r for r in ordered if not is_deleted(r)], [r for r in ordered if is_deleted(r)]


def _as_list(value: Any, what: str) -> list[Any]:
    """A wrapper list as QBO sends it; a lone object is a list of one; null is empty."""
    if value is None:
        return []
    if isinstance(value, Mapping):
        return [value]
    if isinstance(value, list):
        return value
    raise MalformedPayload(f"QBO CDC {what} is neither a list nor an object", service="qbo")


def _answer_time(value: Any) -> datetime | None:
    """The answer's `time`; unreadable means unknown (it only informs the next cursor)."""
    if not isinstance(value, str) or not value:
        return None
    try:
        return parse_instant(value)
    except ValueError:
        log.warning("qbo: CDC answer time %r is not ISO 8601", value[:40])
        return None
