"""The file state store, for a single host without Redis (`STATE_BACKEND=file`).

State of one realm lives in `DATA_DIR/state/{realmId}/` (directories 0700, files 0600):
    watermark.json      {"watermark": fixed-width ISO UTC}
    retry.json          {quote: retry entry}
    conflicts.json      {quote: conflict} (0.1; shown as attention items since 0.2)
    ledger.json         {quote: ledger entry} (the invoice-id look-up is derived from it,
                        so there is no second file to keep in step)
    attention.json      {quote: item needing a person}
    accepted.json       {quote: acceptance}
    cdc_cursor.json     {"cdc_cursor": fixed-width ISO UTC}
    reminded_at.json    {"reminded_at": fixed-width ISO UTC}
    runs.json           [run summary, ...] newest first, capped at RUN_HISTORY_LIMIT
    lock_history.json   [lock event, ...] oldest first, capped at LOCK_HISTORY_LIMIT
    lock                the sync lock: an OS lock (flock) held by the owner's open descriptor
    lock.json           who holds it (a side file; the flock is what counts)
    .guard              a short flock serialising every read-modify-write of the files above

Each file holds one top-level entry (a quote's, a run's) to a line. Every JSON file is
replaced atomically (temp file, fsync, os.replace), so a crash never
leaves half a file. A move between two files (give up, requeue) runs under the guard and
writes the destination first, so a crash between the two replaces leaves the quote in both
places (harmless: it is retried once more or requeued again), never in neither.

The sync lock is an OS lock, so a process that dies releases it with no TTL to wait for;
and for the same reason `break_lock` cannot take the lock away from a process that is
still alive (stop that process instead) — it removes the side file of a dead holder and
otherwise just reports the live holder.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import secrets
import socket
import tempfile
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from datetime import datetime
from pathlib import Path
from typing import Any

from fourdqbo import jsonio
from fourdqbo.errors import StateStoreError
from fourdqbo.state.base import (
    LOCK_HISTORY_LIMIT,
    RUN_HISTORY_LIMIT,
    ConflictEntry,
    LockEvent,
    LockInfo,
    RetryEntry,
    StateStore,
    SyncLock,
    acceptance_document,
    acceptance_entry,
    checked_attention,
    checked_ledger,
    conflict_document,
    conflict_entry,
    count_attention,
    error_text,
    gave_up_document,
    ledger_document,
    ledger_entry,
    lock_document,
    lock_info,
    merged_attention,
    one_attention,
    read_instant,
    requeued_retry,
    retry_document,
    retry_entry,
    scrubbed,
    sort_conflicts,
    sort_retry,
    stored_instant,
    unique,
)
from fourdqbo.state.items import Acceptance, AttentionItem, LedgerEntry
from fourdqbo.timefmt import utcnow

log = logging.getLogger(__name__)

DIR_MODE = 0o700
FILE_MODE = 0o600


class FileStateStore(StateStore):
    """State of one realm in JSON files under `root/{realm_id}` (root is `DATA_DIR/state`)."""

    def __init__(self, root: Path, realm_id: str) -> None:
        self.realm_id = realm_id
        self.root = Path(root)
        self.directory = self.root / realm_id

    # --- files -----------------------------------------------------------------------

    @contextmanager
    def _using_files(self) -> Iterator[None]:
        try:
            yield
        except OSError as exc:
            reason = exc.strerror or exc.__class__.__name__
            raise StateStoreError(
                f"state files under {self.directory} unusable ({reason})", service="file"
            ) from exc

    def _ensure_directory(self) -> None:
        for directory in (self.root, self.directory):
            if not directory.is_dir():
                directory.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
                os.chmod(directory, DIR_MODE)  # mkdir's mode is filtered by the umask

    def _path(self, name: str) -> Path:
        return self.directory / name

    def _read(self, name: str, default: Any) -> Any:
        path = self._path(name)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return default
        try:
            return jsonio.loads(text)
        except ValueError:
            raise StateStoreError(
                f"state file {path} is not valid JSON; fix or remove it", service="file"
            ) from None

    def _write(self, name: str, document: Any) -> None:
        """Replace a file atomically: a reader sees the old or the new file, never a mix."""
        self._ensure_directory()
        path = self._path(name)
        descriptor, temp_name = tempfile.mkstemp(
            dir=self.directory, prefix=f".{name}.", suffix=".tmp"
        )
        try:
            with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
                os.fchmod(handle.fileno(), FILE_MODE)
                handle.writelines(_document_lines(document))
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temp_name, path)
        except BaseException:
            with suppress(FileNotFoundError):
                os.unlink(temp_name)
            raise
        _fsync_directory(self.directory)

    def _remove(self, name: str) -> None:
        with suppress(FileNotFoundError):
            os.unlink(self._path(name))
            _fsync_directory(self.directory)

    @contextmanager
    def _guarded(self) -> Iterator[None]:
        """Serialise read-modify-write cycles between processes (and threads: every call
        opens its own descriptor, and flocks on separate descriptors exclude each other)."""
        self._ensure_directory()
        descriptor = os.open(self._path(".guard"), os.O_RDWR | os.O_CREAT, FILE_MODE)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX)
            yield
        finally:
            os.close(descriptor)  # closing drops the flock

    def ping(self) -> None:
        with self._using_files():
            self._ensure_directory()
            if not os.access(self.directory, os.W_OK | os.X_OK):
                raise StateStoreError(
                    f"state files under {self.directory} unusable (not writable)",
                    service="file",
                )
            with self._guarded():
                self._read("watermark.json", None)

    # --- watermark -------------------------------------------------------------------

    def watermark(self) -> datetime | None:
        with self._using_files():
            document = self._read("watermark.json", None)
        if not isinstance(document, dict) or not document.get("watermark"):
            return None
        return read_instant(document["watermark"], "watermark")

    def advance_watermark(self, to: datetime) -> bool:
        target = stored_instant(to)
        with self._using_files(), self._guarded():
            current = self.watermark()
            if current is not None and stored_instant(current) >= target:
                return False
            self._write("watermark.json", {"watermark": target})
            return True

    def reset_watermark(self, to: datetime) -> None:
        with self._using_files(), self._guarded():
            self._write("watermark.json", {"watermark": stored_instant(to)})

    # --- lock ------------------------------------------------------------------------

    def acquire_lock(self, run_id: str, ttl_seconds: float = 300.0) -> SyncLock | None:
        if ttl_seconds <= 0:
            raise ValueError("lock TTL must be above 0")
        with self._using_files():
            self._ensure_directory()
            descriptor = os.open(self._path("lock"), os.O_RDWR | os.O_CREAT, FILE_MODE)
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                os.close(descriptor)
                if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                    return None
                raise
            try:
                info = LockInfo(
                    token=secrets.token_hex(16),
                    run_id=run_id,
                    host=socket.gethostname(),
                    pid=os.getpid(),
                    since=utcnow(),
                    expires_at=None,
                )
                with self._guarded():
                    previous = self._read("lock.json", None)
                    if isinstance(previous, dict) and previous.get("token"):
                        # Its owner died holding it: the OS released the flock for it.
                        self._note(
                            {"event": "expired", "token": previous["token"]},
                        )
                    self._write("lock.json", lock_document(info))
                    self._note({"event": "acquired", **lock_document(info)})
            except BaseException:
                os.close(descriptor)
                raise
        return FileSyncLock(self, descriptor, info, ttl_seconds)

    def _holder_alive(self) -> bool:
        """Whether some open descriptor holds the lock file's flock right now.

        Probing takes a shared flock for an instant; a run trying to take the lock at that
        very instant would see it as held and exit 75 (cron tries again): harmless.
        """
        try:
            descriptor = os.open(self._path("lock"), os.O_RDWR)
        except FileNotFoundError:
            return False
        try:
            fcntl.flock(descriptor, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                return True
            raise
        finally:
            os.close(descriptor)
        return False

    def lock_holder(self) -> LockInfo | None:
        with self._using_files():
            if not self._holder_alive():
                return None  # a side file left by a dead process holds nothing
            document = self._read("lock.json", None)
            if document is None:
                return None
        return lock_info(document, None)

    def break_lock(self) -> LockInfo | None:
        """Remove a dead holder's side file. A live holder's flock cannot be taken away:
        then its info is returned and left in place (`lock_holder` still reports it)."""
        with self._using_files(), self._guarded():
            try:
                document = self._read("lock.json", None)
            except StateStoreError:
                document = {}  # not even JSON: remove it all the same
            if document is None:
                return None
            try:
                info: LockInfo | None = lock_info(document, None)
            except StateStoreError:
                info = None  # unreadable: remove it all the same
            if self._holder_alive():
                log.warning(
                    "the sync lock is held by a live process (pid %s); stop it to free the lock",
                    info.pid if info else "?",
                )
                return info
            self._remove("lock.json")
            token = str(document.get("token", "?")) if isinstance(document, dict) else "?"
            self._note({"event": "broken", "token": token, "run_id": info and info.run_id})
        return info

    def _note(self, event: dict[str, Any]) -> None:
        """Append a lock event; the caller holds the guard."""
        history = self._read("lock_history.json", [])
        if not isinstance(history, list):
            history = []
        history.append({**event, "at": stored_instant(utcnow())})
        self._write("lock_history.json", history[-LOCK_HISTORY_LIMIT:])

    def _note_guarded(self, event: dict[str, Any]) -> None:
        with self._using_files(), self._guarded():
            self._note(event)

    def lock_history(self, limit: int = LOCK_HISTORY_LIMIT) -> list[LockEvent]:
        if limit <= 0:
            return []
        with self._using_files():
            history = self._read("lock_history.json", [])
        events = []
        for item in history[-limit:] if isinstance(history, list) else []:
            try:
                pid = item.get("pid")
                events.append(
                    LockEvent(
                        event=str(item["event"]),
                        token=str(item["token"]),
                        at=read_instant(item["at"], "lock event time"),
                        run_id=item.get("run_id"),
                        host=item.get("host"),
                        pid=None if pid is None else int(pid),
                    )
                )
            except (AttributeError, KeyError, TypeError, ValueError, StateStoreError):
                log.warning("skipping an unreadable lock history entry")
        return events

    # --- retry queue and conflicts ---------------------------------------------------

    def _entries(self, name: str) -> dict[str, Any]:
        document = self._read(name, {})
        if not isinstance(document, dict):
            raise StateStoreError(
                f"state file {self._path(name)} is not a JSON object; fix or remove it",
                service="file",
            )
        return document

    def retry_queue(self) -> list[RetryEntry]:
        with self._using_files():
            entries = self._entries("retry.json")
        return sort_retry([retry_entry(quote, item) for quote, item in entries.items()])

    def record_failure(self, quote: str, error: str, at: datetime) -> RetryEntry:
        with self._using_files(), self._guarded():
            entries = self._entries("retry.json")
            previous = entries.get(quote)
            if previous is not None:
                known = retry_entry(quote, previous)
                entry = RetryEntry(
                    quote, error_text(error), known.attempts + 1, known.first_failed_at, at
                )
            else:
                entry = RetryEntry(quote, error_text(error), 1, at, at)
            entries[quote] = retry_document(entry)
            self._write("retry.json", entries)
        return entry

    def clear_failure(self, quote: str) -> None:
        with self._using_files(), self._guarded():
            entries = self._entries("retry.json")
            if entries.pop(quote, None) is not None:
                self._write("retry.json", entries)

    def retry_entries(self, quotes: Iterable[str]) -> dict[str, RetryEntry]:
        wanted = unique(quotes)
        if not wanted:
            return {}
        with self._using_files():
            entries = self._entries("retry.json")
        return {quote: retry_entry(quote, entries[quote]) for quote in wanted if quote in entries}

    def retry_queue_size(self) -> int:
        with self._using_files():
            return len(self._entries("retry.json"))

    def give_up(self, quote: str, item: AttentionItem) -> None:
        document = gave_up_document(quote, item)
        with self._using_files(), self._guarded():
            items = self._entries("attention.json")
            queue = self._entries("retry.json")
            items[quote] = document
            self._write("attention.json", items)
            if queue.pop(quote, None) is not None:
                self._write("retry.json", queue)

    def requeue(self, quotes: Iterable[str], at: datetime) -> list[str]:
        wanted = unique(quotes)
        stored_instant(at)  # a naive `at` fails before anything is read
        if not wanted:
            return []
        with self._using_files(), self._guarded():
            items = self._entries("attention.json")
            queue = self._entries("retry.json")
            requeued = []
            for quote in wanted:
                if quote not in items:
                    continue
                entry = requeued_retry(quote, items[quote], at)
                if entry is not None:
                    requeued.append(quote)
                    queue[quote] = retry_document(entry)
            if requeued:
                self._write("retry.json", queue)
                for quote in requeued:
                    del items[quote]
                self._write("attention.json", items)
        return requeued

    def conflicts(self) -> list[ConflictEntry]:
        with self._using_files():
            entries = self._entries("conflicts.json")
        return sort_conflicts([conflict_entry(quote, item) for quote, item in entries.items()])

    def record_conflict(self, entry: ConflictEntry) -> None:
        with self._using_files(), self._guarded():
            entries = self._entries("conflicts.json")
            entries[entry.quote] = conflict_document(entry)
            self._write("conflicts.json", entries)

    def clear_conflict(self, quote: str) -> None:
        with self._using_files(), self._guarded():
            entries = self._entries("conflicts.json")
            if entries.pop(quote, None) is not None:
                self._write("conflicts.json", entries)

    def _drop(self, name: str, quotes: Iterable[str]) -> None:
        """Remove these quotes from one file; the caller holds the guard."""
        entries = self._entries(name)
        removed = [entries.pop(quote) for quote in quotes if quote in entries]
        if removed:
            self._write(name, entries)

    # --- ledger ----------------------------------------------------------------------

    def ledger(self, quotes: Iterable[str]) -> dict[str, LedgerEntry]:
        wanted = unique(quotes)
        if not wanted:
            return {}
        with self._using_files():
            entries = self._entries("ledger.json")
        return {quote: ledger_entry(quote, entries[quote]) for quote in wanted if quote in entries}

    def ledger_for_invoices(self, invoice_ids: Iterable[str]) -> dict[str, LedgerEntry]:
        wanted = set(unique(invoice_ids))
        if not wanted:
            return {}
        with self._using_files():
            entries = self._entries("ledger.json")
        found: dict[str, LedgerEntry] = {}
        for quote, document in entries.items():
            # Only the entries asked for are read (an unreadable one elsewhere is not this
            # caller's problem, as in Redis, whose index never reaches it).
            if not isinstance(document, dict) or document.get("invoice_id") not in wanted:
                continue
            entry = ledger_entry(quote, document)
            # Two quotes naming one invoice (only after a hand edit): the latest write wins,
            # as the Redis index's last writer does.
            known = found.get(entry.invoice_id)
            if known is None or (known.written_at, known.quote) < (entry.written_at, quote):
                found[entry.invoice_id] = entry
        return found

    def record_ledger(self, entries: Iterable[LedgerEntry]) -> None:
        checked = checked_ledger(entries)
        if not checked:
            return
        with self._using_files(), self._guarded():
            stored = self._entries("ledger.json")
            for entry in checked:
                stored[entry.quote] = ledger_document(entry)
            self._write("ledger.json", stored)

    def forget_ledger(self, quotes: Iterable[str]) -> None:
        wanted = unique(quotes)
        if not wanted:
            return
        with self._using_files(), self._guarded():
            self._drop("ledger.json", wanted)

    def ledger_size(self) -> int:
        with self._using_files():
            return len(self._entries("ledger.json"))

    # --- items needing a person ------------------------------------------------------

    def attention_items(self) -> list[AttentionItem]:
        with self._using_files():
            items = self._entries("attention.json")
            legacy = self._entries("conflicts.json")
        return merged_attention(items, legacy)

    def attention_item(self, quote: str) -> AttentionItem | None:
        with self._using_files():
            items = self._entries("attention.json")
            legacy = self._entries("conflicts.json")
        return one_attention(quote, items.get(quote), legacy.get(quote))

    def record_attention(self, items: Iterable[AttentionItem]) -> None:
        documents = checked_attention(items)
        if not documents:
            return
        with self._using_files(), self._guarded():
            stored = self._entries("attention.json")
            stored.update(documents)
            self._write("attention.json", stored)

    def clear_attention(self, quotes: Iterable[str]) -> None:
        wanted = unique(quotes)
        if not wanted:
            return
        with self._using_files(), self._guarded():
            # The 0.1 record first: cut short in between, the newer item is what stays open.
            self._drop("conflicts.json", wanted)
            self._drop("attention.json", wanted)

    def attention_counts(self) -> dict[str, int]:
        return count_attention(self.attention_items())

    # --- acceptances -----------------------------------------------------------------

    def acceptances(self, quotes: Iterable[str] | None = None) -> dict[str, Acceptance]:
        with self._using_files():
            entries = self._entries("accepted.json")
        wanted = list(entries) if quotes is None else unique(quotes)
        return {
            quote: acceptance_entry(quote, entries[quote]) for quote in wanted if quote in entries
        }

    def record_acceptance(self, acceptance: Acceptance) -> None:
        document = acceptance_document(acceptance)
        with self._using_files(), self._guarded():
            entries = self._entries("accepted.json")
            entries[acceptance.quote] = document
            self._write("accepted.json", entries)

    def clear_acceptance(self, quotes: Iterable[str]) -> None:
        wanted = unique(quotes)
        if not wanted:
            return
        with self._using_files(), self._guarded():
            self._drop("accepted.json", wanted)

    # --- CDC cursor and reminders ----------------------------------------------------

    def _instant(self, name: str, what: str) -> datetime | None:
        with self._using_files():
            document = self._read(f"{name}.json", None)
        if not isinstance(document, dict) or not document.get(name):
            return None
        return read_instant(document[name], what)

    def _set_instant(self, name: str, at: datetime) -> None:
        value = stored_instant(at)
        with self._using_files(), self._guarded():
            self._write(f"{name}.json", {name: value})

    # --- run history -----------------------------------------------------------------

    def append_run(self, summary: dict[str, Any]) -> None:
        document = jsonio.loads(jsonio.dumps(scrubbed(summary)))  # refuse what JSON cannot hold
        with self._using_files(), self._guarded():
            history = self._read("runs.json", [])
            if not isinstance(history, list):
                history = []
            history.insert(0, document)
            self._write("runs.json", history[:RUN_HISTORY_LIMIT])

    def runs(self, limit: int = 10) -> list[dict[str, Any]]:
        if limit <= 0:
            return []
        with self._using_files():
            history = self._read("runs.json", [])
        if not isinstance(history, list):
            return []
        return [summary for summary in history[:limit] if isinstance(summary, dict)]

    def close(self) -> None:
        """Nothing to close: each call opens and closes its files; locks belong to handles."""


class FileSyncLock(SyncLock):
    """The owner's open descriptor on the lock file; the flock lives as long as it is open."""

    def __init__(
        self, store: FileStateStore, descriptor: int, info: LockInfo, ttl_seconds: float
    ) -> None:
        super().__init__(info, ttl_seconds)
        self._store = store
        self._descriptor: int | None = descriptor
        self._mutex = threading.Lock()

    def _extend(self) -> bool:
        # An OS lock has no TTL: it is ours exactly as long as the descriptor is open.
        return self._descriptor is not None

    def _release(self) -> bool:
        with self._mutex:
            descriptor = self._descriptor
            if descriptor is None:
                return False
            try:
                store = self._store
                with store._using_files(), store._guarded():
                    # The side file goes first, while the flock still keeps others out,
                    # so a new owner's side file is never the one removed.
                    holder = store._read("lock.json", None)
                    if isinstance(holder, dict) and holder.get("token") == self.token:
                        store._remove("lock.json")
                    store._note(
                        {"event": "released", "token": self.token, "run_id": self.info.run_id}
                    )
            finally:
                self._descriptor = None
                os.close(descriptor)  # drops the flock even if the bookkeeping failed
        return True

    def _on_lost(self, reason: str) -> None:
        self._store._note_guarded(
            {"event": "lost", "token": self.token, "run_id": self.info.run_id}
        )


def _document_lines(document: Any) -> Iterator[str]:
    """A state file's text, a top-level entry to a line (one quote, one run), written as it
    is produced: a 10,000-quote ledger as one indented string cost the run that wrote it
    20 MB of small strings at its very end."""
    if isinstance(document, dict) and document:
        opening, closing = "{", "}"
        entries: Iterable[str] = (
            f"{jsonio.dumps(str(key))}: {jsonio.dumps(value)}" for key, value in document.items()
        )
    elif isinstance(document, list) and document:
        opening, closing = "[", "]"
        entries = (jsonio.dumps(value) for value in document)
    else:
        yield jsonio.dumps(document) + "\n"
        return
    yield opening
    separator = "\n  "
    for entry in entries:
        yield separator + entry
        separator = ",\n  "
    yield "\n" + closing + "\n"


def _fsync_directory(directory: Path) -> None:
    """Make a rename durable: the directory entry itself has to reach the disk."""
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
