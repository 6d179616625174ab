"""Recovery on the local provider: how long a reclaim costs, and how much work it loses.

A toy training job counts steps and snapshots its step durably (outside the instance, as a
bucket would be) every `--snapshot-every` steps and, in the save-on-notice variant, when the
agent passes on the reclaim notice. Each cycle interrupts the running instance through its
metadata endpoint and waits for the next attempt's first step on a new instance.

Measured in the same run:
- start-up baseline: launch -> first step of a fresh, uninterrupted instance (median);
- recovery: notice -> first step on the new instance, minus that baseline (target < 3 s),
  split into notice -> job stopped, stopped -> next launch, next launch -> first step;
- work lost per reclaim (steps redone) against the work since the last periodic snapshot
  (what a job that ignores the notice loses); target: none lost when the job saves on notice.

Two drivers decide when to relaunch: `provider` calls `LocalProvider.launch` the moment
`query` says RECLAIMED (the provider's own cost, no controller); `controller` submits the job
with `spotrun.controller.api.launch` and runs the real `Reconciler` in this process (its pass
interval and reclaim backoff included).

    .venv/bin/python benchmarks/recovery.py [--reclaims 5] [--driver both] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from spotrun.providers.base import Instance, InstanceState, LaunchRequest
from spotrun.providers.local import LocalProvider, MarketConfig

JOB = r'''
import json, os, signal, time
from pathlib import Path
from spotrun.sdk.atomic import save_atomic

state = Path(os.environ["BENCH_STATE"])
every, on_notice = int(os.environ["SNAPSHOT_EVERY"]), os.environ["SAVE_ON_NOTICE"] == "1"
step = json.loads(state.read_text())["step"] if state.exists() else 0
stopping = False

def stop(*_):
    global stopping
    stopping = True

signal.signal(signal.SIGTERM, stop)
print(f"start {step} {time.time()}", flush=True)
while not stopping:
    time.sleep(float(os.environ["STEP_S"]))  # one training step
    step += 1
    print(f"step {step} {time.time()}", flush=True)
    if step % every == 0:
        save_atomic(state, json.dumps({"step": step}))
if on_notice:
    save_atomic(state, json.dumps({"step": step}))
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
    notice_to_stopped_s: float
    stopped_to_relaunch_s: float
    relaunch_to_step_s: float
    at_risk_steps: int  # steps since the last periodic snapshot when the notice came
    lost_steps: int  # steps the next attempt had to redo


def events(log: Path, kind: str) -> list[tuple[int, float]]:
    """(step, time) of the job's `kind` lines in an attempt log."""
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


class Job:
    """The toy job's files and environment; one durable step counter per job."""

    def __init__(self, root: Path, step_s: float, snapshot_every: int) -> None:
        self.workdir = root / "src"
        self.workdir.mkdir()
        (self.workdir / "job.py").write_text(JOB)
        self.durable = root / "durable"
        self.durable.mkdir()
        self.step_s, self.snapshot_every = step_s, snapshot_every
        self.run = f"exec {sys.executable} job.py"

    def env(self, name: str, save_on_notice: bool) -> dict[str, str]:
        return {
            "BENCH_STATE": str(self.durable / f"{name}.json"),
            "STEP_S": str(self.step_s),
            "SNAPSHOT_EVERY": str(self.snapshot_every),
            "SAVE_ON_NOTICE": "1" if save_on_notice else "0",
        }


class ProviderDriver:
    """Relaunch the moment the provider reports the instance reclaimed."""

    name = "provider"

    def __init__(self, provider: LocalProvider, job: Job, variant: str) -> None:
        self.provider, self.job, self.variant = provider, job, variant
        self.job_id = f"{self.name}-{variant}"

    async def launch(self, attempt: int) -> Instance:
        return await self.provider.launch(
            LaunchRequest(
                token=f"{self.job_id}-{attempt}", job_id=self.job_id, attempt=attempt, run=self.job.run,
                workdir=str(self.job.workdir), env=self.job.env(self.job_id, self.variant == VARIANTS[0]),
            )
        )  # fmt: skip

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

    def __init__(self, provider: LocalProvider, job: Job, variant: str, root: Path, interval: float) -> None:
        super().__init__(provider, job, variant)
        self.db_url = f"sqlite:///{root / f'controller-{variant}.db'}"
        self.interval = interval

    async def start(self) -> Instance:
        from spotrun.controller.api import launch
        from spotrun.controller.db import Database
        from spotrun.controller.reconciler import Reconciler

        spec = {
            "name": self.job_id, "run": self.job.run, "workdir": str(self.job.workdir),
            "env": self.job.env(self.job_id, self.variant == VARIANTS[0]),
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


async def startup(provider: LocalProvider, job: Job, name: str) -> float:
    """Launch -> first step of a fresh instance: the job's own start-up, the baseline."""
    started = time.time()
    instance = await provider.launch(
        LaunchRequest(token=name, job_id=name, attempt=1, run=job.run, workdir=str(job.workdir), env=job.env(name, True))
    )
    log = Path(instance.log_path or "")
    await until(lambda: events(log, "step"), "the first step")
    await provider.terminate(instance.id)
    return events(log, "step")[0][1] - started


async def reclaim_cycles(driver: ProviderDriver, cycles: int, baseline_s: float) -> list[Cycle]:
    every = driver.job.snapshot_every
    instance = await driver.start()
    results = []
    for n in range(cycles):
        log = Path(instance.log_path or "")
        # Vary where in the snapshot period the notice falls.
        wanted = 3 + (n * 7) % (every - 5)
        await until(lambda: events(log, "start") and len(events(log, "step")) >= wanted, "steps before the notice")
        await driver.provider.interrupt(instance.id)
        notice_at = time.time()  # the notice is now served at the instance's metadata endpoint
        following = await driver.next_attempt(instance)
        new_log = Path(following.log_path or "")
        await until(lambda: events(new_log, "step"), "the next attempt's first step")
        start, stopped, steps = events(log, "start")[0][0], events(log, "stopped"), events(log, "step")
        reached = stopped[0][0] if stopped else steps[-1][0]
        stopped_at = stopped[0][1] if stopped else notice_at
        relaunched_at = following.launched_at or notice_at
        first_step_at = events(new_log, "step")[0][1]
        results.append(
            Cycle(
                driver=driver.name,
                variant=driver.variant,
                recovery_s=first_step_at - notice_at - baseline_s,
                notice_to_stopped_s=stopped_at - notice_at,
                stopped_to_relaunch_s=relaunched_at - stopped_at,
                relaunch_to_step_s=first_step_at - relaunched_at,
                at_risk_steps=reached - max(start, reached - reached % every),
                lost_steps=reached - events(new_log, "start")[0][0],
            )
        )
        instance = following
    await driver.finish(instance)
    return results


def summarize(cycles: list[Cycle], baseline_s: float) -> list[dict[str, object]]:
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
                "steps_at_risk_total": sum(c.at_risk_steps for c in mine),
                "steps_lost_total": sum(c.lost_steps for c in mine),
                "recovery_median_under_3s": statistics.median(recovery) < 3.0,
            }
        )
    return rows


