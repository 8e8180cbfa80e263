"""People in QBO: a simulated bookkeeper edits, deletes, voids, pays, emails and
annotates invoices between runs, under faults and kills; the audit is told what the
person did and judges whether each change was reported or repaired."""

from __future__ import annotations

import random
import signal
import time
from collections import Counter
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

from bench.chaos.world import (
    World,
    _span,
    change_quotes,
    is_qbo_write,
    lock_history_problems,
    say,
    wait_for_requests,
)
from fourdqbo.sandbox import Sandbox
from fourdqbo.sandbox.audit import Audit, HandChange, audit

# What the simulated bookkeeper does, in proportion: hand changes the sync must report
# (edits, deletes, voids) and ones that need nobody (payments, emails, notes).
HAND_KINDS = ("edited", "edited", "deleted", "voided", "paid", "paid", "emailed", "noted")


@dataclass
class PeopleResult:
    name: str
    seed: int
    repair: bool
    runs: list[int] = field(default_factory=list)
    runs_per_round: list[int] = field(default_factory=list)
    hand: Counter[str] = field(default_factory=Counter)
    changes: Counter[str] = field(default_factory=Counter)
    faults: Counter[str] = field(default_factory=Counter)
    kills: int = 0
    writes_before_kills: list[int] = field(default_factory=list)
    requests: int = 0
    open_items: Counter[str] = field(default_factory=Counter)
    audit: Audit | None = None
    problems: list[str] = field(default_factory=list)

    def line(self) -> str:
        audit_text = self.audit.summary() if self.audit else "no audit"
        hand = ", ".join(f"{n} {kind}" for kind, n in sorted(self.hand.items()))
        items = ", ".join(f"{n} {kind}" for kind, n in sorted(self.open_items.items()))
        return (
            f"{self.name}: hand changes {hand}; {sum(self.faults.values())} faults in "
            f"{self.requests} requests; {self.kills} runs killed mid-write "
            f"({_span([float(n) for n in self.writes_before_kills])} QBO writes before); "
            f"runs exit {self.runs}; open items {items or 'none'}; {audit_text}"
            + (f"  PROBLEMS: {self.problems}" if self.problems else "")
        )


def bookkeeper(
    sandbox: Sandbox, rng: random.Random, count: int, touched: Collection[str]
) -> dict[str, HandChange]:
    """`count` hand changes in QBO on invoices of completed quotes nobody touched yet
    (one change per quote, so what each should lead to is plain), the kinds in the
    proportions of HAND_KINDS: an edit of a field the sync owns (a line's amount or description, the
    date), a delete, a void, a payment (full or part), an email sent, a private note."""
    company, practice = sandbox.company, sandbox.practice
    candidates = []
    for number in sorted(set(practice.completed_numbers()) - set(touched)):
        if number == sandbox.facts.conflict_quote:
            continue
        invoices = company.invoices_by_doc(number)
        if len(invoices) == 1 and invoices[0]["Balance"] == invoices[0]["TotalAmt"] != 0:
            candidates.append((number, invoices[0]))
    done: dict[str, HandChange] = {}
    chosen = rng.sample(candidates, min(count, len(candidates)))
    kinds = [HAND_KINDS[n % len(HAND_KINDS)] for n in range(len(chosen))]
    rng.shuffle(kinds)  # every kind once per len(HAND_KINDS) changes, in no fixed order
    for (number, invoice), kind in zip(chosen, kinds, strict=True):
        ident = invoice["Id"]
        if kind == "edited":
            lines = [ln for ln in invoice["Line"] if ln.get("DetailType") == "SalesItemLineDetail"]
            first = lines[0]
            how = rng.choice(("amount", "description", "date"))
            if how == "amount":
                amount = Decimal(str(first["Amount"]))
                changed = amount - Decimal("10.00") if amount > 20 else amount + Decimal("10.00")
                after = company.edit_invoice(ident, line_amounts={first["LineNum"]: changed})
            elif how == "description":
                text = f"{first.get('Description') or ''} (per bookkeeper)"
                after = company.edit_invoice(ident, descriptions={first["LineNum"]: text})
            else:
                day = date.fromisoformat(invoice["TxnDate"]) - timedelta(days=1)
                after = company.edit_invoice(ident, txn_date=day)
            token: str | None = after["SyncToken"]
        elif kind == "deleted":
            company.delete_invoice(ident)
            token = None
        elif kind == "voided":
            token = company.void_invoice(ident)["SyncToken"]
        elif kind == "paid":
            total = Decimal(str(invoice["TotalAmt"]))
            amount = total if rng.random() < 0.5 else (total / 2).quantize(Decimal("0.01"))
            token = company.apply_payment(ident, amount)["SyncToken"]
        elif kind == "emailed":
            token = company.send_invoice_email(ident)["SyncToken"]
        else:
            token = company.edit_invoice(ident, private_note="Patient asked for a copy")[
                "SyncToken"
            ]
        done[number] = HandChange(kind, ident, token)  # type: ignore[arg-type]
    return done


