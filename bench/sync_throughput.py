"""Benchmark: one full sync of 1,000 completed quotes against the sandbox, then a no-op run.

    .venv/bin/python bench/sync_throughput.py [--quotes 1000 --patients 400 --seed 1
                                               --window-seconds 5 --fourd-latency-ms 50
                                               --qbo-latency-ms 30 --compare-rss]

The sandbox (4D practice, QBO company, OAuth on loopback) is seeded with `--quotes`
completed quotes for `--patients` patients that QBO has never seen, and QBO's throttle is
time-scaled: `--requests-per-window` requests (batch items counted one by one) and
`--batches-per-window` batch POSTs per `--window-seconds`-second "minute", `--in-flight`
at once. fourdqbo gets the same limits (`sandbox.env`), so it paces itself to them. The
state store is the file backend in a temporary directory; the sandbox mints the QBO token.

Both runs go through `SyncEngine` in a child process of their own (spawned, so that its
peak RSS is the sync's alone: the sandbox stays in this process), each with fresh clients
and state store as cron would start them, on the sandbox's clock (`now=`) so that time can
move between them: the full run starts `SYNC_OVERLAP_SECONDS` + 2 minutes (simulated)
after the seed's last edit in 4D, the no-op run one cron interval later, and the no-op
run's window (watermark - overlap) then holds no quote: nothing changed in 4D.

Every figure comes from the sandbox's request log of this very run; docs/performance.md
defines them. Exit 0 when every target is met, 1 when one is missed.
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import os
import platform
import resource
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

from fourdqbo.config import Settings, load_settings

if TYPE_CHECKING:  # the sandbox is not imported by the child process that syncs
    from fourdqbo.sandbox import Sandbox
    from fourdqbo.sandbox.audit import Audit
    from fourdqbo.sandbox.server import QboLimits, RequestRecord

# The targets of the sync issue, and of issue 12 (a backfill at QBO's speed).
MAX_429 = 5
MIN_WRITE_RATE = 0.95
MAX_WALL_OVER_IDEAL = 1.15
FIRST_WRITE_CHUNKS = 1.5  # first write within this many (measured) chunk fetch times
MAX_RSS_RATIO = 1.5  # peak RSS of the large run over that of the 1,000-quote run
RSS_BASE_QUOTES, RSS_BASE_PATIENTS = 1000, 400
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
    throttle_causes: str  # the sandbox's reason for each: "requests_per_window 3, in_flight 1"
    write_items: int  # write operations in the admitted write requests
    phase_seconds: float  # first to last admitted write request
    paced_items: int  # write items of every write request but the last
    items_per_second: float  # paced_items / phase_seconds
    write_limit: int  # write items allowed per window: the request or batch limit
    write_fraction: float  # items_per_second / (write_limit / window): writes alone
    phase_units: int  # request units (reads and write items) of the phase, last request out
    units_per_second: float  # phase_units / phase_seconds
    rate_fraction: float  # units_per_second / (request limit / window): the target's figure
    max_write_items: int  # most write items in any span of one window
    max_units: int  # most request units (batch items counted) in any span of one window
    max_batches: int  # most batch POSTs in any span of one window


@dataclass(frozen=True)
class Check:
    name: str
    passed: bool
    detail: str


@dataclass(frozen=True)
class Measured:
    """One full run, measured: its report, the figures of issue 12, the pacing."""

    report: dict[str, Any]
    customers_created: int
    wall: float
    peak_rss_kb: int
    pacing: Pacing
    fourd_requests: int
    first_write: float  # seconds from the run's first request to its first write
    listing: float  # from the run's first request to its first quote fetch (the list call)
    fetch_span: float  # first to last 4D quote fetch
    chunk_fetch: float  # first to last fetch of the first chunk (not held back by writes)
    qbo_units: int  # admitted QBO request units, reads and writes (batch items count one)
    ideal: float  # max(4D fetch at its latency and concurrency, QBO units at the limit)


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
    parser.add_argument(
        "--fourd-latency-ms",
        type=float,
        default=0.0,
        help="4D's latency per request in real-world ms (0); the sandbox adds it scaled "
        "like the throttle window, i.e. times window-seconds / 60",
    )
    parser.add_argument(
        "--qbo-latency-ms",
        type=float,
        default=0.0,
        help="QBO's latency per request in real-world ms (0), scaled the same way",
    )
    parser.add_argument(
        "--chunk-size", type=int, default=None, help="SYNC_CHUNK_SIZE (the setting's default)"
    )
    parser.add_argument(
        "--compare-rss",
        action="store_true",
        help=f"first run {RSS_BASE_QUOTES} quotes / {RSS_BASE_PATIENTS} patients with the "
        f"same options, and check the peak RSS of this run against it (at most "
        f"{MAX_RSS_RATIO:g} times)",
    )
    args = parser.parse_args(argv)
    if min(args.quotes, args.patients, args.requests_per_window, args.batches_per_window) < 1:
        parser.error("counts and limits must be at least 1")
    if args.window_seconds <= 0 or args.in_flight < 1:
        parser.error("--window-seconds must be positive and --in-flight at least 1")
    if min(args.fourd_latency_ms, args.qbo_latency_ms) < 0:
        parser.error("latencies cannot be negative")
    if args.chunk_size is not None and args.chunk_size < 1:
        parser.error("--chunk-size must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    from fourdqbo.sandbox.server import QboLimits

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
        f"QBO limits  {limits.requests_per_window} requests (a batch item counts one) and "
        f"{limits.batches_per_window} batches per {limits.window_seconds:g}-second window, "
        f"{limits.in_flight} in flight"
    )
    scale = args.window_seconds / 60
    print(
        f"latency     4D {args.fourd_latency_ms:g} ms, QBO {args.qbo_latency_ms:g} ms "
        f"(real world), added as {args.fourd_latency_ms * scale:.2f} ms and "
        f"{args.qbo_latency_ms * scale:.2f} ms (times {args.window_seconds:g} / 60)"
    )
    baseline: Measured | None = None
    if args.compare_rss:
        print()
        print(f"== baseline for peak RSS: {RSS_BASE_QUOTES} quotes, {RSS_BASE_PATIENTS} patients")
        baseline, _ = bench_one(args, limits, RSS_BASE_QUOTES, RSS_BASE_PATIENTS)
        print()
        print(f"== {args.quotes} quotes, {args.patients} patients")
    measured, checks = bench_one(args, limits, args.quotes, args.patients)
    if baseline is not None:
        ratio = measured.peak_rss_kb / baseline.peak_rss_kb
        checks.append(
            Check(
                f"peak RSS at most {MAX_RSS_RATIO:g} x that of {RSS_BASE_QUOTES} quotes",
                ratio <= MAX_RSS_RATIO,
                f"{measured.peak_rss_kb / 1024:.0f} MB / {baseline.peak_rss_kb / 1024:.0f} MB"
                f" = {ratio:.2f}",
            )
        )
    print()
    for check in checks:
        print(f"{'PASS' if check.passed else 'FAIL'}  {check.name}: {check.detail}")
    return 0 if all(check.passed for check in checks) else 1


def bench_one(
    args: argparse.Namespace, limits: QboLimits, quotes: int, patients: int
) -> tuple[Measured, list[Check]]:
    from fourdqbo.sandbox import Sandbox

    print(
        f"sandbox     seed {args.seed}: {quotes} completed quotes of {patients} "
        "new patients, none of them in QBO yet"
    )
    sandbox = Sandbox(
        seed=args.seed,
        quotes=quotes,
        completed=quotes,
        patients=patients,
        preexisting=False,
        limits=limits,
    )
    scale = args.window_seconds / 60
    with sandbox, tempfile.TemporaryDirectory(prefix="fourdqbo-bench-") as scratch:
        env = bench_env(sandbox, Path(scratch))
        if args.chunk_size is not None:
            env["SYNC_CHUNK_SIZE"] = str(args.chunk_size)
        sandbox.knobs.fourd.latency_ms = args.fourd_latency_ms * scale
        sandbox.knobs.qbo.latency_ms = args.qbo_latency_ms * scale
        return run_benchmark(sandbox, env, limits)


def bench_env(sandbox: Sandbox, scratch: Path) -> dict[str, str]:
    env = sandbox.env(scratch / "data")
    env.update(STATE_BACKEND="file", LOGS_DIR=str(scratch / "logs"))
    return env


def bench_settings(env: dict[str, str]) -> Settings:
    # Only what the sandbox says: no .env from the working directory, no shell exports.
    return load_settings(env, dotenv_path=None)


def sync_in_child(env: dict[str, str], clock_offset: float) -> dict[str, Any]:
    """One `sync run` in a spawned child process (nothing of this process's memory in it)."""
    context = multiprocessing.get_context("spawn")
    receive, send = context.Pipe(duplex=False)
    child = context.Process(target=_child_sync, args=(env, clock_offset, send), daemon=True)
    before = resource.getrusage(resource.RUSAGE_SELF)
    child.start()
    send.close()
    try:
        result: dict[str, Any] = receive.recv()
    except EOFError:
        result = {"error": f"the sync process died (exit {child.exitcode})"}
    after = resource.getrusage(resource.RUSAGE_SELF)
    child.join()
    if "error" in result:
        raise SystemExit(f"sync run failed: {result['error']}")
    # While the child syncs, this process does nothing but serve it: its CPU is the
    # sandbox's (4D, QBO and OAuth in one interpreter).
    result["sandbox_cpu"] = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return result


def _child_sync(env: dict[str, str], clock_offset: float, send: Any) -> None:
    """The child: fresh clients and state store, as `fourdqbo sync run` opens them."""
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(name)s: %(message)s")
    pipeline = _Kept()
    kept = logging.getLogger("fourdqbo.sync.pipeline")
    kept.setLevel(logging.INFO)
    kept.addHandler(pipeline)
    kept.propagate = False
    try:
        from fourdqbo.cli.sync import connect, freeze_start_up
        from fourdqbo.sync.engine import RunOptions, SyncEngine
        from fourdqbo.sync.pipeline import chunked

        offset = timedelta(seconds=clock_offset)
        settings = bench_settings(env)
        size = settings.sync_chunk_size
        started = time.perf_counter()
        with connect(settings) as connections:
            freeze_start_up()  # as `fourdqbo sync run` does
            engine = SyncEngine(
                settings,
                connections.fourd,
                connections.qbo,
                connections.state,
                now=lambda: datetime.now(UTC) + offset,
            )
            report = engine.run(RunOptions())
        wall = time.perf_counter() - started
        usage = resource.getrusage(resource.RUSAGE_SELF)
        send.send(
            {
                "report": report.as_dict(),
                "wall": wall,
                "peak_rss_kb": peak_rss_kb(usage),
                "cpu": usage.ru_utime + usage.ru_stime,
                "chunk_size": settings.sync_chunk_size,
                "first_chunk": len(next(chunked(range(size), size))),
                "fourd_in_flight": settings.fourd_max_in_flight,
                "pipeline": pipeline.messages[-1] if pipeline.messages else "",
            }
        )
    except BaseException as exc:  # the parent says what went wrong
        send.send({"error": f"{type(exc).__name__}: {exc}"})
    finally:
        send.close()


def peak_rss_kb(usage: resource.struct_rusage) -> int:
    """This process's peak RSS in KiB: Linux's VmHWM, else `ru_maxrss`.

    `ru_maxrss` survives exec: a spawned child starts with the high-water mark of the
    process it was forked from (the benchmark, holding the sandbox: 62 MB of a 10,000-quote
    run's before the sync began). VmHWM belongs to the child's own memory map.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return int(usage.ru_maxrss)


class _Kept(logging.Handler):
    """Keeps the pipeline's INFO line (who waited for whom) for the report."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def run_benchmark(
    sandbox: Sandbox, env: dict[str, str], limits: QboLimits
) -> tuple[Measured, list[Check]]:
    settings = bench_settings(env)
    # The seed's last edit is at least a minute before the seed. Starting the full run
    # overlap + 2 minutes later keeps every seeded edit out of the next run's window.
    sandbox.clock.advance(settings.sync_overlap_seconds + 120)
    sandbox.clear_requests()
    result = sync_in_child(env, clock_offset(sandbox))
    report = result["report"]
    log = sandbox.requests
    measured = measure(sandbox, result, log, limits)
    pacing = measured.pacing
    started = time.perf_counter()
    checked = fast_audit(sandbox, settings)
    audit_seconds = time.perf_counter() - started
    counts = report["counts"]
    window = limits.window_seconds

    print()
    print(f"full run (chunks of {result['chunk_size']}, the first of {result['first_chunk']})")
    row("wall time", f"{measured.wall:.1f} s", f"{measured.wall / window:.1f} windows")
    row("quotes", format_counts(counts))
    row("customers created", measured.customers_created)
    row("4D HTTP requests", measured.fourd_requests)
    row(
        "QBO HTTP requests",
        pacing.requests,
        f"{pacing.reads} reads, {pacing.writes} writes, {pacing.throttled} answered 429",
    )
    row("429s received", pacing.throttled, pacing.throttle_causes)
    row("write items", pacing.write_items, f"in {pacing.writes} write requests")
    row("before the first write", f"{measured.first_write:.2f} s", "from the run's first request")
    row("  of which the 4D list", f"{measured.listing:.2f} s", "to the first quote fetch")
    row("4D fetch span", f"{measured.fetch_span:.2f} s", "first to last quote fetch")
    row("one chunk's fetch", f"{measured.chunk_fetch:.2f} s", "at the first chunk's pace")
    phase = pacing.phase_seconds
    row("writing phase", f"{phase:.2f} s", f"{phase / window:.2f} windows")
    row(
        "write rate",
        f"{pacing.items_per_second:.1f}/s",
        f"limit {pacing.write_limit} per {window:g} s = {pacing.write_limit / window:.1f}/s",
    )
    row("write rate / limit", f"{pacing.write_fraction:.3f}", "write items alone")
    row(
        "units while writing",
        pacing.phase_units,
        f"reads and write items, {pacing.units_per_second:.1f}/s",
    )
    short = "the phase is under two windows: says little about pacing" if phase < 2 * window else ""
    row("unit rate / limit", f"{pacing.rate_fraction:.3f}", short)
    row("max write items in a window", pacing.max_write_items, f"limit {pacing.write_limit}")
    row("max QBO units in a window", pacing.max_units, f"limit {limits.requests_per_window}")
    row("max batches in a window", pacing.max_batches, f"limit {limits.batches_per_window}")
    row("QBO request units", measured.qbo_units, "reads and write items")
    row("ideal", f"{measured.ideal:.2f} s", "longer of 4D fetch and QBO units at the limit")
    row("wall / ideal", f"{measured.wall / measured.ideal:.3f}")
    row("peak RSS of the sync", f"{measured.peak_rss_kb / 1024:.0f} MB", "its own process")
    row("CPU of the sync", f"{result['cpu']:.1f} s", "user + system, its own process")
    row("CPU of the sandbox", f"{result['sandbox_cpu']:.1f} s", "4D and QBO, one interpreter")
    cores = os.cpu_count() or 1
    busy = (result["cpu"] + result["sandbox_cpu"]) / (cores * measured.wall)
    row(
        "machine busy",
        f"{busy:.2f}",
        f"both processes' CPU / ({cores} cores x wall): near 1, the machine is the pace",
    )
    if result["pipeline"]:
        print(f"  {result['pipeline']}")
    row("audit", checked.summary(), f"{audit_seconds:.1f} s")

    # The next cron run: nothing changed in 4D since the full run. Its CDC read holds the
    # full run's own writes (recognised by SyncToken, but read): 1,000 invoices fill one
    # CDC answer, which is then paged. The run after it is the steady no-op.
    after = noop_run(sandbox, env, "no-op run, the next cron run after the full run")
    steady = noop_run(sandbox, env, "no-op run, one more cron run later (the steady state)")

    completed = len(sandbox.practice.completed_numbers())
    # The window must be listed before anything else (one 4D request, as long as the
    # window is big); from then on the first write waits for one chunk only.
    first_write_limit = FIRST_WRITE_CHUNKS * measured.chunk_fetch
    after_listing = measured.first_write - measured.listing
    checks = [
        Check(
            "every quote synced",
            counts.get("created") == completed and counts.get("failed") == 0,
            f"{counts.get('created')} of {completed} created, {counts.get('failed')} failed",
        ),
        Check(
            "converged (0 duplicates, 0 mismatches)",
            checked.converged and not checked.duplicates and not checked.mismatched,
            checked.summary(),
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
            f"write rate at least {MIN_WRITE_RATE} of the limit (request units while writing)",
            pacing.rate_fraction >= MIN_WRITE_RATE,
            f"{pacing.rate_fraction:.3f} (write items alone {pacing.write_fraction:.3f})",
        ),
        Check(
            f"wall at most {MAX_WALL_OVER_IDEAL} x ideal",
            measured.wall <= MAX_WALL_OVER_IDEAL * measured.ideal,
            f"{measured.wall:.2f} s / {measured.ideal:.2f} s = "
            f"{measured.wall / measured.ideal:.3f}",
        ),
        Check(
            f"first write within one chunk's fetch after the 4D list (x {FIRST_WRITE_CHUNKS:g}"
            " for the chunk's look-ups)",
            after_listing <= first_write_limit,
            f"{after_listing:.2f} s after the list, limit {first_write_limit:.2f} s",
        ),
        Check(
            "no-op run after the full run: one 4D list, nothing to QBO but the CDC read",
            after.fourd == 1 and after.qbo == after.cdc,
            f"{after.total} requests (4D {after.fourd}, QBO {after.qbo}: {after.cdc} CDC pages"
            f" for the full run's {pacing.write_items - measured.customers_created} invoices)",
        ),
        Check(
            f"steady no-op run: at most {MAX_NOOP_REQUESTS} requests, the 4D list and the CDC read",
            steady.total <= MAX_NOOP_REQUESTS and steady.fourd == 1 and steady.qbo == steady.cdc,
            f"{steady.total} requests (4D {steady.fourd}, QBO {steady.qbo}, of them CDC"
            f" {steady.cdc})",
        ),
    ]
    return measured, checks


