"""Authorisation flows: URL and state, the one-shot callback listener, exchange, revoke.

Intuit is the OAuth simulator on loopback; intuit-oauth runs against it unchanged. A
"browser" is a thread that follows the authorisation URL's redirect with requests.
"""

from __future__ import annotations

import socket
import stat
import threading
import webbrowser
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from fourdqbo.config import Settings
from fourdqbo.errors import AuthError, ConfigError, MalformedPayload, TokenMissing, UpstreamError
from fourdqbo.qbo import oauth
from fourdqbo.qbo.tokens import TokenStore
from fourdqbo.sandbox.base import LoopbackServer, SimClock, SimRequest, SimResponse
from fourdqbo.sandbox.oauth import OAuthService
from fourdqbo.timefmt import utcnow


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class Sim:
    service: OAuthService
    settings: Settings
    port: int
    env: dict[str, str]


@pytest.fixture
def sim(make_settings: Callable[..., Settings]) -> Iterator[Sim]:
    service = OAuthService(
        SimClock(), client_id="sim-client", client_secret="sim-secret", realm_id="9341452"
    )
    with LoopbackServer({"/oauth": service}) as server:
        service.public_url = server.url + "/oauth"
        port = free_port()
        env = {
            "QBO_CLIENT_ID": "sim-client",
            "QBO_CLIENT_SECRET": "sim-secret",
            "QBO_DISCOVERY_URL": service.public_url + "/.well-known/openid-configuration",
            "QBO_REDIRECT_URI": f"http://127.0.0.1:{port}/callback",
            "QBO_CALLBACK_PORT": str(port),
            "HTTP_TIMEOUT_SECONDS": "5",
        }
        yield Sim(service, make_settings(**env), port, env)


def browse(url: str) -> requests.Response:
    """What a browser does with the authorisation URL: follow Intuit's redirect home."""
    return requests.get(url, timeout=10)


def browse_later(url: str) -> threading.Thread:
    thread = threading.Thread(target=browse, args=(url,), daemon=True)
    thread.start()
    return thread


def intuit_redirect(url: str) -> str:
    """The address Intuit sends the browser to, without following it."""
    answer = requests.get(url, allow_redirects=False, timeout=10)
    assert answer.status_code == 302
    return answer.headers["Location"]


def test_authorization_url_carries_scope_redirect_and_a_random_state(sim: Sim) -> None:
    first = oauth.authorization_request(sim.settings)
    second = oauth.authorization_request(sim.settings)
    assert first.state != second.state
    assert len(first.state) >= 32
    parts = urlsplit(first.url)
    params = {k: v[0] for k, v in parse_qs(parts.query).items()}
    assert first.url.startswith(sim.service.public_url + "/authorize?")
    assert params == {
        "client_id": "sim-client",
        "response_type": "code",
        "scope": "com.intuit.quickbooks.accounting",
        "redirect_uri": sim.env["QBO_REDIRECT_URI"],
        "state": first.state,
    }


def test_listener_binds_loopback_by_default(sim: Sim) -> None:
    with oauth.CallbackListener("s", port=0) as listener:
        assert listener.address[0] == "127.0.0.1"
    with oauth.CallbackListener.from_settings(sim.settings, "s") as listener:
        assert listener.address == ("127.0.0.1", sim.port)
        assert listener.url == f"http://127.0.0.1:{sim.port}/callback"


def test_listener_answers_one_request_then_stops(sim: Sim) -> None:
    request = oauth.authorization_request(sim.settings)
    listener = oauth.CallbackListener.from_settings(sim.settings, request.state)
    pages: list[requests.Response] = []
    thread = threading.Thread(target=lambda: pages.append(browse(request.url)), daemon=True)
    thread.start()
    redirect = listener.wait(timeout=10)
    thread.join(5)
    assert redirect.realm_id == "9341452"
    assert redirect.state == request.state
    assert pages[0].status_code == 200
    assert "text/html" in pages[0].headers["Content-Type"]
    assert "close this tab" in pages[0].text
    with pytest.raises(requests.ConnectionError):  # nobody listens any more
        requests.get(f"http://127.0.0.1:{sim.port}/callback", timeout=2)


def test_listener_ignores_other_paths(sim: Sim) -> None:
    request = oauth.authorization_request(sim.settings)
    listener = oauth.CallbackListener.from_settings(sim.settings, request.state)
    statuses: list[int] = []

    def browser() -> None:
        statuses.append(
            requests.get(f"http://127.0.0.1:{sim.port}/favicon.ico", timeout=5).status_code
        )
        statuses.append(browse(request.url).status_code)

    thread = threading.Thread(target=browser, daemon=True)
    thread.start()
    assert listener.wait(timeout=10).realm_id == "9341452"
    thread.join(5)
    assert statuses == [404, 200]


