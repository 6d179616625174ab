"""Fault injection for tests: named points where a process dies or freezes on request.

`SPOTRUN_TEST_CRASH_AT=<label>` SIGKILLs the process at that point (a controller killed at an
exact line); `SPOTRUN_TEST_STOP_AT=<label>` SIGSTOPs it there, so a test can act while it is
frozen half-way and then continue it. Unset (always, outside tests), both are a dictionary look-up.
"""

from __future__ import annotations

import os
import signal


def crash_point(label: str) -> None:
    """Labels: after-attempt-row, after-launch, after-terminate (controller), launcher-spawned
    (local provider)."""
    if os.environ.get("SPOTRUN_TEST_CRASH_AT") == label:
        os.kill(os.getpid(), signal.SIGKILL)


def stop_point(label: str) -> None:
    """Labels: launcher-unrecorded (a local instance's launcher, before its pid is on record),
    agent-exit-recorded (the agent, once its command's end is on record, before it exits)."""
    if os.environ.get("SPOTRUN_TEST_STOP_AT") == label:
        os.kill(os.getpid(), signal.SIGSTOP)
