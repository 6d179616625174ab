"""Where a job keeps its checkpoints and how it finds the newest one, with or without the agent.

Under `spotrun exec` the agent restores the newest snapshot into `$SPOTRUN_CHECKPOINT_DIR`
before the script starts and syncs that directory while it runs; the script only has to write
complete files into it. Without the agent the same calls work against `./checkpoints`, so a
script is written once and runs anywhere.

Files are named `<prefix>-<step, 12 digits>.<ext>`: the newest is the highest step, which stays
unambiguous after a restore on another machine (modification times do not survive that).
"""

from __future__ import annotations

import os
import pickle
import re
from pathlib import Path
from typing import Any

from spotrun.sdk.atomic import atomic_write
from spotrun.sdk.events import emit
from spotrun.sdk.fingerprints import forget

DEFAULT_DIR = "checkpoints"
DEFAULT_PREFIX = "ckpt"
STEP_DIGITS = 12


def checkpoint_dir() -> Path:
    """The directory to write checkpoints into (created): the agent's, else `./checkpoints`."""
    path = Path(os.environ.get("SPOTRUN_CHECKPOINT_DIR") or DEFAULT_DIR)
    path.mkdir(parents=True, exist_ok=True)
    return path


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if not value:
        return default
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"${name} must be an integer, got {value!r}") from None


def attempt() -> int:
    """Which attempt this is (1 for the first run, 2 after the first reclaim, ...)."""
    return _env_int("SPOTRUN_ATTEMPT", 1)


def job_id() -> str | None:
    """The controller's id for this job; None when running without the agent."""
    return os.environ.get("SPOTRUN_JOB_ID") or None


def checkpoint_path(step: int, directory: Path, prefix: str = DEFAULT_PREFIX, ext: str = "pkl") -> Path:
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    return directory / f"{prefix}-{step:0{STEP_DIGITS}d}.{ext}"


def list_checkpoints(
    directory: str | os.PathLike[str] | None = None, prefix: str = DEFAULT_PREFIX, ext: str = "pkl"
) -> list[tuple[int, Path]]:
    """Complete checkpoints as (step, path), oldest first. Temp files never match."""
    root = Path(directory) if directory is not None else checkpoint_dir()
    pattern = re.compile(rf"{re.escape(prefix)}-(\d{{{STEP_DIGITS}}})\.{re.escape(ext)}")
    found = []
    if root.is_dir():
        for path in root.iterdir():
            match = pattern.fullmatch(path.name)
            if match and path.is_file():
                found.append((int(match.group(1)), path))
    return sorted(found)


def prune(directory: Path, keep: int, prefix: str = DEFAULT_PREFIX, ext: str = "pkl") -> list[Path]:
    """Delete all but the newest `keep` checkpoints; returns what was deleted."""
    if keep < 1:
        raise ValueError(f"keep must be >= 1, got {keep}")
    old = [path for _, path in list_checkpoints(directory, prefix, ext)[:-keep]]
    for path in old:
        path.unlink(missing_ok=True)
        forget(path)
    return old


def save(
    state: Any,
    step: int,
    *,
    keep: int = 3,
    directory: str | os.PathLike[str] | None = None,
    prefix: str = DEFAULT_PREFIX,
) -> Path:
    """Pickle `state` as the checkpoint for `step` atomically, then keep only the newest `keep`."""
    root = Path(directory) if directory is not None else checkpoint_dir()
    path = checkpoint_path(step, root, prefix)
    with atomic_write(path, "wb") as f:
        pickle.dump(state, f, protocol=pickle.HIGHEST_PROTOCOL)
    prune(root, keep, prefix)
    emit("save", step=step)
    return path


def load_latest(
    directory: str | os.PathLike[str] | None = None, prefix: str = DEFAULT_PREFIX
) -> tuple[Any, int] | None:
    """(state, step) of the newest checkpoint, or None when there is none yet (a fresh start)."""
    found = list_checkpoints(directory, prefix)
    if not found:
        return None
    step, path = found[-1]
    with open(path, "rb") as f:
        state = pickle.load(f)
    emit("restore", step=step)
    return state, step