def people_in_qbo(
    *,
    redis_url: str,
    seed: int = 31,
    quotes: int = 300,
    rounds: int = 3,
    per_round: int = 12,
    rate: float = 0.10,
    kill: bool = True,
    repair: bool = False,
    max_runs: int = 8,
    **world: Any,
) -> PeopleResult:
    """A bookkeeper edits, deletes, voids, pays, emails and annotates invoices between runs
    while 4D changes too, under 10% mixed faults, and each round's first run is SIGKILLed
    among its writes. After the last run every hand change must be reported (an open item
    of the right kind, nothing undone) or, with `repair` (SYNC_QBO_EDITS=revert,
    SYNC_QBO_DELETES=recreate), repaired; 0 duplicates and nothing unexplained."""
    mode = "revert/recreate" if repair else "report"
    result = PeopleResult(f"people in QBO ({mode}), seed {seed}", seed, repair)
    rng = random.Random(seed)
    expected: dict[str, HandChange] = {}
    with World(seed=seed, quotes=quotes, redis_url=redis_url, **world) as w:
        if repair:
            w.env.update(SYNC_QBO_EDITS="revert", SYNC_QBO_DELETES="recreate")
        w.mixed_faults(rate)
        for round_number in range(rounds + 1):
            if round_number:
                w.sandbox.clock.advance(60)
                hand = bookkeeper(w.sandbox, rng, per_round, expected)
                expected.update(hand)
                result.hand.update(change.kind for change in hand.values())
                changes = change_quotes(w.sandbox, rng, exclude=set(expected))
                result.changes.update(changes)
                w.sandbox.clock.advance(60)
            w.lose_first_answers()
            if round_number and kill:
                _kill_among_writes(w, result, rng)
            attempt = w.run_until_finished(result.runs, result.problems, max_runs)
            result.runs_per_round.append(attempt)
        items = {i.quote: str(i.kind) for i in w.store.attention_items()}
        result.open_items = Counter(items.values())
        result.audit = audit(w.sandbox, w.settings, expected, items, repaired=repair)
        if not result.audit.converged:
            result.problems.append("not converged: " + result.audit.summary())
        result.requests, result.faults = w.faults_met()
        result.problems += lock_history_problems(w.store.lock_history())
    return result


def _kill_among_writes(w: World, result: PeopleResult, rng: random.Random) -> None:
    """Start a run and SIGKILL it after its first or second QBO write (or during its
    reads, if it has fewer); then wait for its lock to expire."""
    start = len(w.sandbox.requests)
    w.latency(qbo_ms=60)
    victim = w.spawn("--quiet")
    wait_for_requests(w.sandbox, is_qbo_write, rng.choice((1, 2)), victim, start=start)
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=10)
    w.latency()
    if victim.returncode == -signal.SIGKILL:
        result.kills += 1
        result.writes_before_kills.append(
            sum(1 for r in w.sandbox.requests[start:] if is_qbo_write(r))
        )
    if w.wait_lock_free(timeout=w.lock_ttl * 2) is None:
        result.problems.append("a killed run's lock did not expire")


def people_suite(
    *, redis_url: str, seeds: Sequence[int], quotes: int, strict: bool = True
) -> list[PeopleResult]:
    say(
        f"people in QBO: a bookkeeper changes invoices between runs (3 rounds of 12 hand "
        f"changes and changes in 4D), 10% mixed faults, a run killed mid-write each round; "
        f"{len(seeds)} seeds x (report, revert/recreate), {quotes} quotes each"
    )
    results = []
    for seed in seeds:
        for repair in (False, True):
            began = time.monotonic()
            result = people_in_qbo(
                redis_url=redis_url, seed=seed, quotes=quotes, repair=repair, strict=strict
            )
            results.append(result)
            say(f"  {result.line()} ({time.monotonic() - began:.0f} s)")
    return results


def people_figures(results: Sequence[PeopleResult]) -> str:
    audits = [r.audit for r in results if r.audit is not None]
    hand: Counter[str] = Counter()
    for r in results:
        hand.update(r.hand)
    runs = [n for r in results for n in r.runs_per_round]
    return (
        f"{len(results)} scenarios, {sum(hand.values())} hand changes "
        f"({', '.join(f'{n} {k}' for k, n in sorted(hand.items()))}), "
        f"{sum(sum(r.faults.values()) for r in results)} faults, "
        f"{sum(r.kills for r in results)} runs killed mid-write; "
        f"runs to converge per round {min(runs, default=0)}-{max(runs, default=0)}; "
        f"{sum(len(a.reported) for a in audits)} reported, "
        f"{sum(len(a.repaired) for a in audits)} repaired, "
        f"{sum(len(a.quiet) for a in audits)} needing nobody, "
        f"{sum(len(a.undone) for a in audits)} undone, "
        f"{sum(len(a.unreported) for a in audits)} unreported, "
        f"{sum(len(a.unexplained) for a in audits)} unexplained items, "
        f"{sum(len(a.duplicates) for a in audits)} duplicates, "
        f"{sum(len(a.mismatched) for a in audits)} mismatches, "
        f"{sum(len(a.missing) for a in audits)} missing, "
        f"{sum(len(a.stray) for a in audits)} stray"
    )
