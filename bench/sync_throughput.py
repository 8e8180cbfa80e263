"""Benchmark: one full sync of 1,000 completed quotes against the sandbox, then a no-op run.

    .venv/bin/python bench/sync_throughput.py [--quotes 1000 --patients 400 --seed 1
                                               --window-seconds 5]

The sandbox (4D practice, QBO company, OAuth on loopback) is seeded with `--quotes`
completed quotes for `--patients` patients that QBO has never seen, and QBO's throttle is
time-scaled: `--requests-per-window` requests (batch items counted one by one) and
`--batches-per-window` batch POSTs per `--window-seconds`-second "minute", `--in-flight`
at once. fourdqbo gets the same limits (`sandbox.env`), so it paces itself to them. The
state store is the file backend in a temporary directory; the sandbox mints the QBO token.

Both runs go through `SyncEngine` in this process, each with fresh clients and state store
as cron would start them, on the sandbox's clock (`now=`) so that time can move between
them: the full run starts `SYNC_OVERLAP_SECONDS` + 2 minutes (simulated) after the seed's
last edit in 4D, the no-op run one cron interval later, and the no-op run's window
(watermark - overlap) then holds no quote: nothing changed in 4D.

Every figure comes from the sandbox's request log of this very run; docs/performance.md
defines them. Exit 0 when every target is met, 1 when one is missed.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from fourdqbo.config import Settings, load_settings
from fourdqbo.sandbox import Sandbox
from fourdqbo.sandbox.audit import Audit, audit
from fourdqbo.sandbox.server import QboLimits, RequestRecord
from fourdqbo.sync.engine import RunOptions, SyncEngine
from fourdqbo.sync.report import RunReport

# The targets of the sync issue.
MAX_429 = 5
MIN_WRITE_RATE = 0.9
MAX_NOOP_REQUESTS = 2
MAX_BATCH_ITEMS = 30  # QBO's batch size: the most write items one batch POST carries
CRON_INTERVAL_SECONDS = 300  # simulated time between the full run and the no-op run


@dataclass(frozen=True)
class Pacing:
    """What the QBO side of one run looked like, from the sandbox's request log."""

    requests: int  # QBO HTTP requests received, 429s included
    reads: int  # admitted GET queries and read-only batches
    writes: int  # admitted write requests (batch or single POST)
    throttled: int  # requests answered 429
    write_items: int  # write operations in the admitted write requests
    phase_seconds: float  # first to last admitted write request
    paced_items: int  # write items of every write request but the last
    items_per_second: float  # paced_items / phase_seconds
    write_limit: int  # write items allowed per window: the request or batch limit
    rate_fraction: float  # items_per_second / (write_limit / window)
    max_write_items: int  # most write items in any span of one window
    max_units: int  # most request units (batch items counted) in any span of one window
    max_batches: int  # most batch POSTs in any span of one window


