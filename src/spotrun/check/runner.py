"""Runs the script under test: one uninterrupted baseline, then attempts ended by reclaims.

Each attempt is as close to a real spot VM as this machine allows: a fresh copy of the working
directory as its disk (deleted when the attempt ends), its own AWS metadata emulator, the real
`spotrun exec` agent, and one checkpoint store shared across attempts as a bucket would be.
Reclaims are triggered when the script reports reaching a randomly chosen step, so they land at
random points of its *work* whatever its speed; without progress reports, at random times.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import random
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from spotrun.agent.signals import parse_signal
from spotrun.agent.supervisor import ESCALATION_MARK, EXIT_RECLAIMED, LOG_PREFIX
from spotrun.check.progress import Progress, StepWatch, attempt_progress
from spotrun.sdk.atomic import is_internal_name
from spotrun.sdk.events import EVENTS_ENV
from spotrun.workdir import copy_workdir, tree_size

CHECKPOINT_LIKE = (".pt", ".pth", ".ckpt", ".pkl", ".safetensors", ".bin", ".npz", ".h5")
# The check tests the script's resume, not the metadata poll: a fast poll makes each notice land
# where it was aimed, and NOTICE_REACH_S keeps reclaim points far enough from the end for it to.
POLL_INTERVAL = "0.1s"
NOTICE_REACH_S = 1.0


class CheckError(Exception):
    """The check itself cannot run (bad arguments, a working directory too large to copy)."""


@dataclass
class CheckConfig:
    command: list[str]
    reclaims: int = 2
    seed: int | None = None
    workdir: Path = field(default_factory=Path.cwd)
    outputs: list[str] = field(default_factory=list)  # declared outputs, relative to the workdir
    compare_outputs: bool = True
    tolerance: float = 0.0  # relative tolerance for numbers in declared outputs
    lead_time: float = 10.0  # seconds of warning each reclaim gives
    signal: str = "SIGTERM"
    timeout: float | None = None  # per attempt; default: from the baseline's duration
    max_workdir_bytes: int = 512 * 1024 * 1024

    def validate(self) -> None:
        if not self.command:
            raise CheckError("no command to check: give it after `--`, e.g. spotrun check -- python train.py")
        if self.reclaims < 1:
            raise CheckError(f"--reclaims must be at least 1, got {self.reclaims}")
        try:
            self.signal = parse_signal(self.signal).name
        except ValueError as exc:
            raise CheckError(f"--signal: {exc}") from None
        if self.lead_time <= 1:
            raise CheckError(f"--lead-time must be more than 1s, got {self.lead_time}s")
        if not self.workdir.is_dir():
            raise CheckError(f"working directory {self.workdir} does not exist")
        for out in self.outputs:
            if Path(out).is_absolute() or ".." in Path(out).parts:
                raise CheckError(f"declared output {out!r} must be a path inside the working directory")
        size = tree_size(self.workdir)
        if size > self.max_workdir_bytes:
            raise CheckError(
                f"the working directory {self.workdir} holds {size / 2**20:.0f} MiB; each attempt copies it "
                "as a fresh machine's disk. Point --workdir at the job's code only."
            )


@dataclass
class Trigger:
    step: int | None = None  # reclaim once the script reports this step
    after_s: float | None = None  # or this long after the start, without progress reports


@dataclass
class AttemptResult:
    run: str  # "baseline" or "interrupted"
    attempt: int
    exit_code: int | None  # None: it hung past the timeout and was killed
    duration: float
    log: Path
    progress: Progress
    trigger: Trigger | None = None
    notice_after_s: float | None = None  # when the reclaim notice was published, from the start
    escalated: bool = False  # the agent had to SIGKILL it at the deadline
    outputs: dict[str, Path] = field(default_factory=dict)
    stray_checkpoints: list[str] = field(default_factory=list)

    @property
    def reclaimed(self) -> bool:
        return self.notice_after_s is not None and self.exit_code == EXIT_RECLAIMED

    def log_tail(self, lines: int = 8) -> list[str]:
        text = self.log.read_text(errors="replace").splitlines() if self.log.exists() else []
        return text[-lines:]


Report = Callable[[str], None]


async def run_check(config: CheckConfig, report: Report = lambda _msg: None) -> tuple[AttemptResult, list[AttemptResult], Path]:
    """Run the baseline and the interrupted attempts; returns them and the work directory."""
    config.validate()
    root = Path(tempfile.mkdtemp(prefix="spotrun-check-"))
    store_url = (root / "store").as_uri()
    rng = random.Random(config.seed)

    report("baseline: running once without interruption")
    baseline = await _attempt(config, root, store_url, "baseline", 1, None, config.timeout or 3600.0)
    if baseline.exit_code != 0:
        return baseline, [], root

    timeout = config.timeout or max(60.0, 3 * baseline.duration + config.lead_time)
    triggers = _choose_triggers(baseline, config.reclaims, rng)
    attempts: list[AttemptResult] = []
    for number in range(1, len(triggers) + 2):
        trigger = triggers[number - 1] if number <= len(triggers) else None
        what = f"reclaim at step {trigger.step}" if trigger and trigger.step is not None else (
            f"reclaim after {trigger.after_s:.1f}s" if trigger else "no reclaim, run to the end")
        report(f"attempt {number}: {what}")
        result = await _attempt(config, root, store_url, "interrupted", number, trigger, timeout)
        attempts.append(result)
        if result.exit_code != EXIT_RECLAIMED:
            break
    return baseline, attempts, root


def _choose_triggers(baseline: AttemptResult, count: int, rng: random.Random) -> list[Trigger]:
    steps = sorted(set(baseline.progress.steps))
    if len(steps) >= count + 2:
        # distinct steps inside the middle of the run: never before the first or after the last,
        # nor so late that the script could finish before the notice reaches it
        tail = max(1, len(steps) // 10, math.ceil(NOTICE_REACH_S * len(steps) / max(baseline.duration, 1e-9)))
        inner = steps[max(1, len(steps) // 10): len(steps) - tail]
        if len(inner) < count:
            inner = steps[1:-1]
        picks = rng.sample(inner, min(count, len(inner)))
        return [Trigger(step=s) for s in sorted(picks)]
    return [Trigger(after_s=baseline.duration * rng.uniform(0.25, 0.6)) for _ in range(count)]


async def _attempt(
    config: CheckConfig, root: Path, store_url: str, run: str, number: int, trigger: Trigger | None, timeout: float
) -> AttemptResult:
    from spotrun.emulators.aws import AwsEmulator

    scratch = root / f"{run}-{number}"
    copy_workdir(config.workdir, scratch, exclude=[root])
    before = {p for p in scratch.rglob("*") if p.is_file()}
    ckpt_dir = scratch / ".spotrun" / "checkpoints"
    events = root / f"{run}.events.jsonl"
    log = root / f"{run}-{number}.log"
    emulator = AwsEmulator()
    url = await emulator.start(host="127.0.0.1", port=0)
    command = [
        sys.executable, "-m", "spotrun", "exec", "--provider", "aws", "--metadata-url", url,
        "--job-id", f"check-{run}", "--attempt", str(number), "--signal", config.signal,
        "--kill-margin", "1s", "--checkpoint-dir", str(ckpt_dir), "--store", store_url,
        "--sync-interval", "2s", "--poll-interval", POLL_INTERVAL, "--", *config.command,
    ]
    env = os.environ | {EVENTS_ENV: str(events), "PYTHONUNBUFFERED": "1"}
    env.pop("SPOTRUN_CHECKPOINT_DIR", None)
    started = time.monotonic()
    notice_after: float | None = None
    exit_code: int | None = None
    try:
        with open(log, "wb") as out:
            proc = await asyncio.create_subprocess_exec(
                *command, cwd=scratch, env=env, stdout=out, stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
            )
            waiting = asyncio.ensure_future(proc.wait())
            if trigger is not None:
                watch = StepWatch(events, log, number)
                while not waiting.done():
                    if _reached(trigger, watch, time.monotonic() - started):
                        emulator.trigger(kind="reclaim", action="terminate", lead_s=config.lead_time)
                        notice_after = time.monotonic() - started
                        break
                    await asyncio.wait({waiting}, timeout=0.05)
            try:
                exit_code = await asyncio.wait_for(asyncio.shield(waiting), timeout)
            except TimeoutError:
                await _stop_hung(proc, waiting, emulator)
    finally:
        await emulator.stop()
    duration = time.monotonic() - started
    agent_lines = [line for line in log.read_text(errors="replace").splitlines() if line.startswith(LOG_PREFIX)]
    outputs = _keep_outputs(config, scratch, root / "outputs" / f"{run}-{number}")
    strays = _stray_checkpoints(scratch, before, ckpt_dir, config.outputs)
    shutil.rmtree(scratch, ignore_errors=True)  # the machine's disk goes with it
    return AttemptResult(
        run=run, attempt=number, exit_code=exit_code, duration=duration, log=log,
        progress=attempt_progress(events, log, number), trigger=trigger, notice_after_s=notice_after,
        escalated=any(ESCALATION_MARK in line for line in agent_lines), outputs=outputs,
        stray_checkpoints=strays,
    )


async def _stop_hung(proc: asyncio.subprocess.Process, waiting: asyncio.Future, emulator) -> None:
    """A short notice makes the agent kill the command's own process group; SIGKILL the agent last."""
    emulator.trigger(kind="reclaim", action="terminate", lead_s=2.0)
    try:
        await asyncio.wait_for(asyncio.shield(waiting), 15.0)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        await waiting


