"""Issue 10's cron day, shortened: quiet unless something is new, plus the reminder.

`bench/cron_day.py` runs the full day (288 runs at 5 minutes, SYNC_REMIND_HOURS 24, at
most 3 runs exit 1). Here the same simulation, in-process on the sandbox's clock with
real Redis, runs 5 simulated hours with a 2-hour reminder, so every part of the life
cycle shows in a few seconds: the first detection, the give-up, two reminders, and the
quiet runs in between - and the failing quote is not fetched again after giving up.
"""

from __future__ import annotations

import pytest

from bench.cron_day import simulate
from fourdqbo.sandbox import Sandbox

pytestmark = pytest.mark.integration


def test_a_cron_day_mails_only_what_is_new_and_the_reminders(
    sandbox: Sandbox, sandbox_redis_env: dict[str, str]
) -> None:
    env = {**sandbox_redis_env, "QBO_RATE_WINDOW_SECONDS": "1"}
    day = simulate(sandbox, env, runs=60, max_attempts=5, remind_hours=2)
    loud = [index for index, _, _ in day.loud]
    # Run 1 finds the paid conflict and the first failure; run 5 gives up; the reminders
    # come two hours after everything was last shown (runs 25 and 49, 5 minutes apart).
    assert loud == [0, 4, 24, 48], day.loud
    assert day.mails == 4
    assert day.failing_fetches == 5  # tried SYNC_MAX_ATTEMPTS times, then left alone
    first, gave_up, reminder = day.loud[0][2], day.loud[1][2], day.loud[2][2]
    assert any(": paid:" in line for line in first)
    assert any("failed (queued" in line for line in first)
    assert [line for line in gave_up if "gave_up" in line] == gave_up and len(gave_up) == 1
    assert sorted(line.split(":")[1].strip() for line in reminder) == ["gave_up", "paid"]
