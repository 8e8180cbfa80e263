"""FourDClient against respx (HTTP edge cases) and one real loopback server."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx

from fourdqbo import jsonio
from fourdqbo.config import Settings
from fourdqbo.emr.client import FourDClient, NotFound, aborts_run
from fourdqbo.emr.records import Quote
from fourdqbo.errors import (
    AuthError,
    ConfigError,
    FourdqboError,
    MalformedPayload,
    UpstreamError,
)
from fourdqbo.http import RequestCounter, RetryPolicy
from fourdqbo.log import REDACTED, redact
from fourdqbo.sandbox import Sandbox
from fourdqbo.sandbox.base import LoopbackServer, SimRequest, SimResponse

BASE = "https://fourd.test/api/public"
FAST = RetryPolicy(max_attempts=3, base_delay=0.01, max_delay=0.02)


def quote_json(number: Any = 10023, patient: str = "Seán O'Brien", **extra: Any) -> str:
    body = {
        "PriceQuoteNo": number,
        "Version": 3,
        "PriceQuoteDate": "2025-03-05T15:04:05Z",
        "CreatedBy": {"Id": 7, "Name": "Jane Q Doe"},
        "Patient": {"Id": 5501, "Name": patient},
        "PriceQuoteStatus": {"Id": 4, "Name": "Completed"},
        "Procedures": [{"ProcedureName": "Rhinoplasty", "Amount": Decimal("4500.10")}],
        "TotalAmt": Decimal("4500.10"),
    }
    body.update(extra)
    return jsonio.dumps(body)


def json_response(text: str, status: int = 200, **headers: str) -> httpx.Response:
    return httpx.Response(
        status, content=text.encode(), headers={"Content-Type": "application/json", **headers}
    )


@pytest.fixture
def fourd() -> Iterator[respx.MockRouter]:
    with respx.mock(base_url=BASE, assert_all_called=False) as mock:
        yield mock


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings(FOURD_BASE_URL=BASE)


@pytest.fixture
def client(settings: Settings, sleeps: list[float]) -> Iterator[FourDClient]:
    with FourDClient(settings, sleep=sleeps.append) as fourd_client:
        yield fourd_client


# --- headers, construction ----------------------------------------------------------------


def test_every_request_carries_the_three_credentials_and_accept_json(
    fourd: respx.MockRouter, client: FourDClient
) -> None:
    route = fourd.get("/quotes/list").mock(return_value=json_response("[]"))
    client.list_quotes(datetime(2025, 3, 1, tzinfo=UTC))
    headers = route.calls.last.request.headers
    assert headers["client-id"] == "test-client"
    assert headers["client-secret"] == "test-secret-4d"
    assert headers["subscription-key"] == "test-subscription-key"
    assert headers["accept"] == "application/json"


def test_missing_credentials_are_named_before_any_request(
    make_settings: Callable[..., Settings], fourd: respx.MockRouter
) -> None:
    settings = make_settings(FOURD_CLIENT_ID="", FOURD_SUBSCRIPTION_KEY="")
    with pytest.raises(ConfigError) as raised:
        FourDClient(settings)
    assert "FOURD_CLIENT_ID" in str(raised.value)
    assert "FOURD_SUBSCRIPTION_KEY" in str(raised.value)
    assert "FOURD_CLIENT_SECRET" not in str(raised.value)
    assert raised.value.exit_code == 2
    assert not fourd.calls


def test_context_manager_closes_the_connection_pool(settings: Settings) -> None:
    with FourDClient(settings) as client:
        pass
    assert client._http.client.is_closed


# --- authentication failures ----------------------------------------------------------------

DOCUMENTED_401 = [
    "Missing credentials",
    "Invalid credentials",
    "Invalid client-id or client-secret",
    "Invalid client-id",
]


@pytest.mark.parametrize("message", DOCUMENTED_401)
@pytest.mark.parametrize(
    "body",
    [
        lambda m: jsonio.dumps({"message": m}),
        lambda m: jsonio.dumps({"Message": m}),
        lambda m: jsonio.dumps({"error": m}),
        lambda m: jsonio.dumps({"statusCode": 401, "error": {"message": m}}),
        lambda m: m,
        lambda m: jsonio.dumps(m),
    ],
    ids=["message", "Message", "error", "nested", "text", "json-string"],
)
def test_401_is_an_auth_error_carrying_4ds_message(
    fourd: respx.MockRouter, client: FourDClient, message: str, body: Callable[[str], str]
) -> None:
    route = fourd.get("/quotes/list").mock(return_value=httpx.Response(401, text=body(message)))
    with pytest.raises(AuthError) as raised:
        client.list_quotes(datetime(2025, 3, 1, tzinfo=UTC))
    assert message in str(raised.value)
    assert "\n" not in str(raised.value)
    assert raised.value.status == 401
    assert raised.value.exit_code == 3
    assert route.call_count == 1  # refused credentials are not retried


def test_403_from_the_gateway_is_an_auth_error(
    fourd: respx.MockRouter, client: FourDClient
) -> None:
    fourd.get("/quotes").mock(
        return_value=json_response(
            '{"statusCode": 403, "message": "Access denied due to invalid subscription key."}',
            403,
        )
    )
    with pytest.raises(AuthError, match="invalid subscription key") as raised:
        client.get_quote("10023")
    assert raised.value.status == 403
    assert aborts_run(raised.value)


def test_auth_error_never_echoes_a_secret_and_stays_one_short_line(
    fourd: respx.MockRouter, client: FourDClient
) -> None:
    text = "Invalid client-secret test-secret-4d for key test-subscription-key " + "x" * 400
    fourd.get("/appointments").mock(return_value=httpx.Response(401, text=text + "\nsecond"))
    with pytest.raises(AuthError) as raised:
        client.list_appointments()
    message = str(raised.value)
    assert "test-secret-4d" not in message
    assert "test-subscription-key" not in message
    assert REDACTED in message
    assert "second" not in message
    assert len(message) < 260


def test_401_with_an_empty_body_falls_back_to_the_reason_phrase(
    fourd: respx.MockRouter, client: FourDClient
) -> None:
    fourd.get("/appointments").mock(return_value=httpx.Response(401))
    with pytest.raises(AuthError, match="Unauthorized"):
        client.list_appointments()


# --- retries --------------------------------------------------------------------------------


def test_429_with_retry_after_waits_that_long_then_succeeds(
    fourd: respx.MockRouter, client: FourDClient, sleeps: list[float]
) -> None:
    route = fourd.get("/quotes/list").mock(
        side_effect=[
            httpx.Response(429, headers={"Retry-After": "7"}),
            json_response('[{"PriceQuoteNo": 1, "Version": 2}]'),
        ]
    )
    summaries = client.list_quotes(datetime(2025, 3, 1, tzinfo=UTC))
    assert [s.number for s in summaries] == ["1"]
    assert sleeps == [7.0]
    assert route.call_count == 2
    assert client.request_count == 2
    assert client.counter.throttled["fourd"] == 1


def test_429_without_retry_after_backs_off_with_jitter_then_succeeds(
    fourd: respx.MockRouter, client: FourDClient, sleeps: list[float]
) -> None:
    fourd.get("/quotes/list").mock(
        side_effect=[httpx.Response(429), httpx.Response(429), json_response("[]")]
    )
    assert client.list_quotes(datetime(2025, 3, 1, tzinfo=UTC)) == []
    assert len(sleeps) == 2
    assert 0.25 <= sleeps[0] <= 0.5  # first backoff: half to full base delay
    assert 0.5 <= sleeps[1] <= 1.0  # then doubled


def test_500_then_success_is_retried(
    fourd: respx.MockRouter, client: FourDClient, sleeps: list[float]
) -> None:
    fourd.get("/quotes").mock(side_effect=[httpx.Response(500), json_response(quote_json())])
    assert client.get_quote("10023").number == "10023"
    assert len(sleeps) == 1


def test_persistent_503_gives_up_with_the_status(
    fourd: respx.MockRouter, settings: Settings, sleeps: list[float]
) -> None:
    route = fourd.get("/quotes").mock(return_value=httpx.Response(503))
    client = FourDClient(settings, policy=FAST, sleep=sleeps.append)
    with client, pytest.raises(UpstreamError) as raised:
        client.get_quote("10023")
    assert raised.value.status == 503
    assert route.call_count == 3
    assert aborts_run(raised.value)


def test_connection_error_is_retried_then_reported_unreachable(
    fourd: respx.MockRouter, settings: Settings, sleeps: list[float]
) -> None:
    route = fourd.get("/quotes/list").mock(side_effect=httpx.ConnectError("refused"))
    client = FourDClient(settings, policy=FAST, sleep=sleeps.append)
    with client, pytest.raises(UpstreamError, match="unreachable") as raised:
        client.list_quotes(datetime(2025, 3, 1, tzinfo=UTC))
    assert raised.value.status is None
    assert route.call_count == 3
    assert len(sleeps) == 2
    assert aborts_run(raised.value)


def test_connection_error_then_success(
    fourd: respx.MockRouter, client: FourDClient, sleeps: list[float]
) -> None:
    fourd.get("/quotes/list").mock(side_effect=[httpx.ReadTimeout("slow"), json_response("[]")])
    assert client.list_quotes(datetime(2025, 3, 1, tzinfo=UTC)) == []
    assert len(sleeps) == 1


@pytest.mark.parametrize("status", [400, 405, 422])
def test_other_4xx_is_an_upstream_error_with_the_status_and_no_retry(
    fourd: respx.MockRouter, client: FourDClient, status: int
) -> None:
    route = fourd.get("/quotes/list").mock(
        return_value=json_response('{"message": "fromDate is invalid"}', status)
    )
    with pytest.raises(UpstreamError, match="fromDate is invalid") as raised:
        client.list_quotes(datetime(2025, 3, 1, tzinfo=UTC))
    assert type(raised.value) is UpstreamError
    assert raised.value.status == status
    assert route.call_count == 1


# --- bodies ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    ["{not json", "<html><body>Gateway</body></html>", '{"a": 1', "\xff\xfe", "[" * 100_000],
    ids=["broken", "html", "truncated", "bad-utf8", "deep"],
)
def test_non_json_body_is_malformed_payload(
    fourd: respx.MockRouter, client: FourDClient, body: str
) -> None:
    fourd.get("/quotes/list").mock(return_value=httpx.Response(200, content=body.encode("latin-1")))
    with pytest.raises(MalformedPayload, match="not JSON"):
        client.list_quotes(datetime(2025, 3, 1, tzinfo=UTC))


@pytest.mark.parametrize("body", ['{"count": 3}', '"quotes"', "42", '{"a": [1], "b": [2]}', ""])
def test_wrong_shape_for_a_list_is_malformed_payload(
    fourd: respx.MockRouter, client: FourDClient, body: str
) -> None:
    fourd.get("/quotes/list").mock(return_value=json_response(body))
    with pytest.raises(MalformedPayload):
        client.list_quotes(datetime(2025, 3, 1, tzinfo=UTC))


def test_a_list_row_that_is_not_an_object_is_malformed_payload(
    fourd: respx.MockRouter, client: FourDClient
) -> None:
    fourd.get("/quotes/list").mock(return_value=json_response('[{"PriceQuoteNo": 1}, 7]'))
    with pytest.raises(MalformedPayload, match="row 2"):
        client.list_quotes(datetime(2025, 3, 1, tzinfo=UTC))


PATIENT = '{"Id": 42, "FirstName": "Zoë", "LastName": "Quinteros", "DateOfBirth": "1980-02-29"}'


@pytest.mark.parametrize(
    "body",
    [
        f"[{PATIENT}]",
        f'{{"Items": [{PATIENT}], "TotalCount": 1}}',
        f'{{"items": [{PATIENT}]}}',
        f'{{"data": [{PATIENT}], "page": 1}}',
        f'{{"Data": [{PATIENT}]}}',
        f'{{"Patients": [{PATIENT}]}}',
        f'{{"results": [{PATIENT}], "next": null}}',
        f'{{"PageNumber": 1, "Whatever": [{PATIENT}]}}',
    ],
    ids=["bare", "Items", "items", "data", "Data", "Patients", "results", "unknown-key"],
)
def test_patient_search_accepts_every_page_shape(
    fourd: respx.MockRouter, client: FourDClient, body: str
) -> None:
    route = fourd.get("/patients").mock(return_value=json_response(body))
    patients = client.search_patients(
        first_name="Zoë", last_name="Quinteros", dob=date(1980, 2, 29)
    )
    assert [p.id for p in patients] == ["42"]
    params = route.calls.last.request.url.params
    assert (params["firstname"], params["lastname"], params["dob"]) == (
        "Zoë",
        "Quinteros",
        "1980-02-29",
    )


@pytest.mark.parametrize("body", ["null", '{"Items": null}', "[]", '{"data": []}'])
def test_empty_answers_are_empty_lists(
    fourd: respx.MockRouter, client: FourDClient, body: str
) -> None:
    fourd.get("/patients").mock(return_value=json_response(body))
    assert client.search_patients(last_name="Nobody") == []


def test_204_is_an_empty_list(fourd: respx.MockRouter, client: FourDClient) -> None:
    fourd.get("/appointments").mock(return_value=httpx.Response(204))
    assert client.list_appointments() == []


def test_search_sends_only_the_given_terms(fourd: respx.MockRouter, client: FourDClient) -> None:
    route = fourd.get("/patients").mock(return_value=json_response("[]"))
    client.search_patients(last_name="Quinteros")
    assert dict(route.calls.last.request.url.params) == {"lastname": "Quinteros"}


# --- quotes ---------------------------------------------------------------------------------


def test_from_date_is_utc_without_a_zone_suffix(
    fourd: respx.MockRouter, client: FourDClient
) -> None:
    route = fourd.get("/quotes/list").mock(return_value=json_response("[]"))
    since = datetime(2025, 3, 5, 5, 4, 3, 999999, tzinfo=timezone(timedelta(hours=-5)))
    client.list_quotes(since)
    assert route.calls.last.request.url.params["fromDate"] == "2025-03-05T10:04:03"
    assert list(route.calls.last.request.url.params.keys()) == ["fromDate"]


def test_list_quotes_parses_summaries_with_number_or_string_numbers(
    fourd: respx.MockRouter, client: FourDClient
) -> None:
    fourd.get("/quotes/list").mock(
        return_value=json_response(
            '[{"PriceQuoteNo": 10023, "Version": 3, "PriceQuoteStatus": {"Id": 4},'
            ' "Patient": {"Id": 5501, "Name": "Jane Doe"}, "Extra": true},'
            ' {"PriceQuoteNo": "10024", "Version": "1", "PriceQuoteStatus": {"Id": 1}}]'
        )
    )
    summaries = client.list_quotes(datetime(2025, 3, 1, tzinfo=UTC))
    assert [(s.number, s.version, s.status, s.patient_id) for s in summaries] == [
        ("10023", 3, "completed", "5501"),
        ("10024", 1, "active", None),
    ]


@pytest.mark.parametrize("answered", [10023, "10023", Decimal("10023.0")])
def test_get_quote_accepts_the_number_as_number_or_string(
    fourd: respx.MockRouter, client: FourDClient, answered: Any
) -> None:
    route = fourd.get("/quotes").mock(return_value=json_response(quote_json(answered)))
    quote = client.get_quote("10023")
    assert quote.number == "10023"
    assert route.calls.last.request.url.params["quoteNumber"] == "10023"
    assert quote.procedures[0].amount == Decimal("4500.10")


@pytest.mark.parametrize(
    "body",
    [f"[{quote_json()}]", f'{{"Data": {quote_json()}}}', f'{{"items": [{quote_json()}]}}'],
    ids=["one-element-list", "Data-envelope", "items-envelope"],
)
def test_get_quote_unwraps_a_list_or_envelope(
    fourd: respx.MockRouter, client: FourDClient, body: str
) -> None:
    fourd.get("/quotes").mock(return_value=json_response(body))
    assert client.get_quote("10023").version == 3


def test_quote_with_null_lists_amounts_and_discount(
    fourd: respx.MockRouter, client: FourDClient
) -> None:
    fourd.get("/quotes").mock(
        return_value=json_response(
            quote_json(
                Procedures=[{"ProcedureName": "X", "Amount": 100, "DiscountAmount": None}],
                Supplies=None,
                AnesthAmt=None,
                AnesthesiaGroup=None,
                FacilityAmt=None,
                TotalAmt=None,
            )
        )
    )
    quote = client.get_quote("10023")
    assert quote.procedures[0].discount == Decimal("0")
    assert quote.supplies == ()
    assert (quote.anesthesia_amount, quote.facility_amount) == (Decimal(0), Decimal(0))
    assert quote.total_amount is None


@pytest.mark.parametrize("body", [None, "[]", "null"], ids=["404", "empty-list", "null"])
def test_missing_quote_is_not_found(
    fourd: respx.MockRouter, client: FourDClient, body: str | None
) -> None:
    response = (
        json_response('{"message": "Quote not found"}', 404)
        if body is None
        else json_response(body)
    )
    fourd.get("/quotes").mock(return_value=response)
    with pytest.raises(NotFound, match="10023") as raised:
        client.get_quote("10023")
    assert raised.value.status == 404
    assert isinstance(raised.value, UpstreamError)
    assert not aborts_run(raised.value)


def test_404_on_a_list_endpoint_points_at_the_base_url(
    fourd: respx.MockRouter, client: FourDClient
) -> None:
    fourd.get("/quotes/list").mock(return_value=httpx.Response(404, text="Resource not found"))
    with pytest.raises(UpstreamError, match="FOURD_BASE_URL") as raised:
        client.list_quotes(datetime(2025, 3, 1, tzinfo=UTC))
    assert not isinstance(raised.value, NotFound)


def test_answer_for_another_quote_is_refused(fourd: respx.MockRouter, client: FourDClient) -> None:
    fourd.get("/quotes").mock(return_value=json_response(quote_json(99999)))
    with pytest.raises(MalformedPayload, match="10023 with quote 99999"):
        client.get_quote("10023")


def test_malformed_quote_names_the_number_but_never_the_patient(
    fourd: respx.MockRouter, client: FourDClient
) -> None:
    fourd.get("/quotes").mock(
        return_value=json_response(quote_json(patient="Zebulon Quartermaine", AnesthAmt=-5))
    )
    with pytest.raises(MalformedPayload) as raised:
        client.get_quote("10023")
    message = str(raised.value)
    assert "quote 10023" in message and "AnesthAmt" in message
    assert "Zebulon" not in message


def test_malformed_summary_names_its_number(fourd: respx.MockRouter, client: FourDClient) -> None:
    fourd.get("/quotes/list").mock(
        return_value=json_response('[{"PriceQuoteNo": 5, "Version": "x", "Patient": {"Id": 1}}]')
    )
    with pytest.raises(MalformedPayload, match="quote 5 in quotes/list"):
        client.list_quotes(datetime(2025, 3, 1, tzinfo=UTC))


def test_bad_quote_number_is_refused_without_a_request(
    fourd: respx.MockRouter, client: FourDClient
) -> None:
    with pytest.raises(ConfigError):
        client.get_quote("10'23")
    assert not fourd.calls


# --- get_quotes -----------------------------------------------------------------------------


def test_get_quotes_never_exceeds_the_in_flight_bound(
    fourd: respx.MockRouter, make_settings: Callable[..., Settings]
) -> None:
    lock = threading.Lock()
    state = {"now": 0, "peak": 0}
    bound_reached = threading.Event()

    def answer(request: httpx.Request) -> httpx.Response:
        with lock:
            state["now"] += 1
            state["peak"] = max(state["peak"], state["now"])
            if state["now"] >= 3:
                bound_reached.set()
        # Hold the first requests until three overlap, so a looser bound would show.
        bound_reached.wait(timeout=2)
        time.sleep(0.01)
        with lock:
            state["now"] -= 1
        return json_response(quote_json(request.url.params["quoteNumber"]))

    fourd.get("/quotes").mock(side_effect=answer)
    numbers = [str(n) for n in range(100, 112)]
    with FourDClient(make_settings(FOURD_BASE_URL=BASE, FOURD_MAX_IN_FLIGHT=3)) as client:
        results = client.get_quotes(numbers)
        assert client.request_count == 12
    assert list(results) == numbers
    assert all(isinstance(q, Quote) and q.number == n for n, q in results.items())
    assert state["peak"] == 3


def test_get_quotes_isolates_per_quote_failures(
    fourd: respx.MockRouter, client: FourDClient
) -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        number = request.url.params["quoteNumber"]
        if number == "2":
            return json_response('{"message": "not found"}', 404)
        if number == "3":
            return json_response(quote_json(3, FacilityAmt="lots"))
        if number == "4":
            return json_response("oops, not json")
        return json_response(quote_json(number))

    fourd.get("/quotes").mock(side_effect=answer)
    results = client.get_quotes(["1", "2", "3", "4", "5", "1"])
    assert list(results) == ["1", "2", "3", "4", "5"]
    assert isinstance(results["1"], Quote) and isinstance(results["5"], Quote)
    assert isinstance(results["2"], NotFound)
    assert isinstance(results["3"], MalformedPayload) and "quote 3" in str(results["3"])
    assert isinstance(results["4"], MalformedPayload)


def test_get_quotes_with_a_bad_number_gives_that_number_an_error(
    fourd: respx.MockRouter, client: FourDClient
) -> None:
    fourd.get("/quotes").mock(side_effect=lambda r: json_response(quote_json(1)))
    results = client.get_quotes(["1", "bad'number"])
    assert isinstance(results["1"], Quote)
    assert isinstance(results["bad'number"], ConfigError)


def test_get_quotes_of_nothing_sends_nothing(fourd: respx.MockRouter, client: FourDClient) -> None:
    assert client.get_quotes([]) == {}
    assert not fourd.calls


def test_get_quotes_raises_auth_error_for_the_whole_call(
    fourd: respx.MockRouter, client: FourDClient
) -> None:
    fourd.get("/quotes").mock(return_value=json_response('{"message": "Invalid client-id"}', 401))
    with pytest.raises(AuthError, match="Invalid client-id"):
        client.get_quotes([str(n) for n in range(20)])


def test_get_quotes_raises_when_4d_is_unreachable(
    fourd: respx.MockRouter, settings: Settings
) -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.params["quoteNumber"] == "1":
            return json_response(quote_json(1))
        raise httpx.ConnectError("refused")

    fourd.get("/quotes").mock(side_effect=answer)
    client = FourDClient(settings, policy=FAST, sleep=lambda s: None)
    with client, pytest.raises(UpstreamError, match="unreachable") as raised:
        client.get_quotes(["1", "2", "3"])
    assert raised.value.status is None


def test_a_500_on_one_quote_fails_that_quote_only(
    fourd: respx.MockRouter, settings: Settings
) -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        number = request.url.params["quoteNumber"]
        return httpx.Response(500) if number == "2" else json_response(quote_json(number))

    fourd.get("/quotes").mock(side_effect=answer)
    with FourDClient(settings, policy=FAST, sleep=lambda s: None) as client:
        results = client.get_quotes(["1", "2"])
    assert isinstance(results["1"], Quote)
    error = results["2"]
    assert isinstance(error, UpstreamError) and error.status == 500


@pytest.mark.parametrize(
    ("error", "aborts"),
    [
        (AuthError("no"), True),
        (UpstreamError("down", status=None), True),
        (UpstreamError("throttled", status=429), True),
        (UpstreamError("gateway", status=502), True),
        (UpstreamError("bad quote", status=500), False),
        (UpstreamError("teapot", status=418), False),
        (NotFound("gone", status=404), False),
        (MalformedPayload("bad"), False),
        (ConfigError("bad number"), False),
        (RuntimeError("bug"), True),
    ],
)
def test_aborts_run_separates_whole_service_failures(error: Exception, aborts: bool) -> None:
    assert aborts_run(error) is aborts


# --- patients, appointments, charges --------------------------------------------------------


def test_get_patient_escapes_the_id_into_the_path(
    fourd: respx.MockRouter, client: FourDClient
) -> None:
    route = fourd.get(url__regex=r".*/patients/.*").mock(
        return_value=json_response('{"Id": "a/b", "Name": "Jane Doe"}')
    )
    assert client.get_patient("a/b").id == "a/b"
    assert route.calls.last.request.url.raw_path == b"/api/public/patients/a%2Fb"


def test_get_patient_404_is_not_found(fourd: respx.MockRouter, client: FourDClient) -> None:
    fourd.get("/patients/42").mock(return_value=httpx.Response(404))
    with pytest.raises(NotFound, match="patient 42"):
        client.get_patient("42")


def test_list_appointments_sends_the_date_only_when_given(
    fourd: respx.MockRouter, client: FourDClient
) -> None:
    route = fourd.get("/appointments").mock(
        return_value=json_response('[{"Id": 1, "PatientId": 42, "PatientName": "Jane Doe"}]')
    )
    assert [a.patient_id for a in client.list_appointments(date(2025, 3, 5))] == ["42"]
    assert dict(route.calls.last.request.url.params) == {"date": "2025-03-05"}
    client.list_appointments()
    assert dict(route.calls.last.request.url.params) == {}


def test_list_charges_sends_the_period_and_refuses_a_reversed_one(
    fourd: respx.MockRouter, client: FourDClient
) -> None:
    route = fourd.get("/reports/charges").mock(
        return_value=json_response('{"Data": [{"Id": 1, "Amount": 10.50}]}')
    )
    charges = client.list_charges(date(2025, 3, 1), date(2025, 3, 31))
    assert charges[0].amount == Decimal("10.50")
    assert dict(route.calls.last.request.url.params) == {
        "beginDate": "2025-03-01",
        "endDate": "2025-03-31",
    }
    with pytest.raises(ConfigError):
        client.list_charges(date(2025, 3, 2), date(2025, 3, 1))
    assert route.call_count == 1


# --- privacy --------------------------------------------------------------------------------


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.fixture
def log_lines() -> Iterator[list[str]]:
    logger = logging.getLogger("fourdqbo")
    handler, level = _Collect(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    yield handler.lines
    logger.removeHandler(handler)
    logger.setLevel(level)


def test_patient_names_and_birth_dates_are_registered_and_never_logged(
    fourd: respx.MockRouter, client: FourDClient, log_lines: list[str]
) -> None:
    fourd.get("/quotes").mock(return_value=json_response(quote_json(patient="Ottoline Vasquez")))
    fourd.get("/quotes/list").mock(
        return_value=json_response(
            '[{"PriceQuoteNo": 7, "Version": 1,'
            ' "Patient": {"Id": 9, "Name": "Perpetua Lindqvist"}}]'
        )
    )
    fourd.get("/patients/42").mock(
        return_value=json_response(
            '{"Id": 42, "FirstName": "Hieronymus", "LastName": "Abernathy-Smythe",'
            ' "MiddleName": "Bartholomew", "DateOfBirth": "1977-07-17"}'
        )
    )
    fourd.get("/appointments").mock(
        return_value=json_response(
            '[{"Id": 1, "Patient": {"Id": 3, "Name": "Cordelia Fairweather",'
            ' "BirthDate": "1955-05-05"}, "Provider": {"Name": "Dr. Kim"}}]'
        )
    )
    fourd.get("/reports/charges").mock(
        return_value=json_response('[{"Id": 1, "PatientName": "Ignatius Pemberton", "Amount": 1}]')
    )
    client.get_quote("10023")
    client.list_quotes(datetime(2025, 3, 1, tzinfo=UTC))
    client.get_patient("42")
    client.list_appointments()
    client.list_charges(date(2025, 3, 1), date(2025, 3, 2))

    sensitive = [
        "Ottoline Vasquez",
        "Perpetua Lindqvist",
        "Hieronymus",
        "Abernathy-Smythe",
        "Hieronymus Abernathy-Smythe",
        "Bartholomew",
        "1977-07-17",
        "Cordelia Fairweather",
        "1955-05-05",
        "Ignatius Pemberton",
    ]
    for value in sensitive:
        assert redact(f"x {value} y") == f"x {REDACTED} y", value
    assert "Dr. Kim" in redact("Dr. Kim")  # staff names stay readable
    joined = "\n".join(log_lines)
    assert "10023" in joined  # quote numbers are what the log is for
    for value in sensitive:
        assert value not in joined


def test_search_terms_are_scrubbed_from_errors(
    fourd: respx.MockRouter, client: FourDClient
) -> None:
    fourd.get("/patients").mock(
        return_value=json_response('{"message": "No patient Wilhelmina Crabtree"}', 400)
    )
    with pytest.raises(UpstreamError) as raised:
        client.search_patients(first_name="Wilhelmina", last_name="Crabtree")
    assert "Wilhelmina" not in str(raised.value)
    assert "Crabtree" not in str(raised.value)


# --- a real loopback server -----------------------------------------------------------------


class _FourD:
    """Just enough of 4D for the client: checks credentials, drops the first connection."""

    def __init__(self) -> None:
        self.requests: list[SimRequest] = []
        self.dropped = False
        self._lock = threading.Lock()

    def handle(self, request: SimRequest) -> SimResponse:
        with self._lock:
            self.requests.append(request)
            if not self.dropped:
                self.dropped = True
                return SimResponse(drop=True)
        if request.header("client-secret") != "test-secret-4d":
            return SimResponse(401, {"message": "Invalid credentials"})
        if request.path == "quotes":
            number = request.param("quoteNumber") or ""
            if number == "404":
                return SimResponse(404, {"message": "Quote not found"})
            return SimResponse(200, quote_json(int(number)), content_type="text/plain")
        return SimResponse(404, {"message": "no route"})


def test_against_a_loopback_server(make_settings: Callable[..., Settings]) -> None:
    service = _FourD()
    counter = RequestCounter()
    with LoopbackServer({"/4d/api/public": service}) as server:
        settings = make_settings(FOURD_BASE_URL=f"{server.url}/4d/api/public")
        with FourDClient(settings, counter=counter, policy=FAST) as client:
            results = client.get_quotes(["10023", "404", "10024"])
        bad = make_settings(FOURD_BASE_URL=f"{server.url}/4d/api/public", FOURD_CLIENT_SECRET="x")
        with FourDClient(bad) as client, pytest.raises(AuthError, match="Invalid credentials"):
            client.get_quote("1")
    assert isinstance(results["10023"], Quote) and results["10023"].number == "10023"
    assert isinstance(results["10024"], Quote)
    assert isinstance(results["404"], NotFound)
    assert counter.snapshot()["fourd"] == 4  # one dropped connection retried
    assert all(r.header("subscription-key") == "test-subscription-key" for r in service.requests)


def test_errors_are_fourdqbo_errors() -> None:
    assert issubclass(NotFound, UpstreamError) and issubclass(NotFound, FourdqboError)


# --- patient search paging ------------------------------------------------------------------


def _page(ids: list[int], total: int | None) -> httpx.Response:
    body: dict[str, Any] = {"Items": [{"Id": i, "Name": f"Patient Number{i}"} for i in ids]}
    if total is not None:
        body["TotalCount"] = total
    return json_response(jsonio.dumps(body))


def test_patient_search_follows_pages_while_the_total_says_more(
    fourd: respx.MockRouter, client: FourDClient
) -> None:
    route = fourd.get("/patients").mock(
        side_effect=[_page([1, 2], 5), _page([3, 4], 5), _page([5], 5)]
    )
    patients = client.search_patients(last_name="Number")
    assert [p.id for p in patients] == ["1", "2", "3", "4", "5"]
    pages = [call.request.url.params.get("page") for call in route.calls]
    assert pages == [None, "2", "3"]
    assert all(call.request.url.params["lastname"] == "Number" for call in route.calls)


def test_patient_search_stops_when_a_page_brings_nothing_new(
    fourd: respx.MockRouter, client: FourDClient
) -> None:
    # A server that ignores `page` answers the same page again: stop, don't loop.
    route = fourd.get("/patients").mock(side_effect=lambda r: _page([1, 2], 10))
    assert [p.id for p in client.search_patients(last_name="Number")] == ["1", "2"]
    assert route.call_count == 2


def test_patient_search_without_a_total_reads_one_page(
    fourd: respx.MockRouter, client: FourDClient
) -> None:
    route = fourd.get("/patients").mock(return_value=_page([1, 2], None))
    assert len(client.search_patients(last_name="Number")) == 2
    assert route.call_count == 1


# --- the project's own 4D simulator ----------------------------------------------------------


@pytest.mark.integration
def test_against_the_sandbox_4d(
    sandbox: Sandbox, make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    env = sandbox.env(tmp_path / "data")
    settings = make_settings(**{k: v for k, v in env.items() if k.startswith("FOURD_")})
    with FourDClient(settings) as client:
        summaries = client.list_quotes(datetime(2000, 1, 1, tzinfo=UTC))
        assert summaries
        numbers = [s.number for s in summaries]
        quotes = client.get_quotes([*numbers, "999999"])
        patient = client.get_patient(summaries[0].patient_id or "")
        found = client.search_patients(last_name=patient.last_name)
        first_day = min(q.date for q in quotes.values() if isinstance(q, Quote) and q.date)
        charges = client.list_charges(first_day.date(), date(2100, 1, 1))
        assert client.request_count >= len(numbers) + 4
    assert all(isinstance(quotes[n], Quote) for n in numbers)
    assert isinstance(quotes["999999"], NotFound)
    assert patient.id in [p.id for p in found]
    assert charges and all(isinstance(c.amount, Decimal) for c in charges)
    by_number = {n: q for n, q in quotes.items() if isinstance(q, Quote)}
    for summary in summaries:
        assert by_number[summary.number].version == summary.version
        assert redact(summary.patient_name or "xyz") in (REDACTED, "xyz")


def test_names_in_a_malformed_quote_are_still_registered(
    fourd: respx.MockRouter, client: FourDClient
) -> None:
    fourd.get("/quotes").mock(
        return_value=json_response(quote_json(patient="Evangeline Throckmorton", AnesthAmt="x"))
    )
    with pytest.raises(MalformedPayload):
        client.get_quote("10023")
    assert redact("Evangeline Throckmorton") == REDACTED
