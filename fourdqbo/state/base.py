"""The state store contract: what a sync run remembers between runs, and its lock.

A `StateStore` keeps, per QBO realm, the watermark (where the next window starts), the
sync lock, the retry queue (quotes that failed, tried first next run), the conflicts
(quotes that need a person) and a capped run history. Two backends implement it —
Redis (`redis_store`) and local files (`file_store`) — and pass one contract test suite.

`SyncLock` is the owner's handle on the lock. Only the handle that took the lock can
extend or release it (its random token is compared by the backend), and a background
heartbeat keeps it alive while a long run works; if the heartbeat cannot extend it, the
handle is marked `lost` and the engine stops writing at the next batch boundary.
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Self

from fourdqbo.errors import ConfigError, StateStoreError
from fourdqbo.log import redact
from fourdqbo.timefmt import parse_instant

log = logging.getLogger(__name__)

RUN_HISTORY_LIMIT = 100
LOCK_HISTORY_LIMIT = 1000
# Errors are one line in `sync status`; a whole stack of text helps nobody there.
ERROR_TEXT_LIMIT = 1000
# A realm id becomes a directory name and a key segment: keep it to harmless characters.
_REALM_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


@dataclass(frozen=True)
class LockInfo:
    """Who holds the sync lock. `expires_at` is None where the lock does not expire by time
    (the file backend's OS lock lasts exactly as long as its process)."""

    token: str
    run_id: str
    host: str
    pid: int
    since: datetime
    expires_at: datetime | None


@dataclass(frozen=True)
class RetryEntry:
    """A quote that failed; it is tried first next run and leaves the queue on success."""

    quote: str
    error: str
    attempts: int
    first_failed_at: datetime
    last_failed_at: datetime


@dataclass(frozen=True)
class ConflictEntry:
    """A quote that needs a person (paid invoice, duplicate DocNumber); kept until resolved."""

    quote: str
    invoice_id: str | None
    reason: str
    detected_at: datetime


@dataclass(frozen=True)
class LockEvent:
    """One entry of the lock history, kept so that a test (or an operator) can check that the
    lock was never held by two owners at once.

    `event` is `acquired`, `released`, `broken` (`sync unlock`), `expired` (noticed when the
    next owner took a lock whose holder never released it) or `lost` (a heartbeat found the
    lock gone). In the Redis backend `at` is the Redis server's clock, so events written by
    different hosts are comparable.
    """

    event: str
    token: str
    at: datetime
    run_id: str | None = None
    host: str | None = None
    pid: int | None = None
    ttl_ms: int | None = None


class LockLost(StateStoreError):
    """The heartbeat could not extend the lock: another owner may hold it now."""


class SyncLock(ABC):
    """The owner's handle on the sync lock, returned by `StateStore.acquire_lock`.

    Also a context manager: leaving the block stops the heartbeat and releases the lock.
    """

    def __init__(self, info: LockInfo, ttl_seconds: float) -> None:
        self.token: str = info.token
        self.info: LockInfo = info
        self.ttl_seconds = ttl_seconds
        self.lost: bool = False
        self.lost_reason: str | None = None
        self._beat_thread: threading.Thread | None = None
        self._beat_stop = threading.Event()

    def extend(self) -> bool:
        """Reset the lock's time to live; False if this handle no longer owns the lock."""
        return self._extend()

    def release(self) -> bool:
        """Stop the heartbeat and give the lock up; False if this handle did not own it any
        more (then nothing changed: a stale handle never removes another owner's lock)."""
        self.stop_heartbeat()
        return self._release()

    @abstractmethod
    def _extend(self) -> bool: ...

    @abstractmethod
    def _release(self) -> bool: ...

    def _on_lost(self, reason: str) -> None:  # noqa: B027 - optional hook
        """Backends may record the loss (best effort)."""

    def check(self) -> None:
        """Raise LockLost if the heartbeat found the lock gone (call between batches)."""
        if self.lost:
            raise LockLost(
                f"sync lock lost ({self.lost_reason}); another run may hold it now",
                service="state",
            )

    def start_heartbeat(self, interval: float | None = None) -> None:
        """Extend the lock every `interval` seconds (default a third of its TTL) in a daemon
        thread until `stop_heartbeat`. If the lock cannot be extended, `lost` becomes True."""
        if self._beat_thread is not None and self._beat_thread.is_alive():
            return
        period = interval if interval is not None else self.ttl_seconds / 3
        if period <= 0:
            raise ValueError("heartbeat interval must be above 0")
        self._beat_stop = threading.Event()
        self._beat_thread = threading.Thread(
            target=self._beat,
            args=(period, self._beat_stop),
            name=f"sync-lock-heartbeat-{self.info.run_id}",
            daemon=True,
        )
        self._beat_thread.start()

    def stop_heartbeat(self) -> None:
        self._beat_stop.set()
        thread = self._beat_thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=10)
        self._beat_thread = None

    def _beat(self, period: float, stop: threading.Event) -> None:
        last_extended = time.monotonic()
        wait = period
        while not stop.wait(wait):
            try:
                extended = self.extend()
            except StateStoreError as exc:
                # A blip of the store is not a loss yet: the lock is ours until its TTL runs
                # out, so keep trying (sooner) until then.
                if time.monotonic() - last_extended >= self.ttl_seconds:
                    self._mark_lost(f"could not extend it for its whole TTL: {exc}")
                    return
                log.warning("sync lock heartbeat failed, retrying: %s", exc)
                wait = min(period, 1.0)
                continue
            if stop.is_set():
                return  # released while we were extending: not a loss
            if not extended:
                self._mark_lost("it expired or was taken by another owner")
                return
            last_extended = time.monotonic()
            wait = period

    def _mark_lost(self, reason: str) -> None:
        self.lost_reason = reason
        self.lost = True
        log.error("sync lock of run %s lost: %s", self.info.run_id, reason)
        # Recording the loss is best effort; `lost` is what the engine acts on.
        with contextlib.suppress(StateStoreError):
            self._on_lost(reason)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop_heartbeat()
        try:
            self.release()
        except StateStoreError as error:
            # Raising here would hide the run's own outcome; an unreleased lock expires.
            log.warning("could not release the sync lock: %s", error)