def test_state_mismatch_is_refused_and_nothing_is_exchanged(sim: Sim) -> None:
    request = oauth.authorization_request(sim.settings)
    pages: list[requests.Response] = []
    thread = threading.Thread(target=lambda: pages.append(browse(request.url)), daemon=True)
    thread.start()
    with pytest.raises(AuthError, match="state does not match"):
        oauth.listen_and_exchange(sim.settings, "a-different-state", timeout=10)
    thread.join(5)
    assert pages[0].status_code == 400
    assert sim.service.token_requests == []
    assert not Path(sim.settings.qbo_token_file).exists()


def test_declined_authorisation_is_auth_error(sim: Sim) -> None:
    listener = oauth.CallbackListener("expected", port=0)
    host, port = listener.address
    thread = threading.Thread(
        target=requests.get,
        args=(f"http://{host}:{port}/callback?error=access_denied&state=expected",),
        kwargs={"timeout": 5},
        daemon=True,
    )
    thread.start()
    with pytest.raises(AuthError, match="access_denied"):
        listener.wait(timeout=10)
    thread.join(5)


def test_listener_times_out(sim: Sim) -> None:
    listener = oauth.CallbackListener("s", port=0)
    with pytest.raises(AuthError, match=r"within 0\.2 s"):
        listener.wait(timeout=0.2)


def test_busy_callback_port_is_config_error(sim: Sim) -> None:
    with oauth.CallbackListener("s", port=0) as first:
        port = first.address[1]
        with pytest.raises(ConfigError, match="QBO_CALLBACK_PORT"):
            oauth.CallbackListener("s", port=port)


def test_login_opens_the_browser_and_saves_the_token(
    sim: Sim, monkeypatch: pytest.MonkeyPatch
) -> None:
    opened: list[str] = []

    def fake_open(url: str) -> bool:
        opened.append(url)
        browse_later(url)
        return True

    monkeypatch.setattr(webbrowser, "open", fake_open)
    shown: list[str] = []
    token = oauth.login(sim.settings, announce=shown.append, timeout=10)
    assert shown == opened
    assert token.realm_id == "9341452"
    stored = TokenStore(sim.settings).load()
    assert stored == token
    assert sim.service.check_access(stored.access_token) == "ok"
    assert stored.refresh_hard_expires_at is not None
    assert sim.service.token_requests == [
        {"grant_type": "authorization_code", "ok": True, "error": None}
    ]
    assert not oauth.pending_path(sim.settings).exists()


