"""Security and privacy, end to end: what fourdqbo leaves on disk, in Redis and on screen.

- The token file, its lock, the pending-authorisation file and every state file are
  owner-only, even under a umask that would let anyone read them.
- Secrets (4D and QBO app secrets, the subscription key, OAuth tokens, the health-check
  URL's secret path, a Redis password) never appear in any command's output, the logs,
  the run history or the state.
- A full sync of the sandbox practice, with the practice changing between runs, leaves no
  patient name or birth date in LOGS_DIR, DATA_DIR or Redis.
- Plain http is refused for any base URL that is not on a loopback address.
- The OAuth callback, through the CLI, refuses a wrong `state`, exchanges nothing, answers
  that one request and exits. (The listener itself — loopback by default, one request,
  404 for other paths, state check — is tested in tests/qbo/test_oauth.py.)
"""

from __future__ import annotations

import base64
import json
import os
import re
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import redis
from click.testing import Result
from typer.testing import CliRunner

from fourdqbo.cli.app import app
from fourdqbo.config import load_settings
from fourdqbo.qbo.tokens import Token, TokenStore
from fourdqbo.sandbox import Sandbox
from fourdqbo.timefmt import utcnow
from tests.fixtures.redis import free_port

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[1]
HEALTHCHECK_SECRET = "hc-0b7e41c9-Secret-Path"
REDIS_PASSWORD = "redis-pw-Qz81vTn0"


@contextmanager
def permissive_umask() -> Iterator[None]:
    """Files must be private because the code makes them so, not because of the umask."""
    previous = os.umask(0)
    try:
        yield
    finally:
        os.umask(previous)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def env(sandbox_redis_env: dict[str, str]) -> dict[str, str]:
    return {
        **sandbox_redis_env,
        "HTTP_TIMEOUT_SECONDS": "2",
        "QBO_RATE_WINDOW_SECONDS": "1",  # QBO's minute as a second: no 1.5 s between batches
    }


def cli(env: dict[str, str], *args: str, **overrides: str) -> Result:
    return CliRunner().invoke(app, list(args), env={**env, **overrides})


def redis_dump(url: str, prefix: str) -> str:
    """Every key and value under `prefix:`, as one text to search."""
    client = redis.Redis.from_url(url, decode_responses=True)
    parts: list[str] = []
    try:
        for key in client.scan_iter(match=f"{prefix}:*", count=500):
            parts.append(key)
            kind = client.type(key)
            if kind == "string":
                parts.append(client.get(key) or "")
            elif kind == "hash":
                parts.extend(f"{k}={v}" for k, v in client.hgetall(key).items())
            elif kind == "list":
                parts.extend(client.lrange(key, 0, -1))
            elif kind == "zset":
                parts.extend(client.zrange(key, 0, -1))
            elif kind == "set":
                parts.extend(client.smembers(key))
    finally:
        client.close()
    return "\n".join(parts)


def files_text(root: Path, *, skip: tuple[str, ...] = ()) -> str:
    """The text of every file under `root` (bytes decoded leniently), except `skip` names."""
    texts = []
    for path in sorted(root.rglob("*")):
        if path.is_file() and path.name not in skip:
            texts.append(f"--- {path}\n" + path.read_bytes().decode("utf-8", "replace"))
    return "\n".join(texts)


# --- owner-only files ------------------------------------------------------------------------


def test_token_store_writes_owner_only_files_whatever_the_umask(tmp_path: Path) -> None:
    token_file = tmp_path / "fresh" / "dir" / "qbo_token.json"
    settings = load_settings({"QBO_TOKEN_FILE": str(token_file)}, dotenv_path=None)
    now = utcnow()
    token = Token("acc-1", "ref-1", "123", now, now)
    with permissive_umask():
        TokenStore(settings).save(token)
        assert mode(token_file) == 0o600
        assert mode(token_file.with_name("qbo_token.json.lock")) == 0o600
        # Replaced (a refresh or a new login): still private, and no temp file left behind.
        TokenStore(settings).save(Token("acc-2", "ref-2", "123", now, now))
    assert mode(token_file) == 0o600
    assert sorted(p.name for p in token_file.parent.iterdir()) == [
        "qbo_token.json",
        "qbo_token.json.lock",
    ]