class StateStore(ABC):
    """What a sync run keeps between runs, for one QBO realm."""

    realm_id: str

    @abstractmethod
    def ping(self) -> None:
        """Raise StateStoreError if the store cannot be used."""

    @abstractmethod
    def watermark(self) -> datetime | None:
        """Where the next window starts (aware UTC), None before the first complete run."""

    @abstractmethod
    def advance_watermark(self, to: datetime) -> bool:
        """Move the watermark to `to` if that is later (atomic); True if it moved."""

    @abstractmethod
    def reset_watermark(self, to: datetime) -> None:
        """Set the watermark to `to`, even backwards (`sync reset`)."""

    @abstractmethod
    def acquire_lock(self, run_id: str, ttl_seconds: float = 300.0) -> SyncLock | None:
        """Take the sync lock, or None if another owner holds it."""

    @abstractmethod
    def lock_holder(self) -> LockInfo | None:
        """Who holds the lock now, None if nobody does."""

    @abstractmethod
    def break_lock(self) -> LockInfo | None:
        """Remove whatever lock is there (`sync unlock`); returns what it found, None if none.

        Redis deletes the key (the old owner's handle can no longer extend or release it and
        its heartbeat reports `lost`). The file backend removes a dead holder's side file; a
        live process's OS lock cannot be taken away, so its info is returned and stays in
        place (`lock_holder()` still reports it: stop that process instead).
        """

    def lock_history(self, limit: int = LOCK_HISTORY_LIMIT) -> list[LockEvent]:
        """The newest `limit` lock events, oldest first (both backends keep the last
        LOCK_HISTORY_LIMIT; a store without history returns none)."""
        return []

    @abstractmethod
    def retry_queue(self) -> list[RetryEntry]:
        """Quotes to try first, oldest failure first."""

    @abstractmethod
    def record_failure(self, quote: str, error: str, at: datetime) -> None:
        """Queue a failed quote, or count one more attempt of a queued one."""

    @abstractmethod
    def clear_failure(self, quote: str) -> None: ...

    @abstractmethod
    def conflicts(self) -> list[ConflictEntry]:
        """Quotes that need a person, oldest first."""

    @abstractmethod
    def record_conflict(self, entry: ConflictEntry) -> None:
        """Add a conflict, replacing any earlier one of the same quote."""

    @abstractmethod
    def clear_conflict(self, quote: str) -> None: ...

    @abstractmethod
    def append_run(self, summary: dict[str, Any]) -> None:
        """Keep a run's JSON-able summary; only the newest RUN_HISTORY_LIMIT are kept."""

    @abstractmethod
    def runs(self, limit: int = 10) -> list[dict[str, Any]]:
        """The newest `limit` run summaries, newest first."""

    @abstractmethod
    def close(self) -> None: ...

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def check_realm_id(realm_id: str) -> str:
    """A realm id is part of every key and of a directory name: refuse anything odd."""
    if not isinstance(realm_id, str) or not _REALM_ID.fullmatch(realm_id):
        raise ConfigError(
            f"not a usable QBO realm id for the state store: {realm_id!r} "
            "(expected letters, digits, '.', '_' or '-')"
        )
    return realm_id


