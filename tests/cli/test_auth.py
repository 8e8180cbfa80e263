"""`fourdqbo auth …` through the CLI runner, against the OAuth simulator on loopback."""

from __future__ import annotations

import json
import socket
import stat
import threading
import time
import webbrowser
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import requests
from typer.testing import CliRunner, Result

from fourdqbo.cli.app import app
from fourdqbo.config import load_settings
from fourdqbo.qbo.tokens import Token, TokenStore
from fourdqbo.sandbox.base import LoopbackServer, SimClock
from fourdqbo.sandbox.oauth import OAuthService


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class Sim:
    service: OAuthService
    env: dict[str, str]
    token_file: Path
    port: int

    def run(self, *args: str, **env: str) -> Result:
        return CliRunner().invoke(app, ["auth", *args], env={**self.env, **env})

    def store(self) -> TokenStore:
        return TokenStore(load_settings(self.env, dotenv_path=None))

    def save(self, *, expires_in: timedelta, refresh_days: int | None = None) -> Token:
        answer = self.service.mint()
        now = datetime.now(UTC)
        if refresh_days is not None:
            answer["x_refresh_token_expires_in"] = refresh_days * 86400
        token = Token.from_grant(answer, realm_id=answer["realm_id"], now=now)
        token = Token(
            token.access_token,
            token.refresh_token,
            token.realm_id,
            now + expires_in,
            token.refresh_expires_at,
            token.refresh_hard_expires_at,
        )
        self.store().save(token)
        return token


@pytest.fixture
def sim(tmp_path: Path) -> Iterator[Sim]:
    service = OAuthService(
        SimClock(), client_id="sim-client", client_secret="sim-secret", realm_id="1234567890"
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
            "QBO_TOKEN_FILE": str(tmp_path / "data" / "qbo_token.json"),
            "DATA_DIR": str(tmp_path / "data"),
            "LOGS_DIR": str(tmp_path / "logs"),
            "HTTP_TIMEOUT_SECONDS": "5",
        }
        yield Sim(service, env, tmp_path / "data" / "qbo_token.json", port)


def one_line_error(result: Result, code: int) -> str:
    assert result.exit_code == code, (result.stdout, result.stderr)
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("fourdqbo: ")
    return lines[0]


def no_tokens_in(result: Result, *tokens: str) -> None:
    for token in tokens:
        assert token not in result.output


def browser_for_pending(sim: Sim) -> threading.Thread:
    """A browser that opens the pending authorisation URL once a command has written it."""
    pending = Path(sim.env["DATA_DIR"]) / "qbo_auth_pending.json"

    def run() -> None:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                url = json.loads(pending.read_text())["url"]
            except (OSError, ValueError, KeyError):
                time.sleep(0.02)
                continue
            for _ in range(100):  # the listener may bind just after the file is written
                try:
                    requests.get(url, timeout=5)
                    return
                except requests.ConnectionError:
                    time.sleep(0.02)
            return

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_every_auth_command_has_help_with_an_example() -> None:
    runner = CliRunner()
    for command in ("login", "url", "callback", "exchange", "status", "refresh", "revoke"):
        result = runner.invoke(app, ["auth", command, "--help"])
        assert result.exit_code == 0
        assert "Example: fourdqbo auth " + command in " ".join(result.output.split())


def test_status_json_parses_and_shows_no_token(sim: Sim) -> None:
    token = sim.save(expires_in=timedelta(minutes=30))
    result = sim.run("status", "--json")
    assert result.exit_code == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["realm_id"] == "1234567890"
    assert document["access_token_valid"] is True
    assert document["access_token_expires_at"].endswith("Z")
    assert document["refresh_token_hard_expires_at"].endswith("Z")
    assert document["refresh_token_days_left"] >= 99
    assert document["warnings"] == []
    no_tokens_in(result, token.access_token, token.refresh_token)
    assert sim.service.token_requests == []  # status calls nobody


