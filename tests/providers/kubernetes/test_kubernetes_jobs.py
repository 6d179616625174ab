"""Jobs on the Kubernetes provider end to end: real controller, real client, real agent in each
"pod", a fake API server whose kubelets run the pods as local process groups."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from spotrun.controller import repo
from spotrun.controller.db import Database
from spotrun.providers.kubernetes import KubernetesProvider
from spotrun.sdk.events import EVENTS_ENV

from tests.controller.helpers import async_wait_until, wait_until
from tests.controller.test_reconciler import live_instance, submit, view, wait_status
from tests.providers.conftest import TRAIN, crash_at_each_point, reclaimed_three_times
from tests.providers.kubernetes.fakeapi import FakeApiServer

FAST = {"backoff": {"base": "50ms", "max": "200ms"}}


def pod_of(kube: FakeApiServer, instance: str) -> dict:
    name = instance.partition("@")[0].partition("/")[2]
    return kube.do(lambda: json.loads(json.dumps(kube.cluster.find(name))))


def created(kube: FakeApiServer, job: str) -> list[str]:
    """Names of every pod ever created for the job, as the API server's event log has them."""
    return kube.do(lambda: [p["metadata"]["name"] for _, kind, p in kube.cluster.events
                            if kind == "ADDED" and p["metadata"]["labels"].get("spotrun.dev/job") == job])


def left(kube: FakeApiServer) -> tuple[list[str], list[str]]:
    """The pods and Secrets the cluster still holds."""
    return kube.do(lambda: ([n for _, n in kube.cluster.pods], [n for _, n in kube.cluster.secrets]))


def train_job(out: Path, name: str, steps: int, step_time: float) -> dict:
    return {
        "name": name,
        "run": f"{sys.executable} {TRAIN} --steps {steps} --step-time {step_time} --every 5 --output {out / name}.json",
        "resources": {"cloud": "kubernetes"},
        "recovery": {"max_reclaims": 10, **FAST},
        "notice": {"lead_time": "3s"},
        "env": {EVENTS_ENV: str(out / f"{name}.events.jsonl")},
        "checkpoint": {"dir": "checkpoints", "sync_interval": "1s"},
    }


async def test_three_node_reclaims_end_like_an_uninterrupted_run(
    tmp_path: Path, db: Database, kube: FakeApiServer, reconciler: object
) -> None:
    job = submit(train_job(tmp_path, "hit", 60, 0.05))

    def reclaim(instance: str) -> None:
        kube.call(kube.cluster.reclaim_node(pod_of(kube, instance)["spec"]["nodeName"]))

    final = await reclaimed_three_times(db, tmp_path, job, "hit", 60, reclaim)
    attempts = final["attempt_list"]
    assert [a["cause"] for a in attempts] == ["reclaim", "reclaim", "reclaim", "success"]
    assert {a["exit_status"] for a in attempts[:3]} == {75}  # the agent heard kubelet's SIGTERM and saved work
    assert all(a["spot"] for a in attempts)
    assert len(created(kube, job)) == 4  # one pod per attempt
    await async_wait_until(lambda: left(kube) == ([], []), what="every pod and Secret deleted")
    # Each attempt's log was read from its pod before the pod was deleted.
    assert "starting at step" in (repo.kept_log(job, 4).read_text())


async def test_oomkilled_is_an_error_and_an_eviction_a_reclaim(
    tmp_path: Path, db: Database, kube: FakeApiServer, provider: KubernetesProvider, reconciler: object
) -> None:
    hog = f"{sys.executable} -c \"import time; x = bytearray(400 * 2**20); x[::4096] = b'1' * len(x[::4096]); time.sleep(60)\""
    oom = submit({"run": hog, "resources": {"cloud": "kubernetes"}, "kubernetes": {"memory": "128Mi"},
                  "recovery": {"max_errors": 1, "max_reclaims": 0, **FAST}})
    final = await wait_status(db, oom, "SUCCEEDED", "FAILED")
    assert final["status"] == "FAILED"
    assert [a["cause"] for a in final["attempt_list"]] == ["error", "error"]  # the error budget, not the reclaims'
    assert final["reclaims"] == 0 and "OOMKilled" in final["reason"] and "(exit 137)" in final["reason"]

    sleeper = submit({"run": "sleep 600", "resources": {"cloud": "kubernetes"}, "notice": {"lead_time": "5s"},
                      "recovery": {"max_errors": 0, **FAST}})
    await wait_status(db, sleeper, "RUNNING")
    first = live_instance(db, sleeper)
    namespace, _, name = first.partition("/")
    from kubernetes import client, config

    api = client.CoreV1Api(config.new_client_from_config(config_file=str(kube.kubeconfig)))
    api.create_namespaced_pod_eviction(name, namespace, {"apiVersion": "policy/v1", "kind": "Eviction",
                                                          "metadata": {"name": name, "namespace": namespace}})
    await async_wait_until(lambda: view(db, sleeper)["reclaims"] == 1, what="the eviction to count as a reclaim")
    await async_wait_until(lambda: live_instance(db, sleeper) not in (None, first), what="the replacement pod")
    assert view(db, sleeper)["errors"] == 0
    repo.request_cancel(db, sleeper)
    final = await wait_status(db, sleeper, "CANCELLED")
    assert [a["cause"] for a in final["attempt_list"]] == ["reclaim", "cancel"]
    await async_wait_until(lambda: left(kube) == ([], []), what="the cancelled pod and its Secret deleted")


