"""QBOClient against the answers real QBO gives (API-NOTES.md, last section): XML
throttles with 429 and 403, the lower-case 401 that quotes the token, XML faults;
and what the client hands back for the ledger (intuit_tid) and the metrics (reads and
writes counted apart)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime

import httpx
import pytest
import respx

from fourdqbo import jsonio
from fourdqbo.config import Settings
from fourdqbo.errors import AuthError, OutcomeUnknown, QBOFault, UpstreamError
from fourdqbo.qbo.client import BatchItem, QBOClient, WriteAnswer
from tests.qbo.fakes import COMPANY, FakeTime, FakeTokens, answer, fault, invoice_row

THROTTLE_XML = (
    '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
    '<IntuitResponse xmlns="http://schema.intuit.com/finance/v3"'
    ' time="2020-09-29T06:11:22.106-07:00">'
    '<Fault type="SERVICE"><Error code="3001">'
    "<Message>message=ThrottleExceeded; errorCode=003001; statusCode={status}</Message>"
    "<Detail>The request limit was reached.  Try again later</Detail>"
    "</Error></Fault></IntuitResponse>"
)
TOKEN = "AB01x9KpQr7sTuVwXyZ0123456789abcdefGHIJ"
FRESH_TOKEN = "CD23yzMNop45QRstuv67WXyz89abcdEFgh01"


def throttled(status: int = 429, **headers: str) -> httpx.Response:
    return httpx.Response(
        status,
        content=THROTTLE_XML.format(status=status).encode(),
        headers={"Content-Type": "application/xml", "intuit_tid": f"tid-{status}", **headers},
    )


def json_throttle_403() -> httpx.Response:
    body = {
        "Fault": {
            "Error": [
                {
                    "Message": "message=ThrottleExceeded; errorCode=003001; statusCode=403",
                    "Detail": "The request limit was reached.",
                    "code": "3001",
                }
            ],
            "type": "SERVICE",
        }
    }
    return answer(body, status=403)


def lower_case_401(token: str) -> httpx.Response:
    body = {
        "warnings": None,
        "fault": {
            "error": [
                {
                    "message": "message=AuthenticationFailed; errorCode=003200; statusCode=401",
                    "detail": f"Token expired: {token[:4]}…",
                    "code": "3200",
                    "element": None,
                }
            ],
            "type": "AUTHENTICATION",
        },
        "time": 1601391072830,
    }
    return answer(
        body,
        status=401,
        tid="tid-401",
        **{"WWW-Authenticate": 'Bearer realm="Intuit", error="invalid_token"'},
    )


def backoff_waits(fake_time: FakeTime) -> float:
    return sum(fake_time.sleeps)


# -- throttling ----------------------------------------------------------------------


def test_xml_429_with_retry_after_is_waited_and_retried(
    router: respx.MockRouter, client: QBOClient, fake_time: FakeTime, tokens: FakeTokens
) -> None:
    route = router.get(f"{COMPANY}/query").mock(
        side_effect=[throttled(429, **{"Retry-After": "3"}), answer({"QueryResponse": {}})]
    )
    assert client.query("SELECT * FROM Item") == {}
    assert route.call_count == 2
    assert fake_time.sleeps == [3.0]
    assert tokens.rejected == []
    assert client.counter.throttled["qbo"] == 1


def test_xml_429_without_retry_after_backs_off_quickly(
    router: respx.MockRouter, client: QBOClient, fake_time: FakeTime
) -> None:
    router.get(f"{COMPANY}/query").mock(
        side_effect=[throttled(), throttled(), answer({"QueryResponse": {}})]
    )
    client.query("SELECT * FROM Item")
    first, second = fake_time.sleeps
    assert 0.25 <= first <= 0.5 and 0.5 <= second <= 1.0


@pytest.mark.parametrize("response", [throttled(403), json_throttle_403()], ids=["xml", "json"])
def test_403_throttle_is_retried_never_an_auth_failure(
    router: respx.MockRouter,
    client: QBOClient,
    tokens: FakeTokens,
    fake_time: FakeTime,
    response: httpx.Response,
) -> None:
    route = router.get(f"{COMPANY}/query").mock(
        side_effect=[response, answer({"QueryResponse": {}})]
    )
    assert client.query("SELECT * FROM Item") == {}
    assert route.call_count == 2
    assert tokens.rejected == []  # no refresh: the token was never the problem
    assert len(fake_time.sleeps) == 1
    assert client.counter.throttled["qbo"] == 1


def test_403_throttle_on_a_write_is_retried_with_the_same_requestid(
    router: respx.MockRouter, client: QBOClient
) -> None:
    route = router.post(f"{COMPANY}/invoice").mock(
        side_effect=[throttled(403), answer({"Invoice": invoice_row("1")})]
    )
    client.create("Invoice", {"DocNumber": "1"})
    ids = [c.request.url.params["requestid"] for c in route.calls]
    assert len(ids) == 2 and ids[0] == ids[1]


def test_403_that_is_not_a_throttle_stays_what_it_was(
    router: respx.MockRouter, client: QBOClient, tokens: FakeTokens, fake_time: FakeTime
) -> None:
    route = router.get(f"{COMPANY}/query").mock(
        side_effect=[
            httpx.Response(403, text="forbidden"),
            answer(fault("3100", "ApplicationAuthorizationFailed"), status=403),
        ]
    )
    with pytest.raises(AuthError):
        client.query("SELECT * FROM Item")
    with pytest.raises(QBOFault) as caught:
        client.query("SELECT * FROM Item")
    assert caught.value.code == "3100" and caught.value.status == 403
    assert route.call_count == 2  # neither was retried
    assert tokens.rejected == [] and fake_time.sleeps == []


@pytest.mark.parametrize("window", [60.0, 10.0])
def test_lasting_429_gives_up_only_after_one_rate_window(
    router: respx.MockRouter,
    make_client: Callable[..., QBOClient],
    fake_time: FakeTime,
    window: float,
) -> None:
    route = router.get(f"{COMPANY}/query").mock(return_value=throttled())
    client = make_client(QBO_RATE_WINDOW_SECONDS=window)
    with pytest.raises(UpstreamError) as caught:
        client.query("SELECT * FROM Item")
    assert type(caught.value) is UpstreamError
    assert "throttled" in str(caught.value) and "tid-429" in str(caught.value)
    assert backoff_waits(fake_time) == pytest.approx(window)
    assert route.call_count > 5  # more than the five attempts of before
    assert max(fake_time.sleeps) <= 20.0


def test_lasting_throttle_of_a_write_gives_up_without_outcome_unknown(
    router: respx.MockRouter, make_client: Callable[..., QBOClient], fake_time: FakeTime
) -> None:
    route = router.post(f"{COMPANY}/batch").mock(return_value=throttled(403))
    client = make_client(QBO_RATE_WINDOW_SECONDS=8.0)
    with pytest.raises(UpstreamError) as caught:
        client.batch([BatchItem("1", "create", "Invoice", {"DocNumber": "1"})])
    assert not isinstance(caught.value, OutcomeUnknown)  # it was never processed
    assert caught.value.status == 403
    assert route.call_count > 5
    assert client.requests_by_kind == {"read": 0, "write": route.call_count}


def test_a_passed_policy_still_knows_the_403_throttle(
    router: respx.MockRouter, make_settings: Callable[..., Settings], fake_time: FakeTime
) -> None:
    from fourdqbo.http import RetryPolicy

    route = router.get(f"{COMPANY}/query").mock(
        side_effect=[throttled(403), answer({"QueryResponse": {}})]
    )
    with QBOClient(
        make_settings(), FakeTokens(), sleep=fake_time.sleep, policy=RetryPolicy(max_attempts=2)
    ) as client:
        client.query("SELECT * FROM Item")
    assert route.call_count == 2


# -- 401 as QBO sends it, and the token it quotes -------------------------------------


class RealisticTokens(FakeTokens):
    def __init__(self) -> None:
        super().__init__(first=TOKEN)

    def force_refresh(self, rejected: str) -> str:
        self.rejected.append(rejected)
        self.current = FRESH_TOKEN
        return self.current


@pytest.fixture
def realistic(
    make_settings: Callable[..., Settings], fake_time: FakeTime
) -> tuple[QBOClient, RealisticTokens]:
    tokens = RealisticTokens()
    return QBOClient(make_settings(), tokens, sleep=fake_time.sleep), tokens


def test_lower_case_401_is_refreshed_once_and_retried(
    router: respx.MockRouter, realistic: tuple[QBOClient, RealisticTokens]
) -> None:
    client, tokens = realistic
    route = router.get(f"{COMPANY}/query").mock(
        side_effect=[lower_case_401(TOKEN), answer({"QueryResponse": {}})]
    )
    assert client.query("SELECT * FROM Item") == {}
    assert tokens.rejected == [TOKEN]
    assert [c.request.headers["Authorization"] for c in route.calls] == [
        f"Bearer {TOKEN}",
        f"Bearer {FRESH_TOKEN}",
    ]
    client.close()


def test_token_start_in_a_401_never_reaches_logs_exceptions_or_stdout(
    router: respx.MockRouter,
    realistic: tuple[QBOClient, RealisticTokens],
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    client, tokens = realistic
    second = lower_case_401(FRESH_TOKEN)
    body = jsonio.loads(second.content)
    # A detail that quotes more of the token, without QBO's "Token expired:" wording.
    body["fault"]["error"][0]["detail"] = f"invalid token {FRESH_TOKEN[:10]}…"
    router.get(f"{COMPANY}/query").mock(
        side_effect=[lower_case_401(TOKEN), answer(body, status=401, tid="tid-401b")]
    )
    with caplog.at_level(logging.DEBUG, logger="fourdqbo"), pytest.raises(AuthError) as caught:
        client.query("SELECT * FROM Item")
    client.close()
    error = caught.value
    shown = [str(error), repr(error), *map(str, error.args), error.message]
    logged = [r.getMessage() for r in caplog.records]
    out, err = capsys.readouterr()
    for fragment in (TOKEN[:4], FRESH_TOKEN[:4]):
        assert not any(fragment in text for text in shown)
        assert not any(fragment in text for text in logged)
        assert fragment not in out and fragment not in err
    assert "fourdqbo auth login" in str(error)
    assert "3200" in str(error) and "tid-401b" in str(error)
    assert any("3200" in text for text in logged)  # what was refused is still said
    assert tokens.rejected == [TOKEN]


def test_401_fault_decoded_for_a_3200_with_status_400(
    router: respx.MockRouter, client: QBOClient, tokens: FakeTokens
) -> None:
    body = jsonio.loads(lower_case_401("tok-1").content)
    router.get(f"{COMPANY}/query").mock(
        side_effect=[answer(body, status=400), answer({"QueryResponse": {}})]
    )
    client.query("SELECT * FROM Item")
    assert tokens.rejected == ["tok-1"]


# -- XML faults ----------------------------------------------------------------------

VALIDATION_XML = (
    b'<IntuitResponse xmlns="http://schema.intuit.com/finance/v3">'
    b'<Fault type="ValidationFault"><Error code="6140" element="DocNumber">'
    b"<Message>Duplicate Document Number Error</Message>"
    b"<Detail>Duplicate Document Number Error : You must specify a different number.</Detail>"
    b"</Error></Fault></IntuitResponse>"
)


@pytest.mark.parametrize("status", [400, 200, 404])
def test_xml_fault_decodes_into_a_qbofault_whatever_the_status(
    router: respx.MockRouter, client: QBOClient, status: int
) -> None:
    router.get(f"{COMPANY}/query").mock(
        return_value=httpx.Response(status, content=VALIDATION_XML, headers={"intuit_tid": "t"})
    )
    with pytest.raises(QBOFault) as caught:
        client.query("SELECT * FROM Invoice")
    assert (caught.value.code, caught.value.element) == ("6140", "DocNumber")
    assert caught.value.fault_type == "ValidationFault"
    assert "Duplicate Document Number" in str(caught.value)


def test_garbage_xml_with_an_error_status_is_a_generic_fault(
    router: respx.MockRouter, client: QBOClient
) -> None:
    router.get(f"{COMPANY}/query").mock(
        return_value=httpx.Response(
            404, content=b"<html><h1>Not Found", headers={"intuit_tid": "t9"}
        )
    )
    with pytest.raises(QBOFault) as caught:
        client.query("SELECT * FROM Invoice")
    assert caught.value.status == 404 and caught.value.code == ""
    assert "HTTP 404" in str(caught.value) and "t9" in str(caught.value)


def test_garbage_xml_on_an_unretried_5xx_write_is_still_outcome_unknown(
    router: respx.MockRouter, client: QBOClient
) -> None:
    router.post(f"{COMPANY}/invoice").mock(
        return_value=httpx.Response(501, content=b"<html>Not Implemented</html>")
    )
    with pytest.raises(OutcomeUnknown):
        client.create("Invoice", {"DocNumber": "1"})


# -- intuit_tid of every write answer ------------------------------------------------


def test_single_writes_return_the_entity_with_its_intuit_tid(
    router: respx.MockRouter, client: QBOClient
) -> None:
    voided = {**invoice_row("7", 70), "SyncToken": "1", "TotalAmt": 0, "Balance": 0}
    router.post(f"{COMPANY}/invoice").mock(
        side_effect=[
            answer({"Invoice": invoice_row("7", 70)}, tid="tid-create"),
            answer({"Invoice": voided, "time": "x"}, tid="tid-void"),
        ]
    )
    created = client.create("Invoice", {"DocNumber": "7"})
    assert isinstance(created, WriteAnswer) and isinstance(created, dict)
    assert created.intuit_tid == "tid-create"
    assert created == invoice_row("7", 70)  # still the plain entity dict
    answer_ = client.void_invoice("70", "0")
    assert answer_.get("Id", "?") == "70" and answer_["SyncToken"] == "1"
    assert answer_.intuit_tid == "tid-void"


def test_batch_results_carry_the_batch_answers_intuit_tid(
    router: respx.MockRouter, client: QBOClient
) -> None:
    router.post(f"{COMPANY}/batch").mock(
        return_value=answer(
            {
                "BatchItemResponse": [
                    {"bId": "1", "Invoice": invoice_row("1")},
                    {"bId": "2", "Fault": fault("6140")["Fault"]},
                ]
            },
            tid="tid-batch",
        )
    )
    results = client.batch(
        [
            BatchItem("1", "create", "Invoice", {"DocNumber": "1"}),
            BatchItem("2", "create", "Invoice", {"DocNumber": "2"}),
            BatchItem("3", "create", "Invoice", {"DocNumber": "3"}),
        ]
    )
    assert [r.intuit_tid for r in results] == ["tid-batch"] * 3
    assert results[1].fault.intuit_tid == "tid-batch" and "tid-batch" in str(results[1].fault)
    assert results[2].outcome_unknown and results[2].fault.intuit_tid == "tid-batch"


# -- reads and writes counted apart --------------------------------------------------


def test_reads_and_writes_are_counted_apart(router: respx.MockRouter, client: QBOClient) -> None:
    router.get(f"{COMPANY}/query").mock(
        side_effect=[httpx.Response(503), answer({"QueryResponse": {}})]
    )
    router.get(f"{COMPANY}/cdc").mock(return_value=answer({"CDCResponse": []}))
    router.post(f"{COMPANY}/invoice").mock(return_value=answer({"Invoice": invoice_row("1")}))

    def respond(request: httpx.Request) -> httpx.Response:
        items = jsonio.loads(request.content)["BatchItemRequest"]
        return answer(
            {
                "BatchItemResponse": [
                    {"bId": i["bId"], "QueryResponse": {}}
                    if "Query" in i
                    else {"bId": i["bId"], "Invoice": {"Id": "1", "status": "Deleted"}}
                    for i in items
                ]
            }
        )

    router.post(f"{COMPANY}/batch").mock(side_effect=respond)
    client.query("SELECT * FROM Item")  # two reads: one retry
    client.cdc(["Invoice"], datetime(2025, 3, 1, tzinfo=UTC))
    client.batch([BatchItem("q", query="SELECT * FROM Item")])  # queries only: a read
    client.create("Invoice", {"DocNumber": "1"})
    client.batch(
        [
            BatchItem("q", query="SELECT * FROM Item"),
            BatchItem("w", "delete", "Invoice", {"Id": "1", "SyncToken": "0"}),
        ]
    )  # any write makes the batch a write
    assert client.requests_by_kind == {"read": 4, "write": 2}
    assert client.request_count == 6
    assert client.counter.by_kind("qbo") == client.requests_by_kind