@dataclass(frozen=True)
class Noop:
    """One no-op run's requests."""

    total: int
    fourd: int
    qbo: int
    cdc: int  # of the QBO requests, CDC reads (pages)


def noop_run(sandbox: Sandbox, env: dict[str, str], title: str) -> Noop:
    """One cron interval later, a run in a child process of its own; prints its figures."""
    sandbox.clock.advance(CRON_INTERVAL_SECONDS)
    sandbox.clear_requests()
    result = sync_in_child(env, clock_offset(sandbox))
    log = sandbox.requests
    qbo = [r for r in log if r.service == "qbo"]
    noop = Noop(
        total=len(log),
        fourd=sum(1 for r in log if r.service == "fourd"),
        qbo=len(qbo),
        cdc=sum(1 for r in qbo if r.method == "GET" and r.path.rsplit("/", 1)[-1] == "cdc"),
    )
    print()
    print(f"{title}, {CRON_INTERVAL_SECONDS} s (simulated) later")
    row("wall time", f"{result['wall']:.2f} s")
    row("quotes", format_counts(result["report"]["counts"]) or "none in the window")
    row("HTTP requests", noop.total, f"4D {noop.fourd}, QBO {noop.qbo} (CDC {noop.cdc})")
    row("watermark advanced", str(result["report"]["watermark_advanced"]).lower())
    return noop


