"""The chunked run against the sandbox over loopback HTTP, with real Redis.

A window of several chunks (`SYNC_CHUNK_SIZE` small): what is true of one unchunked run
stays true of each chunk and of the whole run — one customer per patient across chunks,
a failure in one chunk does not stop the next and is queued, an interrupted run keeps
the watermark and records what it did, a producer's error is the run's error, a dry run
writes nothing — and the first write leaves before the last chunk is read.
"""

from __future__ import annotations

import json
import re
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from typer.testing import CliRunner

from fourdqbo.cli.app import app
from fourdqbo.config import Settings, load_settings
from fourdqbo.errors import AuthError
from fourdqbo.sandbox import Sandbox
from fourdqbo.sandbox.audit import audit
from fourdqbo.sandbox.seed import display_name
from fourdqbo.sandbox.server import QboLimits, RequestRecord
from fourdqbo.sync.engine import RunOptions, SyncEngine
from fourdqbo.sync.pipeline import Interrupted, chunked
from fourdqbo.sync.report import RunReport
from tests.sync import test_engine
from tests.sync.test_engine import SyncRun

pytestmark = pytest.mark.integration

sync = test_engine.sync  # the same `sync run --json` fixture, over this module's `env`

CHUNK = 5
QUOTES = 40  # 8 chunks
PATIENTS = 8  # about five quotes each: every patient's quotes span several chunks


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    # QBO's throttle on a 2-second "minute": the many small batches of small chunks are
    # paced as in production, only 30 times faster.
    limits = QboLimits(window_seconds=2)
    with Sandbox(
        seed=11, quotes=QUOTES, patients=PATIENTS, timeout_delay=1.5, limits=limits
    ) as running:
        yield running


@pytest.fixture
def env(sandbox_redis_env: dict[str, str]) -> dict[str, str]:
    return {
        **sandbox_redis_env,
        "HTTP_TIMEOUT_SECONDS": "1",
        "SYNC_LOCK_TTL_SECONDS": "3",
        "SYNC_CHUNK_SIZE": str(CHUNK),
    }


def sync_status(env: dict[str, str]) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(
        CliRunner().invoke(app, ["sync", "status", "--json"], env=env).stdout
    )
    return document


class _Hook:
    """A Progress that lets a test act at a given point of the run (from either thread)."""

    def __init__(self, on_write: Callable[[int, int], None]) -> None:
        self.on_write = on_write
        self.done = 0
        self.writes = 0
        self.totals: list[int] = []

    def window(self, total: int) -> None:
        self.totals.append(total)

    def phase(self, name: str) -> None:
        pass

    def quotes_done(self, count: int) -> None:
        self.done += count

    def wrote(self, count: int) -> None:
        self.writes += count
        self.on_write(self.done, self.writes)


def run_engine(
    env: dict[str, str], progress: Any, stop: threading.Event, now: Callable[[], Any]
) -> RunReport:
    from fourdqbo.cli.sync import connect

    settings = load_settings(env, dotenv_path=None)
    with connect(settings) as conn:
        engine = SyncEngine(settings, conn.fourd, conn.qbo, conn.state, progress, stop, now=now)
        return engine.run(RunOptions())


def customer_creates(sandbox: Sandbox) -> Counter[str]:
    """DisplayName -> how many create items QBO received for it."""
    names: Counter[str] = Counter()
    for record in sandbox.requests_to("qbo"):
        body = record.body if isinstance(record.body, dict) else {}
        for item in body.get("BatchItemRequest") or []:
            if item.get("operation") == "create" and "Customer" in item:
                names[item["Customer"]["DisplayName"]] += 1
    return names


def is_invoice_write(record: RequestRecord) -> bool:
    return (
        record.service == "qbo"
        and record.is_write
        and "Invoice" in json.dumps(record.body, default=str)
    )


