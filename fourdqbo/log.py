"""Logging: a rotating file in LOGS_DIR plus the console, with a privacy filter on both.

The filter is defence in depth. Code logs quote numbers and ids only, but every secret
from the settings, every token the token store handles and every patient name or birth
date the 4D client parses is registered here, and any record containing one is scrubbed
before it is written anywhere.
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import re
import sys
import threading
from pathlib import Path

REDACTED = "[redacted]"
_MIN_LENGTH = 3  # shorter strings would scrub ordinary words and numbers

_lock = threading.Lock()
_sensitive: set[str] = set()
_pattern: re.Pattern[str] | None = None


def register_sensitive(*values: str | None) -> None:
    """Remember strings that must never appear in a log record."""
    global _pattern
    fresh = {v.strip() for v in values if v and len(v.strip()) >= _MIN_LENGTH}
    with _lock:
        if fresh <= _sensitive:
            return
        _sensitive.update(fresh)
        # Compiled when a record is next scrubbed: compiling here, once per new patient
        # name, made listing a window of thousands of patients quadratic (minutes).
        _pattern = None


def redact(text: str) -> str:
    global _pattern
    pattern = _pattern
    if pattern is None:
        with _lock:
            if not _sensitive:
                return text
            if _pattern is None:
                ordered = sorted(_sensitive, key=len, reverse=True)
                _pattern = re.compile("|".join(re.escape(v) for v in ordered), re.IGNORECASE)
            pattern = _pattern
    return pattern.sub(REDACTED, text)


class PrivacyFilter(logging.Filter):
    """Scrubs registered secrets and patient data from each record's final message."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:
            # Arguments that do not fit the format: the handler reports that as a logging
            # error without the arguments; raising here would crash the caller instead.
            return True
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        if record.exc_info and record.exc_info[1] is not None:
            exc_text = logging.Formatter().formatException(record.exc_info)
            record.exc_text = redact(exc_text)
        elif record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever `sys.stderr` is at the time of the record, not at set-up.

    A test runner (or anything else) that swaps stderr must not leave the handler writing
    to a closed stream.
    """

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property  # type: ignore[override]
    def stream(self) -> object:
        return sys.stderr

    @stream.setter
    def stream(self, value: object) -> None:
        pass


class RunContext(logging.Filter):
    """Adds the current run id to every record (`-` outside a sync run)."""

    run_id = "-"

    def filter(self, record: logging.LogRecord) -> bool:
        record.run_id = RunContext.run_id
        return True


class PrivateRotatingFileHandler(logging.handlers.RotatingFileHandler):
    """A rotating log whose files are created owner-only (0600): they hold patient ids."""

    def _open(self):  # type: ignore[no-untyped-def]
        descriptor = os.open(self.baseFilename, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        return os.fdopen(descriptor, self.mode, encoding=self.encoding, errors=self.errors)


FILE_FORMAT = "%(asctime)s %(levelname)s run=%(run_id)s %(name)s: %(message)s"


def setup_logging(logs_dir: Path, *, verbose: bool = False, console: bool = True) -> None:
    """Configure the root `fourdqbo` logger once per process."""
    logger = logging.getLogger("fourdqbo")
    if getattr(logger, "_fourdqbo_configured", False):
        return
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    privacy, context = PrivacyFilter(), RunContext()
    try:
        logs_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        file_handler = PrivateRotatingFileHandler(
            logs_dir / "fourdqbo.log", maxBytes=5_000_000, backupCount=10, encoding="utf-8"
        )
        file_handler.setLevel(logging.INFO)
        file_handler.setFormatter(logging.Formatter(FILE_FORMAT))
        file_handler.addFilter(context)
        file_handler.addFilter(privacy)
        logger.addHandler(file_handler)
    except OSError as exc:
        print(f"fourdqbo: cannot write logs to {logs_dir}: {exc.strerror}", file=sys.stderr)
    if console:
        if sys.stderr.isatty():
            from rich.console import Console
            from rich.logging import RichHandler

            # stderr: rich's default console is stdout, which would mix log lines into
            # the one JSON document that `--json` prints there.
            handler: logging.Handler = RichHandler(
                console=Console(stderr=True), show_path=False, markup=False
            )
        else:
            handler = _StderrHandler()
            handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
        handler.setLevel(logging.DEBUG if verbose else logging.WARNING)
        handler.addFilter(context)
        handler.addFilter(privacy)
        logger.addHandler(handler)
    logger._fourdqbo_configured = True  # type: ignore[attr-defined]
