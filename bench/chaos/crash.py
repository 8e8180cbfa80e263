"""Crash consistency: SIGKILL a run at seeded points (quote fetches, customer and invoice
batches of a first sync and of its later chunks, batches of a later run) and check the
lock, the watermark and convergence."""

from __future__ import annotations

import math
import random
import signal
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from bench.chaos.world import (
    LOCK_FREE_SLACK,
    LOCK_TTL,
    World,
    change_quotes,
    is_customer_batch,
    is_invoice_batch,
    is_qbo_write,
    is_quote_fetch,
    lock_history_problems,
    say,
    wait_for_requests,
)
from fourdqbo.sandbox import Sandbox
from fourdqbo.sandbox.audit import Audit
from fourdqbo.sandbox.server import RequestRecord

PHASES = ("fetch", "customers", "invoices")


# SYNC_CHUNK_SIZE of the crash runs: several chunks, so kill points also land while a
# later chunk is written and the next one read (the default 250 would make 300 quotes
# two chunks, nearly all of the writes in the first).
CRASH_CHUNK_SIZE = 60


PHASE_MATCH: dict[str, Callable[[RequestRecord], bool]] = {
    "fetch": is_quote_fetch,
    "customers": is_customer_batch,
    "invoices": is_invoice_batch,
    "updates": is_invoice_batch,  # of a run after changes in 4D (updates, deletes, creates)
}


@dataclass(frozen=True)
class KillPoint:
    phase: str  # fetch | customers | invoices
    k: int  # SIGKILL after the k-th matching request the sandbox logged
    delay: float  # ... and this many seconds later

    def __str__(self) -> str:
        what = {
            "fetch": "quote fetch",
            "customers": "customer batch",
            "invoices": "invoice batch",
            "updates": "invoice batch (update/delete/create) of a later run",
        }
        return f"after {what[self.phase]} #{self.k} +{self.delay * 1000:.0f} ms"


