"""Fixtures for the local provider: a private root, and a check that no test leaks a process."""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from spotrun.providers.base import Instance, InstanceState, LaunchRequest
from spotrun.providers.local import LocalProvider, MarketConfig

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
