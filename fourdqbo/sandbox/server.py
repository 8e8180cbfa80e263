"""The `Sandbox`: 4D EMR, a QBO company and Intuit OAuth on one loopback server.

Mounts: 4D at `/4d/api/public`, QBO at `/qbo` (`/qbo/v3/company/{realm}/...`), OAuth at
`/oauth`. Around the simulators sits what the network and the gateways add:

- QBO's throttle (`QboLimits`): a sliding window of requests with batch items counted one
  by one, a separate window of batch requests, and a cap on requests in flight; over any
  of them: 429 (or 403, `ServiceKnobs.throttle_status`) with QBO's XML fault body whatever
  was asked for, sometimes with `Retry-After` and sometimes without (seeded).
- Knobs per service (`ServiceKnobs`), changeable while running: latency, a fault rate
  choosing among 429, 500, 503, a timeout (answer after `timeout_delay`, the write
  committed), a connection dropped before processing and "commit then drop" (the write is
  applied, the answer lost: the case that duplicates invoices in naive clients), scripted
  faults for the next requests, and "answer 401 to everything".
- A request log (`Sandbox.requests`) for tests and benchmarks.

Fault choices come from one seeded RNG so a run is reproducible (up to thread timing).
"""

from __future__ import annotations

import math
import os
import random
import sys
import threading
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from fourdqbo import jsonio
from fourdqbo.sandbox.base import LoopbackServer, SimClock, SimRequest, SimResponse
from fourdqbo.sandbox.fourd import FourDService, Practice
from fourdqbo.sandbox.oauth import OAuthService
from fourdqbo.sandbox.qbo import Company, QboService, batch_size
from fourdqbo.sandbox.seed import SeedFacts, SeedSpec, build
from fourdqbo.timefmt import iso_z

FOURD_MOUNT = "/4d/api/public"
QBO_MOUNT = "/qbo"
OAUTH_MOUNT = "/oauth"
DEFAULT_REALM = "9341453050371234"
FOURD_CLIENT_ID = "sandbox-4d-client"
FOURD_CLIENT_SECRET = "sandbox-4d-secret"
FOURD_SUBSCRIPTION_KEY = "sandbox-4d-subscription-key"
QBO_CLIENT_ID = "sandbox-qbo-client"
QBO_CLIENT_SECRET = "sandbox-qbo-secret"
FAULT_KINDS = ("429", "500", "503", "timeout", "drop", "commit_then_drop")
SERVICES = ("fourd", "qbo", "oauth")


@dataclass(frozen=True)
class QboLimits:
    """QBO's throttle per realm and app; a short `window_seconds` scales time down."""

    requests_per_window: int = 500
    batches_per_window: int = 40
    in_flight: int = 10
    window_seconds: float = 60.0


def _default_weights() -> dict[str, float]:
    return {kind: 1.0 for kind in FAULT_KINDS}


@dataclass
class ServiceKnobs:
    """What the network and gateway in front of one service do. Change them any time."""

    fault_rate: float = 0.0  # share of requests (0..1) that meet a random fault
    latency_ms: float = 0.0  # added before each request is processed
    fault_weights: dict[str, float] = field(default_factory=_default_weights)
    timeout_delay: float = 3.0  # seconds a "timeout" answer is held back
    retry_after_share: float = 0.5  # share of 429s that carry Retry-After
    unauthorized: bool = False  # answer 401 to everything (credentials revoked mid-run)
    # QBO only: the HTTP status of a throttled answer, 429, or 403 as older answers had it
    # (same XML body either way, its message saying statusCode=403).
    throttle_status: int = 429
    scripted: deque[tuple[str, bool]] = field(default_factory=deque)  # (kind, writes only)


@dataclass
class Knobs:
    fourd: ServiceKnobs = field(default_factory=ServiceKnobs)
    qbo: ServiceKnobs = field(default_factory=ServiceKnobs)
    oauth: ServiceKnobs = field(default_factory=ServiceKnobs)

    def of(self, service: str) -> ServiceKnobs:
        knobs: ServiceKnobs = getattr(self, service)
        return knobs


@dataclass(frozen=True)
class RequestRecord:
    """One request the sandbox received, and what became of it."""

    service: str  # "fourd" | "qbo" | "oauth"
    method: str
    path: str  # below the service's mount point
    query: Mapping[str, list[str]]
    status: int  # 0 when no answer was sent (dropped)
    outcome: str  # "ok" | "dropped" | "timeout" | "throttled" | "fault"
    at: datetime  # simulated time the request arrived
    batch_items: int = 0  # items of a QBO batch request
    fault: str | None = None  # the injected fault or throttle cause, if any
    body: Any = None  # parsed JSON body of a write, if any
    intuit_tid: str | None = None
    # simulated time the answer was ready to leave (after any latency added): the earliest
    # the client can know what it says
    answered: datetime | None = None

    @property
    def is_write(self) -> bool:
        """A POST that can change the company: a batch of only Query items is a read."""
        return changes_company(self.method, self.body)


