"""The customer side of the load stage against a fake `QBOBooks`: reactivations whose
answer was lost, or refused, are read back by Id before anything is sent again."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from typing import Any

from fourdqbo.errors import OutcomeUnknown, QBOFault
from fourdqbo.qbo.client import BatchResult
from fourdqbo.qbo.records import Customer
from fourdqbo.sync.customers import CustomerToReactivate
from fourdqbo.sync.load import RESOLVE_ROUNDS, Loader
from fourdqbo.sync.report import RunReport
from fourdqbo.timefmt import utcnow
from tests.sync.test_pipeline_load import NoProgress

INACTIVE = {"Id": "58", "SyncToken": "4", "DisplayName": "1003.JD (deleted)", "Active": False}


class CustomerBooks:
    """A QBO whose customer 58 is inactive; each batch is answered by the next of
    `answers` ("lost": the answer never came and nothing was applied, "ok", or a fault
    code), and a read by Id shows the customer as it is."""

    def __init__(self, *answers: str) -> None:
        self.answers = list(answers)
        self.customer = dict(INACTIVE)
        self.batches: list[list[dict[str, Any]]] = []
        self.reads = 0
        self.before_write = None
        self.request_count = 0

    def batch(self, items: Sequence[Any], *, fill: bool = False) -> list[BatchResult]:
        self.batches.append([dict(item.body) for item in items])
        answer = self.answers.pop(0)
        if answer == "lost":
            raise OutcomeUnknown("QBO batch: connection dropped", service="qbo")
        (item,) = items
        if answer != "ok":
            return [BatchResult(item.bid, fault=QBOFault("refused", code=answer))]
        self.customer = {
            **self.customer,
            "Active": True,
            "DisplayName": item.body.get("DisplayName", self.customer["DisplayName"]),
            "SyncToken": str(int(self.customer["SyncToken"]) + 1),
        }
        return [BatchResult(item.bid, entity=dict(self.customer))]

    def find_customers_by_ids(
        self, ids: Iterable[str], *, include_inactive: bool = True
    ) -> list[Customer]:
        self.reads += 1
        return [Customer.parse(self.customer)] if "58" in ids else []


def loader_for(books: CustomerBooks) -> tuple[Loader, RunReport]:
    report = RunReport(run_id="r1", started_at=utcnow())
    loader = Loader(books, report, lock=None, stop=threading.Event(), progress=NoProgress())  # type: ignore[arg-type]
    return loader, report


def wish() -> CustomerToReactivate:
    return CustomerToReactivate(Customer.parse(INACTIVE), "1003.JD")


def test_a_lost_reactivation_that_did_not_happen_is_sent_again_after_a_read_back() -> None:
    books = CustomerBooks("lost", "ok")
    loader, report = loader_for(books)
    loader._reactivate([wish()])
    assert loader.reactivated == {"58": "1003.JD"}
    assert loader.reactivation_errors == {}
    assert report.customers_reactivated == 1
    assert books.reads == 1 and len(books.batches) == 2
    assert books.batches[1][0]["DisplayName"] == "1003.JD"


def test_a_lost_reactivation_that_did_happen_is_not_sent_again() -> None:
    books = CustomerBooks("lost")
    books.customer = {**INACTIVE, "Active": True, "DisplayName": "1003.JD", "SyncToken": "5"}
    loader, report = loader_for(books)
    loader._reactivate([wish()])
    assert loader.reactivated == {"58": "1003.JD"} and report.customers_reactivated == 1
    assert len(books.batches) == 1


def test_a_refused_reactivation_is_not_repeated_and_says_why() -> None:
    books = CustomerBooks("6000")
    loader, report = loader_for(books)
    loader._reactivate([wish()])
    assert len(books.batches) == 1
    assert loader.reactivated == {} and report.customers_reactivated == 0
    assert "58" in loader.reactivation_errors["58"]
    assert "6000" in loader.reactivation_errors["58"]


def test_reactivations_whose_answers_keep_getting_lost_give_up_after_the_rounds() -> None:
    books = CustomerBooks(*["lost"] * RESOLVE_ROUNDS)
    loader, _ = loader_for(books)
    loader._reactivate([wish()])
    assert len(books.batches) == RESOLVE_ROUNDS
    assert "outcome unknown" in loader.reactivation_errors["58"]
