"""Whether a run needs a person's eyes: its exit code and what `--quiet` prints (pure).

DESIGN.md "What needs a person", the notification paragraph: cron runs are quiet unless
something is new. A run exits 1 when it found a new item needing a person (a quote that
just gave up included) or a first failure of a quote; an item already open and a queued
quote failing again change nothing. Every SYNC_REMIND_HOURS the first run after that
interval reports everything still open once, so nothing is forgotten.

No I/O and no clock: the engine passes what was open before the run, what the run found,
its failures and the time, and stores `reminded_at` for the next run.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from fourdqbo.state.items import AttentionKind

_HOUR = timedelta(hours=1)


class _Keyed(Protocol):
    @property
    def quote(self) -> str: ...
    @property
    def kind(self) -> AttentionKind: ...
    @property
    def version(self) -> int | None: ...


@dataclass(frozen=True)
class AttentionKey:
    """What makes an item needing a person the same item: quote, kind and quote Version.
    An item whose kind or Version changed is a new one."""

    quote: str
    kind: AttentionKind
    version: int | None

    @classmethod
    def of(cls, item: _Keyed) -> AttentionKey:
        """The key of an `AttentionItem` (or of anything with these three fields)."""
        return cls(item.quote.strip(), AttentionKind(item.kind), item.version)


@dataclass(frozen=True)
class Failure:
    """A quote that failed in this run; `attempts` counts this run's try too."""

    quote: str
    attempts: int
    version: int | None = None

    @property
    def gave_up_key(self) -> AttentionKey:
        return AttentionKey(self.quote.strip(), AttentionKind.GAVE_UP, self.version)


@dataclass(frozen=True)
class Attention:
    """The verdict on one run.

    `new_items`: items no item of the same quote, kind and Version was open for before,
    including the `gave_up` items of `gave_up`. `first_failures`: failures at their first
    attempt. `gave_up`: failures that reached `max_attempts` (they leave the retry queue and
    become `gave_up` items). `open_items`: what is open after the run, one per quote.
    `remind`: this run re-reports everything open. `reminded_at`: the reminder clock to
    store (None while reminders are off and none was ever stored). `to_report`: what
    `--quiet` prints - the new items and first failures, or, when reminding, every open
    item and the first failures.
    """

    new_items: tuple[AttentionKey, ...]
    first_failures: tuple[Failure, ...]
    gave_up: tuple[Failure, ...]
    open_items: tuple[AttentionKey, ...]
    remind: bool
    reminded_at: datetime | None
    to_report: tuple[AttentionKey | Failure, ...]

    @property
    def exit_code(self) -> int:
        """1 when something is new or a reminder is due (DESIGN.md exit code 1), else 0."""
        return 1 if self.new_items or self.first_failures or self.remind else 0


def assess(
    open_before: Iterable[_Keyed],
    found: Iterable[_Keyed],
    failures: Iterable[Failure],
    *,
    max_attempts: int,
    last_reminded: datetime | None,
    now: datetime,
    remind_hours: float,
) -> Attention:
    """The verdict on a run (see `Attention`).

    `open_before`: the items open when the run began; `found`: the items this run found
    (open or still open); `failures`: this run's failed quotes with their attempts so far.
    A quote's item found in this run replaces the one open before it.

    The reminder: with `remind_hours` > 0 and something open, a run at least that long
    after `last_reminded` reminds and restarts the clock. Without a stored time, with
    nothing open, when this run's new items are everything open (it has just shown it all),
    or with a clock that went backwards (`now` before `last_reminded`), the clock restarts
    at `now` without reminding: a reminder is always a whole interval after everything open
    was last shown.
    """
    if max_attempts < 1:
        raise ValueError("max_attempts must be at least 1")
    if remind_hours < 0:
        raise ValueError("remind_hours must not be negative")
    before = _unique(AttentionKey.of(item) for item in open_before)
    failed = list({f.quote.strip(): f for f in failures}.values())
    first_failures = tuple(f for f in failed if f.attempts == 1)
    gave_up = tuple(f for f in failed if f.attempts >= max_attempts)
    this_run = _unique(
        [*(AttentionKey.of(item) for item in found), *(f.gave_up_key for f in gave_up)]
    )
    known = set(before)
    new_items = tuple(key for key in this_run if key not in known)

    latest = {key.quote: key for key in before}
    latest.update({key.quote: key for key in this_run})
    open_items = tuple(latest.values())

    # A run whose new items are everything open has just shown it all: the next reminder
    # is due a whole interval later, not at the old clock's time.
    shown_all = not open_items or set(open_items) <= set(new_items)
    remind, reminded_at = _reminder(shown_all, last_reminded, now, remind_hours)
    news: tuple[AttentionKey | Failure, ...] = (*new_items, *first_failures)
    to_report = (*open_items, *first_failures) if remind else news
    return Attention(
        new_items=new_items,
        first_failures=first_failures,
        gave_up=gave_up,
        open_items=open_items,
        remind=remind,
        reminded_at=reminded_at,
        to_report=to_report,
    )


def _reminder(
    shown_all: bool, last: datetime | None, now: datetime, hours: float
) -> tuple[bool, datetime | None]:
    if hours == 0:
        return False, last  # reminders are off; keep whatever clock there was
    if shown_all or last is None or now < last:
        return False, now
    if now - last >= hours * _HOUR:
        return True, now
    return False, last


def _unique(keys: Iterable[AttentionKey]) -> list[AttentionKey]:
    return list(dict.fromkeys(keys))


__all__ = ["Attention", "AttentionKey", "Failure", "assess"]