def chunk_ends(count: int) -> list[int]:
    """How many quotes the run has seen at the end of each chunk (the first is smaller)."""
    ends, seen = [], 0
    for chunk in chunked(range(count), CHUNK):
        seen += len(chunk)
        ends.append(seen)
    return ends


def settings_of(env: dict[str, str]) -> Settings:
    return load_settings(env, dotenv_path=None)


def test_a_patient_whose_quotes_span_chunks_gets_one_customer(
    sandbox: Sandbox, env: dict[str, str], sync: SyncRun
) -> None:
    sandbox.knobs.qbo.latency_ms = 20  # writes slow enough that later chunks are looked up first
    code, report = sync()
    assert code == 1, report  # the seed's paid invoice stays a conflict
    assert report["counts"]["failed"] == 0
    creates = customer_creates(sandbox)
    assert creates, "the seed leaves some patients without a customer"
    assert max(creates.values()) == 1, creates  # never sent twice, whatever the chunk
    assert report["customers"]["created"] == len(creates)
    # Some patient whose customer was created has quotes in more than one chunk (each
    # chunk records all its quotes, so the report's order groups them by chunk).
    ends = chunk_ends(len(report["quotes"]))
    chunks_of: dict[str, set[int]] = {}
    for position, outcome in enumerate(report["quotes"]):
        name = display_name(sandbox.practice.patient_of(outcome["quote"]))
        chunks_of.setdefault(name, set()).add(sum(1 for end in ends if end <= position))
    assert any(len(chunks_of[name]) > 1 for name in creates)
    result = audit(sandbox, settings_of(env))
    assert result.converged, result.summary()
    assert not result.duplicate_customers


def like_lookups(sandbox: Sandbox) -> Counter[str]:
    """LIKE value -> how many Query items asked QBO for it."""
    asked: Counter[str] = Counter()
    for record in sandbox.requests_to("qbo"):
        body = record.body if isinstance(record.body, dict) else {}
        for item in body.get("BatchItemRequest") or []:
            found = re.search(r"DisplayName LIKE '((?:[^'\\]|\\.)*)'", str(item.get("Query", "")))
            if found:
                asked[found.group(1)] += 1
    return asked


def like_matches(value: str, name: str) -> bool:
    parts = [re.escape(part.replace("\\'", "'")) for part in value.split("%")]
    return re.fullmatch(".*".join(parts), name, flags=re.IGNORECASE) is not None


def test_a_patient_whose_like_found_nothing_is_not_asked_again_in_later_chunks(
    sandbox: Sandbox, sync: SyncRun
) -> None:
    # Regression: a chunk read ahead is looked up before the customers of earlier chunks
    # exist; each of its new patients was LIKE'd again, one request unit each. A dry run
    # creates nothing, so every later chunk of such a patient would ask again.
    before = [c["DisplayName"] for c in sandbox.company.customers()]
    code, report = sync("--dry-run")
    assert code == 1 and report["counts"]["failed"] == 0, report
    asked = like_lookups(sandbox)
    assert asked, "the seed leaves some patients to be found by pattern"
    again = [value for value, times in asked.items() if times > 1]
    # Asked again only when an answer held a customer of that patient (it may have changed).
    assert all(any(like_matches(value, name) for name in before) for value in again), again


def test_a_failure_in_chunk_two_does_not_stop_chunk_three_and_is_queued(
    sandbox: Sandbox, env: dict[str, str], sync: SyncRun
) -> None:
    completed = [
        n for n in sandbox.practice.completed_numbers() if n != sandbox.facts.conflict_quote
    ][: 3 * CHUNK]
    ends = chunk_ends(len(completed))
    broken = completed[ends[0] + 1]  # in the second chunk of the --quote list
    sandbox.practice.quote(broken).procedures = [
        {"ProcedureName": "x", "Amount": "-5", "DiscountAmount": None}
    ]
    args = [arg for number in completed for arg in ("--quote", number)]
    code, report = sync(*args)
    assert code == 1
    actions = {q["quote"]: q["action"] for q in report["quotes"]}
    assert actions[broken] == "failed"
    third = completed[ends[1] :]
    assert all(actions[n] in ("created", "unchanged") for n in third), actions
    assert all(sandbox.company.invoices_by_doc(n) for n in third)
    assert [e["quote"] for e in sync_status(env)["retry_queue"]] == [broken]