def test_login_without_browser_does_not_open_one(sim: Sim, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(url: str) -> bool:
        raise AssertionError("no browser with open_browser=False")

    monkeypatch.setattr(webbrowser, "open", refuse)
    token = oauth.login(
        sim.settings, open_browser=False, announce=lambda url: browse_later(url), timeout=10
    )
    assert TokenStore(sim.settings).load().realm_id == token.realm_id


def test_a_code_is_exchanged_once(sim: Sim) -> None:
    request = oauth.authorization_request(sim.settings)
    redirect = oauth.parse_redirect(intuit_redirect(request.url))
    oauth.exchange_code(sim.settings, redirect)
    with pytest.raises(AuthError) as caught:
        oauth.exchange_code(sim.settings, redirect)
    assert "invalid_grant" in str(caught.value)
    assert redirect.code not in str(caught.value)
    assert [e["ok"] for e in sim.service.token_requests] == [True, False]


def test_exchange_redirect_checks_the_pending_state(sim: Sim) -> None:
    request = oauth.authorization_request(sim.settings)
    path = oauth.save_pending(sim.settings, request)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    location = intuit_redirect(request.url)

    forged = location.replace(f"state={request.state}", "state=forged")
    with pytest.raises(AuthError, match="state does not match"):
        oauth.exchange_redirect(sim.settings, forged)
    assert sim.service.token_requests == []

    token = oauth.exchange_redirect(sim.settings, location)
    assert token.realm_id == "9341452"
    assert not path.exists()  # one pending authorisation finishes one login


def test_pending_state_is_required_and_expires(sim: Sim) -> None:
    with pytest.raises(ConfigError, match="auth url"):
        oauth.load_pending(sim.settings)
    request = oauth.authorization_request(sim.settings)
    oauth.save_pending(sim.settings, request)
    assert oauth.load_pending(sim.settings).state == request.state
    with pytest.raises(ConfigError, match="more than an hour old"):
        oauth.load_pending(sim.settings, now=utcnow() + timedelta(hours=1, seconds=1))


@pytest.mark.parametrize(
    "pasted",
    [
        "http://localhost:8725/callback?code=C0DE&state=S7&realmId=123",
        "code=C0DE&state=S7&realmId=123",
        "  http://localhost:8725/callback?state=S7&realmId=123&code=C0DE\n",
    ],
)
def test_parse_redirect_accepts_url_or_query(pasted: str) -> None:
    redirect = oauth.parse_redirect(pasted)
    assert (redirect.code, redirect.state, redirect.realm_id) == ("C0DE", "S7", "123")


def test_parse_redirect_without_code_is_config_error() -> None:
    with pytest.raises(ConfigError, match="no code"):
        oauth.parse_redirect("http://localhost:8725/callback?state=S7&realmId=123")


def test_revoke_disconnects_and_removes_the_token_file(sim: Sim) -> None:
    request = oauth.authorization_request(sim.settings)
    token = oauth.exchange_code(sim.settings, oauth.parse_redirect(intuit_redirect(request.url)))
    assert oauth.revoke(sim.settings) is True
    assert sim.service.check_access(token.access_token) == "unknown"
    with pytest.raises(TokenMissing):
        TokenStore(sim.settings).load()


def test_revoke_of_a_token_intuit_forgot_still_removes_the_file(sim: Sim) -> None:
    request = oauth.authorization_request(sim.settings)
    token = oauth.exchange_code(sim.settings, oauth.parse_redirect(intuit_redirect(request.url)))
    oauth.auth_client(sim.settings).revoke(token=token.refresh_token)
    assert oauth.revoke(sim.settings) is False
    assert not TokenStore(sim.settings).exists()


def test_revoke_refused_for_bad_credentials_keeps_the_file(
    sim: Sim, make_settings: Callable[..., Settings]
) -> None:
    request = oauth.authorization_request(sim.settings)
    oauth.exchange_code(sim.settings, oauth.parse_redirect(intuit_redirect(request.url)))
    wrong = make_settings(**{**sim.env, "QBO_CLIENT_SECRET": "nope"})
    with pytest.raises(AuthError, match="invalid_client"):
        oauth.revoke(wrong)
    assert TokenStore(sim.settings).exists()


class Misbehaving:
    """Answers discovery with something unusable, or the token endpoint very slowly."""

    def __init__(self, service: OAuthService, mode: str) -> None:
        self.service, self.mode = service, mode

    def handle(self, request: SimRequest) -> SimResponse:
        if self.mode == "404" and request.path.startswith(".well-known"):
            return SimResponse(404, {"error": "nope"})
        if self.mode == "html" and request.path.startswith(".well-known"):
            return SimResponse(200, "<html>", content_type="text/html")
        if self.mode == "partial" and request.path.startswith(".well-known"):
            return SimResponse(200, {"issuer": "x"})
        response = self.service.handle(request)
        if self.mode == "slow" and request.path == "token":
            response.delay = 1.0
        return response


@pytest.mark.parametrize(
    ("mode", "error"),
    [("404", UpstreamError), ("html", MalformedPayload), ("partial", MalformedPayload)],
)
def test_unusable_discovery_document(
    sim: Sim, make_settings: Callable[..., Settings], mode: str, error: type[Exception]
) -> None:
    with LoopbackServer({"/oauth": Misbehaving(sim.service, mode)}) as server:
        settings = make_settings(
            **{
                **sim.env,
                "QBO_DISCOVERY_URL": server.url + "/oauth/.well-known/openid-configuration",
            }
        )
        with pytest.raises(error) as caught:
            oauth.auth_client(settings)
    assert caught.value.exit_code == 3  # type: ignore[attr-defined]


def test_token_endpoint_that_never_answers_is_upstream_error(
    sim: Sim, make_settings: Callable[..., Settings]
) -> None:
    slow = Misbehaving(sim.service, "slow")
    with LoopbackServer({"/oauth": slow}) as server:
        sim.service.public_url = server.url + "/oauth"
        settings = make_settings(
            **{
                **sim.env,
                "QBO_DISCOVERY_URL": sim.service.public_url + "/.well-known/openid-configuration",
                "HTTP_TIMEOUT_SECONDS": "0.3",
            }
        )
        redirect = oauth.parse_redirect(intuit_redirect(oauth.authorization_request(settings).url))
        with pytest.raises(UpstreamError, match="no answer in time"):
            oauth.exchange_code(settings, redirect)


def test_without_discovery_url_the_environment_name_is_used(
    make_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    built: list[tuple[object, ...]] = []

    class Recorder:
        include_refresh_token_hard_expires_in = False

        def __init__(self, *args: object) -> None:
            built.append(args)  # no network: intuit-oauth would fetch Intuit's discovery here

    monkeypatch.setattr(oauth, "_BoundedAuthClient", Recorder)
    settings = make_settings(QBO_DISCOVERY_URL="", QBO_ENVIRONMENT="sandbox")
    client = oauth.auth_client(settings)
    assert built[0][-1] == "sandbox"
    assert client.include_refresh_token_hard_expires_in is True


def test_malformed_discovery_url_is_config_error(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(QBO_DISCOVERY_URL="http://intuit.example/discovery")
    with pytest.raises(ConfigError, match="QBO_DISCOVERY_URL"):
        oauth.auth_client(settings)
