"""Recovery on the local provider through the real checkpoint store: how long a reclaim costs,
and how much work it loses.

A toy training job counts steps and checkpoints through the SDK into `$SPOTRUN_CHECKPOINT_DIR`
(`spotrun.save` every `--snapshot-every` steps and, in the save-on-notice variant, when the
agent passes on the reclaim notice; `spotrun.load_latest()` at start). Every instance runs the
agent with `--checkpoint-dir checkpoints --store file://<tmp>/store --sync-interval D --keep 2`,
so the directory lives on the instance's scratch disk (lost on reclaim) and each new instance
restores the newest snapshot from the store before the job starts. Each cycle interrupts the
running instance through its metadata endpoint and waits for the next attempt's first step.

Measured in the same run:
- start-up baseline: launch -> first step of a fresh, uninterrupted instance with the same agent
  options (its restore of an empty store included), median, measured right before each row;
- recovery: notice -> first step on the new instance, minus that baseline (target < 3 s),
  split into notice -> job stopped, stopped -> next launch, next launch -> first step;
- restore's share: the new agent's start -> the job's start (read from /proc by the job: agent
  start-up plus restore), next to a fresh launch's (an empty store's restore); and the store's
  `restore` of the job's newest snapshot timed alone in this process after each recovery, as a
  share of notice -> first step;
- work lost per reclaim: the step the job reached minus the step the next attempt restored from
  the store, against the steps since the last periodic snapshot (what a job that ignores the
  notice loses). Target: none lost when the job saves on notice; the periodic-only job must lose
  exactly its at-risk steps, which validates the measurement.

Two drivers decide when to relaunch: `provider` calls `LocalProvider.launch` the moment
`query` says RECLAIMED (the provider's own cost, no controller); `controller` submits the job
(its `checkpoint:` section carrying the same options) with `spotrun.controller.api.launch` and
runs the real `Reconciler` in this process (its pass interval and reclaim backoff included).

    .venv/bin/python benchmarks/recovery.py [--reclaims 5] [--driver both] [--state-mb 1] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from spotrun.controller.spec import JobSpec
from spotrun.providers.base import Instance, InstanceState, LaunchRequest
from spotrun.providers.local import LocalProvider, MarketConfig

JOB = r'''
import os, signal, time
import spotrun

every, on_notice = int(os.environ["SNAPSHOT_EVERY"]), os.environ["SAVE_ON_NOTICE"] == "1"
weights = int(float(os.environ["STATE_MB"]) * 2**20)
found = spotrun.load_latest()
step = found[1] if found else 0
stopping = False

def forked(pid):  # seconds since boot when the process was forked (/proc, 10 ms ticks)
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[19]) / os.sysconf("SC_CLK_TCK")

def stop(*_):
    global stopping
    stopping = True

def save():  # fresh bytes each time: trained weights change, so nothing dedupes
    spotrun.save({"step": step, "weights": os.urandom(weights)}, step, keep=2)

signal.signal(signal.SIGTERM, stop)
# The agent (our parent: bash exec'd us) forked -> it forked us: its start-up and restore.
print(f"prestart {step} {forked(os.getpid()) - forked(os.getppid())}", flush=True)
print(f"start {step} {time.time()}", flush=True)
while not stopping:
    time.sleep(float(os.environ["STEP_S"]))  # one training step
    step += 1
    print(f"step {step} {time.time()}", flush=True)
    if step % every == 0:
        save()
if on_notice:
    save()
print(f"stopped {step} {time.time()}", flush=True)
'''

POLL_S = 0.01
WAIT_S = 120.0
VARIANTS = ("save-on-notice", "periodic-only")


@dataclass
class Cycle:
    driver: str
    variant: str
    recovery_s: float  # notice -> next step on the new instance, minus the start-up baseline
    notice_to_step_s: float
    notice_to_stopped_s: float
    stopped_to_relaunch_s: float
    relaunch_to_step_s: float
    restore_s: float  # restoring the newest snapshot from the store, as the agent does
    agent_prestart_s: float  # the new agent's start -> the command's start (restore included)
    reached_step: int  # the step the job had reached when it stopped
    restored_step: int  # the step the next attempt restored from the store
    at_risk_steps: int  # steps since the last periodic snapshot when the notice came
    lost_steps: int  # steps the next attempt had to redo


def events(log: Path, kind: str) -> list[tuple[int, float]]:
    """(step, value) of the job's `kind` lines in an attempt log: a unix time, or seconds for `prestart`."""
    try:
        text = log.read_text(errors="replace")
    except FileNotFoundError:
        return []
    found = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0] == kind:
            found.append((int(parts[1]), float(parts[2])))
    return found


