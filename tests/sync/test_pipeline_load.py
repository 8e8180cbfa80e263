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

from fourdqbo.qbo.client import BatchResult
from fourdqbo.qbo.records import Invoice
from fourdqbo.sync.load import Loader, PlannedChunk
from fourdqbo.sync.pipeline import Interrupted
from fourdqbo.sync.planning import Action, Plan, QuotePlan
from fourdqbo.sync.report import RunReport
from fourdqbo.timefmt import utcnow


class FakeBooks:
    """Answers every batch item with success, after `delay`; counts what was in flight."""

    def __init__(self, delay: float = 0.02, after_batch: Callable[[int], None] | None = None):
        self.delay = delay
        self.after_batch = after_batch
        self.before_write: Callable[[], None] | None = None
        self.request_count = 0
        self.batches: list[list[str]] = []
        self._lock = threading.Lock()
        self._in_flight = 0
        self.most_in_flight = 0

    def batch(self, items: Sequence[Any]) -> list[BatchResult]:
        with self._lock:
            self._in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self._in_flight)
            self.batches.append([item.body["Id"] for item in items])
            sent = len(self.batches)
        time.sleep(self.delay)
        with self._lock:
            self._in_flight -= 1
        if self.after_batch is not None:
            self.after_batch(sent)
        return [BatchResult(bid=item.bid, entity={"Id": item.body["Id"]}) for item in items]

    def find_invoices_by_doc_numbers(self, doc_numbers: Any) -> list[Invoice]:
        raise AssertionError("no write was uncertain: nothing to look up")

    def find_customers_by_names(self, names: Any, include_inactive: bool = True) -> list[Any]:
        raise AssertionError("no customer is needed")

    def find_items_by_names(self, names: Any, include_inactive: bool = False) -> list[Any]:
        raise AssertionError("no item is needed")

    def void_invoice(self, id: str, sync_token: str) -> dict[str, Any]:
        raise AssertionError("no void was planned")


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


def loader(books: FakeBooks, stop: threading.Event, report: RunReport) -> Loader:
    return Loader(books, report, lock=None, stop=stop, progress=NoProgress(), batch_size=5)


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
    Loader(
        books,
        report,
        lock=None,
        stop=threading.Event(),
        progress=NoProgress(),
        batch_size=5,
        writes_in_flight=1,
    ).load(deletes(12))
    assert books.most_in_flight == 1
    assert [len(batch) for batch in books.batches] == [5, 5, 2]