def kill_points(count: int, seed: int, phase_sizes: dict[str, int]) -> list[KillPoint]:
    """`count` seeded kill points spread evenly over the phases."""
    rng = random.Random(seed)
    points = []
    for n in range(count):
        phase = PHASES[n % len(PHASES)]
        size = max(1, phase_sizes[phase])
        # Batches are few: cover each one before repeating; fetches are many: anywhere.
        k = rng.randint(1, size) if phase == "fetch" else 1 + (n // len(PHASES)) % size
        delay = rng.choice((0.0, 0.0, rng.uniform(0, 0.25)))
        points.append(KillPoint(phase, k, round(delay, 3)))
    return points


def phase_sizes(seed: int, quotes: int) -> dict[str, int]:
    """How many quote fetches, customer batches and invoice batches a first run makes."""
    from fourdqbo.sandbox.seed import display_name
    from fourdqbo.sync.planning import customer_key

    with Sandbox(seed=seed, quotes=quotes) as probe:
        completed = probe.practice.completed_numbers()
        names = {customer_key(display_name(probe.practice.patient_of(n))) for n in completed}
        existing = {
            customer_key(c["DisplayName"]) for c in probe.company.customers(include_inactive=True)
        }
    return {
        "fetch": len(completed),
        "customers": max(1, math.ceil(len(names - existing) / 30)),
        "invoices": max(1, math.ceil(len(completed) / 30)),
    }


@dataclass
class CrashResult:
    point: KillPoint
    reached: bool = False
    killed: bool = False
    lock_free_after: float | None = None
    watermark_kept: bool = False
    runs: list[int] = field(default_factory=list)
    audit: Audit | None = None
    writes_before_kill: int = 0
    problems: list[str] = field(default_factory=list)


def crash_once(
    point: KillPoint, *, redis_url: str, seed: int, quotes: int, **world: Any
) -> CrashResult:
    """SIGKILL one run at `point`, then check the lock, the watermark and convergence."""
    result = CrashResult(point)
    with World(seed=seed, quotes=quotes, redis_url=redis_url, **world) as w:
        if point.phase == "updates":
            # A first complete sync, then 4D changes: the killed run updates, deletes and
            # creates invoices.
            first = w.run()
            if not first.finished:
                result.problems.append(f"the first sync did not finish: exit {first.code}")
            change_quotes(w.sandbox, random.Random(seed * 1000 + point.k), scale=2)
        else:
            overlap = timedelta(seconds=w.settings.sync_overlap_seconds)
            # A watermark that the window starts at (rather than SYNC_INITIAL_FROM).
            w.store.reset_watermark(w.sandbox.initial_from + overlap)
        watermark = w.store.watermark()
        assert watermark is not None
        start = len(w.sandbox.requests)
        w.latency(fourd_ms=15, qbo_ms=120)  # long enough phases to land in
        victim = w.spawn("--quiet")
        result.reached = wait_for_requests(
            w.sandbox, PHASE_MATCH[point.phase], point.k, victim, start=start
        )
        if point.delay:
            time.sleep(point.delay)
        victim.send_signal(signal.SIGKILL)
        victim.wait(timeout=10)
        killed_at = time.monotonic()
        result.killed = victim.returncode == -signal.SIGKILL  # not when it had just finished
        if not result.reached:
            result.problems.append(f"the run ended (exit {victim.returncode}) before {point}")
        result.writes_before_kill = sum(1 for r in w.sandbox.requests[start:] if is_qbo_write(r))
        w.latency()
        held = w.store.lock_holder() is not None
        free = w.wait_lock_free(timeout=w.lock_ttl * 2)
        result.lock_free_after = None if free is None else (time.monotonic() - killed_at)
        if free is None or result.lock_free_after > w.lock_ttl + LOCK_FREE_SLACK:
            result.problems.append(
                f"lock not free within its TTL {w.lock_ttl:g} s "
                f"(held at kill: {held}, free after {result.lock_free_after})"
            )
        after = w.store.watermark()
        result.watermark_kept = after == watermark
        if not result.watermark_kept:
            # Moving is only right when the whole window was done (killed while recording).
            queued = {entry.quote for entry in w.store.retry_queue()}
            early = w.audit()
            undone = set(early.missing + early.mismatched + early.stray) - queued
            if after is None or after < watermark or undone or early.duplicates:
                result.problems.append(
                    f"watermark moved to {after} with unprocessed work: {early.summary()}"
                )
        runs = w.converge()
        result.runs = [r.code for r in runs]
        if not runs[-1].finished:
            result.problems.append(f"no clean run finished: exits {result.runs}")
        moved = w.store.watermark()
        if moved is None or moved <= watermark:
            result.problems.append("the clean run did not advance the watermark")
        result.audit = w.audit()
        if not result.audit.converged:
            result.problems.append("not converged: " + result.audit.summary())
        result.problems += lock_history_problems(w.store.lock_history())
    return result


def crash_suite(
    *,
    redis_url: str,
    count: int,
    seed: int,
    quotes: int,
    later: int = 0,
    strict: bool = True,
) -> list[CrashResult]:
    """`count` kill points in a first sync, and `later` in a run after changes in 4D."""
    sizes = phase_sizes(seed, quotes)
    points = kill_points(count, seed, sizes)
    rng = random.Random(seed + 1)
    for n in range(later):
        k = 1 + n % 3
        # A delay after the last batch would land after the run ended: no kill.
        delay = 0.0 if k == 3 else rng.choice((0.0, round(rng.uniform(0, 0.25), 3)))
        points.append(KillPoint("updates", k, delay))
    say(
        f"crash: {len(points)} kill points on {quotes} quotes: {count} in a first sync "
        f"({sizes['fetch']} fetches, ~{sizes['customers']} customer batches, "
        f"{sizes['invoices']} invoice batches), {later} in a later run that updates, deletes "
        f"and creates after 76 changes in 4D (3 invoice batches); chunks of {CRASH_CHUNK_SIZE}; "
        f"lock TTL {LOCK_TTL:g} s"
    )
    results = []
    for n, point in enumerate(points, 1):
        result = crash_once(
            point,
            redis_url=redis_url,
            seed=seed,
            quotes=quotes,
            strict=strict,
            chunk_size=CRASH_CHUNK_SIZE,
        )
        results.append(result)
        audit_text = result.audit.summary() if result.audit else "no audit"
        freed = f"{result.lock_free_after:.2f} s" if result.lock_free_after is not None else "never"
        say(
            f"  [{n:2}/{len(points)}] {point}: "
            + ("" if result.killed else "(the run had finished: no kill) ")
            + f"{result.writes_before_kill} QBO writes before it; lock free after {freed}; "
            "watermark "
            f"{'kept' if result.watermark_kept else 'moved'}; clean runs exit {result.runs}; "
            f"{audit_text}" + (f"  PROBLEMS: {result.problems}" if result.problems else "")
        )
    return results


def crash_figures(results: Sequence[CrashResult]) -> str:
    audits = [r.audit for r in results if r.audit is not None]
    duplicates = sum(len(a.duplicates) for a in audits)
    mismatches = sum(len(a.mismatched) for a in audits)
    missing = sum(len(a.missing) for a in audits)
    stray = sum(len(a.stray) for a in audits)
    customers = sum(len(a.duplicate_customers) for a in audits)
    freed = [r.lock_free_after for r in results if r.lock_free_after is not None]
    by_phase = Counter(r.point.phase for r in results)
    phases = ", ".join(f"{n} {phase}" for phase, n in by_phase.items())
    killed = sum(r.killed for r in results)
    return (
        f"{killed} kill points, {duplicates} duplicates, {mismatches} mismatches"
        f" ({phases}; {missing} missing, {stray} stray,"
        f" {customers} duplicate customers; {len(results) - killed} more runs finished before "
        "their kill; lock free again after at most "
        f"{max(freed, default=float('nan')):.2f} s of a {LOCK_TTL:g} s TTL; watermark kept "
        f"after {sum(r.watermark_kept for r in results if r.killed)}/{killed} kills)"
    )
