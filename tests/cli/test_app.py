"""The root application: version, help, and expected failures as one line + exit code."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
import typer
import typer.main
from typer.testing import CliRunner

from fourdqbo import __version__
from fourdqbo.cli.app import FourdqboGroup, app
from fourdqbo.cli.output import date_option, datetime_option
from fourdqbo.errors import (
    AuthError,
    ConfigError,
    FourdqboError,
    LockHeld,
    OutcomeUnknown,
    QBOFault,
    StateStoreError,
    TokenMissing,
    UpstreamError,
)
from fourdqbo.log import register_sensitive

REPO = Path(__file__).resolve().parents[2]
GROUPS = ["status", "config", "auth", "qbo", "4d", "sync", "sandbox", "demo"]


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


# --- version and help -------------------------------------------------------------------


def test_version(runner: CliRunner) -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.stdout == f"fourdqbo {__version__}\n"


def test_version_wins_over_a_command(runner: CliRunner) -> None:
    result = runner.invoke(app, ["--version", "config", "show"])
    assert result.exit_code == 0
    assert result.stdout == f"fourdqbo {__version__}\n"


@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_help_lists_every_command_group(runner: CliRunner, flag: str) -> None:
    result = runner.invoke(app, [flag], env={"COLUMNS": "120"})
    assert result.exit_code == 0
    for group in GROUPS:
        assert f" {group} " in result.stdout, group
    assert "--version" in result.stdout
    assert "--debug" in result.stdout


def test_no_arguments_shows_help(runner: CliRunner) -> None:
    result = runner.invoke(app, [])
    assert "Usage" in result.output
    assert "config" in result.output


def _leaf_commands(
    command: click.Command, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], click.Command]]:
    if isinstance(command, click.Group):
        for name, sub in command.commands.items():
            yield from _leaf_commands(sub, (*path, name))
    else:
        yield path, command


def test_every_command_has_help_with_an_example(runner: CliRunner) -> None:
    leaves = list(_leaf_commands(typer.main.get_command(app)))
    assert len(leaves) >= 20
    for path, _ in leaves:
        result = runner.invoke(app, [*path, "--help"], env={"COLUMNS": "200"})
        assert result.exit_code == 0, path
        assert "Example" in result.stdout, f"fourdqbo {' '.join(path)} --help has no example"


def test_python_m_fourdqbo_version() -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-m", "fourdqbo", "--version"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"fourdqbo {__version__}\n"


def test_python_m_fourdqbo_expected_failure_has_no_traceback(tmp_path: Path) -> None:
    (tmp_path / ".env").write_bytes(b"QBO_CLIENT_SECRET=\xff\n")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-m", "fourdqbo", "config", "show"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.startswith("fourdqbo: cannot read .env")
    assert done.stderr.count("\n") == 1
    assert "Traceback" not in done.stderr


# --- expected failures on a throwaway app with the same group class ---------------------

probe = typer.Typer(cls=FourdqboGroup, add_completion=False, pretty_exceptions_enable=False)
nested = typer.Typer()
probe.add_typer(nested, name="nested")
raised: dict[str, BaseException] = {}


@probe.callback()
def _probe_root() -> None:
    """A stand-in for the real root."""


@probe.command("fail")
def _fail(kind: str) -> None:
    raise raised[kind]


@probe.command("since")
def _since(from_date: str = typer.Option(..., "--from-date")) -> None:
    day = date_option(from_date, "--from-date")
    print(json.dumps({"day": day.isoformat()}))


@probe.command("window")
def _window(since: str = typer.Option(..., "--since")) -> None:
    moment = datetime_option(since, "--since")
    print(moment.isoformat())


@nested.command("deep")
def _deep() -> None:
    raise UpstreamError("4d unreachable: cannot connect (ConnectError) after 5 attempts")


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (ConfigError("missing setting QBO_CLIENT_ID (set it in the environment or .env)"), 2),
        (TokenMissing("no QBO token: run `fourdqbo auth login`"), 2),
        (UpstreamError("qbo throttled: HTTP 429 after 5 attempts", service="qbo"), 3),
        (AuthError("4d refused the credentials: Invalid client-id", service="fourd"), 3),
        (OutcomeUnknown("qbo: POST /batch: no answer; outcome unknown"), 3),
        (QBOFault("Stale object error", code="5010"), 3),
        (StateStoreError("redis unreachable"), 3),
        (LockHeld("another sync holds the lock (run abc, since 08:00Z)"), 75),
        (FourdqboError("3 quotes failed"), 1),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, BaseException) else str(v),
)
def test_expected_failure_is_one_line_with_its_exit_code(
    runner: CliRunner, error: FourdqboError, code: int
) -> None:
    raised["x"] = error
    result = runner.invoke(probe, ["fail", "x"])
    assert result.exit_code == code
    assert result.stdout == ""
    assert result.stderr == f"fourdqbo: {error}\n"
    assert "Traceback" not in result.output
    assert not isinstance(result.exception, FourdqboError)  # handled, not escaped


def test_failure_in_a_nested_group_is_handled_at_the_top(runner: CliRunner) -> None:
    result = runner.invoke(probe, ["nested", "deep"])
    assert result.exit_code == 3
    assert result.stderr == (
        "fourdqbo: 4d unreachable: cannot connect (ConnectError) after 5 attempts\n"
    )


def test_multi_line_message_becomes_one_line(runner: CliRunner) -> None:
    raised["x"] = ConfigError("missing setting A\n  and   malformed B\n")
    result = runner.invoke(probe, ["fail", "x"])
    assert result.stderr == "fourdqbo: missing setting A and malformed B\n"


def test_registered_secret_is_scrubbed_from_the_error_line(runner: CliRunner) -> None:
    register_sensitive("tok-Zx81Lq0Pw")
    raised["x"] = AuthError("refresh refused for token tok-Zx81Lq0Pw")
    result = runner.invoke(probe, ["fail", "x"])
    assert result.exit_code == 3
    assert "Zx81Lq0Pw" not in result.output
    assert result.stderr == "fourdqbo: refresh refused for token [redacted]\n"


def test_unexpected_exception_is_one_line_exit_1(runner: CliRunner) -> None:
    raised["x"] = ZeroDivisionError("secret detail Kq9")
    result = runner.invoke(probe, ["fail", "x"])
    assert result.exit_code == 1
    assert result.stderr == (
        "fourdqbo: unexpected error: ZeroDivisionError "
        "(details in the log file; --debug shows them here)\n"
    )
    assert "Kq9" not in result.output
    assert "Traceback" not in result.output


def test_keyboard_interrupt_exits_130(runner: CliRunner) -> None:
    raised["x"] = KeyboardInterrupt()
    result = runner.invoke(probe, ["fail", "x"])
    assert result.exit_code == 130
    assert result.stderr == "fourdqbo: interrupted\n"


def test_usage_errors_still_exit_2(runner: CliRunner) -> None:
    result = runner.invoke(probe, ["since"])  # missing --from-date
    assert result.exit_code == 2
    assert "--from-date" in result.stderr
    assert "Traceback" not in result.output


@pytest.mark.parametrize("bad", ["2025-02-30", "2025-2-1", "yesterday", "03/01/2025", " "])
def test_bad_date_option_is_config_error_exit_2(runner: CliRunner, bad: str) -> None:
    result = runner.invoke(probe, ["since", "--from-date", bad])
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr.startswith("fourdqbo: --from-date: not a date: ")
    assert result.stderr.endswith("(use YYYY-MM-DD)\n")
    assert result.stderr.count("\n") == 1


def test_good_date_option_runs_the_command(runner: CliRunner) -> None:
    result = runner.invoke(probe, ["since", "--from-date", "2025-03-01"])
    assert result.exit_code == 0
    assert json.loads(result.stdout) == {"day": "2025-03-01"}


def test_bad_datetime_option_is_exit_2(runner: CliRunner) -> None:
    result = runner.invoke(probe, ["window", "--since", "2025-03-01T25:00"])
    assert result.exit_code == 2
    assert result.stderr.startswith("fourdqbo: --since: not a date-time")
    ok = runner.invoke(probe, ["window", "--since", "2025-03-01T08:00:00-08:00"])
    assert ok.stdout == "2025-03-01T16:00:00+00:00\n"


# --- --debug on the real app ------------------------------------------------------------


def test_debug_lets_the_exception_through(runner: CliRunner) -> None:
    Path(".env").write_bytes(b"QBO_CLIENT_SECRET=\xff\n")
    quiet = runner.invoke(app, ["config", "show"])
    assert quiet.exit_code == 2
    assert quiet.stderr.startswith("fourdqbo: cannot read .env")
    loud = runner.invoke(app, ["--debug", "config", "show"])
    assert isinstance(loud.exception, ConfigError)
    assert loud.exit_code != 0
