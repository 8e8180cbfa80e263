"""The records 0.2 keeps between runs: the ledger of what the sync wrote, the items that
need a person, and the acceptances a bookkeeper gave.

Plain frozen data shared by the state backends (which store them), the sync (which makes
them) and the CLI (which shows them). No I/O here. Every string in these records is a
quote number, an id, a field name, an amount or a description the sync itself wrote to
QBO; never a patient name, birth date or 4D free text.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from fourdqbo.timefmt import iso_z


class AttentionKind(StrEnum):
    """Why a quote needs a person (DESIGN.md "What needs a person")."""

    PAID = "paid"  # a payment is applied to an invoice whose quote changed or re-opened
    DUPLICATE_INVOICES = "duplicate_invoices"  # several QBO invoices carry its DocNumber
    EDITED_IN_QBO = "edited_in_qbo"  # a person changed a field the sync owns
    DELETED_IN_QBO = "deleted_in_qbo"  # a person deleted or voided its invoice
    CUSTOMER_AMBIGUOUS = "customer_ambiguous"  # several QBO customers are this patient
    GAVE_UP = "gave_up"  # failed SYNC_MAX_ATTEMPTS times; cron runs leave it alone


@dataclass(frozen=True)
class Difference:
    """One field in which QBO's invoice differs from the quote's draft.

    `field` names the QBO field ("TotalAmt", "TxnDate", "CustomerRef", "Line 2 Amount",
    "CustomField Quote Version"); `qbo` and `quote` are the two values as text (amounts as
    decimal strings with two places), None where that side has no such field.
    """

    field: str
    qbo: str | None
    quote: str | None


@dataclass(frozen=True)
class LedgerEntry:
    """The last write the sync made for a quote: a cache of a fact QBO can be asked about.

    `action` is what was done (`created`, `updated`, `deleted`, `voided`, or `adopted` when
    a run found QBO already equal to the quote and recorded that state as its own).
    `sync_token` is the invoice's SyncToken after that write (None after a delete).
    """

    quote: str
    invoice_id: str | None
    version: int
    sync_token: str | None
    run_id: str
    written_at: datetime
    intuit_tid: str | None = None
    action: str = "created"

    def as_json(self) -> dict[str, Any]:
        """The entry as `sync conflicts --json` and `reconcile --json` show it (UTC, Z)."""
        return {
            "invoice_id": self.invoice_id,
            "version": self.version,
            "sync_token": self.sync_token,
            "action": self.action,
            "run_id": self.run_id,
            "written_at": iso_z(self.written_at),
            "intuit_tid": self.intuit_tid,
        }


@dataclass(frozen=True)
class AttentionItem:
    """A quote that needs a person: one open item per quote at most."""

    quote: str
    kind: AttentionKind
    version: int | None  # the quote Version it concerns (None when unknown)
    invoice_id: str | None
    reason: str
    detected_at: datetime
    differences: tuple[Difference, ...] = ()
    ledger: LedgerEntry | None = None  # what the sync last wrote, when known


@dataclass(frozen=True)
class Acceptance:
    """A bookkeeper kept QBO as it is for this Version of the quote (`sync accept`): the
    quote is neither reported nor written until its Version changes in 4D."""

    quote: str
    version: int
    accepted_at: datetime
    kind: AttentionKind | None = None  # what was open when it was accepted


__all__ = ["Acceptance", "AttentionItem", "AttentionKind", "Difference", "LedgerEntry"]
