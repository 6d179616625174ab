"""Is anything left of a process group? Zombies do not count.

`killpg(pgid, 0)` alone says yes for zombies, and when the agent runs as a container's PID 1
nobody reaps the orphans it inherits, so the agent would wait for processes that already died.
"""

from __future__ import annotations

import os
from pathlib import Path

_PROC = Path("/proc")


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    if not _PROC.is_dir():
        return True  # no /proc (macOS): a zombie counts as alive, the escalation still ends it
    for entry in os.scandir(_PROC):
        if not entry.name.isdigit():
            continue
        try:
            stat = (_PROC / entry.name / "stat").read_text()
        except OSError:
            continue  # it exited while we looked
        state, _ppid, group = stat.rsplit(")", 1)[1].split()[:3]
        if int(group) == pgid and state != "Z":
            return True
    return False
