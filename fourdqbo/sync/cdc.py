"""People work in QBO too: which quotes a run must re-check because QBO changed under them.

Every run (the dry run too, read-only) asks QBO's change data capture what happened to
invoices since the cursor kept in state. A changed or deleted invoice that the ledger, or
failing that its "Quote Version" custom field, ties to a quote puts that quote into this
run, where planning decides whether a person changed it (DESIGN.md "People work in QBO
too"). Our own last write is recognised by its SyncToken and costs nothing.

The pure part (`quotes_to_recheck`) decides from the answer and the ledger; `read_changes`
is the shell around it: cursor in, one CDC read (split by the client when an answer is
full), cursor out. The cursor is only saved by the engine after the run got through.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from fourdqbo.qbo.records import Invoice
from fourdqbo.state.items import LedgerEntry

# How far back QBO's CDC reaches: an older cursor cannot be caught up by CDC.
CDC_REACH = timedelta(days=30)
# Asking a little before the cursor costs nothing (our own writes and equal invoices are
# recognised) and covers a clock difference between QBO's answer time and ours.
CURSOR_OVERLAP = timedelta(seconds=120)
ENTITIES = ("Invoice",)


class ChangeFeed(Protocol):
    """What the CDC stage needs of the QBO client."""

    def cdc(self, entities: Sequence[str], changed_since: datetime) -> Any: ...


class LedgerIndex(Protocol):
    """What the CDC stage needs of the state store."""

    def cdc_cursor(self) -> datetime | None: ...

    def ledger_for_invoices(self, invoice_ids: Iterable[str]) -> dict[str, LedgerEntry]: ...


@dataclass(frozen=True)
class Changes:
    """What one run learnt from CDC."""

    recheck: tuple[str, ...] = ()  # quote numbers to re-check in this run
    next_cursor: datetime | None = None  # what the cursor becomes once the run got through
    gap_since: datetime | None = None  # the cursor was past CDC's reach: audit from here
    read: bool = False  # whether a CDC read was made
    changed: int = 0  # invoices CDC reported changed or deleted
    ours: int = 0  # of them, our own last write untouched since


def quotes_to_recheck(
    changed: Sequence[Invoice],
    deleted_ids: Sequence[str],
    ledger_by_invoice: Mapping[str, LedgerEntry],
    quote_version_field: str,
) -> tuple[list[str], int]:
    """The quotes whose invoice a person (or a payment, an email) touched, and how many
    of the changes were our own untouched writes.

    A changed invoice the ledger knows is ours when its SyncToken is the one our write
    left. One the ledger does not know is tied to a quote by its DocNumber when it carries
    the "Quote Version" field the sync writes (a lost ledger must not hide a person's
    edit); without it, it is no invoice of ours. A deleted invoice only has its Id: the
    ledger is the only way to its quote, and our own delete is not a person's.
    """
    quotes: dict[str, None] = {}
    ours = 0
    for invoice in changed:
        entry = ledger_by_invoice.get(invoice.id)
        if entry is not None:
            if entry.sync_token is not None and entry.sync_token == invoice.sync_token:
                ours += 1
                continue
            quotes[entry.quote] = None
        elif (
            invoice.doc_number
            and quote_version_field
            and invoice.custom_fields.get(quote_version_field, "")
        ):
            quotes[invoice.doc_number.strip()] = None
    for invoice_id in deleted_ids:
        entry = ledger_by_invoice.get(invoice_id)
        if entry is None:
            continue
        if entry.action == "deleted":
            ours += 1
            continue
        quotes[entry.quote] = None
    return list(quotes), ours


def read_changes(
    qbo: ChangeFeed,
    state: LedgerIndex,
    now: datetime,
    quote_version_field: str,
) -> Changes:
    """One CDC read since the cursor (none on the very first run, which only sets it)."""
    cursor = state.cdc_cursor()
    if cursor is None:
        return Changes(next_cursor=now)
    if now - cursor > CDC_REACH:
        return Changes(next_cursor=now, gap_since=cursor)
    answer = qbo.cdc(ENTITIES, max(cursor - CURSOR_OVERLAP, now - CDC_REACH))
    invoices = list(answer.invoices)
    deleted = list(answer.deleted_invoice_ids)
    ledger = (
        state.ledger_for_invoices([*(i.id for i in invoices), *deleted])
        if invoices or deleted
        else {}
    )
    recheck, ours = quotes_to_recheck(invoices, deleted, ledger, quote_version_field)
    server_time = getattr(answer, "server_time", None)
    return Changes(
        recheck=tuple(recheck),
        next_cursor=server_time if server_time is not None else now,
        read=True,
        changed=len(invoices) + len(deleted),
        ours=ours,
    )


__all__ = ["CDC_REACH", "Changes", "quotes_to_recheck", "read_changes"]
