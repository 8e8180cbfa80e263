"""Throttling (429) and injected faults around the simulators, and the request log."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from fourdqbo.sandbox.server import QboLimits, Sandbox
from tests.sandbox.conftest import FOURD_HEADERS, QboCaller


@pytest.fixture
def tight() -> Iterator[Sandbox]:
    limits = QboLimits(requests_per_window=5, batches_per_window=2, in_flight=2, window_seconds=1)
    with Sandbox(seed=3, quotes=8, limits=limits, timeout_delay=0.6) as running:
        yield running


@pytest.fixture
def tight_qbo(tight: Sandbox) -> Iterator[QboCaller]:
    caller = QboCaller(tight, tight.oauth.mint()["access_token"])
    yield caller
    caller.http.close()


THROTTLE_XML = (
    '<Fault type="SERVICE"><Error code="3001">'
    "<Message>message=ThrottleExceeded; errorCode=003001; statusCode={status}</Message>"
    "<Detail>The request limit was reached.  Try again later</Detail></Error></Fault>"
    "</IntuitResponse>"
)


def assert_throttle_xml(response: httpx.Response, status: int) -> None:
    """The recorded throttle answer: XML even though the caller asked for JSON."""
    assert response.status_code == status
    assert response.headers["content-type"].startswith("application/xml")
    assert response.text.startswith("<?xml")
    assert "<IntuitResponse " in response.text
    assert response.text.endswith(THROTTLE_XML.format(status=status))
    assert response.headers["intuit_tid"]


def customer_items(count: int, prefix: str) -> list[dict]:
    return [
        {"bId": str(n), "operation": "create", "Customer": {"DisplayName": f"{prefix} {n}"}}
        for n in range(count)
    ]


def test_more_than_in_flight_concurrent_requests_get_429(
    tight: Sandbox, tight_qbo: QboCaller
) -> None:
    tight.knobs.qbo.latency_ms = 600
    with ThreadPoolExecutor(max_workers=5) as pool:
        statuses = list(
            pool.map(
                lambda _: (
                    httpx.get(
                        f"{tight_qbo.base}/query",
                        params={"query": "SELECT * FROM Item", "minorversion": "75"},
                        headers=tight_qbo.headers(),
                    ).status_code
                ),
                range(5),
            )
        )
    assert statuses.count(200) == 2
    assert statuses.count(429) == 3
    assert tight.throttled_count == 3
    assert {r.fault for r in tight.requests if r.outcome == "throttled"} == {"in_flight"}


def test_per_window_limit_counts_batch_items_and_recovers(
    tight: Sandbox, tight_qbo: QboCaller
) -> None:
    assert tight_qbo.batch(customer_items(3, "Window")).status_code == 200
    assert tight_qbo.query("SELECT * FROM Item").status_code == 200
    assert tight_qbo.query("SELECT * FROM Item").status_code == 200
    refused = tight_qbo.query("SELECT * FROM Item")  # 3 items + 2 queries = 5 already
    assert refused.status_code == 429
    assert_throttle_xml(refused, 429)
    assert tight.requests[-1].fault == "requests_per_window"
    time.sleep(1.05)
    assert tight_qbo.query("SELECT * FROM Item").status_code == 200


def test_a_batch_that_would_exceed_the_window_is_refused_whole(
    tight: Sandbox, tight_qbo: QboCaller
) -> None:
    assert tight_qbo.batch(customer_items(6, "Big")).status_code == 429
    assert tight.company.customer_by_name("Big 0") is None


def test_batches_per_window_limit(tight: Sandbox, tight_qbo: QboCaller) -> None:
    one = [{"bId": "1", "Query": "SELECT * FROM Item"}]
    assert tight_qbo.batch(one).status_code == 200
    assert tight_qbo.batch(one).status_code == 200
    third = tight_qbo.batch(one)
    assert third.status_code == 429
    assert tight.requests[-1].fault == "batches_per_window"
    assert tight.requests[-1].batch_items == 1


def test_429s_come_with_and_without_retry_after(tight: Sandbox, tight_qbo: QboCaller) -> None:
    tight.inject("qbo", "429", times=20)
    answers = [tight_qbo.query("SELECT * FROM Item") for _ in range(20)]
    assert all(a.status_code == 429 for a in answers)
    with_header = [a for a in answers if "retry-after" in a.headers]
    assert 0 < len(with_header) < 20
    assert all(int(a.headers["retry-after"]) >= 1 for a in with_header)


def test_commit_then_drop_applies_the_write_and_loses_the_answer(
    sandbox: Sandbox, qbo: QboCaller
) -> None:
    sandbox.inject("qbo", "commit_then_drop", writes_only=True)
    assert qbo.query("SELECT * FROM Item").status_code == 200  # reads pass untouched
    with pytest.raises(httpx.TransportError):
        qbo.post("customer", {"DisplayName": "Committed Then Dropped"})
    assert sandbox.company.customer_by_name("Committed Then Dropped") is not None
    record = sandbox.requests[-1]
    assert (record.outcome, record.fault, record.status) == ("dropped", "commit_then_drop", 200)


def test_a_fault_scripted_for_the_next_write_skips_a_batch_of_only_queries(
    sandbox: Sandbox, qbo: QboCaller
) -> None:
    # The sync's customer look-ups go out as batches of Query items (POSTs): the lost
    # answer meant for its next write must still meet that write.
    sandbox.inject("qbo", "commit_then_drop", writes_only=True)
    lookups = qbo.batch([{"bId": "1", "Query": "SELECT * FROM Item"}])
    assert lookups.status_code == 200 and sandbox.requests[-1].fault is None
    with pytest.raises(httpx.TransportError):
        qbo.batch(
            [{"bId": "1", "operation": "create", "Customer": {"DisplayName": "Batch Dropped"}}]
        )
    assert sandbox.requests[-1].fault == "commit_then_drop"
    assert sandbox.company.customer_by_name("Batch Dropped") is not None


def test_drop_before_processing_does_not_write(sandbox: Sandbox, qbo: QboCaller) -> None:
    sandbox.inject("qbo", "drop")
    with pytest.raises(httpx.TransportError):
        qbo.post("customer", {"DisplayName": "Never Written"})
    assert sandbox.company.customer_by_name("Never Written") is None
    assert sandbox.requests[-1].outcome == "dropped"


def test_timeout_answers_late_after_committing(tight: Sandbox, tight_qbo: QboCaller) -> None:
    tight.inject("qbo", "timeout")
    started = time.monotonic()
    with pytest.raises(httpx.ReadTimeout):
        tight_qbo.http.post(
            f"{tight_qbo.base}/customer",
            params={"minorversion": "75"},
            content=b'{"DisplayName": "Slow Write"}',
            headers=tight_qbo.headers(),
            timeout=0.2,
        )
    assert time.monotonic() - started < 0.6
    time.sleep(0.7)
    assert tight.company.customer_by_name("Slow Write") is not None
    assert tight.requests[-1].outcome == "timeout"


def test_injected_server_errors_look_like_the_real_ones(sandbox: Sandbox, qbo: QboCaller) -> None:
    sandbox.inject("qbo", "500")
    sandbox.inject("qbo", "503")
    first = qbo.query("SELECT * FROM Item")
    second = qbo.query("SELECT * FROM Item")
    assert first.status_code == 500 and "Fault" in qbo.json(first)
    assert second.status_code == 503
    assert second.headers["content-type"].startswith("text/html")
    assert [r.outcome for r in sandbox.requests[-2:]] == ["fault", "fault"]


def test_faults_hit_4d_too_and_its_429s_say_when_to_retry(sandbox: Sandbox) -> None:
    sandbox.inject("fourd", "429", times=5)
    sandbox.inject("fourd", "500")
    with httpx.Client(headers=FOURD_HEADERS) as client:
        throttled = [client.get(f"{sandbox.fourd_base_url}/patients/1001") for _ in range(5)]
        failed = client.get(f"{sandbox.fourd_base_url}/patients/1001")
        fine = client.get(f"{sandbox.fourd_base_url}/patients/1001")
    assert all(r.status_code == 429 and int(r.headers["retry-after"]) >= 1 for r in throttled)
    assert failed.status_code == 500
    assert fine.status_code == 200


def outcomes(seed: int) -> list[int]:
    with Sandbox(seed=seed, quotes=4, fault_rate=0.5, timeout_delay=0.01) as running:
        running.knobs.fourd.fault_weights = {"500": 1.0, "503": 1.0, "429": 1.0}
        with httpx.Client(headers=FOURD_HEADERS) as client:
            return [
                client.get(f"{running.fourd_base_url}/patients/1001").status_code for _ in range(30)
            ]


def test_random_faults_are_reproducible_from_the_seed() -> None:
    first = outcomes(11)
    assert first == outcomes(11)
    assert 200 in first and set(first) - {200}
    assert first != outcomes(12)


def test_request_log_records_service_path_and_batch_size(sandbox: Sandbox, qbo: QboCaller) -> None:
    sandbox.clear_requests()
    httpx.get(
        f"{sandbox.fourd_base_url}/quotes/list",
        params={"fromDate": "2020-01-01T00:00:00"},
        headers=FOURD_HEADERS,
    )
    qbo.batch(customer_items(4, "Logged"))
    fourd_record, qbo_record = sandbox.requests
    assert (fourd_record.service, fourd_record.path, fourd_record.status) == (
        "fourd",
        "quotes/list",
        200,
    )
    assert fourd_record.query == {"fromDate": ["2020-01-01T00:00:00"]}
    assert (qbo_record.service, qbo_record.batch_items, qbo_record.outcome) == ("qbo", 4, "ok")
    assert qbo_record.path == f"v3/company/{sandbox.realm_id}/batch"
    assert qbo_record.intuit_tid


def test_limits_can_change_while_running(tight: Sandbox, tight_qbo: QboCaller) -> None:
    for _ in range(5):
        assert tight_qbo.query("SELECT * FROM Item").status_code == 200
    assert tight_qbo.query("SELECT * FROM Item").status_code == 429
    tight.set_limits(QboLimits(requests_per_window=100, window_seconds=1))
    assert tight_qbo.query("SELECT * FROM Item").status_code == 200


def test_every_kind_of_throttled_answer_is_the_recorded_xml(
    tight: Sandbox, tight_qbo: QboCaller
) -> None:
    tight.inject("qbo", "429")
    assert_throttle_xml(tight_qbo.query("SELECT * FROM Item"), 429)  # injected
    one = [{"bId": "1", "Query": "SELECT * FROM Item"}]
    assert tight_qbo.batch(one).status_code == 200
    assert tight_qbo.batch(one).status_code == 200
    assert_throttle_xml(tight_qbo.batch(one), 429)  # batch window
    assert tight.requests[-1].fault == "batches_per_window"
    assert_throttle_xml(tight_qbo.batch(customer_items(6, "Over")), 429)  # request window
    assert tight.requests[-1].fault == "requests_per_window"


@pytest.mark.parametrize("status", [429, 403])
def test_in_flight_throttle_answers_xml_with_the_configured_status(
    tight: Sandbox, tight_qbo: QboCaller, status: int
) -> None:
    tight.knobs.qbo.throttle_status = status
    tight.knobs.qbo.latency_ms = 600
    with ThreadPoolExecutor(max_workers=4) as pool:
        answers = list(pool.map(lambda _: tight_qbo.query("SELECT * FROM Item"), range(4)))
    refused = [a for a in answers if a.status_code != 200]
    assert len(refused) == 2
    for answer in refused:
        assert_throttle_xml(answer, status)


def test_legacy_403_throttle_applies_to_window_and_injected_faults(
    tight: Sandbox, tight_qbo: QboCaller
) -> None:
    tight.knobs.qbo.throttle_status = 403
    for _ in range(5):
        assert tight_qbo.query("SELECT * FROM Item").status_code == 200
    assert_throttle_xml(tight_qbo.query("SELECT * FROM Item"), 403)
    tight.set_limits(QboLimits(requests_per_window=100, window_seconds=1))
    tight.inject("qbo", "429", times=20)
    answers = [tight_qbo.query("SELECT * FROM Item") for _ in range(20)]
    for answer in answers:
        assert_throttle_xml(answer, 403)
    assert 0 < sum("retry-after" in a.headers for a in answers) < 20  # still only a share
    assert tight.throttled_count == 21


def test_4d_throttling_keeps_its_own_json_shape(sandbox: Sandbox) -> None:
    sandbox.knobs.fourd.throttle_status = 403  # a QBO-only knob: 4D's gateway ignores it
    sandbox.inject("fourd", "429")
    with httpx.Client(headers=FOURD_HEADERS) as client:
        response = client.get(f"{sandbox.fourd_base_url}/patients/1001")
    assert response.status_code == 429
    assert response.json()["statusCode"] == 429


def test_legacy_forms_can_be_chosen_when_the_sandbox_is_built() -> None:
    limits = QboLimits(requests_per_window=1, window_seconds=30)
    with Sandbox(
        seed=3, quotes=2, limits=limits, throttle_status=403, legacy_deleted_spelling=True
    ) as legacy:
        caller = QboCaller(legacy, legacy.oauth.mint()["access_token"])
        created = caller.json(caller.post("customer", {"DisplayName": "2999.LG"}))["Customer"]
        assert_throttle_xml(caller.query("SELECT * FROM Item"), 403)
        caller.http.close()
        assert legacy.company.deactivate_customer(created["Id"])["DisplayName"] == (
            "2999.LG (Deleted)"
        )
