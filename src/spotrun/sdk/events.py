"""Progress and checkpoint events a script reports, so tools can see what a reclaim cost.

`spotrun check` and `spotrun demo` set `$SPOTRUN_EVENTS_FILE`; each event is one JSON line
appended with a single write (atomic for short lines under O_APPEND), so lines from a process
killed mid-run are never interleaved or torn. Without the variable every call is a no-op.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

EVENTS_ENV = "SPOTRUN_EVENTS_FILE"


def emit(event: str, **fields: Any) -> None:
    path = os.environ.get(EVENTS_ENV)
    if not path:
        return
    record = {"event": event, "time": time.time(), "attempt": os.environ.get("SPOTRUN_ATTEMPT"), **fields}
    line = (json.dumps(record, default=str) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


def report_progress(step: int, **metrics: Any) -> None:
    """Call once per step (or every few): lets `spotrun check` measure work lost per reclaim."""
    emit("progress", step=int(step), **metrics)


def read_events(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Every well-formed event in the file; a torn last line (a killed writer) is skipped."""
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        return []
    return [record for line in text.splitlines() if (record := parse_event(line)) is not None]


def parse_event(line: str) -> dict[str, Any] | None:
    """One event line, or None for a torn or foreign one."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError:
        return None
    return record if isinstance(record, dict) and "event" in record else None
