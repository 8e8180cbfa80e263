"""Crash consistency: SIGKILL a run while it fetches, creates customers or writes invoices
(creates in a first sync; updates, deletes and creates in a later one).

After each kill the lock frees itself within its TTL, the watermark stays where it was,
and one clean run converges: one invoice per completed quote, equal to its draft, no
duplicate customer, no invoice for a quote that is not completed.
"""

from __future__ import annotations

from types import ModuleType

import pytest

pytestmark = pytest.mark.integration

QUOTES = 120  # 63 fetches, 2 customer batches, 3 invoice batches with seed 1
SEED = 1


@pytest.mark.parametrize(
    ("phase", "k", "delay"),
    [("fetch", 30, 0.0), ("customers", 1, 0.05), ("invoices", 2, 0.0), ("updates", 2, 0.0)],
    ids=[
        "while-fetching",
        "while-creating-customers",
        "while-writing-invoices",
        "while-updating-and-deleting-after-changes-in-4d",
    ],
)
def test_killed_run_frees_its_lock_keeps_the_watermark_and_the_next_run_converges(
    chaos: ModuleType,
    redis_url: str,
    world_options: dict[str, object],
    phase: str,
    k: int,
    delay: float,
) -> None:
    point = chaos.KillPoint(phase, k, delay)
    result = chaos.crash_once(point, redis_url=redis_url, seed=SEED, quotes=QUOTES, **world_options)
    assert result.reached, f"the run ended before {point}"
    assert result.killed
    assert result.problems == []
    assert result.lock_free_after is not None
    assert result.lock_free_after <= chaos.LOCK_TTL + chaos.LOCK_FREE_SLACK
    assert result.watermark_kept
    # The seed's paid invoice is a conflict: new (exit 1) in a first sync, already open
    # and so quiet (exit 0) in a run after the first sync found it.
    assert result.runs[-1] == (0 if phase == "updates" else 1), result.runs
    assert result.audit is not None and result.audit.converged, result.audit.summary()
    if phase != "fetch":
        assert result.writes_before_kill > 0  # the kill really landed among the writes


@pytest.mark.parametrize(
    ("phase", "k"),
    [("customers", 3), ("invoices", 4)],
    ids=["while-creating-customers-of-a-later-chunk", "while-writing-invoices-of-a-later-chunk"],
)
def test_a_run_killed_in_a_later_chunk_converges_and_keeps_the_watermark(
    chaos: ModuleType,
    redis_url: str,
    world_options: dict[str, object],
    phase: str,
    k: int,
) -> None:
    # Chunks of 20: 120 quotes are 6 chunks. A chunk has fewer writes of each kind than
    # a batch holds, so it sends at most one customer and one invoice batch: the k-th
    # batch (k >= 3) belongs to the k-th chunk or a later one, written while the next
    # chunk is read.
    point = chaos.KillPoint(phase, k, 0.0)
    result = chaos.crash_once(
        point, redis_url=redis_url, seed=SEED, quotes=QUOTES, chunk_size=20, **world_options
    )
    assert result.reached and result.killed, f"the run ended before {point}"
    assert result.problems == []
    assert result.watermark_kept
    assert result.writes_before_kill >= k
    assert result.audit is not None and result.audit.converged, result.audit.summary()


def test_kill_points_are_seeded_and_cover_every_phase(chaos: ModuleType) -> None:
    sizes = {"fetch": 167, "customers": 5, "invoices": 6}
    points = chaos.kill_points(24, 1, sizes)
    assert points == chaos.kill_points(24, 1, sizes)
    assert {p.phase for p in points} == set(chaos.PHASES)
    for phase in chaos.PHASES:
        ks = [p.k for p in points if p.phase == phase]
        assert len(ks) == 8
        assert all(1 <= k <= sizes[phase] for k in ks)
    # Every customer and invoice batch is a kill point at least once.
    assert {p.k for p in points if p.phase == "customers"} == set(range(1, 6))
    assert {p.k for p in points if p.phase == "invoices"} == set(range(1, 7))
