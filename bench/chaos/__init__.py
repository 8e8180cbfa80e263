"""Crash, fault and concurrency suite: does the sync keep the books right when things break?

Runs `fourdqbo sync run` the way cron does (a subprocess) against the sandbox (4D + QBO +
OAuth on loopback) with real Redis, breaks it on purpose, and checks that the books
converge afterwards. Every figure in docs/reliability.md comes from this script:

    .venv/bin/python -m bench.chaos                 # everything (about 10 minutes)
    .venv/bin/python -m bench.chaos --only crash    # one part: crash, faults, people,
                                                    # special, concurrency
    make chaos

Scenarios:

- crash: SIGKILL a run at seeded points while it fetches quotes, creates customers and
  writes invoices, and in a later run while it updates and deletes after changes in 4D
  (chosen by watching the sandbox's request log); after each kill the lock must free
  itself within its TTL, the watermark must not pass unprocessed work, and a clean run
  must converge (`fourdqbo.sandbox.audit`).
- faults: 10% mixed faults on both services (429 with and without Retry-After, 500, 503,
  timeouts, dropped connections, writes committed and their answer dropped) over several
  seeds, through a first sync and rounds of changes in 4D; each round runs until a run
  finishes with nothing failed, then the audit.
- people: a simulated bookkeeper edits, deletes, voids, pays, emails and annotates
  invoices in QBO between runs while 4D changes too, under the same faults, and each
  round's first run is SIGKILLed among its writes; afterwards every hand change must be
  reported (an open item of the right kind, nothing undone) or, with
  SYNC_QBO_EDITS=revert and SYNC_QBO_DELETES=recreate, repaired (the audit is told what
  the bookkeeper did, `fourdqbo.sandbox.audit.HandChange`).
- special: 4D answering 401 mid-run, Redis restarted mid-run, the QBO refresh token
  rotated by another process mid-run.
- concurrency: 8 runs started together (one works, seven exit 75 within a second), a
  worker whose heartbeat is held up past half the lock's TTL (SIGSTOP), and one stopped
  past the TTL (another run takes over; the first must stop with exit 3).

The QBO company is made as unforgiving as a real one can be: its duplicate-DocNumber
warning is off and it ignores `requestid`, so only fourdqbo's own look-up-before-retry
stands between a lost answer and a duplicate invoice (`--lenient` turns both back on).

The scenario functions return results with a list of `problems` (empty = pass); the
pytest versions in tests/chaos/ call them with smaller numbers.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from bench.chaos import world
from bench.chaos.contention import (
    eight_at_once,
    heartbeat_delayed,
    stopped_past_ttl,
)
from bench.chaos.crash import (
    CRASH_CHUNK_SIZE,
    PHASES,
    KillPoint,
    crash_figures,
    crash_once,
    crash_suite,
    kill_points,
)
from bench.chaos.faults import (
    faults_figures,
    faults_once,
    faults_suite,
    fourd_unauthorized_mid_run,
    redis_restart_mid_run,
    token_rotated_mid_run,
)
from bench.chaos.people import (
    HAND_KINDS,
    bookkeeper,
    people_figures,
    people_in_qbo,
    people_suite,
)
from bench.chaos.world import (
    EXIT_LOCK_HELD,
    HTTP_TIMEOUT,
    LIMITS,
    LOCK_FREE_SLACK,
    LOCK_TTL,
    LOSER_DEADLINE,
    LOST_ANSWERS,
    TIMEOUT_DELAY,
    Launched,
    RunResult,
    World,
    _number,
    _span,
    batch_entities,
    change_quotes,
    finish,
    is_customer_batch,
    is_invoice_batch,
    is_qbo_write,
    is_quote_fetch,
    launch_together,
    lock_history_problems,
    minor_of,
    private_redis,
    say,
    suite_redis,
    wait_for_requests,
)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument(
        "--only",
        default="crash,faults,people,special,concurrency",
        help="comma-separated parts",
    )
    parser.add_argument("--kill-points", type=int, default=24, help="in a first sync")
    parser.add_argument(
        "--later-kill-points", type=int, default=6, help="in a run after changes in 4D"
    )
    parser.add_argument("--fault-seeds", type=int, default=5)
    parser.add_argument(
        "--people-seeds", type=int, default=2, help="each run in report and revert/recreate mode"
    )
    parser.add_argument("--quotes", type=int, default=300)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--lenient",
        action="store_true",
        help="keep the sandbox company's duplicate-DocNumber check and requestid replay on",
    )
    parser.add_argument(
        "--keep", type=Path, default=None, help="keep each scenario's data and logs under DIR"
    )
    options = parser.parse_args(argv)
    if options.keep is not None:
        options.keep.mkdir(parents=True, exist_ok=True)
        world.KEEP_ROOT = options.keep
    parts = {p.strip() for p in options.only.split(",") if p.strip()}
    strict = not options.lenient
    quotes = options.quotes
    started = time.monotonic()
    figures: list[str] = []
    problems: list[str] = []
    with suite_redis() as redis_url:
        say(f"Redis: {redis_url}; QBO company strict: {strict}; lock TTL {LOCK_TTL:g} s")
        if "crash" in parts:
            crashes = crash_suite(
                redis_url=redis_url,
                count=options.kill_points,
                later=options.later_kill_points,
                seed=options.seed,
                quotes=quotes,
                strict=strict,
            )
            figures.append("crash: " + crash_figures(crashes))
            problems += [f"crash {r.point}: {p}" for r in crashes for p in r.problems]
        if "faults" in parts:
            seeds = [options.seed + 100 + n for n in range(options.fault_seeds)]
            faults = faults_suite(redis_url=redis_url, seeds=seeds, quotes=quotes, strict=strict)
            figures.append("faults: " + faults_figures(faults))
            problems += [f"faults seed {r.seed}: {p}" for r in faults for p in r.problems]
        if "people" in parts:
            seeds = [options.seed + 30 + n for n in range(options.people_seeds)]
            people = people_suite(redis_url=redis_url, seeds=seeds, quotes=quotes, strict=strict)
            figures.append("people in QBO: " + people_figures(people))
            problems += [f"{r.name}: {p}" for r in people for p in r.problems]
        common: dict[str, Any] = {"redis_url": redis_url, "quotes": quotes, "strict": strict}
        own_redis: dict[str, Any] = {"quotes": quotes, "strict": strict}
        frozen_while_pacing = {
            "after_batches": 1,
            "stop_delay": 0.3,
            "pace": 1.5,
            "resume_after_taker": True,
        }
        frozen = {**common, **frozen_while_pacing}
        scenarios: list[tuple[str, Callable[..., Any], dict[str, Any]]] = []
        if "special" in parts:
            scenarios += [
                ("special", fourd_unauthorized_mid_run, common),
                ("special", redis_restart_mid_run, {**own_redis, "down_for": 1.0}),
                ("special", redis_restart_mid_run, {**own_redis, "down_for": LOCK_TTL + 1.5}),
                ("special", token_rotated_mid_run, common),
                ("special", token_rotated_mid_run, {**common, "racer": True}),
            ]
        if "concurrency" in parts:
            scenarios += [
                ("concurrency", eight_at_once, common),
                ("concurrency", heartbeat_delayed, common),
                ("concurrency", stopped_past_ttl, common),
                ("concurrency", stopped_past_ttl, {**common, "stop_delay": 0.15}),
                ("concurrency", stopped_past_ttl, frozen),
                # The same against a company with QBO's duplicate-DocNumber warning on.
                ("concurrency", stopped_past_ttl, {**frozen, "strict": False}),
            ]
        part = ""
        for n, (section, scenario, arguments) in enumerate(scenarios, 1):
            if section != part:
                part = section
                say(f"{section}:")
            began = time.monotonic()
            outcome = scenario(**arguments)
            say(f"  [{n}/{len(scenarios)}] {outcome.line()} ({time.monotonic() - began:.0f} s)")
            figures.append(f"{section}: {outcome.line()}")
            problems += [f"{outcome.name}: {p}" for p in outcome.problems]
    say("")
    say(f"== figures ({time.monotonic() - started:.0f} s) ==")
    for line in figures:
        say(line)
    if problems:
        say(f"== {len(problems)} problem(s) ==")
        for line in problems:
            say("  " + line)
        return 1
    say("== no problems ==")
    return 0


__all__ = [
    "CRASH_CHUNK_SIZE",
    "EXIT_LOCK_HELD",
    "HAND_KINDS",
    "HTTP_TIMEOUT",
    "LIMITS",
    "LOCK_FREE_SLACK",
    "LOCK_TTL",
    "LOSER_DEADLINE",
    "LOST_ANSWERS",
    "PHASES",
    "TIMEOUT_DELAY",
    "KillPoint",
    "Launched",
    "RunResult",
    "World",
    "_number",
    "_span",
    "batch_entities",
    "bookkeeper",
    "change_quotes",
    "crash_figures",
    "crash_once",
    "crash_suite",
    "eight_at_once",
    "faults_figures",
    "faults_once",
    "faults_suite",
    "finish",
    "fourd_unauthorized_mid_run",
    "heartbeat_delayed",
    "is_customer_batch",
    "is_invoice_batch",
    "is_qbo_write",
    "is_quote_fetch",
    "kill_points",
    "launch_together",
    "lock_history_problems",
    "main",
    "minor_of",
    "people_figures",
    "people_in_qbo",
    "people_suite",
    "private_redis",
    "redis_restart_mid_run",
    "say",
    "stopped_past_ttl",
    "suite_redis",
    "token_rotated_mid_run",
    "wait_for_requests",
    "world",
]
