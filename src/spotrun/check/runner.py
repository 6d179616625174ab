"""Runs the script under test: one uninterrupted baseline, then attempts ended by reclaims.

Each attempt is as close to a real spot VM as this machine allows: a fresh copy of the working
directory as its disk, its own $TMPDIR and $HOME, a private mount namespace where the kernel
allows one (see `isolation.py`), its own AWS metadata emulator, the real `spotrun exec` agent,
and one checkpoint store shared across attempts as a bucket would be. Every check has its own
job id, notice files and store, so two checks can run side by side. Reclaims are triggered when
the script reports reaching a randomly chosen step, so they land at random points of its
*work* whatever its speed; without progress reports, at random times.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import random
import shutil
import signal
import site
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from spotrun.agent.signals import parse_signal
from spotrun.agent.supervisor import ESCALATION_MARK, EXIT_RECLAIMED, LOG_PREFIX
from spotrun.check import isolation
from spotrun.check.progress import Progress, StepWatch, Tail, attempt_progress, checkpoint_step
from spotrun.sdk.atomic import is_internal_name
from spotrun.sdk.events import EVENTS_ENV
from spotrun.workdir import copy_workdir, tree_size

CHECKPOINT_LIKE = (".pt", ".pth", ".ckpt", ".pkl", ".safetensors", ".bin", ".npz", ".h5")
# The check tests the script's resume, not the metadata poll: a fast poll makes each notice land
# where it was aimed, and NOTICE_REACH_S keeps reclaim points far enough from the end for it to.
POLL_INTERVAL = "0.1s"
NOTICE_REACH_S = 1.0
SNAPSHOT_MARK = "published snapshot"  # the agent's line when a checkpoint became durable
EXIT_INCONCLUSIVE = 3
DEFAULT_CHECKPOINT_DIR = ".spotrun/checkpoints"


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
    signal: str = "SIGTERM"  # or "none": the notice comes by file and endpoint only
    timeout: float | None = None  # per attempt; default: from the baseline's duration
    max_workdir_bytes: int = 512 * 1024 * 1024
    # As `spotrun exec` takes them; relative paths are inside the working directory.
    checkpoint_dir: str = DEFAULT_CHECKPOINT_DIR
    outputs_dir: str | None = None
    restart_dir: str | None = None
    isolation: str = "auto"  # auto | namespace | env

    def validate(self) -> None:
        if not self.command:
            raise CheckError("no command to check: give it after `--`, e.g. spotrun check -- python train.py")
        if self.reclaims < 1:
            raise CheckError(f"--reclaims must be at least 1, got {self.reclaims}")
        if self.signal.lower() == "none":
            self.signal = "none"
        else:
            try:
                self.signal = parse_signal(self.signal).name
            except ValueError as exc:
                raise CheckError(f"--signal: {exc} (or `none`)") from None
        if self.lead_time <= 1:
            raise CheckError(f"--lead-time must be more than 1s, got {self.lead_time}s")
        if self.isolation not in ("auto", "namespace", "env"):
            raise CheckError(f"--isolation must be auto, namespace or env, got {self.isolation!r}")
        if not self.workdir.is_dir():
            raise CheckError(f"working directory {self.workdir} does not exist")
        for out in self.outputs:
            if Path(out).is_absolute() or ".." in Path(out).parts:
                raise CheckError(f"declared output {out!r} must be a path inside the working directory")
        for flag, value in self.dirs().items():
            if not Path(value).is_absolute() and ".." in Path(value).parts:
                raise CheckError(f"{flag} {value!r}: give an absolute path or one inside the working directory")
        size = tree_size(self.workdir)
        if size > self.max_workdir_bytes:
            raise CheckError(
                f"the working directory {self.workdir} holds {size / 2**20:.0f} MiB; each attempt copies it "
                "as a fresh machine's disk. Point --workdir at the job's code only."
            )

    def dirs(self) -> dict[str, str]:
        """The directories handed to the agent, by the flag that names them."""
        given = {"--checkpoint-dir": self.checkpoint_dir, "--outputs-dir": self.outputs_dir,
                 "--restart-dir": self.restart_dir}
        return {flag: value for flag, value in given.items() if value}

    def fixed_dirs(self) -> list[Path]:
        """The absolute ones: the same path on every machine, so each attempt must find it empty."""
        return [Path(v) for v in self.dirs().values() if Path(v).is_absolute()]


@dataclass
class Session:
    """One check's private world: its directory, store and job id, and how attempts are isolated."""

    root: Path
    store_url: str
    check_id: str
    isolated: bool
    isolation_note: str
    fixed_made: list[Path] = field(default_factory=list)  # fixed dirs the check created

    def job_id(self, run: str) -> str:
        return f"check-{self.check_id}-{run}"


