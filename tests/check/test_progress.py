"""StepWatch reads only what was appended, yet always agrees with a full re-read."""

from __future__ import annotations

import json
from pathlib import Path

from spotrun.check.progress import StepWatch, attempt_progress


def append(path: Path, text: str) -> None:
    with open(path, "a") as f:
        f.write(text)


def event(attempt: int, step: int, kind: str = "progress") -> str:
    return json.dumps({"event": kind, "attempt": str(attempt), "step": step}) + "\n"


def test_the_watch_agrees_with_a_full_read_as_the_files_grow(tmp_path: Path):
    events, log = tmp_path / "events.jsonl", tmp_path / "attempt.log"
    watch = StepWatch(events, log, 2)
    assert watch.last() is None  # neither file exists yet

    append(log, "spotrun: step 99 is the agent talking\nstep 3 loss 0.5\n")
    assert watch.last() == attempt_progress(events, log, 2).last == 3  # no events: the output's steps

    append(events, event(1, 50) + event(2, 7) + event(2, 40, kind="save"))
    assert watch.last() == attempt_progress(events, log, 2).last == 7  # events win; other attempts ignored

    half = event(2, 12)
    append(events, half[:10])  # a line still being written is not read yet...
    assert watch.last() == 7
    append(events, half[10:] + event(2, 9))
    assert watch.last() == attempt_progress(events, log, 2).last == 12  # ...but whole once finished
