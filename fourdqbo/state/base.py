"""The state store contract: what a sync run remembers between runs, and its lock.

A `StateStore` keeps, per QBO realm, the watermark (where the next window starts), the
sync lock, the retry queue (quotes that failed, tried first next run), the conflicts
(quotes that need a person) and a capped run history; and since 0.2 the ledger (the last
write the sync made per quote), the items needing a person (`AttentionItem`, which also
show 0.1's conflicts), the acceptances a bookkeeper gave, the CDC cursor and the time of
the last reminder. Two backends implement it — Redis (`redis_store`) and local files
(`file_store`) — and pass one contract test suite.

`SyncLock` is the owner's handle on the lock. Only the handle that took the lock can
extend or release it (its random token is compared by the backend), and a background
heartbeat keeps it alive while a long run works; if the heartbeat cannot extend it, the
handle is marked `lost` and the engine stops writing at the next batch boundary.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Self

from fourdqbo.errors import ConfigError, StateStoreError
from fourdqbo.log import redact
from fourdqbo.state.items import (
    Acceptance,
    AttentionItem,
    AttentionKind,
    Difference,
    LedgerEntry,
)
from fourdqbo.timefmt import parse_instant

log = logging.getLogger(__name__)

RUN_HISTORY_LIMIT = 100
LOCK_HISTORY_LIMIT = 1000
# Errors are one line in `sync status`; a whole stack of text helps nobody there.
ERROR_TEXT_LIMIT = 1000
# A realm id becomes a directory name and a key segment: keep it to harmless characters.
_REALM_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
# How 0.1's planner worded a duplicate DocNumber ("2 QBO invoices share DocNumber 10005").
_LEGACY_DUPLICATE = re.compile(r"invoices share (?:the )?DocNumber", re.IGNORECASE)


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


@dataclass(frozen=True)
class StateSnapshot:
    """What `status` and the metrics show, read together (one round trip in Redis).

    `attention` holds the open items as `attention_items()` orders them, 0.1 conflicts
    included; `attention_counts` counts them by kind, every kind present.
    """

    watermark: datetime | None
    cdc_cursor: datetime | None
    last_reminded_at: datetime | None
    retry_queue_size: int
    ledger_size: int
    attention: tuple[AttentionItem, ...]

    @property
    def attention_counts(self) -> dict[str, int]:
        return count_attention(self.attention)


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
        # Recording the loss is best effort; `lost` is what the engine acts on. The engine
        # may close the store as soon as it sees `lost` (a run ending), while this thread
        # still writes the note: whatever that raises must not end the thread with a
        # traceback on stderr.
        try:
            self._on_lost(reason)
        except Exception as exc:
            log.warning("could not record the loss of the sync lock: %s", exc)

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
    def record_failure(self, quote: str, error: str, at: datetime) -> RetryEntry:
        """Queue a failed quote, or count one more attempt of a queued one (atomic); returns
        the entry as it now stands (`attempts` 1 on a first failure, then 2, 3, …)."""

    @abstractmethod
    def clear_failure(self, quote: str) -> None: ...

    @abstractmethod
    def retry_entries(self, quotes: Iterable[str]) -> dict[str, RetryEntry]:
        """The queued entries of these quotes (quotes not queued are left out)."""

    @abstractmethod
    def retry_queue_size(self) -> int:
        """How many quotes the retry queue holds."""

    @abstractmethod
    def give_up(self, quote: str, item: AttentionItem) -> None:
        """Atomically take `quote` out of the retry queue and record `item` (of kind
        `gave_up`, for that quote) as its open item, replacing any earlier one."""

    @abstractmethod
    def requeue(self, quotes: Iterable[str], at: datetime) -> list[str]:
        """`sync retry`: each quote whose open item is `gave_up` loses that item and goes back
        into the retry queue with 0 attempts, failed "at" `at`, keeping the item's reason as
        its error. Other quotes are ignored. Returns the quotes requeued, in the given order."""

    @abstractmethod
    def conflicts(self) -> list[ConflictEntry]:
        """Quotes that need a person, oldest first (0.1's record; see `attention_items`)."""

    @abstractmethod
    def record_conflict(self, entry: ConflictEntry) -> None:
        """Add a conflict, replacing any earlier one of the same quote."""

    @abstractmethod
    def clear_conflict(self, quote: str) -> None: ...

    # --- ledger: the last write the sync made, per quote -----------------------------

    @abstractmethod
    def ledger(self, quotes: Iterable[str]) -> dict[str, LedgerEntry]:
        """The ledger entries of these quotes, by quote (quotes without one are left out)."""

    @abstractmethod
    def ledger_for_invoices(self, invoice_ids: Iterable[str]) -> dict[str, LedgerEntry]:
        """The ledger entries whose invoice is one of these ids, by invoice id (CDC names a
        deleted invoice only by its Id). Only an entry's current invoice id finds it.

        An invoice belongs to one quote (its DocNumber); should two quotes' entries name
        one invoice all the same (a hand edit), which of them is found is not part of the
        contract, but never an entry that names another invoice."""

    @abstractmethod
    def record_ledger(self, entries: Iterable[LedgerEntry]) -> None:
        """Store these entries (atomic per call), each replacing its quote's earlier one."""

    @abstractmethod
    def forget_ledger(self, quotes: Iterable[str]) -> None:
        """Drop the entries of these quotes (missing ones are ignored)."""

    @abstractmethod
    def ledger_size(self) -> int:
        """How many quotes have a ledger entry."""

    # --- items needing a person --------------------------------------------------------

    @abstractmethod
    def attention_items(self) -> list[AttentionItem]:
        """Every open item, oldest detected first, then by quote; a 0.1 conflict of a quote
        without a newer item shows as one (see `legacy_attention`)."""

    @abstractmethod
    def attention_item(self, quote: str) -> AttentionItem | None:
        """The open item of one quote (a 0.1 conflict counts), None if there is none."""

    @abstractmethod
    def record_attention(self, items: Iterable[AttentionItem]) -> None:
        """Store these items, each replacing its quote's open item."""

    @abstractmethod
    def clear_attention(self, quotes: Iterable[str]) -> None:
        """Close the items of these quotes, 0.1 conflicts included."""

    @abstractmethod
    def attention_counts(self) -> dict[str, int]:
        """Open items by kind, every `AttentionKind` present (0 when none): for metrics."""

    # --- acceptances -------------------------------------------------------------------

    @abstractmethod
    def acceptances(self, quotes: Iterable[str] | None = None) -> dict[str, Acceptance]:
        """The acceptances of these quotes (None: all of them), by quote."""

    @abstractmethod
    def record_acceptance(self, acceptance: Acceptance) -> None:
        """Store an acceptance, replacing the quote's earlier one."""

    @abstractmethod
    def clear_acceptance(self, quotes: Iterable[str]) -> None: ...

    # --- CDC cursor and reminders ------------------------------------------------------

    def cdc_cursor(self) -> datetime | None:
        """Where the next CDC read starts (aware UTC), None before the first run set it."""
        return self._instant("cdc_cursor", "CDC cursor")

    def set_cdc_cursor(self, at: datetime) -> None:
        """Set the cursor to `at`, forwards or backwards (the sync decides); naive refused."""
        self._set_instant("cdc_cursor", at)

    def last_reminded_at(self) -> datetime | None:
        """When a run last reported everything still open, None if never."""
        return self._instant("reminded_at", "reminder time")

    def set_last_reminded_at(self, at: datetime) -> None:
        """Set when open items were last re-reported (naive refused)."""
        self._set_instant("reminded_at", at)

    def snapshot(self) -> StateSnapshot:
        """The counters and instants of `status` and the metrics in one read (a backend
        that can read them in one step does so; this default just asks for each)."""
        return StateSnapshot(
            watermark=self.watermark(),
            cdc_cursor=self.cdc_cursor(),
            last_reminded_at=self.last_reminded_at(),
            retry_queue_size=self.retry_queue_size(),
            ledger_size=self.ledger_size(),
            attention=tuple(self.attention_items()),
        )

    @abstractmethod
    def _instant(self, name: str, what: str) -> datetime | None:
        """The single stored instant `name` (None if unset); `what` names it in errors."""

    @abstractmethod
    def _set_instant(self, name: str, at: datetime) -> None:
        """Store the single instant `name` (plain set; ValueError for a naive `at`)."""

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


def unique(quotes: Iterable[str]) -> list[str]:
    """The quotes (or ids) in their given order, each once; a lone string is refused, since
    iterating it would silently mean its characters."""
    if isinstance(quotes, str):
        raise TypeError("expected several quotes or ids, got one string")
    return list(dict.fromkeys(str(quote) for quote in quotes))


def _unreadable(what: str, quote: str) -> StateStoreError:
    return StateStoreError(
        f"state store holds an unreadable {what} for quote {quote}", service="state"
    )


def _optional_text(value: Any) -> str | None:
    return None if value is None else str(value)


def _optional_int(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise TypeError("not an integer")
    return int(value)


def _integer(value: Any) -> int:
    number = _optional_int(value)
    if number is None:
        raise TypeError("missing integer")
    return number


# --- ledger documents --------------------------------------------------------------------


def ledger_document(entry: LedgerEntry) -> dict[str, Any]:
    return {
        "quote": entry.quote,
        "invoice_id": entry.invoice_id,
        "version": entry.version,
        "sync_token": entry.sync_token,
        "run_id": entry.run_id,
        "written_at": stored_instant(entry.written_at),
        "intuit_tid": entry.intuit_tid,
        "action": entry.action,
    }


def _ledger_from(quote: str, document: Any) -> LedgerEntry:
    """Raises KeyError/TypeError/ValueError/AttributeError/StateStoreError on a bad one."""
    return LedgerEntry(
        quote=quote,
        invoice_id=_optional_text(document.get("invoice_id")),
        version=_integer(document["version"]),
        sync_token=_optional_text(document.get("sync_token")),
        run_id=str(document["run_id"]),
        written_at=read_instant(document["written_at"], "ledger time"),
        intuit_tid=_optional_text(document.get("intuit_tid")),
        action=str(document.get("action") or "created"),
    )


def ledger_entry(quote: str, document: Any) -> LedgerEntry:
    try:
        return _ledger_from(quote, document)
    except (AttributeError, KeyError, TypeError, ValueError, StateStoreError):
        raise _unreadable("ledger entry", quote) from None


def checked_ledger(entries: Iterable[LedgerEntry]) -> list[LedgerEntry]:
    """The entries of one `record_ledger` call, the last one of a quote winning, each
    checked before anything is written (a naive time fails the whole call, not half of it)."""
    by_quote: dict[str, LedgerEntry] = {}
    for entry in entries:
        stored_instant(entry.written_at)
        by_quote[entry.quote] = entry
    return list(by_quote.values())


# --- attention documents -----------------------------------------------------------------


def attention_document(item: AttentionItem) -> dict[str, Any]:
    """Differences field by field; the reason and every difference value scrubbed (these
    hold only what the sync wrote, but a registered patient name must never be stored)."""
    return {
        "quote": item.quote,
        "kind": AttentionKind(item.kind).value,
        "version": item.version,
        "invoice_id": item.invoice_id,
        "reason": error_text(item.reason),
        "detected_at": stored_instant(item.detected_at),
        "differences": [
            {
                "field": redact(difference.field),
                "qbo": None if difference.qbo is None else redact(difference.qbo),
                "quote": None if difference.quote is None else redact(difference.quote),
            }
            for difference in item.differences
        ],
        "ledger": None if item.ledger is None else ledger_document(item.ledger),
    }


def attention_entry(quote: str, document: Any) -> AttentionItem:
    try:
        ledger = document.get("ledger")
        return AttentionItem(
            quote=quote,
            kind=AttentionKind(document["kind"]),
            version=_optional_int(document.get("version")),
            invoice_id=_optional_text(document.get("invoice_id")),
            reason=str(document["reason"]),
            detected_at=read_instant(document["detected_at"], "attention time"),
            differences=tuple(
                Difference(
                    field=str(difference["field"]),
                    qbo=_optional_text(difference.get("qbo")),
                    quote=_optional_text(difference.get("quote")),
                )
                for difference in document.get("differences") or ()
            ),
            ledger=None if ledger is None else _ledger_from(quote, ledger),
        )
    except (AttributeError, KeyError, TypeError, ValueError, StateStoreError):
        raise _unreadable("item needing a person", quote) from None


def legacy_attention(entry: ConflictEntry) -> AttentionItem:
    """A 0.1 conflict as 0.2 shows it, so an upgraded installation keeps what was open:
    `duplicate_invoices` when its reason says several invoices share the DocNumber, else
    `paid` (0.1 knew no other kind); the Version it concerned was not recorded."""
    kind = (
        AttentionKind.DUPLICATE_INVOICES
        if _LEGACY_DUPLICATE.search(entry.reason)
        else AttentionKind.PAID
    )
    return AttentionItem(
        quote=entry.quote,
        kind=kind,
        version=None,
        invoice_id=entry.invoice_id,
        reason=entry.reason,
        detected_at=entry.detected_at,
    )


def merged_attention(items: Mapping[str, Any], legacy: Mapping[str, Any]) -> list[AttentionItem]:
    """The open items from their stored documents (by quote), plus each 0.1 conflict
    whose quote has no new item, oldest detected first, then by quote."""
    merged = [attention_entry(quote, document) for quote, document in items.items()]
    merged += [
        legacy_attention(conflict_entry(quote, document))
        for quote, document in legacy.items()
        if quote not in items
    ]
    return sorted(merged, key=lambda item: (item.detected_at, item.quote))


def one_attention(quote: str, document: Any, legacy: Any) -> AttentionItem | None:
    if document is not None:
        return attention_entry(quote, document)
    if legacy is not None:
        return legacy_attention(conflict_entry(quote, legacy))
    return None


def count_attention(items: Iterable[AttentionItem]) -> dict[str, int]:
    counts = {kind.value: 0 for kind in AttentionKind}
    for item in items:
        counts[item.kind.value] += 1
    return counts


def checked_attention(items: Iterable[AttentionItem]) -> list[tuple[str, dict[str, Any]]]:
    """The (quote, document) pairs of one `record_attention` call, last of a quote winning,
    all serialised before anything is written."""
    documents = {item.quote: attention_document(item) for item in items}
    return list(documents.items())


def gave_up_document(quote: str, item: AttentionItem) -> dict[str, Any]:
    if item.quote != quote or item.kind != AttentionKind.GAVE_UP:
        raise ValueError(f"give_up needs a gave_up item of quote {quote}")
    return attention_document(item)


def requeued_retry(quote: str, document: Any, at: datetime) -> RetryEntry | None:
    """The fresh retry entry of a quote whose open item (as stored) is `gave_up`; None when
    it has another kind of item. An unreadable item raises, naming the quote."""
    item = attention_entry(quote, document)
    if item.kind != AttentionKind.GAVE_UP:
        return None
    return RetryEntry(quote, item.reason, 0, at, at)


# --- acceptances, cursor ------------------------------------------------------------------


def acceptance_document(acceptance: Acceptance) -> dict[str, Any]:
    return {
        "quote": acceptance.quote,
        "version": acceptance.version,
        "accepted_at": stored_instant(acceptance.accepted_at),
        "kind": None if acceptance.kind is None else AttentionKind(acceptance.kind).value,
    }


def acceptance_entry(quote: str, document: Any) -> Acceptance:
    try:
        kind = document.get("kind")
        return Acceptance(
            quote=quote,
            version=_integer(document["version"]),
            accepted_at=read_instant(document["accepted_at"], "acceptance time"),
            kind=None if kind is None else AttentionKind(kind),
        )
    except (AttributeError, KeyError, TypeError, ValueError, StateStoreError):
        raise _unreadable("acceptance", quote) from None
