"""Record: what a finished (or aborted) run leaves in the state store, and its verdict.

In order: the ledger of the run's writes (and of invoices found already equal to their
quote, so a lost ledger is rebuilt from QBO); failures queued — a quote that failed
`SYNC_MAX_ATTEMPTS` times gives up and becomes an item needing a person; conflicts kept
as items with what differs; items of quotes that are now fine closed. Then the watermark
moves (only for a run that got through its whole window, and never past unprocessed
work), the CDC cursor with it, and the run's summary joins the history. The order
matters: the watermark may only pass quotes whose failure is queued. On an aborted run
the state store may be the thing that failed; the original error is what the operator
must see, so recording errors are only logged then.

The verdict (`sync.attention.assess`) decides the exit code: a cron run is quiet unless
something is new — an item needing a person, a quote that just gave up, a first
failure — or a reminder is due. A dry run records nothing but is judged the same way.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from fourdqbo.config import Settings
from fourdqbo.errors import StateStoreError
from fourdqbo.state.items import AttentionItem, AttentionKind, LedgerEntry
from fourdqbo.sync.attention import AttentionKey, Failure, assess
from fourdqbo.sync.cdc import Changes
from fourdqbo.sync.collaborators import StateStore
from fourdqbo.sync.report import QuoteOutcome, RunReport

log = logging.getLogger(__name__)

WRITTEN = ("created", "updated", "deleted", "voided")


@dataclass
class RunState:
    """What the run learnt before its chunks that recording needs at the end."""

    changes: Changes | None = None  # the CDC read (None: not made, e.g. for --quote)
    open_before: tuple[AttentionItem, ...] = ()  # items needing a person as the run began
    gap_notice: str | None = None  # CDC could not cover the time since its cursor


def record_run(
    state: StateStore,
    settings: Settings,
    report: RunReport,
    window_from: datetime | None,
    started: datetime,
    now: datetime,
    *,
    run: RunState | None = None,
    strict: bool = False,
) -> None:
    """Record the run (nothing for a dry run) and set its verdict. Raises StateStoreError
    (and marks the report aborted) only when the run itself had not aborted already.

    `strict` (`sync apply`): exit 1 whenever a quote failed or conflicts, new or not — the
    operator asked for these quotes and must see what was refused."""
    run = run or RunState()
    at = report.finished_at or now
    try:
        if report.dry_run:
            _judge(state, settings, report, run, at, failures=_dry_failures(state, report))
        else:
            failures = record_outcomes(state, settings, report, at, run.open_before)
            _judge(state, settings, report, run, at, failures=failures, store=True)
            if not report.aborted:
                if window_from is not None and may_advance(state, settings, window_from):
                    report.watermark_advanced = state.advance_watermark(started)
                if run.changes is not None and run.changes.next_cursor is not None:
                    state.set_cdc_cursor(run.changes.next_cursor)
            state.append_run(report.summary())
    except StateStoreError as exc:
        if report.aborted:
            log.error("could not record the aborted run: %s", exc)
            return
        report.aborted = str(exc)
        raise
    if strict:
        report.verdict = None  # the plain rule: every failure and conflict counts


def record_outcomes(
    state: StateStore,
    settings: Settings,
    report: RunReport,
    at: datetime,
    open_before: Sequence[AttentionItem] = (),
) -> list[Failure]:
    """Ledger, retry queue, give-ups, items needing a person; returns the run's failures
    with their attempts so far."""
    outcomes = list(report.outcomes.values())
    _record_ledger(state, report, outcomes, at)
    before = {item.quote: item for item in open_before}
    failures: list[Failure] = []
    resolved: list[str] = []
    items: list[AttentionItem] = []
    conflicts = [o for o in outcomes if o.action == "conflict"]
    ledger = state.ledger([o.quote for o in conflicts]) if conflicts else {}
    for outcome in outcomes:
        if outcome.action == "failed":
            entry = state.record_failure(outcome.quote, outcome.error or "failed", at)
            attempts = entry.attempts if entry is not None else 1
            failures.append(Failure(outcome.quote, attempts, outcome.version))
            if attempts >= settings.sync_max_attempts:
                state.give_up(outcome.quote, _gave_up(outcome, attempts, at))
        elif outcome.action == "conflict":
            items.append(_item(outcome, before.get(outcome.quote), ledger.get(outcome.quote), at))
            state.clear_failure(outcome.quote)
        else:
            state.clear_failure(outcome.quote)
            resolved.append(outcome.quote)
    if report.aborted:
        # An aborted run's report is never shown: what it found stays to be found (and
        # announced) by the run that gets through; only what was already open is kept.
        items = [i for i in items if i.quote in before]
    if items:
        # A bookkeeper may `sync accept` while this run is under way (accept takes no lock),
        # and a refused `sync apply` must not re-open what was accepted: an acceptance of
        # the very Version wins over what the run found.
        accepted = state.acceptances([i.quote for i in items])
        items = [
            i for i in items if i.quote not in accepted or accepted[i.quote].version != i.version
        ]
    if items:
        state.record_attention(items)
    if resolved:
        state.clear_attention(resolved)
    written = [o.quote for o in outcomes if o.action in WRITTEN]
    if written:
        # An acceptance holds for the Version it was given; a write supersedes it.
        state.clear_acceptance(written)
    return failures


def _record_ledger(
    state: StateStore, report: RunReport, outcomes: Sequence[QuoteOutcome], at: datetime
) -> None:
    entries = [
        LedgerEntry(
            quote=o.quote,
            invoice_id=o.invoice_id,
            version=int(o.version or 0),
            sync_token=None if o.action == "deleted" else o.sync_token,
            run_id=report.run_id,
            written_at=at,
            intuit_tid=o.intuit_tid,
            action=o.action,
        )
        for o in outcomes
        if o.action in WRITTEN and o.invoice_id
    ]
    # A quote whose invoice already equals it, with no ledger entry (lost state, or an
    # invoice made before fourdqbo): QBO's fact becomes the ledger's.
    in_step = [o for o in outcomes if o.in_step and o.invoice_id and o.sync_token]
    # A quote that is not completed and has no invoice: a ledger entry still naming an
    # invoice the sync wrote is refuted by QBO. The sync's own delete whose run died before
    # recording it leaves such an entry; kept, it would call that invoice "deleted in QBO"
    # by a person once the quote is completed again with the same Version.
    gone = [
        o
        for o in outcomes
        if o.action == "unchanged" and not o.invoice_id and o.status in ("active", "inactive")
    ]
    known = state.ledger([o.quote for o in [*in_step, *gone]]) if in_step or gone else {}
    entries += [
        LedgerEntry(
            quote=o.quote,
            invoice_id=o.invoice_id,
            version=int(o.version or 0),
            sync_token=o.sync_token,
            run_id=report.run_id,
            written_at=at,
            action="adopted",
        )
        for o in in_step
        # Also when only the Version moved on: an update whose run died before recording
        # it leaves the entry of the Version before, and a person's later edit of the
        # invoice would not be seen as one.
        if o.quote not in known
        or known[o.quote].invoice_id != o.invoice_id
        or known[o.quote].version != int(o.version or 0)
    ]
    entries += [
        replace(known[o.quote], sync_token=None, run_id=report.run_id, written_at=at,
                intuit_tid=None, action="deleted")
        for o in gone
        if o.quote in known and known[o.quote].action in ("created", "updated", "adopted")
    ]  # fmt: skip
    if entries:
        state.record_ledger(entries)


def _item(
    outcome: QuoteOutcome,
    before: AttentionItem | None,
    ledger: LedgerEntry | None,
    at: datetime,
) -> AttentionItem:
    kind = AttentionKind(outcome.kind) if outcome.kind else AttentionKind.PAID
    same = before is not None and before.kind == kind and before.version == outcome.version
    return AttentionItem(
        quote=outcome.quote,
        kind=kind,
        version=outcome.version,
        invoice_id=outcome.invoice_id,
        reason=outcome.reason or outcome.error or str(kind),
        detected_at=before.detected_at if same and before is not None else at,
        differences=tuple(outcome.differences),
        ledger=ledger,
    )


def _gave_up(outcome: QuoteOutcome, attempts: int, at: datetime) -> AttentionItem:
    return AttentionItem(
        quote=outcome.quote,
        kind=AttentionKind.GAVE_UP,
        version=outcome.version,
        invoice_id=outcome.invoice_id,
        reason=f"gave up after {attempts} tries: {outcome.error or 'failed'}",
        detected_at=at,
    )


def _dry_failures(state: StateStore, report: RunReport) -> list[Failure]:
    failed = [o for o in report.outcomes.values() if o.action == "failed"]
    if not failed:
        return []
    queued = state.retry_entries([o.quote for o in failed])
    return [
        Failure(o.quote, (queued[o.quote].attempts if o.quote in queued else 0) + 1, o.version)
        for o in failed
    ]


def _judge(
    state: StateStore,
    settings: Settings,
    report: RunReport,
    run: RunState,
    at: datetime,
    *,
    failures: Sequence[Failure],
    store: bool = False,
) -> None:
    """The run's verdict: what is new, whether to remind, the exit code, what to print."""
    outcomes = report.outcomes
    found = [
        AttentionKey(o.quote, AttentionKind(o.kind or AttentionKind.PAID), o.version)
        for o in outcomes.values()
        if o.action == "conflict"
    ]
    # Items this run settled are no longer open; the others stay as they were.
    still_open = [
        item
        for item in run.open_before
        if item.quote not in outcomes or outcomes[item.quote].action in ("conflict", "failed")
    ]
    verdict = assess(
        still_open,
        found,
        failures,
        max_attempts=settings.sync_max_attempts,
        last_reminded=state.last_reminded_at(),
        now=at,
        remind_hours=settings.sync_remind_hours,
    )
    if store and verdict.reminded_at is not None and not report.aborted:
        state.set_last_reminded_at(verdict.reminded_at)
    new = len(verdict.new_items) + len(
        [f for f in verdict.first_failures if f not in verdict.gave_up]
    )
    report.attention = {"new": new, "open": len(verdict.open_items)}
    reasons = {item.quote: item.reason for item in run.open_before}
    reasons.update({o.quote: o.error or o.reason for o in outcomes.values()})
    # A failure that gave up in this run is reported once, as the `gave_up` item it became
    # (not also as "queued, tried again next run", which it no longer is).
    report.to_report = [
        _line(thing, reasons)
        for thing in verdict.to_report
        if not (isinstance(thing, Failure) and thing in verdict.gave_up)
    ]
    if run.gap_notice:
        report.to_report.append(run.gap_notice)
    report.verdict = 1 if verdict.exit_code or run.gap_notice else 0


def _line(thing: AttentionKey | Failure, reasons: dict[str, str]) -> str:
    reason = reasons.get(thing.quote, "")
    if isinstance(thing, Failure):
        return f"quote {thing.quote}: failed (queued, tried again next run): {reason}"
    return f"quote {thing.quote}: {thing.kind}: {reason}"


def may_advance(state: StateStore, settings: Settings, window_from: datetime) -> bool:
    """Never skip unprocessed work: a --since after the watermark must not move it."""
    watermark = state.watermark()
    overlap = timedelta(seconds=settings.sync_overlap_seconds)
    return watermark is None or window_from <= watermark + overlap


__all__ = ["RunState", "may_advance", "record_outcomes", "record_run"]
