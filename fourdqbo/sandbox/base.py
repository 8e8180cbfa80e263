"""The plumbing every simulator shares: request/response values, a simulated clock, and a
threaded loopback HTTP server that routes by path prefix to the simulated services.

A service is any object with `handle(SimRequest) -> SimResponse`; it sees the path *below*
its mount point (for 4D mounted at `/4d/api/public`, `GET /4d/api/public/quotes/list` is
`quotes/list`). Fault injection, latency and throttling wrap services in `server.py`.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol
from urllib.parse import parse_qs, urlsplit

from fourdqbo import jsonio


@dataclass
class SimRequest:
    method: str
    path: str  # below the service's mount point, no leading slash
    query: dict[str, list[str]]
    headers: dict[str, str]  # names lower-cased
    body: bytes = b""
    raw_path: str = ""  # the full path and query as received

    def param(self, name: str) -> str | None:
        values = self.query.get(name)
        return values[0] if values else None

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())

    def json(self) -> Any:
        return jsonio.loads(self.body or b"null")


@dataclass
class SimResponse:
    status: int = 200
    body: Any = None  # JSON-able value, or bytes/str sent as is
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = "application/json"
    # Transport-level misbehaviour, for fault injection:
    drop: bool = False  # close the connection without answering
    delay: float = 0.0  # seconds to wait before answering (a timeout when long enough)

    def encoded(self) -> bytes:
        if self.body is None:
            return b""
        if isinstance(self.body, bytes):
            return self.body
        if isinstance(self.body, str) and self.content_type != "application/json":
            return self.body.encode()
        return jsonio.dumps(self.body).encode()


class Service(Protocol):
    def handle(self, request: SimRequest) -> SimResponse: ...


class SimClock:
    """Wall-clock time plus an offset tests can advance (for token expiry, quote changes)."""

    def __init__(self) -> None:
        self._offset = timedelta()
        self._lock = threading.Lock()

    def now(self) -> datetime:
        with self._lock:
            return datetime.now(UTC) + self._offset

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._offset += timedelta(seconds=seconds)


class LoopbackServer:
    """A threaded HTTP server on 127.0.0.1 that routes path prefixes to services.

    `mounts` maps a prefix such as "/4d/api/public" to a service. Use as a context manager
    or call `start()`/`stop()`. `port=0` picks a free port.
    """

    def __init__(self, mounts: Mapping[str, Service], host: str = "127.0.0.1", port: int = 0):
        self.mounts = dict(sorted(mounts.items(), key=lambda kv: -len(kv[0])))
        self._server = ThreadingHTTPServer((host, port), _make_handler(self))
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> LoopbackServer:
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> LoopbackServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def route(self, request: SimRequest) -> SimResponse:
        """Find the service for a request; overridable to wrap faults and limits."""
        for prefix, service in self.mounts.items():
            if request.raw_path == prefix or request.raw_path.startswith(prefix + "/"):
                request.path = urlsplit(request.raw_path).path[len(prefix) :].lstrip("/")
                return service.handle(request)
        return SimResponse(404, {"error": "no such service"})


def _make_handler(owner: LoopbackServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # Headers and body go out as two writes; with Nagle on, the client's delayed ACK
        # adds ~40 ms to every answer, which would dominate benchmarks and slow tests.
        disable_nagle_algorithm = True

        def log_message(self, format: str, *args: Any) -> None:
            pass  # the simulators keep their own request log

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            parts = urlsplit(self.path)
            request = SimRequest(
                method=self.command,
                path=parts.path,
                query=parse_qs(parts.query, keep_blank_values=True),
                headers={k.lower(): v for k, v in self.headers.items()},
                body=body,
                raw_path=self.path,
            )
            try:
                response = owner.route(request)
            except Exception as exc:  # a simulator bug must show up as a 500, not a hang
                response = SimResponse(500, {"error": f"sandbox error: {exc!r}"})
            if response.delay:
                time.sleep(response.delay)
            if response.drop:
                self.close_connection = True
                with contextlib.suppress(OSError):
                    self.connection.shutdown(2)
                return
            payload = response.encoded()
            self.send_response(response.status)
            self.send_header("Content-Type", response.content_type)
            self.send_header("Content-Length", str(len(payload)))
            for name, value in response.headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = do_PUT = do_DELETE = _serve

    return Handler