@dataclass
class Trigger:
    step: int | None = None  # reclaim once the script reports this step
    after_s: float | None = None  # or this long after the start, without progress reports
    from_snapshot: bool = False  # after_s counts from the attempt's first durable snapshot


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
    store_had_snapshot: bool = False  # when it started: what a next machine could restore
    local_writes: list[str] = field(default_factory=list)  # checkpoint-like, machine-local
    saved_step: int | None = None  # the framework's global_step in the snapshot it left
    first_snapshot_s: float | None = None  # when the agent first published a snapshot, from the start

    @property
    def reclaimed(self) -> bool:
        return self.notice_after_s is not None and self.exit_code == EXIT_RECLAIMED

    def log_tail(self, lines: int = 8) -> list[str]:
        text = self.log.read_text(errors="replace").splitlines() if self.log.exists() else []
        return text[-lines:]


Report = Callable[[str], None]


def open_session(config: CheckConfig) -> Session:
    """The check's directory and isolation; fixed directories made ready (or refused)."""
    config.validate()
    why_not = "--isolation env" if config.isolation == "env" else isolation.namespaces_work()
    if config.isolation == "namespace" and why_not:
        raise CheckError(f"--isolation namespace: private mount namespaces do not work here: {why_not}")
    root = Path(tempfile.mkdtemp(prefix=isolation.CHECK_PREFIX))
    isolated = why_not is None
    note = ("private mount namespace per attempt (/tmp, /var/tmp, /dev/shm and fixed directories start empty)"
            if isolated else
            "private $TMPDIR, $HOME and working directory per attempt; no mount namespace "
            f"({why_not}), so fixed paths outside them are shared: "
            "a resume from one is caught by the store check")
    session = Session(root, (root / "store").as_uri(), root.name.removeprefix(isolation.CHECK_PREFIX), isolated, note)
    for path in config.fixed_dirs():
        if isolated and isolation.under_machine_local(path):
            continue  # a fresh tmpfs on each attempt
        if not path.exists():
            try:
                path.mkdir(parents=True)
            except OSError as exc:
                raise CheckError(f"cannot create {path}: {exc.strerror}; choose a directory this user can write") from None
            session.fixed_made.append(path)
        elif not isolated and any(path.iterdir()):
            raise CheckError(
                f"{path} is not empty: without a mount namespace each attempt must find it empty, as a new machine "
                "would, and the check will not delete your files. Point the flag at a new directory."
            )
        if not isolated:
            try:
                _lock(path).touch(exist_ok=False)
            except FileExistsError:
                raise CheckError(
                    f"another spotrun check uses {path}; without a mount namespace two checks cannot share it "
                    f"(if none runs, delete {_lock(path)})"
                ) from None
    return session


def _lock(fixed: Path) -> Path:
    """Beside the directory, not in it: the agent snapshots everything in it."""
    return fixed.with_name(f".{fixed.name}.spotrun-check")


def close_session(config: CheckConfig, session: Session) -> None:
    for path in config.fixed_dirs():
        if path in session.fixed_made:
            shutil.rmtree(path, ignore_errors=True)
        if not session.isolated:
            _lock(path).unlink(missing_ok=True)


async def run_check(config: CheckConfig, report: Report = lambda _msg: None) -> tuple[AttemptResult, list[AttemptResult], Session]:
    """Run the baseline and the interrupted attempts; returns them and the check's session."""
    session = open_session(config)
    try:
        return await _run(config, session, report)
    finally:
        close_session(config, session)


