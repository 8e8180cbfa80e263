"""`run_chunks`: the producer/consumer hand-off of the chunked run, without any network.

What the engine relies on: chunks are consumed in order; the producer is never more than
`ahead` chunks ahead of the consumer; a producer's exception reaches the caller as it is
(after the chunk being written); a consumer's exception or a stop ends the producer; the
thread never outlives the call.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from itertools import pairwise

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fourdqbo.errors import UpstreamError
from fourdqbo.sync.pipeline import FIRST_CHUNK_SHARE, Interrupted, chunked, run_chunks


def keep(consumed: list[int]) -> Callable[[int, Callable[[], int | None]], None]:
    """A consumer that only notes what it was given."""
    return lambda value, upcoming: consumed.append(value)


def _no_producer_left() -> bool:
    return not any(t.name == "sync-chunk-producer" for t in threading.enumerate())


@settings(max_examples=40, deadline=None)
@given(
    count=st.integers(min_value=0, max_value=12),
    ahead=st.integers(min_value=1, max_value=3),
    readers=st.integers(min_value=1, max_value=3),
)
def test_every_chunk_is_consumed_in_order_and_the_producer_stays_within_ahead(
    count: int, ahead: int, readers: int
) -> None:
    lock = threading.Lock()
    produced: list[int] = []
    consumed: list[int] = []
    most_ahead = 0

    def produce(n: int) -> int:
        nonlocal most_ahead
        with lock:
            produced.append(n)
            # chunks produced whose consumption has not started yet
            most_ahead = max(most_ahead, len(produced) - len(consumed))
        return n * 10

    def consume(value: int, upcoming: Callable[[], int | None]) -> None:
        with lock:
            consumed.append(value // 10)
        time.sleep(0.001)

    done = run_chunks(
        range(count), produce, consume, stop=threading.Event(), ahead=ahead, readers=readers
    )
    assert done == count
    assert consumed == list(range(count))
    # While chunk k is consumed, at most `ahead` later chunks were produced.
    assert most_ahead <= ahead + 1
    assert _no_producer_left()


def test_the_next_chunk_is_produced_while_the_current_one_is_consumed() -> None:
    events: list[str] = []
    second_produced = threading.Event()

    def produce(n: int) -> int:
        events.append(f"produce {n}")
        if n == 1:
            second_produced.set()
        return n

    def consume(n: int, upcoming: Callable[[], int | None]) -> None:
        if n == 0:
            # Chunk 1 is read while chunk 0 is still being written.
            assert second_produced.wait(2)
        events.append(f"consume {n}")

    run_chunks(range(3), produce, consume, stop=threading.Event())
    assert events.index("produce 1") < events.index("consume 0")
    # ... but chunk 2 only once chunk 1 was taken: one chunk ahead, not more.
    assert events.index("produce 2") > events.index("consume 0")


def test_two_readers_read_two_chunks_at_once_but_the_first_alone() -> None:
    both = threading.Barrier(2, timeout=2)
    lock = threading.Lock()
    running = 0
    alone: list[bool] = []

    def produce(n: int) -> int:
        nonlocal running
        with lock:
            running += 1
            if n == 0:
                alone.append(running == 1)
        if n in (1, 2):
            both.wait()  # raises BrokenBarrierError unless chunks 1 and 2 are read together
        time.sleep(0.01 if n == 0 else 0)
        with lock:
            running -= 1
        return n

    consumed: list[int] = []
    run_chunks(range(6), produce, keep(consumed), stop=threading.Event(), ahead=3, readers=2)
    assert consumed == list(range(6))
    assert alone == [True]
    assert _no_producer_left()


def test_with_two_readers_an_error_is_raised_at_its_chunk_and_nothing_after_is_read() -> None:
    error = UpstreamError("4D is down", service="fourd")
    produced: list[int] = []
    consumed: list[int] = []

    def produce(n: int) -> int:
        produced.append(n)
        if n == 3:
            raise error
        return n

    with pytest.raises(UpstreamError) as raised:
        run_chunks(range(50), produce, keep(consumed), stop=threading.Event(), ahead=2, readers=2)
    assert raised.value is error
    assert consumed == [0, 1, 2]
    assert max(produced) <= 4  # the chunk read together with the failed one, no more
    assert _no_producer_left()


def test_a_producer_error_is_raised_as_it_is_after_the_chunk_in_hand() -> None:
    error = UpstreamError("4D is down", service="fourd")
    consumed: list[int] = []

    def produce(n: int) -> int:
        if n == 2:
            raise error
        return n

    with pytest.raises(UpstreamError) as raised:
        run_chunks(range(5), produce, keep(consumed), stop=threading.Event())
    assert raised.value is error  # the same error, so the same exit code
    assert consumed == [0, 1]
    assert _no_producer_left()


def test_a_failed_read_halts_the_chunk_being_written_and_its_error_is_raised() -> None:
    # Chunk 1 is being written (batch by batch) while chunk 2's read is refused: the
    # writer sees `failing` at its next batch boundary and stops; the run raises the
    # reader's own error (exit 3 for an upstream), not a generic interruption.
    error = UpstreamError("4D refused the credentials", service="fourd")
    failing = threading.Event()
    batches: list[tuple[int, int]] = []

    def produce(n: int) -> int:
        if n == 1:
            raise error
        return n

    def consume(n: int, upcoming: Callable[[], int | None]) -> None:
        for batch in range(50):
            if failing.is_set():
                raise Interrupted("interrupted: finished the batch in flight and stopped")
            batches.append((n, batch))
            time.sleep(0.01)

    with pytest.raises(UpstreamError) as raised:
        run_chunks(range(3), produce, consume, stop=threading.Event(), failing=failing)
    assert raised.value is error
    assert failing.is_set()
    assert 0 < len(batches) < 50  # chunk 0 was cut short, chunk 2 never written
    assert {n for n, _ in batches} == {0}
    assert _no_producer_left()


def test_a_consumer_error_stops_the_producer() -> None:
    produced: list[int] = []

    def produce(n: int) -> int:
        produced.append(n)
        return n

    def consume(n: int, upcoming: Callable[[], int | None]) -> None:
        if n == 1:
            raise RuntimeError("write failed")

    with pytest.raises(RuntimeError, match="write failed"):
        run_chunks(range(100), produce, consume, stop=threading.Event())
    assert len(produced) <= 3  # chunk 1 in hand, chunk 2 read ahead, nothing more
    assert _no_producer_left()


def test_stop_ends_the_run_between_chunks_with_interrupted() -> None:
    stop = threading.Event()
    consumed: list[int] = []

    def consume(n: int, upcoming: Callable[[], int | None]) -> None:
        consumed.append(n)
        if n == 1:
            stop.set()  # SIGTERM while chunk 1 is written

    with pytest.raises(Interrupted) as raised:
        run_chunks(range(10), lambda n: n, consume, stop=stop)
    assert raised.value.exit_code == 3
    assert consumed == [0, 1]
    assert _no_producer_left()


def test_stop_before_the_first_chunk_consumes_nothing() -> None:
    stop = threading.Event()
    stop.set()
    consumed: list[int] = []
    with pytest.raises(Interrupted):
        run_chunks(range(3), lambda n: n, keep(consumed), stop=stop)
    assert consumed == []


def test_ahead_and_readers_must_be_at_least_one() -> None:
    with pytest.raises(ValueError):
        run_chunks([1], lambda n: n, lambda n, upcoming: None, stop=threading.Event(), ahead=0)
    with pytest.raises(ValueError):
        run_chunks([1], lambda n: n, lambda n, upcoming: None, stop=threading.Event(), readers=0)


def test_write_batches_are_sized_to_fill_the_request_limit_exactly() -> None:
    from fourdqbo.sync.load import write_batch_size

    assert write_batch_size(500, 40) == 25  # 20 batches of 25 fill 500; 16 of 30 only 480
    assert write_batch_size(600, 40) == 30
    assert write_batch_size(499, 40) == 30  # no divisor worth having: full batches
    assert write_batch_size(500, 10) == 30  # 20 batches would pass the batch limit


@settings(max_examples=50, deadline=None)
@given(count=st.integers(min_value=0, max_value=400), size=st.integers(min_value=1, max_value=300))
def test_chunked_keeps_the_order_with_a_small_first_chunk(count: int, size: int) -> None:
    numbers = [f"Q{n}" for n in range(count)]
    chunks = list(chunked(numbers, size))
    assert [n for chunk in chunks for n in chunk] == numbers
    first = -(-size // FIRST_CHUNK_SHARE)
    if chunks:
        assert len(chunks[0]) == min(first, count)
        # Every chunk but the last doubles the one before until it is full size.
        for before, chunk in pairwise(chunks[:-1]):
            assert len(chunk) == min(2 * len(before), size)
        assert all(1 <= len(chunk) <= size for chunk in chunks)


def test_the_first_chunk_is_an_eighth_of_the_others_and_the_next_ones_double() -> None:
    sizes = [len(chunk) for chunk in chunked(list(range(1000)), 250)]
    assert sizes == [32, 64, 128, 250, 250, 250, 26]
    assert [len(c) for c in chunked([1, 2, 3], 5)] == [1, 2]
    assert [len(c) for c in chunked([1, 2, 3], 5, first_share=1)] == [3]
    with pytest.raises(ValueError):
        next(chunked([1], 0))
