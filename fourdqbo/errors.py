"""The exception hierarchy: every expected failure is a FourdqboError carrying its exit code.

The CLI maps these to a one-line message and the documented exit code, once, at the top
(`fourdqbo.cli.app`). Messages never contain patient names, tokens or secrets.
"""

from __future__ import annotations

from typing import Any

EXIT_OK = 0
EXIT_ATTENTION = 1  # finished, but some quotes failed or are conflicts
EXIT_USAGE = 2  # usage or configuration error; nothing was called
EXIT_UPSTREAM = 3  # an upstream refused or was unreachable; nothing more was written
EXIT_LOCKED = 75  # another sync holds the lock (EX_TEMPFAIL)


class FourdqboError(Exception):
    """Base of every expected failure."""

    exit_code: int = EXIT_ATTENTION

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class ConfigError(FourdqboError):
    """A missing or malformed setting, a bad flag or date: nothing was called."""

    exit_code = EXIT_USAGE


class TokenMissing(ConfigError):
    """No QBO token file: the operator has to run `fourdqbo auth login`."""


class UpstreamError(FourdqboError):
    """4D, QBO, Intuit OAuth or the state store refused or could not be reached."""

    exit_code = EXIT_UPSTREAM

    def __init__(
        self,
        message: str,
        *,
        service: str = "",
        status: int | None = None,
        intuit_tid: str | None = None,
    ) -> None:
        super().__init__(message)
        self.service = service
        self.status = status
        self.intuit_tid = intuit_tid


class AuthError(UpstreamError):
    """Credentials were refused (4D 401/403, QBO 401 after a refresh, OAuth invalid_grant)."""


class MalformedPayload(UpstreamError):
    """An upstream answered with JSON we cannot use (wrong shape, bad numbers, bad dates)."""

    # The quote Version the unusable record still stated, when it did: a quote that keeps
    # failing this way gives up at that Version, and is tried again once it changes.
    version: int | None = None


class OutcomeUnknown(UpstreamError):
    """A write was sent but its answer was lost (timeout, dropped connection, 5xx).

    The write may or may not have been applied: the caller must look the document up
    before writing again. Never retried blindly.
    """


class CdcCannotAdvance(UpstreamError):
    """A full QBO change-data-capture answer cannot be paged past (its 1,000 changes share
    one time): asking again from that time would answer the same page."""


class QBOFault(UpstreamError):
    """QBO answered with a Fault: JSON or XML, any status, or a per-item batch fault.

    `detail` is scrubbed (QBO's 401 detail quotes the start of the token)."""

    def __init__(
        self,
        message: str,
        *,
        code: str = "",
        detail: str = "",
        element: str = "",
        fault_type: str = "",
        status: int | None = None,
        intuit_tid: str | None = None,
    ) -> None:
        super().__init__(message, service="qbo", status=status, intuit_tid=intuit_tid)
        self.code = code
        self.detail = detail
        self.element = element
        self.fault_type = fault_type


class StateStoreError(UpstreamError):
    """The state store (Redis or the state files) could not be used."""


class LockHeld(FourdqboError):
    """Another sync run holds the lock; this run did nothing."""

    exit_code = EXIT_LOCKED

    @classmethod
    def by(cls, holder: Any) -> LockHeld:
        """The refusal of a run that found the lock held by `holder` (a LockInfo, or None
        when the holder could not be read)."""
        who = f" by {holder.host} pid {holder.pid}" if holder is not None else ""
        return cls(f"another sync run holds the lock{who}; nothing done")
