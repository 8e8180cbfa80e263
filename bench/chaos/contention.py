"""Contention: runs started together, a heartbeat held up past half the TTL, a worker
stopped past its TTL while another takes the lock over."""

from __future__ import annotations

import signal
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from bench.chaos.world import (
    EXIT_LOCK_HELD,
    LOSER_DEADLINE,
    Launched,
    World,
    _number,
    _span,
    finish,
    is_customer_batch,
    is_invoice_batch,
    is_qbo_write,
    launch_together,
    lock_history_problems,
    minor_of,
    wait_for_requests,
)
from fourdqbo.sandbox.audit import Audit


@dataclass
class ConcurrencyResult:
    name: str
    exits: list[int] = field(default_factory=list)
    loser_seconds: list[float] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    audit: Audit | None = None
    problems: list[str] = field(default_factory=list)

    def line(self) -> str:
        audit_text = self.audit.summary() if self.audit else "no audit"
        return f"{self.name}: exits {self.exits}; {'; '.join(self.notes)}; {audit_text}" + (
            f"  PROBLEMS: {self.problems}" if self.problems else ""
        )


def eight_at_once(
    *, redis_url: str, seed: int = 21, quotes: int = 300, processes: int = 8, **world: Any
) -> ConcurrencyResult:
    """`processes` runs started together: exactly one works, the rest exit 75 within 1 s."""
    result = ConcurrencyResult(f"{processes} runs started together")
    with World(seed=seed, quotes=quotes, redis_url=redis_url, **world) as w:
        w.latency(qbo_ms=40)
        runs = launch_together(w, processes)
        for run in runs:
            run.join()
        result.exits = [run.process.returncode for run in runs]
        winners = [run for run in runs if run.process.returncode != EXIT_LOCK_HELD]
        losers = [run for run in runs if run.process.returncode == EXIT_LOCK_HELD]
        result.loser_seconds = sorted(run.seconds_after_go for run in losers)
        if len(winners) != 1 or len(losers) != processes - 1:
            result.problems.append(
                f"expected 1 worker and {processes - 1} exits 75: {result.exits}"
            )
        late = [s for s in result.loser_seconds if s > LOSER_DEADLINE]
        if late:
            result.problems.append(
                f"{len(late)} exit(s) 75 later than {LOSER_DEADLINE:g} s: {late}"
            )
        if winners and not winners[0].result().finished:
            result.problems.append(f"the worker did not finish: {winners[0].stderr[-300:]}")
        records = w.sandbox.requests
        minors = Counter(minor_of(r) for r in records if r.service == "qbo")
        if len(minors) != 1:
            result.problems.append(f"QBO requests from several runs: {dict(minors)}")
        listings = sum(1 for r in records if r.service == "fourd" and r.path == "quotes/list")
        if listings != 1:
            result.problems.append(f"{listings} 4D quote listings (expected 1)")
        history = w.store.lock_history()
        acquired = sum(1 for e in history if e.event == "acquired")
        if acquired != 1:
            result.problems.append(f"the lock was acquired {acquired} times (expected 1)")
        result.problems += lock_history_problems(history)
        spawn_to_exit = sorted(run.ended - run.spawned for run in losers if run.ended)
        result.notes.append(
            f"losers exited 75 in {_span(result.loser_seconds)} s after go "
            f"({_span(spawn_to_exit)} s after spawn, interpreter start-up included); "
            f"lock acquired {acquired}x; 4D listings {listings}; "
            f"QBO requests from {len(minors)} run"
        )
        result.audit = w.audit()
        if not result.audit.converged:
            result.problems.append("not converged: " + result.audit.summary())
    return result


