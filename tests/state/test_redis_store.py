"""What only the Redis backend does: key layout, TTL expiry, stolen locks, unreachable Redis."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
import redis

from fourdqbo.errors import EXIT_UPSTREAM, StateStoreError
from fourdqbo.state import ConflictEntry, LockLost
from fourdqbo.state.items import Acceptance, AttentionItem, AttentionKind, Difference, LedgerEntry
from fourdqbo.state.redis_store import RedisStateStore, describe_redis_error
from tests.fixtures.redis import RedisServer
from tests.state.conftest import REALM

T0 = datetime(2025, 3, 1, 8, 0, tzinfo=UTC)


@pytest.fixture
def store(redis_url: str, state_prefix: str) -> Iterator[RedisStateStore]:
    opened = RedisStateStore(redis_url, state_prefix, REALM)
    yield opened
    opened.close()


def wait_until(condition, timeout: float = 5.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return bool(condition())


def test_every_key_lives_under_prefix_and_realm(
    store: RedisStateStore, state_prefix: str, redis_client: redis.Redis
) -> None:
    store.advance_watermark(T0)
    lock = store.acquire_lock("run-a", ttl_seconds=30)
    assert lock is not None
    store.record_failure("1", "boom", T0)
    store.record_conflict(ConflictEntry("2", "9", "paid", T0))
    store.append_run({"run_id": "run-a"})

    keys = set(redis_client.scan_iter(match=f"{state_prefix}:*"))
    namespace = f"{state_prefix}:{REALM}:"
    assert all(key.startswith(namespace) for key in keys)
    assert {key[len(namespace) :] for key in keys} == {
        "watermark",
        "lock",
        "lock_last_token",
        "lock_history",
        "retry",
        "conflicts",
        "runs",
    }
    assert redis_client.type(namespace + "retry") == "hash"
    assert redis_client.type(namespace + "conflicts") == "hash"
    assert redis_client.type(namespace + "runs") == "list"
    assert redis_client.get(namespace + "watermark") == "2025-03-01T08:00:00.000000Z"
    lock.release()
    assert redis_client.exists(namespace + "lock") == 0


def test_lock_value_is_json_with_owner_details_and_a_ttl(
    store: RedisStateStore, redis_client: redis.Redis
) -> None:
    lock = store.acquire_lock("run-a", ttl_seconds=7)
    assert lock is not None
    value = json.loads(redis_client.get(store.key("lock")))
    assert set(value) == {"token", "run_id", "host", "pid", "since"}
    assert value["token"] == lock.token and value["run_id"] == "run-a"
    assert 6000 < redis_client.pttl(store.key("lock")) <= 7000
    assert len(lock.token) >= 32  # unguessable


def test_an_expired_lock_can_be_taken_and_the_old_owner_cannot_touch_it(
    store: RedisStateStore,
) -> None:
    old = store.acquire_lock("run-a", ttl_seconds=0.3)
    assert old is not None
    assert store.acquire_lock("run-b", ttl_seconds=30) is None
    assert wait_until(lambda: store.lock_holder() is None, timeout=2)

    new = store.acquire_lock("run-b", ttl_seconds=30)
    assert new is not None
    assert old.extend() is False
    assert old.release() is False
    holder = store.lock_holder()
    assert holder is not None and holder.token == new.token
    new.release()
    assert [(e.event, e.token) for e in store.lock_history()] == [
        ("acquired", old.token),
        ("expired", old.token),
        ("acquired", new.token),
        ("released", new.token),
    ]


def test_extend_resets_the_ttl(store: RedisStateStore, redis_client: redis.Redis) -> None:
    lock = store.acquire_lock("run-a", ttl_seconds=0.5)
    assert lock is not None
    time.sleep(0.3)
    assert lock.extend() is True
    assert redis_client.pttl(store.key("lock")) > 400
    time.sleep(0.3)  # 0.6 s after acquisition: alive only because of the extension
    assert store.lock_holder() is not None
    lock.release()


def test_heartbeat_marks_the_lock_lost_when_another_owner_takes_it(
    store: RedisStateStore, redis_client: redis.Redis
) -> None:
    lock = store.acquire_lock("run-a", ttl_seconds=3)
    assert lock is not None
    lock.start_heartbeat(interval=0.05)
    # An operator runs `sync unlock` and another run takes the lock at once.
    assert store.break_lock() is not None
    thief = store.acquire_lock("run-b", ttl_seconds=30)
    assert thief is not None

    assert wait_until(lambda: lock.lost, timeout=2)
    with pytest.raises(LockLost) as raised:
        lock.check()
    assert raised.value.exit_code == EXIT_UPSTREAM
    assert lock.release() is False
    holder = store.lock_holder()
    assert holder is not None and holder.token == thief.token
    assert [e.event for e in store.lock_history()] == [
        "acquired",
        "broken",
        "acquired",
        "lost",
    ]
    thief.release()


def test_heartbeat_marks_the_lock_lost_when_its_value_is_overwritten(
    store: RedisStateStore, redis_client: redis.Redis
) -> None:
    lock = store.acquire_lock("run-a", ttl_seconds=3)
    assert lock is not None
    lock.start_heartbeat(interval=0.05)
    redis_client.set(store.key("lock"), json.dumps({"token": "someone-else"}), px=3000)
    assert wait_until(lambda: lock.lost, timeout=2)
    lock.stop_heartbeat()


def test_watermark_advance_is_atomic_under_concurrent_writers(
    redis_url: str, state_prefix: str
) -> None:
    """Many writers advancing to different instants: the largest wins, nothing regresses."""
    import threading

    stores = [RedisStateStore(redis_url, state_prefix, REALM) for _ in range(4)]
    instants = [datetime(2025, 3, 1, 8, minute, tzinfo=UTC) for minute in range(40)]
    moved: list[bool] = []

    def advance(store: RedisStateStore, mine: list[datetime]) -> None:
        for instant in mine:
            moved.append(store.advance_watermark(instant))

    threads = [
        threading.Thread(target=advance, args=(stores[n], instants[n::4][::-1])) for n in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert stores[0].watermark() == instants[-1]
    assert 1 <= moved.count(True) <= 40
    for opened in stores:
        opened.close()


def test_retry_attempts_count_atomically(redis_url: str, state_prefix: str) -> None:
    import threading

    stores = [RedisStateStore(redis_url, state_prefix, REALM) for _ in range(4)]

    def fail(store: RedisStateStore) -> None:
        for _ in range(25):
            store.record_failure("10023", "still failing", T0)

    threads = [threading.Thread(target=fail, args=(opened,)) for opened in stores]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert stores[0].retry_queue()[0].attempts == 100
    for opened in stores:
        opened.close()


def test_lock_history_is_capped(store: RedisStateStore, monkeypatch: pytest.MonkeyPatch) -> None:
    import fourdqbo.state.redis_store as module

    monkeypatch.setattr(module, "LOCK_HISTORY_LIMIT", 5)
    tokens = []
    for n in range(4):
        lock = store.acquire_lock(f"run-{n}")
        assert lock is not None
        tokens.append(lock.token)
        lock.release()
    history = store.lock_history()
    assert len(history) == 5
    assert history[-1].event == "released" and history[-1].token == tokens[-1]


# --- unreachable Redis -------------------------------------------------------------------


def test_unreachable_redis_is_a_quick_one_line_state_store_error(
    unreachable_redis_url: str,
) -> None:
    store = RedisStateStore(unreachable_redis_url, "fourdqbo", REALM)
    for call in (
        store.ping,
        store.watermark,
        lambda: store.acquire_lock("run-a"),
        lambda: store.advance_watermark(T0),
        store.retry_queue,
        lambda: store.append_run({}),
    ):
        started = time.monotonic()
        with pytest.raises(StateStoreError) as raised:
            call()
        assert time.monotonic() - started < 2
        assert str(raised.value) == (
            f"state store unreachable at {unreachable_redis_url} (Connection refused)"
        )
        assert raised.value.exit_code == EXIT_UPSTREAM
        assert "\n" not in str(raised.value)


def test_the_redis_password_never_appears_in_the_error(unreachable_redis_url: str) -> None:
    url = unreachable_redis_url.replace("redis://", "redis://fourdqbo:s3cr3t-pw@")
    store = RedisStateStore(url, "fourdqbo", REALM)
    with pytest.raises(StateStoreError) as raised:
        store.ping()
    assert "s3cr3t-pw" not in str(raised.value)
    assert "fourdqbo:***@127.0.0.1" in str(raised.value)


def test_a_redis_that_refuses_a_command_is_a_state_store_error(redis_url: str) -> None:
    error = redis.exceptions.ResponseError("WRONGTYPE Operation against a key")
    assert describe_redis_error(error, redis_url) == (
        f"state store at {redis_url} refused a command (WRONGTYPE Operation against a key)"
    )


def test_wrong_type_key_is_reported_not_crashing(
    store: RedisStateStore, redis_client: redis.Redis
) -> None:
    redis_client.set(store.key("retry"), "not a hash")
    with pytest.raises(StateStoreError, match="refused a command"):
        store.retry_queue()


def test_a_restarted_redis_is_picked_up_again(redis_server: RedisServer) -> None:
    """Redis going away fails the call (exit 3); once it is back, the same store works."""
    store = RedisStateStore(redis_server.url, "fourdqbo", REALM)
    store.advance_watermark(T0)
    redis_server.stop()
    with pytest.raises(StateStoreError, match="unreachable"):
        store.watermark()
    redis_server.start()
    assert store.watermark() is None  # a fresh server without persistence
    store.advance_watermark(T0)
    assert store.watermark() == T0
    store.close()


def test_heartbeat_survives_a_short_redis_outage(redis_server: RedisServer) -> None:
    """A blip shorter than the TTL is not a loss; one longer than the TTL is."""
    store = RedisStateStore(redis_server.url, "fourdqbo", REALM)
    lock = store.acquire_lock("run-a", ttl_seconds=2.0)
    assert lock is not None
    lock.start_heartbeat(interval=0.1)
    redis_server.stop()
    time.sleep(0.3)
    assert lock.lost is False
    redis_server.start()
    # the restarted server lost the key (no persistence): the next extension finds it gone
    assert wait_until(lambda: lock.lost, timeout=3)
    lock.stop_heartbeat()  # it may still be noting the loss
    store.close()


# --- 0.2 records -------------------------------------------------------------------------


def _ledger(quote: str, invoice_id: str | None, minute: int = 0) -> LedgerEntry:
    return LedgerEntry(
        quote, invoice_id, 3, "0", "run-1", datetime(2025, 3, 1, 8, minute, tzinfo=UTC)
    )


def test_the_new_records_have_their_own_keys(
    store: RedisStateStore, state_prefix: str, redis_client: redis.Redis
) -> None:
    store.record_ledger([_ledger("1", "101")])
    store.record_attention(
        [AttentionItem("2", AttentionKind.PAID, 1, "9", "paid", T0, (Difference("x", "1", "2"),))]
    )
    store.record_acceptance(Acceptance("3", 1, T0))
    store.set_cdc_cursor(T0)
    store.set_last_reminded_at(T0)
    namespace = f"{state_prefix}:{REALM}:"
    keys = {key[len(namespace) :] for key in redis_client.scan_iter(match=f"{state_prefix}:*")}
    assert keys == {
        "ledger",
        "ledger:invoices",
        "attention",
        "accepted",
        "cdc_cursor",
        "reminded_at",
    }
    for name in ("ledger", "ledger:invoices", "attention", "accepted"):
        assert redis_client.type(namespace + name) == "hash"
    assert redis_client.get(namespace + "cdc_cursor") == "2025-03-01T08:00:00.000000Z"
    assert redis_client.get(namespace + "reminded_at") == "2025-03-01T08:00:00.000000Z"
    stored = json.loads(redis_client.hget(namespace + "ledger", "1"))
    assert stored["written_at"] == "2025-03-01T08:00:00.000000Z"
    assert stored["invoice_id"] == "101" and stored["version"] == 3
    stored_item = json.loads(redis_client.hget(namespace + "attention", "2"))
    assert stored_item["kind"] == "paid"
    assert stored_item["differences"] == [{"field": "x", "qbo": "1", "quote": "2"}]


def test_the_invoice_index_holds_exactly_the_current_invoices(
    store: RedisStateStore, redis_client: redis.Redis
) -> None:
    index = store.key("ledger:invoices")
    store.record_ledger([_ledger("A", "145"), _ledger("B", "146")])
    assert redis_client.hgetall(index) == {"145": "A", "146": "B"}
    store.record_ledger([_ledger("A", "201", 1)])
    assert redis_client.hgetall(index) == {"201": "A", "146": "B"}
    store.record_ledger([_ledger("B", None, 2)])
    assert redis_client.hgetall(index) == {"201": "A"}
    store.record_ledger([_ledger("B", "201", 3)])  # B takes A's invoice (a hand edit)
    store.record_ledger([_ledger("A", "300", 4)])  # A moving on leaves B's entry alone
    assert redis_client.hgetall(index) == {"201": "B", "300": "A"}
    store.forget_ledger(["A", "B"])
    assert redis_client.exists(index, store.key("ledger")) == 0


def test_a_stale_index_entry_never_names_the_wrong_quote(
    store: RedisStateStore, redis_client: redis.Redis
) -> None:
    store.record_ledger([_ledger("A", "145")])
    redis_client.hset(store.key("ledger:invoices"), "999", "A")  # left by a hand edit
    assert store.ledger_for_invoices(["999", "145"]) == {"145": _ledger("A", "145")}


def test_requeue_decides_again_when_an_item_changes_under_it(
    store: RedisStateStore, redis_url: str, state_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another run replaces the gave_up item while `sync retry` is between read and write:
    the transaction is retried on what is there now, so the new item is not lost."""
    import fourdqbo.state.redis_store as module

    store.give_up("10023", AttentionItem("10023", AttentionKind.GAVE_UP, 3, None, "boom", T0))
    store.give_up("10024", AttentionItem("10024", AttentionKind.GAVE_UP, 3, None, "boom", T0))
    other = RedisStateStore(redis_url, state_prefix, REALM)
    paid = AttentionItem("10023", AttentionKind.PAID, 4, "145", "paid", T0)
    real = module.requeued_retry
    calls: list[str] = []

    def meddling(quote, document, at):  # type: ignore[no-untyped-def]
        if not calls:
            other.record_attention([paid])
        calls.append(quote)
        return real(quote, document, at)

    monkeypatch.setattr(module, "requeued_retry", meddling)
    assert store.requeue(["10023", "10024"], T0) == ["10024"]
    assert len(calls) > 2  # it ran again
    assert store.attention_items() == [paid]
    assert set(store.retry_entries(["10023", "10024"])) == {"10024"}
    other.close()