def stored_instant(moment: datetime) -> str:
    """How times are stored: UTC, fixed width with microseconds and `Z`, so that stored
    values compare correctly as strings (the Redis watermark script relies on this)."""
    if moment.tzinfo is None:
        raise ValueError("naive datetime given to the state store")
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def read_instant(text: str, what: str) -> datetime:
    try:
        return parse_instant(text)
    except (ValueError, TypeError):
        raise StateStoreError(
            f"state store holds an unreadable {what}: {text!r}", service="state"
        ) from None


def error_text(error: str) -> str:
    """An error as the retry queue keeps it: one line, bounded, scrubbed of known secrets and
    patient data (defence in depth; callers should not pass such text in the first place)."""
    one_line = " ".join(str(error).split())
    if len(one_line) > ERROR_TEXT_LIMIT:
        one_line = one_line[: ERROR_TEXT_LIMIT - 1] + "…"
    return redact(one_line)


def scrubbed(value: Any) -> Any:
    """A run summary with every string value passed through the log privacy filter.

    Keys are left alone: a registered name that happens to equal a key (a patient called
    "Quote") must not break the summary's shape.
    """
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {key: scrubbed(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [scrubbed(item) for item in value]
    return value


def retry_entry(quote: str, document: Any) -> RetryEntry:
    try:
        return RetryEntry(
            quote=quote,
            error=str(document["error"]),
            attempts=int(document["attempts"]),
            first_failed_at=read_instant(document["first_failed_at"], "retry time"),
            last_failed_at=read_instant(document["last_failed_at"], "retry time"),
        )
    except (KeyError, TypeError, ValueError):
        raise StateStoreError(
            f"state store holds an unreadable retry entry for quote {quote}", service="state"
        ) from None


def retry_document(entry: RetryEntry) -> dict[str, Any]:
    return {
        "quote": entry.quote,
        "error": entry.error,
        "attempts": entry.attempts,
        "first_failed_at": stored_instant(entry.first_failed_at),
        "last_failed_at": stored_instant(entry.last_failed_at),
    }


def conflict_entry(quote: str, document: Any) -> ConflictEntry:
    try:
        invoice_id = document.get("invoice_id")
        return ConflictEntry(
            quote=quote,
            invoice_id=None if invoice_id is None else str(invoice_id),
            reason=str(document["reason"]),
            detected_at=read_instant(document["detected_at"], "conflict time"),
        )
    except (AttributeError, KeyError, TypeError, ValueError):
        raise StateStoreError(
            f"state store holds an unreadable conflict for quote {quote}", service="state"
        ) from None


def conflict_document(entry: ConflictEntry) -> dict[str, Any]:
    return {
        "quote": entry.quote,
        "invoice_id": entry.invoice_id,
        "reason": error_text(entry.reason),
        "detected_at": stored_instant(entry.detected_at),
    }


def lock_document(info: LockInfo) -> dict[str, Any]:
    return {
        "token": info.token,
        "run_id": info.run_id,
        "host": info.host,
        "pid": info.pid,
        "since": stored_instant(info.since),
    }


def lock_info(document: Any, expires_at: datetime | None) -> LockInfo:
    try:
        return LockInfo(
            token=str(document["token"]),
            run_id=str(document["run_id"]),
            host=str(document["host"]),
            pid=int(document["pid"]),
            since=read_instant(document["since"], "lock time"),
            expires_at=expires_at,
        )
    except (KeyError, TypeError, ValueError):
        raise StateStoreError(
            "state store holds an unreadable lock record (`fourdqbo sync unlock` removes it)",
            service="state",
        ) from None


def sort_retry(entries: list[RetryEntry]) -> list[RetryEntry]:
    return sorted(entries, key=lambda e: (e.first_failed_at, e.quote))


def sort_conflicts(entries: list[ConflictEntry]) -> list[ConflictEntry]:
    return sorted(entries, key=lambda e: (e.detected_at, e.quote))