def changes_company(method: str, body: Any) -> bool:
    """Whether a request (its parsed JSON body) can change the company: a POST, unless it
    is a batch of only Query items."""
    if method != "POST":
        return False
    items = body.get("BatchItemRequest") if isinstance(body, Mapping) else None
    if isinstance(items, list) and items:
        return not all(isinstance(i, Mapping) and "Query" in i for i in items)
    return True


def _only_queries(request: SimRequest) -> bool:
    try:
        body = jsonio.loads(request.body or b"")
    except (ValueError, UnicodeDecodeError):
        return False
    return not changes_company("POST", body)


class _Throttle:
    """QBO's limits: a sliding window of requests (batch items count one each), one of
    batch requests, and requests in flight."""

    def __init__(self, limits: QboLimits) -> None:
        self.limits = limits
        self._lock = threading.Lock()
        self._requests: deque[tuple[float, int]] = deque()
        self._request_total = 0
        self._batches: deque[float] = deque()
        self._in_flight = 0

    def enter(self) -> bool:
        with self._lock:
            if self._in_flight >= self.limits.in_flight:
                return False
            self._in_flight += 1
            return True

    def leave(self) -> None:
        with self._lock:
            self._in_flight -= 1

    def admit(self, units: int, is_batch: bool) -> tuple[str | None, float]:
        """(None, 0) when admitted; else (cause, seconds until there is room)."""
        now = time.monotonic()
        window = self.limits.window_seconds
        with self._lock:
            while self._requests and self._requests[0][0] <= now - window:
                self._request_total -= self._requests.popleft()[1]
            while self._batches and self._batches[0] <= now - window:
                self._batches.popleft()
            if self._request_total + units > self.limits.requests_per_window:
                wait = (self._requests[0][0] + window - now) if self._requests else window
                return "requests_per_window", max(wait, 0.0)
            if is_batch and len(self._batches) + 1 > self.limits.batches_per_window:
                return "batches_per_window", max(self._batches[0] + window - now, 0.0)
            self._requests.append((now, units))
            self._request_total += units
            if is_batch:
                self._batches.append(now)
            return None, 0.0


class _SandboxServer(LoopbackServer):
    def __init__(self, sandbox: Sandbox, port: int) -> None:
        self.sandbox = sandbox
        super().__init__(
            {FOURD_MOUNT: sandbox.fourd, QBO_MOUNT: sandbox.qbo, OAUTH_MOUNT: sandbox.oauth},
            port=port,
        )

        default_handle_error = self._server.handle_error

        def handle_error(request: Any, client_address: Any) -> None:
            # A client that gave up (timeout) closes its end before the late answer: quiet.
            error = sys.exc_info()[1]
            if not isinstance(error, ConnectionError):
                default_handle_error(request, client_address)

        self._server.handle_error = handle_error  # type: ignore[method-assign]

    def route(self, request: SimRequest) -> SimResponse:
        return self.sandbox._route(request)


