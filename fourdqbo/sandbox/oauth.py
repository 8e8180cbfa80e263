"""Simulated Intuit OAuth 2.0 server: discovery, authorize, token, revoke, userinfo, jwks.

Speaks exactly what intuit-oauth's `AuthClient` sends and expects, so the real library runs
against it unchanged when given `{public_url}/.well-known/openid-configuration` as its
`environment`: token and revoke calls carry HTTP Basic client credentials; the token call
is a form post (`grant_type=authorization_code|refresh_token`), the revoke call a JSON body
`{"token": ...}`; the hard refresh-token expiry is only answered when the request carries
`x-include-refresh-token-hard-expires-in: true`.

Behaviour follows API-NOTES.md: an authorization code works once; every refresh returns a
NEW refresh token and the one it replaces keeps working for `refresh_grace_seconds` of the
SimClock, then answers `invalid_grant`; refresh tokens expire `refresh_ttl` after they were
issued and never outlive the grant's hard expiry. Time is the SimClock's, so tests expire
tokens with `clock.advance()`.
"""

from __future__ import annotations

import base64
import binascii
import secrets
import threading
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

from fourdqbo import jsonio
from fourdqbo.sandbox.base import SimClock, SimRequest, SimResponse

HARD_EXPIRY_HEADER = "x-include-refresh-token-hard-expires-in"
CODE_TTL_SECONDS = 600  # Intuit's authorization codes are short-lived too
SCOPE_ACCOUNTING = "com.intuit.quickbooks.accounting"


@dataclass
class _Grant:
    """One authorisation of the app by the company: every token descends from it."""

    grant_id: str
    hard_expires_at: datetime
    revoked: bool = False


@dataclass
class _RefreshToken:
    grant: _Grant
    expires_at: datetime
    superseded_at: datetime | None = None  # when a refresh replaced it (grace starts)


@dataclass
class _AccessToken:
    grant: _Grant
    expires_at: datetime


@dataclass
class _Code:
    redirect_uri: str
    expires_at: datetime
    used: bool = False


