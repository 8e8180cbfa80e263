"""One sync run, told as its story: lock, window, chunks (extract → plan → load), record.

`SyncEngine.run()` is one run of DESIGN.md's "Sync semantics" and "Large windows": take
the lock, work out the window, cut its quote numbers into chunks of `SYNC_CHUNK_SIZE` and
run them as a pipeline — while one chunk is written (`load`), the next is read from 4D
and looked up in QBO (`extract`) and planned (`planning.plan_sync`, pure) — then queue
failures, keep conflicts and move the watermark only when the whole window was done
(`record`). Each stage is its own module; this one only strings them together.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from fourdqbo.config import Settings
from fourdqbo.emr.records import status_label
from fourdqbo.errors import ConfigError, FourdqboError, LockHeld
from fourdqbo.log import RunContext
from fourdqbo.sync.collaborators import (
    FourDSource,
    Progress,
    QBOBooks,
    RunLock,
    SilentProgress,
    StateStore,
)
from fourdqbo.sync.extract import Extractor, Window
from fourdqbo.sync.load import PAST, Loader, PlannedChunk, write_batch_size
from fourdqbo.sync.mapping import customer_display_name
from fourdqbo.sync.pipeline import Interrupted, chunked, run_chunks
from fourdqbo.sync.planning import plan_sync
from fourdqbo.sync.record import RunState, record_run
from fourdqbo.sync.report import RunReport
from fourdqbo.timefmt import utcnow

log = logging.getLogger(__name__)

CHUNKS_AHEAD = 2  # chunks being read or read ahead while one is written
# Chunks read at once. Two overlap one chunk's 4D fetch with another's QBO look-ups (the
# writer's wait for chunks on 10,000 quotes at a 1-second window: 8.4 s of 44 s with one,
# 2.0-2.6 s with two), but more chunks are then looked up before the customers of earlier
# ones exist: 1,000 quotes cost 2,019-2,305 request units instead of 1,919, slower in the
# end. Against QBO's minute 4D is never the pace (a chunk's fetch: 3 s; its writes: 50 s).
CHUNK_READERS = 1


@dataclass(frozen=True)
class RunOptions:
    since: datetime | None = None
    quotes: tuple[str, ...] = ()
    dry_run: bool = False
    # `sync apply`: write the quotes whatever a person did or accepted in QBO; a paid
    # invoice only with `allow_paid` and when the quote's total covers the payment.
    apply: bool = False
    allow_paid: bool = False


@dataclass
class SyncEngine:
    settings: Settings
    fourd: FourDSource
    qbo: QBOBooks
    state: StateStore
    progress: Progress = field(default_factory=SilentProgress)
    stop: threading.Event = field(default_factory=threading.Event)
    now: Callable[[], datetime] = utcnow
    lock_ttl: float | None = None  # default: SYNC_LOCK_TTL_SECONDS
    # Called once the run holds the lock (the healthcheck's /start): a run that finds the
    # lock taken did nothing and must not look like a run that started and never ended.
    on_start: Callable[[], None] | None = None

    def run(self, options: RunOptions) -> RunReport:
        started = self.now()
        report = RunReport(run_id=uuid.uuid4().hex[:12], started_at=started)
        report.dry_run = options.dry_run
        RunContext.run_id = report.run_id
        window_from = self._window_start(options)  # ConfigError before any lock or call
        with self._locked(report.run_id, options.dry_run) as lock:
            if self.on_start is not None:
                self.on_start()
            report.window_from = window_from
            report.window_to = started if window_from is not None else None
            log.info(
                "sync run %s started (dry_run=%s, window from %s)",
                report.run_id,
                options.dry_run,
                window_from,
            )
            run = RunState()
            try:
                self._sync(options, window_from, report, lock, run)
            except FourdqboError as exc:
                report.aborted = str(exc)
                raise
            finally:
                report.finished_at = self.now()
                report.requests = self._requests()
                record_run(
                    self.state,
                    self.settings,
                    report,
                    window_from,
                    started,
                    self.now(),
                    run=run,
                    strict=options.apply,
                )
            log.info("sync run %s finished: %s", report.run_id, report.counts())
            return report

    def _requests(self) -> dict[str, int]:
        requests = {"fourd": self.fourd.request_count, "qbo": self.qbo.request_count}
        by_kind = getattr(self.qbo, "requests_by_kind", None)
        if isinstance(by_kind, dict):
            requests["qbo_read"] = by_kind.get("read", 0)
            requests["qbo_write"] = by_kind.get("write", 0)
        return requests

    def _sync(
        self,
        options: RunOptions,
        window_from: datetime | None,
        report: RunReport,
        lock: RunLock | None,
        run: RunState,
    ) -> None:
        extract = Extractor(self.settings, self.fourd, self.qbo, self.state, self.progress)
        if not options.quotes:
            # A run for given quotes (`--quote`, `sync apply`) does not read CDC: it would
            # have to move the cursor past changes it does not look at.
            run.changes = extract.begin(self.now())
            if run.changes.gap_since is not None:
                since = run.changes.gap_since
                run.gap_notice = (
                    f"QBO's change data capture reaches 30 days back and the last look was "
                    f"on {since:%Y-%m-%d}: audit the gap with "
                    f"`fourdqbo reconcile --since {since:%Y-%m-%d}`"
                )
                report.notices.append(run.gap_notice)
        window = extract.window(
            options.quotes, window_from, run.changes.recheck if run.changes else ()
        )
        run.open_before = window.open_before
        self.progress.window(len(window.numbers))
        if not window.numbers:
            return
        failing = threading.Event()  # a chunk's read failed: write nothing more
        loader = Loader(
            self.qbo,
            report,
            lock=lock,
            stop=self.stop,
            halt=failing,
            progress=self.progress,
            batch_size=write_batch_size(
                self.settings.qbo_max_requests_per_minute, self.settings.qbo_max_batches_per_minute
            ),
        )

        def produce(numbers: tuple[str, ...]) -> PlannedChunk:
            return self._plan(extract, numbers, window, options)

        def dry_run(chunk: PlannedChunk, upcoming: Callable[[], PlannedChunk | None]) -> None:
            for quote_plan in chunk.plan.quotes:
                report.record(chunk.outcome(quote_plan, PAST[quote_plan.action]))
            self.progress.quotes_done(len(chunk.plan.quotes))

        chunks = chunked(window.numbers, self.settings.sync_chunk_size)
        if options.dry_run:
            run_chunks(
                chunks, produce, dry_run, stop=self.stop, ahead=CHUNKS_AHEAD, readers=CHUNK_READERS
            )
            return
        # A write can wait long inside the client (pacing, 429 backoff); a run frozen in
        # that wait past its TTL must not send once it wakes: ownership is checked again
        # right before each write leaves.
        self.qbo.before_write = loader.before_write
        try:
            run_chunks(
                chunks,
                produce,
                loader.load,
                stop=self.stop,
                ahead=CHUNKS_AHEAD,
                readers=CHUNK_READERS,
                failing=failing,
            )
        finally:
            self.qbo.before_write = None

    def _plan(
        self, extract: Extractor, numbers: tuple[str, ...], window: Window, options: RunOptions
    ) -> PlannedChunk:
        """Extract one chunk and plan it (the producer thread)."""
        found = extract.chunk(numbers, window)
        settings = self.settings
        plan = plan_sync(
            found.inputs,
            found.invoices,
            found.customers,
            found.item_ids,
            settings.sync_reopened_action,
            ledger=found.ledger,
            accepted=found.accepted,
            edits=settings.sync_qbo_edits,
            deletes=settings.sync_qbo_deletes,
            resolution=found.resolution,
            quote_version_field=extract.rules.quote_version_field or None,
            apply=options.apply,
            allow_paid=options.allow_paid,
        )
        return PlannedChunk.of(plan, found, extract.rules.quote_version_field or None)

    # -- lock and window ---------------------------------------------------------------

    @contextmanager
    def _locked(self, run_id: str, dry_run: bool) -> Iterator[RunLock | None]:
        """The run's lock (none for a dry run): exit 75 when held, released at the end."""
        if dry_run:
            yield None
            return
        ttl = self.lock_ttl or self.settings.sync_lock_ttl_seconds
        lock = self.state.acquire_lock(run_id, ttl_seconds=ttl)
        if lock is None:
            raise LockHeld.by(self.state.lock_holder())
        lock.start_heartbeat()
        try:
            yield lock
        finally:
            lock.stop_heartbeat()
            try:
                lock.release()
            except FourdqboError as exc:
                log.warning("could not release the lock: %s", exc)

    def _window_start(self, options: RunOptions) -> datetime | None:
        if options.quotes:
            return None
        if options.since is not None:
            return options.since
        watermark = self.state.watermark()
        if watermark is not None:
            return watermark - timedelta(seconds=self.settings.sync_overlap_seconds)
        if self.settings.sync_initial_from is not None:
            return self.settings.sync_initial_from
        raise ConfigError(
            "no watermark yet: start with `fourdqbo sync run --since YYYY-MM-DD` "
            "or set SYNC_INITIAL_FROM"
        )


def host_identity() -> tuple[str, int]:
    return socket.gethostname(), os.getpid()


__all__ = [
    "Interrupted",
    "Progress",
    "RunOptions",
    "SilentProgress",
    "SyncEngine",
    "customer_display_name",
    "status_label",
]
