"""Load: carry out one chunk's plan in QBO, resolving every unknown outcome by looking.

Write phases, in order, in batches of at most 30: reactivate the inactive customers the
chunk's invoices need, create the missing customers, then the invoices (create, update,
delete; voids one by one). A write whose outcome is unknown (a lost answer, a duplicate
DocNumber, a stale SyncToken, a name QBO says is taken) is never sent blindly again: the
document is looked up first, for up to `RESOLVE_ROUNDS` rounds. Before each batch the
run stops cleanly on a signal or a lost lock, and the QBO client checks the lock again
right before a write leaves (after its pacing waits).

A `Loader` lives for the whole run: the customers it created or reactivated (and the
ones it could not) are kept across chunks, so a patient whose quotes fall in several
chunks gets one customer even when a later chunk was looked up before an earlier one
created it. Every quote of the chunk ends up in the report, written or not.

Where 0.2 grows it: ledger entries are made from the `_Write`s that are `done` (invoice
id, SyncToken after the write, intuit_tid) in `_record_writes`.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any

from fourdqbo.errors import MalformedPayload, OutcomeUnknown, QBOFault, StateStoreError
from fourdqbo.qbo.records import Customer, Invoice
from fourdqbo.state.items import Difference
from fourdqbo.sync.collaborators import Progress, QBOBooks, RunLock
from fourdqbo.sync.customers import CustomerToReactivate
from fourdqbo.sync.differences import invoice_differences, money_text
from fourdqbo.sync.mapping import LineKind, draft_matches, invoice_payload, update_payload
from fourdqbo.sync.pipeline import Interrupted
from fourdqbo.sync.planning import Action, Plan, QuotePlan, customer_key, is_voided
from fourdqbo.sync.report import QuoteOutcome, RunReport

log = logging.getLogger(__name__)

BATCH_LIMIT = 30  # QBO's most items in one batch
WRITES_IN_FLIGHT = 2  # write batches sent at once (QBO allows 10 requests in flight)
MIN_FILLING_BATCH = 20  # below this, a batch that divides the limit costs more than it fills
RESOLVE_ROUNDS = 3  # rounds of "write, and look up what is uncertain" before giving up
WRITES = (Action.CREATE, Action.UPDATE, Action.DELETE, Action.VOID)

PAST = {
    Action.CREATE: "created",
    Action.UPDATE: "updated",
    Action.DELETE: "deleted",
    Action.VOID: "voided",
    Action.UNCHANGED: "unchanged",
    Action.SKIP: "skipped",
    Action.CONFLICT: "conflict",
    Action.FAIL: "failed",
}


def write_batch_size(requests_per_window: int, batches_per_window: int) -> int:
    """Items per write batch: the largest size up to 30 whose batches fill QBO's request
    limit exactly (500 a minute: 25, 20 batches) within its batch limit, else 30.

    Batches of 30 do not divide 500: at most 16 fit a window (480 items), so a long
    backfill would settle at 0.94 of the limit; batches of 25 fill it.
    """
    for size in range(BATCH_LIMIT, MIN_FILLING_BATCH - 1, -1):
        if requests_per_window % size == 0 and requests_per_window // size <= batches_per_window:
            return size
    return BATCH_LIMIT


@dataclass(frozen=True)
class PlannedChunk:
    """What the producer hands the loader: a chunk's plan and what it was planned from."""

    plan: Plan
    customers: tuple[Customer, ...]  # what the chunk's look-up found
    item_ids: Mapping[LineKind, str]
    # Per conflicting quote, what differs (QBO's value and the quote's), for a person.
    differences: Mapping[str, tuple[Difference, ...]] = field(default_factory=dict)
    # Quotes left unchanged because QBO already equals the quote (the ledger adopts them).
    in_step: frozenset[str] = frozenset()

    @classmethod
    def of(cls, plan: Plan, found: Any, quote_version_field: str | None) -> PlannedChunk:
        """The plan of an extracted chunk, with what differs for each conflict."""
        differences: dict[str, tuple[Difference, ...]] = {}
        in_step: set[str] = set()
        for quote_plan in plan.quotes:
            if quote_plan.action is Action.CONFLICT:
                differences[quote_plan.number] = conflict_differences(
                    quote_plan, found.item_ids, quote_version_field
                )
            elif (
                quote_plan.action is Action.UNCHANGED
                and quote_plan.draft is not None
                and quote_plan.invoice is not None
                and quote_plan.customer_id is not None
                and draft_matches(
                    quote_plan.draft, quote_plan.customer_id, found.item_ids, quote_plan.invoice
                )
            ):
                in_step.add(quote_plan.number)
        return cls(plan, found.customers, found.item_ids, differences, frozenset(in_step))

    def outcome(self, plan: QuotePlan, action: str, **extra: Any) -> QuoteOutcome:
        outcome = outcome_of(plan, action, **extra)
        if plan.action is Action.CONFLICT:
            outcome.kind = str(plan.kind) if plan.kind is not None else None
            outcome.differences = self.differences.get(plan.number, ())
        elif plan.number in self.in_step and plan.invoice is not None:
            outcome.in_step = True
            outcome.sync_token = plan.invoice.sync_token
        return outcome


