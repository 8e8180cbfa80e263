"""The imperative shell of the sync: fetch, call the pure core, execute the plan, record.

One `SyncEngine.run()` is one run of DESIGN.md's "Sync semantics": lock, window, fetch
(4D concurrently, QBO in bulk), plan (`planning.plan_sync`), write in batches of at most
30 (customers before the invoices that need them), resolve every write whose outcome is
unknown by looking the document up before trying again, then report, queue failures,
keep conflicts and advance the watermark only when the whole window was processed.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from fourdqbo.config import Settings
from fourdqbo.emr.records import STATUS_COMPLETED, Quote, QuoteSummary, status_label
from fourdqbo.errors import (
    ConfigError,
    FourdqboError,
    LockHeld,
    MalformedPayload,
    OutcomeUnknown,
    QBOFault,
    StateStoreError,
)
from fourdqbo.log import RunContext
from fourdqbo.qbo.records import Customer, Invoice
from fourdqbo.sync.mapping import (
    InvoiceDraft,
    LineKind,
    MappingError,
    MappingRules,
    customer_display_name,
    draft_matches,
    invoice_payload,
    map_quote,
    update_payload,
)
from fourdqbo.sync.planning import (
    Action,
    Plan,
    QuoteInput,
    QuotePlan,
    customer_key,
    plan_sync,
)
from fourdqbo.sync.report import QuoteOutcome, RunReport
from fourdqbo.timefmt import utcnow

log = logging.getLogger(__name__)

BATCH_LIMIT = 30
RESOLVE_ROUNDS = 3  # rounds of "write, and look up what is uncertain" before giving up

ITEM_SETTINGS = {
    LineKind.PROCEDURE: ("QBO_ITEM_PROCEDURE", "qbo_item_procedure"),
    LineKind.SUPPLIES: ("QBO_ITEM_SUPPLIES", "qbo_item_supplies"),
    LineKind.ANESTHESIA: ("QBO_ITEM_ANESTHESIA", "qbo_item_anesthesia"),
    LineKind.FACILITY: ("QBO_ITEM_FACILITY", "qbo_item_facility"),
}
_PAST = {
    Action.CREATE: "created",
    Action.UPDATE: "updated",
    Action.DELETE: "deleted",
    Action.VOID: "voided",
    Action.UNCHANGED: "unchanged",
    Action.SKIP: "skipped",
    Action.CONFLICT: "conflict",
    Action.FAIL: "failed",
}


class Progress(Protocol):
    """Where the engine reports what it is doing (a rich progress bar on a terminal)."""

    def phase(self, name: str, total: int | None = None) -> None: ...

    def advance(self, amount: int = 1) -> None: ...


class SilentProgress:
    def phase(self, name: str, total: int | None = None) -> None:
        log.debug("phase %s (%s)", name, total)

    def advance(self, amount: int = 1) -> None:
        pass


@dataclass(frozen=True)
class RunOptions:
    since: datetime | None = None
    quotes: tuple[str, ...] = ()
    dry_run: bool = False


class Interrupted(FourdqboError):
    """SIGTERM/SIGINT or a lost lock stopped the run between two batches."""

    exit_code = 3


@dataclass
class _Write:
    """One planned invoice write and what we learn about it."""

    plan: QuotePlan
    customer_id: str | None
    invoice: Invoice | None  # the current QBO invoice for update/delete/void
    done: bool = False
    invoice_id: str | None = None
    error: str | None = None
    uncertain: bool = False  # outcome unknown: look it up before any retry


@dataclass
class SyncEngine:
    settings: Settings
    fourd: Any  # FourDClient
    qbo: Any  # QBOClient
    state: Any  # StateStore
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
        lock = None
        if not options.dry_run:
            ttl = self.lock_ttl or self.settings.sync_lock_ttl_seconds
            lock = self.state.acquire_lock(report.run_id, ttl_seconds=ttl)
            if lock is None:
                holder = self.state.lock_holder()
                who = f" by {holder.host} pid {holder.pid}" if holder else ""
                raise LockHeld(f"another sync run holds the lock{who}; nothing done")
            lock.start_heartbeat()
        try:
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
            try:
                self._sync(options, window_from, report, lock)
            except FourdqboError as exc:
                report.aborted = str(exc)
                raise
            finally:
                report.finished_at = self.now()
                report.requests = {
                    "fourd": self.fourd.request_count,
                    "qbo": self.qbo.request_count,
                }
                if not options.dry_run:
                    self._finish(report, window_from, started)
            log.info("sync run %s finished: %s", report.run_id, report.counts())
            return report
        finally:
            if lock is not None:
                lock.stop_heartbeat()
                try:
                    lock.release()
                except FourdqboError as exc:
                    log.warning("could not release the lock: %s", exc)

    def _finish(self, report: RunReport, window_from: datetime | None, started: datetime) -> None:
        """Queue failures and keep conflicts first, then move the watermark, then log the run.

        The order matters: the watermark may only pass quotes whose failure is queued.
        On an aborted run the state store may be the thing that failed; the original
        error is what the operator must see, so recording errors are only logged then.
        """
        try:
            self._record_outcomes(report)
            if window_from is not None and not report.aborted and self._may_advance(window_from):
                report.watermark_advanced = self.state.advance_watermark(started)
            self.state.append_run(report.summary())
        except StateStoreError as exc:
            if report.aborted:
                log.error("could not record the aborted run: %s", exc)
                return
            report.aborted = str(exc)
            raise

    # -- window ------------------------------------------------------------------------

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

    def _may_advance(self, window_from: datetime) -> bool:
        """Never skip unprocessed work: a --since after the watermark must not move it."""
        watermark = self.state.watermark()
        overlap = timedelta(seconds=self.settings.sync_overlap_seconds)
        return watermark is None or window_from <= watermark + overlap

    # -- the run -----------------------------------------------------------------------

    def _sync(
        self, options: RunOptions, window_from: datetime | None, report: RunReport, lock: Any
    ) -> None:
        self.progress.phase("listing changed quotes")
        summaries: dict[str, QuoteSummary] = {}
        if window_from is not None:
            for summary in self.fourd.list_quotes(window_from):
                summaries.setdefault(summary.number, summary)
        # Retry queue and open conflicts first, then the window, then explicit --quote.
        queued = [entry.quote for entry in self.state.retry_queue()]
        conflicted = [entry.quote for entry in self.state.conflicts()]
        if options.quotes:
            numbers = _unique(options.quotes)
        else:
            numbers = _unique([*queued, *conflicted, *summaries])
        if not numbers:
            return
        # Only completed quotes need their full body; a summary's status is enough to know
        # that a quote is no longer completed. Quotes without a summary are fetched.
        to_fetch = [
            n for n in numbers if n not in summaries or summaries[n].status_id == STATUS_COMPLETED
        ]
        self.progress.phase("fetching quotes", len(to_fetch))
        fetched: dict[str, Quote | FourdqboError] = {}
        if to_fetch:
            fetched = self.fourd.get_quotes(to_fetch)
        self.progress.advance(len(to_fetch))
        rules = MappingRules.from_settings(self.settings)
        inputs = [self._input(n, summaries.get(n), fetched.get(n), rules) for n in numbers]

        self.progress.phase("looking up QBO")
        drafts = [i.draft for i in inputs if i.draft is not None]
        item_ids = self._item_ids() if drafts else {}
        invoices = self.qbo.find_invoices_by_doc_numbers([i.number for i in inputs])
        names = _unique([d.customer_name for d in drafts])
        customers = self.qbo.find_customers_by_names(names, include_inactive=True) if names else []
        plan = plan_sync(inputs, invoices, customers, item_ids, self.settings.sync_reopened_action)
        if options.dry_run:
            for quote_plan in plan.quotes:
                report.record(_outcome(quote_plan, _PAST[quote_plan.action]))
            return
        self._execute(plan, customers, item_ids, report, lock)

    def _input(
        self,
        number: str,
        summary: QuoteSummary | None,
        fetched: Quote | FourdqboError | None,
        rules: MappingRules,
    ) -> QuoteInput:
        if isinstance(fetched, FourdqboError):
            version = summary.version if summary else 0
            status = summary.status_id if summary else None
            return QuoteInput(number, version, status, None, None, error=str(fetched))
        if fetched is None:
            assert summary is not None
            return QuoteInput(number, summary.version, summary.status_id, summary.patient_id, None)
        draft: InvoiceDraft | None = None
        error = None
        if fetched.status_id == STATUS_COMPLETED:
            try:
                draft = map_quote(fetched, rules)
            except MappingError as exc:
                error = str(exc)
        return QuoteInput(
            number, fetched.version, fetched.status_id, fetched.patient_id, draft, error=error
        )

    def _item_ids(self) -> dict[LineKind, str]:
        """Resolve the four line kinds to QBO Item ids; an unknown item is exit 2."""
        wanted: dict[LineKind, str] = {}
        ids: dict[LineKind, str] = {}
        for kind, (_, attribute) in ITEM_SETTINGS.items():
            value = getattr(self.settings, attribute).strip()
            if value.isdigit():
                ids[kind] = value
            else:
                wanted[kind] = value
        if wanted:
            found = {
                item.name.lower(): item
                for item in self.qbo.find_items_by_names(_unique(wanted.values()))
            }
            for kind, name in wanted.items():
                item = found.get(name.lower())
                if item is None:
                    variable = ITEM_SETTINGS[kind][0]
                    raise ConfigError(
                        f"QBO has no product/service named {name!r} ({variable}); "
                        "create it in QuickBooks or set the variable to an existing item"
                    )
                ids[kind] = item.id
        return ids

    # -- execution ---------------------------------------------------------------------

    def _execute_plan(
        self,
        plan: Plan,
        customers: Sequence[Customer],
        item_ids: Mapping[LineKind, str],
        report: RunReport,
        lock: Any,
    ) -> None:
        customer_ids = {customer_key(c.display_name): c.id for c in customers if c.active}
        customer_errors: dict[str, str] = {}
        writes_needed = [
            p
            for p in plan.quotes
            if p.action in (Action.CREATE, Action.UPDATE, Action.DELETE, Action.VOID)
        ]
        for quote_plan in plan.quotes:
            if quote_plan not in writes_needed:
                report.record(_outcome(quote_plan, _PAST[quote_plan.action]))
        if not writes_needed:
            return
        self.progress.phase(
            "writing",
            len(plan.customers_to_reactivate) + len(plan.customers_to_create) + len(writes_needed),
        )
        self._reactivate(plan.customers_to_reactivate, customer_ids, customer_errors, report, lock)
        self._create_customers(
            [c.display_name for c in plan.customers_to_create],
            customer_ids,
            customer_errors,
            report,
            lock,
        )
        writes: list[_Write] = []
        for quote_plan in writes_needed:
            customer_id = None
            if quote_plan.action in (Action.CREATE, Action.UPDATE):
                name = customer_key(quote_plan.customer_name or "")
                customer_id = customer_ids.get(name)
                if customer_id is None:
                    error = customer_errors.get(name, "customer could not be created")
                    report.record(_outcome(quote_plan, "failed", error=error))
                    continue
            writes.append(_Write(quote_plan, customer_id, quote_plan.invoice))
        try:
            self._write_invoices(writes, item_ids, lock)
            # The last batch may have gone out after the lock was lost (a run frozen past
            # its TTL): then this run must not pass for a clean one (exit 3, no watermark).
            self._check_lock(lock)
        finally:
            self._record_writes(writes, report)

    def _execute(
        self,
        plan: Plan,
        customers: Sequence[Customer],
        item_ids: Mapping[LineKind, str],
        report: RunReport,
        lock: Any,
    ) -> None:
        # A write can wait long inside the client (pacing, 429 backoff); a run frozen in
        # that wait past its TTL must not send once it wakes: ownership is checked again
        # right before each write leaves.
        self.qbo.before_write = lambda: self._check_lock(lock)
        try:
            self._execute_plan(plan, customers, item_ids, report, lock)
        finally:
            self.qbo.before_write = None

    def _record_writes(self, writes: list[_Write], report: RunReport) -> None:
        """Record every write, including those an interruption left unmade (queued)."""
        for write in writes:
            action = _PAST[write.plan.action]
            if write.done:
                report.record(
                    _outcome(
                        write.plan,
                        action,
                        invoice_id=write.invoice_id,
                        customer_id=write.customer_id,
                    )
                )
            else:
                report.record(
                    _outcome(
                        write.plan,
                        "failed",
                        error=write.error or "not written: the run stopped first",
                        customer_id=write.customer_id,
                    )
                )

    def _checkpoint(self, lock: Any) -> None:
        """Between batches: stop cleanly on a signal or when the lock was lost."""
        if self.stop.is_set():
            raise Interrupted("interrupted: finished the batch in flight and stopped")
        self._check_lock(lock)

    def _check_lock(self, lock: Any) -> None:
        """Raise StateStoreError unless the lock is still ours.

        The heartbeat thread only notices a lost lock when it next beats; a run frozen past
        its TTL (SIGSTOP, a suspended VM) wakes with that thread and this one racing. So
        ownership is also asked of the store here, synchronously. A store that does not
        answer is left to the heartbeat: the lock stays ours until its TTL runs out.
        """
        if lock is None:
            return
        held = not getattr(lock, "lost", False)
        if held:
            try:
                held = bool(lock.extend())
            except StateStoreError as exc:
                log.warning("could not check the sync lock, carrying on: %s", exc)
        if not held:
            reason = getattr(lock, "lost_reason", None) or "it expired or another run took it"
            raise StateStoreError(f"lost the sync lock ({reason}); stopped")

    def _send(self, items: list[Any], lock: Any, what: str) -> dict[str, Any] | None:
        """One write batch after the checkpoint; answers by bId, or None when the outcome
        is unknown (the caller then looks the documents up instead of writing again)."""
        self._checkpoint(lock)
        try:
            return {r.bid: r for r in self.qbo.batch(items)}
        except (OutcomeUnknown, MalformedPayload) as exc:
            log.warning("%s batch outcome unknown (%s); looking the documents up", what, exc)
            return None

    def _reactivate(
        self,
        customers: Sequence[Customer],
        customer_ids: dict[str, str],
        errors: dict[str, str],
        report: RunReport,
        lock: Any,
    ) -> None:
        for chunk in _chunks(list(customers), BATCH_LIMIT):
            items = [
                self._batch_item(
                    f"r{n}",
                    "update",
                    "Customer",
                    {"Id": c.id, "SyncToken": c.sync_token, "sparse": True, "Active": True},
                )
                for n, c in enumerate(chunk)
            ]
            results = self._send(items, lock, "customer reactivation") or {}
            unsure: list[Customer] = []
            for n, customer in enumerate(chunk):
                result = results.get(f"r{n}")
                if result is not None and result.fault is None:
                    customer_ids[customer_key(customer.display_name)] = customer.id
                    report.customers_reactivated += 1
                else:
                    unsure.append(customer)
            if unsure:
                # Unknown or refused: read them back (reactivation is idempotent).
                found = self.qbo.find_customers_by_names(
                    [c.display_name for c in unsure], include_inactive=True
                )
                active = {customer_key(c.display_name): c.id for c in found if c.active}
                for n, customer in enumerate(chunk):
                    if customer not in unsure:
                        continue
                    key = customer_key(customer.display_name)
                    if key in active:
                        customer_ids[key] = active[key]
                        report.customers_reactivated += 1
                    else:
                        result = results.get(f"r{n}")
                        errors[key] = _fault_text(result.fault if result else None, "reactivate")
            self.progress.advance(len(chunk))

    def _create_customers(
        self,
        names: Sequence[str],
        customer_ids: dict[str, str],
        errors: dict[str, str],
        report: RunReport,
        lock: Any,
    ) -> None:
        pending = [n for n in names if customer_key(n) not in customer_ids]
        taken: set[str] = set()  # names QBO called duplicates (6240)
        for _ in range(RESOLVE_ROUNDS):
            if not pending:
                return
            uncertain: list[str] = []
            for chunk in _chunks(pending, BATCH_LIMIT):
                items = [
                    self._batch_item(f"c{n}", "create", "Customer", {"DisplayName": name})
                    for n, name in enumerate(chunk)
                ]
                results = self._send(items, lock, "customer")
                if results is None:
                    uncertain.extend(chunk)
                    self.progress.advance(len(chunk))
                    continue
                for n, name in enumerate(chunk):
                    result = results.get(f"c{n}")
                    if result is not None and result.fault is None and result.entity:
                        customer_ids[customer_key(name)] = str(result.entity["Id"])
                        report.customers_created += 1
                        log.info("customer %s created", result.entity["Id"])
                    elif result is None or result.outcome_unknown or result.fault.code == "6240":
                        # Lost answer, or the name exists already (another run, a
                        # vendor, an earlier lost answer): look it up rather than guess.
                        if result is not None and result.fault is not None:
                            taken.add(customer_key(name))
                        uncertain.append(name)
                    else:
                        errors[customer_key(name)] = _fault_text(result.fault, "create customer")
                self.progress.advance(len(chunk))
            pending = []
            if uncertain:
                found = self.qbo.find_customers_by_names(uncertain, include_inactive=True)
                by_name = {customer_key(c.display_name): c for c in found}
                for name in uncertain:
                    key = customer_key(name)
                    customer = by_name.get(key)
                    if customer is not None and customer.active:
                        customer_ids[key] = customer.id
                    elif customer is not None:
                        errors[key] = "an inactive QBO customer has this name; reactivate it"
                    elif key in taken:
                        errors[key] = (
                            "QBO says the name is taken, but by no customer: a vendor or "
                            'employee (or an inactive customer renamed "... (deleted)") has it; '
                            "rename that one or change CUSTOMER_NAME_TEMPLATE"
                        )
                    else:
                        pending.append(name)  # provably not there: creating again is safe
        for name in pending:
            errors.setdefault(customer_key(name), "customer creation outcome unknown after retries")

    def _write_invoices(
        self, writes: list[_Write], item_ids: Mapping[LineKind, str], lock: Any
    ) -> None:
        pending = list(writes)
        for round_number in range(RESOLVE_ROUNDS):
            if not pending:
                return
            uncertain: list[_Write] = []
            voids = [w for w in pending if w.plan.action is Action.VOID]
            batched = [w for w in pending if w.plan.action is not Action.VOID]
            for chunk in _chunks(batched, BATCH_LIMIT):
                items = [self._invoice_item(n, w, item_ids) for n, w in enumerate(chunk)]
                results = self._send(items, lock, "invoice")
                if results is None:
                    uncertain.extend(chunk)
                    self.progress.advance(len(chunk))
                    continue
                for n, write in enumerate(chunk):
                    self._absorb(write, results.get(f"i{n}"), uncertain)
                self.progress.advance(len(chunk))
            for write in voids:
                self._checkpoint(lock)
                assert write.invoice is not None
                try:
                    answer = self.qbo.void_invoice(write.invoice.id, write.invoice.sync_token)
                    write.done, write.invoice_id = True, str(answer.get("Id", write.invoice.id))
                except (OutcomeUnknown, MalformedPayload):
                    uncertain.append(write)
                except QBOFault as fault:
                    if fault.code in ("5010", "610"):
                        uncertain.append(write)
                    else:
                        write.error = _fault_text(fault, "void")
                self.progress.advance(1)
            pending = self._resolve(uncertain, item_ids) if uncertain else []
            if pending:
                log.info("round %d: %d writes to try again", round_number + 1, len(pending))
        for write in pending:
            write.error = write.error or "outcome unknown after retries; queued"

    def _invoice_item(self, n: int, write: _Write, item_ids: Mapping[LineKind, str]) -> Any:
        action = write.plan.action
        bid = f"i{n}"
        if action is Action.CREATE:
            assert write.plan.draft and write.customer_id
            body = invoice_payload(write.plan.draft, write.customer_id, item_ids)
            return self._batch_item(bid, "create", "Invoice", body)
        assert write.invoice is not None
        if action is Action.UPDATE:
            assert write.plan.draft and write.customer_id
            body = update_payload(write.plan.draft, write.customer_id, item_ids, write.invoice)
            return self._batch_item(bid, "update", "Invoice", body)
        body = {"Id": write.invoice.id, "SyncToken": write.invoice.sync_token}
        return self._batch_item(bid, "delete", "Invoice", body)

    def _absorb(self, write: _Write, result: Any, uncertain: list[_Write]) -> None:
        if result is None or result.outcome_unknown:
            uncertain.append(write)  # the batch answered without this item
            return
        if result.fault is None:
            write.done = True
            entity = result.entity or {}
            write.invoice_id = str(entity.get("Id") or (write.invoice.id if write.invoice else ""))
            log.info(
                "quote %s: invoice %s %s",
                write.plan.number,
                write.invoice_id,
                _PAST[write.plan.action],
            )
            return
        code = result.fault.code
        # 6140 duplicate DocNumber: an earlier (lost) create may have landed. 5010 stale
        # SyncToken / 610 gone: the invoice changed under us. In each case look it up.
        if code in ("6140", "5010", "610"):
            uncertain.append(write)
        else:
            write.error = _fault_text(result.fault, write.plan.action.value)

    def _resolve(self, uncertain: list[_Write], item_ids: Mapping[LineKind, str]) -> list[_Write]:
        """Look up each uncertain write's invoice; return the writes still to be made."""
        found = self.qbo.find_invoices_by_doc_numbers([w.plan.number for w in uncertain])
        by_doc: dict[str, list[Invoice]] = {}
        for invoice in found:
            by_doc.setdefault(invoice.doc_number or "", []).append(invoice)
        again: list[_Write] = []
        for write in uncertain:
            current = by_doc.get(write.plan.number, [])
            action = write.plan.action
            if len(current) > 1:
                write.error = "several QBO invoices carry this DocNumber; needs a person"
                continue
            invoice = current[0] if current else None
            if action in (Action.DELETE, Action.VOID):
                if invoice is None or (action is Action.VOID and _is_void(invoice)):
                    write.done = True
                    write.invoice_id = write.invoice.id if write.invoice else None
                elif invoice.paid and not _is_void(invoice):
                    write.error = "a payment was applied meanwhile; not removed"
                else:
                    write.invoice = invoice
                    again.append(write)
                continue
            draft = write.plan.draft
            assert draft is not None and write.customer_id is not None
            if invoice is not None and draft_matches(draft, write.customer_id, item_ids, invoice):
                write.done, write.invoice_id = True, invoice.id
            elif invoice is None:
                if action is Action.UPDATE:
                    write.error = "the invoice disappeared during the run; will retry"
                else:
                    again.append(write)  # provably not created: creating is safe
            elif invoice.paid:
                write.error = "a payment was applied meanwhile; not changed"
            else:
                # Exists but differs (a lost create of an older version, or a stale
                # update): update it with its current SyncToken.
                write.invoice = invoice
                write.plan = _with_action(write.plan, Action.UPDATE, invoice)
                again.append(write)
        return again

    def _batch_item(self, bid: str, operation: str, entity: str, body: dict[str, Any]) -> Any:
        from fourdqbo.qbo.client import BatchItem

        return BatchItem(bid=bid, operation=operation, entity=entity, body=body, query=None)

    # -- recording ---------------------------------------------------------------------

    def _record_outcomes(self, report: RunReport) -> None:
        at = report.finished_at or self.now()
        for outcome in report.outcomes.values():
            if outcome.action == "failed":
                self.state.record_failure(outcome.quote, outcome.error or "failed", at)
            elif outcome.action == "conflict":
                from fourdqbo.state.base import ConflictEntry

                self.state.record_conflict(
                    ConflictEntry(outcome.quote, outcome.invoice_id, outcome.reason, at)
                )
                self.state.clear_failure(outcome.quote)
            else:
                self.state.clear_failure(outcome.quote)
                self.state.clear_conflict(outcome.quote)


