"""Record: what a finished (or aborted) run leaves in the state store.

Failures are queued and conflicts kept first, then the watermark moves (only for a run
that got through its whole window, and never past unprocessed work), then the run's
summary joins the history. The order matters: the watermark may only pass quotes whose
failure is queued. On an aborted run the state store may be the thing that failed; the
original error is what the operator must see, so recording errors are only logged then.

Where 0.2 grows it: the ledger entries of the run's writes, and the attention items
(`gave_up` after `SYNC_MAX_ATTEMPTS`), are recorded in `record_outcomes`.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from fourdqbo.config import Settings
from fourdqbo.errors import StateStoreError
from fourdqbo.state.base import ConflictEntry
from fourdqbo.sync.collaborators import StateStore
from fourdqbo.sync.report import RunReport

log = logging.getLogger(__name__)


def record_run(
    state: StateStore,
    settings: Settings,
    report: RunReport,
    window_from: datetime | None,
    started: datetime,
    now: datetime,
) -> None:
    """Queue, keep, move the watermark, append the run. Raises StateStoreError (and marks
    the report aborted) only when the run itself had not aborted already."""
    try:
        record_outcomes(state, report, report.finished_at or now)
        if (
            window_from is not None
            and not report.aborted
            and may_advance(state, settings, window_from)
        ):
            report.watermark_advanced = state.advance_watermark(started)
        state.append_run(report.summary())
    except StateStoreError as exc:
        if report.aborted:
            log.error("could not record the aborted run: %s", exc)
            return
        report.aborted = str(exc)
        raise


def record_outcomes(state: StateStore, report: RunReport, at: datetime) -> None:
    for outcome in report.outcomes.values():
        if outcome.action == "failed":
            state.record_failure(outcome.quote, outcome.error or "failed", at)
        elif outcome.action == "conflict":
            state.record_conflict(
                ConflictEntry(outcome.quote, outcome.invoice_id, outcome.reason, at)
            )
            state.clear_failure(outcome.quote)
        else:
            state.clear_failure(outcome.quote)
            state.clear_conflict(outcome.quote)


def may_advance(state: StateStore, settings: Settings, window_from: datetime) -> bool:
    """Never skip unprocessed work: a --since after the watermark must not move it."""
    watermark = state.watermark()
    overlap = timedelta(seconds=settings.sync_overlap_seconds)
    return watermark is None or window_from <= watermark + overlap


__all__ = ["may_advance", "record_outcomes", "record_run"]
