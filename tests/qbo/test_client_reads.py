"""The reads 0.2 needs, against respx: CDC, customers by LIKE patterns in batches,
invoices by Id and by date, every customer."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import httpx
import pytest
import respx

from fourdqbo import jsonio
from fourdqbo.errors import CdcCannotAdvance, MalformedPayload, QBOFault
from fourdqbo.qbo import query as q
from fourdqbo.qbo.client import QBOClient
from tests.qbo.fakes import COMPANY, FakeTime, answer, fault, invoice_row, statement_of
from tests.qbo.test_query import parse_in

SINCE = datetime(2025, 3, 1, 17, tzinfo=UTC)


def stamp(seconds: int) -> str:
    local = SINCE + timedelta(seconds=seconds) - timedelta(hours=8)
    return local.strftime("%Y-%m-%dT%H:%M:%S") + "-08:00"


def cdc_invoice(n: int, seconds: int) -> dict[str, Any]:
    row = invoice_row(str(10000 + n), n)
    row["MetaData"] = {"LastUpdatedTime": stamp(seconds)}
    return row


def customer_row(n: int, name: str | None = None, active: bool = True) -> dict[str, Any]:
    return {"Id": str(n), "SyncToken": "0", "DisplayName": name or f"{n}.AB", "Active": active}


# -- CDC -----------------------------------------------------------------------------


def test_cdc_request_and_answer(router: respx.MockRouter, client: QBOClient) -> None:
    route = router.get(f"{COMPANY}/cdc").mock(
        return_value=answer(
            {
                "CDCResponse": [
                    {
                        "QueryResponse": [
                            {
                                "Invoice": [
                                    cdc_invoice(1, 5),
                                    {
                                        "domain": "QBO",
                                        "status": "Deleted",
                                        "Id": "266",
                                        "MetaData": {"LastUpdatedTime": stamp(6)},
                                    },
                                ],
                                "startPosition": 1,
                                "maxResults": 2,
                            },
                            {},
                        ]
                    }
                ],
                "time": "2025-03-05T10:00:00.300-08:00",
            }
        )
    )
    pacific = timezone(timedelta(hours=-8))
    changes = client.cdc(["Invoice", "Customer"], SINCE.astimezone(pacific))
    params = route.calls.last.request.url.params
    assert params["entities"] == "Invoice,Customer"
    assert params["changedSince"] == "2025-03-01T17:00:00+00:00"
    assert params["minorversion"] == "75"
    assert "changedSince=2025-03-01T17%3A00%3A00%2B00%3A00" in str(route.calls.last.request.url)
    assert [i.doc_number for i in changes.invoices] == ["10001"]
    assert changes.deleted_invoice_ids == ("266",)
    assert changes.customers == () and changes.deleted_customer_ids == ()
    assert changes.server_time == datetime(2025, 3, 5, 18, 0, 0, 300000, tzinfo=UTC)
    assert changes.requests == 1
    assert client.requests_by_kind == {"read": 1, "write": 0}


def test_cdc_pages_forward_when_an_answer_is_full(
    router: respx.MockRouter, client: QBOClient
) -> None:
    rows = [cdc_invoice(n, n // 2) for n in range(1, 1501)]

    def respond(request: httpx.Request) -> httpx.Response:
        since = datetime.fromisoformat(request.url.params["changedSince"])
        wanted = request.url.params["entities"].split(",")
        parts: list[dict[str, Any]] = []
        if "Invoice" in wanted:
            page = [
                r for r in rows if datetime.fromisoformat(r["MetaData"]["LastUpdatedTime"]) >= since
            ]
            parts.append({"Invoice": page[:1000], "startPosition": 1, "maxResults": 1000})
        if "Customer" in wanted:
            parts.append({})
        return answer({"CDCResponse": [{"QueryResponse": parts}], "time": "x"})

    route = router.get(f"{COMPANY}/cdc").mock(side_effect=respond)
    changes = client.cdc(["Invoice", "Customer"], SINCE)
    assert sorted(int(i.id) for i in changes.invoices) == list(range(1, 1501))
    assert route.call_count == 2 and changes.requests == 2
    second = route.calls[1].request.url.params
    assert second["entities"] == "Invoice"
    assert datetime.fromisoformat(second["changedSince"]) == SINCE + timedelta(seconds=500)
    assert changes.server_time is None  # "x" is no time


def test_cdc_full_answer_at_one_time_cannot_advance(
    router: respx.MockRouter, client: QBOClient
) -> None:
    rows = [cdc_invoice(n, 30) for n in range(1, 1001)]
    router.get(f"{COMPANY}/cdc").mock(
        return_value=answer({"CDCResponse": [{"QueryResponse": [{"Invoice": rows}]}]})
    )
    with pytest.raises(CdcCannotAdvance, match="cannot page past"):
        client.cdc(["Invoice"], SINCE)


def test_cdc_nonsense_is_malformed_and_faults_are_faults(
    router: respx.MockRouter, client: QBOClient
) -> None:
    router.get(f"{COMPANY}/cdc").mock(
        side_effect=[
            answer({"QueryResponse": {}}),
            answer(fault("4000", "QueryParserError"), status=400),
        ]
    )
    with pytest.raises(MalformedPayload):
        client.cdc(["Invoice"], SINCE)
    with pytest.raises(QBOFault):
        client.cdc(["Invoice"], SINCE)


# -- customers by LIKE patterns ------------------------------------------------------


def batch_statements(request: httpx.Request) -> list[tuple[str, str]]:
    return [(i["bId"], i["Query"]) for i in jsonio.loads(request.content)["BatchItemRequest"]]


def like_pattern(statement: str) -> str:
    found = re.search(r"DisplayName LIKE '((?:[^'\\]|\\.)*)'", statement)
    assert found, statement
    return re.sub(r"\\(.)", r"\1", found.group(1))


def test_31_patterns_go_as_2_batches_of_query_items(
    router: respx.MockRouter, make_client: Callable[..., QBOClient], fake_time: FakeTime
) -> None:
    sent: list[tuple[float, list[tuple[str, str]]]] = []

    def respond(request: httpx.Request) -> httpx.Response:
        items = batch_statements(request)
        sent.append((fake_time.now, items))
        responses = []
        for bid, statement in items:
            n = int(like_pattern(statement).split(".")[0])
            # Every pattern finds its customer; 1000 and 1001 also find a shared one.
            rows = [customer_row(n, f"{n}.AB")]
            if n in (1000, 1001):
                rows.append(customer_row(5, "5.SHARED"))
            responses.append({"bId": bid, "QueryResponse": {"Customer": rows}})
        return answer({"BatchItemResponse": responses})

    route = router.post(f"{COMPANY}/batch").mock(side_effect=respond)
    client = make_client(QBO_MAX_REQUESTS_PER_MINUTE=30)
    patterns = [f"{1000 + n}.%" for n in range(31)]
    customers = client.find_customers_like([*patterns, patterns[0]])
    assert route.call_count == 2
    assert [len(items) for _, items in sent] == [30, 1]
    first = sent[0][1][0][1]
    assert first == (
        "SELECT * FROM Customer WHERE DisplayName LIKE '1000.%' AND Active IN (true, false) "
        "ORDERBY Id STARTPOSITION 1 MAXRESULTS 1000"
    )
    # Each item counted one against the request limit: 30 + 1 do not fit one window of 30.
    assert sent[1][0] - sent[0][0] >= 60.0
    ids = [c.id for c in customers]
    assert len(ids) == len(set(ids)) == 32
    assert client.requests_by_kind == {"read": 2, "write": 0}
    assert all("requestid" not in c.request.url.params for c in route.calls)


def test_like_values_are_escaped_and_inactive_can_be_left_out(
    router: respx.MockRouter, client: QBOClient
) -> None:
    route = router.post(f"{COMPANY}/batch").mock(
        return_value=answer({"BatchItemResponse": [{"bId": "l0", "QueryResponse": {}}]})
    )
    assert client.find_customers_like(["O'B%"], include_inactive=False) == []
    ((_, statement),) = batch_statements(route.calls.last.request)
    assert "DisplayName LIKE 'O\\'B%'" in statement and "Active" not in statement
    assert client.find_customers_like([]) == []
    assert route.call_count == 1


def test_a_pattern_answering_a_fault_raises(router: respx.MockRouter, client: QBOClient) -> None:
    router.post(f"{COMPANY}/batch").mock(
        return_value=answer(
            {
                "BatchItemResponse": [
                    {"bId": "l0", "QueryResponse": {"Customer": [customer_row(1)]}},
                    {"bId": "l1", "Fault": fault("4001", "QueryValidationError")["Fault"]},
                ]
            },
            tid="tid-like",
        )
    )
    with pytest.raises(QBOFault) as caught:
        client.find_customers_like(["1.%", "2.%"])
    assert caught.value.code == "4001" and caught.value.intuit_tid == "tid-like"


def test_a_full_pattern_is_followed_up_with_paged_single_queries(
    router: respx.MockRouter, client: QBOClient
) -> None:
    everyone = [customer_row(n, f"1003.{n}") for n in range(1, 2301)]
    router.post(f"{COMPANY}/batch").mock(
        return_value=answer(
            {"BatchItemResponse": [{"bId": "l0", "QueryResponse": {"Customer": everyone[:1000]}}]}
        )
    )

    def respond(request: httpx.Request) -> httpx.Response:
        statement = statement_of(request)
        start = int(re.search(r"STARTPOSITION (\d+)", statement).group(1))
        return answer({"QueryResponse": {"Customer": everyone[start - 1 : start + 999]}})

    route = router.get(f"{COMPANY}/query").mock(side_effect=respond)
    customers = client.find_customers_like(["1003.%"])
    assert [c.id for c in customers] == [str(n) for n in range(1, 2301)]
    statements = [statement_of(c.request) for c in route.calls]
    assert [re.search(r"STARTPOSITION (\d+)", s).group(1) for s in statements] == ["1001", "2001"]
    assert all("DisplayName LIKE '1003.%' AND Active IN (true, false)" in s for s in statements)
    assert all("ORDERBY Id" in s for s in statements)


def test_a_pattern_left_unanswered_in_its_batch_is_asked_alone(
    router: respx.MockRouter, client: QBOClient
) -> None:
    router.post(f"{COMPANY}/batch").mock(
        return_value=answer(
            {"BatchItemResponse": [{"bId": "l0", "QueryResponse": {"Customer": [customer_row(1)]}}]}
        )
    )
    route = router.get(f"{COMPANY}/query").mock(
        return_value=answer({"QueryResponse": {"Customer": [customer_row(2)]}})
    )
    customers = client.find_customers_like(["1.%", "2.%"])
    assert [c.id for c in customers] == ["1", "2"]
    assert "LIKE '2.%'" in statement_of(route.calls.last.request)


# -- invoices by Id and by date, every customer --------------------------------------


def test_invoices_by_ids_are_chunked_in_lists(router: respx.MockRouter, client: QBOClient) -> None:
    def respond(request: httpx.Request) -> httpx.Response:
        condition = re.search(r"(Id IN \(.*\)) STARTPOSITION", statement_of(request)).group(1)
        ids = parse_in(condition, "Id")
        return answer({"QueryResponse": {"Invoice": [invoice_row(i, int(i)) for i in ids]}})

    route = router.get(f"{COMPANY}/query").mock(side_effect=respond)
    ids = [str(n) for n in range(1, 801)]
    invoices = client.find_invoices_by_ids([*ids, "1"])
    assert [i.id for i in invoices] == ids
    assert route.call_count > 1
    for call in route.calls:
        assert q.encoded_length(statement_of(call.request)) <= q.MAX_STATEMENT_CHARS
    assert client.find_invoices_by_ids([]) == []


def paged(entity: str, rows: list[dict[str, Any]]) -> Callable[[httpx.Request], httpx.Response]:
    def respond(request: httpx.Request) -> httpx.Response:
        statement = statement_of(request)
        start = int(re.search(r"STARTPOSITION (\d+)", statement).group(1))
        page = rows[start - 1 : start + 999]
        return answer({"QueryResponse": {entity: page} if page else {}, "time": "x"})

    return respond


def test_invoices_dated_since_page_in_id_order(router: respx.MockRouter, client: QBOClient) -> None:
    rows = [invoice_row(str(n), n) for n in range(1, 1201)]
    route = router.get(f"{COMPANY}/query").mock(side_effect=paged("Invoice", rows))
    invoices = client.invoices_dated_since(date(2025, 3, 1))
    assert len(invoices) == 1200
    assert [statement_of(c.request) for c in route.calls] == [
        "SELECT * FROM Invoice WHERE TxnDate >= '2025-03-01' ORDERBY Id "
        f"STARTPOSITION {start} MAXRESULTS 1000"
        for start in (1, 1001)
    ]
    with pytest.raises(TypeError):
        client.invoices_dated_since(datetime(2025, 3, 1, tzinfo=UTC))  # type: ignore[arg-type]


def test_all_customers_pages_and_includes_inactive(
    router: respx.MockRouter, client: QBOClient
) -> None:
    rows = [customer_row(n, active=n % 2 == 0) for n in range(1, 2001)]
    route = router.get(f"{COMPANY}/query").mock(side_effect=paged("Customer", rows))
    customers = client.all_customers()
    assert len(customers) == 2000 and sum(not c.active for c in customers) == 1000
    assert route.call_count == 3  # two full pages, then the empty one that ends it
    assert statement_of(route.calls[0].request) == (
        "SELECT * FROM Customer WHERE Active IN (true, false) ORDERBY Id "
        "STARTPOSITION 1 MAXRESULTS 1000"
    )
    client.all_customers(include_inactive=False)
    assert "Active" not in statement_of(route.calls.last.request)


def test_like_batches_are_sized_to_the_room_and_every_pattern_is_asked_once(
    router: respx.MockRouter, make_client: Callable[..., QBOClient], fake_time: FakeTime
) -> None:
    asked: list[list[str]] = []

    def respond(request: httpx.Request) -> httpx.Response:
        items = batch_statements(request)
        asked.append([like_pattern(statement) for _, statement in items])
        responses = []
        for bid, statement in items:
            n = int(like_pattern(statement).split(".")[0])
            rows = [customer_row(n, f"{n}.AB")]
            responses.append({"bId": bid, "QueryResponse": {"Customer": rows}})
        return answer({"BatchItemResponse": responses})

    router.post(f"{COMPANY}/batch").mock(side_effect=respond)
    router.get(f"{COMPANY}/query").mock(return_value=answer({"QueryResponse": {}}))
    client = make_client(QBO_MAX_REQUESTS_PER_MINUTE=60)
    for _ in range(45):  # room for 15 look-ups in this minute
        client.query("SELECT * FROM Item")
    patterns = [f"{1000 + n}.%" for n in range(40)]
    customers = client.find_customers_like(patterns)
    assert [len(batch) for batch in asked] == [15, 25]
    assert [p for batch in asked for p in batch] == patterns
    assert len({c.id for c in customers}) == 40