def test_status_warns_when_the_refresh_token_expires_within_30_days(sim: Sim) -> None:
    token = sim.save(expires_in=timedelta(minutes=30), refresh_days=12)
    result = sim.run("status")
    assert result.exit_code == 0
    assert "realm" in result.stdout and "1234567890" in result.stdout
    assert "WARN the refresh token expires" in result.stderr
    assert "in 11 days" in result.stderr
    no_tokens_in(result, token.access_token, token.refresh_token)
    as_json = json.loads(sim.run("status", "--json").stdout)
    assert len(as_json["warnings"]) == 1


def test_status_warns_about_a_token_file_others_can_read(sim: Sim) -> None:
    sim.save(expires_in=timedelta(minutes=30))
    sim.token_file.chmod(0o644)
    result = sim.run("status", "--json")
    assert any("chmod 600" in w for w in json.loads(result.stdout)["warnings"])


def test_status_without_token_file_exits_2_with_one_line(sim: Sim) -> None:
    line = one_line_error(sim.run("status"), 2)
    assert line == f"fourdqbo: no QBO token at {sim.token_file}: run `fourdqbo auth login`"


@pytest.mark.parametrize("content", [b"", b"{]", b'{"access_token": "x"}', b"null"])
def test_corrupt_token_file_exits_2_telling_to_login(sim: Sim, content: bytes) -> None:
    sim.token_file.parent.mkdir(parents=True)
    sim.token_file.write_bytes(content)
    for command in (["status", "--json"], ["refresh"]):
        result = sim.run(*command)
        assert "run `fourdqbo auth login`" in one_line_error(result, 2)
        assert result.stdout == ""


def test_refresh_rotates_and_persists(sim: Sim) -> None:
    old = sim.save(expires_in=timedelta(hours=1))
    result = sim.run("refresh")
    assert result.exit_code == 0, result.stderr
    stored = sim.store().load()
    assert stored.refresh_token != old.refresh_token
    assert stat.S_IMODE(sim.token_file.stat().st_mode) == 0o600
    no_tokens_in(
        result, old.access_token, old.refresh_token, stored.access_token, stored.refresh_token
    )
    assert "refreshed the QBO token for realm 1234567890" in result.stderr


def test_refused_refresh_exits_3_telling_to_login(sim: Sim) -> None:
    token = sim.save(expires_in=timedelta(hours=1))
    sim.service.clock.advance(101 * 86400)  # the refresh token expired unused
    result = sim.run("refresh")
    line = one_line_error(result, 3)
    assert "invalid_grant" in line and "run `fourdqbo auth login`" in line
    no_tokens_in(result, token.refresh_token)


def test_unreachable_oauth_host_exits_3(sim: Sim) -> None:
    sim.save(expires_in=timedelta(hours=1))
    with LoopbackServer({}) as closed:
        url = closed.url
    line = one_line_error(sim.run("refresh", QBO_DISCOVERY_URL=url + "/.well-known/x"), 3)
    assert "cannot reach Intuit OAuth" in line


def test_missing_app_keys_exit_2_naming_them(sim: Sim) -> None:
    result = CliRunner().invoke(app, ["auth", "url"], env={"DATA_DIR": sim.env["DATA_DIR"]})
    line = one_line_error(result, 2)
    assert "QBO_CLIENT_ID" in line and "QBO_CLIENT_SECRET" in line


def test_url_then_exchange_with_the_pasted_redirect(sim: Sim) -> None:
    result = sim.run("url")
    assert result.exit_code == 0, result.stderr
    url = result.stdout.strip()
    assert url.startswith(sim.service.public_url + "/authorize?")
    pending = Path(sim.env["DATA_DIR"]) / "qbo_auth_pending.json"
    assert stat.S_IMODE(pending.stat().st_mode) == 0o600
    location = requests.get(url, allow_redirects=False, timeout=5).headers["Location"]

    result = sim.run("exchange", location)
    assert result.exit_code == 0, result.stderr
    assert "authorised realm 1234567890" in result.stderr
    token = sim.store().load()
    assert sim.service.check_access(token.access_token) == "ok"
    assert stat.S_IMODE(sim.token_file.stat().st_mode) == 0o600
    no_tokens_in(result, token.access_token, token.refresh_token)
    assert not pending.exists()

    again = sim.run("exchange", location)  # the pending authorisation was used up
    assert "auth url" in one_line_error(again, 2)
    assert sim.service.token_grants("authorization_code") == 1