def clock_offset(sandbox: Sandbox) -> float:
    """How far the sandbox's clock is ahead of the wall clock (the child runs on it)."""
    return (sandbox.clock.now() - datetime.now(UTC)).total_seconds()


def measure(
    sandbox: Sandbox, result: dict[str, Any], log: Sequence[RequestRecord], limits: QboLimits
) -> Measured:
    """Issue 12's figures from the request log: first write, fetch span, ideal."""
    qbo = [r for r in log if r.service == "qbo"]
    pacing = measure_pacing(qbo, limits)
    fetches = sorted(r.at for r in log if r.service == "fourd" and r.path == "quotes")
    fetch_span = (fetches[-1] - fetches[0]).total_seconds() if len(fetches) > 1 else 0.0
    # One chunk's fetch at the pace of the first chunk's fetches: later chunks are read
    # only as fast as writes make room. The first chunk is smaller (`pipeline.chunked`):
    # its span is scaled to a chunk of SYNC_CHUNK_SIZE.
    first_chunk = fetches[: result["first_chunk"]]
    chunk_fetch = 0.0
    if len(first_chunk) > 1:
        span = (first_chunk[-1] - first_chunk[0]).total_seconds()
        chunk_fetch = span * (result["chunk_size"] - 1) / (len(first_chunk) - 1)
    units = sum(r.batch_items or 1 for r in qbo if r.status != 429)
    fourd_latency = sandbox.knobs.fourd.latency_ms / 1000
    ideal_fetch = len(fetches) * fourd_latency / result["fourd_in_flight"]
    ideal_qbo = units / limits.requests_per_window * limits.window_seconds
    return Measured(
        report=result["report"],
        customers_created=result["report"]["customers"]["created"],
        wall=result["wall"],
        peak_rss_kb=result["peak_rss_kb"],
        pacing=pacing,
        fourd_requests=sum(1 for r in log if r.service == "fourd"),
        first_write=seconds_to_first_write(log),
        listing=(fetches[0] - min(r.at for r in log)).total_seconds() if fetches else 0.0,
        fetch_span=fetch_span,
        chunk_fetch=chunk_fetch,
        qbo_units=units,
        ideal=max(ideal_fetch, ideal_qbo),
    )


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
    # Reads of later chunks share the request limit with the writes while the run writes:
    # every unit the phase spent, from its first write request up to (not including) its
    # last, is what the limiter paced.
    units = [(seconds(r), r.batch_items or 1) for r in admitted]
    start, end = (writes[0][0], writes[-1][0]) if writes else (0.0, 0.0)
    phase_units = sum(n for at, n in units if start <= at < end)
    units_per_second = phase_units / phase if phase > 0 else 0.0
    return Pacing(
        requests=len(qbo),
        reads=len(admitted) - len(writes),
        writes=len(writes),
        throttled=len(throttled),
        throttle_causes=", ".join(
            f"{cause} {n}" for cause, n in sorted(Counter(r.fault for r in throttled).items())
        ),
        write_items=total,
        phase_seconds=phase,
        paced_items=paced,
        items_per_second=per_second,
        write_limit=write_limit,
        write_fraction=per_second / (write_limit / window),
        phase_units=phase_units,
        units_per_second=units_per_second,
        rate_fraction=units_per_second / (limits.requests_per_window / window),
        max_write_items=most_in_any_window(writes, window),
        max_units=most_in_any_window(units, window),
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
    from fourdqbo.sandbox.audit import audit

    view = SimpleNamespace(practice=sandbox.practice, company=_IndexedCompany(sandbox.company))
    return audit(view, settings)


def row(label: str, value: object, note: str = "") -> None:
    line = f"  {label:<28}{value!s:>10}"
    print(f"{line}  ({note})" if note else line)


def format_counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{name} {value}" for name, value in counts.items() if value)


if __name__ == "__main__":
    sys.exit(main())
