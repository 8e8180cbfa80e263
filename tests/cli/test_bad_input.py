"""Bad input on the command line, in the token file and in `.env`: every command answers with
its documented exit code and exactly one line on stderr, calls nothing, and never shows a
traceback.

Every case runs against a fully configured sandbox (file state backend), so the only
thing wrong is the bad input itself, and "nothing was called" is checked on the
sandbox's request log.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
import typer.main
from click.testing import Result
from typer.testing import CliRunner

from fourdqbo.cli.app import app
from fourdqbo.sandbox import Sandbox

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.integration


@pytest.fixture
def env(sandbox: Sandbox, tmp_path: Path) -> dict[str, str]:
    values = sandbox.env(tmp_path / "data")
    values.update(STATE_BACKEND="file", LOGS_DIR=str(tmp_path / "logs"), HTTP_TIMEOUT_SECONDS="2")
    return values


def invoke(env: dict[str, str], args: tuple[str, ...] | list[str], **overrides: str) -> Result:
    return CliRunner().invoke(app, list(args), env={**env, **overrides})


def assert_one_line(result: Result, code: int, starts: str = "fourdqbo: ") -> None:
    assert result.exit_code == code, (result.exit_code, result.output)
    assert "Traceback" not in result.output
    assert result.stdout == "", result.stdout
    assert result.stderr.startswith(starts), result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.endswith("\n")


def assert_nothing_called(sandbox: Sandbox) -> None:
    assert sandbox.requests == [], [(r.service, r.path) for r in sandbox.requests]


def _leaves(command: click.Command, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    if isinstance(command, click.Group):
        yield path  # the group itself takes flags too
        for name, sub in command.commands.items():
            yield from _leaves(sub, (*path, name))
    else:
        yield path


COMMAND_PATHS = list(_leaves(typer.main.get_command(app)))


# --- unknown flags -------------------------------------------------------------------------


def test_the_command_list_is_complete() -> None:
    assert len(COMMAND_PATHS) >= 28
    for expected in [
        ("sync", "run"),
        ("sync", "reset"),
        ("status",),
        ("demo",),
        ("4d", "list-quotes"),
    ]:
        assert expected in COMMAND_PATHS


@pytest.mark.parametrize("path", COMMAND_PATHS, ids=lambda p: " ".join(p) or "(root)")
@pytest.mark.parametrize("flag", ["--no-such-flag", "-Z", "--no-such-flag=1"])
def test_unknown_flag_is_one_line_exit_2(
    env: dict[str, str], sandbox: Sandbox, path: tuple[str, ...], flag: str
) -> None:
    result = invoke(env, [*path, flag])
    assert_one_line(result, 2)
    assert flag.split("=")[0] in result.stderr
    assert_nothing_called(sandbox)


def test_flag_that_takes_no_value_given_one_is_exit_2(env: dict[str, str]) -> None:
    for args in (["status", "--json=yes"], ["sync", "run", "--dry-run=no"]):
        result = invoke(env, args)
        assert_one_line(result, 2)
        assert "does not take a value" in result.stderr


def test_unknown_command_is_one_line_exit_2(env: dict[str, str]) -> None:
    for args in (["frobnicate"], ["sync", "frobnicate"], ["4d", "list-quote"]):
        result = invoke(env, args)
        assert_one_line(result, 2)
        assert "No such command" in result.stderr


# --- malformed dates ------------------------------------------------------------------------

# (arguments with {} for the bad value, the flag the message must name)
DATE_COMMANDS = [
    (("qbo", "list-invoices", "--from-date", "{}"), "--from-date"),
    (("qbo", "list-estimates", "--from-date", "{}"), "--from-date"),
    (("4d", "list-appointments", "--date", "{}"), "--date"),
    (("4d", "list-quotes", "--from-date", "{}"), "--from-date"),
    (("4d", "list-charges", "--from", "{}", "--to", "2025-03-31"), "--from"),
    (("4d", "list-charges", "--from", "2025-03-01", "--to", "{}"), "--to"),
    (("sync", "run", "--since", "{}"), "--since"),
    (("sync", "run", "--dry-run", "--json", "--since", "{}"), "--since"),
    (("sync", "reset", "--to", "{}", "--yes"), "--to"),
]
BAD_DATES = [
    "2025-02-30",
    "2025-13-01",
    "2025-3-1",
    "03/01/2025",
    "yesterday",
    "",
    "   ",
    "-2025-01-01",
    "2025-03-01T25:00",
    "2025-03-01T08:00:00+25:00",
    "٢٠٢٥-٠٣-٠١",  # Arabic-Indic digits: `int()` would take them, a date must not
    "2025-03-01'; DROP TABLE x; --",
    "9" * 300,
    "\x1b[31m2025-03-01",
]


@pytest.mark.parametrize(
    ("template", "flag"), DATE_COMMANDS, ids=lambda v: " ".join(v) if isinstance(v, tuple) else v
)
@pytest.mark.parametrize("bad", BAD_DATES, ids=repr)
def test_malformed_date_is_one_line_exit_2_before_any_call(
    env: dict[str, str], sandbox: Sandbox, template: tuple[str, ...], flag: str, bad: str
) -> None:
    args = [bad if part == "{}" else part for part in template]
    result = invoke(env, args)
    assert_one_line(result, 2, starts=f"fourdqbo: {flag}: ")
    assert "\x1b" not in result.stderr  # control characters are shown escaped, not obeyed
    assert_nothing_called(sandbox)


def test_charges_window_backwards_is_exit_2(env: dict[str, str], sandbox: Sandbox) -> None:
    result = invoke(env, ["4d", "list-charges", "--from", "2025-03-31", "--to", "2025-03-01"])
    assert_one_line(result, 2, starts="fourdqbo: --from 2025-03-31 is after --to 2025-03-01")
    assert_nothing_called(sandbox)


# --- empty strings and out-of-range values -----------------------------------------------------

EMPTY_VALUES = [
    ("4d", "get-patient", ""),
    ("4d", "get-patient", "  "),
    ("4d", "get-quote", ""),
    ("4d", "get-quote", "-5"),
    ("sync", "run", "--quote", ""),
    ("sync", "run", "--quote", "10001", "--quote", " "),
    ("sync", "status", "--runs", ""),
    ("sync", "status", "--runs", "101"),
    ("sync", "status", "--runs", "-1"),
    ("auth", "exchange", ""),
    ("auth", "exchange", "   "),
    ("auth", "exchange", "not a url"),
    ("auth", "login", "--timeout", ""),
    ("auth", "login", "--timeout", "0"),
    ("auth", "callback", "--timeout", "soon"),
    ("sandbox", "serve", "--port", ""),
    ("sandbox", "serve", "--port", "70000"),
    ("sandbox", "serve", "--quotes", "0"),
    ("sandbox", "serve", "--fault-rate", "1.5"),
    ("sandbox", "serve", "--fault-rate", "nan"),
    ("demo", "--quotes", ""),
    ("demo", "--quotes", "1"),
    ("demo", "--seed", "x"),
]


@pytest.mark.parametrize("args", EMPTY_VALUES, ids=lambda a: " ".join(map(repr, a)))
def test_empty_or_out_of_range_value_is_one_line_exit_2(
    env: dict[str, str], sandbox: Sandbox, args: tuple[str, ...]
) -> None:
    result = invoke(env, args)
    assert_one_line(result, 2)
    assert_nothing_called(sandbox)


# --- settings refused before any call ---------------------------------------------------------

BAD_SETTINGS = [
    (("4d", "list-quotes", "--from-date", "2025-01-01"), {"FOURD_BASE_URL": "http://example.com"}),
    (("4d", "list-quotes", "--from-date", "2025-01-01"), {"FOURD_BASE_URL": "not a url"}),
    (("4d", "get-quote", "10001"), {"FOURD_MAX_IN_FLIGHT": "0"}),
    (("qbo", "get-invoice", "10001"), {"QBO_API_BASE_URL": "http://example.com"}),
    (("qbo", "get-invoice", "10001"), {"QBO_ENVIRONMENT": "staging"}),
    (("qbo", "list-invoices", "--from-date", "2025-01-01"), {"HTTP_TIMEOUT_SECONDS": "soon"}),
    (("sync", "run"), {"SYNC_TIMEZONE": "Mars/Olympus_Mons"}),
    (("sync", "run"), {"SYNC_REOPENED_ACTION": "shred"}),
    (("sync", "run"), {"CUSTOMER_NAME_TEMPLATE": "{initials}"}),
    (("sync", "run"), {"SYNC_OVERLAP_SECONDS": "-5"}),
    (("sync", "run"), {"SYNC_INITIAL_FROM": "last tuesday"}),
    (("sync", "status"), {"STATE_BACKEND": "postgres"}),
    (("sync", "status"), {"STATE_BACKEND": "redis", "REDIS_URL": "http://localhost:6379"}),
    (
        ("sync", "reset", "--to", "2025-01-01", "--yes"),
        {"STATE_BACKEND": "redis", "REDIS_URL": "redis://[::1"},
    ),
    (("auth", "url"), {"QBO_REDIRECT_URI": "http://example.com/callback"}),
    (("auth", "url"), {"QBO_CALLBACK_PORT": "99999"}),
]


@pytest.mark.parametrize(
    ("args", "settings"),
    BAD_SETTINGS,
    ids=lambda v: " ".join(v) if isinstance(v, tuple) else str(v),
)
def test_refused_setting_is_one_line_exit_2_naming_it(
    env: dict[str, str], sandbox: Sandbox, args: tuple[str, ...], settings: dict[str, str]
) -> None:
    result = invoke(env, args, **settings)
    assert_one_line(result, 2)
    assert any(name in result.stderr for name in settings), result.stderr
    assert_nothing_called(sandbox)


# --- the token file ----------------------------------------------------------------------------

TOKEN_COMMANDS = [
    ("sync", "run"),
    ("sync", "run", "--dry-run", "--json"),
    ("sync", "status", "--json"),
    ("sync", "unlock", "--yes"),
    ("sync", "reset", "--to", "2025-01-01", "--yes"),
    ("qbo", "list-invoices", "--from-date", "2025-01-01", "--json"),
    ("qbo", "get-customer", "1.AB"),
    ("auth", "status", "--json"),
    ("auth", "refresh"),
    ("auth", "revoke"),
]
SECRET_IN_FILE = "tok-SHOULD-NEVER-SHOW-9f3k"
CORRUPT_TOKENS: dict[str, bytes] = {
    "empty": b"",
    "blank": b"  \n\n",
    "truncated": b'{"access_token": "abc", "refresh_to',
    "a list": b"[]",
    "null": b"null",
    "not utf-8": b"\xff\xfe\x00\x01",
    "nan": b'{"access_token": NaN}',
    "missing fields": f'{{"access_token": "{SECRET_IN_FILE}"}}'.encode(),
    "wrong types": (
        f'{{"access_token": "{SECRET_IN_FILE}", "refresh_token": 5, "realm_id": [], '
        '"expires_at": "tomorrow", "refresh_expires_at": 1}'
    ).encode(),
}


@pytest.mark.parametrize("args", TOKEN_COMMANDS, ids=" ".join)
@pytest.mark.parametrize("content", CORRUPT_TOKENS.values(), ids=CORRUPT_TOKENS.keys())
def test_corrupt_token_file_is_one_line_exit_2(
    env: dict[str, str], sandbox: Sandbox, args: tuple[str, ...], content: bytes
) -> None:
    token_file = Path(env["QBO_TOKEN_FILE"])
    token_file.write_bytes(content)
    result = invoke(env, args)
    assert_one_line(result, 2, starts=f"fourdqbo: the QBO token file {token_file} is corrupt")
    assert "auth login" in result.stderr
    assert SECRET_IN_FILE not in result.output
    assert_nothing_called(sandbox)


@pytest.mark.parametrize("args", TOKEN_COMMANDS, ids=" ".join)
def test_token_file_that_cannot_be_read_is_one_line_exit_2(
    env: dict[str, str], sandbox: Sandbox, args: tuple[str, ...]
) -> None:
    # Tests run as root, where chmod 000 does not stop a read: a directory in the file's
    # place is an unreadable token file for everyone.
    token_file = Path(env["QBO_TOKEN_FILE"])
    token_file.unlink()
    token_file.mkdir()
    result = invoke(env, args)
    assert_one_line(result, 2, starts=f"fourdqbo: cannot read the QBO token file {token_file}")
    assert_nothing_called(sandbox)


@pytest.mark.parametrize("args", TOKEN_COMMANDS, ids=" ".join)
def test_missing_token_file_is_one_line_exit_2(
    env: dict[str, str], sandbox: Sandbox, args: tuple[str, ...]
) -> None:
    Path(env["QBO_TOKEN_FILE"]).unlink()
    result = invoke(env, args)
    assert_one_line(result, 2, starts="fourdqbo: no QBO token at ")
    assert_nothing_called(sandbox)


@pytest.mark.parametrize(
    "content", [*CORRUPT_TOKENS.values(), None], ids=[*CORRUPT_TOKENS, "directory"]
)
def test_status_reports_a_corrupt_token_file_as_unhealthy(
    env: dict[str, str], sandbox: Sandbox, content: bytes | None
) -> None:
    token_file = Path(env["QBO_TOKEN_FILE"])
    if content is None:
        token_file.unlink()
        token_file.mkdir()
    else:
        token_file.write_bytes(content)
    result = invoke(env, ["status", "--json"])
    assert result.exit_code == 1  # status reports problems in its table: exit 1, not healthy
    assert "Traceback" not in result.output
    checks = {c["name"]: c for c in json.loads(result.stdout)["checks"]}
    assert checks["qbo token"]["result"] == "fail"
    assert SECRET_IN_FILE not in result.output
    assert_nothing_called(sandbox)


# --- .env ------------------------------------------------------------------------------------

DOTENV_COMMANDS = [
    ("config", "show"),
    ("config", "show", "--json"),
    ("status", "--json"),
    ("sync", "run"),
    ("sync", "status"),
    ("4d", "list-quotes", "--from-date", "2025-01-01"),
    ("qbo", "get-invoice", "10001"),
    ("auth", "status"),
]


@pytest.mark.parametrize("args", DOTENV_COMMANDS, ids=" ".join)
@pytest.mark.parametrize(
    "content",
    [b"QBO_CLIENT_SECRET=\xff\xfe\n", b"\xef\xbb\xbfA=1\n\xc3\x28=2\n"],
    ids=["latin", "bad utf-8"],
)
def test_dotenv_that_cannot_be_decoded_is_one_line_exit_2(
    env: dict[str, str], sandbox: Sandbox, args: tuple[str, ...], content: bytes
) -> None:
    Path(".env").write_bytes(content)
    result = invoke(env, args)
    assert_one_line(result, 2, starts="fourdqbo: cannot read .env")
    assert_nothing_called(sandbox)


@pytest.mark.parametrize("args", DOTENV_COMMANDS[3:], ids=" ".join)
def test_malformed_setting_in_dotenv_is_one_line_exit_2(
    sandbox: Sandbox, args: tuple[str, ...], tmp_path: Path
) -> None:
    # All configuration in .env this time, one value of it malformed.
    settings = sandbox.env(tmp_path / "data")
    settings.update(STATE_BACKEND="file", LOGS_DIR=str(tmp_path / "logs"))
    settings["FOURD_MAX_IN_FLIGHT" if args[0] == "4d" else "QBO_MAX_IN_FLIGHT"] = "many"
    if args[0] in ("sync", "auth"):
        settings["STATE_BACKEND"] = "sqlite" if args[0] == "sync" else "file"
        settings["QBO_CALLBACK_PORT"] = "-1"
    Path(".env").write_text("".join(f"{k}={v}\n" for k, v in settings.items()), encoding="utf-8")
    result = CliRunner().invoke(app, list(args), env={})
    if args[0] == "auth":
        # `auth status` needs only the token file: a bad unrelated setting does not stop it.
        assert result.exit_code == 0, result.output
        return
    assert_one_line(result, 2)
    assert "malformed" in result.stderr
    assert_nothing_called(sandbox)


@pytest.mark.parametrize(
    "content", [b"", b"\n\n# only comments\n", b"A=\x00b\n"], ids=["empty", "comments", "nul"]
)
def test_harmless_dotenv_changes_nothing(
    env: dict[str, str], sandbox: Sandbox, content: bytes
) -> None:
    Path(".env").write_bytes(content)
    result = invoke(env, ["config", "show", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["settings"]["FOURD_BASE_URL"] == env["FOURD_BASE_URL"]


# --- an unexpected failure ---------------------------------------------------------------------


def test_unexpected_error_is_one_line_and_its_traceback_goes_to_the_log_file(
    tmp_path: Path,
) -> None:
    import os
    import subprocess
    import sys

    # A defect stands in for any bug: the console gets one line, the log file the details.
    code = (
        "import sys\n"
        "from fourdqbo.config import Settings\n"
        "Settings.require_sync = lambda self: 1 / 0\n"
        "sys.argv = ['fourdqbo', 'status']\n"
        "from fourdqbo.cli.app import main\n"
        "main()\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "LOGS_DIR": str(tmp_path / "logs"), "PYTHONPATH": str(REPO)},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr == (
        "fourdqbo: unexpected error: ZeroDivisionError "
        "(details in the log file; --debug shows them here)\n"
    )
    log = (tmp_path / "logs" / "fourdqbo.log").read_text()
    assert "unexpected error" in log
    assert "Traceback (most recent call last)" in log
    assert "ZeroDivisionError" in log
