"""Writes that are never seen half-done: temp file in the same directory, fsync, rename.

The agent's checkpoint sync skips any name containing `TMP_MARKER`, so a file being written
through these helpers can never enter a snapshot torn. Bytes written through `atomic_write`
are also fingerprinted on the way and left as a write hint (`spotrun.sdk.fingerprints`), so the
next snapshot reads only the chunks that changed.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from spotrun.sdk.fingerprints import SIDECAR_DIR, FingerprintingWriter, forget, record

TMP_MARKER = ".spotrun-tmp."


def is_internal_name(name: str) -> bool:
    """A file being written, or the write hints: never part of a snapshot or a user's files."""
    return TMP_MARKER in name or name == SIDECAR_DIR


def fsync_dir(directory: Path) -> None:
    """Make a rename durable: the directory entry lives in the directory's own inode."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def replace_via_temp(path: str | os.PathLike[str], *, durable: bool = True) -> Iterator[Path]:
    """Yield a temp path beside `path`; whatever was written there replaces `path` once the
    block succeeds. On an error `path` is untouched and the temp file removed. `durable=False`
    skips the fsyncs, for files that only matter while this machine is alive and must appear
    fast (the agent's notice file). Leaves write hints alone: see `atomic_path`."""
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
def atomic_path(path: str | os.PathLike[str], *, durable: bool = True) -> Iterator[Path]:
    """Yield a temp path to write (for libraries that insist on writing the file themselves).

    Whatever was written there replaces `path` whole once the block succeeds; on an error `path`
    is untouched and the temp file removed. `durable=False` skips the fsyncs, for files that only
    matter while this machine is alive. No write hint: we never saw the bytes, so any hint of
    the file's previous version is removed.
    """
    with replace_via_temp(path, durable=durable) as tmp:
        yield tmp
    forget(path)


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike[str], mode: str = "wb") -> Iterator[IO]:
    """Yield a file to write; on success it replaces `path` whole, on error `path` is untouched.

    In "wb" the file is a `FingerprintingWriter`: write it front to back (`torch.save`,
    `pickle.dump`, `numpy.save`, `f.write`) and a write hint is left beside it; seeking or
    writing through its descriptor works too, but leaves no hint.
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_write supports modes 'wb' and 'w', not {mode!r}")
    prints, written, chunk_size = None, None, 0
    with replace_via_temp(path) as tmp, open(tmp, mode) as f:
        if mode == "w":
            yield f
        else:
            writer = FingerprintingWriter(f)
            yield writer
            prints, chunk_size = writer.result(), writer.chunk_size
            if prints is not None:
                f.flush()
                written = os.fstat(f.fileno())
    if prints is None:
        forget(path)
    else:
        record(path, prints, chunk_size=chunk_size, written=written)


def save_atomic(path: str | os.PathLike[str], data: bytes | str) -> Path:
    """Write `data` to `path` atomically and durably; returns the path."""
    with atomic_write(path, "wb" if isinstance(data, bytes) else "w") as f:
        f.write(data)
    return Path(path)
