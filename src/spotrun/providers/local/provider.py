"""`LocalProvider`: spot instances as process groups on this machine, for demos and tests.

Everything it knows lives under `root`, so a new provider object (a restarted controller)
sees the instances of the previous one, and every call is safe to repeat.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from spotrun.faults import crash_point
from spotrun.paths import private_dir, private_file
from spotrun.providers.base import Instance, InstanceState, LaunchRefused, LaunchRequest
from spotrun.providers.local import market as market_mod
from spotrun.providers.local import procs
from spotrun.providers.local.market import MarketConfig
from spotrun.providers.local.records import (
    FINAL_STATES,
    InstanceDir,
    Spec,
    State,
    gone,
    instance_id_for,
    to_instance,
)

POLL_S = 0.05
STOP_WAIT_S = 15.0  # launcher's own grace (5 s) plus its clean-up, on a loaded machine


class LocalProvider:
    name = "local"

    def __init__(self, root: Path, market: MarketConfig | None = None) -> None:
        self.root = Path(root)
        self.market = market or MarketConfig()
        private_dir(self.root / "instances")  # records, logs and disks: this user's only

    def _record(self, instance_id: str) -> InstanceDir:
        return InstanceDir(self.root, instance_id)

    @contextlib.asynccontextmanager
    async def _launch_lock(self, record: InstanceDir) -> AsyncIterator[int]:
        """One launch per token at a time, across processes; released when every holder is gone.
        Yields the lock's descriptor, which the launcher inherits (see `_start_launcher`)."""
        with open(record.lock_file, "a") as lock:
            while True:
                try:
                    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    await asyncio.sleep(POLL_S)
            try:
                yield lock.fileno()
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _launching(self, record: InstanceDir) -> bool:
        """Whether a launch of this instance is under way right now (in any process)."""
        try:
            with open(record.lock_file, "a") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        return False

    async def launch(self, request: LaunchRequest) -> Instance:
        record = self._record(instance_id_for(request.token))
        async with self._launch_lock(record) as lock_fd:
            if record.launcher_pid() is None:
                # fsync and fork off the event loop: a controller launching many must not stall
                await asyncio.to_thread(record.write_spec, self._spec(record.id, request))
                record.state_file.unlink(missing_ok=True)  # from a launch that crashed half-way
                await self._start_launcher(record, request.secrets, lock_fd)
        return await self.query(record.id)

    def _spec(self, instance_id: str, request: LaunchRequest) -> Spec:
        """Ask the market; raises LaunchRefused when spot capacity or price says no."""
        if request.workdir and not Path(request.workdir).is_dir():
            raise ValueError(f"workdir {request.workdir} is not a directory: give the folder to copy")
        epoch = self.market.epoch(self.root)  # before `now`: the first launch falls in tick 0
        now = time.time()
        zone = request.zone or self.market.default_zone()
        spot_price, on_demand_price = self.prices(request.instance_type, zone)
        notice_at = None
        if request.spot:
            if not self.market.available(zone, now, epoch):
                raise LaunchRefused(f"no spot capacity in {zone} now (the trace says 0); retry later")
            if request.max_price is not None and spot_price > request.max_price:
                raise LaunchRefused(
                    f"spot price ${spot_price:.3f}/h is above the max price ${request.max_price:.3f}/h"
                )
            notice_at = self.market.notice_at(request.token, zone, now, epoch)
        return Spec(
            id=instance_id,
            token=request.token,
            job_id=request.job_id,
            attempt=request.attempt,
            run=request.run,
            setup=request.setup,
            workdir=str(Path(request.workdir).resolve()) if request.workdir else None,
            env=dict(request.env),
            spot=request.spot,
            instance_type=request.instance_type,
            zone=zone,
            price_per_hour=spot_price if request.spot else on_demand_price,
            cloud=self.market.cloud,
            lead_s=self.market.notice_lead_s,
            notice_at=notice_at,
            agent_args=list(request.agent_args),
            scratch=str(self.scratch_dir(instance_id)),
            log_path=str(self._log_path(request.job_id, request.attempt)),
            launched_at=now,
            owner=request.owner,
        )

    def scratch_dir(self, instance_id: str) -> Path:
        """The instance's disk: `work/` (the copied workdir, the job's cwd) and `tmp/`."""
        return self.root / "scratch" / instance_id

    def _log_path(self, job_id: str, attempt: int) -> Path:
        """Outside the scratch directory, so the log outlives a reclaim."""
        return private_file(self.root / "logs" / job_id / f"attempt-{attempt}.log")

    async def _start_launcher(self, record: InstanceDir, secrets: dict[str, str], lock_fd: int) -> None:
        # Secrets travel in the launcher's environment (readable only by this user, gone with
        # the process), never in spec.json: the command inherits them from there.
        # The launcher inherits the launch lock and holds it until its pid is on record: a
        # controller killed while it starts leaves the lock held, so the next launch of the
        # token waits and finds this launcher instead of starting a second one.
        with open(record.launcher_log, "ab") as log:
            proc = await asyncio.to_thread(
                subprocess.Popen,
                [sys.executable, "-m", "spotrun.providers.local.instance", str(self.root), record.id, str(lock_fd)],
                env={**os.environ, **secrets, **procs.marker_env(record.id)},
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                pass_fds=(lock_fd,),
            )
        crash_point("launcher-spawned")
        # It forks and exits at once, leaving the launcher with no parent to wait for it.
        while (returncode := proc.poll()) is None:
            await asyncio.sleep(POLL_S)
        if returncode != 0 or record.launcher_pid() is None:
            raise RuntimeError(
                f"the instance launcher failed to start (status {returncode}); see {record.launcher_log}"
            )

    async def query(self, instance_id: str) -> Instance:
        record = self._record(instance_id)
        spec = record.read_spec()
        if spec is None:
            return gone(instance_id)
        state = record.read_state() or State()
        if state.state in FINAL_STATES:
            return to_instance(spec, state)
        pid = record.launcher_pid()
        if (pid is None and self._launching(record)) or procs.is_alive(pid, instance_id):
            return to_instance(spec, state)
        # The launcher is dead. It may have written its final state since we read it.
        state = record.read_state() or State()
        if state.state in FINAL_STATES:
            return to_instance(spec, state)
        return to_instance(spec, await self._bury(record, spec, state, InstanceState.GONE, "launcher died"))

    async def _bury(
        self, record: InstanceDir, spec: Spec, state: State, final: InstanceState, detail: str
    ) -> State:
        """Free what a dead or stuck launcher left behind and record the end."""
        left = await self._free(spec)
        state = state.to(final, detail=detail, stragglers=bool(left))
        record.write_state(state)
        return state

    @staticmethod
    async def _free(spec: Spec, kill: bool = True) -> list[int]:
        """Kill what is left of the instance and delete its disk; returns the pids that survived.
        `kill=False` skips the scan of every process on the machine (costly, and holding the
        GIL) for an instance whose end was recorded after a kill that left none."""
        left = await asyncio.to_thread(procs.kill_instance, spec.id) if kill else []
        await asyncio.to_thread(shutil.rmtree, spec.scratch, True)
        return left

    async def list_instances(self, job_id: str | None = None) -> list[Instance]:
        instances = []
        for path in (self.root / "instances").iterdir():
            spec = self._record(path.name).read_spec() if path.is_dir() else None
            if spec is not None and (job_id is None or spec.job_id == job_id):
                instances.append(await self.query(spec.id))
        return sorted(instances, key=lambda i: i.launched_at or 0.0)

    async def terminate(self, instance_id: str) -> None:
        record = self._record(instance_id)
        async with self._launch_lock(record):  # never half-way through a launch of the same id
            spec = record.read_spec()
            if spec is None:
                return
            pid = record.launcher_pid()
            if procs.is_alive(pid, instance_id):
                os.kill(pid, signal.SIGTERM)  # the launcher stops the agent gracefully
                await self._wait(lambda: not procs.is_alive(pid, instance_id), STOP_WAIT_S)
            state = record.read_state() or State()
            if state.state not in FINAL_STATES:
                await self._bury(record, spec, state, InstanceState.TERMINATED, "terminated")
            else:
                # Already over (exited, reclaimed): free the disk and any straggler, keep its story.
                await self._free(spec, kill=state.stragglers)

    @staticmethod
    async def _wait(condition: Callable[[], bool], timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while not condition():
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(POLL_S)
        return True

    async def interrupt(self, instance_id: str, lead_s: float | None = None) -> None:
        """Reclaim it now through its metadata endpoint's control request, as a cloud would."""
        from spotrun.providers.local import cloud

        instance = await self.query(instance_id)
        if instance.state == InstanceState.GONE:
            raise ValueError(f"no local instance {instance_id} under {self.root}: check the id")
        if not instance.spot:
            raise ValueError(f"{instance_id} is on-demand: only spot instances are reclaimed")
        record = self._record(instance_id)

        def endpoint_up() -> bool:  # a pending instance is reclaimed as soon as it has one
            state = record.read_state()
            return state is not None and (state.emulator_url is not None or state.state in FINAL_STATES)

        await self._wait(endpoint_up, STOP_WAIT_S)
        state = record.read_state()
        if state is None or state.state in FINAL_STATES or state.emulator_url is None:
            shown = state.state.value if state else "pending"
            raise ValueError(f"{instance_id} is {shown}, not running: nothing to interrupt")
        await cloud.request_reclaim(state.emulator_url, lead_s)

    def prices(self, instance_type: str | None, zone: str | None) -> tuple[float, float]:
        return market_mod.prices(self.market.cloud, instance_type)

    def spot_available(self, instance_type: str | None, zone: str | None) -> bool:
        """What a spot launch would meet now: the same check `launch` makes."""
        epoch = self.market.epoch(self.root)  # before `now`, as in `_spec`
        return self.market.available(zone or self.market.default_zone(), time.time(), epoch)
