"""Fixtures for the providers: the local provider's private root and a check that no test leaks a
process; for the cloud providers (aws/, kubernetes/, each with its `provider` and `db`), a
reconciler in this process and controllers as child processes to kill at a crash point."""

from __future__ import annotations

import asyncio
import random
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from spotrun.controller.db import Database
from spotrun.controller.reconciler import Reconciler
from spotrun.providers.base import Instance, InstanceState, LaunchRequest
from spotrun.providers.local import LocalProvider, MarketConfig

from tests.controller.helpers import ControllerProcess
from tests.controller.helpers import wait_until as wait_for

TRAIN = Path(__file__).resolve().parents[2] / "examples" / "train.py"
WAIT_S = 90.0  # generous: the machine is shared and every instance boots a Python agent


def processes(needle: str, *, starting: bool = False) -> list[str]:
    """Live (non-zombie) processes whose command line and environment contain `needle` (or
    whose command line starts with it), as `ps` reports them."""
    out = subprocess.run(
        ["ps", "ewwo", "stat=,args=", "-e"], capture_output=True, text=True, check=True
    ).stdout
    found = []
    for line in out.splitlines():
        stat, _, args = line.strip().partition(" ")
        if not stat.startswith("Z") and (args.lstrip().startswith(needle) if starting else needle in args):
            found.append(args[:300])
    return found


def instance_processes(instance_id: str) -> list[str]:
    """Every process an instance started carries its id in its environment."""
    return processes(f"SPOTRUN_LOCAL_INSTANCE={instance_id}")


async def wait_until(predicate: Callable[[], bool], what: str, timeout: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.05)


async def wait_state(
    provider: LocalProvider, instance_id: str, *states: InstanceState, timeout: float = WAIT_S
) -> Instance:
    deadline = time.monotonic() + timeout
    while True:
        instance = await provider.query(instance_id)
        if instance.state in states:
            return instance
        if time.monotonic() > deadline:
            raise AssertionError(f"{instance_id} is {instance.state.value}, never became {states}")
        await asyncio.sleep(0.05)


def request(token: str, run: str, **fields: object) -> LaunchRequest:
    return LaunchRequest(token=token, job_id=fields.pop("job_id", "job-1"), attempt=1, run=run, **fields)  # type: ignore[arg-type]


@pytest.fixture
async def make_provider(tmp_path: Path) -> AsyncIterator[Callable[..., LocalProvider]]:
    """LocalProvider factory on one root; afterwards every instance is terminated and gone."""
    root = tmp_path / "local"

    def make(market: MarketConfig | None = None) -> LocalProvider:
        return LocalProvider(root, market)

    yield make
    provider = make()
    for instance in await provider.list_instances():
        await provider.terminate(instance.id)
        assert instance_processes(instance.id) == [], f"{instance.id} leaked processes"


@pytest.fixture
async def reconciler(db: Database, provider: object) -> AsyncIterator[Reconciler]:
    """A reconciler on the test's cloud provider, passing every 0.2 s."""
    r = Reconciler(db, {provider.name: provider}, interval=0.2, rng=random.Random(0))  # type: ignore[attr-defined]
    stop = asyncio.Event()
    task = asyncio.create_task(r.run(stop))
    yield r
    stop.set()
    await task


@pytest.fixture
def controller_process(spotrun_home: Path) -> Iterator[Callable[..., ControllerProcess]]:
    """`spotrun controller run` children, with the test's cloud environment; killed afterwards."""
    started: list[ControllerProcess] = []

    def start(env: dict[str, str] | None = None) -> ControllerProcess:
        started.append(ControllerProcess(spotrun_home, env))
        return started[-1]

    yield start
    for proc in started:
        proc.kill()


CRASH_POINTS = ("after-attempt-row", "after-launch", "after-terminate")


def crash_at_each_point(start: Callable[..., ControllerProcess], db: Database, spec: dict) -> Iterator[tuple[str, str, dict]]:
    """For each crash point: a job, a controller SIGKILLed there, then a fresh controller that
    finishes it; yields (point, job, its view) for the provider's own checks."""
    from spotrun.controller import api, repo

    for point in CRASH_POINTS:
        job = api.launch({"name": point, **spec}, start_controller=False).id
        crashed = start(env={"SPOTRUN_TEST_CRASH_AT": point})
        assert crashed.wait_exit() == -9, crashed.output()
        controller = start()
        wait_for(lambda: repo.get_view(db, job)["status"] in ("SUCCEEDED", "FAILED"), what=f"{point}: the job to end")
        controller.kill()
        final = repo.get_view(db, job)
        assert final["status"] == "SUCCEEDED", (point, final["reason"], controller.output())
        yield point, job, final


async def reclaimed_three_times(db: Database, out: Path, job: str, name: str, steps: int,
                                reclaim: Callable[[str], None]) -> dict:
    """Reclaim a running examples/train.py job three times, each after progress, and let it end:
    its weights must be those of an uninterrupted run. Returns the job's final view."""
    import json
    import sys

    from spotrun.controller import repo
    from spotrun.controller.demo import read_progress

    from tests.controller.helpers import async_wait_until
    from tests.controller.test_reconciler import live_instance, wait_status

    for n in range(3):
        await async_wait_until(
            lambda: repo.get_view(db, job)["attempts"] == n + 1 and len(read_progress(out, name).lost) == n
            and read_progress(out, name).step >= 10 * (n + 1),
            what=f"attempt {n + 1} to make progress")
        reclaim(live_instance(db, job))  # type: ignore[arg-type]
        await async_wait_until(lambda: repo.get_view(db, job)["reclaims"] == n + 1, what=f"reclaim {n + 1} to be seen")
    final = await wait_status(db, job, "SUCCEEDED", "FAILED")
    assert final["status"] == "SUCCEEDED", final["reason"]
    plain = out / "plain.json"
    subprocess.run([sys.executable, str(TRAIN), "--steps", str(steps), "--output", str(plain)], check=True,
                   capture_output=True, cwd=out)
    assert json.loads((out / f"{name}.json").read_text())["weights_sha256"] == json.loads(plain.read_text())["weights_sha256"]
    return final