def test_login_and_refresh_through_the_cli_keep_the_files_owner_only(
    env: dict[str, str], sandbox: Sandbox, tmp_path: Path
) -> None:
    data = tmp_path / "login-data"
    token_file = data / "qbo_token.json"
    login_env = {**env, "DATA_DIR": str(data), "QBO_TOKEN_FILE": str(token_file)}
    with permissive_umask():
        url = cli(login_env, "auth", "url")
        assert url.exit_code == 0, url.output
        pending = [p for p in data.iterdir() if "pending" in p.name]
        assert pending and all(mode(p) == 0o600 for p in pending)
        # The sandbox's consent page approves at once and redirects, as a browser would see.
        answer = httpx.get(url.stdout.strip(), follow_redirects=False, timeout=10)
        exchanged = cli(login_env, "auth", "exchange", answer.headers["location"])
        assert exchanged.exit_code == 0, exchanged.output
        assert mode(token_file) == 0o600
        refreshed = cli(login_env, "auth", "refresh")
        assert refreshed.exit_code == 0, refreshed.output
    assert mode(token_file) == 0o600
    for path in data.rglob("*"):
        assert mode(path) & 0o077 == 0, f"{path} is readable by others: {oct(mode(path))}"


def test_state_files_are_owner_only_whatever_the_umask(
    env: dict[str, str], sandbox: Sandbox, tmp_path: Path
) -> None:
    with permissive_umask():
        run = cli(env, "sync", "run", "--quiet", STATE_BACKEND="file")
        assert run.exit_code == 1, run.output  # the seed's conflict
        # unlock/reset write too
        assert (
            cli(env, "sync", "reset", "--to", "2020-01-01", "--yes", STATE_BACKEND="file").exit_code
            == 0
        )
    state = tmp_path / "data" / "state"
    paths = list(state.rglob("*"))
    assert any(p.name == "runs.json" for p in paths)
    for path in [state, *paths]:
        expected = 0o700 if path.is_dir() else 0o600
        assert mode(path) == expected, f"{path}: {oct(mode(path))}"


# --- secrets never shown ------------------------------------------------------------------------


def secrets_of(env: dict[str, str], seen_tokens: set[str]) -> list[str]:
    app_key = f"{env['QBO_CLIENT_ID']}:{env['QBO_CLIENT_SECRET']}".encode()
    return [
        env["FOURD_CLIENT_SECRET"],
        env["FOURD_SUBSCRIPTION_KEY"],
        env["QBO_CLIENT_SECRET"],
        base64.b64encode(app_key).decode(),  # an HTTP Basic header of the app's keys
        HEALTHCHECK_SECRET,
        REDIS_PASSWORD,
        *seen_tokens,
    ]


def tokens_in(token_file: Path) -> set[str]:
    document = json.loads(token_file.read_text())
    return {document["access_token"], document["refresh_token"]}


