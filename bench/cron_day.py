"""A simulated day of cron: how often does a quiet `sync run` exit 1 (= cron mails)?

Issue 10's figure. The sandbox practice with its one paid conflict (the seed's partly paid
invoice of a changed quote) and one quote that fails on every run (a negative procedure
amount, a mapping error), `SYNC_MAX_ATTEMPTS` 5 and `SYNC_REMIND_HOURS` 24, run every 5
minutes for a day: 288 runs. The engine runs in-process on a clock shared with the
sandbox, advanced 5 minutes a run, so "a day" takes seconds. What a person should get:
one mail for the first detection (the conflict and the first failure, in one run), one
when the failing quote gives up, and a reminder a day after the last time everything was
shown - at most 3 runs that exit 1.

    .venv/bin/python bench/cron_day.py                  # 288 runs, file state backend
    .venv/bin/python bench/cron_day.py --runs 600 --remind-hours 12

Prints the exit-1 runs (run number, simulated time, what --quiet would print) and the
figure; exit 0 when at most --limit runs exit 1, else 1. `simulate` is what the test
suite's faster variant calls (tests/sync/test_cron_day.py).
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from fourdqbo.config import load_settings  # noqa: E402
from fourdqbo.sandbox import Sandbox  # noqa: E402
from fourdqbo.sandbox.server import QboLimits  # noqa: E402

STEP_SECONDS = 300  # cron's */5


@dataclass
class Day:
    """What the simulated runs did: one exit code a run, and the lines of the loud ones."""

    codes: list[int] = field(default_factory=list)
    loud: list[tuple[int, datetime, list[str]]] = field(default_factory=list)
    failing_fetches: int = 0  # how often the failing quote was fetched from 4D

    @property
    def mails(self) -> int:
        return sum(1 for code in self.codes if code == 1)


def failing_quote(sandbox: Sandbox) -> str:
    """A completed quote that is not the seed's conflict, broken for good."""
    facts = sandbox.facts
    number = next(
        n
        for n in sandbox.practice.completed_numbers()
        if n not in (facts.conflict_quote, facts.inactive_customer_quote)
    )
    sandbox.practice.quote(number).procedures = [
        {"ProcedureName": "Consultation", "Amount": "-5", "DiscountAmount": None}
    ]
    return number


def simulate(
    sandbox: Sandbox,
    env: Mapping[str, str],
    *,
    runs: int,
    max_attempts: int = 5,
    remind_hours: float = 24,
    step_seconds: float = STEP_SECONDS,
) -> Day:
    """`runs` cron runs `step_seconds` apart against `sandbox`, in-process (see module)."""
    from fourdqbo.cli.sync import connect
    from fourdqbo.sync.engine import RunOptions, SyncEngine

    number = failing_quote(sandbox)
    settings = load_settings(
        {
            **env,
            "SYNC_MAX_ATTEMPTS": str(max_attempts),
            "SYNC_REMIND_HOURS": str(remind_hours),
        },
        dotenv_path=None,
    )
    day = Day()
    for index in range(runs):
        with connect(settings) as conn:
            engine = SyncEngine(settings, conn.fourd, conn.qbo, conn.state, now=sandbox.clock.now)
            report = engine.run(RunOptions())
        day.codes.append(report.exit_code)
        if report.exit_code == 1:
            day.loud.append((index, report.started_at, list(report.to_report)))
        outcome = report.outcomes.get(number)
        if outcome is not None and outcome.action == "failed":
            day.failing_fetches += 1
        sandbox.clock.advance(step_seconds)
    return day


def sandbox_env(sandbox: Sandbox, directory: Path) -> dict[str, str]:
    return {
        **sandbox.env(directory / "data"),
        "STATE_BACKEND": "file",
        "LOGS_DIR": str(directory / "logs"),
        "HTTP_TIMEOUT_SECONDS": "5",
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=288, help="cron runs (288: a day)")
    parser.add_argument("--max-attempts", type=int, default=5)
    parser.add_argument("--remind-hours", type=float, default=24)
    parser.add_argument("--limit", type=int, default=3, help="most exit-1 runs allowed")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
    with (
        tempfile.TemporaryDirectory(prefix="fourdqbo-cron-day-") as directory,
        Sandbox(seed=7, quotes=12, limits=QboLimits(window_seconds=1)) as sandbox,
    ):
        day = simulate(
            sandbox,
            sandbox_env(sandbox, Path(directory)),
            runs=args.runs,
            max_attempts=args.max_attempts,
            remind_hours=args.remind_hours,
        )
    for index, at, lines in day.loud:
        print(f"run {index + 1} at {at:%Y-%m-%d %H:%M}Z exit 1:")
        for line in lines:
            print(f"  {line}")
    print(
        f"{args.runs} runs every {STEP_SECONDS // 60} minutes (SYNC_MAX_ATTEMPTS "
        f"{args.max_attempts}, SYNC_REMIND_HOURS {args.remind_hours:g}): "
        f"{day.mails} exited 1 (limit {args.limit}); the failing quote was fetched "
        f"{day.failing_fetches} times"
    )
    return 0 if day.mails <= args.limit else 1


if __name__ == "__main__":
    raise SystemExit(main())
