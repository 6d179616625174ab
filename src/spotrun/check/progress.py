"""How far a run got, read from what real training code already emits.

In order of trust: SDK events; `step N` text and `{"step": N}` / `"global_step"` dict lines;
tqdm-style `N/M` bars (an `Epoch E` on the same line makes it `E*M+N`, as Lightning counts);
plain `epoch N` lines. One run is read in the best of these it shows, so steps of one kind are
never compared with another's. Numbers inside paths and file names are never read: a
`checkpoint_epoch_3.pt` says nothing about where a run stands.
"""

from __future__ import annotations

import ast
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spotrun.agent.supervisor import LOG_PREFIX
from spotrun.sdk.events import parse_event, read_events

KINDS = ("step", "bar", "epoch")  # best first
MIN_VALUES = 3
_PATHISH = re.compile(  # paths and file names; a bare `30/100` is a progress bar's, not a path
    r"\S*[A-Za-z_.~-]\S*[/\\]\S*|\S*[/\\]\S*[A-Za-z_.~-]\S*|[\w.-]+\.[A-Za-z]\w*"
)
_STEP = re.compile(r"\b(?:global[_ ])?step[\s=:#]*(\d+)", re.IGNORECASE)
_EPOCH = re.compile(r"\bepoch[\s=:#]*(\d+)(?:\s*/\s*\d+)?", re.IGNORECASE)  # "Epoch 2/5" is not a bar
_BAR = re.compile(r"(?<![\d.])(\d+)/\s*(\d+)(?![\d.])")
# The frameworks' own words for "I loaded a checkpoint", each printed once per resume.
RESTORE_LINES = re.compile(
    r"Restor(?:ed|ing) (?:all )?states from the checkpoint"  # Lightning
    r"|Continuing training from (?:checkpoint|global step)"  # Transformers Trainer
    r"|Loading model from .*checkpoint",  # older Transformers
    re.IGNORECASE,
)


@dataclass
class Progress:
    """The steps one attempt reported, and the checkpoints it said it saved and restored."""

    steps: list[int] = field(default_factory=list)
    saves: list[int] = field(default_factory=list)
    restores: list[int] = field(default_factory=list)
    source: str = "none"  # events | step | bar | epoch | none
    restore_lines: list[str] = field(default_factory=list)  # a framework said it loaded a checkpoint

    @property
    def first(self) -> int | None:
        return self.steps[0] if self.steps else None

    @property
    def last(self) -> int | None:
        return max(self.steps) if self.steps else None

    @property
    def unit(self) -> str:
        return "epoch" if self.source == "epoch" else "step"

    @property
    def restore_seen(self) -> bool:
        return bool(self.restores or self.restore_lines)


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def from_events(path: Path, attempt: int) -> Progress:
    progress = Progress(source="events")
    for record in read_events(path):
        if str(record.get("attempt")) != str(attempt) or (step := _int(record.get("step"))) is None:
            continue
        {"progress": progress.steps, "save": progress.saves, "restore": progress.restores}.get(
            record["event"], []
        ).append(step)
    if not (progress.steps or progress.saves or progress.restores):
        progress.source = "none"
    return progress


def log_lines(text: str) -> list[str]:
    """A log's lines, a progress bar's carriage-return redraws each counted as one."""
    return [line for line in re.split(r"[\r\n]", text) if line.strip()]


def read_line(line: str) -> tuple[str, int] | None:
    """The progress one output line shows, as (kind, value), or None."""
    if line.startswith(LOG_PREFIX):
        return None  # the agent's own lines
    record = _dict_line(line)
    if record is not None:
        for key in ("global_step", "step"):
            if (value := _int(record.get(key))) is not None:
                return "step", value
        return None
    text = _PATHISH.sub(" ", line)
    if match := _STEP.search(text):
        return "step", int(match.group(1))
    epoch = _EPOCH.search(text)
    if bar := _BAR.search(_EPOCH.sub(" ", text)):
        done, total = int(bar.group(1)), int(bar.group(2))
        if 0 < done <= total:  # a bar's first draw (0/M) comes before any work, resumed or not
            return "bar", done + (int(epoch.group(1)) * total if epoch else 0)
    if epoch:
        return "epoch", int(epoch.group(1))
    return None