def conflict_differences(
    plan: QuotePlan, item_ids: Mapping[LineKind, str], quote_version_field: str | None
) -> tuple[Difference, ...]:
    """What a person needs to see of a conflict: field by field where both an invoice and
    a draft exist; otherwise the one fact that makes it a conflict."""
    invoice, draft = plan.invoice, plan.draft
    if invoice is not None and draft is not None:
        if is_voided(invoice):
            return (Difference("Invoice", f"voided (Id {invoice.id})", money_text(draft.total)),)
        return invoice_differences(
            draft, plan.customer_id, item_ids, invoice, quote_version_field=quote_version_field
        )
    if invoice is None and draft is not None:
        return (Difference("Invoice", None, money_text(draft.total)),)
    if invoice is not None and invoice.paid:
        paid = money_text(invoice.total - invoice.balance)
        return (Difference("Payment", f"{paid} paid", f"quote {plan.status}"),)
    return ()


@dataclass
class _Write:
    """One planned invoice write and what we learn about it."""

    plan: QuotePlan
    customer_id: str | None
    invoice: Invoice | None  # the current QBO invoice for update/delete/void
    done: bool = False
    invoice_id: str | None = None
    error: str | None = None
    sync_token: str | None = None  # the invoice's SyncToken after the write
    intuit_tid: str | None = None  # of the answer that confirmed it


