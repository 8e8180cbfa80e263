"""QBOClient against respx: URLs and headers, paging, IN chunking, batch, writes, auth,
throttling and pacing, faults. The token source is a small fake (the client only needs
the TokenSource protocol)."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
import respx

from fourdqbo import jsonio
from fourdqbo.config import Settings
from fourdqbo.errors import (
    AuthError,
    ConfigError,
    MalformedPayload,
    OutcomeUnknown,
    QBOFault,
    UpstreamError,
)
from fourdqbo.qbo import query as q
from fourdqbo.qbo.client import (
    MAX_BATCH_ITEMS,
    OUTCOME_UNKNOWN_CODE,
    BatchItem,
    QBOClient,
    batch_chunks,
)
from tests.qbo.fakes import (
    COMPANY,
    FakeTime,
    FakeTokens,
    answer,
    fault,
    invoice_row,
    statement_of,
)
from tests.qbo.test_query import parse_in

# -- every call ----------------------------------------------------------------------


def test_every_call_carries_minorversion_token_and_json_headers(
    router: respx.MockRouter, client: QBOClient
) -> None:
    route_q = router.get(f"{COMPANY}/query").mock(return_value=answer({"QueryResponse": {}}))
    route_w = router.post(f"{COMPANY}/invoice").mock(
        return_value=answer({"Invoice": invoice_row("1")})
    )
    route_b = router.post(f"{COMPANY}/batch").mock(
        return_value=answer({"BatchItemResponse": [{"bId": "1", "QueryResponse": {}}]})
    )
    client.query("SELECT * FROM Invoice")
    client.create("Invoice", {"DocNumber": "1"})
    client.delete("Invoice", "1", "0")
    client.batch([BatchItem("1", query="SELECT * FROM Item")])
    requests = [c.request for r in (route_q, route_w, route_b) for c in r.calls]
    assert len(requests) == 4
    for request in requests:
        assert request.url.params["minorversion"] == "75"
        assert request.headers["Authorization"] == "Bearer tok-1"
        assert request.headers["Accept"] == "application/json"
        assert request.headers["Content-Type"] == "application/json"
    assert client.request_count == 4


def test_minor_version_comes_from_settings(
    router: respx.MockRouter, make_client: Callable[..., QBOClient]
) -> None:
    route = router.get(f"{COMPANY}/query").mock(return_value=answer({"QueryResponse": {}}))
    make_client(QBO_MINOR_VERSION="80").query("SELECT * FROM Item")
    assert route.calls.last.request.url.params["minorversion"] == "80"


def test_client_requires_qbo_settings(make_settings: Callable[..., Settings]) -> None:
    with pytest.raises(ConfigError, match="QBO_CLIENT_ID"):
        QBOClient(make_settings(QBO_CLIENT_ID=""), FakeTokens())


def test_intuit_tid_is_logged_at_debug(
    router: respx.MockRouter, client: QBOClient, caplog: pytest.LogCaptureFixture
) -> None:
    router.get(f"{COMPANY}/query").mock(return_value=answer({"QueryResponse": {}}, tid="abc-42"))
    with caplog.at_level(logging.DEBUG, logger="fourdqbo.qbo.client"):
        client.query("SELECT * FROM Item")
    assert any("intuit_tid=abc-42" in r.getMessage() for r in caplog.records)


# -- queries and paging --------------------------------------------------------------


def paged_invoices(total: int) -> Callable[[httpx.Request], httpx.Response]:
    def respond(request: httpx.Request) -> httpx.Response:
        statement = statement_of(request)
        start = int(re.search(r"STARTPOSITION (\d+)", statement).group(1))
        size = int(re.search(r"MAXRESULTS (\d+)", statement).group(1))
        rows = [invoice_row(str(n), n) for n in range(start, min(start + size, total + 1))]
        body: dict[str, Any] = {"startPosition": start, "maxResults": len(rows)}
        if rows:
            body["Invoice"] = rows
        return answer({"QueryResponse": body, "time": "x"})

    return respond


def test_paging_across_more_than_a_thousand_rows(
    router: respx.MockRouter, client: QBOClient
) -> None:
    route = router.get(f"{COMPANY}/query").mock(side_effect=paged_invoices(2345))
    rows = client.query_all("Invoice", order_by="Id")
    assert [int(r["Id"]) for r in rows] == list(range(1, 2346))
    statements = [statement_of(c.request) for c in route.calls]
    assert statements == [
        f"SELECT * FROM Invoice ORDERBY Id STARTPOSITION {start} MAXRESULTS 1000"
        for start in (1, 1001, 2001)
    ]


def test_paging_stops_after_an_empty_page_when_rows_fill_whole_pages(
    router: respx.MockRouter, client: QBOClient
) -> None:
    route = router.get(f"{COMPANY}/query").mock(side_effect=paged_invoices(2000))
    assert len(client.query_all("Invoice")) == 2000
    assert route.call_count == 3


def test_query_returns_the_query_response(router: respx.MockRouter, client: QBOClient) -> None:
    router.get(f"{COMPANY}/query").mock(
        return_value=answer({"QueryResponse": {"Item": [{"Id": "1"}], "maxResults": 1}})
    )
    assert client.query("SELECT * FROM Item") == {"Item": [{"Id": "1"}], "maxResults": 1}


def test_invoices_by_doc_numbers_are_chunked_in_lists(
    router: respx.MockRouter, client: QBOClient
) -> None:
    def respond(request: httpx.Request) -> httpx.Response:
        docs = parse_in(
            re.search(r"(DocNumber IN \(.*\)) STARTPOSITION", statement_of(request)).group(1),
            "DocNumber",
        )
        return answer({"QueryResponse": {"Invoice": [invoice_row(d) for d in docs]}})

    route = router.get(f"{COMPANY}/query").mock(side_effect=respond)
    docs = [f"{100000 + n}" for n in range(1500)]
    invoices = client.find_invoices_by_doc_numbers([*docs, docs[0]])
    assert [i.doc_number for i in invoices] == docs
    assert route.call_count > 1
    for call in route.calls:
        assert q.encoded_length(statement_of(call.request)) <= q.MAX_STATEMENT_CHARS
        assert len(str(call.request.url)) < 3500


def test_nothing_to_look_up_sends_nothing(router: respx.MockRouter, client: QBOClient) -> None:
    route = router.get(f"{COMPANY}/query")
    assert client.find_invoices_by_doc_numbers([]) == []
    assert route.call_count == 0


def test_customer_lookup_includes_inactive_and_escapes_names(
    router: respx.MockRouter, client: QBOClient
) -> None:
    route = router.get(f"{COMPANY}/query").mock(
        return_value=answer(
            {
                "QueryResponse": {
                    "Customer": [
                        {"Id": "7", "SyncToken": "2", "DisplayName": "O'Brien", "Active": False}
                    ]
                }
            }
        )
    )
    customers = client.find_customers_by_names(["O'Brien", "back\\slash"])
    assert customers[0].display_name == "O'Brien" and customers[0].active is False
    assert statement_of(route.calls.last.request) == (
        "SELECT * FROM Customer WHERE Active IN (true, false) AND "
        "DisplayName IN ('O\\'Brien', 'back\\\\slash') STARTPOSITION 1 MAXRESULTS 1000"
    )
    client.find_customers_by_names(["x"], include_inactive=False)
    assert "Active" not in statement_of(route.calls.last.request)


def test_get_customer_by_name(router: respx.MockRouter, client: QBOClient) -> None:
    route = router.get(f"{COMPANY}/query").mock(return_value=answer({"QueryResponse": {}}))
    assert client.get_customer_by_name("1042.JQD") is None
    assert "DisplayName = '1042.JQD'" in statement_of(route.calls.last.request)
    assert "Active IN (true, false)" in statement_of(route.calls.last.request)


def test_items_and_single_invoice_lookups(router: respx.MockRouter, client: QBOClient) -> None:
    def respond(request: httpx.Request) -> httpx.Response:
        statement = statement_of(request)
        if "FROM Item" in statement:
            return answer({"QueryResponse": {"Item": [{"Id": "12", "Name": "Procedure"}]}})
        return answer({"QueryResponse": {"Invoice": [invoice_row("9", 1), invoice_row("9", 2)]}})

    route = router.get(f"{COMPANY}/query").mock(side_effect=respond)
    assert [i.id for i in client.find_items_by_names(["Procedure", "Supplies Charge"])] == ["12"]
    assert "Name IN ('Procedure', 'Supplies Charge')" in statement_of(route.calls.last.request)
    assert [i.id for i in client.get_invoice_by_doc("9")] == ["1", "2"]
    assert "DocNumber = '9'" in statement_of(route.calls.last.request)


def test_changed_since_queries_last_updated_time_in_utc(
    router: respx.MockRouter, client: QBOClient
) -> None:
    def respond(request: httpx.Request) -> httpx.Response:
        entity = re.search(r"FROM (\w+)", statement_of(request)).group(1)
        return answer({"QueryResponse": {entity: [invoice_row("1")]}})

    route = router.get(f"{COMPANY}/query").mock(side_effect=respond)
    since = datetime(2025, 3, 1, tzinfo=UTC)
    invoices = client.invoices_changed_since(since)
    assert invoices[0].updated_at == datetime(2025, 3, 5, 18, 21, 33, tzinfo=UTC)
    assert statement_of(route.calls.last.request) == (
        "SELECT * FROM Invoice WHERE MetaData.LastUpdatedTime >= '2025-03-01T00:00:00+00:00' "
        "ORDERBY MetaData.LastUpdatedTime STARTPOSITION 1 MAXRESULTS 1000"
    )
    estimates = client.estimates_changed_since(since)
    assert estimates[0]["DocNumber"] == "1"
    assert "FROM Estimate WHERE MetaData.LastUpdatedTime >=" in statement_of(
        route.calls.last.request
    )


# -- faults and malformed answers ----------------------------------------------------


def test_fault_becomes_qbofault_with_code_detail_element_and_tid(
    router: respx.MockRouter, client: QBOClient
) -> None:
    router.post(f"{COMPANY}/customer").mock(
        return_value=answer(
            fault("6240", "Duplicate Name Exists Error", "The name supplied already exists.", "x"),
            status=400,
            tid="tid-dup",
        )
    )
    with pytest.raises(QBOFault) as caught:
        client.create("Customer", {"DisplayName": "1042.JQD"})
    error = caught.value
    assert (error.code, error.detail, error.element) == (
        "6240",
        "The name supplied already exists.",
        "x",
    )
    assert error.fault_type == "ValidationFault"
    assert error.intuit_tid == "tid-dup" and "tid-dup" in str(error)
    assert error.status == 400 and error.exit_code == 3


def test_stale_sync_token_fault(router: respx.MockRouter, client: QBOClient) -> None:
    router.post(f"{COMPANY}/invoice").mock(
        return_value=answer(fault("5010", "Stale Object Error"), status=400)
    )
    with pytest.raises(QBOFault) as caught:
        client.update("Invoice", {"Id": "1", "SyncToken": "0", "TotalAmt": 5})
    assert caught.value.code == "5010"


@pytest.mark.parametrize(
    "response",
    [
        httpx.Response(200, content=b"<html>oops</html>"),
        httpx.Response(200, content=b"[1, 2]"),
        httpx.Response(200, content=b'{"QueryResponse": []}'),
        httpx.Response(200, content=b'{"QueryResponse": {"Invoice": {"Id": "1"}}}'),
    ],
)
def test_unusable_answers_are_malformed(
    router: respx.MockRouter, client: QBOClient, response: httpx.Response
) -> None:
    router.get(f"{COMPANY}/query").mock(return_value=response)
    with pytest.raises(MalformedPayload):
        client.query_all("Invoice")


def test_error_status_without_fault_names_the_tid(
    router: respx.MockRouter, client: QBOClient
) -> None:
    router.get(f"{COMPANY}/query").mock(
        return_value=httpx.Response(404, text="nope", headers={"intuit_tid": "tid-404"})
    )
    with pytest.raises(UpstreamError, match="tid-404") as caught:
        client.query("SELECT * FROM Invoice")
    assert caught.value.status == 404


def test_exhausted_retries_name_the_tid(
    router: respx.MockRouter, client: QBOClient, fake_time: FakeTime
) -> None:
    route = router.get(f"{COMPANY}/query").mock(
        return_value=httpx.Response(503, headers={"intuit_tid": "tid-503"})
    )
    with pytest.raises(UpstreamError, match="tid-503"):
        client.query("SELECT * FROM Invoice")
    assert route.call_count == 5


# -- auth ----------------------------------------------------------------------------


def test_401_refreshes_once_and_retries(
    router: respx.MockRouter, client: QBOClient, tokens: FakeTokens
) -> None:
    route = router.get(f"{COMPANY}/query").mock(
        side_effect=[
            answer(fault("3200", "AuthenticationFailed"), status=401),
            answer({"QueryResponse": {}}),
        ]
    )
    assert client.query("SELECT * FROM Item") == {}
    assert tokens.rejected == ["tok-1"]
    auth = [c.request.headers["Authorization"] for c in route.calls]
    assert auth == ["Bearer tok-1", "Bearer tok-2"]


def test_fault_3200_with_status_400_also_refreshes(
    router: respx.MockRouter, client: QBOClient, tokens: FakeTokens
) -> None:
    router.get(f"{COMPANY}/query").mock(
        side_effect=[answer(fault("3200"), status=400), answer({"QueryResponse": {}})]
    )
    client.query("SELECT * FROM Item")
    assert tokens.rejected == ["tok-1"]


def test_second_401_is_an_auth_error(
    router: respx.MockRouter, client: QBOClient, tokens: FakeTokens
) -> None:
    route = router.get(f"{COMPANY}/query").mock(
        return_value=httpx.Response(401, text="", headers={"intuit_tid": "tid-401"})
    )
    with pytest.raises(AuthError) as caught:
        client.query("SELECT * FROM Item")
    assert "fourdqbo auth login" in str(caught.value)
    assert "tid-401" in str(caught.value)
    assert caught.value.exit_code == 3
    assert route.call_count == 2
    assert tokens.rejected == ["tok-1"]


def test_401_on_a_write_retries_with_the_same_requestid(
    router: respx.MockRouter, client: QBOClient, tokens: FakeTokens
) -> None:
    route = router.post(f"{COMPANY}/invoice").mock(
        side_effect=[httpx.Response(401), answer({"Invoice": invoice_row("1")})]
    )
    client.create("Invoice", {"DocNumber": "1"})
    ids = [c.request.url.params["requestid"] for c in route.calls]
    assert len(ids) == 2 and ids[0] == ids[1]
    assert route.calls.last.request.headers["Authorization"] == "Bearer tok-2"


def test_403_is_an_auth_error_without_refresh(
    router: respx.MockRouter, client: QBOClient, tokens: FakeTokens
) -> None:
    router.get(f"{COMPANY}/query").mock(return_value=httpx.Response(403, text="forbidden"))
    with pytest.raises(AuthError):
        client.query("SELECT * FROM Item")
    assert tokens.rejected == []


# -- throttling ----------------------------------------------------------------------


def test_429_with_retry_after_waits_that_long(
    router: respx.MockRouter, client: QBOClient, fake_time: FakeTime
) -> None:
    route = router.get(f"{COMPANY}/query").mock(
        side_effect=[
            httpx.Response(429, headers={"Retry-After": "7"}),
            answer({"QueryResponse": {}}),
        ]
    )
    client.query("SELECT * FROM Item")
    assert route.call_count == 2
    assert 7.0 in fake_time.sleeps


def test_429_without_retry_after_backs_off(
    router: respx.MockRouter, client: QBOClient, fake_time: FakeTime
) -> None:
    route = router.get(f"{COMPANY}/query").mock(
        side_effect=[httpx.Response(429), httpx.Response(429), answer({"QueryResponse": {}})]
    )
    client.query("SELECT * FROM Item")
    assert route.call_count == 3
    assert len(fake_time.sleeps) == 2  # no pacing pause: the bucket had room
    first, second = fake_time.sleeps
    assert 0.25 <= first <= 0.5 and 0.5 <= second <= 1.0
    assert client.counter.throttled["qbo"] == 2


def test_429_on_a_batch_write_is_retried(
    router: respx.MockRouter, client: QBOClient, fake_time: FakeTime
) -> None:
    route = router.post(f"{COMPANY}/batch").mock(
        side_effect=[
            httpx.Response(429, headers={"Retry-After": "1"}),
            answer({"BatchItemResponse": [{"bId": "1", "Invoice": invoice_row("1")}]}),
        ]
    )
    results = client.batch([BatchItem("1", "create", "Invoice", {"DocNumber": "1"})])
    assert results[0].entity["DocNumber"] == "1"
    assert route.call_count == 2


# -- writes --------------------------------------------------------------------------


def test_writes_carry_a_fresh_requestid_and_the_right_path(
    router: respx.MockRouter, client: QBOClient
) -> None:
    route = router.post(f"{COMPANY}/invoice").mock(
        return_value=answer({"Invoice": {"Id": "1", "status": "Deleted"}})
    )
    client.create("Invoice", {"DocNumber": "1"})
    client.update("Invoice", {"Id": "1", "SyncToken": "0", "DocNumber": "1"})
    client.update("Invoice", {"Id": "1", "SyncToken": "1"}, sparse=False)
    client.delete("Invoice", "1", "2")
    client.void_invoice("1", "3")
    requests = [c.request for c in route.calls]
    ids = [r.url.params["requestid"] for r in requests]
    assert len(set(ids)) == 5 and all(re.fullmatch(r"[0-9a-f]{32}", i) for i in ids)
    bodies = [jsonio.loads(r.content) for r in requests]
    assert bodies[1] == {"Id": "1", "SyncToken": "0", "DocNumber": "1", "sparse": True}
    assert bodies[2]["sparse"] is False
    assert bodies[3] == {"Id": "1", "SyncToken": "2"}
    assert [r.url.params.get("operation") for r in requests] == [
        None,
        None,
        None,
        "delete",
        "void",
    ]


def test_customer_writes_go_to_the_lower_case_path(
    router: respx.MockRouter, client: QBOClient
) -> None:
    route = router.post(f"{COMPANY}/customer").mock(
        return_value=answer({"Customer": {"Id": "5", "SyncToken": "0"}})
    )
    assert client.create("Customer", {"DisplayName": "1.AB"})["Id"] == "5"
    assert route.call_count == 1


def test_update_needs_id_and_sync_token(client: QBOClient) -> None:
    with pytest.raises(ValueError):
        client.update("Invoice", {"Id": "1"})


def test_money_is_sent_as_exact_decimal(router: respx.MockRouter, client: QBOClient) -> None:
    from decimal import Decimal

    route = router.post(f"{COMPANY}/invoice").mock(return_value=answer({"Invoice": {"Id": "1"}}))
    client.create("Invoice", {"TotalAmt": Decimal("0.10")})
    assert b'"TotalAmt": 0.10' in route.calls.last.request.content


def test_timeout_on_a_write_is_outcome_unknown_and_not_retried(
    router: respx.MockRouter, client: QBOClient
) -> None:
    route = router.post(f"{COMPANY}/invoice").mock(side_effect=httpx.ReadTimeout("slow"))
    with pytest.raises(OutcomeUnknown):
        client.create("Invoice", {"DocNumber": "1"})
    assert route.call_count == 1


def test_server_error_on_a_batch_write_is_outcome_unknown_and_not_retried(
    router: respx.MockRouter, client: QBOClient
) -> None:
    route = router.post(f"{COMPANY}/batch").mock(
        return_value=httpx.Response(502, headers={"intuit_tid": "tid-502"})
    )
    with pytest.raises(OutcomeUnknown, match="tid-502"):
        client.batch([BatchItem("1", "delete", "Invoice", {"Id": "1", "SyncToken": "0"})])
    assert route.call_count == 1


def test_unretried_server_error_on_a_write_is_outcome_unknown(
    router: respx.MockRouter, client: QBOClient
) -> None:
    router.post(f"{COMPANY}/invoice").mock(return_value=httpx.Response(501))
    with pytest.raises(OutcomeUnknown):
        client.create("Invoice", {"DocNumber": "1"})


def test_timeout_on_a_read_is_retried(router: respx.MockRouter, client: QBOClient) -> None:
    route = router.get(f"{COMPANY}/query").mock(
        side_effect=[httpx.ReadTimeout("slow"), answer({"QueryResponse": {}})]
    )
    assert client.query("SELECT * FROM Item") == {}
    assert route.call_count == 2


# -- batch ---------------------------------------------------------------------------


def test_batch_answers_are_matched_by_bid_in_any_order(
    router: respx.MockRouter, client: QBOClient
) -> None:
    route = router.post(f"{COMPANY}/batch").mock(
        return_value=answer(
            {
                "BatchItemResponse": [
                    {"bId": "3", "QueryResponse": {"Item": [{"Id": "12"}]}},
                    {
                        "bId": "1",
                        "Fault": {
                            "Error": [
                                {
                                    "Message": "Duplicate Document Number Error",
                                    "Detail": "dup",
                                    "code": "6140",
                                    "element": "",
                                }
                            ],
                            "type": "ValidationFault",
                        },
                    },
                    {"bId": "2", "Invoice": invoice_row("2", 22)},
                ],
                "time": "x",
            }
        )
    )
    items = [
        BatchItem("1", "create", "Invoice", {"DocNumber": "1"}),
        BatchItem("2", "create", "Invoice", {"DocNumber": "2"}),
        BatchItem("3", query="SELECT * FROM Item"),
        BatchItem("4", "delete", "Invoice", {"Id": "9", "SyncToken": "0"}),
    ]
    results = client.batch(items)
    assert [r.bid for r in results] == ["1", "2", "3", "4"]
    assert results[0].fault.code == "6140" and not results[0].ok
    assert results[1].entity["Id"] == "22" and results[1].ok
    assert results[2].query_response == {"Item": [{"Id": "12"}]}
    assert results[3].outcome_unknown and results[3].fault.code == OUTCOME_UNKNOWN_CODE
    assert not results[0].outcome_unknown
    request = route.calls.last.request
    assert re.fullmatch(r"[0-9a-f]{32}", request.url.params["requestid"])
    assert jsonio.loads(request.content)["BatchItemRequest"] == [
        {"bId": "1", "operation": "create", "Invoice": {"DocNumber": "1"}},
        {"bId": "2", "operation": "create", "Invoice": {"DocNumber": "2"}},
        {"bId": "3", "Query": "SELECT * FROM Item"},
        {"bId": "4", "operation": "delete", "Invoice": {"Id": "9", "SyncToken": "0"}},
    ]


def test_query_only_batch_is_a_retried_read(router: respx.MockRouter, client: QBOClient) -> None:
    route = router.post(f"{COMPANY}/batch").mock(
        side_effect=[
            httpx.ReadTimeout("slow"),
            answer({"BatchItemResponse": [{"bId": "a", "QueryResponse": {}}]}),
        ]
    )
    assert client.batch([BatchItem("a", query="SELECT * FROM Item")])[0].query_response == {}
    assert route.call_count == 2
    assert "requestid" not in route.calls.last.request.url.params


def test_batch_refuses_more_than_thirty_items_and_bad_items(client: QBOClient) -> None:
    too_many = [BatchItem(str(n), query="SELECT * FROM Item") for n in range(31)]
    with pytest.raises(ValueError, match="batch_chunks"):
        client.batch(too_many)
    with pytest.raises(ValueError):
        client.batch([BatchItem("1", query="x"), BatchItem("1", query="y")])
    with pytest.raises(ValueError):
        client.batch([BatchItem("1", "create", "Invoice")])
    with pytest.raises(ValueError):
        client.batch([BatchItem("1", "create", "Invoice", {}, query="x")])
    assert client.batch([]) == []


def test_batch_chunks_split_into_thirties() -> None:
    items = [BatchItem(str(n), query="SELECT * FROM Item") for n in range(65)]
    assert [len(c) for c in batch_chunks(items)] == [MAX_BATCH_ITEMS, MAX_BATCH_ITEMS, 5]
    assert [i.bid for c in batch_chunks(items) for i in c] == [i.bid for i in items]


def test_batch_answer_without_the_item_list_is_malformed(
    router: respx.MockRouter, client: QBOClient
) -> None:
    router.post(f"{COMPANY}/batch").mock(return_value=answer({"time": "x"}))
    with pytest.raises(MalformedPayload):
        client.batch([BatchItem("1", "create", "Invoice", {"DocNumber": "1"})])


# -- pacing --------------------------------------------------------------------------


def most_in_any_window(times: list[float], window: float, weights: list[int] | None = None) -> int:
    weights = weights or [1] * len(times)
    return max(
        sum(w for t, w in zip(times, weights, strict=True) if start <= t < start + window)
        for start in times
    )


def test_requests_are_paced_under_the_per_minute_limit(
    router: respx.MockRouter, make_client: Callable[..., QBOClient], fake_time: FakeTime
) -> None:
    sent_at: list[float] = []

    def respond(request: httpx.Request) -> httpx.Response:
        sent_at.append(fake_time.now)
        return answer({"QueryResponse": {}})

    router.get(f"{COMPANY}/query").mock(side_effect=respond)
    client = make_client(QBO_MAX_REQUESTS_PER_MINUTE=40)
    for _ in range(100):
        client.query("SELECT * FROM Item")
    assert sent_at[29] == sent_at[0]  # a burst of 30 goes out at once
    assert most_in_any_window(sent_at, 60.0) <= 40
    # 100 requests at no more than 40 a minute need at least two whole windows.
    assert sent_at[-1] - sent_at[0] >= 120.0 - 1e-6
    assert sent_at == sorted(sent_at)


def test_batches_are_paced_by_items_and_by_batches(
    router: respx.MockRouter, make_client: Callable[..., QBOClient], fake_time: FakeTime
) -> None:
    sent: list[tuple[float, int]] = []

    def respond(request: httpx.Request) -> httpx.Response:
        items = jsonio.loads(request.content)["BatchItemRequest"]
        sent.append((fake_time.now, len(items)))
        return answer(
            {"BatchItemResponse": [{"bId": i["bId"], "QueryResponse": {}} for i in items]}
        )

    router.post(f"{COMPANY}/batch").mock(side_effect=respond)
    client = make_client(QBO_MAX_REQUESTS_PER_MINUTE=60, QBO_MAX_BATCHES_PER_MINUTE=3)
    for size in (30, 30, 30, 30, 1, 1, 1, 1, 1):
        client.batch([BatchItem(str(n), query="SELECT * FROM Item") for n in range(size)])
    times = [t for t, _ in sent]
    assert most_in_any_window(times, 60.0, [n for _, n in sent]) <= 60
    assert most_in_any_window(times, 60.0) <= 3
    assert times[2] - times[0] >= 60.0 - 1e-6  # 90 items cannot share a 60-item window
    assert times[-1] - times[0] >= 120.0 - 1e-6  # 9 batches at 3 a minute


def test_pacing_uses_the_configured_window(
    router: respx.MockRouter, make_client: Callable[..., QBOClient], fake_time: FakeTime
) -> None:
    sent_at: list[float] = []

    def respond(request: httpx.Request) -> httpx.Response:
        sent_at.append(fake_time.now)
        return answer({"QueryResponse": {}})

    router.get(f"{COMPANY}/query").mock(side_effect=respond)
    client = make_client(QBO_MAX_REQUESTS_PER_MINUTE=40, QBO_RATE_WINDOW_SECONDS=0.6)
    for _ in range(50):
        client.query("SELECT * FROM Item")
    assert most_in_any_window(sent_at, 0.6) <= 40
    assert sent_at[-1] - sent_at[0] < 2.0


def test_a_batch_sized_to_the_room_sends_what_the_window_has_left(
    router: respx.MockRouter, make_client: Callable[..., QBOClient], fake_time: FakeTime
) -> None:
    sent: list[tuple[float, list[str]]] = []

    def respond(request: httpx.Request) -> httpx.Response:
        items = jsonio.loads(request.content)["BatchItemRequest"]
        sent.append((fake_time.now, [i["bId"] for i in items]))
        return answer(
            {
                "BatchItemResponse": [
                    {"bId": i["bId"], "Invoice": invoice_row(i["bId"], 1)} for i in items
                ]
            }
        )

    router.post(f"{COMPANY}/batch").mock(side_effect=respond)
    # 60 a minute and 6 batches: a batch sized to the room goes with at least 10 items.
    client = make_client(QBO_MAX_REQUESTS_PER_MINUTE=60, QBO_MAX_BATCHES_PER_MINUTE=6)
    assert client.fill_least == 10
    router.get(f"{COMPANY}/query").mock(return_value=answer({"QueryResponse": {}}))
    for _ in range(48):  # reads leave room for 12 in this minute
        client.query("SELECT * FROM Item")
    items = [BatchItem(str(n), "create", "Invoice", {"DocNumber": str(n)}) for n in range(25)]
    results = client.batch(items, fill=True)
    assert [r.bid for r in results] == [str(n) for n in range(12)]
    assert sent[-1][1] == [str(n) for n in range(12)]
    # The rest waits for the window, and goes whole once there is room for it.
    rest = client.batch(items[12:], fill=True)
    assert [r.bid for r in rest] == [str(n) for n in range(12, 25)]
    assert sent[-1][0] >= 1000.0 + 60.0
    # Without fill, a batch waits until all of it fits.
    assert len(client.batch(items[:20])) == 20
