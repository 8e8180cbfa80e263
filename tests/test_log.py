"""Logging: the privacy filter keeps registered names and secrets out of every record."""

from __future__ import annotations

import io
import logging
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from fourdqbo.log import (
    REDACTED,
    PrivacyFilter,
    RunContext,
    redact,
    register_secret,
    register_sensitive,
    setup_logging,
)


@pytest.fixture
def fresh_logging() -> Iterator[logging.Logger]:
    """The `fourdqbo` logger as a new process would have it, restored afterwards."""
    logger = logging.getLogger("fourdqbo")
    saved = (logger.handlers[:], logger.level, logger.propagate)
    configured = getattr(logger, "_fourdqbo_configured", None)
    logger.handlers.clear()
    if configured is not None:
        del logger._fourdqbo_configured  # type: ignore[attr-defined]
    yield logger
    for handler in logger.handlers:
        handler.close()
    logger.handlers[:] = saved[0]
    logger.setLevel(saved[1])
    logger.propagate = saved[2]
    if configured is None:
        if hasattr(logger, "_fourdqbo_configured"):
            del logger._fourdqbo_configured  # type: ignore[attr-defined]
    else:
        logger._fourdqbo_configured = configured  # type: ignore[attr-defined]
    RunContext.run_id = "-"


def log_text(logs_dir: Path) -> str:
    for handler in logging.getLogger("fourdqbo").handlers:
        handler.flush()
    return (logs_dir / "fourdqbo.log").read_text(encoding="utf-8")


def test_registered_name_scrubbed_from_message_case_insensitively(
    fresh_logging: logging.Logger, tmp_path: Path
) -> None:
    register_sensitive("Quintessa Varga-Lund")
    setup_logging(tmp_path / "logs", console=False)
    log = logging.getLogger("fourdqbo.sync")
    log.info("quote 10023 for QUINTESSA VARGA-LUND created")
    log.warning("lower: quintessa varga-lund")
    text = log_text(tmp_path / "logs")
    assert "quintessa" not in text.lower()
    assert text.count(REDACTED) == 2
    assert "quote 10023 for [redacted] created" in text


def test_registered_secret_scrubbed_from_args(
    fresh_logging: logging.Logger, tmp_path: Path
) -> None:
    register_sensitive("tok-8f3a9c77e1", "Bartholomew Ng")
    setup_logging(tmp_path / "logs", console=False)
    log = logging.getLogger("fourdqbo.qbo")
    log.info("refreshed with %s for %s (realm %d)", "tok-8f3a9c77e1", "bartholomew ng", 42)
    log.info("as a dict %(token)s", {"token": "TOK-8F3A9C77E1"})
    text = log_text(tmp_path / "logs")
    assert "8f3a9c77e1" not in text.lower()
    assert "bartholomew" not in text.lower()
    assert "realm 42" in text


def test_registered_name_scrubbed_from_exception_text(
    fresh_logging: logging.Logger, tmp_path: Path
) -> None:
    register_sensitive("Ottoline Prabhakar")
    setup_logging(tmp_path / "logs", console=False)
    log = logging.getLogger("fourdqbo.emr")
    try:
        raise ValueError("patient name Ottoline Prabhakar does not parse")
    except ValueError:
        log.exception("quote 5 failed")
    try:
        raise RuntimeError("outer") from KeyError("ottoline prabhakar")
    except RuntimeError as exc:
        log.error("chained: %s", exc, exc_info=True)
    text = log_text(tmp_path / "logs")
    assert "Traceback" in text
    assert "ValueError" in text
    assert "ottoline" not in text.lower()
    assert "prabhakar" not in text.lower()


def test_stack_info_is_scrubbed(fresh_logging: logging.Logger, tmp_path: Path) -> None:
    register_sensitive("wilhelmina_szabo")

    def wilhelmina_szabo() -> None:  # the frame name shows in the stack
        logging.getLogger("fourdqbo.x").info("where am I", stack_info=True)

    setup_logging(tmp_path / "logs", console=False)
    wilhelmina_szabo()
    text = log_text(tmp_path / "logs")
    assert "Stack (most recent call last)" in text
    assert f"in {REDACTED}" in text
    assert "wilhelmina" not in text