class Loader:
    """The writing side of one run (the calling thread of the pipeline)."""

    def __init__(
        self,
        qbo: QBOBooks,
        report: RunReport,
        *,
        lock: RunLock | None,
        stop: threading.Event,
        halt: threading.Event | None = None,
        progress: Progress,
        batch_size: int = BATCH_LIMIT,
        writes_in_flight: int = WRITES_IN_FLIGHT,
    ) -> None:
        if not 1 <= batch_size <= BATCH_LIMIT:
            raise ValueError(f"a write batch holds 1 to {BATCH_LIMIT} items")
        if writes_in_flight < 1:
            raise ValueError("at least one write must be allowed in flight")
        self.batch_size = batch_size
        self.writes_in_flight = writes_in_flight
        self.qbo = qbo
        self.report = report
        self.lock = lock
        self.stop = stop
        self.halt = halt  # set when a later chunk's read failed
        self.progress = progress
        self._sending = threading.local()  # .unsent: this thread's batch has not left yet
        # One of two writers at work (a chunk's invoices, the next chunk's customers) raised:
        # the other sends no further batch.
        self._writer_failed = threading.Event()
        # Run-wide, by DisplayName key: customers known active (found, created or
        # reactivated), and those this run could not get (not tried again this run).
        self.customer_ids: dict[str, str] = {}
        self.customer_errors: dict[str, str] = {}
        # Run-wide, by customer Id: reactivated (with the name it has now), or refused.
        self.reactivated: dict[str, str] = {}
        self.reactivation_errors: dict[str, str] = {}

    # -- one chunk -----------------------------------------------------------------------

    def load(
        self, chunk: PlannedChunk, upcoming: Callable[[], PlannedChunk | None] | None = None
    ) -> None:
        """Write one chunk and record every one of its quotes in the report.

        `upcoming()` is the next chunk when it has been read already: its new customers are
        then created while this chunk's invoices are written (see `_CustomersAhead`)."""
        plan = chunk.plan
        for customer in chunk.customers:
            if customer.active:
                self.customer_ids.setdefault(customer_key(customer.display_name), customer.id)
        writes_needed = [p for p in plan.quotes if p.action in WRITES]
        for quote_plan in plan.quotes:
            if quote_plan.action not in WRITES:
                self.report.record(chunk.outcome(quote_plan, PAST[quote_plan.action]))
        if not writes_needed:
            self.progress.quotes_done(len(plan.quotes))
            return
        self.progress.phase("writing")
        self._reactivate(
            plan.reactivations
            or tuple(CustomerToReactivate(c, None) for c in plan.customers_to_reactivate)
        )
        self._create_customers([c.display_name for c in plan.customers_to_create])
        writes: list[_Write] = []
        for quote_plan in writes_needed:
            customer_id = None
            if quote_plan.action in (Action.CREATE, Action.UPDATE):
                customer_id, error = self._customer_of(quote_plan)
                if customer_id is None:
                    self.report.record(outcome_of(quote_plan, "failed", error=error))
                    continue
            writes.append(_Write(quote_plan, customer_id, quote_plan.invoice))
        following = upcoming() if upcoming is not None else None
        ahead = _CustomersAhead.start(self, following) if following is not None else None
        try:
            self._write_invoices(writes, chunk.item_ids)
            # The last batch may have gone out after the lock was lost (a run frozen past
            # its TTL): then this run must not pass for a clean one (exit 3, no watermark).
            self.check_lock()
        except Interrupted:
            # Stopped because the customers ahead failed: their error is what stopped it.
            if ahead is not None and (failure := ahead.failure()) is not None:
                raise failure from None
            raise
        except BaseException:
            self._writer_failed.set()  # the customers ahead send nothing more
            raise
        finally:
            if ahead is not None:
                ahead.wait()
            self._record_writes(writes)
            self.progress.quotes_done(len(plan.quotes))
        if ahead is not None and (failure := ahead.failure()) is not None:
            raise failure

    def _customer_of(self, plan: QuotePlan) -> tuple[str | None, str]:
        """The customer a quote's invoice goes to, or why there is none.

        The plan names the patient's existing customer (found by patient id) when there is
        one; it may have needed reactivating. Otherwise the customer was to be created
        under the draft's name, in this chunk or an earlier one."""
        if plan.customer_id is not None:
            error = self.reactivation_errors.get(plan.customer_id)
            return (None, error) if error else (plan.customer_id, "")
        name = customer_key(plan.customer_name or "")
        customer_id = self.customer_ids.get(name)
        if customer_id is None:
            return None, self.customer_errors.get(name, "customer could not be created")
        return customer_id, ""

    # -- the lock ------------------------------------------------------------------------

    def checkpoint(self) -> None:
        """Between batches: stop cleanly on a signal, when a chunk's read failed (an
        upstream refused: nothing more is written), when the other writer of this chunk
        raised (see `_CustomersAhead`), or when the lock was lost."""
        if (
            self.stop.is_set()
            or (self.halt is not None and self.halt.is_set())
            or self._writer_failed.is_set()
        ):
            raise Interrupted("interrupted: finished the batch in flight and stopped")
        self.check_lock()

    def before_write(self) -> None:
        """The QBO client's last word before a write request leaves, once it is paced.

        A batch may wait in the limiter long after its checkpoint (reads go first): if a
        signal came or a chunk's read failed meanwhile, its first attempt is not sent. A
        retry of a batch that has left is (what it did must be known), and so is every
        write outside a batch. The lock is checked before every attempt."""
        if getattr(self._sending, "unsent", False):
            self._sending.unsent = False
            self.checkpoint()
        else:
            self.check_lock()

    def check_lock(self) -> None:
        """Raise StateStoreError unless the lock is still ours.

        The heartbeat thread only notices a lost lock when it next beats; a run frozen past
        its TTL (SIGSTOP, a suspended VM) wakes with that thread and this one racing. So
        ownership is also asked of the store here, synchronously. A store that does not
        answer is left to the heartbeat: the lock stays ours until its TTL runs out.
        """
        lock = self.lock
        if lock is None:
            return
        held = not lock.lost
        if held:
            try:
                held = bool(lock.extend())
            except StateStoreError as exc:
                log.warning("could not check the sync lock, carrying on: %s", exc)
        if not held:
            reason = lock.lost_reason or "it expired or another run took it"
            raise StateStoreError(f"lost the sync lock ({reason}); stopped")

    # -- batches -------------------------------------------------------------------------

    def _send(
        self, items: list[Any], what: str, *, fill: bool = False
    ) -> tuple[dict[str, Any], int]:
        """One write request after the checkpoint: (answers by bId, how many of `items` it
        sent). With `fill`, only as many as QBO's window has room for go (see
        `QBOClient.batch`); the caller sends the rest. An outcome that is unknown answers
        nothing: the caller looks those documents up instead of writing them again."""
        self.checkpoint()
        self._sending.unsent = True
        try:
            answered = self.qbo.batch(items, fill=fill)
        except (OutcomeUnknown, MalformedPayload) as exc:
            log.warning("%s batch outcome unknown (%s); looking the documents up", what, exc)
            # A batch sized to the room sent an unknown number of its items: assume all, so
            # that none is sent again without being looked up.
            return {}, len(items)
        finally:
            self._sending.unsent = False
        self.progress.wrote(len(answered))
        return {r.bid: r for r in answered}, len(answered)

    def _send_batches(
        self, batches: list[list[Any]], what: str
    ) -> Iterator[tuple[int, dict[str, Any]]]:
        """Send independent batches, `writes_in_flight` requests at once; yields (index,
        answers by bId) for each batch once all of it was sent and answered.

        A batch goes with as many of its items as QBO's window has room for when it is due
        (`fill`); the rest is the next request. One batch at a time would make the round
        trip the pace whenever it is longer than the limiter's interval (25 items at 500 a
        minute: 3 s, but 50 ms on a benchmark's 1-second "minute"). An item without an
        answer (its request's outcome is unknown) is for the caller to look up.

        When a request raises (a stop, a lost lock), nothing further is sent, the requests
        in flight are finished and every batch that got answers is yielded (they may have
        written), then the error is raised.
        """
        error: BaseException | None = None
        answers: dict[int, dict[str, Any]] = {}
        waiting: deque[tuple[int, list[Any]]] = deque(enumerate(batches))
        in_flight: deque[tuple[int, list[Any], Future[tuple[dict[str, Any], int]]]] = deque()
        with ThreadPoolExecutor(self.writes_in_flight, thread_name_prefix="qbo-write") as pool:

            def send_next() -> None:
                index, items = waiting.popleft()
                future = pool.submit(self._send, items, what, fill=True)
                in_flight.append((index, items, future))

            while waiting and len(in_flight) < self.writes_in_flight:
                send_next()
            while in_flight:
                index, items, future = in_flight.popleft()
                try:
                    answered, sent = future.result()
                except BaseException as exc:  # raised below, once the others are in
                    error = error or exc
                    answered, sent = {}, len(items)  # none of them left
                answers.setdefault(index, {}).update(answered)
                if error is None and sent < len(items):
                    waiting.appendleft((index, items[sent:]))  # the rest goes next
                else:
                    done = answers.pop(index)
                    if done or error is None:
                        yield index, done
                while error is None and waiting and len(in_flight) < self.writes_in_flight:
                    send_next()
        if error is not None:
            raise error

    def _reactivate(self, wanted: Sequence[CustomerToReactivate]) -> None:
        """Make the patients' inactive customers active again, with their DisplayName set
        back to the name without " (deleted)" where the plan says so. A restore refused
        because the plain name is taken (6240) reactivates without renaming and says so."""
        # An earlier chunk may have reactivated it since this chunk was looked up.
        pending = [
            r
            for r in wanted
            if r.customer.id not in self.reactivated
            and r.customer.id not in self.reactivation_errors
        ]
        for _ in range(RESOLVE_ROUNDS):
            if not pending:
                return
            again: list[CustomerToReactivate] = []
            for chunk in _slices(pending, self.batch_size):
                items = [
                    _batch_item(f"r{n}", "update", "Customer", _reactivation_body(r))
                    for n, r in enumerate(chunk)
                ]
                results, _ = self._send(items, "customer reactivation")
                unsure: list[tuple[CustomerToReactivate, QBOFault | None]] = []
                for n, wish in enumerate(chunk):
                    result = results.get(f"r{n}")
                    if result is not None and result.fault is None:
                        self._reactivated(wish, result.entity)
                    elif (
                        result is not None
                        and result.fault is not None
                        and result.fault.code == "6240"
                        and wish.restore_name
                    ):
                        # The plain name is someone else's now: keep the suffixed one.
                        again.append(
                            CustomerToReactivate(
                                wish.customer,
                                None,
                                f"customer {wish.customer.id} reactivated without its plain "
                                "name, which another QBO name holds",
                            )
                        )
                    elif result is None or result.outcome_unknown:
                        unsure.append((wish, None))
                    else:
                        unsure.append((wish, result.fault))
                if unsure:
                    again.extend(self._read_back(unsure))
            pending = again
        for wish in pending:
            self.reactivation_errors.setdefault(
                wish.customer.id,
                f"reactivation of customer {wish.customer.id}: outcome unknown after retries",
            )

    def _read_back(
        self, unsure: list[tuple[CustomerToReactivate, QBOFault | None]]
    ) -> list[CustomerToReactivate]:
        """Reactivations whose answer was lost (fault None) or refused: read the customers
        back by Id before anything is sent again. Active now: done. Changed meanwhile (a
        stale SyncToken, say): again with what QBO holds. Unchanged: a lost one provably
        did not happen, so it is sent again; a refused one is final, with QBO's reason."""
        found = {
            c.id: c for c in self.qbo.find_customers_by_ids([w.customer.id for w, _ in unsure])
        }
        again = []
        for wish, fault in unsure:
            current = found.get(wish.customer.id)
            if current is not None and current.active:
                self._reactivated(wish, current.raw)
            elif current is not None and current.sync_token != wish.customer.sync_token:
                again.append(replace(wish, customer=current))  # changed meanwhile: again
            elif current is not None and fault is None:
                again.append(wish)  # provably not applied: sending it again is safe
            else:
                what = f"reactivate customer {wish.customer.id}"
                self.reactivation_errors[wish.customer.id] = (
                    _fault_text(fault, what) if fault is not None else f"could not {what}"
                )
        return again

    def _reactivated(self, wish: CustomerToReactivate, entity: Mapping[str, Any] | None) -> None:
        self.reactivated[wish.customer.id] = str((entity or {}).get("DisplayName") or "")
        self.report.customers_reactivated += 1
        if wish.note:
            self.report.notices.append(wish.note)
        log.info("customer %s reactivated", wish.customer.id)

    def _create_customers(self, names: Sequence[str]) -> None:
        # Created by an earlier chunk (its look-up ran before that), or already refused.
        pending = [
            n
            for n in names
            if customer_key(n) not in self.customer_ids
            and customer_key(n) not in self.customer_errors
        ]
        errors = self.customer_errors
        taken: set[str] = set()  # names QBO called duplicates (6240)
        for _ in range(RESOLVE_ROUNDS):
            if not pending:
                return
            uncertain: list[str] = []
            slices = list(_slices(pending, self.batch_size))
            batches = [
                [
                    _batch_item(f"c{n}", "create", "Customer", {"DisplayName": name})
                    for n, name in enumerate(chunk)
                ]
                for chunk in slices
            ]
            for index, results in self._send_batches(batches, "customer"):
                chunk = slices[index]
                for n, name in enumerate(chunk):
                    result = results.get(f"c{n}")
                    if result is not None and result.fault is None and result.entity:
                        self.customer_ids[customer_key(name)] = str(result.entity["Id"])
                        self.report.customers_created += 1
                        log.info("customer %s created", result.entity["Id"])
                    elif result is None or result.outcome_unknown or result.fault.code == "6240":
                        # Lost answer, or the name exists already (another run, a
                        # vendor, an earlier lost answer): look it up rather than guess.
                        if result is not None and result.fault is not None:
                            taken.add(customer_key(name))
                        uncertain.append(name)
                    else:
                        errors[customer_key(name)] = _fault_text(result.fault, "create customer")
            pending = []
            if uncertain:
                found = self.qbo.find_customers_by_names(uncertain, include_inactive=True)
                by_name = {customer_key(c.display_name): c for c in found}
                for name in uncertain:
                    key = customer_key(name)
                    customer = by_name.get(key)
                    if customer is not None and customer.active:
                        self.customer_ids[key] = customer.id
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

    def _write_invoices(self, writes: list[_Write], item_ids: Mapping[LineKind, str]) -> None:
        pending = list(writes)
        for round_number in range(RESOLVE_ROUNDS):
            if not pending:
                return
            uncertain: list[_Write] = []
            voids = [w for w in pending if w.plan.action is Action.VOID]
            batched = [w for w in pending if w.plan.action is not Action.VOID]
            slices = list(_slices(batched, self.batch_size))
            batches = [[_invoice_item(n, w, item_ids) for n, w in enumerate(c)] for c in slices]
            for index, results in self._send_batches(batches, "invoice"):
                chunk = slices[index]
                for n, write in enumerate(chunk):
                    _absorb(write, results.get(f"i{n}"), uncertain)
            for write in voids:
                self.checkpoint()
                assert write.invoice is not None
                try:
                    answer = self.qbo.void_invoice(write.invoice.id, write.invoice.sync_token)
                    write.done, write.invoice_id = True, str(answer.get("Id", write.invoice.id))
                    write.sync_token = _text(answer.get("SyncToken"))
                    write.intuit_tid = getattr(answer, "intuit_tid", None)
                    self.progress.wrote(1)
                except (OutcomeUnknown, MalformedPayload):
                    uncertain.append(write)
                except QBOFault as fault:
                    if fault.code in ("5010", "610"):
                        uncertain.append(write)
                    else:
                        write.error = _fault_text(fault, "void")
            pending = self._resolve(uncertain, item_ids) if uncertain else []
            if pending:
                log.info("round %d: %d writes to try again", round_number + 1, len(pending))
        for write in pending:
            write.error = write.error or "outcome unknown after retries; queued"

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
                if invoice is None or (action is Action.VOID and is_voided(invoice)):
                    write.done = True
                    write.invoice_id = write.invoice.id if write.invoice else None
                    write.sync_token = invoice.sync_token if invoice is not None else None
                elif invoice.paid and not is_voided(invoice):
                    write.error = "a payment was applied meanwhile; not removed"
                else:
                    write.invoice = invoice
                    again.append(write)
                continue
            draft = write.plan.draft
            assert draft is not None and write.customer_id is not None
            if invoice is not None and draft_matches(draft, write.customer_id, item_ids, invoice):
                write.done, write.invoice_id = True, invoice.id
                write.sync_token = invoice.sync_token
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
                write.plan = replace(write.plan, action=Action.UPDATE, invoice=invoice)
                again.append(write)
        return again

    # -- recording -----------------------------------------------------------------------

    def _record_writes(self, writes: list[_Write]) -> None:
        """Record every write, including those an interruption left unmade (queued)."""
        for write in writes:
            if write.done:
                outcome = outcome_of(
                    write.plan,
                    PAST[write.plan.action],
                    invoice_id=write.invoice_id,
                    customer_id=write.customer_id,
                    sync_token=write.sync_token,
                    intuit_tid=write.intuit_tid,
                )
            else:
                outcome = outcome_of(
                    write.plan,
                    "failed",
                    error=write.error or "not written: the run stopped first",
                    customer_id=write.customer_id,
                )
            self.report.record(outcome)