async def until(condition: Callable[[], object], what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        await asyncio.sleep(POLL_S)


async def reach(log: Path, kind: str, step: int = 0) -> list[tuple[int, float]]:
    """Wait for a `kind` line at `step` or beyond in an attempt log; returns those lines."""

    def found() -> list[tuple[int, float]]:
        return [e for e in events(log, kind) if e[0] >= step]

    await until(found, f"a {kind!r} line at step {step} or beyond in {log}")
    return found()


class Job:
    """The toy job's files, environment and checkpoint options, shared by every launch."""

    def __init__(self, root: Path, args: argparse.Namespace) -> None:
        self.root = root
        self.workdir = root / "src"
        self.workdir.mkdir()
        (self.workdir / "job.py").write_text(JOB)
        self.store_url = f"file://{root / 'store'}"
        self.step_s, self.snapshot_every, self.state_mb = args.step_s, args.snapshot_every, args.state_mb
        self.run = f"exec {sys.executable} job.py"
        self.checkpoint = {"dir": "checkpoints", "store": self.store_url, "sync_interval": args.sync_interval, "keep": 2}
        # The controller turns the same section into these options: one source for both drivers.
        spec = JobSpec.model_validate({"run": self.run, "checkpoint": self.checkpoint})
        self.agent_args, self.agent_env = spec.agent_args(), spec.agent_env(self.store_url)

    def env(self, save_on_notice: bool) -> dict[str, str]:
        return {
            "STEP_S": str(self.step_s),
            "SNAPSHOT_EVERY": str(self.snapshot_every),
            "STATE_MB": str(self.state_mb),
            "SAVE_ON_NOTICE": "1" if save_on_notice else "0",
        }

    def request(self, job_id: str, attempt: int, save_on_notice: bool) -> LaunchRequest:
        return LaunchRequest(
            token=f"{job_id}-{attempt}", job_id=job_id, attempt=attempt, run=self.run, workdir=str(self.workdir),
            env=self.env(save_on_notice), agent_args=self.agent_args, secrets=self.agent_env,
        )  # fmt: skip

    async def timed_restore(self, job_id: str) -> float:
        """Seconds the agent's restore call takes for the job's newest snapshot, into a fresh dir
        (finding none, before the first periodic snapshot of a periodic-only job, is timed too)."""
        from spotrun.store import NoSnapshot, Store, restore

        dest = Path(tempfile.mkdtemp(dir=self.root, prefix="restore-"))
        started = time.perf_counter()
        with contextlib.suppress(NoSnapshot):
            await restore(Store.open(self.store_url), job_id, dest, fallback=True, replace=True)
        return time.perf_counter() - started


class ProviderDriver:
    """Relaunch the moment the provider reports the instance reclaimed."""

    name = "provider"

    def __init__(self, provider: LocalProvider, job: Job, variant: str) -> None:
        self.provider, self.job, self.variant = provider, job, variant
        self.job_id = f"{self.name}-{variant}"

    async def launch(self, attempt: int) -> Instance:
        return await self.provider.launch(self.job.request(self.job_id, attempt, self.variant == VARIANTS[0]))

    async def start(self) -> Instance:
        return await self.launch(1)

    async def next_attempt(self, reclaimed: Instance) -> Instance:
        while (await self.provider.query(reclaimed.id)).state != InstanceState.RECLAIMED:
            await asyncio.sleep(POLL_S)
        return await self.launch(reclaimed.attempt + 1)

    async def finish(self, last: Instance) -> None:
        await self.provider.terminate(last.id)


class ControllerDriver(ProviderDriver):
    """Submit through `spotrun.controller.api.launch`; the real Reconciler relaunches."""

    name = "controller"

    def __init__(self, provider: LocalProvider, job: Job, variant: str, interval: float) -> None:
        super().__init__(provider, job, variant)
        self.db_url = f"sqlite:///{job.root / f'controller-{variant}.db'}"
        self.interval = interval

    async def start(self) -> Instance:
        from spotrun.controller.api import launch
        from spotrun.controller.db import Database
        from spotrun.controller.reconciler import Reconciler

        spec = {
            "name": self.job_id, "run": self.job.run, "workdir": str(self.job.workdir),
            "env": self.job.env(self.variant == VARIANTS[0]), "checkpoint": self.job.checkpoint,
        }  # fmt: skip
        self.handle = launch(spec, db_url=self.db_url, start_controller=False)
        self.job_id = self.handle.id
        self.stop = asyncio.Event()
        reconciler = Reconciler(Database(self.db_url), {"local": self.provider}, interval=self.interval)
        self.loop = asyncio.create_task(reconciler.run(self.stop))
        return await self._attempt(1)

    async def _attempt(self, number: int) -> Instance:
        found: list[Instance] = []

        async def launched() -> bool:
            found[:] = [i for i in await self.provider.list_instances(self.job_id) if i.attempt == number]
            return bool(found)

        deadline = time.monotonic() + WAIT_S
        while not await launched():
            if time.monotonic() > deadline:
                raise TimeoutError(f"the controller never launched attempt {number}")
            await asyncio.sleep(POLL_S)
        return found[0]

    async def next_attempt(self, reclaimed: Instance) -> Instance:
        return await self._attempt(reclaimed.attempt + 1)

    async def finish(self, last: Instance) -> None:
        self.handle.cancel()
        await until(lambda: self.handle.status() == "CANCELLED", "the job to be cancelled")
        self.stop.set()
        await self.loop


async def startup(provider: LocalProvider, job: Job, name: str) -> tuple[float, float]:
    """Launch -> first step of a fresh instance with an empty store: the job's own start-up;
    and its agent's start -> the command's start (an empty store's restore included)."""
    started = time.time()
    instance = await provider.launch(job.request(name, 1, True))
    log = Path(instance.log_path or "")
    first_step_at = (await reach(log, "step"))[0][1]
    await provider.terminate(instance.id)
    if events(log, "start")[0][0] != 0:
        raise RuntimeError(f"{name} restored a snapshot: the baseline must start from an empty store")
    return first_step_at - started, events(log, "prestart")[0][1]


async def reclaim_cycles(driver: ProviderDriver, cycles: int, baseline_s: float) -> list[Cycle]:
    every = driver.job.snapshot_every
    instance = await driver.start()
    results = []
    for n in range(cycles):
        log = Path(instance.log_path or "")
        start = (await reach(log, "start"))[0][0]
        # One periodic snapshot after the restored step, then the notice at a varying offset into
        # the next period: even the periodic-only job has a snapshot in the store to restore.
        await reach(log, "step", start - start % every + every + 3 + (n * 7) % (every - 5))
        await driver.provider.interrupt(instance.id)
        notice_at = time.time()  # the notice is now served at the instance's metadata endpoint
        following = await driver.next_attempt(instance)
        new_log = Path(following.log_path or "")
        first_step_at = (await reach(new_log, "step"))[0][1]
        restore_s = await driver.job.timed_restore(driver.job_id)
        stopped, steps = events(log, "stopped"), events(log, "step")
        reached = stopped[0][0] if stopped else steps[-1][0]
        restored = events(new_log, "start")[0][0]
        stopped_at = stopped[0][1] if stopped else notice_at
        relaunched_at = following.launched_at or notice_at
        results.append(
            Cycle(
                driver=driver.name,
                variant=driver.variant,
                recovery_s=first_step_at - notice_at - baseline_s,
                notice_to_step_s=first_step_at - notice_at,
                notice_to_stopped_s=stopped_at - notice_at,
                stopped_to_relaunch_s=relaunched_at - stopped_at,
                relaunch_to_step_s=first_step_at - relaunched_at,
                restore_s=restore_s,
                agent_prestart_s=events(new_log, "prestart")[0][1],
                reached_step=reached,
                restored_step=restored,
                at_risk_steps=reached - max(start, reached - reached % every),
                lost_steps=reached - restored,
            )
        )
        instance = following
    await driver.finish(instance)
    return results


def summarize(cycles: list[Cycle], baseline_s: float, baseline_prestart_s: float) -> list[dict[str, object]]:
    rows = []
    for key in dict.fromkeys((c.driver, c.variant) for c in cycles):
        mine = [c for c in cycles if (c.driver, c.variant) == key]
        recovery = [c.recovery_s for c in mine]

        def median(field: str) -> float:
            return round(statistics.median(getattr(c, field) for c in mine), 3)  # noqa: B023

        rows.append(
            {
                "driver": key[0],
                "variant": key[1],
                "reclaims": len(mine),
                "startup_baseline_s": round(baseline_s, 3),
                "recovery_median_s": round(statistics.median(recovery), 3),
                "recovery_max_s": round(max(recovery), 3),
                "notice_to_relaunch_median_s": round(
                    statistics.median(c.notice_to_stopped_s + c.stopped_to_relaunch_s for c in mine), 3
                ),
                "notice_to_stopped_median_s": median("notice_to_stopped_s"),
                "stopped_to_relaunch_median_s": median("stopped_to_relaunch_s"),
                "relaunch_to_step_median_s": median("relaunch_to_step_s"),
                "restore_median_s": median("restore_s"),
                "agent_prestart_median_s": median("agent_prestart_s"),
                "baseline_agent_prestart_s": round(baseline_prestart_s, 3),
                "restore_share_median_pct": round(
                    100 * statistics.median(c.restore_s / c.notice_to_step_s for c in mine), 1
                ),
                "steps_at_risk_total": sum(c.at_risk_steps for c in mine),
                "steps_lost_total": sum(c.lost_steps for c in mine),
                "steps_lost_equal_at_risk": all(c.lost_steps == c.at_risk_steps for c in mine),
                "recovery_median_under_3s": statistics.median(recovery) < 3.0,
            }
        )
    return rows


def print_table(rows: list[dict[str, object]], args: argparse.Namespace) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"Recovery on the local provider through the checkpoint store: {args.reclaims} reclaims "
                  f"per row, {args.step_s}s steps, {args.state_mb} MB state saved every {args.snapshot_every} steps, "
                  f"sync interval {args.sync_interval}")  # fmt: skip
    for column in ("driver", "variant", "start-up baseline", "recovery median / max", "notice→relaunch", "notice→stopped",
                   "stopped→relaunch", "relaunch→step", "agent pre-start (fresh)", "restore (share)", "steps at risk",
                   "steps lost"):  # fmt: skip
        table.add_column(column, justify="right")
    for r in rows:
        table.add_row(
            str(r["driver"]), str(r["variant"]), f"{r['startup_baseline_s']:.2f}s",
            f"{r['recovery_median_s']:.2f}s / {r['recovery_max_s']:.2f}s", f"{r['notice_to_relaunch_median_s']:.2f}s",
            f"{r['notice_to_stopped_median_s']:.2f}s", f"{r['stopped_to_relaunch_median_s']:.2f}s",
            f"{r['relaunch_to_step_median_s']:.2f}s",
            f"{r['agent_prestart_median_s']:.2f}s ({r['baseline_agent_prestart_s']:.2f}s)", f"{r['restore_median_s']:.3f}s ({r['restore_share_median_pct']}%)",
            str(r["steps_at_risk_total"]), str(r["steps_lost_total"]),
        )  # fmt: skip
    console = Console(width=220)
    console.print(table)
    console.print(
        "recovery = notice -> first step on the new instance - start-up baseline (a fresh launch with the same agent "
        "options, empty-store restore included; target < 3 s); notice→relaunch is the same overhead without start-up "
        "noise; agent pre-start = the new agent's start -> the job's start, its restore included (in brackets: a fresh "
        "launch's, restoring an empty store); restore = the store's restore of the newest snapshot timed alone, "
        "share = of notice -> first step; steps lost = "
        "step reached - step restored from the store; steps at risk = steps since the last periodic snapshot at the "
        "notice, what a job ignoring the notice loses."
    )