async def _run(config: CheckConfig, session: Session, report: Report) -> tuple[AttemptResult, list[AttemptResult], Session]:
    rng = random.Random(config.seed)
    report(f"isolation: {session.isolation_note}")
    report("baseline: running once without interruption")
    baseline = await _attempt(config, session, "baseline", 1, None, config.timeout or 3600.0)
    if baseline.exit_code != 0:
        return baseline, [], session

    timeout = config.timeout or max(60.0, 3 * baseline.duration + config.lead_time)
    triggers = _choose_triggers(baseline, config.reclaims, rng)
    attempts: list[AttemptResult] = []
    for number in range(1, len(triggers) + 2):
        trigger = triggers[number - 1] if number <= len(triggers) else None
        what = f"reclaim at step {trigger.step}" if trigger and trigger.step is not None else (
            f"reclaim {trigger.after_s:.1f}s after {'its first snapshot' if trigger.from_snapshot else 'the start'}"
            if trigger else "no reclaim, run to the end")
        report(f"attempt {number}: {what}")
        result = await _attempt(config, session, "interrupted", number, trigger, timeout, baseline.progress.source)
        attempts.append(result)
        if result.exit_code != EXIT_RECLAIMED:
            break
    return baseline, attempts, session


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
    # Timed: inside the stretch where it has saved something (startup and imports can be most
    # of a short run), so a resumable script has something to resume from.
    # Counted from each attempt's own first snapshot: startup time varies more than work does.
    saved = baseline.first_snapshot_s
    if saved is None:
        return [Trigger(after_s=baseline.duration * rng.uniform(0.25, 0.6)) for _ in range(count)]
    return [Trigger(after_s=(baseline.duration - saved) * rng.uniform(0.25, 0.6), from_snapshot=True) for _ in range(count)]


def _place(value: str | None, scratch: Path) -> Path | None:
    return None if value is None else Path(value) if Path(value).is_absolute() else scratch / value


async def _attempt(
    config: CheckConfig, session: Session, run: str, number: int, trigger: Trigger | None, timeout: float,
    kind: str | None = None,
) -> AttemptResult:
    from spotrun.emulators.aws import AwsEmulator
    from spotrun.store import Store

    root = session.root
    machine = root / f"{run}-{number}"
    scratch, home, tmp = machine / "work", machine / "home", machine / "tmp"
    copy_workdir(config.workdir, scratch, exclude=[root])
    home.mkdir()
    tmp.mkdir()
    before = {p for p in scratch.rglob("*") if p.is_file()}
    ckpt_dir = _place(config.checkpoint_dir, scratch)
    events = root / f"{run}.events.jsonl"
    log = root / f"{run}-{number}.log"
    job_id = session.job_id(run)
    store = Store.open(session.store_url, create=True)
    had_snapshot = await _holds_files(store, job_id)
    emulator = AwsEmulator()
    url = await emulator.start(host="127.0.0.1", port=0)
    command = [
        sys.executable, "-m", "spotrun", "exec", "--provider", "aws", "--metadata-url", url,
        "--job-id", job_id, "--attempt", str(number), "--signal", config.signal,
        "--notice-file", str(machine / "notice.json"),
        "--kill-margin", "1s", "--store", session.store_url,
        "--sync-interval", "2s", "--poll-interval", POLL_INTERVAL,
    ]
    for flag, value in config.dirs().items():
        command += [flag, str(_place(value, scratch))]
    command += ["--", *config.command]
    if session.isolated:
        command = isolation.wrap(root, machine / isolation.LOCAL_WRITES, config.fixed_dirs(), command)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SPOTRUN_", "AWS_EC2_METADATA", "GCE_METADATA"))}
    env |= {
        EVENTS_ENV: str(events), "PYTHONUNBUFFERED": "1", "TMPDIR": str(tmp), "HOME": str(home),
        "SPOTRUN_HOME": str(home / ".spotrun"), **_shared_caches(),
    }
    started, wall_start = time.monotonic(), time.time()
    notice_after: float | None = None
    first_snapshot: float | None = None
    exit_code: int | None = None
    try:
        with open(log, "wb") as out:
            proc = await asyncio.create_subprocess_exec(
                *command, cwd=scratch, env=env, stdout=out, stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
            )
            waiting = asyncio.ensure_future(proc.wait())
            watch = StepWatch(events, log, number, kind or "step")
            agent_log = Tail(log)
            while not waiting.done() and (elapsed := time.monotonic() - started) < timeout:
                if first_snapshot is None and any(
                    line.startswith(LOG_PREFIX) and SNAPSHOT_MARK in line for line in agent_log.new_lines()
                ):
                    first_snapshot = elapsed
                if trigger is not None and notice_after is None and _reached(trigger, watch, elapsed, first_snapshot):
                    emulator.trigger(kind="reclaim", action="terminate", lead_s=config.lead_time)
                    notice_after = elapsed
                await asyncio.wait({waiting}, timeout=0.05)
            if waiting.done():
                exit_code = waiting.result()
            else:
                await _stop_hung(proc, waiting, emulator)
    finally:
        await emulator.stop()
    duration = time.monotonic() - started
    agent_lines = [line for line in log.read_text(errors="replace").splitlines() if line.startswith(LOG_PREFIX)]
    outputs = _keep_outputs(config, scratch, root / "outputs" / f"{run}-{number}")
    durable = [p for v in config.dirs().values() if (p := _place(v, scratch)) is not None]
    strays = _stray_checkpoints(scratch, before, ckpt_dir or scratch, config.outputs, durable)
    writes = isolation.local_writes(session.isolated, machine, wall_start, root)
    shutil.rmtree(machine, ignore_errors=True)  # the machine's disk goes with it
    if not session.isolated:
        for path in config.fixed_dirs():  # so does what it kept at fixed paths
            for child in path.iterdir() if path.exists() else []:
                shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()
    return AttemptResult(
        run=run, attempt=number, exit_code=exit_code, duration=duration, log=log,
        progress=attempt_progress(events, log, number, kind), trigger=trigger, notice_after_s=notice_after,
        escalated=any(ESCALATION_MARK in line for line in agent_lines), outputs=outputs,
        stray_checkpoints=strays, store_had_snapshot=had_snapshot, first_snapshot_s=first_snapshot,
        local_writes=[w for w in writes if _checkpoint_like(Path(w).name) and not set(durable) & set(Path(w).parents)],
        saved_step=await _saved_step(store, job_id, root / "peek" / f"{run}-{number}") if exit_code == EXIT_RECLAIMED else None,
    )