def _reached(trigger: Trigger, watch: StepWatch, elapsed: float) -> bool:
    if trigger.step is None:
        return elapsed >= (trigger.after_s or 0.0)
    last = watch.last()
    return last is not None and last >= trigger.step


def _keep_outputs(config: CheckConfig, scratch: Path, dest: Path) -> dict[str, Path]:
    kept = {}
    for name in config.outputs:
        src = scratch / name
        if src.is_file():
            target = dest / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, target)
            kept[name] = target
    return kept


def _stray_checkpoints(scratch: Path, before: set[Path], ckpt_dir: Path, outputs: list[str]) -> list[str]:
    """Checkpoint-looking files written outside $SPOTRUN_CHECKPOINT_DIR: lost with the machine."""
    declared = {scratch / o for o in outputs}
    strays = []
    for path in scratch.rglob("*"):
        if not path.is_file() or path in before or path in declared or ckpt_dir in path.parents:
            continue
        if any(is_internal_name(part) for part in path.relative_to(scratch).parts):
            continue  # the SDK's temp files and write hints, not the user's checkpoints
        name = path.name.lower()
        if name.endswith(CHECKPOINT_LIKE) or "ckpt" in name or "checkpoint" in name:
            strays.append(str(path.relative_to(scratch)))
    return sorted(strays)
