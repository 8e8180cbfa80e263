"""What a sync run needs from the world around it, named as Protocols.

The run's stages (`extract`, `load`, the engine's recording) depend on these and not on
`FourDClient`, `QBOClient` or a state backend, so each stage can be read alone and driven
by a fake in a test. The real implementations satisfy them structurally. Also the
`Progress` a run reports to, with the `SilentProgress` used off a terminal.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol

from fourdqbo.emr.records import Quote, QuoteSummary
from fourdqbo.errors import FourdqboError
from fourdqbo.qbo.records import Customer, Invoice, Item
from fourdqbo.state.base import ConflictEntry, LockInfo, RetryEntry
from fourdqbo.state.items import Acceptance, AttentionItem, LedgerEntry

log = logging.getLogger(__name__)


class FourDSource(Protocol):
    """The 4D EMR as the run reads it (`fourdqbo.emr.client.FourDClient`)."""

    request_count: int

    def list_quotes(self, since: datetime) -> list[QuoteSummary]: ...

    def get_quotes(self, numbers: Iterable[str]) -> Mapping[str, Quote | FourdqboError]: ...


class QBOBooks(Protocol):
    """The QBO company as the run reads and writes it (`fourdqbo.qbo.client.QBOClient`).

    Reads may come from the pipeline's producer thread while the main thread writes.
    """

    request_count: int
    # Called right before each write leaves (after pacing waits): the lock check.
    before_write: Callable[[], None] | None

    def find_invoices_by_doc_numbers(self, doc_numbers: Iterable[str]) -> list[Invoice]: ...

    def find_customers_by_names(
        self, names: Iterable[str], include_inactive: bool = True
    ) -> list[Customer]: ...

    def find_customers_like(
        self, patterns: Sequence[str], *, include_inactive: bool = True
    ) -> list[Customer]: ...

    def find_customers_by_ids(
        self, ids: Iterable[str], *, include_inactive: bool = True
    ) -> list[Customer]: ...

    def cdc(self, entities: Sequence[str], changed_since: datetime) -> Any: ...

    def find_items_by_names(
        self, names: Iterable[str], include_inactive: bool = False
    ) -> list[Item]: ...

    def batch(self, items: Sequence[Any], *, fill: bool = False) -> list[Any]: ...

    def void_invoice(self, id: str, sync_token: str) -> dict[str, Any]: ...


class RunLock(Protocol):
    """The run's handle on the sync lock (`fourdqbo.state.base.SyncLock`)."""

    lost: bool
    lost_reason: str | None

    def extend(self) -> bool: ...

    def release(self) -> bool: ...

    def start_heartbeat(self, interval: float | None = None) -> None: ...

    def stop_heartbeat(self) -> None: ...


class StateStore(Protocol):
    """The part of `fourdqbo.state.base.StateStore` one run uses."""

    def watermark(self) -> datetime | None: ...

    def advance_watermark(self, to: datetime) -> bool: ...

    def acquire_lock(self, run_id: str, ttl_seconds: float = 300.0) -> RunLock | None: ...

    def lock_holder(self) -> LockInfo | None: ...

    def retry_queue(self) -> list[RetryEntry]: ...

    def retry_entries(self, quotes: Iterable[str]) -> dict[str, RetryEntry]: ...

    def record_failure(self, quote: str, error: str, at: datetime) -> RetryEntry: ...

    def clear_failure(self, quote: str) -> None: ...

    def conflicts(self) -> list[ConflictEntry]: ...

    def record_conflict(self, entry: ConflictEntry) -> None: ...

    def clear_conflict(self, quote: str) -> None: ...

    def append_run(self, summary: dict[str, Any]) -> None: ...

    # 0.2: the ledger, what needs a person, acceptances, CDC cursor, reminders.
    def ledger(self, quotes: Iterable[str]) -> dict[str, LedgerEntry]: ...

    def ledger_for_invoices(self, invoice_ids: Iterable[str]) -> dict[str, LedgerEntry]: ...

    def record_ledger(self, entries: Iterable[LedgerEntry]) -> None: ...

    def attention_items(self) -> list[AttentionItem]: ...

    def record_attention(self, items: Iterable[AttentionItem]) -> None: ...

    def clear_attention(self, quotes: Iterable[str]) -> None: ...

    def acceptances(self, quotes: Iterable[str] | None = None) -> dict[str, Acceptance]: ...

    def clear_acceptance(self, quotes: Iterable[str]) -> None: ...

    def give_up(self, quote: str, item: AttentionItem) -> None: ...

    def cdc_cursor(self) -> datetime | None: ...

    def set_cdc_cursor(self, at: datetime) -> None: ...

    def last_reminded_at(self) -> datetime | None: ...

    def set_last_reminded_at(self, at: datetime) -> None: ...


class Progress(Protocol):
    """Where a run reports how far it is (a rich progress line on a terminal).

    `window(total)` once the run knows how many quotes it covers; `phase(name)` as a
    stage starts (the producer thread calls it too); `quotes_done(n)` as a chunk's
    outcomes are in; `wrote(n)` as write items are answered.
    """

    def window(self, total: int) -> None: ...

    def phase(self, name: str) -> None: ...

    def quotes_done(self, count: int) -> None: ...

    def wrote(self, count: int) -> None: ...


class SilentProgress:
    """Progress off a terminal: a debug line per phase, nothing else."""

    def window(self, total: int) -> None:
        log.debug("window of %d quotes", total)

    def phase(self, name: str) -> None:
        log.debug("phase %s", name)

    def quotes_done(self, count: int) -> None:
        pass

    def wrote(self, count: int) -> None:
        pass


__all__ = [
    "FourDSource",
    "Progress",
    "QBOBooks",
    "RunLock",
    "SilentProgress",
    "StateStore",
]
