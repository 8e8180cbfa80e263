"""The shared HTTP policy: backoff, Retry-After, pacing, in-flight bound, write safety."""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from email.utils import format_datetime

import httpx
import pytest
import respx
from hypothesis import given, settings
from hypothesis import strategies as st

from fourdqbo.errors import OutcomeUnknown, StateStoreError, UpstreamError
from fourdqbo.http import (
    HttpTransport,
    RateLimiter,
    RequestCounter,
    RetryPolicy,
    acquire_together,
    parse_retry_after,
)
from fourdqbo.timefmt import utcnow

BASE = "https://api.test"


class FakeClock:
    """A monotonic clock that only moves when something sleeps on it."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds > 0, "a limiter must never sleep for nothing (or a negative time)"
        self.sleeps.append(seconds)
        self.now += seconds


# --- RetryPolicy ------------------------------------------------------------------------


@given(
    attempt=st.integers(min_value=1, max_value=5000),
    base=st.floats(min_value=0.001, max_value=5),
    ceiling=st.floats(min_value=0.01, max_value=60),
)
def test_backoff_is_jittered_within_half_cap_and_cap(
    attempt: int, base: float, ceiling: float
) -> None:
    policy = RetryPolicy(base_delay=base, max_delay=ceiling)
    cap = min(ceiling, base * 2.0 ** min(attempt - 1, 64))
    pause = policy.backoff(attempt)
    assert cap / 2 <= pause <= cap


def test_backoff_cap_grows_then_stays_at_max_delay() -> None:
    policy = RetryPolicy(base_delay=0.5, max_delay=4.0)
    caps = []
    for attempt in range(1, 9):
        pauses = [policy.backoff(attempt) for _ in range(200)]
        caps.append(max(pauses))
        assert min(pauses) >= min(4.0, 0.5 * 2 ** (attempt - 1)) / 2
    # 0.5, 1, 2, 4, then capped at 4.
    assert caps[0] <= 0.5
    assert 0.5 < caps[1] <= 1.0
    assert 1.0 < caps[2] <= 2.0
    assert all(2.0 < cap <= 4.0 for cap in caps[3:])


def test_backoff_has_jitter() -> None:
    policy = RetryPolicy(base_delay=1.0, max_delay=10.0)
    assert len({policy.backoff(3) for _ in range(20)}) > 1


@pytest.mark.parametrize(
    ("retry_after", "expected"),
    [(0.0, 0.0), (3.0, 3.0), (7.5, 7.5), (120.0, 120.0), (500.0, 120.0), (-4.0, 0.0)],
)
def test_backoff_honours_retry_after_capped(retry_after: float, expected: float) -> None:
    policy = RetryPolicy(base_delay=0.5, max_delay=2.0, max_retry_after=120.0)
    assert policy.backoff(1, retry_after) == expected
    assert policy.backoff(4, retry_after) == expected


def test_backoff_ignores_nan_retry_after() -> None:
    pause = RetryPolicy(base_delay=1.0, max_delay=1.0).backoff(1, float("nan"))
    assert 0.5 <= pause <= 1.0


# --- parse_retry_after ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("120", 120.0),
        (" 5 ", 5.0),
        ("1.5", 1.5),
        ("0", 0.0),
        ("-3", 0.0),
        (None, None),
        ("", None),
        ("soon", None),
        ("5s", None),
        ("nan", None),  # regression: gave nan, and sleep(nan) raises
        ("inf", None),
        ("Wed, 21 Oct 2015 07:28:00 -0000", None),  # no zone: not a valid HTTP date
    ],
)
def test_parse_retry_after(header: str | None, expected: float | None) -> None:
    assert parse_retry_after(header) == expected


def test_parse_retry_after_http_date_in_the_future() -> None:
    header = format_datetime(utcnow() + timedelta(seconds=30), usegmt=True)
    seconds = parse_retry_after(header)
    assert seconds is not None
    assert 27.0 <= seconds <= 30.0


def test_parse_retry_after_http_date_in_the_past_is_zero() -> None:
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0


# --- RateLimiter ------------------------------------------------------------------------


def spend(limiter: RateLimiter, clock: FakeClock, sizes: list[int]) -> list[tuple[float, int]]:
    events = []
    for units in sizes:
        limiter.acquire(units)
        events.append((clock.now, min(units, limiter.limit)))
    return events


def most_in_any_window(events: list[tuple[float, int]], window: float) -> int:
    """The largest number of units inside any half-open span [t, t + window)."""
    best = 0
    for start, _ in events:
        best = max(best, sum(u for t, u in events if start <= t < start + window))
    return best


@pytest.mark.parametrize(("limit", "burst"), [(500, 1), (40, 1), (40, 10), (10, 10), (1, 1)])
def test_rate_limiter_never_exceeds_limit_in_any_window(limit: int, burst: int) -> None:
    clock = FakeClock()
    limiter = RateLimiter(limit, 60.0, burst, clock=clock, sleep=clock.sleep)
    events = spend(limiter, clock, [1] * (limit * 4 + 3))
    assert most_in_any_window(events, 60.0) <= limit


@pytest.mark.parametrize(("limit", "burst"), [(500, 1), (40, 1), (40, 5), (10, 1)])
def test_rate_limiter_achieves_nine_tenths_of_the_limit(limit: int, burst: int) -> None:
    clock = FakeClock()
    limiter = RateLimiter(limit, 60.0, burst, clock=clock, sleep=clock.sleep)
    start = clock.now
    spent = 0
    while clock.now < start + 5 * 60.0:
        limiter.acquire(1)
        if clock.now < start + 5 * 60.0:
            spent += 1
    assert spent >= 0.9 * 5 * limit


def test_rate_limiter_counts_batch_items_as_units() -> None:
    # Regression: a spend larger than the bucket was cut down to the bucket's size, so a
    # 30-item batch counted as one request against QBO_MAX_REQUESTS_PER_MINUTE.
    clock = FakeClock()
    limiter = RateLimiter(500, 60.0, 1, clock=clock, sleep=clock.sleep)
    events = spend(limiter, clock, [30] * 40)  # 1200 items
    assert most_in_any_window(events, 60.0) <= 500
    elapsed = events[-1][0] - events[0][0]
    # 1200 items at 500 a minute need well over two minutes.
    assert elapsed >= 60.0 * (1200 - 500) / 500


def test_rate_limiter_spends_more_than_the_limit_as_the_limit() -> None:
    clock = FakeClock()
    limiter = RateLimiter(10, 1.0, clock=clock, sleep=clock.sleep)
    limiter.acquire(25)
    limiter.acquire(1)
    assert clock.now - 1000.0 >= 1.0


@settings(max_examples=60, deadline=None)
@given(
    limit=st.integers(min_value=1, max_value=60),
    burst=st.integers(min_value=1, max_value=60),
    window=st.sampled_from([0.25, 1.0, 60.0]),
    sizes=st.lists(st.integers(min_value=1, max_value=30), min_size=1, max_size=80),
)
def test_rate_limiter_window_property(
    limit: int, burst: int, window: float, sizes: list[int]
) -> None:
    clock = FakeClock()
    limiter = RateLimiter(limit, window, burst, clock=clock, sleep=clock.sleep)
    events = spend(limiter, clock, sizes)
    assert most_in_any_window(events, window) <= limit


def test_rate_limiter_first_spend_does_not_wait() -> None:
    clock = FakeClock()
    limiter = RateLimiter(40, 60.0, clock=clock, sleep=clock.sleep)
    assert limiter.acquire() == 0.0
    assert clock.sleeps == []


def test_rate_limiter_returns_seconds_waited() -> None:
    clock = FakeClock()
    limiter = RateLimiter(2, 1.0, 1, guard=0.0, clock=clock, sleep=clock.sleep)
    limiter.acquire()
    waited = limiter.acquire()
    assert waited == pytest.approx(0.5)
    assert sum(clock.sleeps) == pytest.approx(waited)


def test_the_bucket_refills_at_the_pace_the_guarded_log_allows() -> None:
    # 100 a second with a 3% guard: the log lets 100 units through every 1.03 s, and so
    # does the bucket; a steady stream of spends never waits on the log.
    clock = FakeClock()
    limiter = RateLimiter(100, 1.0, 25, clock=clock, sleep=clock.sleep)
    assert limiter.guard == pytest.approx(0.03)
    for _ in range(40):  # 10 windows of 25-unit spends
        limiter.acquire(25)
    assert clock.now - 1000.0 == pytest.approx(39 * 25 / 100 * 1.03, abs=1e-3)
    # Every wait was the bucket's even pace, none a log hold-up of a whole spend.
    assert max(clock.sleeps) == pytest.approx(0.2575, abs=1e-3)


@pytest.mark.parametrize(("limit", "window"), [(0, 60.0), (-1, 60.0), (10, 0.0), (10, -1.0)])
def test_rate_limiter_refuses_nonsense(limit: int, window: float) -> None:
    with pytest.raises(ValueError):
        RateLimiter(limit, window)


def test_rate_limiter_threads_share_the_limit() -> None:
    limiter = RateLimiter(20, 0.5, 1)
    stamps: list[float] = []
    lock = threading.Lock()

    def worker() -> None:
        for _ in range(6):
            limiter.acquire()
            with lock:
                stamps.append(time.monotonic())

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert len(stamps) == 24
    stamps.sort()
    # Tolerance for the scheduler (the stamp is taken just after acquire returns); without
    # the limiter all 24 would land within a few milliseconds.
    assert most_in_any_window([(t, 1) for t in stamps], 0.5 - 0.1) <= 20


# --- HttpTransport ----------------------------------------------------------------------


def transport(
    sleeps: list[float] | None = None,
    *,
    max_attempts: int = 4,
    max_in_flight: int = 4,
    counter: RequestCounter | None = None,
) -> HttpTransport:
    recorded = sleeps if sleeps is not None else []
    return HttpTransport(
        service="qbo",
        base_url=BASE,
        headers={"Accept": "application/json"},
        policy=RetryPolicy(max_attempts=max_attempts, base_delay=0.01, max_delay=0.04),
        max_in_flight=max_in_flight,
        counter=counter,
        sleep=recorded.append,
    )


@pytest.mark.parametrize(
    "failure",
    [
        httpx.Response(429),
        httpx.Response(500),
        httpx.Response(502),
        httpx.Response(503),
        httpx.Response(504),
        httpx.ConnectError("refused"),
        httpx.ConnectTimeout("slow connect"),
        httpx.ReadTimeout("slow answer"),
        httpx.RemoteProtocolError("dropped"),
    ],
    ids=lambda f: f.status_code if isinstance(f, httpx.Response) else type(f).__name__,
)
def test_get_is_retried_then_succeeds(failure: httpx.Response | Exception) -> None:
    sleeps: list[float] = []
    with respx.mock(base_url=BASE, assert_all_called=True) as router:
        route = router.get("/v3/thing").mock(
            side_effect=[failure, failure, httpx.Response(200, json={"ok": True})]
        )
        client = transport(sleeps)
        response = client.request("GET", "/v3/thing", idempotent=True)
    assert response.status_code == 200
    assert response.json() == {"ok": True}
    assert route.call_count == 3
    assert len(sleeps) == 2
    assert all(0.005 <= s <= 0.04 for s in sleeps)
    assert client.counter.snapshot() == {"qbo": 3}
    assert client.counter.retried["qbo"] == 2


def test_429_retry_after_is_honoured() -> None:
    sleeps: list[float] = []
    with respx.mock(base_url=BASE) as router:
        router.get("/q").mock(
            side_effect=[
                httpx.Response(429, headers={"Retry-After": "7"}),
                httpx.Response(503, headers={"Retry-After": "2.5"}),
                httpx.Response(200),
            ]
        )
        client = transport(sleeps)
        assert client.request("GET", "/q", idempotent=True).status_code == 200
    assert sleeps == [7.0, 2.5]
    assert client.counter.throttled["qbo"] == 1


def test_429_without_retry_after_backs_off_exponentially() -> None:
    sleeps: list[float] = []
    with respx.mock(base_url=BASE) as router:
        router.get("/q").mock(side_effect=[httpx.Response(429)] * 3 + [httpx.Response(200)])
        client = transport(sleeps)
        client.request("GET", "/q", idempotent=True)
    assert len(sleeps) == 3
    assert 0.005 <= sleeps[0] <= 0.01
    assert 0.01 <= sleeps[1] <= 0.02
    assert 0.02 <= sleeps[2] <= 0.04
    assert client.counter.throttled["qbo"] == 3
    assert client.counter.sent["qbo"] == 4


def test_huge_retry_after_is_capped() -> None:
    sleeps: list[float] = []
    with respx.mock(base_url=BASE) as router:
        router.get("/q").mock(
            side_effect=[httpx.Response(429, headers={"Retry-After": "86400"}), httpx.Response(200)]
        )
        transport(sleeps).request("GET", "/q", idempotent=True)
    assert sleeps == [RetryPolicy().max_retry_after]


@pytest.mark.parametrize(
    ("failure", "words"),
    [
        (httpx.Response(429), "throttled"),
        (httpx.Response(503), "failing"),
        (httpx.ConnectError("refused"), "unreachable"),
        (httpx.ReadTimeout("slow"), "unreachable"),
    ],
    ids=["429", "503", "connect", "timeout"],
)
def test_get_gives_up_after_max_attempts(failure: httpx.Response | Exception, words: str) -> None:
    sleeps: list[float] = []
    with respx.mock(base_url=BASE) as router:
        route = router.get("/q").mock(side_effect=[failure] * 10)
        client = transport(sleeps, max_attempts=3)
        with pytest.raises(UpstreamError) as caught:
            client.request("GET", "/q", idempotent=True)
    assert type(caught.value) is UpstreamError  # not OutcomeUnknown: a read is harmless
    assert route.call_count == 3
    assert len(sleeps) == 2
    assert words in str(caught.value)
    assert "after 3 attempts" in str(caught.value)
    assert caught.value.exit_code == 3
    assert caught.value.service == "qbo"


def test_status_and_intuit_tid_kept_when_giving_up() -> None:
    with respx.mock(base_url=BASE) as router:
        router.get("/q").mock(return_value=httpx.Response(503, headers={"intuit_tid": "tid-9"}))
        with pytest.raises(UpstreamError) as caught:
            transport(max_attempts=2).request("GET", "/q", idempotent=True)
    assert caught.value.status == 503
    assert caught.value.intuit_tid == "tid-9"


@pytest.mark.parametrize("status", [200, 201, 400, 401, 403, 404, 409])
def test_other_statuses_are_returned_not_retried(status: int) -> None:
    sleeps: list[float] = []
    with respx.mock(base_url=BASE) as router:
        route = router.get("/q").mock(return_value=httpx.Response(status))
        response = transport(sleeps).request("GET", "/q", idempotent=True)
    assert response.status_code == status
    assert route.call_count == 1
    assert sleeps == []


@pytest.mark.parametrize(
    "failure",
    [
        httpx.ReadTimeout("slow answer"),
        httpx.WriteTimeout("slow send"),
        httpx.RemoteProtocolError("peer closed connection"),
        httpx.ReadError("reset"),
        httpx.Response(500),
        httpx.Response(502),
        httpx.Response(503, headers={"Retry-After": "1"}),
        httpx.Response(504),
    ],
    ids=lambda f: f.status_code if isinstance(f, httpx.Response) else type(f).__name__,
)
def test_write_with_unknown_outcome_is_not_retried(failure: httpx.Response | Exception) -> None:
    sleeps: list[float] = []
    with respx.mock(base_url=BASE) as router:
        route = router.post("/v3/company/1/batch").mock(
            side_effect=[failure, httpx.Response(200, json={})]
        )
        client = transport(sleeps)
        with pytest.raises(OutcomeUnknown) as caught:
            client.request("POST", "/v3/company/1/batch", idempotent=False, content=b"{}")
    assert route.call_count == 1
    assert sleeps == []
    assert "outcome unknown" in str(caught.value)
    assert caught.value.exit_code == 3
    if isinstance(failure, httpx.Response):
        assert caught.value.status == failure.status_code


@pytest.mark.parametrize(
    "failure",
    [httpx.Response(429), httpx.ConnectError("refused"), httpx.ConnectTimeout("no route")],
    ids=["429", "ConnectError", "ConnectTimeout"],
)
def test_write_is_retried_when_it_provably_was_not_applied(
    failure: httpx.Response | Exception,
) -> None:
    sleeps: list[float] = []
    with respx.mock(base_url=BASE) as router:
        route = router.post("/v3/company/1/invoice").mock(
            side_effect=[failure, httpx.Response(200, json={"Invoice": {"Id": "7"}})]
        )
        client = transport(sleeps)
        response = client.request(
            "POST", "/v3/company/1/invoice", idempotent=False, content=b'{"a": 1}'
        )
    assert response.json() == {"Invoice": {"Id": "7"}}
    assert route.call_count == 2
    assert len(sleeps) == 1
    # The same body went both times.
    assert [call.request.content for call in route.calls] == [b'{"a": 1}', b'{"a": 1}']


def test_write_throttled_too_often_gives_up_without_outcome_unknown() -> None:
    with respx.mock(base_url=BASE) as router:
        router.post("/w").mock(return_value=httpx.Response(429))
        with pytest.raises(UpstreamError) as caught:
            transport(max_attempts=2).request("POST", "/w", idempotent=False)
    assert type(caught.value) is UpstreamError
    assert caught.value.status == 429


def test_request_sends_headers_params_and_body() -> None:
    with respx.mock(base_url=BASE) as router:
        route = router.post("/v3/company/1/invoice").mock(return_value=httpx.Response(200))
        transport().request(
            "POST",
            "/v3/company/1/invoice",
            idempotent=False,
            params={"minorversion": "75", "requestid": "abc"},
            content='{"x": 1}',
            headers={"Content-Type": "application/json"},
        )
    sent = route.calls.last.request
    assert sent.url.params["minorversion"] == "75"
    assert sent.url.params["requestid"] == "abc"
    assert sent.headers["accept"] == "application/json"
    assert sent.headers["content-type"] == "application/json"
    assert sent.content == b'{"x": 1}'


def test_pacing_is_applied_to_every_attempt() -> None:
    clock = FakeClock()
    limiter = RateLimiter(1, 10.0, clock=clock, sleep=clock.sleep)
    with respx.mock(base_url=BASE) as router:
        router.get("/q").mock(side_effect=[httpx.Response(429), httpx.Response(200)])
        transport().request("GET", "/q", idempotent=True, pacing=[(limiter, 1)])
    # Two attempts, one unit each, one unit per 10 s: the retry waited for the window.
    assert clock.now - 1000.0 >= 10.0


def test_in_flight_requests_are_bounded() -> None:
    in_flight = 0
    most = 0
    lock = threading.Lock()

    def slow(request: httpx.Request) -> httpx.Response:
        nonlocal in_flight, most
        with lock:
            in_flight += 1
            most = max(most, in_flight)
        time.sleep(0.03)
        with lock:
            in_flight -= 1
        return httpx.Response(200)

    with respx.mock(base_url=BASE) as router:
        route = router.get("/q").mock(side_effect=slow)
        client = transport(max_in_flight=3)
        threads = [
            threading.Thread(target=client.request, args=("GET", "/q"), kwargs={"idempotent": True})
            for _ in range(12)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=10)
    assert route.call_count == 12
    assert most <= 3
    assert most >= 2  # the threads really did overlap
    assert client.counter.snapshot() == {"qbo": 12}


def test_counter_is_shared_between_transports() -> None:
    counter = RequestCounter()
    with respx.mock(base_url=BASE) as router:
        router.get("/q").mock(side_effect=[httpx.Response(429), httpx.Response(200)] * 2)
        first = transport(counter=counter)
        second = HttpTransport(
            service="fourd", base_url=BASE, counter=counter, sleep=lambda s: None
        )
        first.request("GET", "/q", idempotent=True)
        second.request("GET", "/q", idempotent=True)
    assert counter.snapshot() == {"qbo": 2, "fourd": 2}
    assert counter.throttled == {"qbo": 1, "fourd": 1}
    assert counter.retried == {"qbo": 1, "fourd": 1}


def test_counter_counts_connection_failures_as_sent_attempts() -> None:
    counter = RequestCounter()
    counter.count("fourd", status=None)
    counter.count("fourd", status=200)
    counter.count("fourd", status=429)
    counter.retry("fourd")
    assert counter.snapshot() == {"fourd": 3}
    assert counter.throttled["fourd"] == 1
    assert counter.retried["fourd"] == 1
    snapshot = counter.snapshot()
    snapshot["fourd"] = 99
    assert counter.snapshot() == {"fourd": 3}  # a copy


def test_counter_is_thread_safe() -> None:
    counter = RequestCounter()

    def work() -> None:
        for _ in range(2000):
            counter.count("qbo", status=429)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert counter.sent["qbo"] == 8000
    assert counter.throttled["qbo"] == 8000


def test_timeout_and_close() -> None:
    client = HttpTransport(service="x", base_url=BASE, timeout=httpx.Timeout(5.0, connect=2.0))
    assert client.client.timeout.read == 5.0
    assert client.client.timeout.connect == 2.0
    client.close()
    assert client.client.is_closed


def test_real_loopback_timeout_of_a_write_is_outcome_unknown() -> None:
    """Against a real socket: the server reads the request and never answers."""
    import socket

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port = server.getsockname()[1]
    accepted: list[socket.socket] = []

    def accept() -> None:
        connection, _ = server.accept()
        connection.recv(65536)
        accepted.append(connection)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    client = HttpTransport(
        service="qbo", base_url=f"http://127.0.0.1:{port}", timeout=0.3, sleep=lambda s: None
    )
    try:
        with pytest.raises(OutcomeUnknown):
            client.request("POST", "/batch", idempotent=False, content=b"{}")
    finally:
        client.close()
        thread.join(timeout=5)
        for connection in accepted:
            connection.close()
        server.close()
    assert client.counter.snapshot() == {"qbo": 1}


def test_real_loopback_refused_connection_is_retried_then_unreachable() -> None:
    import socket

    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()  # nothing listens there now
    sleeps: list[float] = []
    client = HttpTransport(
        service="fourd",
        base_url=f"http://127.0.0.1:{port}",
        policy=RetryPolicy(max_attempts=3, base_delay=0.001, max_delay=0.002),
        sleep=sleeps.append,
    )
    with pytest.raises(UpstreamError) as caught:
        client.request("POST", "/quotes", idempotent=False)
    client.close()
    assert type(caught.value) is UpstreamError
    assert "unreachable" in str(caught.value)
    assert len(sleeps) == 2


# --- RateLimiter guard against arrival jitter (bench/sync_throughput.py) ----------------


def test_rate_limiter_leaves_a_guard_for_late_arrivals() -> None:
    # Regression: with full batches of 30 against 500 items a window, the sliding log timed
    # spends to the exact instant an old one left the window; the server, which stamps each
    # request on arrival a few ms later (and not the same few each time), then counted 520
    # items in its window and answered 429. Any span a little longer than the window must
    # hold at most the limit.
    clock = FakeClock()
    limiter = RateLimiter(500, 5.0, 30, clock=clock, sleep=clock.sleep)
    events = spend(limiter, clock, [30] * 60)
    assert most_in_any_window(events, 5.0 + 0.09) <= 500
    # The guard costs little: 16 batches of 30 (480) fit a window, plus its 3%.
    paced = sum(units for _, units in events[:-1])
    assert paced / (events[-1][0] - events[0][0]) >= 0.9 * 500 / 5.0


@settings(max_examples=40, deadline=None)
@given(
    sizes=st.lists(st.integers(min_value=1, max_value=30), min_size=1, max_size=60),
    delays=st.lists(st.floats(min_value=0.0, max_value=0.149), min_size=60, max_size=60),
)
def test_rate_limiter_holds_at_the_server_despite_arrival_jitter(
    sizes: list[int], delays: list[float]
) -> None:
    # Each spend reaches the server up to 0.149 s (under the 0.15 s guard) after it was made.
    clock = FakeClock()
    limiter = RateLimiter(100, 5.0, 30, clock=clock, sleep=clock.sleep)
    events = spend(limiter, clock, sizes)
    arrivals = [(at + delays[n], units) for n, (at, units) in enumerate(events)]
    assert limiter.guard == pytest.approx(0.15)
    assert most_in_any_window(arrivals, 5.0) <= 100


@settings(max_examples=60, deadline=None)
@given(
    requests=st.lists(
        st.tuples(st.sampled_from([1, 3, 10, 25, 30]), st.sampled_from([0.0, 0.05, 0.3])),
        min_size=40,
        max_size=120,
    )
)
def test_requests_and_batches_are_paced_at_the_instant_they_leave(
    requests: list[tuple[int, float]],
) -> None:
    # Regression: the request limiter stamped a batch's items, then the batch limiter made
    # it wait (one batch per 0.125 s) before it left. The request log then freed those
    # units up to 0.125 s early, past its 0.1 s guard, and the server, counting from the
    # arrival, still held them: 429 (bench/sync_throughput.py, a bucket of 100). Acquired
    # one after the other, such sequences put 525 units in a span of 5.09 s.
    clock = FakeClock()
    items = RateLimiter(500, 5.0, 100, clock=clock, sleep=clock.sleep)
    batches = RateLimiter(40, 5.0, 1, clock=clock, sleep=clock.sleep)
    sent: list[tuple[float, int]] = []
    sent_batches: list[tuple[float, int]] = []
    for units, pause in requests:
        if units > 1:  # a batch: its items, and one batch
            acquire_together([(items, units), (batches, 1)])
            sent_batches.append((clock.now, 1))
        else:  # a query
            acquire_together([(items, units)])
        sent.append((clock.now, units))
        clock.now += pause  # the caller's own work between requests
    assert most_in_any_window(sent, 5.0 + 0.09) <= 500
    assert most_in_any_window(sent_batches, 5.0 + 0.09) <= 40
    # Each log holds the instant its request left.
    assert [at for at, _ in items._spent] == [at for at, _ in sent][-len(items._spent) :]


def test_the_check_before_a_write_runs_once_allowed_and_before_the_spend() -> None:
    # Regression: the sync lock's check (a state-store call) ran between the stamp and the
    # send, adding its time to the arrival delay the guard must absorb: 429s.
    clock = FakeClock()
    items = RateLimiter(1, 10.0, guard=0.0, clock=clock, sleep=clock.sleep)
    items.acquire()
    checks: list[float] = []

    def check() -> None:
        checks.append(clock.now)
        clock.now += 0.5  # the check takes time

    assert acquire_together([(items, 1)], check) == pytest.approx(10.0)
    assert checks == [pytest.approx(1010.0)]  # once allowed, not before the wait
    assert [at for at, _ in items._spent] == [pytest.approx(1010.5)]  # after the check


def test_a_waiting_read_goes_before_a_waiting_write() -> None:
    # In a run the reads are the next chunk's look-ups, which the writer will wait for: a
    # write that waits a little longer loses nothing (10,000 quotes at a 1-second window:
    # the writer's wait for chunks fell from 7.4 s to 1.7 s, the rate from 0.87 to 0.90).
    limiter = RateLimiter(1, 0.3, guard=0.0)
    limiter.acquire()  # full until 0.3 s from now
    order: list[str] = []

    def spend(name: str, first: bool) -> None:
        acquire_together([(limiter, 1)], first=first)
        order.append(name)

    write = threading.Thread(target=spend, args=("write", False))
    read = threading.Thread(target=spend, args=("read", True))
    write.start()
    time.sleep(0.05)  # the write has waited longer
    read.start()
    write.join(2)
    read.join(2)
    assert order == ["read", "write"]
    assert limiter._first_waiting == 0


def test_waiting_together_loses_nothing_against_the_limit() -> None:
    clock = FakeClock()
    items = RateLimiter(500, 5.0, 100, clock=clock, sleep=clock.sleep)
    batches = RateLimiter(40, 5.0, 1, clock=clock, sleep=clock.sleep)
    sent = []
    for _ in range(80):
        acquire_together([(items, 25), (batches, 1)])
        sent.append((clock.now, 25))
    paced = sum(units for _, units in sent[:-1])
    assert paced / (sent[-1][0] - sent[0][0]) >= 0.95 * 500 / 5.0


def test_waiting_together_spends_nothing_until_every_limiter_allows() -> None:
    clock = FakeClock()
    free = RateLimiter(100, 1.0, 100, clock=clock, sleep=clock.sleep)
    tight = RateLimiter(1, 10.0, clock=clock, sleep=clock.sleep)
    tight.acquire()
    started = clock.now
    assert acquire_together([(free, 5), (tight, 1)]) == pytest.approx(10.0 + tight.guard)
    assert [at for at, _ in free._spent] == [pytest.approx(started + 10.0 + tight.guard)]


def test_rate_limiter_guard_can_be_set() -> None:
    clock = FakeClock()
    limiter = RateLimiter(1, 10.0, guard=0.0, clock=clock, sleep=clock.sleep)
    limiter.acquire()
    assert limiter.acquire() == pytest.approx(10.0)
    guarded = RateLimiter(1, 10.0, guard=2.0, clock=clock, sleep=clock.sleep)
    guarded.acquire()
    assert guarded.acquire() == pytest.approx(12.0)


def test_before_write_runs_after_pacing_and_can_stop_the_write() -> None:
    events: list[str] = []

    class Recorder(RateLimiter):
        def _pause(self, units: int) -> tuple[float, float]:
            events.append("paced")
            return super()._pause(units)

        def _spend(self, units: int, now: float) -> None:
            events.append("spent")
            super()._spend(units, now)

    def refuse() -> None:
        events.append("checked")
        raise StateStoreError("lost the sync lock")

    with respx.mock(base_url="https://api.test", assert_all_called=False) as router:
        route = router.post("/write").mock(return_value=httpx.Response(200, json={}))
        transport = HttpTransport(service="qbo", base_url="https://api.test")
        transport.before_write = refuse
        with pytest.raises(StateStoreError):
            transport.request("POST", "/write", idempotent=False, pacing=[(Recorder(10, 1.0), 1)])
        assert route.call_count == 0
        # Reads never ask: only writes can do harm after the right to write is gone.
        router.get("/read").mock(return_value=httpx.Response(200, json={}))
        transport.request("GET", "/read", idempotent=True)
    # Paced, checked, and nothing spent for the write that never left.
    assert events == ["paced", "checked"]


# --- throttling: waited out for one window; what else counts as a throttle -------------


def throttle_transport(
    sleeps: list[float],
    *,
    window: float,
    max_attempts: int = 3,
    marker: object = None,
) -> HttpTransport:
    return HttpTransport(
        service="qbo",
        base_url=BASE,
        policy=RetryPolicy(
            max_attempts=max_attempts,
            base_delay=0.5,
            max_delay=2.0,
            throttle_window=window,
            throttle_marker=marker,  # type: ignore[arg-type]
        ),
        sleep=sleeps.append,
    )


def test_lasting_429_without_retry_after_gives_up_only_after_the_window() -> None:
    # Regression: a 429 that lasted gave up after max_attempts (about 6 s in production)
    # where Intuit advises waiting a minute.
    sleeps: list[float] = []
    with respx.mock(base_url=BASE) as router:
        route = router.get("/q").mock(return_value=httpx.Response(429))
        client = throttle_transport(sleeps, window=10.0)
        with pytest.raises(UpstreamError) as caught:
            client.request("GET", "/q", idempotent=True)
    assert sum(sleeps) == pytest.approx(10.0)
    assert route.call_count == len(sleeps) + 1 > 3  # more than max_attempts
    assert all(s <= 2.0 for s in sleeps)  # still the capped backoff, not one long wait
    assert "throttled" in str(caught.value) and caught.value.status == 429
    assert f"after {route.call_count} attempts" in str(caught.value)


def test_early_throttle_retries_stay_quick() -> None:
    sleeps: list[float] = []
    with respx.mock(base_url=BASE) as router:
        router.get("/q").mock(side_effect=[httpx.Response(429)] * 2 + [httpx.Response(200)])
        client = throttle_transport(sleeps, window=60.0)
        assert client.request("GET", "/q", idempotent=True).status_code == 200
    assert len(sleeps) == 2
    assert 0.25 <= sleeps[0] <= 0.5 and 0.5 <= sleeps[1] <= 1.0


def test_throttle_that_ends_within_the_window_succeeds() -> None:
    sleeps: list[float] = []
    with respx.mock(base_url=BASE) as router:
        route = router.get("/q").mock(side_effect=[httpx.Response(429)] * 7 + [httpx.Response(200)])
        client = throttle_transport(sleeps, window=60.0)
        assert client.request("GET", "/q", idempotent=True).status_code == 200
    assert route.call_count == 8
    assert client.counter.throttled["qbo"] == 7


def test_lasting_429_with_retry_after_honours_it_until_the_window_is_spent() -> None:
    sleeps: list[float] = []
    with respx.mock(base_url=BASE) as router:
        route = router.get("/q").mock(
            return_value=httpx.Response(429, headers={"Retry-After": "4"})
        )
        with pytest.raises(UpstreamError, match="throttled"):
            throttle_transport(sleeps, window=10.0).request("GET", "/q", idempotent=True)
    # 4 + 4 (max_attempts reached at 3 attempts) + 4 (8 < 10): then 12 >= 10, give up.
    assert sleeps == [4.0, 4.0, 4.0]
    assert route.call_count == 4


def test_the_window_does_not_stretch_other_failures() -> None:
    sleeps: list[float] = []
    with respx.mock(base_url=BASE) as router:
        route = router.get("/q").mock(return_value=httpx.Response(503))
        with pytest.raises(UpstreamError, match="failing"):
            throttle_transport(sleeps, window=60.0).request("GET", "/q", idempotent=True)
    assert route.call_count == 3


def test_a_write_throttled_throughout_the_window_gives_up_without_outcome_unknown() -> None:
    sleeps: list[float] = []
    with respx.mock(base_url=BASE) as router:
        route = router.post("/w").mock(return_value=httpx.Response(429))
        with pytest.raises(UpstreamError) as caught:
            throttle_transport(sleeps, window=5.0).request("POST", "/w", idempotent=False)
    assert type(caught.value) is UpstreamError
    assert sum(sleeps) == pytest.approx(5.0)
    assert route.call_count > 3


def marks_403_throttle(response: httpx.Response) -> bool:
    return response.status_code == 403 and b"ThrottleExceeded" in response.content


def test_marked_answer_is_a_throttle_retried_for_writes_too() -> None:
    sleeps: list[float] = []
    with respx.mock(base_url=BASE) as router:
        route = router.post("/w").mock(
            side_effect=[
                httpx.Response(403, content=b"<Fault>ThrottleExceeded</Fault>"),
                httpx.Response(200, json={"ok": True}),
            ]
        )
        client = throttle_transport(sleeps, window=5.0, marker=marks_403_throttle)
        assert client.request("POST", "/w", idempotent=False).json() == {"ok": True}
    assert route.call_count == 2 and len(sleeps) == 1
    assert client.counter.throttled["qbo"] == 1


def test_unmarked_403_is_returned_not_retried() -> None:
    sleeps: list[float] = []
    with respx.mock(base_url=BASE) as router:
        route = router.get("/q").mock(return_value=httpx.Response(403, content=b"forbidden"))
        client = throttle_transport(sleeps, window=5.0, marker=marks_403_throttle)
        assert client.request("GET", "/q", idempotent=True).status_code == 403
    assert route.call_count == 1 and sleeps == []
    assert client.counter.throttled["qbo"] == 0


def test_lasting_marked_throttle_says_throttled_with_its_status() -> None:
    sleeps: list[float] = []
    with respx.mock(base_url=BASE) as router:
        router.get("/q").mock(return_value=httpx.Response(403, content=b"ThrottleExceeded"))
        client = throttle_transport(sleeps, window=3.0, marker=marks_403_throttle)
        with pytest.raises(UpstreamError) as caught:
            client.request("GET", "/q", idempotent=True)
    assert "throttled" in str(caught.value) and caught.value.status == 403
    assert sum(sleeps) == pytest.approx(3.0)


def test_a_marker_that_raises_finds_no_throttle() -> None:
    def broken(response: httpx.Response) -> bool:
        raise RuntimeError("cannot read")

    policy = RetryPolicy(throttle_marker=broken)
    assert policy.throttled(httpx.Response(403)) is False
    assert policy.throttled(httpx.Response(429)) is True  # a 429 needs no marker


@settings(max_examples=200, deadline=None)
@given(
    max_attempts=st.integers(min_value=1, max_value=8),
    base=st.floats(min_value=0.01, max_value=2.0),
    ceiling=st.floats(min_value=0.05, max_value=20.0),
    window=st.floats(min_value=0.0, max_value=90.0),
)
def test_throttle_waits_add_up_to_the_window_and_no_more(
    max_attempts: int, base: float, ceiling: float, window: float
) -> None:
    policy = RetryPolicy(
        max_attempts=max_attempts, base_delay=base, max_delay=ceiling, throttle_window=window
    )
    waited, attempt, before_limit = 0.0, 0, 0.0
    while True:
        attempt += 1
        pause = policy.pause(attempt, None, throttled=True, throttle_waited=waited)
        if pause is None:
            break
        assert pause > 0
        waited += pause
        if attempt < max_attempts:
            before_limit = waited
        assert attempt < 10_000
    assert attempt >= max_attempts
    assert waited >= window - 1e-9
    # The waits past max_attempts were cut to what was left of the window.
    assert waited <= max(window, before_limit) + 1e-9


def test_pause_gives_up_on_other_failures_at_max_attempts() -> None:
    policy = RetryPolicy(max_attempts=2, throttle_window=60.0)
    assert policy.pause(1, None) is not None
    assert policy.pause(2, None) is None
    assert policy.pause(2, None, throttled=True) is not None


# --- reads and writes counted apart -----------------------------------------------------


def test_reads_and_writes_are_counted_apart_retries_included() -> None:
    counter = RequestCounter()
    with respx.mock(base_url=BASE) as router:
        router.get("/q").mock(side_effect=[httpx.Response(503), httpx.Response(200)])
        router.post("/w").mock(side_effect=[httpx.Response(429), httpx.Response(200)])
        router.post("/batch-of-queries").mock(return_value=httpx.Response(200))
        client = transport(counter=counter)
        client.request("GET", "/q", idempotent=True)
        client.request("POST", "/w", idempotent=False)
        client.request("POST", "/batch-of-queries", idempotent=True)
    assert counter.by_kind("qbo") == {"read": 3, "write": 2}
    assert counter.snapshot() == {"qbo": 5}  # unchanged meaning: every attempt
    assert counter.by_kind("fourd") == {"read": 0, "write": 0}


def test_counter_counts_a_connection_failure_of_a_write_as_a_write() -> None:
    counter = RequestCounter()
    with respx.mock(base_url=BASE) as router:
        router.post("/w").mock(side_effect=[httpx.ConnectError("refused"), httpx.Response(200)])
        transport(counter=counter).request("POST", "/w", idempotent=False)
    assert counter.by_kind("qbo") == {"read": 0, "write": 2}


def test_every_client_of_a_process_shares_one_ssl_context(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Loading the CA bundle is what a run that finds the lock held spends most on: once
    # per process, not once per client.
    import ssl

    import fourdqbo.http as http_module

    loads: list[object] = []
    real = ssl.create_default_context

    def counting(*args: object, **kwargs: object) -> ssl.SSLContext:
        loads.append(kwargs)
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(ssl, "create_default_context", counting)
    monkeypatch.setattr(http_module, "_ssl_context", None)
    first = HttpTransport(service="fourd", base_url="https://fourd.example")
    second = HttpTransport(service="qbo", base_url="https://qbo.example")
    try:
        assert len(loads) == 1
        assert http_module.shared_ssl_context().verify_mode == ssl.CERT_REQUIRED
    finally:
        first.close()
        second.close()


def test_room_sizes_a_spend_to_what_the_log_has_left() -> None:
    # 500 a 5-second window: 19 batches of 25 and a 1-unit read fill it to 476.
    clock = FakeClock()
    limiter = RateLimiter(500, 5.0, 100, clock=clock, sleep=clock.sleep)
    for _ in range(19):
        limiter.acquire(25)
    limiter.acquire(1)
    clock.now += 0.3  # the bucket's pace allows a whole batch again
    sleeps = len(clock.sleeps)
    # Waiting for 25 units of room would wait for the oldest batch to leave the log;
    # the 24 left go now.
    assert limiter.room(25, least=5) == 24
    assert limiter.acquire(24) == 0.0
    assert len(clock.sleeps) == sleeps
    # A full log: room waits for the oldest batch to leave, and offers what it freed.
    first_left = 1000.0 + 5.0 + limiter.guard
    assert limiter.room(25, least=5) == 25
    assert clock.now == pytest.approx(first_left, abs=1e-3)


def test_room_below_the_least_waits_and_the_bucket_still_paces() -> None:
    clock = FakeClock()
    limiter = RateLimiter(100, 1.0, 25, guard=0.0, clock=clock, sleep=clock.sleep)
    for _ in range(4):
        limiter.acquire(24)
    limiter.acquire(2)  # the log holds 98: room for 2, fewer than the least of 5
    clock.now += 1.0 - 4 * 0.24 - 0.02 - 0.001  # just before the first spend leaves
    # Waited for the first 24 to leave: 26 free, a batch of 25 fits.
    assert limiter.room(25, least=5) == 25
    assert clock.now >= 1001.0
    # Right after a spend the bucket is short (1 token of 25 left): a whole batch is due
    # only at its pace, 24 units later, however much room the log has.
    limiter.acquire(24)
    before = clock.now
    assert limiter.room(25, least=5) == 25
    assert clock.now - before == pytest.approx(0.24, abs=1e-3)
