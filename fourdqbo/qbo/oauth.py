"""QBO authorisation on intuit-oauth: building the AuthClient, the authorisation URL with a
random `state`, the one-shot callback listener, the code exchange, refresh and revoke.

`auth_client` is the only place an `AuthClient` is constructed (it downloads the discovery
document, so it is built only when a token must be obtained, refreshed or revoked).
Every intuit-oauth failure is turned into a FourdqboError here, once: refusals become
`AuthError` (exit 3) telling the operator what to do, an unreachable host `UpstreamError`.

Login can run in one go (`login`: URL, browser, listener, exchange) or split for a server
without a browser: `auth url` saves the pending `state` under DATA_DIR (0600), and either
`auth callback` (the listener) or `auth exchange REDIRECTED_URL` (the address the browser
ended up at, pasted) finishes it. The `state` is checked before any code is exchanged, and
a code is exchanged exactly once (never retried: Intuit accepts it only once anyway).
"""

from __future__ import annotations

import contextlib
import html
import logging
import secrets
import socket
import socketserver
import time
import webbrowser
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import requests
from intuitlib.client import AuthClient
from intuitlib.enums import Scopes
from intuitlib.exceptions import AuthClientError

from fourdqbo import jsonio
from fourdqbo.config import Settings
from fourdqbo.errors import (
    AuthError,
    ConfigError,
    FourdqboError,
    MalformedPayload,
    UpstreamError,
)
from fourdqbo.log import register_sensitive
from fourdqbo.qbo.tokens import LOGIN_HINT, Token, TokenStore, write_private_file
from fourdqbo.timefmt import parse_instant, utcnow

log = logging.getLogger(__name__)

SCOPES = [Scopes.ACCOUNTING]  # com.intuit.quickbooks.accounting
CALLBACK_TIMEOUT_SECONDS = 300.0
PENDING_FILE_NAME = "qbo_auth_pending.json"
PENDING_TTL = timedelta(hours=1)  # an authorisation URL older than this is not finished
_GRANT_FIELDS = (
    "access_token",
    "refresh_token",
    "expires_in",
    "x_refresh_token_expires_in",
    "x_refresh_token_hard_expires_in",
)


@dataclass(frozen=True)
class AuthorizationRequest:
    """An authorisation URL and the `state` the redirect back must carry."""

    url: str
    state: str = field(repr=False)


@dataclass(frozen=True)
class Redirect:
    """What Intuit sent back to the redirect URI."""

    code: str = field(repr=False)
    state: str = field(repr=False)
    realm_id: str


# -- intuit-oauth -------------------------------------------------------------------------


class _BoundedAuthClient(AuthClient):
    """AuthClient whose HTTP calls time out (requests waits forever by default)."""

    def __init__(self, timeout: float, *args: Any, **kwargs: Any) -> None:
        self._timeout = timeout  # set first: the base constructor already makes a request
        super().__init__(*args, **kwargs)

    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("timeout", self._timeout)
        return super().request(method, url, *args, **kwargs)


def auth_client(settings: Settings) -> AuthClient:
    """An intuit-oauth AuthClient for the app, asking for the hard refresh-token expiry.

    Its environment is `settings.oauth_environment` (QBO_DISCOVERY_URL when set).
    """
    settings.require(
        "QBO_CLIENT_ID", "QBO_CLIENT_SECRET", "QBO_ENVIRONMENT", "HTTP_TIMEOUT_SECONDS"
    )
    if settings.qbo_discovery_url or "QBO_DISCOVERY_URL" in settings.problems:
        settings.require("QBO_DISCOVERY_URL")  # optional, but a malformed one is refused
    register_sensitive(settings.qbo_client_secret)
    environment = settings.oauth_environment
    try:
        client = _BoundedAuthClient(
            settings.http_timeout_seconds,
            settings.qbo_client_id,
            settings.qbo_client_secret,
            settings.qbo_redirect_uri,
            environment,
        )
    except AuthClientError as exc:
        raise UpstreamError(
            f"cannot read the Intuit OAuth discovery document for {environment!r} "
            f"(HTTP {exc.status_code}): check QBO_DISCOVERY_URL / QBO_ENVIRONMENT",
            service="oauth",
            status=exc.status_code,
            intuit_tid=exc.intuit_tid,
        ) from None
    except requests.exceptions.JSONDecodeError:
        raise MalformedPayload(
            f"the Intuit OAuth discovery document for {environment!r} is not JSON",
            service="oauth",
        ) from None
    except (KeyError, TypeError):
        raise MalformedPayload(
            f"the Intuit OAuth discovery document for {environment!r} lacks an endpoint",
            service="oauth",
        ) from None
    except requests.RequestException as exc:
        raise _unreachable(exc, environment, "reading the discovery document") from None
    client.include_refresh_token_hard_expires_in = True
    return client


