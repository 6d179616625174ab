"""What is left of a process group, read from /proc.

`killpg(pgid, 0)` alone says yes for zombies, and when the agent runs as a container's PID 1
nobody reaps the orphans it inherits, so the agent would wait for processes that already died.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

_PROC = Path("/proc")


def _members(pgid: int) -> Iterator[str]:
    """The pids (as /proc names) of the group's live, non-zombie processes."""
    for entry in os.scandir(_PROC):
        if not entry.name.isdigit():
            continue
        try:
            stat = (_PROC / entry.name / "stat").read_text()
        except OSError:
            continue  # it exited while we looked
        state, _ppid, group = stat.rsplit(")", 1)[1].split()[:3]
        if int(group) == pgid and state != "Z":
            yield entry.name


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    if not _PROC.is_dir():
        return True  # no /proc (macOS): a zombie counts as alive, the escalation still ends it
    return next(_members(pgid), None) is not None


def group_handles(pgid: int, sig: int) -> bool:
    """Does any process of the group catch `sig` (a handler of its own, not ignored, not the
    default)? Only such a command can turn the notice into an orderly exit 0 before its work is
    done; one that ignores the signal, or would die of it, exits 0 only when its work is. Without
    /proc we cannot tell and answer yes, the safe side (a relaunch resumes; a lost job is lost)."""
    if not _PROC.is_dir():
        return True
    bit = 1 << (sig - 1)
    for pid in _members(pgid):
        try:
            for line in (_PROC / pid / "status").read_text().splitlines():
                if line.startswith("SigCgt:") and int(line.split()[1], 16) & bit:
                    return True
        except (OSError, ValueError, IndexError):
            continue
    return False
