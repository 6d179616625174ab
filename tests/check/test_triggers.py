"""Where `spotrun check` aims its reclaims: inside the run, never too late for the notice to land."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from spotrun.check.progress import Progress
from spotrun.check.runner import NOTICE_REACH_S, AttemptResult, _choose_triggers


def baseline(steps: int, duration: float) -> AttemptResult:
    return AttemptResult(run="baseline", attempt=1, exit_code=0, duration=duration, log=Path("/nonexistent"),
                         progress=Progress(steps=list(range(steps)), source="events"))


@pytest.mark.parametrize("seed", range(50))
def test_reclaim_points_leave_the_notice_time_to_land(seed):
    run = baseline(120, 4.0)  # 30 steps a second
    picks = [t.step for t in _choose_triggers(run, 2, random.Random(seed))]
    last_allowed = 119 - NOTICE_REACH_S * 30
    assert len(set(picks)) == 2 and picks == sorted(picks)
    assert all(12 <= s <= last_allowed for s in picks), picks


def test_a_run_too_short_for_the_margin_still_gets_distinct_inner_points():
    run = baseline(6, 0.3)
    picks = [t.step for t in _choose_triggers(run, 3, random.Random(1))]
    assert sorted(set(picks)) == picks and len(picks) == 3
    assert all(0 < s < 5 for s in picks)


def test_without_progress_reports_reclaims_are_timed():
    run = baseline(0, 10.0)
    triggers = _choose_triggers(run, 2, random.Random(0))
    assert all(t.step is None and 2.5 <= t.after_s <= 6.0 for t in triggers)


def test_timed_reclaims_land_after_each_attempts_first_durable_checkpoint():
    """Startup can be most of a short run (Lightning imports): a reclaim before anything was
    saved would test nothing."""
    run = baseline(0, 10.0)
    run.first_snapshot_s = 6.0
    triggers = _choose_triggers(run, 2, random.Random(0))
    # counted from each attempt's own first snapshot, whose startup may be faster or slower
    assert all(t.from_snapshot and 1.0 <= t.after_s <= 2.4 for t in triggers), triggers