def test_an_interrupted_run_keeps_the_watermark_and_records_what_it_did(
    sandbox: Sandbox, env: dict[str, str], sync: SyncRun
) -> None:
    stop = threading.Event()

    def on_write(done: int, writes: int) -> None:
        if done >= CHUNK:  # a write of chunk 3 or later was answered: SIGTERM now
            stop.set()

    with pytest.raises(Interrupted):
        run_engine(env, _Hook(on_write), stop, sandbox.clock.now)
    status = sync_status(env)
    assert status["watermark"] is None
    assert status["lock"] is None
    run = status["runs"][0]
    assert run["aborted"] and "interrupted" in run["aborted"]
    # Whole chunks are recorded (chunk 1 and the one the stop came in), not the rest.
    seen = run["counts"]["seen"]
    assert CHUNK < seen < QUOTES and seen in chunk_ends(QUOTES)
    assert run["counts"]["created"] > 0
    assert any(is_invoice_write(r) for r in sandbox.requests_to("qbo"))
    # What the stop left unwritten is queued, and the next run converges.
    assert {e["quote"] for e in status["retry_queue"]} == set(run["failed_quotes"])
    code, report = sync()
    assert code == 1 and report["counts"]["failed"] == 0
    assert audit(sandbox, settings_of(env)).converged


def test_a_4d_refusal_while_reading_a_later_chunk_is_the_runs_error(
    sandbox: Sandbox, env: dict[str, str], sync: SyncRun
) -> None:
    def on_write(done: int, writes: int) -> None:
        if done:  # credentials revoked once a chunk is written, while later ones are read
            sandbox.knobs.fourd.unauthorized = True

    with pytest.raises(AuthError) as raised:
        run_engine(env, _Hook(on_write), threading.Event(), sandbox.clock.now)
    assert raised.value.exit_code == 3
    status = sync_status(env)
    assert status["watermark"] is None and status["lock"] is None
    assert status["runs"][0]["aborted"]
    assert status["runs"][0]["counts"]["created"] > 0  # the chunks written are recorded
    sandbox.knobs.fourd.unauthorized = False
    code, report = sync()
    assert code == 1 and report["counts"]["failed"] == 0
    assert report["watermark_advanced"] is True
    assert audit(sandbox, settings_of(env)).converged


def test_the_first_write_leaves_before_the_last_chunk_is_read(
    sandbox: Sandbox, sync: SyncRun
) -> None:
    sandbox.knobs.fourd.latency_ms = 10
    code, report = sync()
    assert code == 1 and report["counts"]["created"] > 0
    log = sandbox.requests
    first_write = next(i for i, r in enumerate(log) if r.service == "qbo" and r.is_write)
    fetches = [i for i, r in enumerate(log) if r.service == "fourd" and r.path == "quotes"]
    assert len(fetches) > 2 * CHUNK
    assert first_write < fetches[-CHUNK], "the writes waited for the whole window"


def test_a_dry_run_over_several_chunks_writes_nothing(
    sandbox: Sandbox, env: dict[str, str], sync: SyncRun
) -> None:
    code, report = sync("--dry-run")
    assert code == 1  # the conflict it would meet
    assert report["counts"]["seen"] > 3 * CHUNK
    assert report["counts"]["failed"] == 0
    assert {q["action"] for q in report["quotes"]} >= {"would_create"}
    assert [r for r in sandbox.requests_to("qbo") if r.is_write] == []
    fetches = [r for r in sandbox.requests_to("fourd") if r.path == "quotes"]
    assert len(fetches) > CHUNK  # it read every chunk
    status = sync_status(env)
    assert status["watermark"] is None and status["runs"] == []