def test_no_secret_or_token_in_any_output_log_state_or_history(
    env: dict[str, str], sandbox: Sandbox, tmp_path: Path, redis_url: str, state_prefix: str
) -> None:
    token_file = Path(env["QBO_TOKEN_FILE"])
    settings = load_settings(env, dotenv_path=None)
    # An access token about to expire, so the run refreshes it and both sets get used.
    current = TokenStore(settings).load()
    TokenStore(settings).save(
        Token(
            current.access_token,
            current.refresh_token,
            current.realm_id,
            utcnow(),
            current.refresh_expires_at,
            current.refresh_hard_expires_at,
        )
    )
    seen = tokens_in(token_file)
    # A ping URL whose path is its secret, where nothing answers: the failed pings get logged.
    env = {**env, "HEALTHCHECK_URL": f"http://127.0.0.1:{free_port()}/hc/{HEALTHCHECK_SECRET}"}
    outputs: list[str] = []
    commands = [
        ("--verbose", "sync", "run"),  # the first call sets up logging: debug on the console
        ("sync", "run", "--json"),
        ("sync", "run", "--dry-run"),
        ("sync", "status"),
        ("sync", "status", "--json"),
        ("status",),
        ("status", "--check", "--json"),
        ("config", "show"),
        ("config", "show", "--json"),
        ("auth", "status"),
        ("auth", "status", "--json"),
        ("auth", "refresh"),
        ("qbo", "list-invoices", "--from-date", "2000-01-01", "--json"),
        ("qbo", "list-invoices", "--from-date", "2000-01-01"),
        ("4d", "list-quotes", "--from-date", "2000-01-01", "--json"),
        ("sync", "unlock", "--yes"),
    ]
    for args in commands:
        result = cli(env, *args)
        assert result.exit_code in (0, 1), (args, result.output)
        outputs.append(f"$ {' '.join(args)}\n{result.stdout}\n{result.stderr}")
        seen |= tokens_in(token_file)
    assert len(seen) >= 4  # the refresh happened: old and new access and refresh tokens
    assert "DEBUG" in outputs[0]  # --verbose: the console showed the debug log too
    # With a Redis password in the URL and Redis unreachable: the error line masks it.
    masked = cli(
        env, "sync", "status", REDIS_URL=f"redis://:{REDIS_PASSWORD}@127.0.0.1:{free_port()}/0"
    )
    assert masked.exit_code == 3
    outputs.append(masked.stderr)
    shown = cli(
        env, "config", "show", "--json", REDIS_URL=f"redis://:{REDIS_PASSWORD}@cache:6379/0"
    )
    outputs.append(shown.stdout)

    everything = {
        "command output": "\n".join(outputs),
        "LOGS_DIR": files_text(tmp_path / "logs"),
        # The token file holds the tokens by design; everything else in DATA_DIR must not.
        "DATA_DIR": files_text(tmp_path / "data", skip=("qbo_token.json",)),
        "Redis": redis_dump(redis_url, state_prefix),
    }
    assert "run_id" in everything["Redis"]  # there is history to search
    assert "sync run" in everything["LOGS_DIR"]  # and a log
    assert "healthcheck ping start failed" in everything["LOGS_DIR"]
    for secret in secrets_of(env, seen):
        for where, text in everything.items():
            assert secret not in text, f"secret {secret[:6]}… found in {where}"


# --- no patient data at rest -------------------------------------------------------------------


def patient_words(sandbox: Sandbox) -> list[str]:
    words: set[str] = set()
    for patient in sandbox.practice.patients.values():
        words.add(patient.name)
        words.update(
            part for part in (patient.first_name, patient.last_name) if part and len(part) >= 3
        )
        words.add(patient.date_of_birth.isoformat())
        words.add(patient.date_of_birth.strftime("%m/%d/%Y"))
    return sorted(words)


def change_the_practice(sandbox: Sandbox) -> None:
    """What a day at the clinic does: an edited quote, a re-opened one, a new patient's."""
    sandbox.clock.advance(60)
    completed = [
        n for n in sandbox.practice.completed_numbers() if n != sandbox.facts.conflict_quote
    ]
    sandbox.practice.edit_quote(completed[0])
    sandbox.practice.set_status(completed[1], 1)
    sandbox.practice.add_quote(status_id=4)
    sandbox.clock.advance(60)


@pytest.mark.parametrize("backend", ["redis", "file"])
def test_a_full_sync_leaves_no_patient_name_at_rest(
    env: dict[str, str],
    sandbox: Sandbox,
    tmp_path: Path,
    redis_url: str,
    state_prefix: str,
    backend: str,
) -> None:
    env = {**env, "STATE_BACKEND": backend}
    # A quote that fails (negative amount) puts its error text into the retry queue.
    failing = sandbox.practice.completed_numbers()[-1]
    sandbox.practice.quote(failing).procedures = [
        {"ProcedureName": "x", "Amount": "-5", "DiscountAmount": None}
    ]
    outputs = []
    first = cli(env, "--verbose", "sync", "run")
    assert first.exit_code == 1, first.output
    outputs.append(first.output)
    change_the_practice(sandbox)
    for args in (("sync", "run", "--json"), ("sync", "status"), ("status", "--json")):
        result = cli(env, *args)
        outputs.append(result.stdout + result.stderr)
    status = json.loads(cli(env, "sync", "status", "--json").stdout)
    assert [e["quote"] for e in status["retry_queue"]] == [failing]
    assert status["conflicts"]

    at_rest = {
        "LOGS_DIR": files_text(tmp_path / "logs"),
        "DATA_DIR": files_text(tmp_path / "data"),
        "Redis": redis_dump(redis_url, state_prefix),
        "sync output": "\n".join(outputs),
    }
    assert "quote " in at_rest["LOGS_DIR"]  # the log speaks of quotes, by number
    for word in patient_words(sandbox):
        pattern = re.compile(rf"(?<!\w){re.escape(word)}(?!\w)")
        for where, text in at_rest.items():
            match = pattern.search(text)
            if match is not None:
                around = text[max(0, match.start() - 60) : match.end() + 60]
                pytest.fail(f"patient data {word!r} in {where}: …{around}…")


