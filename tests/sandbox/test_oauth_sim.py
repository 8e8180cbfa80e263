"""The Intuit OAuth simulator, driven by intuit-oauth's AuthClient unchanged over loopback HTTP."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from intuitlib.client import AuthClient
from intuitlib.enums import Scopes
from intuitlib.exceptions import AuthClientError

from fourdqbo.sandbox.base import LoopbackServer, SimClock
from fourdqbo.sandbox.oauth import OAuthService

REDIRECT_URI = "http://localhost:8725/callback"


@dataclass
class OAuthSim:
    service: OAuthService
    clock: SimClock
    discovery_url: str

    def client(self, secret: str = "sim-secret") -> AuthClient:
        client = AuthClient("sim-client", secret, REDIRECT_URI, self.discovery_url)
        client.include_refresh_token_hard_expires_in = True
        return client

    def authorize(self, client: AuthClient, state: str = "state-123") -> dict[str, str]:
        url = client.get_authorization_url([Scopes.ACCOUNTING], state_token=state)
        answer = requests.get(url, allow_redirects=False, timeout=5)
        assert answer.status_code == 302
        location = answer.headers["Location"]
        assert location.startswith(REDIRECT_URI + "?")
        return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}


@pytest.fixture
def sim() -> Iterator[OAuthSim]:
    clock = SimClock()
    service = OAuthService(
        clock,
        client_id="sim-client",
        client_secret="sim-secret",
        realm_id="9130350",
        refresh_grace_seconds=3600,
    )
    with LoopbackServer({"/oauth": service}) as server:
        service.public_url = server.url + "/oauth"
        yield OAuthSim(service, clock, service.public_url + "/.well-known/openid-configuration")


def test_discovery_document_gives_absolute_endpoints(sim: OAuthSim) -> None:
    client = sim.client()
    base = sim.service.public_url
    assert client.auth_endpoint == f"{base}/authorize"
    assert client.token_endpoint == f"{base}/token"
    assert client.revoke_endpoint == f"{base}/revoke"
    assert client.user_info_url == f"{base}/userinfo"
    assert client.jwks_uri == f"{base}/jwks"
    assert client.issuer_uri == base


def test_discovery_without_public_url_is_derived_from_the_request() -> None:
    service = OAuthService(SimClock(), client_id="c", client_secret="s", realm_id="1")
    with LoopbackServer({"/oauth": service}) as server:
        client = AuthClient(
            "c", "s", REDIRECT_URI, server.url + "/oauth/.well-known/openid-configuration"
        )
        assert client.token_endpoint == server.url + "/oauth/token"


def test_authorize_redirects_with_code_state_and_realm(sim: OAuthSim) -> None:
    params = sim.authorize(sim.client(), state="xyz")
    assert params["state"] == "xyz"
    assert params["realmId"] == "9130350"
    assert params["code"]


def test_code_exchange_gives_tokens_and_hard_expiry_when_asked(sim: OAuthSim) -> None:
    client = sim.client()
    params = sim.authorize(client)
    client.get_bearer_token(params["code"], realm_id=params["realmId"])
    assert client.access_token and client.refresh_token
    assert client.expires_in == 3600
    assert client.x_refresh_token_expires_in == 100 * 86400
    assert client.x_refresh_token_hard_expires_in == 5 * 365 * 86400
    assert sim.service.check_access(client.access_token) == "ok"


def test_hard_expiry_is_only_sent_when_the_request_asks(sim: OAuthSim) -> None:
    client = sim.client()
    client.include_refresh_token_hard_expires_in = False
    params = sim.authorize(client)
    client.get_bearer_token(params["code"])
    assert client.x_refresh_token_hard_expires_in is None
    assert client.x_refresh_token_expires_in == 100 * 86400


def test_code_works_once(sim: OAuthSim) -> None:
    client = sim.client()
    code = sim.authorize(client)["code"]
    client.get_bearer_token(code)
    with pytest.raises(AuthClientError) as caught:
        sim.client().get_bearer_token(code)
    assert caught.value.status_code == 400
    assert b"invalid_grant" in caught.value.content
    assert caught.value.intuit_tid
    assert [e["ok"] for e in sim.service.token_requests] == [True, False]


def test_code_with_other_redirect_uri_is_refused(sim: OAuthSim) -> None:
    code = sim.authorize(sim.client())["code"]
    other = AuthClient("sim-client", "sim-secret", "http://localhost:9999/cb", sim.discovery_url)
    with pytest.raises(AuthClientError) as caught:
        other.get_bearer_token(code)
    assert b"invalid_grant" in caught.value.content


def test_wrong_client_secret_is_invalid_client(sim: OAuthSim) -> None:
    code = sim.authorize(sim.client())["code"]
    with pytest.raises(AuthClientError) as caught:
        sim.client(secret="wrong").get_bearer_token(code)
    assert caught.value.status_code == 401
    assert b"invalid_client" in caught.value.content


def test_refresh_rotates_and_old_token_works_only_during_grace(sim: OAuthSim) -> None:
    tokens = sim.service.mint()
    first = tokens["refresh_token"]
    client = sim.client()
    client.refresh(refresh_token=first)
    second = client.refresh_token
    assert second != first
    assert client.x_refresh_token_hard_expires_in is not None
    assert sim.service.refresh_token_state(first) == "grace"

    sim.clock.advance(1800)  # within the grace period: the old token still works
    again = sim.client()
    again.refresh(refresh_token=first)
    assert again.refresh_token not in (first, second)

    sim.clock.advance(1801)  # grace over
    late = sim.client()
    with pytest.raises(AuthClientError) as caught:
        late.refresh(refresh_token=first)
    assert b"invalid_grant" in caught.value.content
    late.refresh(refresh_token=second)  # the newer one is fine
    assert sim.service.token_grants("refresh_token", ok=True) == 3
    assert sim.service.token_grants("refresh_token", ok=False) == 1


def test_unknown_refresh_token_is_invalid_grant(sim: OAuthSim) -> None:
    with pytest.raises(AuthClientError) as caught:
        sim.client().refresh(refresh_token="AB11-not-issued")
    assert caught.value.status_code == 400
    assert b"invalid_grant" in caught.value.content


def test_access_token_expires_after_its_ttl(sim: OAuthSim) -> None:
    tokens = sim.service.mint()
    assert tokens["realm_id"] == "9130350"
    assert sim.service.check_access(tokens["access_token"]) == "ok"
    sim.clock.advance(3601)
    assert sim.service.check_access(tokens["access_token"]) == "expired"
    assert sim.service.check_access("nonsense") == "unknown"


def test_refresh_token_expires_after_100_days_unused(sim: OAuthSim) -> None:
    tokens = sim.service.mint()
    sim.clock.advance(100 * 86400 + 1)
    with pytest.raises(AuthClientError):
        sim.client().refresh(refresh_token=tokens["refresh_token"])


def test_revoke_invalidates_refresh_and_access_tokens(sim: OAuthSim) -> None:
    tokens = sim.service.mint()
    client = sim.client()
    assert client.revoke(token=tokens["refresh_token"]) is True
    assert sim.service.check_access(tokens["access_token"]) == "unknown"
    with pytest.raises(AuthClientError):
        sim.client().refresh(refresh_token=tokens["refresh_token"])
    with pytest.raises(AuthClientError) as caught:  # revoking twice: Intuit no longer knows it
        sim.client().revoke(token=tokens["refresh_token"])
    assert caught.value.status_code == 400


def test_revoke_checks_client_credentials(sim: OAuthSim) -> None:
    tokens = sim.service.mint()
    with pytest.raises(AuthClientError) as caught:
        sim.client(secret="wrong").revoke(token=tokens["refresh_token"])
    assert caught.value.status_code == 401
    assert sim.service.check_access(tokens["access_token"]) == "ok"


def test_token_endpoint_without_basic_auth_is_invalid_client(sim: OAuthSim) -> None:
    url = sim.service.public_url + "/token"
    answer = requests.post(
        url, data={"grant_type": "refresh_token", "refresh_token": "x"}, timeout=5
    )
    assert answer.status_code == 401
    assert answer.json() == {"error": "invalid_client"}
    basic = base64.b64encode(b"sim-client:sim-secret").decode()
    answer = requests.post(
        url, data={"grant_type": "password"}, headers={"Authorization": f"Basic {basic}"}, timeout=5
    )
    assert answer.status_code == 400
    assert answer.json() == {"error": "unsupported_grant_type"}


def test_userinfo_needs_a_valid_access_token(sim: OAuthSim) -> None:
    tokens = sim.service.mint()
    client = sim.client()
    assert client.get_user_info(access_token=tokens["access_token"]).status_code == 200
    with pytest.raises(AuthClientError):
        client.get_user_info(access_token="bogus")
