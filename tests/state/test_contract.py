"""The state store contract: every test runs against Redis and against the file backend."""

from __future__ import annotations

import json
import multiprocessing
import time
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fourdqbo.errors import StateStoreError
from fourdqbo.log import register_sensitive
from fourdqbo.state import RUN_HISTORY_LIMIT, ConflictEntry, LockLost, SyncLock
from fourdqbo.state.base import StateStore
from fourdqbo.state.file_store import FileStateStore
from fourdqbo.state.items import Acceptance, AttentionItem, AttentionKind, Difference, LedgerEntry
from fourdqbo.state.redis_store import RedisStateStore
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


# --- 0.2 records: helpers ----------------------------------------------------------------


def spoil(backend: Backend, store: StateStore, name: str, quote: str) -> None:
    """Leave an unreadable stored document for `quote` in the hash/file `name`, as a bad
    restore or a hand edit would."""
    if backend.name == "redis":
        assert isinstance(store, RedisStateStore)
        store._redis.hset(store.key(name), quote, "{not json")
    else:
        assert isinstance(store, FileStateStore)
        path = store.directory / f"{name}.json"
        document = json.loads(path.read_text()) if path.exists() else {}
        document[quote] = {"not": "a record"}
        store._ensure_directory()
        path.write_text(json.dumps(document))


def written(quote: str, invoice_id: str | None, n: float, **fields: object) -> LedgerEntry:
    values: dict[str, object] = {
        "quote": quote,
        "invoice_id": invoice_id,
        "version": 3,
        "sync_token": "0",
        "run_id": "run-1",
        "written_at": minutes(n),
        "intuit_tid": "1-abc",
        "action": "created",
    }
    values.update(fields)
    return LedgerEntry(**values)  # type: ignore[arg-type]


def item(quote: str, kind: AttentionKind, n: float, **fields: object) -> AttentionItem:
    values: dict[str, object] = {
        "quote": quote,
        "kind": kind,
        "version": 3,
        "invoice_id": "145",
        "reason": f"{kind.value} for quote {quote}",
        "detected_at": minutes(n),
    }
    values.update(fields)
    return AttentionItem(**values)  # type: ignore[arg-type]


# --- ledger ------------------------------------------------------------------------------


def test_an_empty_ledger_knows_nothing(store: StateStore) -> None:
    assert store.ledger(["10023"]) == {}
    assert store.ledger([]) == {}
    assert store.ledger_for_invoices(["145"]) == {}
    assert store.ledger_size() == 0


def test_ledger_entries_round_trip_exactly(store: StateStore) -> None:
    eastern = timezone(timedelta(hours=-5))
    full = LedgerEntry(
        quote="10023",
        invoice_id="145",
        version=7,
        sync_token="12",
        run_id="20250301T080000Z-ab12",
        written_at=datetime(2025, 3, 1, 3, 0, 0, 123456, tzinfo=eastern),
        intuit_tid="1-65f0-abcdef",
        action="updated",
    )
    deleted = LedgerEntry("10024", "146", 2, None, "run-2", minutes(1), None, "deleted")
    store.record_ledger([full, deleted])
    back = store.ledger(["10023", "10024"])
    assert back == {"10023": full, "10024": deleted}
    assert back["10023"].written_at.utcoffset() == timedelta(0)
    assert back["10023"].written_at.microsecond == 123456
    assert store.ledger_size() == 2


def test_bulk_ledger_reads_leave_missing_quotes_out(store: StateStore) -> None:
    store.record_ledger([written("1", "101", 0), written("2", "102", 1), written("3", "103", 2)])
    found = store.ledger(["3", "missing", "1", "3"])
    assert set(found) == {"1", "3"}
    assert found["3"].invoice_id == "103"
    by_invoice = store.ledger_for_invoices(["102", "999", "103"])
    assert set(by_invoice) == {"102", "103"}
    assert by_invoice["102"].quote == "2"
    assert store.ledger(iter(["2"])) == {"2": written("2", "102", 1)}  # any iterable