class Sandbox:
    """4D EMR + QBO company + Intuit OAuth on one loopback port. A context manager."""

    def __init__(
        self,
        *,
        seed: int = 1,
        quotes: int = 40,
        port: int = 0,
        fault_rate: float = 0.0,
        latency_ms: float = 0.0,
        limits: QboLimits | None = None,
        realm_id: str = DEFAULT_REALM,
        patients: int | None = None,
        completed: int | None = None,
        preexisting: bool = True,
        timeout_delay: float = 3.0,
        throttle_status: int = 429,
        legacy_deleted_spelling: bool = False,
    ) -> None:
        self.seed = seed
        self.realm_id = realm_id
        self.limits = limits or QboLimits()
        self.clock = SimClock()
        self.knobs = Knobs(
            # 4D's gateway always says when to come back (API-NOTES.md); QBO only sometimes.
            fourd=ServiceKnobs(
                fault_rate=fault_rate,
                latency_ms=latency_ms,
                timeout_delay=timeout_delay,
                retry_after_share=1.0,
            ),
            qbo=ServiceKnobs(
                fault_rate=fault_rate,
                latency_ms=latency_ms,
                timeout_delay=timeout_delay,
                throttle_status=throttle_status,
            ),
            oauth=ServiceKnobs(timeout_delay=timeout_delay),
        )
        world = build(
            self.clock,
            seed=seed,
            spec=SeedSpec(
                quotes=quotes, patients=patients, completed=completed, preexisting=preexisting
            ),
            realm_id=realm_id,
        )
        self.practice: Practice = world.practice
        self.company: Company = world.company
        # Set after seeding: the seeded inactive customers keep " (deleted)", so a legacy
        # sandbox holds both spellings, as a company with old and new records does.
        self.company.settings.legacy_deleted_spelling = legacy_deleted_spelling
        self.facts: SeedFacts = world.facts
        self.oauth = OAuthService(
            self.clock, client_id=QBO_CLIENT_ID, client_secret=QBO_CLIENT_SECRET, realm_id=realm_id
        )
        self.fourd = FourDService(
            self.practice,
            client_id=FOURD_CLIENT_ID,
            client_secret=FOURD_CLIENT_SECRET,
            subscription_key=FOURD_SUBSCRIPTION_KEY,
        )
        self.qbo = QboService(
            self.company, check_access=self.oauth.check_access, rng=random.Random(seed + 1)
        )
        self._rng = random.Random(seed + 2)
        self._rng_lock = threading.Lock()
        self._throttle = _Throttle(self.limits)
        self._log: list[RequestRecord] = []
        self._log_lock = threading.Lock()
        self._throttled = 0
        self._server = _SandboxServer(self, port)
        self.url = self._server.url
        self.port = self._server.port
        self.fourd_base_url = self.url + FOURD_MOUNT
        self.qbo_api_base_url = self.url + QBO_MOUNT
        self.oauth_url = self.url + OAUTH_MOUNT
        self.discovery_url = self.oauth_url + "/.well-known/openid-configuration"
        self.oauth.public_url = self.oauth_url
        self._running = False

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> Sandbox:
        if not self._running:
            self._server.start()
            self._running = True
        return self

    def stop(self) -> None:
        if self._running:
            self._server.stop()
            self._running = False

    def __enter__(self) -> Sandbox:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- settings for fourdqbo -------------------------------------------------------------

    @property
    def initial_from(self) -> datetime:
        """A SYNC_INITIAL_FROM before every seeded quote's last change."""
        return self.practice.oldest_modified() - timedelta(days=1)

    def env(self, data_dir: Path) -> dict[str, str]:
        """Settings that point fourdqbo at this sandbox, with a freshly minted token file."""
        data_dir = Path(data_dir)
        data_dir.mkdir(parents=True, exist_ok=True)
        token_file = data_dir / "qbo_token.json"
        self.write_token_file(token_file)
        return {
            "FOURD_BASE_URL": self.fourd_base_url,
            "FOURD_CLIENT_ID": FOURD_CLIENT_ID,
            "FOURD_CLIENT_SECRET": FOURD_CLIENT_SECRET,
            "FOURD_SUBSCRIPTION_KEY": FOURD_SUBSCRIPTION_KEY,
            "QBO_CLIENT_ID": QBO_CLIENT_ID,
            "QBO_CLIENT_SECRET": QBO_CLIENT_SECRET,
            "QBO_ENVIRONMENT": "sandbox",
            "QBO_API_BASE_URL": self.qbo_api_base_url,
            "QBO_DISCOVERY_URL": self.discovery_url,
            "QBO_TOKEN_FILE": str(token_file),
            "DATA_DIR": str(data_dir),
            "QBO_MAX_REQUESTS_PER_MINUTE": str(self.limits.requests_per_window),
            "QBO_MAX_BATCHES_PER_MINUTE": str(self.limits.batches_per_window),
            "QBO_MAX_IN_FLIGHT": str(self.limits.in_flight),
            "QBO_RATE_WINDOW_SECONDS": _number_text(self.limits.window_seconds),
            "SYNC_INITIAL_FROM": iso_z(self.initial_from),
            "SYNC_TIMEZONE": "America/New_York",
        }

    def write_token_file(self, path: Path) -> dict[str, Any]:
        """Mint a token set and write it as fourdqbo's token store (0600, atomic)."""
        minted = self.oauth.mint()
        now = self.clock.now()

        def after(seconds: Any) -> str | None:
            if seconds is None:
                return None
            return (now + timedelta(seconds=float(seconds))).isoformat()

        record = {
            "access_token": minted["access_token"],
            "refresh_token": minted["refresh_token"],
            "realm_id": minted.get("realm_id", self.realm_id),
            "expires_at": after(minted.get("expires_in")),
            "refresh_expires_at": after(minted.get("x_refresh_token_expires_in")),
            "refresh_hard_expires_at": after(minted.get("x_refresh_token_hard_expires_in")),
        }
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(path.name + ".tmp")
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write(jsonio.dumps(record, indent=2))
        os.chmod(temporary, 0o600)
        os.replace(temporary, path)
        return record

    # -- inspection ------------------------------------------------------------------------

    @property
    def requests(self) -> list[RequestRecord]:
        with self._log_lock:
            return list(self._log)

    def clear_requests(self) -> None:
        with self._log_lock:
            self._log.clear()

    def requests_to(self, service: str) -> list[RequestRecord]:
        return [r for r in self.requests if r.service == service]

    @property
    def throttled_count(self) -> int:
        """How many throttled answers (429, or 403 in the legacy form) the sandbox has sent,
        from the throttle and injected."""
        return self._throttled

    def set_limits(self, limits: QboLimits) -> None:
        """Change QBO's throttle while running (the current window's counts are kept)."""
        self.limits = limits
        self._throttle.limits = limits

    def inject(self, service: str, kind: str, *, times: int = 1, writes_only: bool = False) -> None:
        """Make the next `times` requests to `service` (or its next writes) meet `kind`."""
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; one of {', '.join(FAULT_KINDS)}")
        knobs = self.knobs.of(service)
        for _ in range(times):
            knobs.scripted.append((kind, writes_only))

    # -- the wrapper around the simulators -------------------------------------------------

    def _route(self, request: SimRequest) -> SimResponse:
        service_name = _service_of(request.raw_path)
        if service_name is None:
            return LoopbackServer.route(self._server, request)
        knobs = self.knobs.of(service_name)
        arrived = self.clock.now()
        is_batch = service_name == "qbo" and request.raw_path.split("?")[0].endswith("/batch")
        # A fault scripted for "the next write" must not be spent on a batch of look-ups.
        is_write = request.method == "POST" and not (is_batch and _only_queries(request))
        items = batch_size(request) if is_batch else 0
        note: dict[str, Any] = {"batch_items": items}
        if service_name == "qbo" and not self._throttle.enter():
            response = self._throttled_response(service_name, knobs, 1.0)
            return self._record(
                request, service_name, arrived, response, "throttled", fault="in_flight", **note
            )
        try:
            if knobs.latency_ms > 0:
                time.sleep(knobs.latency_ms / 1000)
            if service_name == "qbo":
                cause, wait = self._throttle.admit(items or 1, is_batch)
                if cause is not None:
                    response = self._throttled_response(service_name, knobs, wait)
                    return self._record(
                        request, service_name, arrived, response, "throttled", fault=cause,
                        **note,
                    )  # fmt: skip
            kind = self._pick_fault(knobs, is_write)
            if kind == "429":
                response = self._throttled_response(service_name, knobs, 1.0)
                return self._record(
                    request, service_name, arrived, response, "throttled", fault="429", **note
                )
            if kind in ("500", "503"):
                response = _server_error(service_name, int(kind))
                if service_name == "qbo":
                    response.headers["intuit_tid"] = self.qbo.new_tid()
                return self._record(
                    request, service_name, arrived, response, "fault", fault=kind, **note
                )
            if kind == "drop":
                response = SimResponse(0, drop=True)
                return self._record(
                    request, service_name, arrived, response, "dropped", fault=kind, **note
                )
            if knobs.unauthorized:
                response = self._unauthorized(service_name, request)
            else:
                response = LoopbackServer.route(self._server, request)
            if kind == "commit_then_drop":
                self._record(
                    request, service_name, arrived, response, "dropped", fault=kind, **note
                )
                return SimResponse(response.status, drop=True)
            if kind == "timeout":
                # Logged first: the answer comes after the client has given up.
                self._record(
                    request, service_name, arrived, response, "timeout", fault=kind, **note
                )
                time.sleep(knobs.timeout_delay)
                return response
            return self._record(request, service_name, arrived, response, "ok", **note)
        finally:
            if service_name == "qbo":
                self._throttle.leave()

    def _pick_fault(self, knobs: ServiceKnobs, is_write: bool) -> str | None:
        with self._rng_lock:
            if knobs.scripted:
                kind, writes_only = knobs.scripted[0]
                if is_write or not writes_only:
                    knobs.scripted.popleft()
                    return kind
            if knobs.fault_rate <= 0 or self._rng.random() >= knobs.fault_rate:
                return None
            weights = {k: w for k, w in knobs.fault_weights.items() if k in FAULT_KINDS and w > 0}
            if not weights:
                return None
            kinds = sorted(weights)
            return self._rng.choices(kinds, weights=[weights[k] for k in kinds])[0]

    def _throttled_response(self, service: str, knobs: ServiceKnobs, wait: float) -> SimResponse:
        with self._rng_lock:
            self._throttled += 1
            with_retry_after = self._rng.random() < knobs.retry_after_share
        seconds = max(1, math.ceil(wait))
        headers: dict[str, str] = {}
        if with_retry_after:
            headers["Retry-After"] = str(seconds)
        if service != "qbo":
            # 4D's API gateway (Azure API Management style).
            body: dict[str, Any] = {
                "statusCode": 429,
                "message": f"Rate limit is exceeded. Try again in {seconds} seconds.",
            }
            return SimResponse(429, body, headers=headers)
        headers["intuit_tid"] = self.qbo.new_tid()
        status = knobs.throttle_status
        if status not in (429, 403):
            raise ValueError(f"throttle_status must be 429 or 403, not {status!r}")
        # XML whatever the client asked for: the gateway answers before QBO's API does.
        return SimResponse(
            status,
            throttle_xml(status, self.company.response_time()),
            headers=headers,
            content_type="application/xml",
        )

    def _unauthorized(self, service: str, request: SimRequest) -> SimResponse:
        if service == "fourd":
            return SimResponse(401, {"message": "Invalid client-id or client-secret"})
        if service == "qbo":
            token = (request.header("authorization") or "").partition(" ")[2].strip()
            response = self.qbo.authentication_failed(token)
            response.headers["intuit_tid"] = self.qbo.new_tid()
            return response
        return SimResponse(401, {"error": "invalid_client"})

    def _record(
        self,
        request: SimRequest,
        service: str,
        arrived: datetime,
        response: SimResponse,
        outcome: str,
        *,
        fault: str | None = None,
        batch_items: int = 0,
    ) -> SimResponse:
        body: Any = None
        if request.method == "POST" and request.body and service != "oauth":
            try:
                body = jsonio.loads(request.body)
            except (ValueError, UnicodeDecodeError):
                body = None
        record = RequestRecord(
            service=service,
            method=request.method,
            path=_below_mount(request),
            query={k: list(v) for k, v in request.query.items()},
            status=0 if outcome == "dropped" and fault == "drop" else response.status,
            outcome=outcome,
            at=arrived,
            batch_items=batch_items,
            fault=fault,
            body=body,
            intuit_tid=response.headers.get("intuit_tid"),
            answered=self.clock.now(),
        )
        with self._log_lock:
            self._log.append(record)
        return response


