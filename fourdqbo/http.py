"""The one HTTP policy both API clients share: timeouts, retries, pacing, counting.

- Retries are declared once (`RetryPolicy`): capped exponential backoff with full jitter
  on throttling, 5xx and network errors, honouring `Retry-After`. Throttling (a 429, or
  whatever else the policy's `throttle_marker` recognises, such as QBO's legacy 403
  ThrottleExceeded) is retried until the waits add up to one `throttle_window`, not just
  `max_attempts` times: the early retries stay quick, and a throttle that lasts is waited
  out the way the server asks (Intuit: a minute).
- Reads (idempotent requests) are retried. Writes are retried only when the request
  provably was not applied: a throttled answer (rejected before processing) or a
  connection that never opened. Any other failure of a write (timeout, dropped
  connection, 5xx) raises `OutcomeUnknown`: the caller must look the document up before
  writing again. That is the hook the sync engine uses against duplicates.
- `RateLimiter` paces requests to stay under a per-window limit rather than bounce off it;
  a semaphore bounds the requests in flight.
- `RequestCounter` counts requests per service, and reads and writes apart (QBO meters
  reads), for the run report, the metrics and the benchmarks.
"""

from __future__ import annotations

import logging
import math
import random
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from types import TracebackType
from typing import Any, Self

import httpx

from fourdqbo.errors import OutcomeUnknown, UpstreamError
from fourdqbo.timefmt import utcnow

log = logging.getLogger(__name__)

TRANSIENT_STATUSES = frozenset({429, 500, 502, 503, 504})
DEFAULT_TIMEOUT = httpx.Timeout(30.0, connect=10.0)