def test_a_new_ledger_entry_replaces_the_quotes_last_one(store: StateStore) -> None:
    store.record_ledger([written("10023", "145", 0)])
    newer = written("10023", "145", 5, version=4, sync_token="1", action="updated")
    store.record_ledger([newer])
    assert store.ledger(["10023"]) == {"10023": newer}
    assert store.ledger_for_invoices(["145"]) == {"145": newer}
    assert store.ledger_size() == 1


def test_the_invoice_index_follows_a_quote_to_its_new_invoice(store: StateStore) -> None:
    store.record_ledger([written("10023", "145", 0)])
    recreated = written("10023", "201", 5, action="created")
    store.record_ledger([recreated])
    assert store.ledger_for_invoices(["145"]) == {}
    assert store.ledger_for_invoices(["201", "145"]) == {"201": recreated}

    gone = written("10023", None, 9, sync_token=None, action="deleted")
    store.record_ledger([gone])
    assert store.ledger_for_invoices(["201", "145"]) == {}
    assert store.ledger(["10023"]) == {"10023": gone}


def test_an_invoice_taken_over_by_another_quote_finds_only_the_new_one(
    store: StateStore,
) -> None:
    store.record_ledger([written("A", "145", 0)])
    store.record_ledger([written("B", "145", 1)])
    assert store.ledger_for_invoices(["145"])["145"].quote == "B"
    # A moving on must not take B's index entry with it.
    store.record_ledger([written("A", "300", 2)])
    assert store.ledger_for_invoices(["145"])["145"].quote == "B"
    assert store.ledger_for_invoices(["300"])["300"].quote == "A"


def test_one_call_storing_a_quote_twice_keeps_the_last(store: StateStore) -> None:
    store.record_ledger([written("1", "101", 0), written("1", "102", 1)])
    assert store.ledger(["1"])["1"].invoice_id == "102"
    assert store.ledger_for_invoices(["101", "102"]) == {"102": written("1", "102", 1)}


def test_a_ledger_call_with_a_naive_time_writes_nothing(store: StateStore) -> None:
    naive = written("2", "102", 0, written_at=datetime(2025, 3, 1, 8, 0))
    with pytest.raises(ValueError):
        store.record_ledger([written("1", "101", 0), naive])
    assert store.ledger_size() == 0
    assert store.ledger_for_invoices(["101"]) == {}


def test_forget_ledger_drops_entries_and_their_index(store: StateStore) -> None:
    store.record_ledger([written("1", "101", 0), written("2", "102", 1)])
    store.forget_ledger(["1", "nope"])
    store.forget_ledger([])
    assert store.ledger(["1", "2"]) == {"2": written("2", "102", 1)}
    assert store.ledger_for_invoices(["101", "102"]) == {"102": written("2", "102", 1)}
    assert store.ledger_size() == 1
    # re-recording the forgotten quote works from a clean slate
    store.record_ledger([written("1", "101", 3)])
    assert store.ledger_for_invoices(["101"])["101"].written_at == minutes(3)


def test_ledger_reads_refuse_a_single_string(store: StateStore) -> None:
    with pytest.raises(TypeError):
        store.ledger("10023")


def test_an_unreadable_ledger_entry_names_its_quote(backend: Backend, store: StateStore) -> None:
    store.record_ledger([written("1", "101", 0)])
    spoil(backend, store, "ledger", "10023")
    with pytest.raises(StateStoreError, match="ledger entry for quote 10023") as raised:
        store.ledger(["1", "10023"])
    assert raised.value.exit_code == 3
    assert store.ledger(["1"]) == {"1": written("1", "101", 0)}
    assert store.ledger_for_invoices(["101"]) == {"101": written("1", "101", 0)}


# --- items needing a person --------------------------------------------------------------


