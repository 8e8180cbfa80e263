"""The state store contract: every test runs against Redis and against the file backend."""

from __future__ import annotations

import multiprocessing
import time
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest

from fourdqbo.log import register_sensitive
from fourdqbo.state import RUN_HISTORY_LIMIT, ConflictEntry, LockLost, SyncLock
from fourdqbo.state.base import StateStore
from tests.state.conftest import Backend
from tests.state.contenders import race_for_lock, take_lock_and_die

T0 = datetime(2025, 3, 1, 8, 0, 0, tzinfo=UTC)


def minutes(n: float) -> datetime:
    return T0 + timedelta(minutes=n)


def wait_until(condition, timeout: float = 5.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return bool(condition())


# --- watermark ---------------------------------------------------------------------------


def test_watermark_is_none_before_the_first_run(store: StateStore) -> None:
    assert store.watermark() is None


def test_watermark_only_moves_forward(store: StateStore) -> None:
    assert store.advance_watermark(minutes(10)) is True
    assert store.watermark() == minutes(10)

    assert store.advance_watermark(minutes(5)) is False
    assert store.advance_watermark(minutes(10)) is False
    assert store.watermark() == minutes(10)

    assert store.advance_watermark(minutes(11)) is True
    assert store.watermark() == minutes(11)


def test_watermark_keeps_microseconds_and_comes_back_in_utc(store: StateStore) -> None:
    eastern = timezone(timedelta(hours=-5))
    moment = datetime(2025, 3, 1, 3, 0, 0, 123456, tzinfo=eastern)
    store.advance_watermark(moment)
    back = store.watermark()
    assert back == moment
    assert back is not None and back.utcoffset() == timedelta(0)
    assert back.microsecond == 123456
    # one microsecond later is later
    assert store.advance_watermark(moment + timedelta(microseconds=1)) is True


def test_watermark_advance_across_a_year_and_digit_boundary(store: StateStore) -> None:
    store.advance_watermark(datetime(2025, 12, 31, 23, 59, 59, 999999, tzinfo=UTC))
    assert store.advance_watermark(datetime(2026, 1, 1, tzinfo=UTC)) is True
    assert store.advance_watermark(datetime(2025, 12, 31, 23, 59, 59, tzinfo=UTC)) is False


def test_reset_moves_the_watermark_backwards(store: StateStore) -> None:
    store.advance_watermark(minutes(60))
    store.reset_watermark(minutes(1))
    assert store.watermark() == minutes(1)
    assert store.advance_watermark(minutes(2)) is True


def test_naive_datetimes_are_refused(store: StateStore) -> None:
    with pytest.raises(ValueError):
        store.advance_watermark(datetime(2025, 3, 1, 8, 0))
    assert store.watermark() is None


def test_two_stores_share_the_watermark(backend: Backend, store: StateStore) -> None:
    other = backend.open()
    try:
        store.advance_watermark(minutes(3))
        assert other.watermark() == minutes(3)
        assert other.advance_watermark(minutes(2)) is False
    finally:
        other.close()


# --- lock --------------------------------------------------------------------------------


def test_second_acquire_gets_none_while_the_lock_is_held(
    backend: Backend, store: StateStore
) -> None:
    other = backend.open()
    try:
        first = store.acquire_lock("run-a", ttl_seconds=30)
        assert isinstance(first, SyncLock)
        assert other.acquire_lock("run-b", ttl_seconds=30) is None
        assert store.acquire_lock("run-c", ttl_seconds=30) is None
        assert first.release() is True
        second = other.acquire_lock("run-b", ttl_seconds=30)
        assert second is not None and second.token != first.token
        second.release()
    finally:
        other.close()


def test_lock_holder_says_who_holds_the_lock(store: StateStore) -> None:
    import os
    import socket

    assert store.lock_holder() is None
    lock = store.acquire_lock("run-a", ttl_seconds=30)
    assert lock is not None
    holder = store.lock_holder()
    assert holder is not None
    assert holder.token == lock.token == lock.info.token
    assert (holder.run_id, holder.host, holder.pid) == ("run-a", socket.gethostname(), os.getpid())
    assert abs(holder.since - lock.info.since) < timedelta(seconds=1)
    assert holder.since.tzinfo is not None
    if holder.expires_at is not None:  # Redis: the TTL is visible
        assert timedelta(seconds=20) < holder.expires_at - holder.since <= timedelta(seconds=31)
    lock.release()
    assert store.lock_holder() is None


def test_a_stale_handle_cannot_release_or_extend_the_next_owners_lock(
    backend: Backend, store: StateStore
) -> None:
    other = backend.open()
    try:
        stale = store.acquire_lock("run-a", ttl_seconds=30)
        assert stale is not None and stale.release() is True
        current = other.acquire_lock("run-b", ttl_seconds=30)
        assert current is not None

        assert stale.release() is False
        assert stale.extend() is False
        holder = store.lock_holder()
        assert holder is not None and holder.token == current.token
        assert store.acquire_lock("run-c") is None
        assert current.release() is True
    finally:
        other.close()


def test_releasing_twice_is_harmless(store: StateStore) -> None:
    lock = store.acquire_lock("run-a")
    assert lock is not None
    assert lock.release() is True
    assert lock.release() is False
    assert store.lock_holder() is None


def test_the_lock_is_a_context_manager_that_releases(store: StateStore) -> None:
    lock = store.acquire_lock("run-a", ttl_seconds=30)
    assert lock is not None
    with pytest.raises(RuntimeError), lock:
        lock.start_heartbeat(interval=0.05)
        raise RuntimeError("the run failed")
    assert store.lock_holder() is None
    assert lock.lost is False
    assert store.acquire_lock("run-b") is not None


def test_extend_by_the_owner_succeeds(store: StateStore) -> None:
    lock = store.acquire_lock("run-a", ttl_seconds=30)
    assert lock is not None
    assert lock.extend() is True
    assert lock.extend() is True
    lock.release()


def test_heartbeat_keeps_the_lock_past_its_ttl(backend: Backend, store: StateStore) -> None:
    other = backend.open()
    try:
        lock = store.acquire_lock("run-a", ttl_seconds=0.6)
        assert lock is not None
        lock.start_heartbeat()  # every 0.2 s
        time.sleep(1.5)
        assert lock.lost is False
        holder = other.lock_holder()
        assert holder is not None and holder.token == lock.token
        assert other.acquire_lock("run-b", ttl_seconds=30) is None
        lock.check()  # does not raise
        assert lock.release() is True
        assert lock.lost is False  # stopping the heartbeat to release is not a loss
        assert other.lock_holder() is None
    finally:
        other.close()


def test_break_lock_reports_the_lock_it_found(backend: Backend, store: StateStore) -> None:
    assert store.break_lock() is None
    lock = store.acquire_lock("run-a", ttl_seconds=30)
    assert lock is not None
    broken = store.break_lock()
    assert broken is not None
    assert (broken.token, broken.run_id) == (lock.token, "run-a")
    if backend.name == "redis":
        assert store.lock_holder() is None
        successor = store.acquire_lock("run-b", ttl_seconds=30)
        assert successor is not None
        assert lock.release() is False  # the broken owner cannot free its successor's lock
        assert lock.extend() is False
        holder = store.lock_holder()
        assert holder is not None and holder.token == successor.token
        successor.release()
    else:
        # A live process's OS lock cannot be taken away: it stays held and reported.
        holder = store.lock_holder()
        assert holder is not None and holder.token == lock.token
        assert store.acquire_lock("run-b") is None
        assert lock.release() is True
        assert store.lock_holder() is None


def test_lock_history_records_each_acquisition_and_release_in_order(store: StateStore) -> None:
    tokens = []
    for run in ("run-a", "run-b", "run-c"):
        lock = store.acquire_lock(run, ttl_seconds=30)
        assert lock is not None
        tokens.append(lock.token)
        assert store.acquire_lock("intruder") is None
        lock.release()
    history = store.lock_history()
    assert [(e.event, e.token) for e in history] == [
        (event, token) for token in tokens for event in ("acquired", "released")
    ]
    assert [e.run_id for e in history if e.event == "acquired"] == ["run-a", "run-b", "run-c"]
    assert all(e.at.tzinfo is not None for e in history)
    assert [e.at for e in history] == sorted(e.at for e in history)
    assert [e.event for e in store.lock_history(limit=2)] == ["acquired", "released"]


# --- processes ---------------------------------------------------------------------------


def test_processes_racing_for_the_lock_exactly_one_wins(backend: Backend) -> None:
    context = multiprocessing.get_context("spawn")
    contenders = 3
    start = context.Barrier(contenders)
    finish = context.Event()
    results = context.Queue()
    processes = [
        context.Process(
            target=race_for_lock, args=(backend.spec, f"run-{n}", start, results, finish)
        )
        for n in range(contenders)
    ]
    for process in processes:
        process.start()
    try:
        outcomes = dict(results.get(timeout=30) for _ in processes)
    finally:
        finish.set()
        for process in processes:
            process.join(timeout=30)
    assert sorted(outcomes.values()) == [False] * (contenders - 1) + [True]
    assert all(process.exitcode == 0 for process in processes)
    store = backend.open()
    try:
        assert store.lock_holder() is None
        acquired = [e for e in store.lock_history() if e.event == "acquired"]
        assert len(acquired) == 1 and acquired[0].run_id in outcomes
        assert outcomes[acquired[0].run_id] is True
    finally:
        store.close()


def test_a_crashed_runs_lock_frees_itself(backend: Backend, store: StateStore) -> None:
    """File: the OS drops the dead process's flock at once. Redis: the key's TTL runs out."""
    context = multiprocessing.get_context("spawn")
    taken = context.Event()
    ttl = 0.8
    crashed = context.Process(target=take_lock_and_die, args=(backend.spec, ttl, taken))
    crashed.start()
    crashed.join(timeout=30)
    assert crashed.exitcode == 0 and taken.is_set()
    died_at = time.monotonic()

    if backend.name == "redis":
        holder = store.lock_holder()
        assert holder is not None and holder.run_id == "crashed-run"
        assert store.acquire_lock("too-early") is None
    assert wait_until(lambda: store.lock_holder() is None, timeout=ttl + 2)
    lock = store.acquire_lock("next-run", ttl_seconds=30)
    assert lock is not None
    if backend.name == "file":
        assert time.monotonic() - died_at < ttl  # no TTL to wait for
    lock.release()
    events = [e.event for e in store.lock_history()]
    assert events == ["acquired", "expired", "acquired", "released"]


# --- retry queue -------------------------------------------------------------------------


def test_retry_queue_adds_counts_and_clears(store: StateStore) -> None:
    assert store.retry_queue() == []
    store.record_failure("10023", "QBO answered 500", minutes(5))
    store.record_failure("10001", "4D timed out", minutes(1))
    store.record_failure("10023", "QBO answered 503", minutes(9))

    queue = store.retry_queue()
    assert [entry.quote for entry in queue] == ["10001", "10023"]  # oldest failure first
    again = queue[1]
    assert again.attempts == 2
    assert again.error == "QBO answered 503"
    assert again.first_failed_at == minutes(5)
    assert again.last_failed_at == minutes(9)
    assert queue[0].attempts == 1 and queue[0].first_failed_at == queue[0].last_failed_at

    store.clear_failure("10001")
    store.clear_failure("99999")  # not queued: nothing happens
    assert [entry.quote for entry in store.retry_queue()] == ["10023"]
    store.clear_failure("10023")
    assert store.retry_queue() == []


def test_retry_errors_are_kept_on_one_line(store: StateStore) -> None:
    store.record_failure("7", "first line\nsecond  line\ttab", minutes(0))
    store.record_failure("8", "x" * 5000, minutes(0))
    errors = {entry.quote: entry.error for entry in store.retry_queue()}
    assert errors["7"] == "first line second line tab"
    assert len(errors["8"]) <= 1000


def test_retry_errors_keep_unicode(store: StateStore) -> None:
    store.record_failure("9", "montant négatif — ligne 2", minutes(0))
    assert store.retry_queue()[0].error == "montant négatif — ligne 2"


# --- conflicts ---------------------------------------------------------------------------


def test_conflicts_are_added_replaced_and_cleared(store: StateStore) -> None:
    paid = ConflictEntry("10023", "145", "invoice has a payment applied", minutes(2))
    duplicate = ConflictEntry("10005", None, "two invoices share DocNumber 10005", minutes(1))
    store.record_conflict(paid)
    store.record_conflict(duplicate)
    assert store.conflicts() == [duplicate, paid]

    newer = ConflictEntry("10023", "145", "quote re-opened but invoice is paid", minutes(7))
    store.record_conflict(newer)
    assert store.conflicts() == [duplicate, newer]

    store.clear_conflict("10005")
    store.clear_conflict("nope")
    assert store.conflicts() == [newer]


# --- run history -------------------------------------------------------------------------


def test_run_history_keeps_the_newest_hundred_newest_first(store: StateStore) -> None:
    for n in range(RUN_HISTORY_LIMIT + 5):
        store.append_run({"run_id": f"run-{n}", "counts": {"created": n}})
    everything = store.runs(limit=1000)
    assert len(everything) == RUN_HISTORY_LIMIT
    assert everything[0]["run_id"] == f"run-{RUN_HISTORY_LIMIT + 4}"
    assert everything[-1]["run_id"] == "run-5"
    assert [summary["run_id"] for summary in store.runs()] == [
        f"run-{n}" for n in range(RUN_HISTORY_LIMIT + 4, RUN_HISTORY_LIMIT - 6, -1)
    ]
    assert len(store.runs(limit=3)) == 3
    assert store.runs(limit=0) == []


def test_run_summaries_round_trip_exactly(store: StateStore) -> None:
    summary = {
        "run_id": "r1",
        "started_at": "2025-03-01T08:00:00Z",
        "dry_run": False,
        "window": {"from": "2025-03-01T07:55:00Z", "to": "2025-03-01T08:00:00Z"},
        "counts": {"seen": 2, "created": 1, "failed": 1},
        "quotes": [{"quote": "10023", "version": 3, "action": "created", "error": None}],
        "total": Decimal("1250.10"),
    }
    store.append_run(summary)
    assert store.runs() == [summary]
    assert store.runs()[0]["total"] == Decimal("1250.10")


def test_run_history_never_holds_a_registered_patient_name(store: StateStore) -> None:
    register_sensitive("Zelda Quokkaworth")
    store.append_run(
        {"run_id": "r1", "quotes": [{"quote": "1", "error": "no customer for Zelda Quokkaworth"}]}
    )
    store.record_failure("1", "no customer for Zelda Quokkaworth", minutes(0))
    assert "Quokkaworth" not in repr(store.runs())
    assert store.runs()[0]["quotes"][0]["quote"] == "1"
    assert "Quokkaworth" not in store.retry_queue()[0].error


# --- health ------------------------------------------------------------------------------


def test_ping_succeeds_on_a_usable_store(store: StateStore) -> None:
    store.ping()


def test_lock_lost_is_a_state_store_error_with_exit_code_3() -> None:
    from fourdqbo.errors import StateStoreError

    assert issubclass(LockLost, StateStoreError)
    assert LockLost("x").exit_code == 3
