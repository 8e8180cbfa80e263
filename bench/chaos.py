"""Crash, fault and concurrency suite: does the sync keep the books right when things break?

Runs `fourdqbo sync run` the way cron does (a subprocess) against the sandbox (4D + QBO +
OAuth on loopback) with real Redis, breaks it on purpose, and checks that the books
converge afterwards. Every figure in docs/reliability.md comes from this script:

    .venv/bin/python bench/chaos.py                 # everything (several minutes)
    .venv/bin/python bench/chaos.py --only crash    # one part: crash, faults, people,
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
import contextlib
import json
import math
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # `python bench/chaos.py` from anywhere

import redis  # noqa: E402

from fourdqbo.config import Settings, load_settings  # noqa: E402
from fourdqbo.sandbox import Sandbox  # noqa: E402
from fourdqbo.sandbox.audit import Audit, HandChange, audit  # noqa: E402
from fourdqbo.sandbox.server import FAULT_KINDS, QboLimits, RequestRecord  # noqa: E402
from fourdqbo.state.base import LockEvent  # noqa: E402
from fourdqbo.state.redis_store import RedisStateStore  # noqa: E402

LOCK_TTL = 3.0  # SYNC_LOCK_TTL_SECONDS of every run here: short, so expiry is quick to see
HTTP_TIMEOUT = 1.0  # HTTP_TIMEOUT_SECONDS; the sandbox holds a "timeout" answer longer
TIMEOUT_DELAY = 1.5
# QBO's real throttle with its minute scaled down to 3 s: a 300-quote sync takes seconds.
LIMITS = QboLimits(requests_per_window=500, batches_per_window=40, in_flight=10, window_seconds=3)
KEEP_ROOT: Path | None = None  # --keep: scenario directories are kept here
LOCK_FREE_SLACK = 0.3  # polling granularity allowed on top of the TTL
LOSER_DEADLINE = 1.0  # seconds within which a run that finds the lock held must exit 75
EXIT_LOCK_HELD = 75
PHASES = ("fetch", "customers", "invoices")
# SYNC_CHUNK_SIZE of the crash runs: several chunks, so kill points also land while a
# later chunk is written and the next one read (the default 250 would make 300 quotes
# two chunks, nearly all of the writes in the first).
CRASH_CHUNK_SIZE = 60
LOST_ANSWERS = ("commit_then_drop", "timeout", "drop", "commit_then_drop")
ENV_PREFIXES = ("FOURD_", "4D_", "QBO_", "SYNC_", "STATE_", "REDIS_URL", "HTTP_")
ENV_NAMES = ("LOGS_DIR", "DATA_DIR", "HEALTHCHECK_URL", "CUSTOMER_NAME_TEMPLATE")

# A `fourdqbo` process that imports everything first, says it is ready (a file) and waits
# for a line on stdin: runs "started together" then really start together, and the time
# to exit 75 measures the lock, not the interpreter's start-up.
LAUNCHER = """
import sys
from pathlib import Path
from fourdqbo.cli.app import main
import fourdqbo.cli.sync, fourdqbo.sync.engine, fourdqbo.emr.client, fourdqbo.qbo.client
import fourdqbo.qbo.tokens, fourdqbo.state.redis_store, fourdqbo.http
Path(sys.argv[1]).touch()
sys.stdin.readline()
sys.argv = ["fourdqbo", *sys.argv[2:]]
main()
"""


def say(text: str) -> None:
    print(text, flush=True)


# -- the world one scenario runs in -----------------------------------------------------


@dataclass
class RunResult:
    code: int
    report: dict[str, Any]
    stderr: str
    seconds: float

    @property
    def failed(self) -> int:
        return int(self.report.get("counts", {}).get("failed", 0)) if self.report else 0

    @property
    def finished(self) -> bool:
        """Exit 0/1 with nothing failed: the run got through and left nothing queued."""
        return self.code in (0, 1) and bool(self.report) and self.failed == 0


class World:
    """One sandbox, one Redis namespace, one data directory: what a scenario breaks."""

    def __init__(
        self,
        *,
        seed: int,
        quotes: int,
        redis_url: str,
        prefix: str | None = None,
        directory: Path | None = None,
        strict: bool = True,
        lock_ttl: float = LOCK_TTL,
        chunk_size: int | None = None,
    ) -> None:
        self.sandbox = Sandbox(seed=seed, quotes=quotes, limits=LIMITS, timeout_delay=TIMEOUT_DELAY)
        if strict:
            # No duplicate-DocNumber warning, requestid ignored: the engine alone must
            # prevent duplicates.
            self.sandbox.company.settings.duplicate_doc_number_check = False
            self.sandbox.company.settings.honour_requestid = False
        self._owned_directory = None
        if directory is None and KEEP_ROOT is not None:
            directory = Path(tempfile.mkdtemp(prefix="world-", dir=KEEP_ROOT))
        elif directory is None:
            self._owned_directory = tempfile.TemporaryDirectory(prefix="fourdqbo-chaos-")
            directory = Path(self._owned_directory.name)
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.redis_url = redis_url
        self.prefix = prefix or f"fourdqbo-chaos-{uuid.uuid4().hex[:12]}"
        self.lock_ttl = lock_ttl
        self.sandbox.start()
        self.env = self.sandbox.env(self.directory / "data")
        self.env.update(
            STATE_BACKEND="redis",
            REDIS_URL=redis_url,
            STATE_PREFIX=self.prefix,
            LOGS_DIR=str(self.directory / "logs"),
            HTTP_TIMEOUT_SECONDS=_number(HTTP_TIMEOUT),
            SYNC_LOCK_TTL_SECONDS=_number(lock_ttl),
        )
        if chunk_size is not None:
            self.env["SYNC_CHUNK_SIZE"] = str(chunk_size)
        self.settings: Settings = load_settings(self.env, dotenv_path=None)
        self.store = RedisStateStore(redis_url, self.prefix, self.sandbox.realm_id)

    # -- lifecycle

    def close(self) -> None:
        self.store.close()
        self.sandbox.stop()
        with contextlib.suppress(redis.exceptions.RedisError):
            delete_keys_under(self.redis_url, self.prefix)
        if self._owned_directory is not None:
            self._owned_directory.cleanup()

    def __enter__(self) -> World:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- knobs

    def latency(self, fourd_ms: float = 0.0, qbo_ms: float = 0.0) -> None:
        self.sandbox.knobs.fourd.latency_ms = fourd_ms
        self.sandbox.knobs.qbo.latency_ms = qbo_ms

    # -- running fourdqbo

    def process_env(self, **overrides: str) -> dict[str, str]:
        base = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(ENV_PREFIXES) and k not in ENV_NAMES
        }
        return {**base, **self.env, **overrides}

    def spawn(self, *args: str, **overrides: str) -> subprocess.Popen[str]:
        """`fourdqbo sync run ARGS` as cron starts it (cwd without a .env)."""
        return subprocess.Popen(
            [sys.executable, "-m", "fourdqbo", "sync", "run", *args],
            env=self.process_env(**overrides),
            cwd=self.directory,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def fourdqbo(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """Any other fourdqbo command, in another process."""
        return subprocess.run(
            [sys.executable, "-m", "fourdqbo", *args],
            env=self.process_env(),
            cwd=self.directory,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def run(self, *args: str, timeout: float = 180, **overrides: str) -> RunResult:
        started = time.monotonic()
        process = self.spawn("--json", *args, **overrides)
        return finish(process, started, timeout)

    def converge(self, max_runs: int = 4) -> list[RunResult]:
        """Clean runs until one gets through with nothing failed (or max_runs)."""
        runs: list[RunResult] = []
        for _ in range(max_runs):
            runs.append(self.run())
            if runs[-1].finished:
                break
        return runs

    def audit(self) -> Audit:
        return audit(self.sandbox, self.settings)

    # -- looking at state

    def wait_lock_free(self, timeout: float) -> float | None:
        """Seconds until nobody holds the lock, None if still held after `timeout`."""
        started = time.monotonic()
        while True:
            if self.store.lock_holder() is None:
                return time.monotonic() - started
            if time.monotonic() - started > timeout:
                return None
            time.sleep(0.01)

    def lock_pttl_ms(self) -> int:
        client = self.store._redis  # the store's own connection: same database
        return int(client.pttl(self.store.key("lock")))


def finish(process: subprocess.Popen[str], started: float, timeout: float) -> RunResult:
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        stdout, stderr = process.communicate()
        stderr += f"\n(chaos: killed after {timeout:g} s)"
    report: dict[str, Any] = {}
    if stdout.strip():
        with contextlib.suppress(ValueError):
            report = json.loads(stdout)
    return RunResult(process.returncode, report, stderr, time.monotonic() - started)


def delete_keys_under(url: str, prefix: str) -> None:
    client = redis.Redis.from_url(url, socket_timeout=3)
    try:
        keys = list(client.scan_iter(match=f"{prefix}:*", count=500))
        for start in range(0, len(keys), 500):
            client.delete(*keys[start : start + 500])
    finally:
        client.close()


@contextlib.contextmanager
def suite_redis() -> Iterator[str]:
    """A developer's Redis on 127.0.0.1:6379 (database 15, unique prefixes), else a
    throwaway redis-server for the whole suite."""
    from tests.fixtures.redis import DEVELOPER_REDIS, TEST_DATABASE, RedisServer, redis_answers

    host, port = DEVELOPER_REDIS
    if redis_answers(host, port):
        yield f"redis://{host}:{port}/{TEST_DATABASE}"
        return
    with RedisServer() as server:
        yield server.url


def private_redis() -> Any:
    """A redis-server of our own that a scenario may stop and start again."""
    from tests.fixtures.redis import RedisServer

    return RedisServer()


# -- watching the sandbox ---------------------------------------------------------------


def is_quote_fetch(record: RequestRecord) -> bool:
    return record.service == "fourd" and record.path == "quotes"


def batch_entities(record: RequestRecord) -> set[tuple[str, str]]:
    """(operation, entity) pairs of a QBO batch write."""
    if record.service != "qbo" or record.method != "POST" or not record.path.endswith("batch"):
        return set()
    body = record.body if isinstance(record.body, dict) else {}
    pairs = set()
    for item in body.get("BatchItemRequest") or []:
        for key in item:
            if key not in ("bId", "operation", "Query"):
                pairs.add((str(item.get("operation")), key))
    return pairs


def is_customer_batch(record: RequestRecord) -> bool:
    return ("create", "Customer") in batch_entities(record)


def is_invoice_batch(record: RequestRecord) -> bool:
    return any(entity == "Invoice" for _, entity in batch_entities(record))


def is_qbo_write(record: RequestRecord) -> bool:
    return record.service == "qbo" and record.is_write


PHASE_MATCH: dict[str, Callable[[RequestRecord], bool]] = {
    "fetch": is_quote_fetch,
    "customers": is_customer_batch,
    "invoices": is_invoice_batch,
    "updates": is_invoice_batch,  # of a run after changes in 4D (updates, deletes, creates)
}


def wait_for_requests(
    sandbox: Sandbox,
    match: Callable[[RequestRecord], bool],
    count: int,
    process: subprocess.Popen[str] | None = None,
    timeout: float = 120,
    start: int = 0,
) -> bool:
    """Block until the sandbox has logged `count` matching requests (from index `start`);
    False if the process ended or the time ran out first."""
    seen = 0
    index = start
    deadline = time.monotonic() + timeout
    while True:
        records = sandbox.requests
        for record in records[index:]:
            if match(record):
                seen += 1
                if seen >= count:
                    return True
        index = len(records)
        if (process is not None and process.poll() is not None) or time.monotonic() > deadline:
            return False
        time.sleep(0.003)


def minor_of(record: RequestRecord) -> str | None:
    values = record.query.get("minorversion") or [None]
    return values[0]


# -- the lock history -------------------------------------------------------------------


def lock_history_problems(events: Sequence[LockEvent]) -> list[str]:
    """Replay the lock's history: never two owners, an `expired` takeover only after the
    holder's TTL, a release only by the holder."""
    problems: list[str] = []
    holder: LockEvent | None = None
    for event in events:
        short = event.token[:8]
        if event.event == "acquired":
            if holder is not None:
                problems.append(f"{short} acquired while {holder.token[:8]} held the lock")
            holder = event
        elif event.event in ("released", "broken"):
            if holder is None or holder.token != event.token:
                problems.append(f"{short} {event.event} a lock it did not hold")
            holder = None
        elif event.event == "expired":
            if holder is not None and holder.token != event.token:
                problems.append(f"{short} expired while {holder.token[:8]} held the lock")
            elif holder is not None:
                held = (event.at - holder.at).total_seconds()
                ttl = (holder.ttl_ms or 0) / 1000
                if held < ttl:
                    problems.append(f"{short} taken over after {held:.2f} s, before its TTL")
            holder = None
        elif event.event == "lost" and holder is not None and holder.token == event.token:
            holder = None  # the key vanished under its owner (Redis restarted empty)
    return problems


