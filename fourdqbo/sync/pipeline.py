"""The run as a pipeline of chunks: the next chunk is read while this one is written.

`run_chunks(chunks, produce, consume, stop=…)` runs `produce` (extract and plan one
chunk: reads only) in `readers` producer threads and `consume` (write it) in the calling
thread, in order, with at most `ahead` chunks being produced or produced but not yet
taken (1: while chunk k is written, only chunk k+1 is read and held), so memory does not
grow with the window (DESIGN.md "Large windows"). `consume(value, upcoming)` may look at
the next chunk: `upcoming()` is its produced value once its reader is done, else None
(the loader creates the next chunk's customers while this chunk's invoices are written).

Stopping and failing keep the unchunked run's semantics:
- an exception in the producer is raised in the calling thread, as it is, when the
  consumer asks for that chunk; it also sets `failing`, which the consumer checks between
  its write batches, so that nothing more is written once an upstream refused (exit 3:
  "nothing more was written"); the consumer's `Interrupted` is then replaced by the
  reader's own error;
- an exception in the consumer stops the producers (they finish the reads in flight);
- `stop` set (SIGTERM): no new chunk is started or taken; `Interrupted` is raised.
`run_chunks` returns only when every chunk was consumed, and never leaves its thread
running.

`chunked(numbers, size)` cuts the window: the first chunk is a `FIRST_CHUNK_SHARE`th of
`size`, each next one twice the one before until `size`. The first write waits for the
whole first chunk (its fetch and its look-ups in QBO, which for new patients cost one
request unit each at the limiter's pace: 186 patients of a 250-quote chunk are 22 s at
500 a minute); a small first chunk starts the writes after a fraction of that, and the
later chunks are read while it is written. Doubling, each chunk's fetch takes about as
long as the writes of the one before: a full second chunk after a small first left the
writer waiting for it (2.5 s of a 10,000-quote backfill's start on the benchmark).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from fourdqbo.errors import FourdqboError

log = logging.getLogger(__name__)

C = TypeVar("C")
P = TypeVar("P")

POLL_SECONDS = 0.05  # how often a waiting thread looks at the stop and cancel flags
FIRST_CHUNK_SHARE = 8  # the first chunk is an eighth of SYNC_CHUNK_SIZE (rounded up)
T = TypeVar("T")


class Interrupted(FourdqboError):
    """SIGTERM/SIGINT or a lost lock stopped the run between two batches."""

    exit_code = 3


@dataclass(frozen=True)
class _Failed:
    error: BaseException


@dataclass(frozen=True)
class _Produced(Generic[P]):
    value: P


_END = object()  # every chunk was produced
_STOPPED = object()  # the producer saw `stop` and started no further chunk


def chunked(
    numbers: Sequence[T], size: int, *, first_share: int = FIRST_CHUNK_SHARE
) -> Iterator[tuple[T, ...]]:
    """`numbers` in order, in chunks of `size`: the first one `size / first_share` (rounded
    up, at least 1), the run's first write waits for that one only; each next one twice
    the one before, up to `size`."""
    if size < 1 or first_share < 1:
        raise ValueError("a chunk holds at least one quote")
    start, step = 0, -(-size // first_share)
    while start < len(numbers):
        yield tuple(numbers[start : start + step])
        start, step = start + step, min(2 * step, size)


def run_chunks(
    chunks: Iterable[C],
    produce: Callable[[C], P],
    consume: Callable[[P, Callable[[], P | None]], None],
    *,
    stop: threading.Event,
    ahead: int = 1,
    readers: int = 1,
    failing: threading.Event | None = None,
) -> int:
    """Produce chunks in `readers` threads, consume them in order here; returns how many.

    At most `ahead` chunks are being produced or waiting to be taken. With two readers,
    one chunk's 4D fetch goes on while another waits on QBO's limiter for its look-ups;
    the first chunk is read alone (a second reader would take half of 4D's connections
    from the chunk the first write waits for).
    """
    if ahead < 1 or readers < 1:
        raise ValueError("the producer must be allowed at least one chunk ahead")
    room = threading.Semaphore(ahead)
    cancel = threading.Event()
    ready = threading.Condition()
    slots: dict[int, object] = {}  # chunk index -> what its reader left
    source = iter(chunks)
    taken = {"next": 0, "over": False}  # the next index to hand a reader; source spent
    # Which side waited for the other (seconds), for the log: where a run's time went.
    waited = {"writer": 0.0, "first": 0.0, "reader": 0.0}

    def wait_for_room() -> bool:
        started = time.monotonic()
        try:
            while not room.acquire(timeout=POLL_SECONDS):
                if cancel.is_set():
                    return False
            return True
        finally:
            with ready:
                waited["reader"] += time.monotonic() - started

    def leave(index: int, word: object) -> None:
        with ready:
            slots[index] = word
            ready.notify_all()

    def producer() -> None:
        while wait_for_room() and not cancel.is_set():
            with ready:
                if taken["over"]:
                    return
                index = taken["next"]
                taken["next"] += 1
                if stop.is_set():
                    taken["over"] = True
                    word: object = _STOPPED
                else:
                    try:
                        chunk = next(source)
                    except StopIteration:
                        taken["over"] = True
                        word = _END
                    except BaseException as exc:  # the window itself failed
                        taken["over"] = True
                        word = _Failed(exc)
                    else:
                        word = None
            if word is not None:
                leave(index, word)
                return
            try:
                leave(index, _Produced(produce(chunk)))
            except BaseException as exc:  # handed to the consuming thread, raised there
                with ready:
                    taken["over"] = True  # no chunk after a failed one is read
                leave(index, _Failed(exc))
                if failing is not None:
                    failing.set()
                return

    threads = [threading.Thread(target=producer, name="sync-chunk-producer", daemon=True)]
    threads[0].start()
    consumed = 0

    def upcoming() -> P | None:
        """The chunk after the one being consumed, if its reader is done with it."""
        with ready:
            word = slots.get(consumed + 1)
        return word.value if isinstance(word, _Produced) else None

    try:
        while True:
            started = time.monotonic()
            item = _take(slots, ready, consumed, threads)
            waited["writer"] += time.monotonic() - started
            if not consumed:
                waited["first"] = waited["writer"]
                for _ in range(readers - 1):  # the first chunk is in: read ahead together
                    threads.append(
                        threading.Thread(target=producer, name="sync-chunk-producer", daemon=True)
                    )
                    threads[-1].start()
            if item is _END:
                return consumed
            if item is _STOPPED:
                raise Interrupted("interrupted: finished the batch in flight and stopped")
            if isinstance(item, _Failed):
                raise item.error
            assert isinstance(item, _Produced)
            room.release()  # a reader may read the next chunk while this one is written
            if stop.is_set():
                raise Interrupted("interrupted: finished the batch in flight and stopped")
            try:
                consume(item.value, upcoming)
            except Interrupted:
                failed = _failure(slots, ready)
                if failed is not None:
                    raise failed.error from None  # what stopped the writes, as it was
                raise
            consumed += 1
    finally:
        cancel.set()
        for thread in threads:
            thread.join()
        log.info(
            "pipeline: %d chunks written; the writer waited %.2fs for chunks (%.2fs of it "
            "for the first), the readers %.2fs for room",
            consumed,
            waited["writer"],
            waited["first"],
            waited["reader"],
        )


def _failure(slots: dict[int, object], ready: threading.Condition) -> _Failed | None:
    with ready:
        return next((word for word in slots.values() if isinstance(word, _Failed)), None)


def _take(
    slots: dict[int, object],
    ready: threading.Condition,
    index: int,
    threads: list[threading.Thread],
) -> object:
    """What the reader of chunk `index` left, once it is there."""
    with ready:
        while index not in slots:
            ready.wait(POLL_SECONDS)
            if index not in slots and not any(t.is_alive() for t in threads):
                # Cannot happen (a reader always leaves a last word); never hang on it.
                return _Failed(RuntimeError("the chunk producer ended without a word"))
        return slots.pop(index)


__all__ = ["FIRST_CHUNK_SHARE", "Interrupted", "chunked", "run_chunks"]
