"""The run as a pipeline of chunks: the next chunk is read while this one is written.

`run_chunks(chunks, produce, consume, stop=…)` runs `produce` (extract and plan one
chunk: reads only) in a producer thread and `consume` (write it) in the calling thread,
with a hand-off of at most `ahead` chunks produced but not yet taken (1: while chunk k
is written, only chunk k+1 is read and held), so memory does not grow with the window
(DESIGN.md "Large windows").

Stopping and failing keep the unchunked run's semantics:
- an exception in the producer is raised in the calling thread, as it is, when the
  consumer asks for that chunk (the chunk being written is finished first);
- an exception in the consumer stops the producer (it finishes the read in flight);
- `stop` set (SIGTERM): no new chunk is started or taken; `Interrupted` is raised.
`run_chunks` returns only when every chunk was consumed, and never leaves its thread
running.

`chunked(numbers, size)` cuts the window: the first chunk is a `FIRST_CHUNK_SHARE`th of
`size`, the rest `size`. The first write waits for the whole first chunk (its fetch and
its look-ups in QBO, which for new patients cost one request unit each at the limiter's
pace: 186 patients of a 250-quote chunk are 22 s at 500 a minute); a small first chunk
starts the writes after a fraction of that, and the later chunks are read while it is
written.
"""

from __future__ import annotations

import logging
import queue
import threading
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
    """`numbers` in order, in chunks of `size`, the first one `size / first_share` (rounded
    up, at least 1): the run's first write waits for that one only."""
    if size < 1 or first_share < 1:
        raise ValueError("a chunk holds at least one quote")
    start, step = 0, -(-size // first_share)
    while start < len(numbers):
        yield tuple(numbers[start : start + step])
        start, step = start + step, size


def run_chunks(
    chunks: Iterable[C],
    produce: Callable[[C], P],
    consume: Callable[[P], None],
    *,
    stop: threading.Event,
    ahead: int = 1,
) -> int:
    """Produce each chunk in a thread, consume them in order here; returns how many."""
    if ahead < 1:
        raise ValueError("the producer must be allowed at least one chunk ahead")
    handoff: queue.Queue[object] = queue.Queue()
    room = threading.Semaphore(ahead)
    cancel = threading.Event()

    def wait_for_room() -> bool:
        while not room.acquire(timeout=POLL_SECONDS):
            if cancel.is_set():
                return False
        return True

    def producer() -> None:
        try:
            for chunk in chunks:
                if not wait_for_room():
                    return
                if cancel.is_set():
                    return
                if stop.is_set():
                    handoff.put(_STOPPED)
                    return
                handoff.put(_Produced(produce(chunk)))
            handoff.put(_END)
        except BaseException as exc:  # handed to the consuming thread, raised there
            handoff.put(_Failed(exc))

    thread = threading.Thread(target=producer, name="sync-chunk-producer", daemon=True)
    thread.start()
    consumed = 0
    try:
        while True:
            item = _take(handoff, thread)
            if item is _END:
                return consumed
            if item is _STOPPED:
                raise Interrupted("interrupted: finished the batch in flight and stopped")
            if isinstance(item, _Failed):
                raise item.error
            assert isinstance(item, _Produced)
            room.release()  # the producer may read the next chunk while this one is written
            if stop.is_set():
                raise Interrupted("interrupted: finished the batch in flight and stopped")
            consume(item.value)
            consumed += 1
    finally:
        cancel.set()
        thread.join()


def _take(handoff: queue.Queue[object], thread: threading.Thread) -> object:
    while True:
        try:
            return handoff.get(timeout=POLL_SECONDS)
        except queue.Empty:
            if not thread.is_alive() and handoff.empty():
                # Cannot happen (the producer always leaves a last word); never hang on it.
                return _Failed(RuntimeError("the chunk producer ended without a word"))


__all__ = ["FIRST_CHUNK_SHARE", "Interrupted", "chunked", "run_chunks"]
