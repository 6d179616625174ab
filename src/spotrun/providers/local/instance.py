"""The instance launcher: one process per local instance, playing both the VM and its cloud.

It gives the instance a disk (a scratch directory), a metadata endpoint (the chosen cloud's
emulator), runs setup and the agent, and reclaims the instance on the market's schedule or on
an interrupt, all without the controller: the controller may be down the whole time and
finds the outcome in `state.json` afterwards.

Run as `python -m spotrun.providers.local.instance ROOT INSTANCE_ID` by `LocalProvider`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import IO, TYPE_CHECKING

from spotrun.providers.base import InstanceState
from spotrun.providers.local import procs
from spotrun.providers.local.records import InstanceDir, Spec, State
from spotrun.faults import stop_point
from spotrun.paths import home
from spotrun.sdk.atomic import save_atomic
from spotrun.workdir import copy_workdir

if TYPE_CHECKING:
    from spotrun.emulators.base import Emulator

HEARTBEAT_S = 2.0
STOP_GRACE_S = 5.0  # what `terminate` gives the agent to save work before SIGKILL

Outcome = tuple[InstanceState, int | None, str]


class Launcher:
    def __init__(self, record: InstanceDir, spec: Spec) -> None:
        self.record = record
        self.spec = spec
        self.state = State(launcher_pid=os.getpid())
        self.stopping = asyncio.Event()
        self.log: IO[bytes] = open(spec.log_path, "ab", buffering=0)

    def _set(self, state: InstanceState, **changes: object) -> None:
        self.state = self.state.to(state, **changes)
        self.record.write_state(self.state)

    def _say(self, line: str) -> None:
        """Lifecycle lines go into the attempt log, between the job's own output."""
        self.log.write(f"[spotrun local {self.spec.id}] {line}\n".encode())

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stopping.set)
        self.record.agent_exit_file.unlink(missing_ok=True)  # from a launch that crashed half-way
        self._set(InstanceState.PENDING)
        beat = asyncio.create_task(self._heartbeat())
        emulator = None
        try:
            from spotrun.providers.local import cloud  # aiohttp: after the fork, off launch()'s path

            await asyncio.to_thread(self._prepare_disk)
            emulator = cloud.new_emulator(self.spec.cloud, self.spec.lead_s)
            url = await emulator.start(host="127.0.0.1", port=0)
            self._set(InstanceState.PENDING, emulator_url=url)
            final, returncode, detail = await self._lifecycle(emulator, url)
        except Exception as exc:  # the "VM" failed, not the job: the controller sees GONE
            final, returncode, detail = InstanceState.GONE, None, f"launcher failed: {exc!r}"
        beat.cancel()
        left = await asyncio.to_thread(procs.kill_instance, self.spec.id)
        if final != InstanceState.EXITED:
            # Reclaimed or stopped: the disk goes with the machine, as a VM's does.
            await asyncio.to_thread(shutil.rmtree, self.spec.scratch, True)
        if emulator is not None:
            with contextlib.suppress(Exception):  # the instance is over either way
                await emulator.stop()
        self._say(f"{final.value}: {detail}")
        self._set(final, returncode=returncode, detail=detail, stragglers=bool(left))

    @property
    def workdir(self) -> Path:
        return Path(self.spec.scratch) / "work"

    @property
    def tmpdir(self) -> Path:
        """The instance's own /tmp: the agent's notice file lives there, as on a VM."""
        return Path(self.spec.scratch) / "tmp"

    def _prepare_disk(self) -> None:
        shutil.rmtree(self.spec.scratch, ignore_errors=True)  # a relaunch after a crash starts clean
        self.tmpdir.mkdir(parents=True)
        if self.spec.workdir:
            # never the provider's own root or $SPOTRUN_HOME, should the workdir contain them
            root = Path(self.spec.scratch).parent.parent
            copy_workdir(Path(self.spec.workdir), self.workdir, exclude=[root, home()])
        else:
            self.workdir.mkdir()

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT_S)
            self._set(self.state.state)

    async def _spawn(self, argv: list[str]) -> asyncio.subprocess.Process:
        return await asyncio.create_subprocess_exec(
            *argv,
            cwd=self.workdir,
            env={**os.environ, "TMPDIR": str(self.tmpdir), **self.spec.env},
            stdin=asyncio.subprocess.DEVNULL,
            stdout=self.log,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,  # its own group, so stopping it never signals the launcher
        )

    async def _lifecycle(self, emulator: Emulator, url: str) -> Outcome:
        from spotrun.providers.local import cloud

        if self.spec.notice_at is not None:  # the market's decision, made at launch
            emulator.schedule_trigger(max(0.0, self.spec.notice_at - time.time()), kind="reclaim")
        reclaim = asyncio.create_task(cloud.wait_for_reclaim(emulator))
        try:
            if self.spec.setup:
                self._say("setup")
                outcome = await self._supervise(
                    await self._spawn(["bash", "-c", self.spec.setup]), reclaim, agent=False
                )
                if outcome[0] != InstanceState.EXITED or outcome[1] != 0:
                    return outcome[0], outcome[1], f"during setup: {outcome[2]}"
            agent = await self._spawn(self._agent_argv(url))
            self._set(InstanceState.RUNNING, agent_pid=agent.pid)
            self._say(f"agent started (pid {agent.pid}), metadata endpoint {url}")
            return await self._supervise(agent, reclaim)
        finally:
            reclaim.cancel()

    def _agent_argv(self, url: str) -> list[str]:
        spec = self.spec
        return [
            sys.executable, "-m", "spotrun", "exec",
            "--provider", spec.cloud,
            "--metadata-url", url,
            "--job-id", spec.job_id,
            "--attempt", str(spec.attempt),
            "--exit-file", str(self.record.agent_exit_file),
            *spec.agent_args,
            "--", "bash", "-c", spec.run,
        ]  # fmt: skip

    async def _supervise(
        self, proc: asyncio.subprocess.Process, reclaim: asyncio.Task[float], agent: bool = True
    ) -> Outcome:
        exited = asyncio.create_task(proc.wait())
        stop = asyncio.create_task(self.stopping.wait())
        try:
            await asyncio.wait({exited, stop, reclaim}, return_when=asyncio.FIRST_COMPLETED)
            if exited.done() and exited.result() < 0 and agent:
                sig = signal.Signals(-exited.result()).name
                if (code := self._reported(exited)) is not None:
                    return InstanceState.EXITED, code, f"the agent was killed by {sig} after its command ended (status {code})"
                # A killed agent reported nothing (its watchdog took the command down with it):
                # the instance is lost, as a VM whose agent died, and its disk goes with it.
                return InstanceState.GONE, None, f"lost: the agent was killed by {sig}"
            if exited.done():
                return InstanceState.EXITED, exited.result(), f"exited with status {exited.result()}"
            if stop.done():
                return await self._stop(proc, exited)
            deadline = reclaim.result()
            self._set(InstanceState.NOTICE, notice_deadline=deadline)
            self._say(f"reclaim notice: the instance goes away in {deadline - time.time():.1f}s")
            await asyncio.wait(
                {exited, stop}, timeout=max(0.0, deadline - time.time()), return_when=asyncio.FIRST_COMPLETED
            )
            if stop.done() and not exited.done():
                return await self._stop(proc, exited)
            status = self._reported(exited) if agent else (exited.result() if exited.done() else None)
            if status is None:
                return InstanceState.RECLAIMED, None, "reclaimed; no exit status from the agent (killed, or still running at the deadline)"
            return InstanceState.RECLAIMED, status, f"reclaimed; the agent's exit status {status}"
        finally:
            stop.cancel()
            exited.cancel()

    def _reported(self, exited: asyncio.Task[int]) -> int | None:
        """The agent's exit status; or, where it did not exit by itself (killed, or still
        finishing when the machine went), the one its exit record gave when the command ended."""
        if exited.done() and exited.result() >= 0:
            return exited.result()
        return self.record.agent_exit_code()

    async def _stop(self, proc: asyncio.subprocess.Process, exited: asyncio.Task[int]) -> Outcome:
        """`terminate`: the agent gets SIGTERM (it saves work as on a notice), then SIGKILL."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        await asyncio.wait({exited}, timeout=STOP_GRACE_S)
        return InstanceState.TERMINATED, self._reported(exited), "terminated"


def main(argv: list[str]) -> None:
    if len(argv) not in (2, 3):
        sys.exit("usage: python -m spotrun.providers.local.instance ROOT INSTANCE_ID [LOCK_FD]")
    record = InstanceDir(Path(argv[0]), argv[1])
    spec = record.read_spec()
    if spec is None:
        sys.exit(f"no spec.json in {record.path}: launch instances with LocalProvider.launch")
    # Fork once so the launcher is nobody's child: the controller that started it can exit or
    # carry on without ever reaping it, and it never lingers as a zombie.
    child = os.fork()
    if child:
        stop_point("launcher-unrecorded")
        # Exiting closes this process's copy of the launch lock, the last one once the pid is
        # on record (the child drops its own at once).
        save_atomic(record.launcher_file, json.dumps({"pid": child, "pgid": os.getpgid(0)}))
        os._exit(0)
    if len(argv) == 3:
        os.close(int(argv[2]))  # close, not unlock: an unlock would free it for every holder
    asyncio.run(Launcher(record, spec).run())


if __name__ == "__main__":
    main(sys.argv[1:])