# --- plain http -------------------------------------------------------------------------------

REFUSED = [
    "http://example.com",
    "http://localhost.example.com",
    "http://127.0.0.1.nip.io",
    "HTTP://EXAMPLE.COM/x",
    "http://[::ffff:8.8.8.8]",
]
PLAIN_HTTP_COMMANDS = [
    ("FOURD_BASE_URL", ("4d", "list-quotes", "--from-date", "2025-01-01")),
    ("QBO_API_BASE_URL", ("qbo", "list-invoices", "--from-date", "2025-01-01")),
    ("QBO_DISCOVERY_URL", ("auth", "url")),
    ("HEALTHCHECK_URL", ("sync", "run")),
]


@pytest.mark.parametrize(
    ("variable", "args"),
    PLAIN_HTTP_COMMANDS,
    ids=lambda v: v if isinstance(v, str) else " ".join(v),
)
@pytest.mark.parametrize("url", REFUSED)
def test_plain_http_to_a_host_off_this_machine_is_refused(
    env: dict[str, str], sandbox: Sandbox, variable: str, args: tuple[str, ...], url: str
) -> None:
    result = cli(env, *args, **{variable: url})
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("fourdqbo: ")
    assert result.stderr.count("\n") == 1
    assert variable in result.stderr
    assert "loopback" in result.stderr or "http(s)" in result.stderr
    assert sandbox.requests == []  # refused before anything was sent anywhere


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:9/x",
        "http://127.8.9.10:9",
        "http://localhost:9",
        "http://[::1]:9/x",
        "https://example.com/api",
    ],
)
def test_loopback_http_and_any_https_are_accepted(url: str) -> None:
    settings = load_settings({"FOURD_BASE_URL": url, "QBO_API_BASE_URL": url}, dotenv_path=None)
    assert settings.problems == {}
    assert settings.fourd_base_url == url.rstrip("/")


# --- the OAuth callback through the CLI ---------------------------------------------------------


def test_auth_callback_refuses_a_wrong_state_answers_once_and_exits(
    env: dict[str, str], sandbox: Sandbox, tmp_path: Path
) -> None:
    port = free_port()
    data = tmp_path / "callback-data"
    token_file = data / "qbo_token.json"
    login_env = {
        **env,
        "DATA_DIR": str(data),
        "QBO_TOKEN_FILE": str(token_file),
        "QBO_CALLBACK_PORT": str(port),
        "QBO_REDIRECT_URI": f"http://localhost:{port}/callback",
    }
    url = cli(login_env, "auth", "url")
    assert url.exit_code == 0, url.output
    listener = subprocess.Popen(
        [sys.executable, "-m", "fourdqbo", "auth", "callback", "--timeout", "30"],
        env={**os.environ, **login_env, "PYTHONPATH": str(REPO)},
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 20
        while True:  # wait until it listens
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                assert listener.poll() is None, listener.communicate()
                assert time.monotonic() < deadline
                time.sleep(0.05)
        # An attacker's (or a stale tab's) redirect: a valid-looking code, a foreign state.
        page = httpx.get(
            f"http://127.0.0.1:{port}/callback?code=stolen-code-77&state=not-the-state"
            f"&realmId={sandbox.realm_id}",
            timeout=10,
        )
        _, stderr = listener.communicate(timeout=20)
    finally:
        if listener.poll() is None:
            listener.kill()
            listener.wait(timeout=5)
    assert page.status_code == 400
    assert "stolen-code-77" not in page.text and "not-the-state" not in page.text
    assert listener.returncode == 3
    assert stderr.splitlines()[-1].startswith("fourdqbo: ")
    assert "state" in stderr.splitlines()[-1]
    assert "Traceback" not in stderr
    assert sandbox.oauth.token_requests == []  # nothing was exchanged
    assert not token_file.exists()
    with pytest.raises(httpx.ConnectError):  # it answered that one request and exited
        httpx.get(f"http://127.0.0.1:{port}/callback", timeout=2)
