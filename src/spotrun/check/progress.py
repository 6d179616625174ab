"""How far a run got: from SDK events, or from `step N` lines in its output as a fallback."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spotrun.sdk.events import read_events

_STEP_LINE = re.compile(r"\bstep[\s=:#]*(\d+)", re.IGNORECASE)
AGENT_PREFIX = "spotrun:"


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
    for line in lines:
        if line.startswith(AGENT_PREFIX):
            continue
        if match := _STEP_LINE.search(line):
            progress.steps.append(int(match.group(1)))
    if not progress.steps:
        progress.source = "none"
    return progress


def attempt_progress(events: Path, log: Path, attempt: int) -> Progress:
    progress = from_events(events, attempt)
    return progress if progress.steps else _merge(progress, from_output(log))


def _merge(events: Progress, output: Progress) -> Progress:
    output.saves, output.restores = events.saves, events.restores
    if output.source == "none" and (events.saves or events.restores):
        output.source = "events"
    return output