@dataclass(frozen=True)
class Check:
    name: str
    passed: bool
    detail: str


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Sync N completed quotes against the sandbox with time-scaled QBO limits."
    )
    parser.add_argument("--quotes", type=int, default=1000, help="completed quotes (1000)")
    parser.add_argument("--patients", type=int, default=400, help="new patients (400)")
    parser.add_argument("--seed", type=int, default=1, help="sandbox seed (1)")
    parser.add_argument(
        "--window-seconds",
        type=float,
        default=5.0,
        help="length of QBO's throttle 'minute' (5: time runs 12 times faster)",
    )
    parser.add_argument("--requests-per-window", type=int, default=500, help="(500)")
    parser.add_argument("--batches-per-window", type=int, default=40, help="(40)")
    parser.add_argument("--in-flight", type=int, default=10, help="(10)")
    args = parser.parse_args(argv)
    if min(args.quotes, args.patients, args.requests_per_window, args.batches_per_window) < 1:
        parser.error("counts and limits must be at least 1")
    if args.window_seconds <= 0 or args.in_flight < 1:
        parser.error("--window-seconds must be positive and --in-flight at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    # fourdqbo's warnings (retries, throttling) go to stderr; the figures to stdout.
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(name)s: %(message)s")
    limits = QboLimits(
        requests_per_window=args.requests_per_window,
        batches_per_window=args.batches_per_window,
        in_flight=args.in_flight,
        window_seconds=args.window_seconds,
    )
    cores = os.cpu_count()
    print(f"machine     {platform.machine()}, {cores} cores, Python {platform.python_version()}")
    print(
        f"sandbox     seed {args.seed}: {args.quotes} completed quotes of {args.patients} "
        "new patients, none of them in QBO yet"
    )
    print(
        f"QBO limits  {limits.requests_per_window} requests (a batch item counts one) and "
        f"{limits.batches_per_window} batches per {limits.window_seconds:g}-second window, "
        f"{limits.in_flight} in flight"
    )
    sandbox = Sandbox(
        seed=args.seed,
        quotes=args.quotes,
        completed=args.quotes,
        patients=args.patients,
        preexisting=False,
        limits=limits,
    )
    with sandbox, tempfile.TemporaryDirectory(prefix="fourdqbo-bench-") as scratch:
        settings = bench_settings(sandbox, Path(scratch))
        checks = run_benchmark(sandbox, settings, limits)
    print()
    for check in checks:
        print(f"{'PASS' if check.passed else 'FAIL'}  {check.name}: {check.detail}")
    return 0 if all(check.passed for check in checks) else 1


def bench_settings(sandbox: Sandbox, scratch: Path) -> Settings:
    env = sandbox.env(scratch / "data")
    env.update(STATE_BACKEND="file", LOGS_DIR=str(scratch / "logs"))
    # Only what the sandbox says: no .env from the working directory, no shell exports.
    return load_settings(env, dotenv_path=None)


def sync_once(sandbox: Sandbox, settings: Settings) -> RunReport:
    """One `sync run` as cron starts it: fresh clients and state store; the sandbox's clock."""
    from fourdqbo.cli.sync import connect

    with connect(settings) as connections:
        engine = SyncEngine(
            settings,
            connections.fourd,
            connections.qbo,
            connections.state,
            now=sandbox.clock.now,
        )
        return engine.run(RunOptions())


def run_benchmark(sandbox: Sandbox, settings: Settings, limits: QboLimits) -> list[Check]:
    # The seed's last edit is at least a minute before the seed. Starting the full run
    # overlap + 2 minutes later keeps every seeded edit out of the next run's window.
    sandbox.clock.advance(settings.sync_overlap_seconds + 120)
    sandbox.clear_requests()
    started = time.perf_counter()
    report = sync_once(sandbox, settings)
    wall = time.perf_counter() - started
    log = sandbox.requests
    fourd_requests = sum(1 for r in log if r.service == "fourd")
    pacing = measure_pacing([r for r in log if r.service == "qbo"], limits)
    started = time.perf_counter()
    result = fast_audit(sandbox, settings)
    audit_seconds = time.perf_counter() - started
    counts = report.counts()
    window = limits.window_seconds

    print()
    print("full run")
    row("wall time", f"{wall:.1f} s", f"{wall / window:.1f} windows")
    row("quotes", format_counts(counts))
    row("customers created", report.customers_created)
    row("4D HTTP requests", fourd_requests)
    row(
        "QBO HTTP requests",
        pacing.requests,
        f"{pacing.reads} reads, {pacing.writes} writes, {pacing.throttled} answered 429",
    )
    row("429s received", pacing.throttled)
    row("write items", pacing.write_items, f"in {pacing.writes} write requests")
    row(
        "before the first write",
        f"{seconds_to_first_write(log):.2f} s",
        "4D list and fetches, QBO lookups",
    )
    phase = pacing.phase_seconds
    row("writing phase", f"{phase:.2f} s", f"{phase / window:.2f} windows")
    row(
        "write rate",
        f"{pacing.items_per_second:.1f}/s",
        f"limit {pacing.write_limit} per {window:g} s = {pacing.write_limit / window:.1f}/s",
    )
    short = "the phase is under two windows: says little about pacing" if phase < 2 * window else ""
    row("write rate / limit", f"{pacing.rate_fraction:.3f}", short)
    row("max write items in a window", pacing.max_write_items, f"limit {pacing.write_limit}")
    row("max QBO units in a window", pacing.max_units, f"limit {limits.requests_per_window}")
    row("max batches in a window", pacing.max_batches, f"limit {limits.batches_per_window}")
    row("audit", result.summary(), f"{audit_seconds:.1f} s")

    # The next cron run: nothing changed in 4D since the full run.
    sandbox.clock.advance(CRON_INTERVAL_SECONDS)
    sandbox.clear_requests()
    started = time.perf_counter()
    noop = sync_once(sandbox, settings)
    noop_wall = time.perf_counter() - started
    noop_log = sandbox.requests
    noop_qbo = sum(1 for r in noop_log if r.service == "qbo")
    noop_fourd = sum(1 for r in noop_log if r.service == "fourd")
    print()
    print(f"no-op run, {CRON_INTERVAL_SECONDS} s (simulated) later")
    row("wall time", f"{noop_wall:.2f} s")
    row("quotes", format_counts(noop.counts()) or "none in the window")
    row("HTTP requests", len(noop_log), f"4D {noop_fourd}, QBO {noop_qbo}")
    row("watermark advanced", str(noop.watermark_advanced).lower())

    completed = len(sandbox.practice.completed_numbers())
    return [
        Check(
            "every quote synced",
            counts.get("created") == completed and counts.get("failed") == 0,
            f"{counts.get('created')} of {completed} created, {counts.get('failed')} failed",
        ),
        Check(
            "converged (0 duplicates, 0 mismatches)",
            result.converged and not result.duplicates and not result.mismatched,
            result.summary(),
        ),
        Check(f"at most {MAX_429} 429s", pacing.throttled <= MAX_429, f"{pacing.throttled}"),
        Check(
            "every window within the limits",
            pacing.max_write_items <= pacing.write_limit
            and pacing.max_units <= limits.requests_per_window
            and pacing.max_batches <= limits.batches_per_window,
            f"at most {pacing.max_write_items} write items, {pacing.max_units} units, "
            f"{pacing.max_batches} batches in a window",
        ),
        Check(
            f"write rate at least {MIN_WRITE_RATE} of the limit",
            pacing.rate_fraction >= MIN_WRITE_RATE,
            f"{pacing.rate_fraction:.3f}",
        ),
        Check(
            f"no-op run: at most {MAX_NOOP_REQUESTS} requests, none to QBO",
            len(noop_log) <= MAX_NOOP_REQUESTS and noop_qbo == 0,
            f"{len(noop_log)} requests ({noop_qbo} to QBO)",
        ),
    ]


def measure_pacing(qbo: Sequence[RequestRecord], limits: QboLimits) -> Pacing:
    """The figures of docs/performance.md from QBO's side of the request log.

    Times are the sandbox's arrival stamps. A 429 is not admitted: QBO does not count it
    against the window, so neither do the window figures; it is counted in `throttled`.
    """
    window = limits.window_seconds
    throttled = [r for r in qbo if r.status == 429]
    admitted = sorted((r for r in qbo if r.status != 429), key=lambda r: r.at)
    origin = admitted[0].at if admitted else None

    def seconds(record: RequestRecord) -> float:
        assert origin is not None
        return (record.at - origin).total_seconds()

    writes = [(seconds(r), write_items(r)) for r in admitted if write_items(r)]
    total = sum(items for _, items in writes)
    phase = writes[-1][0] - writes[0][0] if len(writes) > 1 else 0.0
    # The last request's items are sent at the end of the phase: counting them would
    # credit the phase with items it never had to pace.
    paced = total - writes[-1][1] if writes else 0
    per_second = paced / phase if phase > 0 else 0.0
    write_limit = min(limits.requests_per_window, MAX_BATCH_ITEMS * limits.batches_per_window)
    return Pacing(
        requests=len(qbo),
        reads=len(admitted) - len(writes),
        writes=len(writes),
        throttled=len(throttled),
        write_items=total,
        phase_seconds=phase,
        paced_items=paced,
        items_per_second=per_second,
        write_limit=write_limit,
        rate_fraction=per_second / (write_limit / window),
        max_write_items=most_in_any_window(writes, window),
        max_units=most_in_any_window([(seconds(r), r.batch_items or 1) for r in admitted], window),
        max_batches=most_in_any_window(
            [(seconds(r), 1) for r in admitted if r.batch_items], window
        ),
    )


def seconds_to_first_write(log: Sequence[RequestRecord]) -> float:
    """From the run's first request (to any service) to its first admitted QBO write."""
    writes = [r.at for r in log if r.service == "qbo" and r.status != 429 and write_items(r)]
    if not log or not writes:
        return 0.0
    return (min(writes) - min(r.at for r in log)).total_seconds()


def write_items(record: RequestRecord) -> int:
    """Write operations a QBO request carries: batch items with an `operation`, a single
    POST counts one, a query (GET, or a batch of queries) none."""
    if record.method != "POST":
        return 0
    body: Any = record.body
    if record.batch_items:
        items = body.get("BatchItemRequest") if isinstance(body, dict) else None
        return sum(1 for item in items or [] if isinstance(item, dict) and item.get("operation"))
    return 1


def most_in_any_window(events: Sequence[tuple[float, int]], window: float) -> int:
    """The most units any half-open span [t, t + window) holds (QBO's sliding window)."""
    ordered = sorted(events)
    best = total = first = 0
    for at, units in ordered:
        total += units
        while ordered[first][0] <= at - window:
            total -= ordered[first][1]
            first += 1
        best = max(best, total)
    return best


class _IndexedCompany:
    """The sandbox company with `invoices_by_doc` answered from one snapshot.

    `audit` asks once per quote, and `Company.invoices_by_doc` deep-copies every invoice
    for each question: quadratic, about 90 s for 1,000 quotes on 2 cores. The snapshot is
    taken after the runs, so the answers are the same.
    """

    def __init__(self, company: Any) -> None:
        self._company = company
        self._by_doc: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for invoice in company.invoices():
            self._by_doc[str(invoice.get("DocNumber"))].append(invoice)

    def invoices_by_doc(self, doc_number: str | int) -> list[dict[str, Any]]:
        return list(self._by_doc.get(str(doc_number), []))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._company, name)


def fast_audit(sandbox: Sandbox, settings: Settings) -> Audit:
    view = SimpleNamespace(practice=sandbox.practice, company=_IndexedCompany(sandbox.company))
    return audit(view, settings)


def row(label: str, value: object, note: str = "") -> None:
    line = f"  {label:<28}{value!s:>10}"
    print(f"{line}  ({note})" if note else line)


def format_counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{name} {value}" for name, value in counts.items() if value)


if __name__ == "__main__":
    sys.exit(main())
