"""The AWS provider's fixtures: a local AWS (moto EC2 + S3, fault proxy, VM runner) per test.

Every endpoint is on 127.0.0.1 and the credentials are moto's dummies, set here; nothing
reaches a real AWS account or 169.254.169.254.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from spotrun.controller.db import Database
from spotrun.controller.reconciler import Reconciler
from spotrun.emulators.local_aws import LocalAws
from spotrun.providers.aws import AwsConfig, AwsProvider
from spotrun.providers.local.procs import instance_pids

from tests.controller.helpers import ControllerProcess


@pytest.fixture
def local_aws(tmp_path: Path, spotrun_home: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalAws]:
    with LocalAws(tmp_path / "aws", regions=("us-east-1",), lead_s=1.0) as aws:
        for key, value in aws.env.items():
            monkeypatch.setenv(key, value)
        monkeypatch.setenv("SPOTRUN_DB_URL", f"sqlite:///{spotrun_home / 'spotrun.db'}")
        yield aws
        vms = list(aws.runner.vms)
    for ec2_id in vms:
        assert instance_pids(ec2_id) == [], f"{ec2_id} left processes behind"


@pytest.fixture
def provider(local_aws: LocalAws) -> AwsProvider:
    return AwsProvider(AwsConfig.from_env())


@pytest.fixture
def db(local_aws: LocalAws) -> Iterator[Database]:
    database = Database()
    yield database
    database.close()


@pytest.fixture
async def reconciler(db: Database, provider: AwsProvider) -> AsyncIterator[Reconciler]:
    r = Reconciler(db, {"aws": provider}, interval=0.2, rng=random.Random(0))
    stop = asyncio.Event()
    task = asyncio.create_task(r.run(stop))
    yield r
    stop.set()
    await task


@pytest.fixture
def controller_process(spotrun_home: Path) -> Iterator[Callable[..., ControllerProcess]]:
    """`spotrun controller run` children, with the local AWS's environment; killed afterwards."""
    started: list[ControllerProcess] = []

    def start(env: dict[str, str] | None = None) -> ControllerProcess:
        started.append(ControllerProcess(spotrun_home, env))
        return started[-1]

    yield start
    for proc in started:
        proc.kill()