@dataclass
class OAuthService:
    """The Intuit OAuth endpoints for one app (client id/secret) and one company (realm)."""

    clock: SimClock
    client_id: str
    client_secret: str
    realm_id: str
    access_ttl: int = 3600
    refresh_ttl: int = 100 * 86400
    refresh_grace_seconds: int = 86400
    hard_ttl: int = 5 * 365 * 86400
    # Absolute URL of the mount point; set by whoever serves the service once the port is
    # known. When empty, it is derived from the request's Host header and path.
    public_url: str = ""
    # One entry per token-endpoint call, for tests: {"grant_type", "ok", "error"}.
    token_requests: list[dict[str, Any]] = field(default_factory=list)
    # One entry per revoke call: {"ok", "error"}.
    revoke_requests: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._codes: dict[str, _Code] = {}
        self._refresh: dict[str, _RefreshToken] = {}
        self._access: dict[str, _AccessToken] = {}

    # -- for tests and the other simulators -------------------------------------------------

    def mint(self) -> dict[str, Any]:
        """A fresh token set for a new grant, without the browser dance."""
        with self._lock:
            grant = self._new_grant()
            answer = self._issue(grant, hard_expiry=True)
        return {**answer, "realm_id": self.realm_id}

    def check_access(self, token: str) -> str:
        """What the QBO simulator asks about a bearer token: "ok", "expired" or "unknown"."""
        with self._lock:
            record = self._access.get(token)
            if record is None or record.grant.revoked:
                return "unknown"
            return "ok" if self.clock.now() < record.expires_at else "expired"

    def refresh_token_state(self, token: str) -> str:
        """For tests: "ok", "grace" (replaced, still accepted), "expired", "revoked", "unknown"."""
        with self._lock:
            record = self._refresh.get(token)
            if record is None:
                return "unknown"
            return self._refresh_problem(record) or (
                "grace" if record.superseded_at is not None else "ok"
            )

    def token_grants(self, grant_type: str | None = None, *, ok: bool | None = None) -> int:
        """How many token-endpoint calls there were (of a grant type, succeeded or not)."""
        return sum(
            1
            for entry in self.token_requests
            if (grant_type is None or entry["grant_type"] == grant_type)
            and (ok is None or entry["ok"] == ok)
        )

    # -- HTTP -------------------------------------------------------------------------------

    def handle(self, request: SimRequest) -> SimResponse:
        path = request.path.strip("/")
        if path in (".well-known/openid-configuration", ".well-known/openid_configuration"):
            return self._discovery(request)
        if path == "authorize":
            return self._authorize(request)
        if path == "token":
            return self._with_tid(self._token(request))
        if path == "revoke":
            return self._with_tid(self._revoke(request))
        if path == "userinfo":
            return self._with_tid(self._userinfo(request))
        if path == "jwks":
            return SimResponse(200, {"keys": []})
        return SimResponse(404, {"error": "not_found"})

    def base_url(self, request: SimRequest | None = None) -> str:
        if self.public_url or request is None:
            return self.public_url.rstrip("/")
        full_path = urlsplit(request.raw_path).path
        mount = full_path[: len(full_path) - len(request.path)].rstrip("/")
        host = request.header("host") or "127.0.0.1"
        return f"http://{host}{mount}"

    def _discovery(self, request: SimRequest) -> SimResponse:
        base = self.base_url(request)
        return SimResponse(
            200,
            {
                "issuer": base,
                "authorization_endpoint": f"{base}/authorize",
                "token_endpoint": f"{base}/token",
                "revocation_endpoint": f"{base}/revoke",
                "userinfo_endpoint": f"{base}/userinfo",
                "jwks_uri": f"{base}/jwks",
                "response_types_supported": ["code"],
                "grant_types_supported": ["authorization_code", "refresh_token"],
                "scopes_supported": [SCOPE_ACCOUNTING, "openid", "profile", "email"],
                "token_endpoint_auth_methods_supported": ["client_secret_basic"],
            },
        )

    def _authorize(self, request: SimRequest) -> SimResponse:
        """The consent screen, approved at once: 302 back to the app with code and realmId."""
        client_id = request.param("client_id")
        redirect_uri = request.param("redirect_uri") or ""
        if client_id != self.client_id:
            return SimResponse(400, "unknown client_id", content_type="text/plain")
        parts = urlsplit(redirect_uri)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            return SimResponse(400, "invalid redirect_uri", content_type="text/plain")
        params: dict[str, str] = {}
        state = request.param("state")
        if request.param("response_type") != "code":
            params["error"] = "unsupported_response_type"
        elif SCOPE_ACCOUNTING not in (request.param("scope") or "").split():
            params["error"] = "invalid_scope"
        else:
            code = "AB" + secrets.token_urlsafe(24)
            with self._lock:
                self._codes[code] = _Code(
                    redirect_uri=redirect_uri,
                    expires_at=self.clock.now() + timedelta(seconds=CODE_TTL_SECONDS),
                )
            params["code"] = code
            params["realmId"] = self.realm_id
        if state is not None:
            params["state"] = state
        query = "&".join(q for q in (parts.query, urlencode(params)) if q)
        location = urlunsplit((parts.scheme, parts.netloc, parts.path, query, ""))
        return SimResponse(302, b"", headers={"Location": location}, content_type="text/plain")

    def _token(self, request: SimRequest) -> SimResponse:
        form = _form(request.body)
        grant_type = form.get("grant_type", "")
        if not self._client_ok(request):
            return self._token_error(grant_type, 401, "invalid_client")
        if request.method != "POST":
            return self._token_error(grant_type, 405, "invalid_request")
        want_hard = (request.header(HARD_EXPIRY_HEADER) or "").strip().lower() == "true"
        with self._lock:
            if grant_type == "authorization_code":
                error, answer = self._grant_code(form, want_hard)
            elif grant_type == "refresh_token":
                error, answer = self._grant_refresh(form, want_hard)
            else:
                error, answer = "unsupported_grant_type", None
            self.token_requests.append(
                {"grant_type": grant_type, "ok": error is None, "error": error}
            )
        if error is not None:
            return SimResponse(400, {"error": error})
        return SimResponse(200, answer, headers={"Cache-Control": "no-store"})

    def _token_error(self, grant_type: str, status: int, error: str) -> SimResponse:
        with self._lock:
            self.token_requests.append({"grant_type": grant_type, "ok": False, "error": error})
        return SimResponse(status, {"error": error})

    def _grant_code(
        self, form: dict[str, str], want_hard: bool
    ) -> tuple[str | None, dict[str, Any] | None]:
        code = self._codes.get(form.get("code", ""))
        if code is None or code.used or self.clock.now() >= code.expires_at:
            return "invalid_grant", None
        code.used = True  # spent even if the redirect_uri is wrong: a code is tried once
        if form.get("redirect_uri") != code.redirect_uri:
            return "invalid_grant", None
        return None, self._issue(self._new_grant(), hard_expiry=want_hard)

    def _grant_refresh(
        self, form: dict[str, str], want_hard: bool
    ) -> tuple[str | None, dict[str, Any] | None]:
        record = self._refresh.get(form.get("refresh_token", ""))
        if record is None or self._refresh_problem(record):
            return "invalid_grant", None
        if record.superseded_at is None:
            record.superseded_at = self.clock.now()
        return None, self._issue(record.grant, hard_expiry=want_hard)

    def _refresh_problem(self, record: _RefreshToken) -> str | None:
        now = self.clock.now()
        if record.grant.revoked:
            return "revoked"
        if now >= record.expires_at or now >= record.grant.hard_expires_at:
            return "expired"
        if record.superseded_at is not None and now >= record.superseded_at + timedelta(
            seconds=self.refresh_grace_seconds
        ):
            return "expired"
        return None

    def _revoke(self, request: SimRequest) -> SimResponse:
        if not self._client_ok(request):
            with self._lock:
                self.revoke_requests.append({"ok": False, "error": "invalid_client"})
            return SimResponse(401, {"error": "invalid_client"})
        try:
            body = jsonio.loads(request.body or b"{}")
        except ValueError:
            body = None
        token = body.get("token") if isinstance(body, dict) else None
        if not isinstance(token, str) or not token:
            with self._lock:
                self.revoke_requests.append({"ok": False, "error": "invalid_request"})
            return SimResponse(400, {"error": "invalid_request"})
        with self._lock:
            record = self._refresh.get(token) or self._access.get(token)
            if record is None or record.grant.revoked:
                # Intuit refuses to revoke a token it does not know (any more).
                self.revoke_requests.append({"ok": False, "error": "invalid_token"})
                return SimResponse(400, {"error": "invalid_token"})
            # Revoking disconnects the app: every token of the grant stops working.
            record.grant.revoked = True
            self.revoke_requests.append({"ok": True, "error": None})
        return SimResponse(200, b"", content_type="text/plain")

    def _userinfo(self, request: SimRequest) -> SimResponse:
        header = request.header("authorization") or ""
        token = header[7:] if header.lower().startswith("bearer ") else ""
        if self.check_access(token) != "ok":
            return SimResponse(401, {"error": "invalid_token"})
        return SimResponse(200, {"sub": self.realm_id, "email": "owner@example.test"})

    # -- internals --------------------------------------------------------------------------

    def _client_ok(self, request: SimRequest) -> bool:
        header = request.header("authorization") or ""
        if not header.lower().startswith("basic "):
            return False
        try:
            decoded = base64.b64decode(header[6:].strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return False
        client_id, _, client_secret = decoded.partition(":")
        return secrets.compare_digest(client_id, self.client_id) and secrets.compare_digest(
            client_secret, self.client_secret
        )

    def _new_grant(self) -> _Grant:
        return _Grant(
            grant_id=uuid.uuid4().hex,
            hard_expires_at=self.clock.now() + timedelta(seconds=self.hard_ttl),
        )

    def _issue(self, grant: _Grant, *, hard_expiry: bool) -> dict[str, Any]:
        """New access and refresh tokens for a grant (caller holds the lock)."""
        now = self.clock.now()
        hard_left = max(0, round((grant.hard_expires_at - now).total_seconds()))
        refresh_left = min(self.refresh_ttl, hard_left)
        access_token = "eyJ" + secrets.token_urlsafe(40)
        refresh_token = "AB11" + secrets.token_urlsafe(32)
        self._access[access_token] = _AccessToken(grant, now + timedelta(seconds=self.access_ttl))
        self._refresh[refresh_token] = _RefreshToken(grant, now + timedelta(seconds=refresh_left))
        answer: dict[str, Any] = {
            "access_token": access_token,
            "refresh_token": refresh_token,
            "token_type": "bearer",
            "expires_in": self.access_ttl,
            "x_refresh_token_expires_in": refresh_left,
        }
        if hard_expiry:
            answer["x_refresh_token_hard_expires_in"] = hard_left
        return answer

    @staticmethod
    def _with_tid(response: SimResponse) -> SimResponse:
        response.headers.setdefault("intuit_tid", uuid.uuid4().hex[:24])
        return response


def _form(body: bytes) -> dict[str, str]:
    try:
        parsed = parse_qs(body.decode(), keep_blank_values=True)
    except UnicodeDecodeError:
        return {}
    return {key: values[0] for key, values in parsed.items() if values}