def _outcome(plan: QuotePlan, action: str, **extra: Any) -> QuoteOutcome:
    invoice = plan.invoice
    outcome = QuoteOutcome(
        quote=plan.number,
        version=plan.version,
        status=plan.status,
        action=action,
        invoice_id=invoice.id if invoice else None,
        customer_id=invoice.customer_id if invoice else None,
        reason=plan.reason,
    )
    for key, value in extra.items():
        if value is not None:
            setattr(outcome, key, value)
    if action == "failed" and not outcome.error:
        outcome.error = plan.reason or "failed"
    return outcome


def _with_action(plan: QuotePlan, action: Action, invoice: Invoice) -> QuotePlan:
    from dataclasses import replace

    return replace(plan, action=action, invoice=invoice)


def _is_void(invoice: Invoice) -> bool:
    return invoice.total == 0 and invoice.balance == 0


def _fault_text(fault: QBOFault | None, what: str) -> str:
    if fault is None:
        return f"{what}: no answer from QBO"
    detail = f" ({fault.detail})" if fault.detail else ""
    return f"{what}: QBO fault {fault.code}: {fault.message}{detail}"[:300]


def _chunks(values: list[Any], size: int) -> Iterable[list[Any]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


def _unique(values: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(values))


def host_identity() -> tuple[str, int]:
    return socket.gethostname(), os.getpid()


__all__ = [
    "Progress",
    "RunOptions",
    "SilentProgress",
    "SyncEngine",
    "customer_display_name",
    "status_label",
]
