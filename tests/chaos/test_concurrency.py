"""Concurrency: one sync at a time, checked against the Redis lock's history.

The last two tests come from defects this suite found (docs/reliability.md). A run frozen
(SIGSTOP) past its lock's TTL while it waits to send its last batch:
- used to finish with exit 1 and advance the watermark without the lock; now exit 3
  (fixed in the engine: the lock is checked synchronously, also after the last batch);
- still sends that one batch when it wakes, although another run holds the lock by then:
  with QBO's duplicate-DocNumber warning off, duplicate invoices. OPEN: needs a lock check
  after the HTTP client's pacing wait, right before a write goes out.
"""

from __future__ import annotations

from collections.abc import Iterator
from types import ModuleType
from typing import Any

import pytest

pytestmark = pytest.mark.integration

QUOTES = 100


def test_eight_runs_started_together_one_works_seven_exit_75_within_a_second(
    chaos: ModuleType, redis_url: str, world_options: dict[str, object]
) -> None:
    result = chaos.eight_at_once(redis_url=redis_url, quotes=QUOTES, **world_options)
    assert result.problems == []
    assert sorted(result.exits) == [1] + [75] * 7
    assert len(result.loser_seconds) == 7
    assert max(result.loser_seconds) <= chaos.LOSER_DEADLINE


def test_heartbeat_held_up_past_half_the_ttl_keeps_the_lock(
    chaos: ModuleType, redis_url: str, world_options: dict[str, object]
) -> None:
    result = chaos.heartbeat_delayed(redis_url=redis_url, quotes=QUOTES, **world_options)
    assert result.problems == []
    assert result.exits == [1, 75, 75, 75]


def test_lock_history_replay_finds_two_owners() -> None:
    from datetime import UTC, datetime, timedelta

    from bench.chaos import lock_history_problems
    from fourdqbo.state.base import LockEvent

    t0 = datetime(2025, 1, 1, tzinfo=UTC)

    def event(kind: str, token: str, seconds: float) -> LockEvent:
        return LockEvent(kind, token, t0 + timedelta(seconds=seconds), ttl_ms=3000)

    fine = [
        event("acquired", "a", 0),
        event("expired", "a", 3.5),
        event("acquired", "b", 3.5),
        event("lost", "a", 4),
        event("released", "b", 6),
    ]
    assert lock_history_problems(fine) == []
    assert lock_history_problems([event("acquired", "a", 0), event("acquired", "b", 1)])
    early = [event("acquired", "a", 0), event("expired", "a", 1), event("acquired", "b", 1)]
    assert lock_history_problems(early) == ["a taken over after 1.00 s, before its TTL"]
    assert lock_history_problems([event("acquired", "a", 0), event("released", "b", 1)])


@pytest.fixture(scope="module")
def frozen_while_pacing(chaos: ModuleType, redis_url: str) -> Iterator[Any]:
    """A run frozen (SIGSTOP) past its TTL while it waits to send its last invoice batch;
    another run takes the lock, finishes; then the first is resumed. Strict company: no
    duplicate-DocNumber warning, so a late batch shows as duplicate invoices."""
    yield chaos.stopped_past_ttl(
        redis_url=redis_url,
        quotes=80,  # 2 invoice batches: the frozen one is the last
        after_batches=1,
        stop_delay=0.3,
        pace=1.5,
        resume_after_taker=True,
    )


def test_run_frozen_past_its_ttl_stops_with_exit_3(frozen_while_pacing: Any) -> None:
    assert frozen_while_pacing.exits[0] == 3, frozen_while_pacing.line()


def test_run_frozen_past_its_ttl_sends_nothing_after_it_wakes(frozen_while_pacing: Any) -> None:
    late = [p for p in frozen_while_pacing.problems if "after it resumed" in p]
    assert late == [], frozen_while_pacing.line()
    audit = frozen_while_pacing.audit
    assert audit is not None and audit.duplicates == [], audit.summary()