def _shared_caches() -> dict[str, str]:
    """What a machine image would hold, kept at the real $HOME's: user-installed packages and
    downloaded models and weights (re-downloading them per attempt tests nothing)."""
    home = Path.home()
    return {
        "PYTHONUSERBASE": os.environ.get("PYTHONUSERBASE", site.getuserbase()),
        "HF_HOME": os.environ.get("HF_HOME", str(home / ".cache" / "huggingface")),
        "TORCH_HOME": os.environ.get("TORCH_HOME", str(home / ".cache" / "torch")),
    }


async def _holds_files(store, job_id: str) -> bool:
    """Whether a next machine could restore anything: earlier outputs, or a snapshot of more
    than an empty directory."""
    from spotrun.store.format import job_prefix

    if await store.backend.list(f"{job_prefix(job_id)}/outputs"):
        return True
    latest = await store.latest(job_id)
    return latest is not None and bool((await store.manifest(latest)).files)


async def _saved_step(store, job_id: str, dest: Path) -> int | None:
    """The framework's own step count in the newest snapshot (what the next attempt can restore)."""
    from spotrun.store import NoSnapshot, restore

    try:
        await restore(store, job_id, dest, fallback=True)
    except NoSnapshot:
        return None
    try:
        return checkpoint_step(dest)
    finally:
        shutil.rmtree(dest, ignore_errors=True)


def _checkpoint_like(name: str) -> bool:
    name = name.lower()
    return name.endswith(CHECKPOINT_LIKE) or "ckpt" in name or "checkpoint" in name


async def _stop_hung(proc: asyncio.subprocess.Process, waiting: asyncio.Future, emulator) -> None:
    """A short notice makes the agent kill the command's own process group; SIGKILL the agent last."""
    emulator.trigger(kind="reclaim", action="terminate", lead_s=2.0)
    try:
        await asyncio.wait_for(asyncio.shield(waiting), 15.0)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        await waiting


def _reached(trigger: Trigger, watch: StepWatch, elapsed: float, first_snapshot: float | None) -> bool:
    if trigger.step is None:
        if trigger.from_snapshot:
            return first_snapshot is not None and elapsed - first_snapshot >= (trigger.after_s or 0.0)
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


def _stray_checkpoints(
    scratch: Path, before: set[Path], ckpt_dir: Path, outputs: list[str], durable: list[Path] = (),
) -> list[str]:
    """Checkpoint-looking files written outside $SPOTRUN_CHECKPOINT_DIR (and the outputs and
    restart directories, which spotrun also carries over): lost with the machine."""
    declared = {scratch / o for o in outputs}
    kept = {ckpt_dir, *durable}
    strays = []
    for path in scratch.rglob("*"):
        if not path.is_file() or path in before or path in declared or kept & set(path.parents):
            continue
        if any(is_internal_name(part) for part in path.relative_to(scratch).parts):
            continue  # the SDK's temp files and write hints, not the user's checkpoints
        if _checkpoint_like(path.name):
            strays.append(str(path.relative_to(scratch)))
    return sorted(strays)
