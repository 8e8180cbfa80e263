"""The run report: what one sync run did, per quote and in total (DESIGN.md point 9).

Holds quote numbers, versions, statuses, invoice and customer ids and our own error
messages only — never patient names or 4D free text — so it can go to the run history,
the log and `--json` as it is.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from fourdqbo.state.items import Difference
from fourdqbo.timefmt import iso_z

# Report action names (DESIGN.md): past tense for what happened, `would_*` in a dry run.
ACTIONS = ("created", "updated", "deleted", "voided", "unchanged", "skipped", "conflict", "failed")
DRY_RUN_NAMES = {
    "created": "would_create",
    "updated": "would_update",
    "deleted": "would_delete",
    "voided": "would_void",
    "unchanged": "unchanged",
    "skipped": "skipped",
    "conflict": "conflict",
    "failed": "failed",
}
COUNT_KEYS = ("seen", *ACTIONS[:6], "conflicts", "failed")


@dataclass
class QuoteOutcome:
    quote: str
    version: int | None
    status: str
    action: str  # one of ACTIONS
    invoice_id: str | None = None
    customer_id: str | None = None
    error: str | None = None
    reason: str = ""
    # 0.2: what needs a person (on a conflict), what differs, and what the write left in
    # QBO (for the ledger): the invoice's SyncToken after it and the answer's intuit_tid.
    kind: str | None = None
    differences: tuple[Difference, ...] = ()
    sync_token: str | None = None
    intuit_tid: str | None = None
    in_step: bool = False  # unchanged because QBO already equals the quote (ledger: adopt)

    def as_dict(self, dry_run: bool) -> dict[str, Any]:
        document: dict[str, Any] = {
            "quote": self.quote,
            "version": self.version,
            "status": self.status,
            "action": DRY_RUN_NAMES[self.action] if dry_run else self.action,
            "invoice_id": self.invoice_id,
            "customer_id": self.customer_id,
            "error": self.error,
            "reason": self.reason,
        }
        if self.kind is not None:
            document["kind"] = self.kind
            document["differences"] = [
                {"field": d.field, "qbo": d.qbo, "quote": d.quote} for d in self.differences
            ]
        return document


@dataclass
class RunReport:
    run_id: str
    started_at: datetime
    dry_run: bool = False
    window_from: datetime | None = None
    window_to: datetime | None = None
    finished_at: datetime | None = None
    watermark_advanced: bool = False
    outcomes: dict[str, QuoteOutcome] = field(default_factory=dict)
    requests: dict[str, int] = field(default_factory=lambda: {"fourd": 0, "qbo": 0})
    aborted: str | None = None  # why the run stopped early, if it did
    customers_created: int = 0
    customers_reactivated: int = 0
    # What needs a person after this run: `new` counts what this run found for the first
    # time (items, quotes that gave up, first failures), `open` the items still open.
    # None until the run was assessed (a run that aborted early).
    attention: dict[str, int] | None = None
    # The exit code the notification rule gave (quiet unless something is new); None
    # means the plain rule: 1 when anything failed or conflicts.
    verdict: int | None = None
    # One line each for what `--quiet` prints: the new things, or everything open when
    # the run reminds. Quote numbers, kinds and our own reasons only.
    to_report: list[str] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)  # e.g. a CDC gap to audit

    def record(self, outcome: QuoteOutcome) -> None:
        self.outcomes[outcome.quote] = outcome

    def counts(self) -> dict[str, int]:
        tally = Counter(o.action for o in self.outcomes.values())
        counts = {"seen": len(self.outcomes)}
        for action in ACTIONS:
            key = "conflicts" if action == "conflict" else action
            counts[key] = tally.get(action, 0)
        return counts

    @property
    def exit_code(self) -> int:
        if self.verdict is not None:
            return self.verdict
        counts = self.counts()
        return 1 if counts["failed"] or counts["conflicts"] else 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "started_at": iso_z(self.started_at),
            "finished_at": iso_z(self.finished_at) if self.finished_at else None,
            "dry_run": self.dry_run,
            "window": {
                "from": iso_z(self.window_from) if self.window_from else None,
                "to": iso_z(self.window_to) if self.window_to else None,
            },
            "watermark_advanced": self.watermark_advanced,
            "counts": self.counts(),
            "quotes": [o.as_dict(self.dry_run) for o in self.outcomes.values()],
            "requests": dict(self.requests),
            "customers": {
                "created": self.customers_created,
                "reactivated": self.customers_reactivated,
            },
            "aborted": self.aborted,
            "attention": dict(self.attention) if self.attention is not None else None,
            "notices": list(self.notices),
        }

    def summary(self) -> dict[str, Any]:
        """What the run history keeps: the report without the per-quote list, plus the
        numbers of the quotes that need attention."""
        document = self.as_dict()
        quotes = document.pop("quotes")
        document["failed_quotes"] = [q["quote"] for q in quotes if q["action"] == "failed"]
        document["conflict_quotes"] = [q["quote"] for q in quotes if q["action"] == "conflict"]
        document["exit_code"] = self.exit_code if not self.aborted else None
        return document