def test_attention_items_round_trip_with_differences_and_ledger(store: StateStore) -> None:
    edited = AttentionItem(
        quote="10023",
        kind=AttentionKind.EDITED_IN_QBO,
        version=3,
        invoice_id="145",
        reason="a person changed the invoice in QBO",
        detected_at=minutes(2),
        differences=(
            Difference("TotalAmt", "1200.00", "1250.10"),
            Difference("Line 2 Amount", None, "50.10"),
            Difference("CustomField Quote Version", "2", None),
        ),
        ledger=written("10023", "145", 1, action="updated"),
    )
    gone = AttentionItem(
        "10005", AttentionKind.DELETED_IN_QBO, None, None, "deleted in QBO", minutes(1)
    )
    assert store.attention_items() == []
    store.record_attention([edited, gone])
    assert store.attention_items() == [gone, edited]  # oldest detected first
    assert store.attention_item("10023") == edited
    assert store.attention_item("10005") == gone
    assert store.attention_item("99999") is None


def test_attention_items_are_ordered_by_time_then_quote(store: StateStore) -> None:
    store.record_attention(
        [
            item("30", AttentionKind.PAID, 5),
            item("20", AttentionKind.PAID, 1),
            item("10", AttentionKind.CUSTOMER_AMBIGUOUS, 5),
        ]
    )
    assert [i.quote for i in store.attention_items()] == ["20", "10", "30"]


def test_a_new_item_replaces_the_quotes_open_one(store: StateStore) -> None:
    store.record_attention([item("10023", AttentionKind.EDITED_IN_QBO, 1)])
    later = item("10023", AttentionKind.PAID, 4, version=4)
    store.record_attention([later])
    assert store.attention_items() == [later]


def test_clear_attention_closes_only_the_given_quotes(store: StateStore) -> None:
    store.record_attention([item(q, AttentionKind.PAID, n) for n, q in enumerate("abc")])
    store.clear_attention(["a", "c", "nope"])
    store.clear_attention([])
    assert [i.quote for i in store.attention_items()] == ["b"]


def test_attention_reasons_are_one_bounded_scrubbed_line(store: StateStore) -> None:
    register_sensitive("Zelda Quokkaworth")
    store.record_attention(
        [
            item("1", AttentionKind.PAID, 0, reason="paid\ninvoice  of Zelda Quokkaworth"),
            item("2", AttentionKind.PAID, 0, reason="x" * 5000),
            item(
                "3",
                AttentionKind.EDITED_IN_QBO,
                0,
                differences=(Difference("Line 1 Description", "Zelda Quokkaworth", "Botox"),),
            ),
        ]
    )
    reasons = {i.quote: i for i in store.attention_items()}
    assert "\n" not in reasons["1"].reason and "Quokkaworth" not in reasons["1"].reason
    assert reasons["1"].reason.startswith("paid invoice of")
    assert len(reasons["2"].reason) <= 1000
    assert "Quokkaworth" not in repr(reasons["3"].differences)
    assert reasons["3"].differences[0].quote == "Botox"


def test_attention_counts_cover_every_kind(store: StateStore) -> None:
    assert store.attention_counts() == {kind.value: 0 for kind in AttentionKind}
    store.record_attention(
        [
            item("1", AttentionKind.PAID, 0),
            item("2", AttentionKind.PAID, 1),
            item("3", AttentionKind.GAVE_UP, 2),
        ]
    )
    store.record_conflict(ConflictEntry("4", None, "2 QBO invoices share DocNumber 4", minutes(3)))
    counts = store.attention_counts()
    assert counts["paid"] == 2 and counts["gave_up"] == 1
    assert counts["duplicate_invoices"] == 1 and counts["edited_in_qbo"] == 0
    assert set(counts) == {kind.value for kind in AttentionKind}