@contextlib.contextmanager
def intuit_errors(action: str, *, invalid_grant: str) -> Iterator[None]:
    """Map intuit-oauth/requests failures of a token or revoke call to FourdqboErrors.

    `invalid_grant` is the sentence shown when Intuit answers `invalid_grant`.
    """
    try:
        yield
    except AuthClientError as exc:
        raise _refusal(exc, action, invalid_grant) from None
    except requests.exceptions.JSONDecodeError:
        raise MalformedPayload(
            f"Intuit OAuth answered with something that is not JSON while {action}",
            service="oauth",
        ) from None
    except requests.RequestException as exc:
        url = exc.request.url if exc.request is not None and exc.request.url else "Intuit OAuth"
        raise _unreachable(exc, str(url), action) from None


def _refusal(exc: AuthClientError, action: str, invalid_grant: str) -> UpstreamError:
    status = exc.status_code
    error = _error_code(exc.content)
    tid = f" (intuit_tid {exc.intuit_tid})" if exc.intuit_tid else ""
    details = {"service": "oauth", "status": status, "intuit_tid": exc.intuit_tid}
    if status == 429 or status >= 500:
        return UpstreamError(
            f"Intuit OAuth answered HTTP {status} while {action}; try again later{tid}", **details
        )
    if error == "invalid_client" or status == 401:
        return AuthError(
            f"Intuit refused the app's credentials (invalid_client) while {action}: "
            f"check QBO_CLIENT_ID and QBO_CLIENT_SECRET{tid}",
            **details,
        )
    if error == "invalid_grant":
        return AuthError(f"{invalid_grant}{tid}", **details)
    reason = f"HTTP {status}" + (f", {error}" if error else "")
    return AuthError(f"Intuit refused {action} ({reason}): {LOGIN_HINT}{tid}", **details)


def _unreachable(exc: requests.RequestException, where: str, action: str) -> UpstreamError:
    host = urlsplit(where).netloc or where
    if isinstance(exc, requests.Timeout):
        why = "no answer in time"
    elif isinstance(exc, requests.ConnectionError):
        why = "connection failed"
    else:
        why = type(exc).__name__
    return UpstreamError(
        f"cannot reach Intuit OAuth at {host} while {action} ({why})", service="oauth"
    )


def _error_code(content: bytes | None) -> str:
    try:
        document = jsonio.loads(content or b"")
    except (ValueError, UnicodeDecodeError):
        return ""
    error = document.get("error") if isinstance(document, dict) else None
    return error if isinstance(error, str) else ""


def grant_answer(client: AuthClient) -> dict[str, Any]:
    """The token fields intuit-oauth set on the client after a token call."""
    return {name: getattr(client, name, None) for name in _GRANT_FIELDS}


def refresh_grant(settings: Settings, refresh_token: str) -> dict[str, Any]:
    """One refresh at Intuit; the answer's token fields. The caller holds the token lock."""
    client = auth_client(settings)
    with intuit_errors(
        "refreshing the QBO token",
        invalid_grant="Intuit refused the stored refresh token (invalid_grant: expired, "
        f"revoked or replaced): {LOGIN_HINT}",
    ):
        client.refresh(refresh_token=refresh_token)
    answer = grant_answer(client)
    register_sensitive(answer["access_token"], answer["refresh_token"])
    return answer


def exchange_code(
    settings: Settings, redirect: Redirect, *, store: TokenStore | None = None
) -> Token:
    """Exchange the authorisation code (exactly once) and save the tokens with the realm."""
    register_sensitive(redirect.code)
    settings.require("QBO_REDIRECT_URI")  # must be the one the code was issued for
    client = auth_client(settings)
    with intuit_errors(
        "exchanging the authorisation code",
        invalid_grant="Intuit refused the authorisation code (invalid_grant: already used, "
        "expired or issued for another redirect URI): run `fourdqbo auth login` again",
    ):
        client.get_bearer_token(redirect.code, realm_id=redirect.realm_id)
    token = Token.from_grant(grant_answer(client), realm_id=redirect.realm_id, now=utcnow())
    (store or TokenStore(settings)).save(token)
    log.info("QBO authorised for realm %s", token.realm_id)
    return token


def revoke(settings: Settings, *, store: TokenStore | None = None) -> bool:
    """Revoke the stored refresh token at Intuit and delete the token file.

    Returns False when Intuit no longer knew the token (already revoked or expired); the
    file is removed then too, since it is useless. A refusal of the app's credentials or an
    unreachable host keeps the file.
    """
    store = store or TokenStore(settings)
    token = store.load()
    client = auth_client(settings)
    revoked = True
    try:
        with intuit_errors("revoking the QBO token", invalid_grant="Intuit refused the revoke"):
            client.revoke(token=token.refresh_token)
    except AuthError as exc:
        if exc.status != 400:
            raise
        revoked = False
    store.remove()
    log.info("QBO token for realm %s revoked and removed", token.realm_id)
    return revoked


