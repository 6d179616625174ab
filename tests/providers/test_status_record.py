"""The status record's early word: a command that ended is not lost with a machine that goes
during the agent's final sync (AWS, Kubernetes: every provider that reads the record)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from pathlib import Path

from spotrun.providers.base import InstanceState
from spotrun.providers.status import Status, StatusReader, outcome
from tests.agent.helpers import wait_for


def verdict(cloud: InstanceState, status: Status, now: float) -> tuple[InstanceState, int | None]:
    out = outcome(cloud, "the cloud's reason", status, launched_at=0.0, now=now, boot_timeout_s=60, stale_after_s=30)
    return out.state, out.returncode


def frozen(pid: int) -> bool:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[-1].startswith("T")


def test_a_command_that_ended_is_not_lost_with_its_machine(spotrun_cmd: list[str], tmp_path: Path) -> None:
    """The agent writes `ended` before its final sync and `exit` after it. Frozen in between (a
    machine reclaimed, or gone silent, while the sync uploads), the record already says the
    command finished, so the controller records the job done instead of running it again; the
    cloud's word alone would have said "reclaimed"."""
    store = f"file://{tmp_path / 'store'}"
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    agent = subprocess.Popen(
        [*spotrun_cmd, "exec", "--provider", "none", "--notice-file", str(tmp_path / "n.json"),
         "--checkpoint-dir", str(ckpt), "--store", store, "--status-store", store,
         "--job-id", "j", "--attempt", "1", "--", "bash", "-c", f"echo 41 > {ckpt}/step.txt"],
        env={**os.environ, "SPOTRUN_TEST_STOP_AT": "agent-exit-recorded"},
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        wait_for(lambda: frozen(agent.pid), "the agent to stop after its command ended")
        reader = StatusReader(store)
        mid = asyncio.run(reader.read_all())[("j", 1)]
        assert (mid.ended, mid.returncode) == (0, None)  # the early word, no exit record yet
        assert verdict(InstanceState.RECLAIMED, mid, now=10.0) == (InstanceState.EXITED, 0)
        assert verdict(InstanceState.RUNNING, mid, now=mid.beat_at + 31) == (InstanceState.EXITED, 0)  # went silent
        assert verdict(InstanceState.RUNNING, mid, now=mid.beat_at + 1) == (InstanceState.RUNNING, None)  # still syncing
        without = Status(beat_at=mid.beat_at)
        assert verdict(InstanceState.RECLAIMED, without, now=10.0) == (InstanceState.RECLAIMED, None)

        os.kill(agent.pid, signal.SIGCONT)
        _, err = agent.communicate(timeout=60)
        assert agent.returncode == 0, err.decode()
        done = asyncio.run(reader.read_all())[("j", 1)]
        assert (done.ended, done.returncode) == (0, 0) and done.exited_at >= done.ended_at
        assert verdict(InstanceState.RECLAIMED, done, now=time.time()) == (InstanceState.EXITED, 0)
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.wait()


def test_the_machines_log_is_shipped_as_it_grows_and_kept_without_repeats(spotrun_cmd: list[str],
                                                                          tmp_path: Path) -> None:
    """`--log-file` (the AWS boot log): what was there at the start goes before the command runs,
    the rest after it; a copy kept in pieces (the controller's, across passes) repeats nothing."""
    store = f"file://{tmp_path / 'store'}"
    boot = tmp_path / "boot.log"
    boot.write_text("[spotrun boot] installed\n")
    done = subprocess.run(
        [*spotrun_cmd, "exec", "--provider", "none", "--notice-file", str(tmp_path / "n.json"),
         "--status-store", store, "--log-file", str(boot), "--job-id", "j", "--attempt", "2",
         "--", "bash", "-c", f"for i in 1 2 3; do echo step $i >> {boot}; done"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    reader = StatusReader(store)
    kept = tmp_path / "kept.log"
    kept.write_text("[spotrun boot] installed\n")  # the first piece, kept by an earlier pass
    asyncio.run(reader.keep_log("j", 2, kept))
    asyncio.run(reader.keep_log("j", 2, kept))
    assert kept.read_text() == boot.read_text() == "[spotrun boot] installed\nstep 1\nstep 2\nstep 3\n"
    assert len(list((tmp_path / "store" / "logs" / "j" / "a000002").iterdir())) == 2  # before and after the command

    refused = subprocess.run([*spotrun_cmd, "exec", "--provider", "none", "--log-file", str(boot), "--", "true"],
                             capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2 and "--log-file needs --status-store" in refused.stderr
    assert "Traceback" not in refused.stderr