def test_exchange_with_a_foreign_state_is_refused_and_exchanges_nothing(sim: Sim) -> None:
    url = sim.run("url").stdout.strip()
    location = requests.get(url, allow_redirects=False, timeout=5).headers["Location"]
    forged = location.split("state=")[0] + "state=someone-elses&realmId=1234567890"
    line = one_line_error(sim.run("exchange", forged), 3)
    assert "state does not match" in line
    assert sim.service.token_requests == []
    assert not sim.token_file.exists()


def test_exchange_without_pending_url_exits_2(sim: Sim) -> None:
    result = sim.run("exchange", "http://127.0.0.1/callback?code=a&state=b&realmId=c")
    assert "run `fourdqbo auth url` first" in one_line_error(result, 2)
    assert sim.service.token_requests == []


def test_url_then_callback_listener(sim: Sim) -> None:
    assert sim.run("url").exit_code == 0
    browser = browser_for_pending(sim)
    result = sim.run("callback", "--timeout", "10")
    browser.join(5)
    assert result.exit_code == 0, result.stderr
    assert sim.store().load().realm_id == "1234567890"


def test_login_no_browser_prints_url_and_finishes_on_the_callback(
    sim: Sim, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(webbrowser, "open", lambda url: pytest.fail("browser opened"))
    browser = browser_for_pending(sim)
    result = sim.run("login", "--no-browser", "--timeout", "10")
    browser.join(5)
    assert result.exit_code == 0, result.stderr
    assert sim.service.public_url + "/authorize?" in result.stderr
    token = sim.store().load()
    no_tokens_in(result, token.access_token, token.refresh_token)
    assert result.stdout == ""


def test_login_opens_a_browser(sim: Sim, monkeypatch: pytest.MonkeyPatch) -> None:
    opened: list[str] = []

    def fake_open(url: str) -> bool:
        opened.append(url)
        threading.Thread(target=requests.get, args=(url,), kwargs={"timeout": 5}).start()
        return True

    monkeypatch.setattr(webbrowser, "open", fake_open)
    result = sim.run("login", "--timeout", "10")
    assert result.exit_code == 0, result.stderr
    assert len(opened) == 1
    assert sim.store().exists()


def test_login_times_out_with_one_error_line(sim: Sim) -> None:
    result = sim.run("login", "--no-browser", "--timeout", "1")
    assert result.exit_code == 3
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert [line for line in lines if line.startswith("fourdqbo: ")] == [lines[-1]]
    assert "no authorisation arrived" in lines[-1]
    assert "WARN" not in result.stderr


def test_login_warns_when_the_redirect_uri_misses_the_listener(sim: Sim) -> None:
    result = sim.run(
        "login", "--no-browser", "--timeout", "1", QBO_REDIRECT_URI="http://localhost:9/cb"
    )
    assert result.exit_code == 3
    assert "WARN QBO_REDIRECT_URI http://localhost:9/cb does not point at the listener" in (
        result.stderr
    )
    assert sim.service.token_requests == []


def test_revoke_removes_the_token(sim: Sim) -> None:
    token = sim.save(expires_in=timedelta(hours=1))
    result = sim.run("revoke")
    assert result.exit_code == 0, result.stderr
    assert "revoked the QBO authorisation for realm 1234567890" in result.stderr
    assert not sim.token_file.exists()
    assert sim.service.check_access(token.access_token) == "unknown"
    one_line_error(sim.run("status"), 2)


@pytest.mark.parametrize("value", ["nan", "0", "inf"])
def test_login_timeout_must_be_finite_seconds(value: str) -> None:
    result = CliRunner().invoke(app, ["auth", "login", "--no-browser", "--timeout", value])
    assert result.exit_code == 2
    assert "--timeout" in result.stderr
    assert "Traceback" not in result.output
