"""Waiting helpers and a controller child process, shared by the controller tests."""

from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

WAIT_S = 120.0  # generous: the machine is shared and loaded


def wait_until(predicate: Callable[[], object], timeout: float = WAIT_S, what: str = "condition") -> object:
    """Poll `predicate` until it returns something truthy; fail with `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


async def async_wait_until(predicate: Callable[[], object], timeout: float = WAIT_S, what: str = "condition") -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


class ControllerProcess:
    """`spotrun controller run` in a child process, as the daemon runs it, to kill at will."""

    def __init__(self, home: Path, env: dict[str, str] | None = None, args: list[str] | None = None):
        self.log = home / f"controller-{secrets.token_hex(3)}.log"
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "spotrun", "controller", "run", "--interval", "0.2", "--lease", "3s", *(args or [])],
                env={**os.environ, **(env or {})}, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def wait_exit(self, timeout: float = WAIT_S) -> int:
        return self.proc.wait(timeout)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(WAIT_S)

    def output(self) -> str:
        return self.log.read_text(errors="replace")




COUNTER = Path(__file__).with_name("counter.py")


def counter_job(dir: Path, name: str, steps: int = 20, step_s: float = 0.05, **extra: object) -> dict:
    """A spec dict running counter.py, with fast backoff so tests don't wait on it."""
    spec: dict = {
        "name": name,
        "run": f"{sys.executable} {COUNTER}",
        "env": {
            "COUNTER_STATE": str(dir / f"{name}.state"),
            "COUNTER_RESULT": str(dir / f"{name}.result"),
            "STEPS": str(steps),
            "STEP_S": str(step_s),
        },
        "recovery": {"backoff": {"base": "50ms", "max": "1s"}},
    }
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(spec.get(key), dict):
            spec[key] = {**spec[key], **value}
        else:
            spec[key] = value
    return spec


def progress(dir: Path, name: str) -> int:
    """The step counter.py last saved (0 before it starts)."""
    import json

    try:
        return json.loads((dir / f"{name}.state").read_text())["step"]
    except (FileNotFoundError, ValueError):
        return 0