@dataclass(frozen=True)
class RetryPolicy:
    """Which failures are retried, how often and how long to wait between attempts.

    - Network errors and `retry_statuses` answers: up to `max_attempts` attempts.
    - Throttled answers (429, or any answer `throttle_marker` recognises): at least
      `max_attempts` attempts, and more until the waits between them add up to
      `throttle_window` seconds (0: no more than `max_attempts`). Without `Retry-After`
      the last wait is cut to what is left of the window.
    """

    max_attempts: int = 5
    base_delay: float = 0.5
    max_delay: float = 20.0
    max_retry_after: float = 120.0
    retry_statuses: frozenset[int] = TRANSIENT_STATUSES
    throttle_window: float = 0.0
    # Answers other than a 429 that mean "throttled" (must not raise; it reads the body).
    throttle_marker: Callable[[httpx.Response], bool] | None = None

    def backoff(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait after failed attempt number `attempt` (1-based)."""
        if retry_after is not None and not math.isnan(retry_after):
            return min(max(retry_after, 0.0), self.max_retry_after)
        # The exponent is bounded: 2.0 ** 1100 would overflow long after max_delay caps it.
        cap = min(self.max_delay, self.base_delay * (2.0 ** min(max(attempt - 1, 0), 64)))
        return random.uniform(cap / 2, cap)

    def throttled(self, response: httpx.Response) -> bool:
        """The server refused the request before processing it because of a rate limit."""
        if response.status_code == 429:
            return True
        if self.throttle_marker is None:
            return False
        try:
            return bool(self.throttle_marker(response))
        except Exception:  # a marker that cannot read the body did not find a throttle
            log.debug("throttle marker failed on HTTP %d", response.status_code, exc_info=True)
            return False

    def pause(
        self,
        attempt: int,
        retry_after: float | None,
        *,
        throttled: bool = False,
        throttle_waited: float = 0.0,
    ) -> float | None:
        """Seconds to wait before attempt `attempt + 1`, or None to give up.

        `throttle_waited` is what this request has already waited after throttled answers.
        """
        if attempt < self.max_attempts:
            return self.backoff(attempt, retry_after)
        left = self.throttle_window - throttle_waited
        if not throttled or left <= 0:
            return None
        pause = self.backoff(attempt, retry_after)
        honoured = retry_after is not None and not math.isnan(retry_after)
        return pause if honoured else min(pause, left)


def parse_retry_after(value: str | None) -> float | None:
    """`Retry-After` as seconds: either delta-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        # "nan" or "inf" is garbage, not a wait (sleep(nan) would raise).
        return max(seconds, 0.0) if math.isfinite(seconds) else None
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return max((when - utcnow()).total_seconds(), 0.0)


class RateLimiter:
    """Paces units (requests, batch items) so that no `window`-second span holds more than
    `limit` of them: pacing below the throttle instead of bouncing off it.

    Two rules, both must allow a unit before it is spent:
    - a token bucket (at most `burst` units at once, refilled at `limit / window` per
      second) spreads the units evenly over the window; a spend larger than the bucket
      (a 30-item batch) is allowed once the bucket is full and leaves a debt that later
      spends wait out;
    - a sliding log of what was spent in the last `window` seconds is the hard guarantee:
      a spend waits until it fits under `limit`.

    The server measures its window from when each request arrives, a few milliseconds after
    we stamp it and not the same few for every request. So a log entry blocks for the
    window plus a `guard` (default `GUARD_SHARE` of the window): otherwise a spend timed to
    the instant an old one leaves our window meets a server that still counts the old one
    (it arrived late), and earns a 429. The guard absorbs differences in arrival delay up
    to its length.
    """

    # Shortest wait: keeps a fake clock moving when float rounding leaves a sliver.
    _MIN_PAUSE = 1e-6
    # 3% of QBO's minute is 1.8 s; of the benchmark's 5-second window, 0.15 s. Without a
    # guard, 2 of the 3 spends the log held back in bench/sync_throughput.py met a 429;
    # with 2%, once batches were sized to fill the window (`room`), a 10,000-quote run met
    # 6, the arrival of a request now and then late by more than 0.1 s on a busy machine.
    GUARD_SHARE = 0.03

    def __init__(
        self,
        limit: int,
        window: float,
        burst: int = 1,
        *,
        guard: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if limit <= 0 or window <= 0:
            raise ValueError("limit and window must be positive")
        self.limit = limit
        self.window = float(window)
        self.guard = self.window * self.GUARD_SHARE if guard is None else max(float(guard), 0.0)
        self.capacity = max(1, min(burst, limit))
        # The bucket refills at the pace the log allows, `limit` per window plus guard: a
        # faster bucket runs into the log at the end of every window, and a spend the log
        # holds back waits for a whole earlier spend to leave (25 units wait for the
        # oldest batch while a 1-unit read leaves 24 of them unused).
        self.rate = limit / (self.window + self.guard)
        self._tokens = float(self.capacity)
        self._clock = clock
        self._sleep = sleep
        self._stamp = clock()
        self._spent: deque[tuple[float, int]] = deque()
        self._spent_total = 0
        self._lock = threading.Lock()
        self._first_waiting = 0  # callers with `first=True` waiting (reads)

    def acquire(self, units: int = 1) -> float:
        """Block until `units` may be spent; returns the seconds waited.

        More than `limit` units at once can never fit a window; they are counted as `limit`.
        """
        return acquire_together([(self, units)])

    def room(self, most: int, least: int) -> int:
        """Block until a spend of `most` units is due by the bucket's pace and the log has
        room for at least `least`; returns how many of `most` the log has room for then.
        Spends nothing: the request sized by it acquires as any other.

        The log frees a window's allowance in the lumps spent a window ago. A 25-unit
        batch that waits for 25 units of room while 24 are free (a 1-unit read left the
        window) leaves those 24 unused until the next lump leaves, and the same shortfall
        returns a window later: a batch sized to the room fills it instead."""
        most = max(1, min(most, self.limit))
        least = max(1, min(least, most))
        while True:
            with self._lock:
                now = self._refresh()
                free = self.limit - self._spent_total
                pause = max(self._bucket_pause(most), self._log_pause(least, now))
                if pause <= 0:
                    return min(most, free)
            self._sleep(max(pause, self._MIN_PAUSE))

    def _refresh(self) -> float:
        """Refill the bucket and drop what has left the log; returns now. Holds `_lock`."""
        now = self._clock()
        self._tokens = min(self.capacity, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now
        while self._spent and self._spent[0][0] + self.window + self.guard <= now:
            self._spent_total -= self._spent.popleft()[1]
        return now

    def _bucket_pause(self, units: int) -> float:
        needed = min(units, self.capacity)
        return max(needed - self._tokens, 0.0) / self.rate

    def _pause(self, units: int) -> tuple[float, float]:
        """(seconds until `units` may be spent, now); the caller holds `_lock`."""
        units = max(1, min(units, self.limit))
        now = self._refresh()
        return max(self._bucket_pause(units), self._log_pause(units, now)), now

    def _spend(self, units: int, now: float) -> None:
        """Spend `units` at `now`; the caller holds `_lock` and `_pause` said 0."""
        units = max(1, min(units, self.limit))
        self._tokens -= units
        self._spent.append((now, units))
        self._spent_total += units

    def _log_pause(self, units: int, now: float) -> float:
        """Seconds until enough of the log has left the window for `units` more to fit."""
        excess = self._spent_total + units - self.limit
        if excess <= 0:
            return 0.0
        for stamp, spent in self._spent:
            excess -= spent
            if excess <= 0:
                return stamp + self.window + self.guard - now
        return self.window + self.guard  # unreachable: units <= limit


def acquire_together(
    pacing: Sequence[tuple[RateLimiter, int]],
    before: Callable[[], None] | None = None,
    *,
    first: bool = False,
) -> float:
    """Block until every limiter allows its units at one instant, spend them all there;
    returns the seconds waited. `before` (the sync lock's check before a write) runs once
    they allow, before anything is spent; if it raises, nothing is.

    One after the other would stamp the first limiter's spend before the wait for the
    next (a batch waits for the batch limit after its items were stamped): the first
    limiter's log would then release that slot early, by up to that wait, and a server
    counting from the arrival answers 429. The same holds for `before`, which asks the
    state store. Here nothing is spent until all limiters allow after `before`, so each
    log holds the instant the request leaves.
    """
    limiters = sorted({id(limiter): limiter for limiter, _ in pacing}.values(), key=id)
    waited = 0.0
    checked = before is None
    if first:
        _count_first(limiters, 1)
    try:
        while True:
            for limiter in limiters:
                limiter._lock.acquire()
            try:
                pause = 0.0
                stamps: dict[int, float] = {}
                for limiter, units in pacing:
                    wait, stamps[id(limiter)] = limiter._pause(units)
                    pause = max(pause, wait)
                if pause <= 0 and not first and any(x._first_waiting for x in limiters):
                    pause = _YIELD_PAUSE  # a read is waiting: it goes first
                if pause <= 0 and checked:
                    for limiter, units in pacing:
                        limiter._spend(units, stamps[id(limiter)])
                    return waited
            finally:
                for limiter in reversed(limiters):
                    limiter._lock.release()
            if pause <= 0:  # allowed: check, then take the allowance if it is still there
                assert before is not None
                before()
                checked = True
                continue
            pause = max(pause, RateLimiter._MIN_PAUSE)
            min(limiters, key=id)._sleep(pause)
            waited += pause
            checked = before is None  # a long wait: check again once allowed
    finally:
        if first:
            _count_first(limiters, -1)


# How long a write steps aside for a waiting read before it asks again.
_YIELD_PAUSE = 0.002


def _count_first(limiters: Sequence[RateLimiter], step: int) -> None:
    for limiter in limiters:
        with limiter._lock:
            limiter._first_waiting += step


READ = "read"
WRITE = "write"


@dataclass
class RequestCounter:
    """Requests sent per service (reads and writes apart), and how many answers were
    throttled or retried."""

    sent: Counter[str] = field(default_factory=Counter)
    throttled: Counter[str] = field(default_factory=Counter)
    retried: Counter[str] = field(default_factory=Counter)
    kinds: Counter[tuple[str, str]] = field(default_factory=Counter)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def count(
        self,
        service: str,
        *,
        status: int | None,
        kind: str = READ,
        throttled: bool | None = None,
    ) -> None:
        """One attempt sent. `throttled` defaults to "the answer was a 429"."""
        if throttled is None:
            throttled = status == 429
        with self._lock:
            self.sent[service] += 1
            self.kinds[service, kind] += 1
            if throttled:
                self.throttled[service] += 1

    def retry(self, service: str) -> None:
        with self._lock:
            self.retried[service] += 1

    def snapshot(self) -> dict[str, int]:
        """Attempts sent per service, reads and writes together."""
        with self._lock:
            return dict(self.sent)

    def by_kind(self, service: str) -> dict[str, int]:
        """Attempts sent to `service` as `{"read": n, "write": m}` (retries included)."""
        with self._lock:
            return {READ: self.kinds[service, READ], WRITE: self.kinds[service, WRITE]}


Pacing = Sequence[tuple[RateLimiter, int]]

_ssl_context: Any = None
_ssl_context_lock = threading.Lock()


def shared_ssl_context() -> Any:
    """One verifying SSL context (httpx's defaults: certifi, or SSL_CERT_FILE/SSL_CERT_DIR)
    for every client of the process. Loading the CA bundle is most of what a run spends
    before it tries the lock (tens of milliseconds, more on a loaded host): a run that
    finds the lock held and exits 75 should not pay it once per client."""
    global _ssl_context
    with _ssl_context_lock:
        if _ssl_context is None:
            _ssl_context = httpx.create_ssl_context()
        return _ssl_context


class HttpTransport:
    """An httpx.Client wrapped in the retry, pacing and in-flight policy for one service."""

    def __init__(
        self,
        *,
        service: str,
        base_url: str,
        headers: Mapping[str, str] | None = None,
        policy: RetryPolicy | None = None,
        max_in_flight: int = 4,
        counter: RequestCounter | None = None,
        timeout: httpx.Timeout | float = DEFAULT_TIMEOUT,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.service = service
        self.policy = policy or RetryPolicy()
        self.counter = counter or RequestCounter()
        # Called right before each write attempt is sent, after any pacing or backoff wait:
        # a caller that may lose its right to write meanwhile (the sync lock) raises here.
        self.before_write: Callable[[], None] | None = None
        self._sleep = sleep
        self._in_flight = threading.BoundedSemaphore(max_in_flight)
        self.client = httpx.Client(
            base_url=base_url,
            headers=dict(headers or {}),
            timeout=timeout,
            transport=transport,
            limits=httpx.Limits(max_connections=max_in_flight + 2),
            verify=shared_ssl_context() if transport is None else True,
        )

    def close(self) -> None:
        self.client.close()

    def request(
        self,
        method: str,
        url: str,
        *,
        idempotent: bool,
        params: Mapping[str, Any] | None = None,
        content: bytes | str | None = None,
        headers: Mapping[str, str] | None = None,
        pacing: Pacing = (),
    ) -> httpx.Response:
        """Send with the policy; returns the final response (any status but the retried ones).

        Raises UpstreamError when retries are exhausted or the host is unreachable, and
        OutcomeUnknown when a non-idempotent request may have been applied.
        """
        kind = READ if idempotent else WRITE
        attempt = 0
        throttle_waited = 0.0
        while True:
            attempt += 1
            before = None if idempotent else self.before_write
            if pacing:
                # Reads first: in a run they are the next chunk's look-ups, which the
                # writer will wait for; a write that waits loses nothing.
                acquire_together(pacing, before, first=idempotent)
            elif before is not None:
                before()
            try:
                with self._in_flight:
                    response = self.client.request(
                        method, url, params=params, content=content, headers=headers
                    )
            except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
                # The request never reached the server: safe to try again, write or not.
                self.counter.count(self.service, status=None, kind=kind)
                self._give_up_or_wait(attempt, None, f"cannot connect ({type(exc).__name__})")
                continue
            except httpx.TransportError as exc:
                self.counter.count(self.service, status=None, kind=kind)
                reason = f"no answer ({type(exc).__name__})"
                if not idempotent:
                    raise OutcomeUnknown(
                        f"{self.service}: {method} {url}: {reason}; outcome unknown",
                        service=self.service,
                    ) from None
                self._give_up_or_wait(attempt, None, reason)
                continue
            status = response.status_code
            throttled = self.policy.throttled(response)
            self.counter.count(self.service, status=status, kind=kind, throttled=throttled)
            tid = response.headers.get("intuit_tid")
            if not throttled and status not in self.policy.retry_statuses:
                return response
            if not throttled and not idempotent:
                raise OutcomeUnknown(
                    f"{self.service}: {method} {url}: HTTP {status}; outcome unknown",
                    service=self.service,
                    status=status,
                    intuit_tid=tid,
                )
            retry_after = parse_retry_after(response.headers.get("Retry-After"))
            reason = f"HTTP {status}" + (" throttled" if throttled and status != 429 else "")
            waited = self._give_up_or_wait(
                attempt,
                retry_after,
                reason,
                status,
                tid,
                throttled=throttled,
                throttle_waited=throttle_waited,
            )
            if throttled:
                throttle_waited += waited

    def _give_up_or_wait(
        self,
        attempt: int,
        retry_after: float | None,
        reason: str,
        status: int | None = None,
        tid: str | None = None,
        *,
        throttled: bool = False,
        throttle_waited: float = 0.0,
    ) -> float:
        """Sleep as the policy says and return the seconds slept, or raise UpstreamError."""
        pause = self.policy.pause(
            attempt, retry_after, throttled=throttled, throttle_waited=throttle_waited
        )
        if pause is None:
            verb = "throttled" if throttled else "unreachable" if status is None else "failing"
            waited = f" ({throttle_waited:.1f}s of waits)" if throttled else ""
            raise UpstreamError(
                f"{self.service} {verb}: {reason} after {attempt} attempts{waited}",
                service=self.service,
                status=status,
                intuit_tid=tid,
            )
        log.info(
            "%s: %s; retry %d in %.2fs%s",
            self.service,
            reason,
            attempt,
            pause,
            f" intuit_tid={tid}" if tid else "",
        )
        self.counter.retry(self.service)
        self._sleep(pause)
        return pause


class ApiClient:
    """What both API clients share: a context manager around one HttpTransport, and the
    request count the run report reads."""

    _http: HttpTransport

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    @property
    def counter(self) -> RequestCounter:
        return self._http.counter

    @property
    def request_count(self) -> int:
        """Requests sent to this client's service so far (retries included)."""
        return self._http.counter.snapshot().get(self._http.service, 0)

    @property
    def requests_by_kind(self) -> dict[str, int]:
        """`request_count` split as `{"read": n, "write": m}`: QBO meters the reads."""
        return self._http.counter.by_kind(self._http.service)
