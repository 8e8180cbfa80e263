"""The load stage alone, against a fake `QBOBooks`: no network, no sandbox.

What the chunked run adds to the write phases: batches sent two at a time, and a stop
that sends no further batch but finishes and records the ones in flight.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import Any

import pytest

from fourdqbo.errors import AuthError
from fourdqbo.qbo.client import BatchResult
from fourdqbo.qbo.records import Invoice
from fourdqbo.sync.customers import CustomerToCreate
from fourdqbo.sync.load import Loader, PlannedChunk
from fourdqbo.sync.mapping import DraftLine, InvoiceDraft, LineKind
from fourdqbo.sync.pipeline import Interrupted
from fourdqbo.sync.planning import Action, Plan, QuotePlan
from fourdqbo.sync.report import RunReport
from fourdqbo.timefmt import utcnow


class FakeBooks:
    """Answers every batch item with success, after `delay`; counts what was in flight."""

    def __init__(
        self,
        delay: float = 0.02,
        after_batch: Callable[[int], None] | None = None,
        refuse_customers: BaseException | None = None,
    ):
        self.delay = delay
        self.after_batch = after_batch
        self.refuse_customers = refuse_customers  # raised for a batch of new customers
        self.room: list[int] = []  # items the next batches sized to the room may hold
        self.before_write: Callable[[], None] | None = None
        self.request_count = 0
        self.batches: list[list[str]] = []
        self._lock = threading.Lock()
        self._in_flight = 0
        self.most_in_flight = 0
        self.timeline: list[tuple[str, str, float]] = []  # (sent|answered, entity, when)

    def batch(self, items: Sequence[Any], *, fill: bool = False) -> list[BatchResult]:
        if fill and self.room:  # the window has room for only so many: send the first
            items = items[: self.room.pop(0)]
        if self.before_write is not None:  # as the client does, once the batch is due
            self.before_write()
        with self._lock:
            self._in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self._in_flight)
            self.batches.append([_id_of(item) for item in items])
            self.timeline.append(("sent", items[0].entity, time.monotonic()))
            sent = len(self.batches)
        time.sleep(self.delay)
        if self.refuse_customers is not None and items[0].entity == "Customer":
            raise self.refuse_customers
        with self._lock:
            self._in_flight -= 1
            self.timeline.append(("answered", items[0].entity, time.monotonic()))
        if self.after_batch is not None:
            self.after_batch(sent)
        return [BatchResult(bid=item.bid, entity={"Id": _id_of(item)}) for item in items]

    def find_invoices_by_doc_numbers(self, doc_numbers: Any) -> list[Invoice]:
        raise AssertionError("no write was uncertain: nothing to look up")

    def find_customers_by_names(self, names: Any, include_inactive: bool = True) -> list[Any]:
        raise AssertionError("no customer is needed")

    def find_items_by_names(self, names: Any, include_inactive: bool = False) -> list[Any]:
        raise AssertionError("no item is needed")

    def void_invoice(self, id: str, sync_token: str) -> dict[str, Any]:
        raise AssertionError("no void was planned")


def _id_of(item: Any) -> str:
    """The Id an item was sent with; a new customer's or invoice's made from its name."""
    body = item.body
    if "Id" in body:
        return str(body["Id"])
    return f"c-{body['DisplayName']}" if "DisplayName" in body else f"i-{body['DocNumber']}"


class NoProgress:
    def window(self, total: int) -> None:
        pass

    def phase(self, name: str) -> None:
        pass

    def quotes_done(self, count: int) -> None:
        pass

    def wrote(self, count: int) -> None:
        pass


def deletes(count: int) -> PlannedChunk:
    """A chunk of `count` re-opened quotes whose unpaid invoices are to be deleted."""
    plans = []
    for n in range(count):
        invoice = Invoice(
            id=str(500 + n),
            sync_token="0",
            doc_number=str(10000 + n),
            txn_date=None,
            customer_id="1",
            customer_name=None,
            lines=(),
            custom_fields={},
            total=Decimal("10.00"),
            balance=Decimal("10.00"),
            created_at=None,
            updated_at=None,
        )
        plans.append(
            QuotePlan(
                number=str(10000 + n),
                version=2,
                status="active",
                action=Action.DELETE,
                reason="quote is no longer completed",
                invoice=invoice,
            )
        )
    return PlannedChunk(Plan(tuple(plans), (), ()), (), {})


def loader(
    books: FakeBooks, stop: threading.Event, report: RunReport, writes_in_flight: int = 2
) -> Loader:
    return Loader(
        books,
        report,
        lock=None,
        stop=stop,
        progress=NoProgress(),
        batch_size=5,
        writes_in_flight=writes_in_flight,
    )


def test_batches_go_two_at_a_time_and_every_quote_is_recorded() -> None:
    books = FakeBooks()
    report = RunReport(run_id="r", started_at=utcnow())
    loader(books, threading.Event(), report).load(deletes(20))
    assert len(books.batches) == 4
    assert books.most_in_flight == 2
    assert report.counts()["deleted"] == 20
    # Each batch carried its own five invoices, none twice.
    assert sorted(i for batch in books.batches for i in batch) == sorted(
        str(500 + n) for n in range(20)
    )


def test_a_stop_sends_no_further_batch_and_records_the_ones_in_flight() -> None:
    stop = threading.Event()
    books = FakeBooks(after_batch=lambda sent: stop.set() if sent == 1 else None)
    report = RunReport(run_id="r", started_at=utcnow())
    with pytest.raises(Interrupted):
        loader(books, stop, report).load(deletes(30))
    sent = {i for batch in books.batches for i in batch}
    assert 5 <= len(sent) <= 10  # the first batch and, at most, the one in flight with it
    outcomes = report.outcomes.values()
    assert {o.invoice_id for o in outcomes if o.action == "deleted"} == sent
    unsent = [o for o in outcomes if o.action == "failed"]
    assert len(unsent) == 30 - len(sent)
    assert all("the run stopped first" in (o.error or "") for o in unsent)


def test_one_write_in_flight_is_sequential() -> None:
    books = FakeBooks(delay=0.001)
    report = RunReport(run_id="r", started_at=utcnow())
    loader(books, threading.Event(), report, writes_in_flight=1).load(deletes(12))
    assert books.most_in_flight == 1
    assert [len(batch) for batch in books.batches] == [5, 5, 2]


def creates(patients: range, quotes_each: int = 1) -> PlannedChunk:
    """A chunk of completed quotes of new patients: their customers and invoices to create."""
    plans, customers = [], []
    for patient in patients:
        name = f"{patient}.AB"
        customers.append(CustomerToCreate(display_name=name, patient_id=str(patient)))
        for n in range(quotes_each):
            number = str(patient * 10 + n)
            draft = InvoiceDraft(
                doc_number=number,
                version=1,
                txn_date=utcnow().date(),
                patient_id=str(patient),
                customer_name=name,
                lines=(DraftLine(LineKind.PROCEDURE, "Procedure", Decimal("100.00")),),
                custom_fields=(),
            )
            plans.append(
                QuotePlan(
                    number=number,
                    version=1,
                    status="completed",
                    action=Action.CREATE,
                    reason="new completed quote",
                    draft=draft,
                    customer_name=name,
                )
            )
    return PlannedChunk(Plan(tuple(plans), tuple(customers), ()), (), {LineKind.PROCEDURE: "1"})


def sent(books: FakeBooks, entity: str) -> list[float]:
    return [at for what, kind, at in books.timeline if what == "sent" and kind == entity]


def answered(books: FakeBooks, entity: str) -> list[float]:
    return [at for what, kind, at in books.timeline if what == "answered" and kind == entity]


def test_the_next_chunks_customers_are_created_while_this_chunks_invoices_are_written() -> None:
    books = FakeBooks()
    report = RunReport(run_id="r", started_at=utcnow())
    writer = loader(books, threading.Event(), report)
    first, second = creates(range(100, 110)), creates(range(200, 215), quotes_each=2)
    writer.load(first, lambda: second)
    # The second chunk's customers went out before the first chunk's last invoice batch
    # was answered, and all of them exist once the first chunk is done.
    assert min(sent(books, "Customer")[2:]) < max(answered(books, "Invoice"))
    assert {f"{p}.ab" for p in range(200, 215)} <= set(writer.customer_ids)
    assert report.customers_created == 25
    before = len(books.batches)
    writer.load(second, lambda: None)
    # The second chunk creates no customer again: its batches are invoices only.
    assert all(i.startswith("i-") for batch in books.batches[before:] for i in batch)
    assert report.customers_created == 25
    assert report.counts()["created"] == 10 + 30
    # Each created invoice went to its patient's customer.
    outcomes = report.outcomes.values()
    assert all(o.customer_id == f"c-{o.quote[:3]}.AB" for o in outcomes)


def test_nothing_is_created_ahead_when_the_next_chunk_is_not_read_yet() -> None:
    books = FakeBooks(delay=0.001)
    report = RunReport(run_id="r", started_at=utcnow())
    writer = loader(books, threading.Event(), report)
    writer.load(creates(range(100, 106)), lambda: None)
    assert report.customers_created == 6
    assert all(i.startswith(("c-1", "i-")) for batch in books.batches for i in batch)


def test_a_refusal_while_creating_ahead_stops_this_chunks_invoices_and_is_raised() -> None:
    refused = AuthError("QBO refused the credentials")
    books = FakeBooks(delay=0.01)
    report = RunReport(run_id="r", started_at=utcnow())
    writer = loader(books, threading.Event(), report)
    following = creates(range(200, 210))
    # A chunk of 100 deletes (20 batches of five); the customers ahead are refused.
    books.refuse_customers = refused
    with pytest.raises(AuthError) as raised:
        writer.load(deletes(100), lambda: following)
    assert raised.value is refused
    deleted = report.counts().get("deleted", 0)
    assert deleted < 100  # the invoice writes stopped at their next checkpoint
    unsent = [o for o in report.outcomes.values() if o.action == "failed"]
    assert len(unsent) == 100 - deleted  # every quote of the chunk is in the report
    assert writer.customer_ids == {}


def test_a_stop_while_creating_ahead_is_the_runs_interruption() -> None:
    stop = threading.Event()
    stopped_at: list[float] = []

    def stop_after(sent: int) -> None:
        if sent == 2:
            stopped_at.append(time.monotonic())
            stop.set()

    books = FakeBooks(after_batch=stop_after)
    report = RunReport(run_id="r", started_at=utcnow())
    writer = loader(books, stop, report)
    books.before_write = writer.before_write
    with pytest.raises(Interrupted):
        writer.load(deletes(40), lambda: creates(range(200, 240)))
    # Nothing left after the stop: only what was in flight then was finished.
    assert all(at < stopped_at[0] for what, _, at in books.timeline if what == "sent")
    assert 0 < report.customers_created < 40
    assert report.counts()["deleted"] < 40


def test_a_batch_sized_to_the_room_sends_the_rest_next_and_records_every_quote() -> None:
    books = FakeBooks(delay=0.001)
    books.room = [3, 2, 4]  # room for 3 items, then for the 2 left, then for 4 of 5
    report = RunReport(run_id="r", started_at=utcnow())
    loader(books, threading.Event(), report, writes_in_flight=1).load(deletes(12))
    assert [len(batch) for batch in books.batches] == [3, 2, 4, 1, 2]
    assert report.counts()["deleted"] == 12
    sent = [i for batch in books.batches for i in batch]
    assert sorted(sent) == sorted(str(500 + n) for n in range(12))  # each once


def test_a_stop_after_part_of_a_batch_records_that_part_and_sends_no_rest() -> None:
    stop = threading.Event()
    books = FakeBooks(delay=0.001, after_batch=lambda sent: stop.set())
    books.room = [3]
    report = RunReport(run_id="r", started_at=utcnow())
    with pytest.raises(Interrupted):
        loader(books, stop, report, writes_in_flight=1).load(deletes(10))
    assert books.batches == [["500", "501", "502"]]
    outcomes = report.outcomes.values()
    assert {o.invoice_id for o in outcomes if o.action == "deleted"} == {"500", "501", "502"}
    unsent = [o for o in outcomes if o.action == "failed"]
    assert len(unsent) == 7
    assert all("the run stopped first" in (o.error or "") for o in unsent)
