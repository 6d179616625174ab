"""Walking a checkpoint or outputs directory: which files are candidates for a snapshot."""

from __future__ import annotations

import logging
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from spotrun.sdk.atomic import is_internal_name

log = logging.getLogger("spotrun.store")


@dataclass(frozen=True)
class LocalFile:
    rel: str  # POSIX path relative to the scanned directory
    path: Path
    st: os.stat_result


def scan(root: Path, exclude: frozenset[str] = frozenset()) -> list[LocalFile]:
    """Regular files under `root`, skipping SDK temp files and symlinks (they could point outside)."""
    out: list[LocalFile] = []

    def walk(directory: Path, prefix: str) -> None:
        try:
            entries = list(os.scandir(directory))
        except FileNotFoundError:  # removed while we walk: it is simply not there this round
            return
        for entry in entries:
            if is_internal_name(entry.name) or (not prefix and entry.name in exclude):
                continue
            rel = f"{prefix}{entry.name}"
            try:
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            if stat.S_ISDIR(st.st_mode):
                walk(Path(entry.path), rel + "/")
            elif stat.S_ISREG(st.st_mode):
                out.append(LocalFile(rel, Path(entry.path), st))
            else:
                log.debug("skipping %s: not a regular file", rel)

    walk(root, "")
    return out


def signature(files: list[LocalFile]) -> frozenset[tuple[str, int, int]]:
    """What changes when a file appears, is renamed into place, grows or is rewritten."""
    return frozenset((f.rel, f.st.st_size, f.st.st_mtime_ns) for f in files)