async def test_a_node_lost_without_a_word_is_a_reclaim(db: Database, kube: FakeApiServer, reconciler: object) -> None:
    job = submit({"run": "sleep 600", "resources": {"cloud": "kubernetes"}, "recovery": FAST})
    await wait_status(db, job, "RUNNING")
    first = live_instance(db, job)
    kube.call(kube.cluster.lose_node(pod_of(kube, first)["spec"]["nodeName"]))  # no shutdown; PodGC deletes the pod
    await async_wait_until(lambda: view(db, job)["reclaims"] == 1, what="the lost pod to count as a reclaim")
    lost = next(e["message"] for e in view(db, job)["events"] if e["kind"] == "reclaim")
    assert "the pod is gone" in lost and view(db, job)["errors"] == 0
    await async_wait_until(lambda: live_instance(db, job) not in (None, first), what="the replacement pod")
    repo.request_cancel(db, job)
    await wait_status(db, job, "CANCELLED")
    await async_wait_until(lambda: left(kube) == ([], []), what="no pod left")


async def test_unschedulable_spot_goes_on_demand_under_auto(db: Database, kube: FakeApiServer, reconciler: object) -> None:
    kube.cluster.pools["spot"].available = False  # no spot capacity anywhere
    job = submit({"run": "echo on-demand", "resources": {"cloud": "kubernetes", "spot": "auto"}, "recovery": FAST})
    final = await wait_status(db, job, "SUCCEEDED", "FAILED")
    assert final["status"] == "SUCCEEDED", final["reason"]
    assert [(a["spot"], a["cause"]) for a in final["attempt_list"]] == [(True, "refused")] * 3 + [(False, "success")]
    refused = next(e["message"] for e in final["events"] if e["kind"] == "refused")
    assert "0/2 nodes are available" in refused and "no spot capacity" in refused
    assert len(created(kube, job)) == 4  # each refused pod was deleted, none left pending
    await async_wait_until(lambda: left(kube) == ([], []), what="no pod left")


async def test_a_cancel_does_not_wait_for_a_pod_that_cannot_schedule(db: Database, kube: FakeApiServer,
                                                                      reconciler: object) -> None:
    """The launch waits up to `schedule_timeout` (here 10 minutes) for a pending pod; the user's
    cancel cuts it short: the job ends cancelled and its pod and Secret go, long before that."""
    kube.cluster.pools["spot"].available = False
    job = submit({"run": "echo never", "resources": {"cloud": "kubernetes", "spot": True},
                  "kubernetes": {"schedule_timeout": "10m"}, "recovery": FAST})
    await async_wait_until(lambda: len(created(kube, job)) == 1, what="the pod, pending")
    repo.request_cancel(db, job)
    final = await wait_status(db, job, "CANCELLED", "FAILED", "SUCCEEDED", timeout=60)
    assert final["status"] == "CANCELLED" and [a["cause"] for a in final["attempt_list"]] == ["cancel"]
    await async_wait_until(lambda: left(kube) == ([], []), what="the pending pod and its Secret deleted")


async def test_an_image_that_never_pulls_is_the_users_error(db: Database, kube: FakeApiServer, reconciler: object) -> None:
    kube.cluster.bad_images.add("example.com/missing:1")
    job = submit({"run": "true", "resources": {"cloud": "kubernetes"}, "kubernetes": {"image": "example.com/missing:1"},
                  "recovery": FAST})
    final = await wait_status(db, job, "SUCCEEDED", "FAILED")
    assert final["status"] == "FAILED" and [a["cause"] for a in final["attempt_list"]] == ["error"]
    assert "ImagePullBackOff" in final["reason"] or "ErrImagePull" in final["reason"]
    await async_wait_until(lambda: left(kube) == ([], []), what="the pod deleted")


def test_controller_killed_at_each_crash_point_leaves_no_duplicate_or_leaked_pod(
    kube: FakeApiServer, controller_process: object, spotrun_home: Path
) -> None:
    db = Database()
    try:
        for point, job, final in crash_at_each_point(controller_process, db, {  # type: ignore[arg-type]
                "run": "echo survived", "resources": {"cloud": "kubernetes"}}):
            assert len(final["attempt_list"]) == 1
            assert len(created(kube, job)) == 1, point  # the relaunch found the first pod (409) instead of a second
            wait_until(lambda: left(kube) == ([], []), what=f"{point}: the pod and its Secret deleted")
    finally:
        db.close()
