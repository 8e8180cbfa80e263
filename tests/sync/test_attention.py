"""Quiet unless something new needs a person: the exit code, the reminder, what is printed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fourdqbo.state.items import AttentionItem, AttentionKind
from fourdqbo.sync.attention import Attention, AttentionKey, Failure, assess

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
PAID = AttentionKey("10023", AttentionKind.PAID, 3)


def run(
    before: list[AttentionKey] | None = None,
    found: list[AttentionKey] | None = None,
    failures: list[Failure] | None = None,
    *,
    max_attempts: int = 5,
    last: datetime | None = NOW,
    now: datetime = NOW,
    hours: float = 24,
) -> Attention:
    return assess(
        before or [],
        found or [],
        failures or [],
        max_attempts=max_attempts,
        last_reminded=last,
        now=now,
        remind_hours=hours,
    )


def test_a_quiet_run_exits_0_and_reports_nothing() -> None:
    verdict = run()
    assert verdict.exit_code == 0 and verdict.to_report == () and not verdict.remind


def test_a_new_item_exits_1_and_is_reported() -> None:
    verdict = run(found=[PAID])
    assert verdict.new_items == (PAID,) and verdict.exit_code == 1
    assert verdict.to_report == (PAID,)


def test_an_item_already_open_is_not_new() -> None:
    verdict = run(before=[PAID], found=[PAID])
    assert verdict.new_items == () and verdict.exit_code == 0 and verdict.to_report == ()
    assert verdict.open_items == (PAID,)


def test_a_new_version_of_an_open_item_is_new() -> None:
    newer = AttentionKey("10023", AttentionKind.PAID, 4)
    verdict = run(before=[PAID], found=[newer])
    assert verdict.new_items == (newer,) and verdict.exit_code == 1
    assert verdict.open_items == (newer,)  # one item per quote


def test_another_kind_for_the_same_version_is_new() -> None:
    edited = AttentionKey("10023", AttentionKind.EDITED_IN_QBO, 3)
    assert run(before=[PAID], found=[edited]).new_items == (edited,)


def test_attention_items_are_keyed_by_quote_kind_and_version() -> None:
    item = AttentionItem("10023 ", AttentionKind.PAID, 3, "145", "paid", NOW)
    assert AttentionKey.of(item) == PAID
    assert run(before=[item], found=[PAID]).exit_code == 0


def test_a_first_failure_exits_1_a_repeated_one_does_not() -> None:
    first = run(failures=[Failure("10030", 1)])
    assert first.first_failures == (Failure("10030", 1),) and first.exit_code == 1
    assert first.to_report == (Failure("10030", 1),)
    again = run(failures=[Failure("10030", 2)])
    assert again.first_failures == () and again.exit_code == 0 and again.to_report == ()


@pytest.mark.parametrize(("attempts", "gives_up"), [(4, False), (5, True)])
def test_a_quote_gives_up_at_exactly_max_attempts(attempts: int, gives_up: bool) -> None:
    failure = Failure("10030", attempts, version=2)
    verdict = run(failures=[failure], max_attempts=5)
    assert (verdict.gave_up == (failure,)) is gives_up
    key = AttentionKey("10030", AttentionKind.GAVE_UP, 2)
    assert (verdict.new_items == (key,)) is gives_up
    assert verdict.exit_code == (1 if gives_up else 0)


def test_a_gave_up_item_already_open_is_not_new() -> None:
    key = AttentionKey("10030", AttentionKind.GAVE_UP, 2)
    verdict = run(before=[key], failures=[Failure("10030", 5, 2)])
    assert verdict.new_items == () and verdict.exit_code == 0


def test_max_attempts_of_one_gives_up_at_the_first_failure() -> None:
    verdict = run(failures=[Failure("10030", 1)], max_attempts=1)
    assert verdict.first_failures and verdict.gave_up and verdict.exit_code == 1


@pytest.mark.parametrize(
    ("elapsed", "hours", "reminds"),
    [
        (timedelta(hours=24), 24, True),
        (timedelta(hours=24) - timedelta(microseconds=1), 24, False),
        (timedelta(hours=30), 24, True),
        (timedelta(minutes=90), 1.5, True),
        (timedelta(minutes=89), 1.5, False),
        (timedelta(days=400), 0, False),
    ],
)
def test_the_reminder_comes_after_exactly_the_interval(
    elapsed: timedelta, hours: float, reminds: bool
) -> None:
    last = NOW - elapsed
    verdict = run(before=[PAID], found=[PAID], last=last, hours=hours)
    assert verdict.remind is reminds
    assert verdict.exit_code == (1 if reminds else 0)
    assert verdict.to_report == ((PAID,) if reminds else ())
    assert verdict.reminded_at == (NOW if reminds else last)


def test_a_reminder_reports_everything_open_and_the_first_failures() -> None:
    other = AttentionKey("10040", AttentionKind.DELETED_IN_QBO, 1)
    verdict = run(
        before=[PAID, other],
        found=[PAID],
        failures=[Failure("10050", 1)],
        last=NOW - timedelta(hours=25),
    )
    assert verdict.remind
    assert verdict.to_report == (PAID, other, Failure("10050", 1))


def test_without_a_stored_time_the_clock_starts_without_reminding() -> None:
    verdict = run(before=[PAID], found=[PAID], last=None)
    assert not verdict.remind and verdict.reminded_at == NOW and verdict.exit_code == 0


def test_a_clock_that_went_backwards_never_reminds_and_restarts() -> None:
    verdict = run(before=[PAID], last=NOW + timedelta(days=3))
    assert not verdict.remind and verdict.reminded_at == NOW and verdict.exit_code == 0


def test_new_items_that_are_all_that_is_open_restart_the_clock() -> None:
    verdict = run(found=[PAID], last=NOW - timedelta(days=3))
    assert not verdict.remind and verdict.reminded_at == NOW and verdict.exit_code == 1
    other = AttentionKey("10040", AttentionKind.DELETED_IN_QBO, 1)
    verdict = run(before=[other], found=[PAID], last=NOW - timedelta(days=3))
    assert verdict.remind and verdict.to_report == (other, PAID)


def test_nothing_open_restarts_the_clock() -> None:
    verdict = run(last=NOW - timedelta(days=3))
    assert not verdict.remind and verdict.reminded_at == NOW


def test_reminders_off_keep_the_stored_clock() -> None:
    last = NOW - timedelta(days=3)
    assert run(before=[PAID], last=last, hours=0).reminded_at == last


def test_nonsense_limits_are_refused() -> None:
    with pytest.raises(ValueError):
        run(max_attempts=0)
    with pytest.raises(ValueError):
        run(hours=-1)


STEP = timedelta(minutes=5)


@given(
    paid_from=st.integers(0, 100),
    refound_every_run=st.booleans(),
    fail_from=st.integers(0, 100),
    last_reminded=st.one_of(st.none(), st.integers(0, 24 * 60 * 2)),
)
@settings(max_examples=60, deadline=None)
def test_a_day_of_cron_runs_is_quiet(
    paid_from: int, refound_every_run: bool, fail_from: int, last_reminded: int | None
) -> None:
    """288 runs 5 minutes apart, one paid conflict and one quote that always fails
    (max 5 attempts, remind every 24 h): at most 3 runs exit 1."""
    start = NOW
    clock = None if last_reminded is None else start - timedelta(minutes=last_reminded)
    open_items: list[AttentionKey] = []
    queue: dict[str, int] = {}
    gave_up = False
    exits = 0
    for index in range(288):
        now = start + index * STEP
        found = []
        if index >= paid_from and (refound_every_run or PAID not in open_items):
            found.append(PAID)
        failures = []
        if index >= fail_from and not gave_up:
            queue["10030"] = queue.get("10030", 0) + 1
            failures.append(Failure("10030", queue["10030"], 1))
        verdict = assess(
            open_items,
            found,
            failures,
            max_attempts=5,
            last_reminded=clock,
            now=now,
            remind_hours=24,
        )
        if verdict.gave_up:
            gave_up = True
            queue.pop("10030")
        open_items = list(verdict.open_items)
        clock = verdict.reminded_at
        exits += verdict.exit_code
    assert gave_up and PAID in open_items
    assert 1 <= exits <= 3


def test_an_open_item_is_reminded_of_once_a_day() -> None:
    clock = None
    open_items: list[AttentionKey] = []
    loud = []
    for index in range(2 * 288 + 1):
        verdict = assess(
            open_items,
            [PAID],
            [],
            max_attempts=5,
            last_reminded=clock,
            now=NOW + index * STEP,
            remind_hours=24,
        )
        open_items, clock = list(verdict.open_items), verdict.reminded_at
        if verdict.exit_code:
            loud.append(index)
    assert loud == [0, 288, 576]
