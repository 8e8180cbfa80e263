"""Extract: what one run covers, and each chunk of it read from 4D and looked up in QBO.

`Extractor.window` lists the quotes changed in 4D since the window's start and puts the
retry queue and the open conflicts first (or takes the explicit `--quote` numbers).
`Extractor.chunk` reads one chunk of those numbers in full from 4D (only the completed
ones: a summary's status is enough to know that a quote is no longer completed), maps
them to invoice drafts and looks up in bulk what QBO holds for them: invoices by
DocNumber, customers by DisplayName (inactive ones included). The Item ids are looked up
once per run, on the first chunk that has a draft. Reads only; the pipeline's producer
thread runs it while the previous chunk is written.

0.2: `begin()` makes the run's one CDC read (`sync.cdc`) before the window is listed, so
the quotes whose invoice a person touched in QBO join the window; the window leaves out
quotes that gave up (until their Version changes); and each chunk also reads what the
ledger and the acceptances say of its quotes and finds each patient's customer by patient
id (`sync.customers`): exact names first, then one LIKE pattern per patient still without
a customer, batched.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from fourdqbo.config import Settings
from fourdqbo.emr.records import STATUS_COMPLETED, Quote
from fourdqbo.errors import ConfigError, FourdqboError
from fourdqbo.qbo.records import Customer, Invoice
from fourdqbo.state.items import Acceptance, AttentionItem, AttentionKind, LedgerEntry
from fourdqbo.sync.cdc import Changes, read_changes
from fourdqbo.sync.collaborators import FourDSource, Progress, QBOBooks, StateStore
from fourdqbo.sync.customers import (
    CustomerResolution,
    PatientCustomerWant,
    needs_pattern_lookup,
    patient_pattern,
    resolve_customers,
)
from fourdqbo.sync.mapping import InvoiceDraft, LineKind, MappingError, MappingRules, map_quote
from fourdqbo.sync.planning import QuoteInput

GONE_FROM_4D = "no such quote in 4D any more"

log = logging.getLogger(__name__)

ITEM_SETTINGS = {
    LineKind.PROCEDURE: ("QBO_ITEM_PROCEDURE", "qbo_item_procedure"),
    LineKind.SUPPLIES: ("QBO_ITEM_SUPPLIES", "qbo_item_supplies"),
    LineKind.ANESTHESIA: ("QBO_ITEM_ANESTHESIA", "qbo_item_anesthesia"),
    LineKind.FACILITY: ("QBO_ITEM_FACILITY", "qbo_item_facility"),
}


@dataclass(frozen=True)
class Listed:
    """What the run keeps of a `quotes/list` row (not its patient name or free text)."""

    version: int
    status_id: int | None
    patient_id: str | None


@dataclass(frozen=True)
class Window:
    """The quote numbers of one run, in the order they are worked, and their list rows.

    `queued` are the numbers that came from the retry queue (a 404 for one of them means
    the quote is gone from 4D); `open_before` the items needing a person when the run began.
    """

    numbers: tuple[str, ...]
    listed: Mapping[str, Listed]
    queued: frozenset[str] = frozenset()
    open_before: tuple[AttentionItem, ...] = ()
    # In the window only because CDC tied a changed invoice to them (not listed, queued or
    # open): a 404 from 4D then means the invoice names no 4D quote (a copy a bookkeeper
    # numbered themselves keeps our Quote Version field), which is no failure.
    rechecked: frozenset[str] = frozenset()

    def chunks(self, size: int) -> Iterator[tuple[str, ...]]:
        if size < 1:
            raise ValueError("a chunk holds at least one quote")
        for start in range(0, len(self.numbers), size):
            yield self.numbers[start : start + size]


@dataclass(frozen=True)
class Extracted:
    """One chunk read from 4D and looked up in QBO: what planning needs, and no Quote."""

    inputs: tuple[QuoteInput, ...]
    invoices: tuple[Invoice, ...]
    customers: tuple[Customer, ...]
    item_ids: Mapping[LineKind, str]
    ledger: Mapping[str, LedgerEntry]
    accepted: Mapping[str, Acceptance]
    resolution: CustomerResolution | None


class Extractor:
    """The reading side of one run. One instance per run (it caches the Item ids)."""

    def __init__(
        self,
        settings: Settings,
        fourd: FourDSource,
        qbo: QBOBooks,
        state: StateStore,
        progress: Progress,
    ) -> None:
        self.settings = settings
        self.fourd = fourd
        self.qbo = qbo
        self.state = state
        self.progress = progress
        self.rules = MappingRules.from_settings(settings)
        self._item_ids: dict[LineKind, str] | None = None
        self._items_lock = threading.Lock()
        # Patient id -> the customers its LIKE look-up found, for the rest of the run.
        self._by_pattern: dict[str, tuple[Customer, ...]] = {}
        self._pattern_lock = threading.Lock()

    def begin(self, now: datetime) -> Changes:
        """The run's CDC read: the quotes whose invoice changed in QBO since the cursor."""
        self.progress.phase("asking QBO what changed")
        return read_changes(self.qbo, self.state, now, self.rules.quote_version_field)

    def window(
        self,
        quotes: Sequence[str],
        window_from: datetime | None,
        recheck: Sequence[str] = (),
    ) -> Window:
        """Retry queue, open items and what CDC says a person touched first, then the
        window; or exactly `quotes`. A quote that gave up is left out until its Version
        changes in 4D (or `sync retry`), unless it is asked for by number."""
        self.progress.phase("listing changed quotes")
        listed: dict[str, Listed] = {}
        if window_from is not None:
            for summary in self.fourd.list_quotes(window_from):
                listed.setdefault(
                    summary.number,
                    Listed(summary.version, summary.status_id, summary.patient_id),
                )
        open_before = tuple(self.state.attention_items())
        if quotes:
            return Window(tuple(_unique(quotes)), listed, frozenset(), open_before)
        queued = [entry.quote for entry in self.state.retry_queue()]
        gave_up = {
            item.quote: item.version
            for item in open_before
            if AttentionKind(item.kind) is AttentionKind.GAVE_UP
        }
        # A quote that gave up and was then accepted (`sync accept`: nothing to do about
        # it) stays left alone the same way, until its Version changes.
        for quote, acceptance in self.state.acceptances().items():
            if acceptance.kind == AttentionKind.GAVE_UP:
                gave_up.setdefault(quote, acceptance.version)
        waiting = [item.quote for item in open_before if item.quote not in gave_up]
        numbers = [
            number
            for number in _unique([*queued, *waiting, *recheck, *listed])
            if number not in gave_up
            or number in queued  # `sync retry`, or a new Version that failed again
            or (number in listed and listed[number].version != gave_up[number])
        ]
        others = {*queued, *waiting, *listed}
        only_cdc = frozenset(n for n in recheck if n not in others)
        return Window(tuple(numbers), listed, frozenset(queued), open_before, only_cdc)

    def chunk(self, numbers: Sequence[str], window: Window) -> Extracted:
        """Fetch the chunk's completed quotes, map them, look the chunk up in QBO."""
        listed = window.listed
        to_fetch = [
            n for n in numbers if n not in listed or listed[n].status_id == STATUS_COMPLETED
        ]
        self.progress.phase("fetching quotes")
        fetched: Mapping[str, Quote | FourdqboError] = {}
        if to_fetch:
            fetched = self.fourd.get_quotes(to_fetch)
        inputs = tuple(
            self._input(n, listed.get(n), fetched.get(n), n in window.queued, n in window.rechecked)
            for n in numbers
        )
        del fetched  # the Quote bodies: only the drafts go on
        self.progress.phase("looking up QBO")
        drafts = [i.draft for i in inputs if i.draft is not None]
        item_ids = self.item_ids() if drafts else {}
        invoices = self.qbo.find_invoices_by_doc_numbers([i.number for i in inputs])
        customers, resolution = self._customers(drafts)
        return Extracted(
            inputs,
            tuple(invoices),
            tuple(customers),
            item_ids,
            ledger=self.state.ledger(numbers),
            accepted=self.state.acceptances(numbers),
            resolution=resolution,
        )

    def item_ids(self) -> dict[LineKind, str]:
        """The four line kinds' QBO Item ids, looked up once per run; unknown is exit 2."""
        with self._items_lock:
            if self._item_ids is None:
                self._item_ids = self._look_up_items()
            return self._item_ids

    def _customers(
        self, drafts: Sequence[InvoiceDraft]
    ) -> tuple[list[Customer], CustomerResolution | None]:
        """Each patient's customer: by exact DisplayName in bulk, then by the patient-id
        pattern for those still without one (inactive customers included, whose names QBO
        renames "… (deleted)")."""
        names = _unique([d.customer_name for d in drafts])
        if not names:
            return [], None
        template = self.settings.customer_name_template
        exact = self.qbo.find_customers_by_names(names, include_inactive=True)
        wants = list(
            {
                d.patient_id: PatientCustomerWant(d.patient_id, d.customer_name) for d in drafts
            }.values()
        )
        lonely = needs_pattern_lookup(wants, exact, template)
        by_pattern = self._pattern_look_up(lonely, template)
        seen = {c.id: c for c in [*exact, *by_pattern]}
        return list(seen.values()), resolve_customers(wants, exact, by_pattern, template)

    def _pattern_look_up(self, patients: Sequence[str], template: str) -> list[Customer]:
        """The customers that fit each patient's id pattern, one LIKE look-up per patient
        a run (batched). A patient whose quotes fall in several chunks may still lack an
        exact match in a later chunk (it was looked up before an earlier chunk created or
        renamed its customer): its first answer is used again rather than a second read.
        That answer may be older than this run's own writes, which the loader knows of:
        it reuses the customers it created or reactivated."""
        with self._pattern_lock:
            patterns = {
                patient: patient_pattern(template, patient)
                for patient in patients
                if patient not in self._by_pattern
            }
            if patterns:
                answered = self.qbo.find_customers_like(
                    [pattern.like for pattern in patterns.values()], include_inactive=True
                )
                for patient, pattern in patterns.items():
                    self._by_pattern[patient] = tuple(
                        c for c in answered if pattern.matches(c.display_name)
                    )
            found = [c for patient in patients for c in self._by_pattern[patient]]
        return list({c.id: c for c in found}.values())

    def _input(
        self,
        number: str,
        listed: Listed | None,
        fetched: Quote | FourdqboError | None,
        queued: bool = False,
        rechecked: bool = False,
    ) -> QuoteInput:
        if (
            isinstance(fetched, FourdqboError)
            and rechecked
            and listed is None
            and getattr(fetched, "status", None) == 404
        ):
            log.info("quote %s: a changed QBO invoice names it, but 4D has no such quote", number)
            return QuoteInput(number, 0, None, None, None)
        if isinstance(fetched, FourdqboError):
            # The Version a malformed answer still stated beats none: a queued quote is
            # often not listed, and the Version is what a give-up is kept for.
            stated = getattr(fetched, "version", None)
            version = stated if isinstance(stated, int) else listed.version if listed else 0
            status = listed.status_id if listed else None
            error = str(fetched)
            if queued and listed is None and getattr(fetched, "status", None) == 404:
                error = f"{GONE_FROM_4D} ({error})"
            return QuoteInput(number, version, status, None, None, error=error)
        if fetched is None:
            assert listed is not None
            return QuoteInput(number, listed.version, listed.status_id, listed.patient_id, None)
        draft: InvoiceDraft | None = None
        error = None
        if fetched.status_id == STATUS_COMPLETED:
            try:
                draft = map_quote(fetched, self.rules)
            except MappingError as exc:
                error = str(exc)
        return QuoteInput(
            number, fetched.version, fetched.status_id, fetched.patient_id, draft, error=error
        )

    def _look_up_items(self) -> dict[LineKind, str]:
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


def _unique(values: Sequence[str] | Mapping[str, object]) -> list[str]:
    return list(dict.fromkeys(values))


__all__ = ["GONE_FROM_4D", "ITEM_SETTINGS", "Extracted", "Extractor", "Listed", "Window"]