def print_table(rows: list[dict[str, object]], args: argparse.Namespace) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"Recovery on the local provider: {args.reclaims} reclaims per row, {args.step_s}s steps, "
                  f"snapshot every {args.snapshot_every} steps")  # fmt: skip
    for column in ("driver", "variant", "start-up baseline", "recovery median / max", "notice→relaunch", "notice→stopped",
                   "stopped→relaunch", "relaunch→step", "steps at risk", "steps lost"):  # fmt: skip
        table.add_column(column, justify="right")
    for r in rows:
        table.add_row(
            str(r["driver"]), str(r["variant"]), f"{r['startup_baseline_s']:.2f}s",
            f"{r['recovery_median_s']:.2f}s / {r['recovery_max_s']:.2f}s", f"{r['notice_to_relaunch_median_s']:.2f}s",
            f"{r['notice_to_stopped_median_s']:.2f}s", f"{r['stopped_to_relaunch_median_s']:.2f}s",
            f"{r['relaunch_to_step_median_s']:.2f}s", str(r["steps_at_risk_total"]), str(r["steps_lost_total"]),
        )  # fmt: skip
    console = Console(width=170)
    console.print(table)
    console.print(
        "recovery = notice -> first step on the new instance - start-up baseline (target < 3 s); notice→relaunch is "
        "the same overhead without start-up noise; steps at risk = steps since the last periodic snapshot at the "
        "notice, what a job ignoring the notice loses."
    )


async def main(args: argparse.Namespace) -> tuple[list[dict[str, object]], list[Cycle]]:
    with tempfile.TemporaryDirectory(prefix="spotrun-recovery-") as tmp:
        root = Path(tmp)
        os.environ["SPOTRUN_HOME"] = str(root / "home")  # the controller's files stay in here
        provider = LocalProvider(root / "local", MarketConfig(cloud="aws", lead_s=args.lead_s))
        job = Job(root, args.step_s, args.snapshot_every)
        baseline = statistics.median([await startup(provider, job, f"fresh-{i}") for i in range(args.baselines)])
        drivers: list[ProviderDriver] = []
        for variant in VARIANTS:
            if args.driver in ("provider", "both"):
                drivers.append(ProviderDriver(provider, job, variant))
            if args.driver in ("controller", "both"):
                drivers.append(ControllerDriver(provider, job, variant, root, args.interval))
        cycles = [c for d in drivers for c in await reclaim_cycles(d, args.reclaims, baseline)]
        return summarize(cycles, baseline), cycles


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reclaims", type=int, default=5, help="reclaim cycles per driver and variant")
    parser.add_argument("--baselines", type=int, default=5, help="fresh launches for the start-up baseline")
    parser.add_argument("--driver", choices=("provider", "controller", "both"), default="both")
    parser.add_argument("--interval", type=float, default=1.0, help="controller pass interval (the daemon's: 1 s)")
    parser.add_argument("--lead-s", type=float, default=30.0, help="notice lead time the job gets")
    parser.add_argument("--step-s", type=float, default=0.2, help="seconds per training step")
    parser.add_argument("--snapshot-every", type=int, default=25, help="steps between periodic snapshots")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args()
    if args.snapshot_every < 8:
        parser.error("--snapshot-every must be at least 8 steps")
    rows, cycles = asyncio.run(main(args))
    if args.json:
        print(json.dumps({"summary": rows, "cycles": [asdict(c) for c in cycles]}, indent=2))
    else:
        print_table(rows, args)