class _CustomersAhead:
    """The next chunk's new customers, created in a thread of their own while this chunk's
    invoices are written.

    Each chunk's invoices wait for its customers. Created in turn, every chunk would have
    two ends where the writes drain (the last batches' answers awaited, nothing waiting at
    the limiter, and QBO's allowance of that moment lost): customers, then invoices. Ahead,
    they go out beside the invoices before them, and the next chunk starts with invoices.

    The loader's run-wide customer maps make it safe: this chunk's customers exist before
    this starts, so nothing is created twice, and the next chunk's `load` creates only what
    is still missing (none, unless this stopped). It stops on the loader's checkpoint like
    any batch. An exception here (a lost lock, QBO refusing) also stops the invoice writes
    at their next checkpoint, and is the one the run reports."""

    def __init__(self, loader: Loader, names: list[str]) -> None:
        self._loader = loader
        self._error: BaseException | None = None
        self._thread = threading.Thread(
            target=self._create, args=(names,), name="qbo-customers-ahead", daemon=True
        )

    @classmethod
    def start(cls, loader: Loader, following: PlannedChunk) -> _CustomersAhead | None:
        names = [c.display_name for c in following.plan.customers_to_create]
        if not names:
            return None
        ahead = cls(loader, names)
        ahead._thread.start()
        return ahead

    def _create(self, names: list[str]) -> None:
        try:
            self._loader._create_customers(names)
        except BaseException as exc:  # raised in the loading thread, see `failure`
            self._error = exc
            if not isinstance(exc, Interrupted):
                self._loader._writer_failed.set()

    def wait(self) -> None:
        self._thread.join()

    def failure(self) -> BaseException | None:
        """Once done: what stopped it, unless that was only the run's own stop."""
        self.wait()
        return None if isinstance(self._error, Interrupted) else self._error


