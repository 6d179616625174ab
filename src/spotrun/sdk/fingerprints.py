"""Write hints: per-chunk fingerprints of a file, recorded by the SDK while it writes the file.

A snapshot must find which chunks of a rewritten checkpoint changed; without a hint it re-reads
every byte. When the file is written through `atomic_write`, its bytes pass through our hands,
so they are fingerprinted on the way (hot in cache, almost free) and left beside the file:

    <file's dir>/.spotrun-fingerprints/<file name>.json

    {"version": 1, "fingerprint": "xxh3-128", "chunk_size": 524288,
     "size": N, "mtime_ns": M, "ino": I, "dev": D, "fingerprints": ["<32 hex>", ...]}

One fingerprint per `chunk_size` bytes of the file (the last chunk shorter; an empty file has
none), each equal to `spotrun.store.format.fingerprint(chunk_bytes)`. `size`, `mtime_ns`, `ino`
and `dev` are the file's `stat` after it was renamed into place: a hint is trusted only while
all four still match, so any later rewrite, `touch` or replacement voids it. A hint only saves
work: a missing or rejected one costs a full read of the file, never correctness.
"""

from __future__ import annotations

import json
import logging
import os
import re
import stat
from pathlib import Path
from types import ModuleType
from typing import Any, BinaryIO

log = logging.getLogger("spotrun.sdk")

SIDECAR_DIR = ".spotrun-fingerprints"
VERSION = 1
_HEX32 = re.compile(r"[0-9a-f]{32}")
# Reading a sidecar is bounded by what a valid one can need (35 bytes per fingerprint + header).
_BYTES_PER_PRINT = 64
_HEADER_BYTES = 4096
# Queries that cannot make the recorded fingerprints lie; anything else a library reaches
# for on the file (seek, truncate, fileno, ...) turns fingerprinting off.
_HARMLESS = frozenset({"name", "mode", "closed", "writable", "readable", "seekable", "isatty"})


def _format() -> ModuleType:
    """`spotrun.store.format`, imported on first use: importing it runs the store package,
    which imports this module (and `spotrun exec` must start without the store)."""
    from spotrun.store import format as store_format

    return store_format


def sidecar_path(path: str | os.PathLike[str]) -> Path:
    target = Path(path)
    return target.parent / SIDECAR_DIR / f"{target.name}.json"


class ChunkFingerprints:
    """Fingerprints of a byte stream cut into `chunk_size` chunks, fed in writes of any length."""

    def __init__(self, chunk_size: int | None = None) -> None:
        """`chunk_size` None: the store's default (`spotrun.store.format.DEFAULT_CHUNK_SIZE`)."""
        import xxhash

        chunk_size = _format().DEFAULT_CHUNK_SIZE if chunk_size is None else chunk_size
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        self.chunk_size = chunk_size
        self._hasher = xxhash.xxh3_128()
        self._filled = 0  # bytes of the current chunk hashed so far
        self._prints: list[str] = []

    def update(self, data: Any) -> None:
        view = memoryview(data).cast("B")
        pos, end = 0, len(view)
        while pos < end:
            take = min(self.chunk_size - self._filled, end - pos)
            self._hasher.update(view[pos : pos + take])
            self._filled += take
            pos += take
            if self._filled == self.chunk_size:
                self._prints.append(self._hasher.hexdigest())
                self._hasher.reset()
                self._filled = 0

    def result(self) -> list[str]:
        return self._prints + ([self._hasher.hexdigest()] if self._filled else [])


class FingerprintingWriter:
    """A binary file opened for writing that fingerprints exactly the bytes written through it.

    Used where the file is written front to back (`torch.save`, `pickle.dump`, `numpy.save`,
    `f.write`). Reaching past `write` (seek, truncate, fileno, ...) still works, delegated to
    the file, but turns fingerprinting off: the bytes on disk may then differ from those seen.
    """

    def __init__(self, inner: BinaryIO, chunk_size: int | None = None) -> None:
        self._inner = inner
        self._prints: ChunkFingerprints | None = ChunkFingerprints(chunk_size)
        self.chunk_size = self._prints.chunk_size

    def write(self, data: Any) -> int:
        count = self._inner.write(data)
        if self._prints is None:
            return count
        if count is None:  # a non-blocking raw file: what reached the file is unknown
            self._stop("write returned None")
            return count
        try:
            self._prints.update(memoryview(data).cast("B")[:count])
        except (TypeError, ValueError) as exc:  # a buffer that is not C-contiguous
            self._stop(f"unhashable buffer ({exc})")
        return count

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        self._inner.flush()

    def tell(self) -> int:
        return self._inner.tell()

    def result(self) -> list[str] | None:
        """The fingerprints of everything written, or None if fingerprinting was turned off."""
        return self._prints.result() if self._prints is not None else None

    def _stop(self, why: str) -> None:
        if self._prints is not None:
            log.debug("no write hint for %s: %s", getattr(self._inner, "name", "?"), why)
        self._prints = None

    def __getattr__(self, name: str) -> Any:
        if name in ("_inner", "_prints"):  # not set yet (copy, unpickling): no recursion
            raise AttributeError(name)
        if name not in _HARMLESS:
            self._stop(f"the writer used .{name}")
        return getattr(self._inner, name)


