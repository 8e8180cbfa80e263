"""The world a chaos scenario runs in and breaks: one sandbox, one Redis namespace, one
data directory; `fourdqbo sync run` started as cron does (or pre-warmed, `Launched`);
what the sandbox's request log shows; the lock history's replay; the changes in 4D
between runs. Shared by every scenario family."""

from __future__ import annotations

import contextlib
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

from fourdqbo.config import Settings, load_settings
from fourdqbo.sandbox import Sandbox
from fourdqbo.sandbox.audit import Audit, audit
from fourdqbo.sandbox.server import FAULT_KINDS, QboLimits, RequestRecord
from fourdqbo.state.base import LockEvent
from fourdqbo.state.redis_store import RedisStateStore

LOCK_TTL = 3.0  # SYNC_LOCK_TTL_SECONDS of every run here: short, so expiry is quick to see


HTTP_TIMEOUT = 1.0  # HTTP_TIMEOUT_SECONDS; the sandbox holds a "timeout" answer longer


TIMEOUT_DELAY = 1.5


# QBO's real throttle with its minute scaled down to 3 s: a 300-quote sync takes seconds.
LIMITS = QboLimits(requests_per_window=500, batches_per_window=40, in_flight=10, window_seconds=3)


KEEP_ROOT: Path | None = None  # set by `main --keep`  # --keep: scenario directories are kept here


LOCK_FREE_SLACK = 0.3  # polling granularity allowed on top of the TTL


LOSER_DEADLINE = 1.0  # seconds within which a run that finds the lock held must exit 75


EXIT_LOCK_HELD = 75


LOST_ANSWERS = ("commit_then_drop", "timeout", "drop", "commit_then_drop")


ENV_PREFIXES = ("FOURD_", "4D_", "QBO_", "SYNC_", "STATE_", "REDIS_URL", "HTTP_")


ENV_NAMES = ("LOGS_DIR", "DATA_DIR", "HEALTHCHECK_URL", "CUSTOMER_NAME_TEMPLATE")


# A `fourdqbo` process that imports everything first, says it is ready (a file) and waits
# for a line on stdin: runs "started together" then really start together, and the time
# to exit 75 measures the lock, not the interpreter's start-up.
# Everything a run loads before its first request is loaded (and the command tree built)
# before the word go: the figure is the lock's, not Python's start-up. encodings.idna is
# what resolving "127.0.0.1" loads; httpcore, h11 and certifi what building a client
# loads (the runs go together, so most find the lock free when they look and build them).
LAUNCHER = """
import sys
from pathlib import Path
import typer.main
from fourdqbo.cli.app import app, main
import fourdqbo.cli.sync, fourdqbo.sync.engine, fourdqbo.emr.client, fourdqbo.qbo.client
import fourdqbo.qbo.tokens, fourdqbo.state.redis_store, fourdqbo.http
import fourdqbo.sync.healthcheck, encodings.idna, httpcore, h11, certifi
built = typer.main.get_command(app)
Path(sys.argv[1]).touch()
sys.stdin.readline()
sys.argv = ["fourdqbo", *sys.argv[2:]]
main(built)
"""


def say(text: str) -> None:
    print(text, flush=True)


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

    def mixed_faults(self, rate: float) -> None:
        """`rate` of the requests to both services fail, every fault kind as likely."""
        for service in ("fourd", "qbo"):
            knobs = self.sandbox.knobs.of(service)
            knobs.fault_rate = rate
            knobs.fault_weights = {kind: 1.0 for kind in FAULT_KINDS}
            knobs.retry_after_share = 0.5  # 429 with and without Retry-After on both

    def lose_first_answers(self) -> None:
        """The next QBO writes meet LOST_ANSWERS, whatever the random faults spare."""
        self.sandbox.knobs.qbo.scripted.clear()
        for kind in LOST_ANSWERS:
            self.sandbox.inject("qbo", kind, writes_only=True)

    def run_until_finished(self, exits: list[int], problems: list[str], max_runs: int) -> int:
        """Runs until one gets through with nothing failed (at most `max_runs`): their exit
        codes go to `exits`, what went wrong to `problems`; returns how many ran."""
        for attempt in range(1, max_runs + 1):
            run = self.run()
            exits.append(run.code)
            if run.finished:
                return attempt
            if run.code not in (0, 1, 3):
                problems.append(f"run exit {run.code}: {run.stderr.strip()[-300:]}")
        problems.append(f"no run got through in {max_runs}: exits {exits}")
        return max_runs

    def faults_met(self) -> tuple[int, Counter[str]]:
        """Requests to 4D and QBO so far, and the faults among them by service:kind."""
        records = self.sandbox.requests
        faults: Counter[str] = Counter(
            f"{r.service}:{r.fault}" for r in records if r.fault in FAULT_KINDS
        )
        return sum(1 for r in records if r.service in ("fourd", "qbo")), faults

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


def _span(values: Sequence[float]) -> str:
    if not values:
        return "-"
    return f"{min(values):.2f}-{max(values):.2f}"


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)