def test_legacy_conflicts_show_as_items_until_superseded_or_cleared(store: StateStore) -> None:
    duplicate = ConflictEntry("10005", None, "2 QBO invoices share DocNumber 10005", minutes(1))
    paid = ConflictEntry("10023", "145", "invoice has a payment applied", minutes(2))
    other = ConflictEntry("10030", "150", "quote re-opened but invoice is paid", minutes(3))
    for conflict in (duplicate, paid, other):
        store.record_conflict(conflict)

    items = store.attention_items()
    assert [(i.quote, i.kind, i.version, i.invoice_id) for i in items] == [
        ("10005", AttentionKind.DUPLICATE_INVOICES, None, None),
        ("10023", AttentionKind.PAID, None, "145"),
        ("10030", AttentionKind.PAID, None, "150"),
    ]
    assert items[1].reason == paid.reason and items[1].detected_at == paid.detected_at
    assert store.attention_item("10005") == items[0]

    newer = item("10023", AttentionKind.EDITED_IN_QBO, 9)
    store.record_attention([newer])
    assert store.attention_item("10023") == newer
    assert [i.quote for i in store.attention_items()] == ["10005", "10030", "10023"]

    store.clear_attention(["10005", "10023"])
    assert [i.quote for i in store.attention_items()] == ["10030"]
    assert store.conflicts() == [other]  # 0.1's record of the cleared quotes is gone too
    assert store.attention_item("10005") is None


def test_an_unreadable_item_names_its_quote(backend: Backend, store: StateStore) -> None:
    store.record_attention([item("1", AttentionKind.PAID, 0)])
    spoil(backend, store, "attention", "10023")
    with pytest.raises(StateStoreError, match="item needing a person for quote 10023"):
        store.attention_items()
    with pytest.raises(StateStoreError, match="quote 10023"):
        store.attention_item("10023")
    assert store.attention_item("1") is not None


# --- acceptances -------------------------------------------------------------------------


def test_acceptances_round_trip_replace_and_clear(store: StateStore) -> None:
    assert store.acceptances() == {}
    first = Acceptance("10023", 3, minutes(1), AttentionKind.EDITED_IN_QBO)
    bare = Acceptance("10005", 1, minutes(2))
    store.record_acceptance(first)
    store.record_acceptance(bare)
    assert store.acceptances() == {"10023": first, "10005": bare}
    assert store.acceptances(["10005", "missing"]) == {"10005": bare}
    assert store.acceptances([]) == {}

    again = Acceptance("10023", 4, minutes(5), AttentionKind.PAID)
    store.record_acceptance(again)
    assert store.acceptances(["10023"]) == {"10023": again}

    store.clear_acceptance(["10023", "missing"])
    assert store.acceptances() == {"10005": bare}


def test_an_unreadable_acceptance_names_its_quote(backend: Backend, store: StateStore) -> None:
    spoil(backend, store, "accepted", "10023")
    with pytest.raises(StateStoreError, match="acceptance for quote 10023"):
        store.acceptances()


# --- give up and retry -------------------------------------------------------------------


def test_record_failure_returns_the_entry_with_its_attempts(store: StateStore) -> None:
    entries = [store.record_failure("10023", f"QBO answered 50{n}", minutes(n)) for n in range(3)]
    assert [entry.attempts for entry in entries] == [1, 2, 3]
    last = entries[-1]
    assert (last.quote, last.error) == ("10023", "QBO answered 502")
    assert (last.first_failed_at, last.last_failed_at) == (minutes(0), minutes(2))
    assert store.retry_queue() == [last]


def test_retry_entries_and_size(store: StateStore) -> None:
    assert store.retry_queue_size() == 0
    one = store.record_failure("1", "boom", minutes(0))
    two = store.record_failure("2", "bang", minutes(1))
    assert store.retry_queue_size() == 2
    assert store.retry_entries(["2", "missing", "1"]) == {"1": one, "2": two}
    assert store.retry_entries([]) == {}


def test_give_up_moves_the_quote_from_the_queue_to_an_item(store: StateStore) -> None:
    store.record_failure("10023", "QBO answered 500", minutes(0))
    store.record_failure("10024", "QBO answered 500", minutes(0))
    gave_up = item("10023", AttentionKind.GAVE_UP, 5, reason="failed 5 times: QBO answered 500")
    store.give_up("10023", gave_up)
    assert [entry.quote for entry in store.retry_queue()] == ["10024"]
    assert store.retry_entries(["10023"]) == {}
    assert store.attention_item("10023") == gave_up