def throttle_xml(status: int, time_text: str) -> str:
    """The body of a throttled QBO answer, as recorded (two spaces before "Try")."""
    return (
        '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
        f'<IntuitResponse xmlns="http://schema.intuit.com/finance/v3" time="{time_text}">'
        '<Fault type="SERVICE"><Error code="3001">'
        f"<Message>message=ThrottleExceeded; errorCode=003001; statusCode={status}</Message>"
        "<Detail>The request limit was reached.  Try again later</Detail>"
        "</Error></Fault></IntuitResponse>"
    )


def _service_of(raw_path: str) -> str | None:
    path = raw_path.split("?", 1)[0]
    for mount, name in ((FOURD_MOUNT, "fourd"), (QBO_MOUNT, "qbo"), (OAUTH_MOUNT, "oauth")):
        if path == mount or path.startswith(mount + "/"):
            return name
    return None


def _below_mount(request: SimRequest) -> str:
    path = request.raw_path.split("?", 1)[0]
    for mount in (FOURD_MOUNT, QBO_MOUNT, OAUTH_MOUNT):
        if path == mount or path.startswith(mount + "/"):
            return path[len(mount) :].lstrip("/")
    return path


def _server_error(service: str, status: int) -> SimResponse:
    if status == 503:
        # Gateways answer 503 with an HTML page, not JSON.
        return SimResponse(
            503,
            "<html><body><h1>503 Service Unavailable</h1>"
            "No server is available to handle this request.</body></html>",
            content_type="text/html",
        )
    if service == "qbo":
        return SimResponse(
            500,
            {
                "Fault": {
                    "Error": [
                        {
                            "Message": "An application error has occurred while processing "
                            "your request",
                            "Detail": "System Failure Error: An unexpected error occurred",
                            "code": "10000",
                        }
                    ],
                    "type": "SystemFault",
                }
            },
        )
    return SimResponse(500, {"message": "An error has occurred."})


def _number_text(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)