def record(
    path: str | os.PathLike[str],
    prints: list[str],
    *,
    chunk_size: int | None = None,
    written: os.stat_result | None = None,
) -> None:
    """Leave the hint for `path`, now in place under its final name. Never raises OSError.

    `written`: the `fstat` of the file as written (before its rename); if `path` is no longer
    that inode, another writer replaced it meanwhile and no hint is left.
    """
    from spotrun.sdk.atomic import replace_via_temp  # atomic imports this module

    fmt = _format()
    chunk_size = fmt.DEFAULT_CHUNK_SIZE if chunk_size is None else chunk_size
    target = Path(path)
    try:
        st = os.stat(target)
        if written is not None and (st.st_dev, st.st_ino) != (written.st_dev, written.st_ino):
            log.debug("no write hint for %s: another writer replaced it (its hint is its own)", target)
            return
        if len(prints) == -(-st.st_size // chunk_size):
            body = {
                "version": VERSION,
                "fingerprint": fmt.FINGERPRINT_NAME,
                "chunk_size": chunk_size,
                "size": st.st_size,
                "mtime_ns": st.st_mtime_ns,
                "ino": st.st_ino,
                "dev": st.st_dev,
                "fingerprints": prints,
            }
            with replace_via_temp(sidecar_path(target), durable=False) as tmp:
                tmp.write_bytes(json.dumps(body, separators=(",", ":")).encode())
            return
        log.debug("no write hint for %s: %d fingerprints for %d bytes", target, len(prints), st.st_size)
    except OSError as exc:  # the save itself succeeded: it must not fail for a hint
        log.debug("no write hint for %s: %s", target, exc)
    forget(target)


def forget(path: str | os.PathLike[str]) -> None:
    """Remove the hint of `path`, if any: its bytes were written where we could not see them."""
    try:
        sidecar_path(path).unlink(missing_ok=True)
    except OSError as exc:
        log.debug("could not remove the write hint of %s: %s", path, exc)


def load(path: str | os.PathLike[str], st: os.stat_result, chunk_size: int) -> list[str] | None:
    """The recorded fingerprints of `path` whose `stat` is `st`, or None unless all of it checks."""
    count = -(-st.st_size // chunk_size)
    try:
        raw = _read_sidecar(sidecar_path(path), count * _BYTES_PER_PRINT + _HEADER_BYTES)
        data = json.loads(raw)
    except (OSError, ValueError, RecursionError) as exc:
        if not isinstance(exc, FileNotFoundError):
            log.debug("ignoring the write hint of %s: %s", path, exc)
        return None
    expected = {
        "version": VERSION,
        "fingerprint": _format().FINGERPRINT_NAME,
        "chunk_size": chunk_size,
        "size": st.st_size,
        "mtime_ns": st.st_mtime_ns,
        "ino": st.st_ino,
        "dev": st.st_dev,
    }
    prints = data.get("fingerprints") if isinstance(data, dict) else None
    if (
        not isinstance(prints, list)
        or len(prints) != count
        # type(): JSON true must not pass for 1
        or any(data.get(k) != v or type(data.get(k)) is not type(v) for k, v in expected.items())
        or not all(isinstance(p, str) and _HEX32.fullmatch(p) for p in prints)
    ):
        log.debug("ignoring the write hint of %s: it does not describe the file as it is now", path)
        return None
    return prints


def _read_sidecar(sidecar: Path, limit: int) -> bytes:
    """At most `limit` bytes of a regular file, never through a symlink or a FIFO."""
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
    dir_fd = os.open(sidecar.parent, flags | os.O_DIRECTORY)
    try:
        fd = os.open(sidecar.name, flags, dir_fd=dir_fd)
    finally:
        os.close(dir_fd)
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ValueError("not a regular file")
        raw = f.read(limit + 1)
    if len(raw) > limit:
        raise ValueError(f"larger than the {limit} bytes a valid hint needs")
    return raw
