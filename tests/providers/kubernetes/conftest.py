"""The Kubernetes provider's fixtures: a fake API server (with scheduler and kubelets) per test.

Every endpoint is on 127.0.0.1 behind a generated kubeconfig; nothing reaches a real cluster.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from spotrun.controller.db import Database
from spotrun.providers.kubernetes import KubeConfig, KubernetesProvider
from spotrun.providers.local.procs import instance_pids

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
        ran = api.cluster.root / "pods"
        markers = [f"k8s-{uid.name}" for uid in ran.iterdir()] if ran.exists() else []
    for marker in markers:  # every container that ever ran, its processes stopped with the cluster
        assert instance_pids(marker) == [], f"{marker} left processes behind"


def fast(config: KubeConfig) -> KubeConfig:
    """Bounds a test can wait out: capacity refused after 1 s, a bad image an error after 2 s
    (creation times have one-second resolution)."""
    return dataclasses.replace(config, schedule_timeout_s=1.0, pull_timeout_s=2.0)


@pytest.fixture
def provider(kube: FakeApiServer) -> KubernetesProvider:
    return KubernetesProvider(fast(KubeConfig.from_env()))


@pytest.fixture
def db(kube: FakeApiServer) -> Iterator[Database]:
    database = Database()
    yield database
    database.close()