def outcome_of(plan: QuotePlan, action: str, **extra: Any) -> QuoteOutcome:
    """A quote's report line from its plan (and what the write learnt)."""
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


def _invoice_item(n: int, write: _Write, item_ids: Mapping[LineKind, str]) -> Any:
    action = write.plan.action
    bid = f"i{n}"
    if action is Action.CREATE:
        assert write.plan.draft and write.customer_id
        body = invoice_payload(write.plan.draft, write.customer_id, item_ids)
        return _batch_item(bid, "create", "Invoice", body)
    assert write.invoice is not None
    if action is Action.UPDATE:
        assert write.plan.draft and write.customer_id
        body = update_payload(write.plan.draft, write.customer_id, item_ids, write.invoice)
        return _batch_item(bid, "update", "Invoice", body)
    body = {"Id": write.invoice.id, "SyncToken": write.invoice.sync_token}
    return _batch_item(bid, "delete", "Invoice", body)


def _absorb(write: _Write, result: Any, uncertain: list[_Write]) -> None:
    if result is None or result.outcome_unknown:
        uncertain.append(write)  # the batch answered without this item
        return
    if result.fault is None:
        write.done = True
        entity = result.entity or {}
        write.invoice_id = str(entity.get("Id") or (write.invoice.id if write.invoice else ""))
        write.sync_token = _text(entity.get("SyncToken"))
        write.intuit_tid = getattr(result, "intuit_tid", None)
        log.info(
            "quote %s: invoice %s %s", write.plan.number, write.invoice_id, PAST[write.plan.action]
        )
        return
    code = result.fault.code
    # 6140 duplicate DocNumber: an earlier (lost) create may have landed. 5010 stale
    # SyncToken / 610 gone: the invoice changed under us. In each case look it up.
    if code in ("6140", "5010", "610"):
        uncertain.append(write)
    else:
        write.error = _fault_text(result.fault, write.plan.action.value)


def _batch_item(bid: str, operation: str, entity: str, body: dict[str, Any]) -> Any:
    from fourdqbo.qbo.client import BatchItem  # httpx: only when a write is made

    return BatchItem(bid=bid, operation=operation, entity=entity, body=body, query=None)


def _reactivation_body(wish: CustomerToReactivate) -> dict[str, Any]:
    body: dict[str, Any] = {
        "Id": wish.customer.id,
        "SyncToken": wish.customer.sync_token,
        "sparse": True,
        "Active": True,
    }
    if wish.restore_name:
        body["DisplayName"] = wish.restore_name
    return body


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def _fault_text(fault: QBOFault | None, what: str) -> str:
    if fault is None:
        return f"{what}: no answer from QBO"
    detail = f" ({fault.detail})" if fault.detail else ""
    return f"{what}: QBO fault {fault.code}: {fault.message}{detail}"[:300]


def _slices(values: list[Any], size: int) -> Iterable[list[Any]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


__all__ = [
    "BATCH_LIMIT",
    "PAST",
    "RESOLVE_ROUNDS",
    "Loader",
    "PlannedChunk",
    "outcome_of",
    "write_batch_size",
]