# -- crash consistency ------------------------------------------------------------------


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


# -- faults -----------------------------------------------------------------------------


@dataclass
class FaultResult:
    seed: int
    runs: list[int] = field(default_factory=list)
    rounds: int = 0
    runs_per_round: list[int] = field(default_factory=list)
    changes: Counter[str] = field(default_factory=Counter)
    faults: Counter[str] = field(default_factory=Counter)
    requests: int = 0
    audit: Audit | None = None
    problems: list[str] = field(default_factory=list)


def change_quotes(
    sandbox: Sandbox, rng: random.Random, scale: int = 1, exclude: Collection[str] = ()
) -> Counter[str]:
    """What happens in 4D between two runs: edits (updates), completed quotes re-opened
    (deletes), open quotes completed and new completed quotes (creates, new customers).
    Quotes in `exclude` (those a person changed in QBO) are left alone."""
    practice = sandbox.practice
    keep = {sandbox.facts.conflict_quote, *exclude}  # the seed's paid invoice: a conflict
    completed = sorted(set(practice.completed_numbers()) - keep)
    open_quotes = sorted(
        q.number for q in practice.quotes() if q.status_id in (0, 1) and q.number not in keep
    )
    chosen = rng.sample(completed, min(23 * scale, len(completed) // 2))
    cut = len(chosen) * 15 // 23
    edits, reopen = chosen[:cut], chosen[cut:]
    done: Counter[str] = Counter()
    for number in edits:
        practice.edit_quote(number)
        done["edited"] += 1
    for number in reopen:
        practice.set_status(number, 1)
        done["re-opened"] += 1
    for number in rng.sample(open_quotes, min(10 * scale, len(open_quotes))):
        practice.set_status(number, 4)
        done["completed"] += 1
    for _ in range(5 * scale):
        practice.add_quote(status_id=4)
        done["new"] += 1
    return done


def faults_once(
    *,
    redis_url: str,
    seed: int,
    quotes: int,
    rate: float = 0.10,
    rounds: int = 2,
    max_runs: int = 8,
    **world: Any,
) -> FaultResult:
    """Mixed faults on both services: the first sync, then `rounds` rounds of changes in 4D
    (edits, re-opened, completed and new quotes); after each, runs until one gets through
    with nothing failed, and the audit.

    A sync makes a few hundred 4D requests but only a dozen or two QBO requests (batches
    of 30), so 10% alone may spare QBO's writes: the first QBO writes of each round also
    meet the faults that lose an answer (committed then dropped, timed out, dropped).
    """
    result = FaultResult(seed)
    rng = random.Random(seed)
    with World(seed=seed, quotes=quotes, redis_url=redis_url, **world) as w:
        for service in ("fourd", "qbo"):
            knobs = w.sandbox.knobs.of(service)
            knobs.fault_rate = rate
            knobs.fault_weights = {kind: 1.0 for kind in FAULT_KINDS}
            knobs.retry_after_share = 0.5  # 429 with and without Retry-After on both
        for round_number in range(rounds + 1):
            if round_number:
                result.changes.update(change_quotes(w.sandbox, rng))
            w.sandbox.knobs.qbo.scripted.clear()
            for kind in LOST_ANSWERS:
                w.sandbox.inject("qbo", kind, writes_only=True)
            attempt = 0
            while attempt < max_runs:
                attempt += 1
                run = w.run()
                result.runs.append(run.code)
                if run.finished:
                    break
                if run.code not in (0, 1, 3):
                    result.problems.append(f"run exit {run.code}: {run.stderr.strip()[-300:]}")
            else:
                result.problems.append(f"no run got through in {max_runs}: exits {result.runs}")
            result.rounds += 1
            result.runs_per_round.append(attempt)
            check = w.audit()
            if not check.converged:
                result.problems.append(f"round {round_number}: not converged: {check.summary()}")
            result.audit = check if result.audit is None else _merge(result.audit, check)
        records = w.sandbox.requests
        result.requests = sum(1 for r in records if r.service in ("fourd", "qbo"))
        for record in records:
            if record.fault in FAULT_KINDS:
                result.faults[f"{record.service}:{record.fault}"] += 1
        result.problems += lock_history_problems(w.store.lock_history())
    return result


def _merge(first: Audit, second: Audit) -> Audit:
    """Every finding of two audits (a quote found twice counts once)."""
    merged = Audit()
    for name in ("duplicates", "missing", "mismatched", "stray", "duplicate_customers", "paid"):
        setattr(merged, name, sorted(set(getattr(first, name)) | set(getattr(second, name))))
    return merged


def faults_suite(
    *, redis_url: str, seeds: Sequence[int], quotes: int, strict: bool = True
) -> list[FaultResult]:
    say(f"faults: 10% mixed faults on 4D and QBO, {len(seeds)} seeds, {quotes} quotes each")
    results = []
    for seed in seeds:
        result = faults_once(redis_url=redis_url, seed=seed, quotes=quotes, strict=strict)
        results.append(result)
        audit_text = result.audit.summary() if result.audit else "no audit"
        changes = ", ".join(f"{n} {what}" for what, n in result.changes.items())
        say(
            f"  seed {seed}: first sync + {result.rounds - 1} rounds of changes ({changes}); "
            f"{sum(result.faults.values())} faults injected in {result.requests} requests; "
            f"runs exit {result.runs}; {audit_text}"
            + (f"  PROBLEMS: {result.problems}" if result.problems else "")
        )
    return results


def faults_figures(results: Sequence[FaultResult]) -> str:
    total: Counter[str] = Counter()
    for result in results:
        total.update(result.faults)
    by_kind: Counter[str] = Counter()
    for key, n in total.items():
        by_kind[key.split(":", 1)[1]] += n
    by_service: Counter[str] = Counter()
    for key, n in total.items():
        by_service[key.split(":", 1)[0]] += n
    audits = [r.audit for r in results if r.audit is not None]
    runs = [n for r in results for n in r.runs_per_round]
    requests = sum(r.requests for r in results)
    scripted = len(LOST_ANSWERS) * sum(r.rounds for r in results)
    kinds = ", ".join(f"{k} {by_kind[k]}" for k in FAULT_KINDS)
    return (
        f"{len(results)} seeds, {sum(total.values())} faults in {requests} requests "
        f"(4D {by_service['fourd']}, QBO {by_service['qbo']} of which up to {scripted} scripted on "
        f"the first QBO writes of each round; {kinds}), "
        "runs to converge per round "
        f"{min(runs, default=0)}-{max(runs, default=0)}, "
        f"{sum(len(a.duplicates) for a in audits)} duplicates, "
        f"{sum(len(a.mismatched) for a in audits)} mismatches, "
        f"{sum(len(a.missing) for a in audits)} missing, "
        f"{sum(len(a.stray) for a in audits)} stray, "
        f"{sum(len(a.duplicate_customers) for a in audits)} duplicate customers"
    )


# -- people in QBO: a bookkeeper works in the books between runs -----------------------

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
        for service in ("fourd", "qbo"):
            knobs = w.sandbox.knobs.of(service)
            knobs.fault_rate = rate
            knobs.fault_weights = {kind: 1.0 for kind in FAULT_KINDS}
            knobs.retry_after_share = 0.5
        for round_number in range(rounds + 1):
            if round_number:
                w.sandbox.clock.advance(60)
                hand = bookkeeper(w.sandbox, rng, per_round, expected)
                expected.update(hand)
                result.hand.update(change.kind for change in hand.values())
                changes = change_quotes(w.sandbox, rng, exclude=set(expected))
                result.changes.update(changes)
                w.sandbox.clock.advance(60)
            w.sandbox.knobs.qbo.scripted.clear()
            for kind in LOST_ANSWERS:
                w.sandbox.inject("qbo", kind, writes_only=True)
            if round_number and kill:
                _kill_among_writes(w, result, rng)
            attempt = 0
            while attempt < max_runs:
                attempt += 1
                run = w.run()
                result.runs.append(run.code)
                if run.finished:
                    break
                if run.code not in (0, 1, 3):
                    result.problems.append(f"run exit {run.code}: {run.stderr.strip()[-300:]}")
            else:
                result.problems.append(f"no run got through in {max_runs}: exits {result.runs}")
            result.runs_per_round.append(attempt)
        items = {i.quote: str(i.kind) for i in w.store.attention_items()}
        result.open_items = Counter(items.values())
        result.audit = audit(w.sandbox, w.settings, expected, items, repaired=repair)
        if not result.audit.converged:
            result.problems.append("not converged: " + result.audit.summary())
        records = w.sandbox.requests
        result.requests = sum(1 for r in records if r.service in ("fourd", "qbo"))
        for record in records:
            if record.fault in FAULT_KINDS:
                result.faults[f"{record.service}:{record.fault}"] += 1
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


# -- special faults: 4D 401, Redis restart, token rotation ------------------------------


@dataclass
class ScenarioResult:
    name: str
    runs: list[int] = field(default_factory=list)
    audit: Audit | None = None
    notes: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def line(self) -> str:
        audit_text = self.audit.summary() if self.audit else "no audit"
        return f"{self.name}: exits {self.runs}; {'; '.join(self.notes)}; {audit_text}" + (
            f"  PROBLEMS: {self.problems}" if self.problems else ""
        )


def _converge_and_audit(w: World, result: ScenarioResult) -> None:
    runs = w.converge()
    result.runs += [r.code for r in runs]
    if not runs[-1].finished:
        result.problems.append(f"no clean run finished: {runs[-1].stderr.strip()[-300:]}")
    result.audit = w.audit()
    if not result.audit.converged:
        result.problems.append("not converged: " + result.audit.summary())


def fourd_unauthorized_mid_run(
    *, redis_url: str, seed: int = 11, quotes: int = 300, after_fetches: int = 40, **world: Any
) -> ScenarioResult:
    """4D starts answering 401 while quotes are fetched: exit 3, nothing moved, then fixed."""
    result = ScenarioResult("4D 401 mid-run")
    with World(seed=seed, quotes=quotes, redis_url=redis_url, **world) as w:
        w.latency(fourd_ms=15)
        started = time.monotonic()
        run = w.spawn("--json")
        if not wait_for_requests(w.sandbox, is_quote_fetch, after_fetches, run):
            result.problems.append("the run ended before the 401s started")
        w.sandbox.knobs.fourd.unauthorized = True
        first = finish(run, started, 120)
        result.runs.append(first.code)
        if first.code != 3:
            result.problems.append(f"expected exit 3, got {first.code}")
        if "Traceback" in first.stderr or first.stderr.strip().count("\n") > 0:
            result.problems.append(f"not one line on stderr: {first.stderr!r}")
        writes = sum(1 for r in w.sandbox.requests if is_qbo_write(r))
        if writes:
            result.problems.append(f"{writes} QBO writes after 4D refused the credentials")
        if w.store.watermark() is not None:
            result.problems.append("the watermark moved")
        if w.store.lock_holder() is not None:
            result.problems.append("the lock was not released")
        history = w.store.runs(1)
        if not history or not history[0].get("aborted"):
            result.problems.append("the aborted run is not in the run history")
        result.notes.append(f"first run: {first.stderr.strip()[:90]}")
        w.sandbox.knobs.fourd.unauthorized = False
        w.latency()
        _converge_and_audit(w, result)
        result.problems += lock_history_problems(w.store.lock_history())
    return result


def redis_restart_mid_run(
    *,
    seed: int = 12,
    quotes: int = 300,
    down_for: float = 1.0,
    after_batches: int = 1,
    server: Any = None,
    **world: Any,
) -> ScenarioResult:
    """Redis goes away while customers and invoices are written and comes back empty (no
    persistence: lock, watermark and retry queue are gone): exit 3 (or a finished run),
    then the next run converges with no duplicate. `server`: a RedisServer to use (one of
    our own is started otherwise)."""
    result = ScenarioResult(f"Redis restarted mid-run (down {down_for:g} s)")
    own = server is None
    server = server or private_redis()
    server.start()
    try:
        with World(seed=seed, quotes=quotes, redis_url=server.url, **world) as w:
            w.latency(qbo_ms=250)  # the writing outlasts a short outage
            started = time.monotonic()
            run = w.spawn("--json")
            if not wait_for_requests(w.sandbox, is_customer_batch, after_batches, run):
                result.problems.append("the run ended before Redis went down")
            server.stop()
            time.sleep(down_for)
            server.start()
            first = finish(run, started, 120)
            result.runs.append(first.code)
            if first.code not in (0, 1, 3):
                result.problems.append(f"expected exit 3 (or 0/1), got {first.code}")
            if "Traceback" in first.stderr:
                result.problems.append("a traceback on stderr")
            result.notes.append(
                "first run: " + (first.stderr.strip().splitlines() or ["(no message)"])[-1][:160]
            )
            w.latency()
            _converge_and_audit(w, result)
    finally:
        if own:
            server.close()
    return result


def token_rotated_mid_run(
    *,
    redis_url: str,
    seed: int = 13,
    quotes: int = 300,
    after_batches: int = 2,
    racer: bool = False,
    **world: Any,
) -> ScenarioResult:
    """Another process refreshes (rotates) the QBO token while a run writes customers; then
    every access token expires, so the run meets a 401 and must refresh with the rotated
    refresh token from the file (the replaced one is dead). With `racer`, a third process
    refreshes at that same instant: the run must use what it wrote. The run must finish."""
    name = "QBO refresh token rotated by another process mid-run"
    result = ScenarioResult(name + (", a third one refreshing with the run" if racer else ""))
    with World(seed=seed, quotes=quotes, redis_url=redis_url, **world) as w:
        oauth = w.sandbox.oauth
        oauth.refresh_grace_seconds = 0  # a replaced refresh token dies at once
        w.latency(qbo_ms=300)  # the run outlasts the outside refreshes (~3 s of writes left)
        third = Launched(w, [], command=("auth", "refresh")) if racer else None
        if third is not None:
            third.wait_ready()
        started = time.monotonic()
        run = w.spawn("--json")
        if not wait_for_requests(w.sandbox, is_customer_batch, after_batches, run):
            result.problems.append("the run ended before the rotation")
        other = w.fourdqbo("auth", "refresh")
        if other.returncode != 0:
            result.problems.append(f"`auth refresh` in another process: exit {other.returncode}")
        # The run goes on with the rotated token from the file. A second later (requests
        # that left with the old token are answered by then) every access token issued so
        # far expires (sandbox clock +1 h): the run's next QBO call is a 401 and it must
        # refresh with the rotated refresh token. (A token issued after the jump is valid.)
        time.sleep(1.0)
        w.sandbox.clock.advance(oauth.access_ttl + 1)
        if third is not None:
            third.go()
        first = finish(run, started, 120)
        racer_code = third.join(timeout=60) if third is not None else None
        result.runs.append(first.code)
        if not first.finished:
            result.problems.append(
                f"the run did not finish: exit {first.code}: {first.stderr.strip()[-200:]}"
            )
        if racer_code not in (None, 0):
            result.problems.append(f"the racing `auth refresh`: exit {racer_code}")
        refreshes = [e for e in oauth.token_requests if e["grant_type"] == "refresh_token"]
        refused = [e for e in refreshes if not e["ok"]]
        if refused:
            result.problems.append(f"{len(refused)} refresh(es) refused: {refused[:2]}")
        auth_failures = sum(
            1 for r in w.sandbox.requests_to("qbo") if r.status == 401 and r.fault is None
        )
        outside = (other.returncode == 0) + (racer_code == 0)  # `auth refresh` always refreshes
        own = len(refreshes) - outside
        if not racer and own < 1:
            result.problems.append("the run met the expiry but did not refresh")
        if not auth_failures:
            result.problems.append("the run met no 401: the scenario missed its point")
        result.notes.append(
            f"{len(refreshes)} refreshes ({outside} by other processes, {own} by the run, "
            f"{len(refused)} refused); the run met {auth_failures} QBO 401(s) and carried on"
            + (
                " with the token another process had written"
                if not own
                else ", refreshing with the rotated refresh token it read from the file"
            )
        )
        w.latency()
        _converge_and_audit(w, result)
    return result


# -- concurrency ------------------------------------------------------------------------


class Launched:
    """A pre-warmed `fourdqbo sync run` (or another command) waiting for the word go (see
    LAUNCHER)."""

    def __init__(
        self,
        world: World,
        args: Sequence[str],
        *,
        command: Sequence[str] = ("sync", "run"),
        **overrides: str,
    ) -> None:
        self.ready_file = world.directory / f"ready-{uuid.uuid4().hex[:8]}"
        self.process = subprocess.Popen(
            [sys.executable, "-c", LAUNCHER, str(self.ready_file), *command, *args],
            env=world.process_env(**overrides),
            cwd=world.directory,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.spawned = time.monotonic()
        self.went: float | None = None
        self.ended: float | None = None
        self.stdout = ""
        self.stderr = ""
        self._reader = threading.Thread(target=self._wait, daemon=True)

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not self.ready_file.exists():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"launcher did not get ready: {self.process.stderr.read()}")  # type: ignore[union-attr]
            time.sleep(0.01)

    def go(self) -> None:
        assert self.process.stdin is not None
        self.went = time.monotonic()
        self.process.stdin.write("go\n")
        self.process.stdin.flush()
        self._reader.start()

    def _wait(self) -> None:
        self.stdout, self.stderr = self.process.communicate()
        self.ended = time.monotonic()

    def join(self, timeout: float = 180) -> int:
        self._reader.join(timeout)
        if self._reader.is_alive():
            self.process.kill()
            self._reader.join()
        return self.process.returncode

    @property
    def seconds_after_go(self) -> float:
        assert self.went is not None and self.ended is not None
        return self.ended - self.went

    def result(self) -> RunResult:
        report: dict[str, Any] = {}
        if self.stdout.strip():
            with contextlib.suppress(ValueError):
                report = json.loads(self.stdout)
        return RunResult(self.process.returncode, report, self.stderr, self.seconds_after_go)


def launch_together(world: World, count: int, args: Sequence[str] = ("--json",)) -> list[Launched]:
    """`count` runs, each tagged by its own QBO minorversion (75, 76, …) so the sandbox's
    request log tells whose request is whose; all go at the same instant."""
    runs = [Launched(world, args, QBO_MINOR_VERSION=str(75 + n)) for n in range(count)]
    for run in runs:
        run.wait_ready()
    for run in runs:
        run.go()
    return runs


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


# -- the command ------------------------------------------------------------------------


def _span(values: Sequence[float]) -> str:
    if not values:
        return "-"
    return f"{min(values):.2f}-{max(values):.2f}"


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def main(argv: Sequence[str] | None = None) -> int:
    global KEEP_ROOT
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
        KEEP_ROOT = options.keep
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


if __name__ == "__main__":
    sys.exit(main())