def test_console_handler_scrubs_too_and_follows_stderr(
    fresh_logging: logging.Logger, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    register_sensitive("Cordelia Imbert")
    setup_logging(tmp_path / "logs", console=True)
    # Regression: the console handler kept the stderr of set-up time; a test runner that
    # swaps stderr (and closes the old one) made every later record a logging error.
    swapped = io.StringIO()
    monkeypatch.setattr(sys, "stderr", swapped)
    logging.getLogger("fourdqbo.cli").warning("could not find Cordelia Imbert")
    logging.getLogger("fourdqbo.cli").info("not shown without --verbose")
    assert swapped.getvalue() == f"WARNING could not find {REDACTED}\n"


def test_verbose_console_shows_info(
    fresh_logging: logging.Logger, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    setup_logging(tmp_path / "logs", verbose=True, console=True)
    logging.getLogger("fourdqbo.cli").info("details")
    captured = capsys.readouterr()
    assert "INFO details" in captured.err
    assert captured.out == ""  # never on stdout: --json owns it


def test_file_gets_info_not_debug(fresh_logging: logging.Logger, tmp_path: Path) -> None:
    setup_logging(tmp_path / "logs", console=False)
    log = logging.getLogger("fourdqbo.sync")
    log.debug("debug line")
    log.info("info line")
    text = log_text(tmp_path / "logs")
    assert "info line" in text
    assert "debug line" not in text


def test_short_strings_are_not_registered() -> None:
    register_sensitive("Al", "Jo", "", None, "  x  ", " Bo ")
    assert redact("Al and Jo met Bo at x") == "Al and Jo met Bo at x"


def test_registered_values_are_stripped_and_escaped() -> None:
    register_sensitive("  O'Brien (Jr.)  ", "a.c*d")
    assert redact("for o'brien (jr.) today") == f"for {REDACTED} today"
    # Regex characters are literal: "a.c*d" does not match "abccd".
    assert redact("abccd and a.c*d") == f"abccd and {REDACTED}"


def test_longest_registered_value_wins() -> None:
    register_sensitive("Mirabel", "Mirabel Okonkwo-Hayes")
    assert redact("Mirabel Okonkwo-Hayes") == REDACTED


def test_unicode_names_scrubbed_case_insensitively() -> None:
    register_sensitive("Zoë Ångström")
    assert redact("ZOË ÅNGSTRÖM and zoë ångström") == f"{REDACTED} and {REDACTED}"


def test_redact_leaves_other_text_alone() -> None:
    register_sensitive("Evangelista Moor")
    assert redact("quote 10023 patient 4411") == "quote 10023 patient 4411"


def test_filter_survives_arguments_that_do_not_fit_the_format() -> None:
    # Regression: the filter called getMessage() unguarded, so a bad log call raised into
    # the caller instead of being reported by logging.
    record = logging.LogRecord("fourdqbo", logging.INFO, __file__, 1, "%s and %s", ("one",), None)
    assert PrivacyFilter().filter(record) is True


def test_bad_log_call_does_not_crash_the_caller(
    fresh_logging: logging.Logger, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    setup_logging(tmp_path / "logs", console=False)
    logging.getLogger("fourdqbo.x").info("%d items", "not a number")  # must not raise
    assert "Logging error" in capsys.readouterr().err


def test_run_context_adds_run_id(fresh_logging: logging.Logger, tmp_path: Path) -> None:
    setup_logging(tmp_path / "logs", console=False)
    log = logging.getLogger("fourdqbo.sync")
    log.info("before the run")
    RunContext.run_id = "r-20250301-abc"
    log.info("inside the run")
    text = log_text(tmp_path / "logs").splitlines()
    assert "run=- fourdqbo.sync: before the run" in text[0]
    assert "run=r-20250301-abc fourdqbo.sync: inside the run" in text[1]


def test_setup_logging_configures_once(fresh_logging: logging.Logger, tmp_path: Path) -> None:
    setup_logging(tmp_path / "logs", console=True)
    count = len(fresh_logging.handlers)
    setup_logging(tmp_path / "other", console=True)
    assert len(fresh_logging.handlers) == count == 2
    assert not (tmp_path / "other").exists()
    assert fresh_logging.propagate is False


def test_unwritable_logs_dir_is_reported_not_fatal(
    fresh_logging: logging.Logger, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "logs"
    blocker.write_text("a file where the folder should be")
    setup_logging(blocker, console=False)
    assert "cannot write logs to" in capsys.readouterr().err
    logging.getLogger("fourdqbo.x").warning("still fine")


def test_log_file_is_created_in_logs_dir(fresh_logging: logging.Logger, tmp_path: Path) -> None:
    setup_logging(tmp_path / "deep" / "logs", console=False)
    logging.getLogger("fourdqbo").info("hello")
    assert "hello" in log_text(tmp_path / "deep" / "logs")


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_terminal_console_logs_go_to_stderr_not_stdout(
    fresh_logging: logging.Logger,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Regression: on a terminal the rich handler used rich's default console, which is
    # stdout, mixing log lines into `--json` output.
    register_sensitive("Leocadia Fenwright")
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    setup_logging(tmp_path / "logs", console=True)
    logging.getLogger("fourdqbo.cli").warning("throttled for Leocadia Fenwright")
    assert capsys.readouterr().out == ""
    assert "throttled for" in terminal.getvalue()
    assert "redacted" in terminal.getvalue()  # rich highlights the brackets
    assert "Leocadia" not in terminal.getvalue()


def test_log_files_are_owner_only(fresh_logging: logging.Logger, tmp_path: Path) -> None:
    import os
    import stat

    old = os.umask(0)
    try:
        setup_logging(tmp_path / "logs", console=False)
        logging.getLogger("fourdqbo.x").warning("quote 10023 synced")
    finally:
        os.umask(old)
    log_file = tmp_path / "logs" / "fourdqbo.log"
    assert stat.S_IMODE(log_file.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "logs").stat().st_mode) == 0o700
    assert "quote 10023 synced" in log_file.read_text()


# --- token fragments: QBO's 401 quotes the start of the token ---------------------------

TOKEN = "AB01x9KpQr7sTuVwXyZ0123456789abcdefLMNOP"


def test_token_expired_text_is_scrubbed_even_unregistered() -> None:
    text = "fault 3200: Token expired: ZZ99qwertyuiop… (intuit_tid=abc)"
    assert redact(text) == f"fault 3200: Token expired: {REDACTED} (intuit_tid=abc)"


def test_bearer_token_is_scrubbed_but_not_the_www_authenticate_realm() -> None:
    assert redact("Authorization: Bearer eyJhbGci.eyJzdWIi.sig-_x") == (
        f"Authorization: Bearer {REDACTED}"
    )
    header = 'Bearer realm="Intuit", error="invalid_token"'
    assert redact(header) == header


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("detail AB01x9… more", f"detail {REDACTED}… more"),
        ("detail AB01x9Kp... more", f"detail {REDACTED}... more"),
        ("ends with ab01x9kpqr", f"ends with {REDACTED}"),
        ("ends with AB01.", f"ends with {REDACTED}."),
        ("line AB01x9\nnext line", f"line {REDACTED}\nnext line"),
    ],
)
def test_prefix_of_a_registered_token_is_scrubbed(text: str, expected: str) -> None:
    register_sensitive(TOKEN)
    assert redact(text) == expected


def test_fragments_need_four_characters_and_a_cut() -> None:
    register_sensitive(TOKEN)
    # Three characters, or a prefix that runs on into other text, is ordinary text.
    assert redact("ends with AB0") == "ends with AB0"
    assert redact("AB01 is a room number on floor 2") == "AB01 is a room number on floor 2"
    assert redact("xAB01x9…") == "xAB01x9…"  # not the start of a word


def test_prefixes_of_names_are_not_scrubbed() -> None:
    # A name is registered whole; only token-shaped values (long, no spaces) lose prefixes.
    register_sensitive("Mirabel Okonkwo-Hayes", "Quentin")
    assert redact("see Mira") == "see Mira"
    assert redact("Quen…") == "Quen…"


def test_register_secret_scrubs_prefixes_of_short_secrets_too() -> None:
    register_secret("s3cr3tKey")
    assert redact("key s3cr…") == f"key {REDACTED}…"
    assert redact("key S3CR3TKEY here") == f"key {REDACTED} here"


def test_secrets_for_one_call_are_scrubbed_without_registering() -> None:
    held = "QQ77unregisteredAccessTokenValue42"
    assert redact("Token was QQ77unr…", secrets=[held]) == f"Token was {REDACTED}…"
    assert redact(f"whole {held} here", secrets=[held]) == f"whole {REDACTED} here"
    assert redact("Token was QQ77unr…") == "Token was QQ77unr…"  # not remembered


def test_token_fragment_never_reaches_the_log_file(
    fresh_logging: logging.Logger, tmp_path: Path
) -> None:
    register_sensitive(TOKEN)
    setup_logging(tmp_path / "logs", console=False)
    logging.getLogger("fourdqbo.qbo").warning("qbo said %s", f"Token expired: {TOKEN[:6]}…")
    logging.getLogger("fourdqbo.qbo").warning("cut %s", TOKEN[:9])
    text = log_text(tmp_path / "logs")
    assert TOKEN[:4] not in text
    assert text.count(REDACTED) == 2