# -- the authorisation URL and the pending state -------------------------------------------


def authorization_request(settings: Settings) -> AuthorizationRequest:
    """The URL the operator opens, with a fresh random `state`."""
    settings.require("QBO_REDIRECT_URI")
    state = secrets.token_urlsafe(24)
    client = auth_client(settings)
    return AuthorizationRequest(client.get_authorization_url(SCOPES, state_token=state), state)


def pending_path(settings: Settings) -> Path:
    return Path(settings.data_dir) / PENDING_FILE_NAME


def save_pending(settings: Settings, request: AuthorizationRequest) -> Path:
    """Remember the `state` of an authorisation URL so another command can finish the login."""
    path = pending_path(settings)
    document = {"state": request.state, "url": request.url, "created_at": utcnow().isoformat()}
    try:
        write_private_file(path, (jsonio.dumps(document, indent=2) + "\n").encode())
    except OSError as exc:
        raise ConfigError(f"cannot write {path} ({exc.strerror}): check DATA_DIR") from None
    return path


def load_pending(settings: Settings, *, now: datetime | None = None) -> AuthorizationRequest:
    """The pending authorisation saved by `auth url`/`auth login` (ConfigError if none)."""
    path = pending_path(settings)
    try:
        document = jsonio.loads(path.read_bytes())
    except FileNotFoundError:
        raise ConfigError(
            f"no pending QBO authorisation in {path.parent}: run `fourdqbo auth url` first"
        ) from None
    except (OSError, ValueError, UnicodeDecodeError):
        raise ConfigError(f"{path} is unreadable: run `fourdqbo auth url` again") from None
    try:
        state, url = document["state"], document["url"]
        created = parse_instant(document["created_at"])
        if not isinstance(state, str) or not state or not isinstance(url, str):
            raise ValueError
    except (KeyError, TypeError, ValueError):
        raise ConfigError(f"{path} is corrupt: run `fourdqbo auth url` again") from None
    if (now or utcnow()) - created > PENDING_TTL:
        raise ConfigError(
            "the pending QBO authorisation is more than an hour old: "
            "run `fourdqbo auth url` (or `fourdqbo auth login`) again"
        )
    return AuthorizationRequest(url, state)


def clear_pending(settings: Settings) -> None:
    with contextlib.suppress(FileNotFoundError):
        pending_path(settings).unlink()


# -- the redirect back ----------------------------------------------------------------------


def parse_redirect(url: str) -> Redirect:
    """Read `code`, `state` and `realmId` from the address Intuit redirected the browser to.

    Accepts the whole URL or just its query string. Intuit's `error=` (the user declined)
    becomes an AuthError; a URL without the three parameters a ConfigError.
    """
    text = url.strip()
    query = urlsplit(text).query if "?" in text else text
    params = {key: values[0] for key, values in parse_qs(query).items() if values}
    if "error" in params:
        reason = "".join(ch for ch in params["error"][:60] if ch.isalnum() or ch in "_-.")
        raise AuthError(f"Intuit did not authorise the app ({reason}); nothing was exchanged")
    missing = [name for name in ("code", "state", "realmId") if not params.get(name)]
    if missing:
        raise ConfigError(
            "the redirected URL has no " + ", ".join(missing) + ": paste the whole address "
            "the browser shows after you approve the app"
        )
    register_sensitive(params["code"])
    return Redirect(code=params["code"], state=params["state"], realm_id=params["realmId"])


def verify_state(redirect: Redirect, expected_state: str) -> None:
    """Refuse a redirect that does not belong to our authorisation request (CSRF)."""
    if not secrets.compare_digest(redirect.state.encode(), expected_state.encode()):
        raise AuthError(
            "the redirect's state does not match the pending authorisation, so nothing was "
            "exchanged: run `fourdqbo auth login` again"
        )