def _dict_line(line: str) -> dict[str, Any] | None:
    """A JSON object line, or a Python dict's repr (what Transformers prints as it logs)."""
    text = line.strip()
    if not (text.startswith("{") and text.endswith("}")):
        return None
    try:
        record = json.loads(text)
    except json.JSONDecodeError:
        try:
            record = ast.literal_eval(text)
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            return None
    return record if isinstance(record, dict) else None


def from_output(log: Path, kind: str | None = None) -> Progress:
    """Progress in the log's best kind (or in `kind`, to read attempts as their baseline was)."""
    try:
        lines = log_lines(log.read_text(errors="replace"))
    except FileNotFoundError:
        lines = []
    found: dict[str, list[int]] = {k: [] for k in KINDS}
    restores = []
    for line in lines:
        if (hit := read_line(line)) is not None:
            found[hit[0]].append(hit[1])
        if not line.startswith(LOG_PREFIX) and RESTORE_LINES.search(line):
            restores.append(line.strip())
    # A run's kind needs a few distinct values: one final "10/10" says nothing about the way there.
    chosen = kind if kind in found else None if kind == "none" else next(
        (k for k in KINDS if len(set(found[k])) >= MIN_VALUES), None)
    progress = Progress(restore_lines=restores)
    if chosen is not None and found[chosen]:
        progress.steps, progress.source = found[chosen], chosen
    return progress


def attempt_progress(events: Path, log: Path, attempt: int, kind: str | None = None) -> Progress:
    progress = from_events(events, attempt)
    output = from_output(log, None if kind == "events" else kind)
    if progress.steps:
        progress.restore_lines = output.restore_lines
        return progress
    output.saves, output.restores = progress.saves, progress.restores
    return output


class StepWatch:
    """The highest step an attempt has reported so far, as `attempt_progress(...).last` would say
    when read in `kind`, reading only what was appended since the last look: the check asks 20
    times a second."""

    def __init__(self, events: Path, log: Path, attempt: int, kind: str) -> None:
        self.attempt, self.kind = str(attempt), kind
        self._events, self._log = Tail(events), Tail(log)
        self._last: int | None = None

    def last(self) -> int | None:
        if self.kind == "events":
            for line in self._events.new_lines():
                record = parse_event(line)
                if record and record["event"] == "progress" and str(record.get("attempt")) == self.attempt:
                    self._last = _max(self._last, _int(record.get("step")))
        else:
            for line in self._log.new_lines():
                hit = read_line(line)
                if hit is not None and hit[0] == self.kind:
                    self._last = _max(self._last, hit[1])
        return self._last


def _max(a: int | None, b: int | None) -> int | None:
    return b if a is None else a if b is None else max(a, b)


class Tail:
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
        end = max(data.rfind(b"\n"), data.rfind(b"\r")) + 1
        self.offset += end
        return log_lines(data[:end].decode(errors="replace"))


def checkpoint_step(directory: Path) -> int | None:
    """The highest step the frameworks' own checkpoint state in `directory` records.

    Transformers keeps it in `trainer_state.json`, Lightning in each `.ckpt` (loaded only when
    torch is importable: it is the script's own file, read on the check's machine).
    """
    steps: list[int] = []
    for path in directory.rglob("trainer_state.json"):
        try:
            value = json.loads(path.read_text()).get("global_step")
        except (OSError, ValueError, AttributeError):
            continue
        if _int(value) is not None:
            steps.append(value)
    ckpts = list(directory.rglob("*.ckpt"))
    if ckpts:
        try:
            import torch
        except ImportError:
            ckpts = []
        for path in ckpts:
            try:
                state = torch.load(path, map_location="cpu", weights_only=False)
            except Exception:  # a torn or foreign file says nothing about progress
                continue
            if isinstance(state, dict) and _int(state.get("global_step")) is not None:
                steps.append(state["global_step"])
    return max(steps, default=None)