def test_unreachable_redis_fails_the_new_calls_too(unreachable_redis_url: str) -> None:
    store = RedisStateStore(unreachable_redis_url, "fourdqbo", REALM)
    for call in (
        lambda: store.ledger(["1"]),
        lambda: store.record_ledger([_ledger("1", "2")]),
        store.attention_items,
        lambda: store.requeue(["1"], T0),
        store.cdc_cursor,
    ):
        with pytest.raises(StateStoreError, match="unreachable") as raised:
            call()
        assert raised.value.exit_code == EXIT_UPSTREAM


def test_a_quote_moving_between_queue_and_item_is_always_in_exactly_one(
    store: RedisStateStore, redis_client: redis.Redis
) -> None:
    """give_up and requeue are single transactions: a reader never sees the quote in both
    places or in neither, however their steps interleave with its reads."""
    import threading

    gave_up = AttentionItem("10023", AttentionKind.GAVE_UP, 3, None, "boom", T0)
    store.record_failure("10023", "boom", T0)
    done = threading.Event()

    def move_back_and_forth() -> None:
        for _ in range(150):
            store.give_up("10023", gave_up)
            assert store.requeue(["10023"], T0) == ["10023"]
        done.set()

    mover = threading.Thread(target=move_back_and_forth)
    mover.start()
    seen = set()
    while not done.is_set():
        pipe = redis_client.pipeline(transaction=True)
        pipe.hexists(store.key("retry"), "10023")
        pipe.hexists(store.key("attention"), "10023")
        seen.add(tuple(pipe.execute()))
    mover.join()
    assert seen <= {(True, False), (False, True)}
    assert len(seen) == 2  # both places were seen: the reader really raced the mover


def test_a_store_closed_while_the_loss_is_being_noted_is_a_log_line(
    store: RedisStateStore, caplog: pytest.LogCaptureFixture
) -> None:
    """The engine closes the store once it sees `lost`; the heartbeat thread may still be
    writing the note of the loss then. That must not end the thread with a traceback."""
    lock = store.acquire_lock("run-a", ttl_seconds=2.0)
    assert lock is not None

    def closed(reason: str) -> None:
        raise ValueError("I/O operation on closed file.")

    lock._on_lost = closed  # type: ignore[method-assign]
    with caplog.at_level(logging.WARNING, logger="fourdqbo.state.base"):
        lock._mark_lost("it expired or was taken by another owner")
    assert lock.lost is True
    assert (
        "could not record the loss of the sync lock: I/O operation on closed file." in caplog.text
    )
    lock.release()
