"""Copying a job's working directory onto a fresh "machine" (a local instance, a check attempt).

Caches, environments and local checkpoints are left behind: a new machine would not have them,
and a stale `checkpoints/` copied along would let a job appear to resume without the store.
spotrun's own directories are skipped too, so a workdir that contains $SPOTRUN_HOME (or the
provider's scratch space) is not copied into itself.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import os
import shutil
import tarfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

IGNORED = (".git", ".venv", "venv", "__pycache__", "node_modules", ".pytest_cache", ".mypy_cache", "checkpoints")


def _ignore(exclude: Iterable[Path]) -> Callable[[str, list[str]], set[str]]:
    skip = {p.resolve() for p in exclude}
    names = shutil.ignore_patterns(*IGNORED)

    def ignore(directory: str, entries: list[str]) -> set[str]:
        here = Path(directory).resolve()
        return set(names(directory, entries)) | {e for e in entries if here / e in skip}

    return ignore


def copy_workdir(src: Path, dest: Path, exclude: Iterable[Path] = ()) -> None:
    shutil.copytree(src, dest, ignore=_ignore(exclude), symlinks=True)


def pack_workdir(src: Path, exclude: Iterable[Path] = ()) -> bytes:
    """What `copy_workdir` would copy, as a gzip'd tar for a cloud VM to fetch: entries sorted and
    no timestamp in the gzip header, so an unchanged workdir packs to the same bytes (one upload)."""
    ignore = _ignore(exclude)
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0) as gz, tarfile.open(fileobj=gz, mode="w") as tar:
        for dirpath, dirnames, filenames in os.walk(src):
            dropped = ignore(dirpath, dirnames + filenames)
            dirnames[:] = sorted(d for d in dirnames if d not in dropped)
            for name in [*dirnames, *sorted(f for f in filenames if f not in dropped)]:
                path = Path(dirpath) / name
                tar.add(path, arcname=str(path.relative_to(src)), recursive=False)
    return buf.getvalue()


def copied_files(path: Path) -> Iterator[Path]:
    """Every file a copy would take (what `copy_workdir` skips by name is not walked)."""
    for dirpath, dirnames, filenames in os.walk(path):
        dirnames[:] = [d for d in dirnames if d not in IGNORED]
        for name in filenames:
            yield Path(dirpath, name)


def tree_size(path: Path) -> int:
    """Bytes a copy would move."""
    total = 0
    for file in copied_files(path):
        with contextlib.suppress(OSError):
            total += os.lstat(file).st_size
    return total
