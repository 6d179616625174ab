"""Run the real `spotrun exec` as a child process and wait for what it does, never sleep."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

CHILD = Path(__file__).with_name("child.py")
WAIT_S = 30.0  # generous: the machine is shared and loaded


def wait_for(condition: Callable[[], object], what: str, timeout: float = WAIT_S) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = condition()
        if result:
            return result
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def child_cmd(out: Path, mode: str) -> list[str]:
    return [sys.executable, str(CHILD), str(out), mode]


class Agent:
    """One `spotrun exec` process; its stderr is kept for assertions."""

    def __init__(self, spotrun_cmd: list[str], args: list[str], command: list[str], tmp: Path) -> None:
        self.stderr_path = tmp / f"agent-{time.monotonic_ns()}.log"
        self._stderr = open(self.stderr_path, "wb")
        self.proc = subprocess.Popen(
            [*spotrun_cmd, "exec", *args, "--", *command],
            stdout=subprocess.DEVNULL, stderr=self._stderr,
        )

    def signal(self, sig: signal.Signals) -> None:
        self.proc.send_signal(sig)

    def wait(self, timeout: float = WAIT_S) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"the agent did not exit in {timeout:.0f}s; log:\n{self.log}") from None

    @property
    def log(self) -> str:
        return self.stderr_path.read_text()

    def close(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self._stderr.close()
