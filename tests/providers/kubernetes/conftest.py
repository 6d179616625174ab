"""The Kubernetes provider's fixtures: a fake API server (with scheduler and kubelets) per test.

Every endpoint is on 127.0.0.1 behind a generated kubeconfig; nothing reaches a real cluster.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import random
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from spotrun.controller.db import Database
from spotrun.controller.reconciler import Reconciler
from spotrun.providers.kubernetes import KubeConfig, KubernetesProvider
from spotrun.providers.local.procs import instance_pids

from tests.controller.helpers import ControllerProcess
from tests.providers.kubernetes.fakeapi import FakeApiServer, Pool

SPOT_LABEL = "karpenter.sh/capacity-type"


def pools() -> list[Pool]:
    return [Pool("spot", {SPOT_LABEL: "spot"}), Pool("on-demand", {SPOT_LABEL: "on-demand"})]


@pytest.fixture
def kube(tmp_path: Path, spotrun_home: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeApiServer]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SPOTRUN_", "KUBE"))}
    with FakeApiServer(tmp_path / "kube", env, pools=pools()) as api:
        for key, value in {
            "KUBECONFIG": str(api.kubeconfig),
            "SPOTRUN_KUBERNETES_STORE": f"file://{tmp_path / 'store'}",
            "SPOTRUN_KUBERNETES_IMAGE": "python:3.12-slim",
            "SPOTRUN_KUBERNETES_AGENT": f"{sys.executable} -m spotrun",
            "SPOTRUN_KUBERNETES_CLUSTER": "karpenter",
            "SPOTRUN_DB_URL": f"sqlite:///{spotrun_home / 'spotrun.db'}",
        }.items():
            monkeypatch.setenv(key, value)
        yield api
        markers = [f"k8s-{p['metadata']['uid']}" for p in api.do(lambda: list(api.cluster.pods.values()))]
    for marker in markers:
        assert instance_pids(marker) == [], f"{marker} left processes behind"


def fast(config: KubeConfig) -> KubeConfig:
    """Bounds a test can wait out: capacity refused after 1 s, a bad image an error after 0.5 s."""
    return dataclasses.replace(config, schedule_timeout_s=1.0, pull_timeout_s=0.5)


@pytest.fixture
def provider(kube: FakeApiServer) -> KubernetesProvider:
    return KubernetesProvider(fast(KubeConfig.from_env()))


@pytest.fixture
def db(kube: FakeApiServer) -> Iterator[Database]:
    database = Database()
    yield database
    database.close()


@pytest.fixture
async def reconciler(db: Database, provider: KubernetesProvider) -> AsyncIterator[Reconciler]:
    r = Reconciler(db, {"kubernetes": provider}, interval=0.2, rng=random.Random(0))
    stop = asyncio.Event()
    task = asyncio.create_task(r.run(stop))
    yield r
    stop.set()
    await task


@pytest.fixture
def controller_process(spotrun_home: Path) -> Iterator[Callable[..., ControllerProcess]]:
    """`spotrun controller run` children, configured for the fake cluster; killed afterwards."""
    started: list[ControllerProcess] = []

    def start(env: dict[str, str] | None = None) -> ControllerProcess:
        started.append(ControllerProcess(spotrun_home, env))
        return started[-1]

    yield start
    for proc in started:
        proc.kill()
