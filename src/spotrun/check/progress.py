"""How far a run got: from SDK events, or from `step N` lines in its output as a fallback."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spotrun.agent.supervisor import LOG_PREFIX
from spotrun.sdk.events import parse_event, read_events

_STEP_LINE = re.compile(r"\bstep[\s=:#]*(\d+)", re.IGNORECASE)


@dataclass
class Progress:
    """The steps one attempt reported, and the checkpoints it said it saved and restored."""

    steps: list[int] = field(default_factory=list)
    saves: list[int] = field(default_factory=list)
    restores: list[int] = field(default_factory=list)
    source: str = "none"  # events | output | none

    @property
    def first(self) -> int | None:
        return self.steps[0] if self.steps else None

    @property
    def last(self) -> int | None:
        return max(self.steps) if self.steps else None


def _step(record: dict[str, Any]) -> int | None:
    value = record.get("step")
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def from_events(path: Path, attempt: int) -> Progress:
    progress = Progress(source="events")
    for record in read_events(path):
        if str(record.get("attempt")) != str(attempt) or (step := _step(record)) is None:
            continue
        {"progress": progress.steps, "save": progress.saves, "restore": progress.restores}.get(
            record["event"], []
        ).append(step)
    if not (progress.steps or progress.saves or progress.restores):
        progress.source = "none"
    return progress


def from_output(log: Path) -> Progress:
    progress = Progress(source="output")
    try:
        lines = log.read_text(errors="replace").splitlines()
    except FileNotFoundError:
        lines = []
    progress.steps = [step for line in lines if (step := _output_step(line)) is not None]
    if not progress.steps:
        progress.source = "none"
    return progress


def _output_step(line: str) -> int | None:
    if line.startswith(LOG_PREFIX):
        return None  # the agent's own lines
    match = _STEP_LINE.search(line)
    return int(match.group(1)) if match else None


def attempt_progress(events: Path, log: Path, attempt: int) -> Progress:
    progress = from_events(events, attempt)
    return progress if progress.steps else _merge(progress, from_output(log))


def _merge(events: Progress, output: Progress) -> Progress:
    output.saves, output.restores = events.saves, events.restores
    if output.source == "none" and (events.saves or events.restores):
        output.source = "events"
    return output


class StepWatch:
    """The highest step an attempt has reported so far, as `attempt_progress(...).last` would say,
    reading only what was appended since the last look: the check asks 20 times a second."""

    def __init__(self, events: Path, log: Path, attempt: int) -> None:
        self.attempt = str(attempt)
        self._events, self._log = _Tail(events), _Tail(log)
        self._from_events: int | None = None
        self._from_output: int | None = None

    def last(self) -> int | None:
        for line in self._events.new_lines():
            record = parse_event(line)
            if record and record["event"] == "progress" and str(record.get("attempt")) == self.attempt:
                self._from_events = _max(self._from_events, _step(record))
        if self._from_events is not None:
            return self._from_events
        for line in self._log.new_lines():
            self._from_output = _max(self._from_output, _output_step(line))
        return self._from_output


def _max(a: int | None, b: int | None) -> int | None:
    return b if a is None else a if b is None else max(a, b)


class _Tail:
    """Complete lines appended to a file since the last call; a line still being written waits."""

    def __init__(self, path: Path) -> None:
        self.path, self.offset = path, 0

    def new_lines(self) -> list[str]:
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read()
        except FileNotFoundError:
            return []
        end = data.rfind(b"\n") + 1
        self.offset += end
        return data[:end].decode(errors="replace").splitlines()
