"""The token store: file format and permissions, atomic replace, refresh policy and locking.

Refreshes go to the Intuit OAuth simulator over loopback HTTP through intuit-oauth unchanged.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import stat
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from fourdqbo.config import Settings
from fourdqbo.errors import (
    AuthError,
    ConfigError,
    LockHeld,
    TokenMissing,
    UpstreamError,
)
from fourdqbo.log import REDACTED, redact
from fourdqbo.qbo import oauth
from fourdqbo.qbo.tokens import Token, TokenStore
from fourdqbo.sandbox.base import LoopbackServer, SimClock, SimRequest, SimResponse
from fourdqbo.sandbox.oauth import OAuthService

REPO = Path(__file__).resolve().parents[2]


class SlowTokens:
    """Delays token answers so that concurrent refreshers really overlap."""

    def __init__(self, service: OAuthService, delay: float = 0.0) -> None:
        self.service = service
        self.delay = delay

    def handle(self, request: SimRequest) -> SimResponse:
        response = self.service.handle(request)
        if request.path == "token":
            response.delay = self.delay
        return response


@dataclass
class Sim:
    service: OAuthService
    front: SlowTokens
    env: dict[str, str]
    settings: Settings

    def refreshes(self) -> int:
        return self.service.token_grants("refresh_token")


@pytest.fixture
def sim(make_settings: Callable[..., Settings]) -> Iterator[Sim]:
    service = OAuthService(
        SimClock(), client_id="sim-client", client_secret="sim-secret", realm_id="4620816365"
    )
    front = SlowTokens(service)
    with LoopbackServer({"/oauth": front}) as server:
        service.public_url = server.url + "/oauth"
        env = {
            "QBO_CLIENT_ID": "sim-client",
            "QBO_CLIENT_SECRET": "sim-secret",
            "QBO_DISCOVERY_URL": service.public_url + "/.well-known/openid-configuration",
            "HTTP_TIMEOUT_SECONDS": "5",
        }
        yield Sim(service, front, env, make_settings(**env))


def minted(sim: Sim, *, expires_in: timedelta, now: datetime | None = None) -> Token:
    """A token set the simulator knows, stored as if it expires in `expires_in`."""
    answer = sim.service.mint()
    now = now or datetime.now(UTC)
    token = Token.from_grant(answer, realm_id=answer["realm_id"], now=now)
    token = Token(
        access_token=token.access_token,
        refresh_token=token.refresh_token,
        realm_id=token.realm_id,
        expires_at=now + expires_in,
        refresh_expires_at=token.refresh_expires_at,
        refresh_hard_expires_at=token.refresh_hard_expires_at,
    )
    TokenStore(sim.settings).save(token)
    return token


def file_mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_save_writes_the_documented_format_with_mode_0600(sim: Sim) -> None:
    token = minted(sim, expires_in=timedelta(hours=1))
    path = Path(sim.settings.qbo_token_file)
    assert file_mode(path) == 0o600
    document = json.loads(path.read_text())
    assert set(document) == {
        "access_token",
        "refresh_token",
        "realm_id",
        "expires_at",
        "refresh_expires_at",
        "refresh_hard_expires_at",
    }
    assert document["realm_id"] == "4620816365"
    for name in ("expires_at", "refresh_expires_at", "refresh_hard_expires_at"):
        assert document[name].endswith("+00:00")  # ISO 8601 with an offset
    assert TokenStore(sim.settings).load() == token


def test_temp_file_is_0600_from_creation_even_with_a_permissive_umask(
    sim: Sim, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[int] = []
    real_fsync = os.fsync

    def spying_fsync(fd: int) -> None:
        mode = os.fstat(fd).st_mode
        if stat.S_ISREG(mode):
            seen.append(stat.S_IMODE(mode))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", spying_fsync)
    old_umask = os.umask(0)
    try:
        minted(sim, expires_in=timedelta(hours=1))
    finally:
        os.umask(old_umask)
    assert seen == [0o600]
    assert file_mode(Path(sim.settings.qbo_token_file)) == 0o600


@pytest.mark.parametrize("failing", ["replace", "fsync"])
def test_failed_write_leaves_the_old_file_intact(
    sim: Sim, monkeypatch: pytest.MonkeyPatch, failing: str
) -> None:
    minted(sim, expires_in=timedelta(hours=1))
    path = Path(sim.settings.qbo_token_file)
    before = path.read_bytes()

    def boom(*args: Any) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, failing, boom)
    with pytest.raises(ConfigError, match="previous file was left as it was"):
        TokenStore(sim.settings).refresh()
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name, path.name + ".lock"]


def test_access_token_is_used_as_is_until_five_minutes_before_expiry(
    sim: Sim, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = minted(sim, expires_in=timedelta(minutes=5, seconds=30))

    def no_client(settings: Settings) -> None:
        raise AssertionError("AuthClient must not be built when no refresh is due")

    monkeypatch.setattr(oauth, "auth_client", no_client)
    assert TokenStore(sim.settings).access_token() == token.access_token
    assert sim.refreshes() == 0


def test_access_token_is_refreshed_within_five_minutes_and_rotation_persisted(sim: Sim) -> None:
    old = minted(sim, expires_in=timedelta(minutes=4))
    store = TokenStore(sim.settings)
    fresh = store.access_token()
    assert fresh != old.access_token
    assert sim.service.check_access(fresh) == "ok"
    stored = store.load()
    assert stored.access_token == fresh
    assert stored.refresh_token != old.refresh_token  # the rotated refresh token was kept
    assert sim.service.refresh_token_state(stored.refresh_token) == "ok"
    assert sim.service.refresh_token_state(old.refresh_token) == "grace"
    assert stored.expires_at - datetime.now(UTC) > timedelta(minutes=59)
    assert stored.refresh_hard_expires_at is not None  # the hard expiry was asked for
    assert file_mode(store.path) == 0o600
    assert sim.refreshes() == 1
    assert store.access_token() == fresh  # and not refreshed again
    assert sim.refreshes() == 1


def test_force_refresh_skips_when_another_process_already_refreshed(sim: Sim) -> None:
    token = minted(sim, expires_in=timedelta(hours=1))
    store = TokenStore(sim.settings)
    assert store.force_refresh("some-older-token") == token.access_token
    assert sim.refreshes() == 0
    fresh = store.force_refresh(token.access_token)
    assert fresh != token.access_token
    assert store.load().access_token == fresh
    assert sim.refreshes() == 1


def test_refused_refresh_is_auth_error_and_keeps_the_file(sim: Sim) -> None:
    token = minted(sim, expires_in=timedelta(minutes=1))
    oauth.auth_client(sim.settings).revoke(token=token.refresh_token)
    before = Path(sim.settings.qbo_token_file).read_bytes()
    with pytest.raises(AuthError) as caught:
        TokenStore(sim.settings).access_token()
    assert caught.value.exit_code == 3
    assert "invalid_grant" in str(caught.value)
    assert "fourdqbo auth login" in str(caught.value)
    assert token.refresh_token not in str(caught.value)
    assert Path(sim.settings.qbo_token_file).read_bytes() == before


def test_wrong_app_secret_is_auth_error_naming_the_settings(
    sim: Sim, make_settings: Callable[..., Settings]
) -> None:
    minted(sim, expires_in=timedelta(minutes=1))
    settings = make_settings(**{**sim.env, "QBO_CLIENT_SECRET": "not-the-secret"})
    with pytest.raises(AuthError, match="QBO_CLIENT_SECRET"):
        TokenStore(settings).access_token()


def test_unreachable_oauth_host_is_upstream_error(
    sim: Sim, make_settings: Callable[..., Settings]
) -> None:
    minted(sim, expires_in=timedelta(minutes=1))
    with LoopbackServer({}) as closed:
        url = closed.url
    settings = make_settings(**{**sim.env, "QBO_DISCOVERY_URL": url + "/.well-known/x"})
    with pytest.raises(UpstreamError) as caught:
        TokenStore(settings).access_token()
    assert type(caught.value) is UpstreamError
    assert caught.value.exit_code == 3


def test_missing_file_is_token_missing(sim: Sim) -> None:
    with pytest.raises(TokenMissing) as caught:
        TokenStore(sim.settings).access_token()
    assert caught.value.exit_code == 2
    assert str(caught.value) == (
        f"no QBO token at {sim.settings.qbo_token_file}: run `fourdqbo auth login`"
    )


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"", "empty"),
        (b"{not json", "not JSON"),
        (b"[1, 2]", "not a JSON object"),
        (b'{"access_token": "a", "realm_id": "1"}', "missing refresh_token"),
        (
            b'{"access_token": "aaa", "refresh_token": "bbb", "realm_id": "1",'
            b' "expires_at": "2030-01-01T00:00:00", "refresh_expires_at": "2030-01-01T00:00:00Z"}',
            "expires_at",
        ),
        (
            b'{"access_token": 5, "refresh_token": "bbb", "realm_id": "1",'
            b' "expires_at": "2030-01-01T00:00:00Z", "refresh_expires_at": "2030-01-01T00:00:00Z"}',
            "access_token",
        ),
    ],
)
def test_corrupt_file_is_config_error(sim: Sim, content: bytes, reason: str) -> None:
    path = Path(sim.settings.qbo_token_file)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    with pytest.raises(ConfigError) as caught:
        TokenStore(sim.settings).load()
    assert type(caught.value) is ConfigError
    assert reason in str(caught.value)
    assert "run `fourdqbo auth login`" in str(caught.value)


def test_tokens_are_registered_as_sensitive_and_hidden_from_repr(sim: Sim) -> None:
    minted(sim, expires_in=timedelta(minutes=1))
    store = TokenStore(sim.settings)
    store.access_token()  # refreshes: the new tokens must be registered too
    token = store.load()
    assert redact(f"x {token.access_token} y") == f"x {REDACTED} y"
    assert redact(token.refresh_token) == REDACTED
    assert token.access_token not in repr(token)
    assert token.refresh_token not in repr(token)


def test_refresh_answer_without_hard_expiry_keeps_the_previous_one() -> None:
    now = datetime(2025, 3, 1, tzinfo=UTC)
    first = Token.from_grant(
        {
            "access_token": "a1",
            "refresh_token": "r1",
            "expires_in": 3600,
            "x_refresh_token_expires_in": 8640000,
            "x_refresh_token_hard_expires_in": 86400 * 1000,
        },
        realm_id="1",
        now=now,
    )
    later = now + timedelta(days=10)
    second = Token.from_grant(
        {"access_token": "a2", "expires_in": 3600, "x_refresh_token_expires_in": 8640000},
        realm_id="1",
        now=later,
        previous=first,
    )
    assert second.refresh_token == "r1"  # none came back: keep the one we have
    assert second.refresh_hard_expires_at == now + timedelta(days=1000)
    assert second.refresh_expires_at == later + timedelta(days=100)
    assert second.refresh_deadline == second.refresh_expires_at


def test_lock_held_too_long_is_reported(sim: Sim) -> None:
    token = minted(sim, expires_in=timedelta(minutes=1))
    store = TokenStore(sim.settings, lock_timeout=0.2)
    fd = os.open(store.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        with pytest.raises(LockHeld):
            store.force_refresh(token.access_token)
    finally:
        os.close(fd)
    assert sim.refreshes() == 0


CONTENDER = """
import hashlib, sys, time
from pathlib import Path
from fourdqbo.config import load_settings
from fourdqbo.qbo.tokens import TokenStore