def test_give_up_refuses_an_item_that_is_no_gave_up_of_that_quote(store: StateStore) -> None:
    store.record_failure("10023", "boom", minutes(0))
    with pytest.raises(ValueError):
        store.give_up("10023", item("10023", AttentionKind.PAID, 1))
    with pytest.raises(ValueError):
        store.give_up("10023", item("other", AttentionKind.GAVE_UP, 1))
    assert store.retry_queue_size() == 1
    assert store.attention_items() == []


def test_requeue_resets_attempts_and_touches_only_gave_up_items(store: StateStore) -> None:
    for _ in range(3):
        store.record_failure("10023", "QBO answered 500", minutes(0))
    store.give_up("10023", item("10023", AttentionKind.GAVE_UP, 1, reason="QBO answered 500"))
    edited = item("10030", AttentionKind.EDITED_IN_QBO, 2)
    store.record_attention([edited])

    requeued = store.requeue(["10030", "10023", "nope", "10023"], minutes(10))
    assert requeued == ["10023"]
    assert store.attention_items() == [edited]
    entry = store.retry_entries(["10023"])["10023"]
    assert entry.attempts == 0
    assert entry.error == "QBO answered 500"
    assert entry.first_failed_at == entry.last_failed_at == minutes(10)
    assert store.record_failure("10023", "again", minutes(11)).attempts == 1

    assert store.requeue(["10023"], minutes(12)) == []  # nothing gave up any more
    assert store.requeue([], minutes(12)) == []


def test_requeue_refuses_a_naive_time_and_changes_nothing(store: StateStore) -> None:
    gave_up = item("10023", AttentionKind.GAVE_UP, 1)
    store.give_up("10023", gave_up)
    with pytest.raises(ValueError):
        store.requeue(["10023"], datetime(2025, 3, 1, 8, 0))
    assert store.attention_item("10023") == gave_up
    assert store.retry_queue_size() == 0


# --- CDC cursor and reminders ------------------------------------------------------------


def test_cdc_cursor_is_a_plain_setting(store: StateStore) -> None:
    assert store.cdc_cursor() is None
    store.set_cdc_cursor(minutes(30))
    assert store.cdc_cursor() == minutes(30)
    store.set_cdc_cursor(minutes(5))  # backwards too: the sync decides
    eastern = timezone(timedelta(hours=-5))
    store.set_cdc_cursor(datetime(2025, 3, 1, 3, 0, 0, 42, tzinfo=eastern))
    back = store.cdc_cursor()
    assert back == minutes(0) + timedelta(microseconds=42)
    assert back is not None and back.utcoffset() == timedelta(0)
    assert store.watermark() is None  # a cursor of its own


def test_last_reminded_at_round_trips(store: StateStore) -> None:
    assert store.last_reminded_at() is None
    store.set_last_reminded_at(minutes(60))
    assert store.last_reminded_at() == minutes(60)
    assert store.cdc_cursor() is None


def test_cursor_and_reminder_refuse_naive_datetimes(store: StateStore) -> None:
    store.set_cdc_cursor(minutes(1))
    with pytest.raises(ValueError):
        store.set_cdc_cursor(datetime(2025, 3, 1, 8, 0))
    with pytest.raises(ValueError):
        store.set_last_reminded_at(datetime(2025, 3, 1, 8, 0))
    assert store.cdc_cursor() == minutes(1)
    assert store.last_reminded_at() is None


def test_two_stores_share_the_new_records(backend: Backend, store: StateStore) -> None:
    other = backend.open()
    try:
        store.record_ledger([written("1", "101", 0)])
        store.record_attention([item("2", AttentionKind.PAID, 0)])
        store.record_acceptance(Acceptance("3", 1, minutes(0)))
        store.set_cdc_cursor(minutes(4))
        assert other.ledger_for_invoices(["101"])["101"].quote == "1"
        assert other.attention_item("2") is not None
        assert set(other.acceptances()) == {"3"}
        assert other.cdc_cursor() == minutes(4)
    finally:
        other.close()


