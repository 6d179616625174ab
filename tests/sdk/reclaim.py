"""Reclaim a real child process: through the real agent, or as it does (notice file, then SIGTERM)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

from spotrun.notices.base import Notice, NoticeKind, utcnow
from spotrun.sdk.atomic import save_atomic

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
RECLAIMED = 75


def example_cmd(name: str, *args: str) -> list[str]:
    return [sys.executable, str(EXAMPLES / name), *args]


def run_to_end(cmd: list[str], env: dict[str, str], attempt: int = 1) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        cmd, env={**env, "SPOTRUN_ATTEMPT": str(attempt)}, capture_output=True, text=True, timeout=240
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def under_agent(cmd: list[str], watch_file: Path) -> list[str]:
    """`cmd` supervised by the real agent, which reclaims it when `watch_file` appears."""
    return [sys.executable, "-m", "spotrun", "exec", "--provider", "file", "--watch-file", str(watch_file), "--", *cmd]


def reclaim_when(cmd: list[str], env: dict[str, str], marker: str, via: str = "file+signal") -> tuple[int, str]:
    """Start `cmd`, wait for a stdout line starting with `marker`, reclaim it; (exit code, output).

    via: "agent" runs it under `spotrun exec` and lets the agent deliver the notice;
    "file+signal" does what the agent does by hand (notice file, then SIGTERM to the group);
    "signal" sends only SIGTERM, as when the notice file cannot be read.
    """
    watch_file = Path(env["SPOTRUN_NOTICE_FILE"]).with_name("reclaim-now")
    if via == "agent":
        cmd = under_agent(cmd, watch_file)
    proc = subprocess.Popen(
        cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    seen = []
    try:
        for line in proc.stdout:  # bounded by the test's timeout; the child ends on its own too
            seen.append(line)
            if line.startswith(marker):
                break
        else:
            raise AssertionError(f"child ended before printing {marker!r}:\n{''.join(seen)}")
        if via == "agent":
            watch_file.touch()
        else:
            if via == "file+signal":
                reclaim = Notice("aws", NoticeKind.RECLAIM, "terminate", utcnow() + timedelta(minutes=2))
                save_atomic(env["SPOTRUN_NOTICE_FILE"], reclaim.to_json())
            os.killpg(proc.pid, signal.SIGTERM)
        rest, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return proc.returncode, "".join(seen) + rest
