"""`RichProgress`: the whole window's progress on a terminal (quotes, writes, rate, ETA).

The engine reports through the `Progress` protocol from two threads; the figures shown
must follow from what was reported, on a fake clock.
"""

from __future__ import annotations

import pytest

from fourdqbo.cli.sync import RichProgress


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_no_rate_or_eta_before_there_are_writes_to_measure() -> None:
    progress = RichProgress(clock=FakeClock())
    progress.window(1000)
    progress.quotes_done(250)
    assert progress.write_rate() is None
    assert progress.eta_seconds() is None
    assert progress.detail() == "writes 0"


def test_eta_comes_from_the_measured_write_rate_and_the_writes_per_quote_so_far() -> None:
    clock = FakeClock()
    progress = RichProgress(clock=clock)
    progress.window(1000)
    progress.wrote(30)  # the first batch starts the clock
    clock.now += 3.5
    progress.wrote(320)  # 350 writes in 3.5 s: 100 a second
    progress.quotes_done(250)  # 1.4 writes a quote
    assert progress.write_rate() == pytest.approx(100.0)
    # 750 quotes to go x 1.4 writes / 100 per second
    assert progress.eta_seconds() == pytest.approx(10.5)
    assert progress.detail() == "writes 350  100.0/s  ETA 0:11"


def test_a_finished_window_has_nothing_left() -> None:
    clock = FakeClock()
    progress = RichProgress(clock=clock)
    progress.window(10)
    progress.wrote(5)
    clock.now += 1
    progress.wrote(5)
    progress.quotes_done(10)
    assert progress.eta_seconds() == 0


def test_the_live_display_follows_the_window(capsys: pytest.CaptureFixture[str]) -> None:
    progress = RichProgress(clock=FakeClock())
    with progress:
        progress.window(40)
        progress.phase("fetching quotes")
        progress.quotes_done(5)
        task = progress._progress.tasks[0]
        assert task.total == 40 and task.completed == 5
        assert task.description == "quotes"
