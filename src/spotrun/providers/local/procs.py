"""Finding every process of a local instance, wherever it went.

The agent may put the user's command in a session of its own, and a crashed launcher leaves
orphans re-parented to init, so neither process groups nor parent links find them all. An
environment marker does: every process an instance starts inherits it, and /proc shows it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

MARKER = "SPOTRUN_LOCAL_INSTANCE"

_PROC = Path("/proc")


def marker_env(instance_id: str) -> dict[str, str]:
    return {MARKER: instance_id}


def _has_marker(pid: int, needle: bytes) -> bool:
    try:
        # A zombie's environ reads empty, so an exited-but-unreaped process never counts.
        return needle in b"\0" + (_PROC / str(pid) / "environ").read_bytes()
    except OSError:
        return False


def _needle(instance_id: str) -> bytes:
    return f"\0{MARKER}={instance_id}\0".encode()


def is_alive(pid: int | None, instance_id: str) -> bool:
    """Whether `pid` still runs and still belongs to the instance (pids get reused)."""
    if not pid:
        return False
    if not _PROC.is_dir():  # no /proc (macOS): trust the pid
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    return _has_marker(pid, _needle(instance_id))


def instance_pids(instance_id: str) -> list[int]:
    """Every live process carrying the instance's marker."""
    if not _PROC.is_dir():
        return []
    needle = _needle(instance_id)
    return [int(p.name) for p in _PROC.iterdir() if p.name.isdigit() and _has_marker(int(p.name), needle)]


def kill_instance(instance_id: str, timeout_s: float = 10.0) -> list[int]:
    """SIGKILL every process of the instance except the caller; returns those still alive.

    Scans again until none is left, as a process may fork while its siblings die.
    """
    me = os.getpid()
    deadline = time.monotonic() + timeout_s
    while True:
        left = [p for p in instance_pids(instance_id) if p != me]
        if not left or time.monotonic() > deadline:
            return left
        for pid in left:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.02)
