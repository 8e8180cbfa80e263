"""Logging: a rotating file in LOGS_DIR plus the console, with a privacy filter on both.

The file holds text lines or, with LOG_FORMAT=json, one JSON object a line (`JsonFormatter`)
for a log shipper; both carry the run id and, where code names it, the quote.

The filter is defence in depth. Code logs quote numbers and ids only, but every secret
from the settings, every token the token store handles and every patient name or birth
date the 4D client parses is registered here, and any record containing one is scrubbed
before it is written anywhere.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import logging.handlers
import os
import re
import sys
import threading
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path

REDACTED = "[redacted]"
_MIN_LENGTH = 3  # shorter strings would scrub ordinary words and numbers
_MIN_FRAGMENT = 4  # a shorter prefix of a token would scrub ordinary words and numbers
# A registered value this long without whitespace is a token or secret, not a name: its
# prefixes are scrubbed too (QBO quotes "Token expired: AB01…" in its 401 answers).
_SECRET_LENGTH = 16

_lock = threading.Lock()
_sensitive: set[str] = set()
_secrets: tuple[str, ...] = ()  # casefolded, for the fragment check
_pattern: re.Pattern[str] | None = None

_TOKEN_CHARS = r"A-Za-z0-9\-_.~+/"
# Text that quotes a credential whatever it is, registered or not.
_CREDENTIAL_TEXT = re.compile(
    r"(?P<lead>\bToken expired:\s*)[^\s\"'<>,;)]+"
    rf"|(?P<bearer>\bBearer\s+)(?![A-Za-z]+=\")[{_TOKEN_CHARS}]+=*",
    re.IGNORECASE,
)
# A token-like run cut short by an ellipsis or the end of a line: a candidate fragment.
_FRAGMENT = re.compile(
    rf"(?<![{_TOKEN_CHARS}])(?P<run>[{_TOKEN_CHARS}]{{{_MIN_FRAGMENT},}}?)(?=…|\.\.\.|\s*$)",
    re.MULTILINE,
)


def register_sensitive(*values: str | None) -> None:
    """Remember strings that must never appear in a log record.

    Values shaped like a token or secret (`_SECRET_LENGTH` characters or more, no
    whitespace) are also scrubbed where only their start is quoted (see `redact`).
    """
    fresh = {v.strip() for v in values if v and len(v.strip()) >= _MIN_LENGTH}
    _remember(fresh, {v for v in fresh if len(v) >= _SECRET_LENGTH and not _has_space(v)})


def register_secret(*values: str | None) -> None:
    """Remember tokens and secrets: scrubbed whole and where only their start is quoted."""
    fresh = {v.strip() for v in values if v and len(v.strip()) >= _MIN_LENGTH}
    _remember(fresh, fresh)


def _has_space(value: str) -> bool:
    return any(c.isspace() for c in value)


def _remember(values: set[str], secrets: set[str]) -> None:
    global _pattern, _secrets
    with _lock:
        known = set(_secrets)
        if values <= _sensitive and {s.casefold() for s in secrets} <= known:
            return
        _sensitive.update(values)
        _secrets = tuple(sorted(known | {s.casefold() for s in secrets}))
        # Compiled when a record is next scrubbed: compiling here, once per new patient
        # name, made listing a window of thousands of patients quadratic (minutes).
        _pattern = None


def redact(text: str, *, secrets: Iterable[str] = ()) -> str:
    """Scrub registered values, prefixes of registered secrets (4+ characters followed by an
    ellipsis or the end of a line), and credentials quoted as `Bearer …` or
    `Token expired: …` whether registered or not.

    `secrets` are scrubbed the same way for this call only (a token the caller holds).
    """
    pattern = _compiled()
    if pattern is not None:
        text = pattern.sub(REDACTED, text)
    extra = tuple(v.strip() for v in secrets if v and len(v.strip()) >= _MIN_FRAGMENT)
    for value in extra:
        text = re.sub(re.escape(value), REDACTED, text, flags=re.IGNORECASE)
    text = _CREDENTIAL_TEXT.sub(_scrub_credential, text)
    known = _secrets + tuple(v.casefold() for v in extra)
    if known:
        text = _FRAGMENT.sub(lambda match: _scrub_fragment(match, known), text)
    return text


def _compiled() -> re.Pattern[str] | None:
    global _pattern
    pattern = _pattern
    if pattern is None:
        with _lock:
            if not _sensitive:
                return None
            if _pattern is None:
                ordered = sorted(_sensitive, key=len, reverse=True)
                _pattern = re.compile("|".join(re.escape(v) for v in ordered), re.IGNORECASE)
            pattern = _pattern
    return pattern


def _scrub_credential(match: re.Match[str]) -> str:
    return (match.group("lead") or match.group("bearer")) + REDACTED


def _scrub_fragment(match: re.Match[str], secrets: tuple[str, ...]) -> str:
    run = match.group("run")
    # A full stop ending the sentence is not part of the fragment.
    stem = run.rstrip(".")
    folded = stem.casefold()
    if len(stem) >= _MIN_FRAGMENT and any(secret.startswith(folded) for secret in secrets):
        return REDACTED + run[len(stem) :]
    return run


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


_quote: contextvars.ContextVar[str | None] = contextvars.ContextVar("fourdqbo_quote", default=None)


@contextlib.contextmanager
def quote_context(quote: str) -> Iterator[None]:
    """Records logged inside this block (in this thread or task) carry `quote`. A record's
    own `extra={"quote": ...}` wins over it."""
    token = _quote.set(quote)
    try:
        yield
    finally:
        _quote.reset(token)


class RunContext(logging.Filter):
    """Adds the current run id to every record (`-` outside a sync run), and the quote the
    record is about (`extra={"quote": ...}` or `quote_context`; None when not known)."""

    run_id = "-"

    def filter(self, record: logging.LogRecord) -> bool:
        record.run_id = RunContext.run_id
        if getattr(record, "quote", None) is None:
            record.quote = _quote.get()
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time (ISO 8601 UTC, `Z`), level, logger, run_id, quote,
    message, and `exc` with the traceback text when there is one.

    Runs after the handler's filters, so the message and traceback are the ones the
    privacy filter already scrubbed; the other strings are scrubbed here once more, since
    they never passed through it.
    """

    def format(self, record: logging.LogRecord) -> str:
        moment = datetime.fromtimestamp(record.created, UTC)
        document: dict[str, object] = {
            "time": moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "run_id": getattr(record, "run_id", "-"),
            "quote": getattr(record, "quote", None),
            "message": record.getMessage(),
        }
        if record.exc_info and not record.exc_text:
            record.exc_text = redact(self.formatException(record.exc_info))
        if record.exc_text:
            document["exc"] = record.exc_text
        if record.stack_info:
            document["stack"] = record.stack_info
        for key in ("logger", "run_id", "quote"):
            if isinstance(document[key], str):
                document[key] = redact(document[key])  # type: ignore[arg-type]
        return json.dumps(document, ensure_ascii=False, default=str)


class PrivateRotatingFileHandler(logging.handlers.RotatingFileHandler):
    """A rotating log whose files are created owner-only (0600): they hold patient ids."""

    def _open(self):  # type: ignore[no-untyped-def]
        descriptor = os.open(self.baseFilename, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        return os.fdopen(descriptor, self.mode, encoding=self.encoding, errors=self.errors)


FILE_FORMAT = "%(asctime)s %(levelname)s run=%(run_id)s %(name)s: %(message)s"


def setup_logging(
    logs_dir: Path, *, verbose: bool = False, console: bool = True, log_format: str = "text"
) -> None:
    """Configure the root `fourdqbo` logger once per process; `log_format` ("text" or
    "json", LOG_FORMAT) shapes the file log only: the console stays for people."""
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
        file_handler.setFormatter(
            JsonFormatter() if log_format == "json" else logging.Formatter(FILE_FORMAT)
        )
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
