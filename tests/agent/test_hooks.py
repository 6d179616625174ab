"""The supervisor's contract with hooks and watchers, in process: order, budget, restarts."""

from __future__ import annotations

import asyncio
import json
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

from spotrun.agent.supervisor import EXIT_HOOK_FAILED, EXIT_RECLAIMED, Supervisor, SupervisorOptions
from spotrun.notices.base import Notice
from spotrun.notices.file import FileWatcher

from .helpers import CHILD

TIMEOUT = 60.0


class RecordingHook:
    """A real hook that appends each call to a log file, as the checkpoint store would act."""

    def __init__(self, log: Path, fail_on: str | None = None) -> None:
        self.log = log
        self.fail_on = fail_on

    def record(self, event: str) -> None:
        with open(self.log, "a") as f:
            f.write(event + "\n")
        if event.split()[0] == self.fail_on:
            raise RuntimeError(f"{event} failed on purpose")

    async def before_start(self, env: dict[str, str]) -> None:
        env["HOOK_ADDED"] = "restored"
        self.record("before_start")

    async def while_running(self) -> None:
        self.record("while_running")
        await asyncio.Event().wait()

    async def on_notice(self, notice: Notice, budget_s: float | None) -> None:
        self.record(f"on_notice {notice.kind.value} {budget_s is not None and 50 < budget_s < 60}")

    async def after_exit(self, returncode: int) -> None:
        self.record(f"after_exit {returncode}")


class RecordingFileWatcher(FileWatcher):
    """The file watcher, plus a record of acknowledgements (Azure's StartRequests)."""

    def __init__(self, path: Path, log: Path, failures: int = 0) -> None:
        super().__init__(path, poll_interval=0.02)
        self.log = log
        self.failures = failures

    async def watch(self):
        if self.failures:
            self.failures -= 1
            raise ConnectionError("metadata service unreachable")
        async for notice in super().watch():
            yield notice

    async def acknowledge(self, notice: Notice) -> None:
        with open(self.log, "a") as f:
            f.write(f"ack {notice.provider}\n")


def command(tmp_path: Path, log: Path) -> list[str]:
    """Appends `command-started <HOOK_ADDED>` to the log, then waits to be signalled."""
    script = (
        "import os, sys;"
        f"open({str(log)!r}, 'a').write('command-started ' + os.environ.get('HOOK_ADDED', '-') + '\\n');"
        f"os.execv(sys.executable, [sys.executable, {str(CHILD)!r}, {str(tmp_path / 'out')!r}, 'handle'])"
    )
    return [sys.executable, "-c", script]


async def trigger_when_ready(tmp_path: Path, content: dict) -> None:
    async with asyncio.timeout(TIMEOUT):
        while not (tmp_path / "out" / "ready").exists():
            await asyncio.sleep(0.02)
    (tmp_path / "reclaim").write_text(json.dumps(content))


def options(tmp_path: Path) -> SupervisorOptions:
    return SupervisorOptions(notice_file=tmp_path / "notice.json", job_id="job-hooks", kill_margin=5.0)


async def test_hooks_run_in_order_around_the_command_and_before_the_ack(tmp_path: Path):
    log = tmp_path / "calls.log"
    watcher = RecordingFileWatcher(tmp_path / "reclaim", log)
    sup = Supervisor(command(tmp_path, log), options(tmp_path), [watcher], [RecordingHook(log)])
    deadline = (datetime.now(timezone.utc) + timedelta(seconds=60)).isoformat()
    trigger = asyncio.create_task(trigger_when_ready(tmp_path, {"deadline": deadline}))
    code = await asyncio.wait_for(sup.run(), TIMEOUT)
    await trigger
    assert code == EXIT_RECLAIMED
    calls = log.read_text().splitlines()
    assert calls[0] == "before_start"
    assert "command-started restored" in calls  # before_start's env reached the command
    assert calls.index("command-started restored") > 0
    assert "while_running" in calls
    # budget: 60 s to the deadline minus the 5 s kill margin
    assert calls[-3:] == ["on_notice reclaim True", f"after_exit {EXIT_RECLAIMED}", "ack file"]


async def test_a_failing_watcher_is_restarted_and_failing_hooks_do_not_stop_the_agent(tmp_path: Path):
    log = tmp_path / "calls.log"
    watcher = RecordingFileWatcher(tmp_path / "reclaim", log, failures=1)
    hook = RecordingHook(log, fail_on="on_notice")
    sup = Supervisor(command(tmp_path, log), options(tmp_path), [watcher], [hook])
    trigger = asyncio.create_task(trigger_when_ready(tmp_path, {}))
    code = await asyncio.wait_for(sup.run(), TIMEOUT)
    await trigger
    assert code == EXIT_RECLAIMED
    assert (tmp_path / "out" / "got-SIGTERM").exists()
    assert log.read_text().splitlines()[-2:] == [f"after_exit {EXIT_RECLAIMED}", "ack file"]


async def test_a_failing_before_start_means_the_command_never_runs(tmp_path: Path):
    log = tmp_path / "calls.log"
    sup = Supervisor(command(tmp_path, log), options(tmp_path), [], [RecordingHook(log, fail_on="before_start")])
    assert await asyncio.wait_for(sup.run(), TIMEOUT) == EXIT_HOOK_FAILED
    assert log.read_text().splitlines() == ["before_start"]
