"""Writes that are never seen half-done: temp file in the same directory, fsync, rename.

The agent's checkpoint sync skips any name containing `TMP_MARKER`, so a file being written
through these helpers can never enter a snapshot torn.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import IO

TMP_MARKER = ".spotrun-tmp."


def is_temp_name(name: str) -> bool:
    return TMP_MARKER in name


def fsync_dir(directory: Path) -> None:
    """Make a rename durable: the directory entry lives in the directory's own inode."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], *, durable: bool = True) -> Iterator[Path]:
    """Yield a temp path to write (also for libraries that insist on writing the file themselves).

    Whatever was written there replaces `path` whole once the block succeeds; on an error `path`
    is untouched and the temp file removed. `durable=False` skips the fsyncs, for files that only
    matter while this machine is alive and must appear fast (the agent's notice file).
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}{TMP_MARKER}{secrets.token_hex(4)}")
    try:
        yield tmp
        if durable:
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if durable:
        fsync_dir(target.parent)


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike[str], mode: str = "wb") -> Iterator[IO]:
    """Yield a file to write; on success it replaces `path` whole, on error `path` is untouched."""
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_write supports modes 'wb' and 'w', not {mode!r}")
    with atomic_path(path) as tmp, open(tmp, mode) as f:
        yield f


def save_atomic(path: str | os.PathLike[str], data: bytes | str) -> Path:
    """Write `data` to `path` atomically and durably; returns the path."""
    with atomic_write(path, "wb" if isinstance(data, bytes) else "w") as f:
        f.write(data)
    return Path(path)