class PttlWatch:
    """Polls the lock key's PTTL in a thread: the smallest value seen tells the longest
    time the lock went without an extension (TTL - min PTTL)."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.min_ms: int | None = None
        self.vanished = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def __enter__(self) -> PttlWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _poll(self) -> None:
        started = False
        while not self._stop.is_set():
            pttl = self.world.lock_pttl_ms()
            if pttl >= 0:
                started = True
                self.min_ms = pttl if self.min_ms is None else min(self.min_ms, pttl)
            elif started and pttl == -2 and not self._stop.is_set():
                self.vanished = True  # gone: released at the end, or expired
            time.sleep(0.005)


def heartbeat_delayed(
    *, redis_url: str, seed: int = 22, quotes: int = 300, contenders: int = 3, **world: Any
) -> ConcurrencyResult:
    """SIGSTOP the worker so its heartbeat comes late by more than half the TTL (but
    before the TTL runs out): the lock must hold, contenders exit 75, the run finishes."""
    result = ConcurrencyResult("heartbeat held up past half the TTL")
    with World(seed=seed, quotes=quotes, redis_url=redis_url, **world) as w:
        ttl = w.lock_ttl
        w.latency(qbo_ms=120)
        waiting = [
            Launched(w, ["--json"], QBO_MINOR_VERSION=str(76 + n)) for n in range(contenders)
        ]
        for run in waiting:
            run.wait_ready()
        with PttlWatch(w) as watch:
            worker = w.spawn("--json", QBO_MINOR_VERSION="75")
            started = time.monotonic()
            if not wait_for_requests(w.sandbox, is_customer_batch, 1, worker):
                result.problems.append("the worker ended before it was stopped")
            since_extend = ttl - max(w.lock_pttl_ms(), 0) / 1000
            pause = max(0.75 * ttl - since_extend, 0.55 * ttl)
            worker.send_signal(signal.SIGSTOP)
            stopped = time.monotonic()
            time.sleep(min(0.3, pause / 3))
            for run in waiting:
                run.go()
            for run in waiting:
                run.join(timeout=pause)
            time.sleep(max(0.0, pause - (time.monotonic() - stopped)))
            worker.send_signal(signal.SIGCONT)
            paused = time.monotonic() - stopped
            final = finish(worker, started, 180)
        result.exits = [final.code] + [run.process.returncode for run in waiting]
        result.loser_seconds = sorted(run.seconds_after_go for run in waiting if run.ended)
        if not final.finished:
            result.problems.append(f"the worker did not finish: {final.code} {final.stderr[-300:]}")
        if any(run.process.returncode != EXIT_LOCK_HELD for run in waiting):
            result.problems.append("a contender got the lock while the worker was stopped")
        gap = ttl - (watch.min_ms or 0) / 1000
        if watch.min_ms is None or watch.min_ms <= 0:
            result.problems.append("the lock expired while the worker was stopped")
        if gap <= ttl / 2:
            result.problems.append(f"the heartbeat gap {gap:.2f} s did not pass half the TTL")
        history = w.store.lock_history()
        result.problems += lock_history_problems(history)
        if sum(1 for e in history if e.event == "acquired") != 1:
            result.problems.append("the lock changed hands")
        result.notes.append(
            f"worker stopped {paused:.2f} s; longest time without an extension {gap:.2f} s "
            f"of a {ttl:g} s TTL; {contenders} contenders exited 75 in "
            f"{_span(result.loser_seconds)} s"
        )
        result.audit = w.audit()
        if not result.audit.converged:
            result.problems.append("not converged: " + result.audit.summary())
    return result


def stopped_past_ttl(
    *,
    redis_url: str,
    seed: int = 23,
    quotes: int = 300,
    after_batches: int = 2,
    stop_delay: float = 0.0,
    pace: float | None = None,
    resume_after_taker: bool = False,
    **world: Any,
) -> ConcurrencyResult:
    """SIGSTOP a worker past its lock's TTL; another run takes the lock over; when the first
    resumes it must notice the lost lock before its next batch, stop with exit 3 and write
    nothing more. Then a clean run converges with no duplicate.

    The stop comes `stop_delay` after the worker's `after_batches`-th invoice batch reached
    QBO. With `pace` the worker's own client paces batches `pace` seconds apart, so the stop
    lands while it waits to send its next batch (past the engine's between-batch check);
    `resume_after_taker` resumes it only once the taker has finished.
    """
    name = (
        f"worker stopped past the TTL {stop_delay * 1000:.0f} ms after invoice batch "
        f"#{after_batches}"
    )
    if pace:
        name += f" while pacing ({pace:g} s a batch)"
    name += (
        ", resumed after the taker finished"
        if resume_after_taker
        else ", resumed while the taker writes"
    )
    if not world.get("strict", True):
        name += " [company with the duplicate-DocNumber check on]"
    result = ConcurrencyResult(name)
    with World(seed=seed, quotes=quotes, redis_url=redis_url, **world) as w:
        ttl = w.lock_ttl
        w.latency(qbo_ms=0 if pace else 120)
        pacing = {}
        if pace:
            pacing = {"QBO_MAX_BATCHES_PER_MINUTE": "1", "QBO_RATE_WINDOW_SECONDS": _number(pace)}
        taker = Launched(w, ["--json"], QBO_MINOR_VERSION="76")
        taker.wait_ready()
        first = w.spawn("--json", QBO_MINOR_VERSION="75", **pacing)
        started = time.monotonic()
        if not wait_for_requests(w.sandbox, is_invoice_batch, after_batches, first, timeout=180):
            result.problems.append("the first run ended before it was stopped")
        time.sleep(stop_delay)
        first.send_signal(signal.SIGSTOP)
        stopped = time.monotonic()
        if w.wait_lock_free(timeout=ttl * 3) is None:
            result.problems.append("the stopped run's lock never expired")
        taker.go()
        if resume_after_taker:
            taker.join()
        else:  # resume the first run while the taker writes
            wait_for_requests(w.sandbox, lambda r: is_qbo_write(r) and minor_of(r) == "76", 1)
        resumed_at = len(w.sandbox.requests)
        first.send_signal(signal.SIGCONT)
        paused = time.monotonic() - stopped
        first_run = finish(first, started, 180)
        taker.join()
        second = taker.result()
        result.exits = [first_run.code, second.code]
        late = [
            r for r in w.sandbox.requests[resumed_at:] if is_qbo_write(r) and minor_of(r) == "75"
        ]
        if first_run.code != 3:
            result.problems.append(f"the first run should stop with exit 3, got {first_run.code}")
        if late:
            result.problems.append(
                f"the first run sent {len(late)} QBO write(s) after it resumed without the lock"
            )
        if "lock" not in first_run.stderr.lower():
            result.problems.append(
                f"the first run did not say it lost the lock: {first_run.stderr!r}"
            )
        if second.code not in (0, 1):
            result.problems.append(f"the taker: exit {second.code}: {second.stderr[-300:]}")
        history = w.store.lock_history()
        result.problems += lock_history_problems(history)
        events = [e.event for e in history]
        result.notes.append(
            f"first run stopped {paused:.2f} s (TTL {ttl:g} s), "
            f"{len(late)} QBO writes after it resumed; lock events {events}"
        )
        rest = w.converge()
        result.exits += [r.code for r in rest]
        result.audit = w.audit()
        if not result.audit.converged:
            result.problems.append("not converged: " + result.audit.summary())
    return result
