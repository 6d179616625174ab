"""The agent's death takes its command with it.

The command runs in a process group of its own (so one signal reaches all of it), which also
means nothing ends it when the agent dies: a SIGKILLed or crashed agent would leave it running,
still writing checkpoints that nobody syncs, on a machine the controller already counts as lost.
A parent-death signal (`PR_SET_PDEATHSIG`) would reach only the group's first process, so a
watchdog holds the group instead: a tiny Python (no site, no imports beyond `os`; images
without a shell have one too) in a session of its own, whose stdin is a pipe only the agent can
write to. The kernel closes that pipe whatever kills the agent; the
watchdog reads end-of-file and SIGKILLs the whole group. When the agent is done with the
command, it writes `done` first and the watchdog exits without killing anything.
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import sys

log = logging.getLogger("spotrun.agent")

# argv[1]: the group. End-of-file before `done` means the agent is gone.
_SCRIPT = """
import os, sys
if sys.stdin.readline().strip() != "done":
    try:
        os.killpg(int(sys.argv[1]), 9)
    except OSError:
        pass
"""


class Watchdog:
    def __init__(self, pgid: int) -> None:
        read, self._pipe = os.pipe()  # both ends close-on-exec: the command never holds the write end
        try:
            self._proc: subprocess.Popen[bytes] | None = subprocess.Popen(
                [sys.executable, "-I", "-S", "-c", _SCRIPT, str(pgid), "spotrun-watchdog"],
                stdin=read, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                start_new_session=True,  # a signal to the agent's own group does not reach it
            )  # fmt: skip
        except OSError as exc:
            self._proc = None
            log.warning("cannot start the watchdog (%s): if the agent dies, the command keeps running", exc)
        finally:
            os.close(read)

    def release(self, *, kill: bool) -> None:
        """Stand down, or with `kill` take the group down now (the agent is leaving it running)."""
        with contextlib.suppress(OSError):
            if not kill:
                os.write(self._pipe, b"done\n")
        with contextlib.suppress(OSError):
            os.close(self._pipe)
        if self._proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(timeout=1.0)  # it only reads a line: reap it, leave no zombie