# --- snapshot ----------------------------------------------------------------------------


def test_a_snapshot_of_an_empty_store(store: StateStore) -> None:
    snapshot = store.snapshot()
    assert (snapshot.watermark, snapshot.cdc_cursor, snapshot.last_reminded_at) == (None,) * 3
    assert (snapshot.retry_queue_size, snapshot.ledger_size, snapshot.attention) == (0, 0, ())
    assert snapshot.attention_counts == {kind.value: 0 for kind in AttentionKind}


def test_a_snapshot_agrees_with_the_single_reads(store: StateStore) -> None:
    store.advance_watermark(minutes(1))
    store.set_cdc_cursor(minutes(2))
    store.set_last_reminded_at(minutes(3))
    store.record_failure("1", "boom", minutes(0))
    store.record_failure("2", "boom", minutes(0))
    store.record_ledger([written("3", "103", 0), written("4", "104", 0), written("5", None, 0)])
    store.record_attention([item("6", AttentionKind.GAVE_UP, 4)])
    store.record_conflict(ConflictEntry("7", "107", "payment applied", minutes(1)))

    snapshot = store.snapshot()
    assert (snapshot.watermark, snapshot.cdc_cursor, snapshot.last_reminded_at) == (
        minutes(1),
        minutes(2),
        minutes(3),
    )
    assert (snapshot.retry_queue_size, snapshot.ledger_size) == (2, 3)
    assert list(snapshot.attention) == store.attention_items()
    assert [i.quote for i in snapshot.attention] == ["7", "6"]
    assert snapshot.attention_counts == store.attention_counts()
    assert snapshot.attention_counts["gave_up"] == snapshot.attention_counts["paid"] == 1


# --- the ledger against a model ----------------------------------------------------------

LEDGER_QUOTES = ("A", "B", "C")
# Each quote's invoices are its own (a DocNumber is one quote's), as in QBO.
ledger_steps = st.lists(
    st.tuples(
        st.sampled_from(("record", "record", "forget")),
        st.sampled_from(LEDGER_QUOTES),
        st.sampled_from((None, "1", "2", "3")),
    ),
    max_size=12,
)


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(steps=ledger_steps)
def test_the_ledger_and_its_invoice_index_follow_any_sequence_of_writes(
    store: StateStore, steps: list[tuple[str, str, str | None]]
) -> None:
    store.forget_ledger(LEDGER_QUOTES)  # each example starts from an empty ledger
    model: dict[str, LedgerEntry] = {}
    for n, (step, quote, number) in enumerate(steps):
        if step == "forget":
            store.forget_ledger([quote])
            model.pop(quote, None)
        else:
            invoice_id = None if number is None else f"{quote}-{number}"
            entry = written(quote, invoice_id, n, version=n)
            store.record_ledger([entry])
            model[quote] = entry
    every_invoice = [f"{q}-{n}" for q in LEDGER_QUOTES for n in "123"]
    assert store.ledger(LEDGER_QUOTES) == model
    assert store.ledger_size() == len(model)
    assert store.ledger_for_invoices(every_invoice) == {
        entry.invoice_id: entry for entry in model.values() if entry.invoice_id is not None
    }
    if isinstance(store, RedisStateStore):  # and the index holds nothing stale
        assert store._redis.hgetall(store.key("ledger:invoices")) == {
            entry.invoice_id: quote for quote, entry in model.items() if entry.invoice_id
        }


def test_concurrent_writers_each_get_their_own_attempt_number(backend: Backend) -> None:
    import threading

    stores = [backend.open() for _ in range(3)]
    seen: list[int] = []

    def fail(store: StateStore) -> None:
        for _ in range(8):
            seen.append(store.record_failure("10023", "still failing", T0).attempts)

    threads = [threading.Thread(target=fail, args=(opened,)) for opened in stores]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(seen) == list(range(1, 25))
    for opened in stores:
        opened.close()