async def main(args: argparse.Namespace) -> tuple[list[dict[str, object]], list[Cycle]]:
    with tempfile.TemporaryDirectory(prefix="spotrun-recovery-") as tmp:
        root = Path(tmp)
        os.environ["SPOTRUN_HOME"] = str(root / "home")  # the controller's files stay in here
        provider = LocalProvider(root / "local", MarketConfig(cloud="aws", lead_s=args.lead_s))
        job = Job(root, args)
        drivers: list[ProviderDriver] = []
        for variant in VARIANTS:
            if args.driver in ("provider", "both"):
                drivers.append(ProviderDriver(provider, job, variant))
            if args.driver in ("controller", "both"):
                drivers.append(ControllerDriver(provider, job, variant, args.interval))
        rows: list[dict[str, object]] = []
        cycles: list[Cycle] = []
        try:
            for d in drivers:  # each row's baseline right before it: the machine's load drifts
                fresh = [await startup(provider, job, f"fresh-{d.name}-{d.variant}-{i}") for i in range(args.baselines)]
                baseline, baseline_prestart = (statistics.median(column) for column in zip(*fresh))
                mine = await reclaim_cycles(d, args.reclaims, baseline)
                rows += summarize(mine, baseline, baseline_prestart)
                cycles += mine
        finally:  # a failed cycle must not leave instances running on this machine
            for instance in await provider.list_instances():
                await provider.terminate(instance.id)
        return rows, cycles


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reclaims", type=int, default=5, help="reclaim cycles per driver and variant")
    parser.add_argument("--baselines", type=int, default=5, help="fresh launches for each row's start-up baseline")
    parser.add_argument("--driver", choices=("provider", "controller", "both"), default="both")
    parser.add_argument("--interval", type=float, default=1.0, help="controller pass interval (the daemon's: 1 s)")
    parser.add_argument("--lead-s", type=float, default=30.0, help="notice lead time the job gets")
    parser.add_argument("--step-s", type=float, default=0.2, help="seconds per training step")
    parser.add_argument("--snapshot-every", type=int, default=25, help="steps between periodic snapshots")
    parser.add_argument("--state-mb", type=float, default=1.0, help="size of the checkpointed state (random bytes)")
    parser.add_argument("--sync-interval", default="1s", help="the agent's --sync-interval (it also syncs each completed file)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args()
    if args.snapshot_every < 8:
        parser.error("--snapshot-every must be at least 8 steps")
    rows, cycles = asyncio.run(main(args))
    if args.json:
        print(json.dumps({"summary": rows, "cycles": [asdict(c) for c in cycles]}, indent=2))
    else:
        print_table(rows, args)