store = TokenStore(load_settings(dotenv_path=None))
print("ready", flush=True)
go = Path(sys.argv[1])
while not go.exists():
    time.sleep(0.005)
token = store.access_token()
print(hashlib.sha256(token.encode()).hexdigest(), flush=True)
"""


def test_two_processes_refreshing_at_once_make_one_refresh(sim: Sim, tmp_path: Path) -> None:
    old = minted(sim, expires_in=timedelta(minutes=1))
    sim.front.delay = 0.4  # the first refresher is still waiting when the second wants in
    env = {
        **os.environ,
        **sim.env,
        "QBO_TOKEN_FILE": str(sim.settings.qbo_token_file),
        "DATA_DIR": str(sim.settings.data_dir),
        "PYTHONPATH": str(REPO),
    }
    go = tmp_path / "go"
    contenders = [
        subprocess.Popen(
            [sys.executable, "-c", CONTENDER, str(go)],
            env=env,
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    try:
        for process in contenders:
            assert process.stdout is not None
            assert process.stdout.readline().strip() == "ready"
        go.touch()
        results = [process.communicate(timeout=30) for process in contenders]
    finally:
        for process in contenders:
            if process.poll() is None:
                process.kill()
    assert [p.returncode for p in contenders] == [0, 0], [err for _, err in results]
    hashes = {out.strip() for out, _ in results}
    stored = TokenStore(sim.settings).load()
    assert hashes == {hashlib.sha256(stored.access_token.encode()).hexdigest()}
    assert stored.access_token != old.access_token
    assert sim.service.token_requests == [
        {"grant_type": "refresh_token", "ok": True, "error": None}
    ]