class CallbackListener:
    """A one-shot HTTP listener for the OAuth redirect, bound as soon as it is created.

    It answers requests to other paths with 404 (a browser may ask for /favicon.ico) and
    stops after the first request to `path`: a state mismatch or an Intuit error is
    answered with an error page and raised from `wait`; nothing is exchanged here.
    """

    def __init__(
        self,
        expected_state: str,
        *,
        host: str = "127.0.0.1",
        port: int = 8725,
        path: str = "/callback",
    ) -> None:
        self.expected_state = expected_state
        self.path = path
        self._outcome: Redirect | FourdqboError | None = None
        server_class = _CallbackServerV6 if ":" in host else _CallbackServer
        try:
            self._server = server_class((host, port), _callback_handler(self))
        except OSError as exc:
            raise ConfigError(
                f"cannot listen for the OAuth callback on {host}:{port} "
                f"({exc.strerror or exc}): free the port or set QBO_CALLBACK_PORT"
            ) from None

    @classmethod
    def from_settings(cls, settings: Settings, expected_state: str) -> CallbackListener:
        settings.require("QBO_CALLBACK_HOST", "QBO_CALLBACK_PORT", "QBO_CALLBACK_PATH")
        return cls(
            expected_state,
            host=settings.qbo_callback_host,
            port=settings.qbo_callback_port,
            path=settings.qbo_callback_path,
        )

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    @property
    def url(self) -> str:
        host, port = self.address
        shown = f"[{host}]" if ":" in host else host
        return f"http://{shown}:{port}{self.path}"

    def wait(self, timeout: float = CALLBACK_TIMEOUT_SECONDS) -> Redirect:
        """Serve until the callback request arrives (or `timeout` s pass), then close."""
        deadline = time.monotonic() + timeout
        try:
            while self._outcome is None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AuthError(
                        f"no authorisation arrived at {self.url} within {timeout:g} s; "
                        "nothing was exchanged"
                    )
                self._server.timeout = min(remaining, 1.0)
                self._server.handle_request()
        finally:
            self.close()
        if isinstance(self._outcome, FourdqboError):
            raise self._outcome
        return self._outcome

    def close(self) -> None:
        self._server.server_close()

    def __enter__(self) -> CallbackListener:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _receive(self, request_path: str) -> tuple[int, str]:
        """Judge the one callback request; the status and page for the browser."""
        try:
            redirect = parse_redirect(request_path)
            verify_state(redirect, self.expected_state)
        except FourdqboError as exc:
            self._outcome = exc
            return 400, _page(
                "Authorisation not accepted",
                "fourdqbo did not accept this authorisation and exchanged nothing. "
                "See the terminal for the reason.",
            )
        self._outcome = redirect
        return 200, _page(
            "QuickBooks authorisation received",
            "fourdqbo is finishing the login in the terminal. You can close this tab.",
        )


class _CallbackServer(socketserver.TCPServer):
    # Not http.server.HTTPServer: its bind does a reverse DNS lookup we have no use for.
    allow_reuse_address = True


class _CallbackServerV6(_CallbackServer):
    address_family = socket.AF_INET6


def _callback_handler(listener: CallbackListener) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        timeout = 10  # a connection that never sends its request does not block the wait

        def log_message(self, format: str, *args: Any) -> None:
            pass  # the query string holds the authorisation code: never log it

        def do_GET(self) -> None:
            if urlsplit(self.path).path != listener.path or listener._outcome is not None:
                self._answer(404, _page("Not found", "This is fourdqbo's OAuth callback."))
                return
            status, page = listener._receive(self.path)
            self._answer(status, page)

        def _answer(self, status: int, page: str) -> None:
            body = page.encode()
            self.send_response(status)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.send_header("Referrer-Policy", "no-referrer")
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(body)

    return Handler


def _page(title: str, text: str) -> str:
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title></head>"
        f"<body><h1>{html.escape(title)}</h1><p>{html.escape(text)}</p></body></html>"
    )


# -- the whole login ------------------------------------------------------------------------


def listen_and_exchange(
    settings: Settings, expected_state: str, *, timeout: float = CALLBACK_TIMEOUT_SECONDS
) -> Token:
    """`auth callback`: run the listener for a pending authorisation, then exchange."""
    with CallbackListener.from_settings(settings, expected_state) as listener:
        redirect = listener.wait(timeout)
    token = exchange_code(settings, redirect)
    clear_pending(settings)
    return token


def exchange_redirect(settings: Settings, redirected_url: str) -> Token:
    """`auth exchange`: check a pasted redirect URL against the pending state, then exchange."""
    pending = load_pending(settings)
    redirect = parse_redirect(redirected_url)
    verify_state(redirect, pending.state)
    token = exchange_code(settings, redirect)
    clear_pending(settings)
    return token


def login(
    settings: Settings,
    *,
    open_browser: bool = True,
    announce: Callable[[str], None] = print,
    timeout: float = CALLBACK_TIMEOUT_SECONDS,
) -> Token:
    """URL with a random state, browser, one-shot listener, exchange, save.

    The listener is bound before the URL is shown, so the redirect cannot beat it. The
    pending state is saved too, so `auth exchange` can still finish this login if the
    browser ends up on another machine.
    """
    request = authorization_request(settings)
    with CallbackListener.from_settings(settings, request.state) as listener:
        save_pending(settings, request)
        announce(request.url)
        if open_browser:
            with contextlib.suppress(webbrowser.Error):
                webbrowser.open(request.url)
        redirect = listener.wait(timeout)
    token = exchange_code(settings, redirect)
    clear_pending(settings)
    return token
