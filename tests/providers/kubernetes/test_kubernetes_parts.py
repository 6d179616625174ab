"""The Kubernetes provider's parts: spot placement per cluster kind, the attempt's Secret, bad
input in one line, and the fake API server checked against the official client's models."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import pytest
from kubernetes import client, config, watch
from kubernetes.client.exceptions import ApiException

from spotrun.controller.spec import SpecError, parse_spec
from spotrun.providers.base import InstanceState, LaunchRequest
from spotrun.providers.kubernetes import KubeConfig, KubernetesProvider, pods
from spotrun.providers.kubernetes.config import CLUSTERS

from tests.controller.helpers import async_wait_until
from tests.providers.kubernetes.fakeapi import FakeApiServer, Pool, admits


def request(token: str = "job1-0001", **fields: object) -> LaunchRequest:
    return LaunchRequest(token=token, job_id=str(fields.pop("job_id", "job1")), attempt=1,
                         run=str(fields.pop("run", "sleep 600")), **fields)  # type: ignore[arg-type]


def plan(cluster: str) -> pods.PodPlan:
    return pods.PodPlan(name="spotrun-job1-a1-0000000000", secret="s", image="img", agent=["spotrun"],
                        cluster=cluster, grace_s=25, price=0.0)


@pytest.mark.parametrize("cluster", sorted(CLUSTERS))
def test_spot_and_on_demand_land_on_their_own_pools(cluster: str) -> None:
    label, spot_value, od_value, tainted = CLUSTERS[cluster]
    taint = [{"key": label, "value": spot_value, "effect": "NoSchedule"}] if tainted else []
    spot_pool = Pool("spot", {label: spot_value}, taint)
    od_pool = Pool("od", {label: od_value} if od_value else {"kubernetes.io/os": "linux"})
    spot = pods.manifest(request(spot=True), plan(cluster))["spec"]
    on_demand = pods.manifest(request(spot=False), plan(cluster))["spec"]
    assert admits(spot_pool, spot) is None and admits(od_pool, spot) is not None
    assert admits(od_pool, on_demand) is None and admits(spot_pool, on_demand) is not None
    assert spot["terminationGracePeriodSeconds"] == 25 and spot["restartPolicy"] == "Never"


def test_job_spec_section_and_its_errors_in_one_line() -> None:
    spec = parse_spec({"run": "python train.py", "resources": {"cloud": "kubernetes"},
                       "kubernetes": {"image": "ghcr.io/me/train:1", "cluster": "gke", "memory": "16Gi", "gpus": 1,
                                      "node_selector": {"pool": "a100", "fast": True}, "image_pull_secrets": "regcred",
                                      "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]}})
    settings = spec.cloud_settings(None)["kubernetes"]
    assert settings["node_selector"] == {"pool": "a100", "fast": "true"} and settings["image_pull_secrets"] == ["regcred"]
    for bad, words in (({"namespace": "Not_A_Name"}, "kubernetes.namespace: 'Not_A_Name' is not valid here; write it like ml-team"),
                       ({"namspace": "x"}, "did you mean 'namespace'"),
                       ({"tolerations": [{"key": "a", "operator": "Maybe"}]}, "kubernetes.tolerations.0.operator"),
                       ({"node_selector": {"pool": ["a"]}}, "node_selector maps label names to values"),
                       ({"cluster": "eks-spot"}, "kubernetes.cluster"),
                       ({"memory": "lots"}, "kubernetes.memory: 'lots' is not valid here; write it like 16Gi"),
                       ({"cpu": "four"}, "kubernetes.cpu: 'four' is not valid here; write it like 4, 0.5 or 500m")):
        with pytest.raises(SpecError) as err:
            parse_spec({"run": "x", "resources": {"cloud": "kubernetes"}, "kubernetes": bad})
        assert words in str(err.value) and len(err.value.problems) == 1, str(err.value)


async def test_secrets_reach_the_pod_by_reference_only(tmp_path: Path, kube: FakeApiServer, provider: KubernetesProvider) -> None:
    out = tmp_path / "seen"
    inst = await provider.launch(request(run=f"printenv HF_TOKEN > {out}; printenv SPOTRUN_STATUS_STORE >> {out}",
                                         secrets={"HF_TOKEN": "hf_not_in_the_spec"}))
    pod = kube.do(lambda: json.loads(json.dumps(kube.cluster.find(inst.id.partition("/")[2]))))
    assert "hf_not_in_the_spec" not in json.dumps(pod)  # nor in anything `kubectl get pod -o yaml` shows
    refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in pod["spec"]["containers"][0]["env"] if "valueFrom" in e}
    assert set(refs) == {"HF_TOKEN", "SPOTRUN_STATUS_STORE"}
    (secret,) = kube.do(lambda: list(kube.cluster.secrets.values()))
    assert secret["metadata"]["ownerReferences"][0]["uid"] == pod["metadata"]["uid"]
    await async_wait_until(lambda: out.exists() and len(out.read_text().splitlines()) == 2, what="the pod to print its env")
    assert out.read_text().splitlines() == ["hf_not_in_the_spec", provider.config.store]
    await async_wait_until(lambda: kube.do(lambda: kube.cluster.pods[("spotrun", pod["metadata"]["name"])]["status"]["phase"])
                           == "Succeeded", what="the pod to succeed")
    await provider.terminate(inst.id)
    await provider.terminate(inst.id)  # idempotent
    await async_wait_until(lambda: kube.do(lambda: (dict(kube.cluster.pods), dict(kube.cluster.secrets))) == ({}, {}),
                           what="the pod deleted and its Secret collected with it")


async def test_a_repeated_launch_returns_the_same_pod(kube: FakeApiServer, provider: KubernetesProvider) -> None:
    first = await provider.launch(request())
    again = await KubernetesProvider(provider.config).launch(request())  # a restarted controller
    assert again.id == first.id and again.token == "job1-0001"
    assert kube.cluster.requests["create pods"] == 2 and len(kube.cluster.pods) == 1  # the second got a 409
    await provider.terminate(first.id)


async def test_the_leak_sweep_deletes_secrets_no_pod_took(kube: FakeApiServer, provider: KubernetesProvider) -> None:
    live = await provider.launch(request())
    from tests.providers.kubernetes.fakeapi import now_iso

    def orphan(name: str, age_s: float) -> None:
        kube.cluster.secrets[("spotrun", name)] = {"apiVersion": "v1", "kind": "Secret", "data": {}, "metadata": {
            "name": name, "namespace": "spotrun", "labels": {"app.kubernetes.io/managed-by": "spotrun"},
            "creationTimestamp": now_iso(time.time() - age_s)}}

    kube.do(orphan, "spotrun-old-a1-0000000000", 3600)  # its controller died before the pod; the job was cancelled
    kube.do(orphan, "spotrun-new-a1-0000000000", 5)  # a launch under way
    await provider.list_instances()  # what the controller's leak sweep calls
    assert sorted(n for _, n in kube.cluster.secrets) == sorted(["spotrun-new-a1-0000000000", live.id.partition("/")[2]])
    await provider.terminate(live.id)


async def test_bad_input_fails_in_one_line(tmp_path: Path, kube: FakeApiServer, provider: KubernetesProvider) -> None:
    with pytest.raises(ValueError, match=r"^namespace 'nope' does not exist: create it or set kubernetes.namespace$"):
        await provider.launch(request(cloud={"kubernetes": {"namespace": "nope"}}))
    with pytest.raises(ValueError, match="^workdir is not copied into pods"):
        await provider.launch(request(workdir=str(tmp_path)))
    forged = tmp_path / "forged-kubeconfig"
    forged.write_text(kube.kubeconfig.read_text().replace(kube.cluster.token, "wrong"))
    import dataclasses

    stranger = KubernetesProvider(dataclasses.replace(provider.config, kubeconfig=str(forged)))
    with pytest.raises(ValueError, match=r"^the Kubernetes API refused the credentials \(401"):
        await stranger.launch(request())
    assert kube.cluster.pods == {}


async def test_a_bound_pod_reads_as_pending_then_running(kube: FakeApiServer, provider: KubernetesProvider) -> None:
    inst = await provider.launch(request(run="sleep 600"))
    assert inst.state == InstanceState.PENDING  # no heartbeat yet: the agent is starting
    assert inst.spot and inst.job_id == "job1" and inst.attempt == 1
    await provider.terminate(inst.id)
    seen = await provider.query(inst.id)
    assert seen.state == InstanceState.TERMINATED


def test_the_fake_speaks_the_api_as_the_official_models_read_it(kube: FakeApiServer) -> None:
    """Typed calls deserialize every answer into the client's models (V1Pod, V1PodList, V1Status):
    a field missing or misnamed in the fake fails here."""
    api = client.CoreV1Api(config.new_client_from_config(config_file=str(kube.kubeconfig)))
    body = {"metadata": {"name": "p1", "labels": {"app": "a", "tier": "x"}},
            "spec": {"restartPolicy": "Never", "terminationGracePeriodSeconds": 2, "nodeSelector": {"karpenter.sh/capacity-type": "spot"},
                     "containers": [{"name": "job", "image": "img", "command": [sys.executable, "-c", "import time; time.sleep(60)"]}]}}
    made = api.create_namespaced_pod("spotrun", body)
    assert isinstance(made, client.V1Pod) and made.metadata.uid and made.status.phase == "Pending"
    with pytest.raises(ApiException) as conflict:
        api.create_namespaced_pod("spotrun", body)
    assert conflict.value.status == 409 and json.loads(conflict.value.body)["reason"] == "AlreadyExists"
    with pytest.raises(ApiException) as missing:
        api.read_namespaced_pod("nope", "spotrun")
    assert missing.value.status == 404
    api.create_namespaced_pod("spotrun", {**body, "metadata": {"name": "p2", "labels": {"app": "b"}}})
    listed = api.list_namespaced_pod("spotrun", label_selector="app=a,tier")
    assert [p.metadata.name for p in listed.items] == ["p1"]
    page = api.list_namespaced_pod("spotrun", limit=1)
    assert len(page.items) == 1 and page.metadata._continue
    rest = api.list_namespaced_pod("spotrun", limit=1, _continue=page.metadata._continue)
    assert {page.items[0].metadata.name, rest.items[0].metadata.name} == {"p1", "p2"}

    events = []
    for event in watch.Watch().stream(api.list_namespaced_pod, "spotrun", label_selector="app=a",
                                      resource_version=made.metadata.resource_version, timeout_seconds=5):
        events.append((event["type"], event["object"]))
        if event["object"].status.phase == "Running":
            break
    assert all(isinstance(o, client.V1Pod) and o.metadata.name == "p1" for _, o in events)
    assert [int(o.metadata.resource_version) for _, o in events] == sorted(int(o.metadata.resource_version) for _, o in events)
    running = events[-1][1]
    assert running.status.container_statuses[0].state.running.started_at is not None

    node = running.spec.node_name
    kube.call(kube.cluster.reclaim_node(node))
    gone = api.read_namespaced_pod("p1", "spotrun")
    assert (gone.status.phase, gone.status.reason) == ("Failed", "Terminated")
    (disruption,) = [c for c in gone.status.conditions if c.type == "DisruptionTarget"]
    assert (disruption.status, disruption.reason) == ("True", "TerminationByKubelet")
    assert gone.status.container_statuses[0].state.terminated.exit_code in (137, 143)
    facts = pods.facts(api.api_client.sanitize_for_serialization(gone), now=0, pull_timeout_s=1)
    assert facts.state == InstanceState.RECLAIMED and "TerminationByKubelet" in facts.reason
    api.delete_namespaced_pod("p1", "spotrun")
    api.delete_namespaced_pod("p2", "spotrun", grace_period_seconds=0)
    with pytest.raises(ApiException) as unknown_ns:
        api.list_namespaced_pod("nope")
    assert unknown_ns.value.status == 404 and json.loads(unknown_ns.value.body)["message"] == 'namespaces "nope" not found'


def test_a_job_the_pods_cannot_run_is_refused_at_submit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from spotrun.controller.api import prepare_spec

    monkeypatch.setenv("SPOTRUN_KUBERNETES_STORE", "s3://b/p")
    monkeypatch.delenv("SPOTRUN_KUBERNETES_IMAGE", raising=False)
    with pytest.raises(SpecError) as err:
        prepare_spec({"run": "x", "workdir": str(tmp_path), "resources": {"cloud": "kubernetes"}})
    assert err.value.problems == [
        "kubernetes.image: required (or SPOTRUN_KUBERNETES_IMAGE): an image with spotrun installed",
        "workdir: not copied into pods on kubernetes; build the code into kubernetes.image"]
    assert prepare_spec({"run": "x", "resources": {"cloud": "kubernetes"}, "kubernetes": {"image": "i"}}).kubernetes.image == "i"


def test_kubeconfig_and_store_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SPOTRUN_KUBERNETES_STORE", raising=False)
    with pytest.raises(ValueError, match="SPOTRUN_KUBERNETES_STORE=s3://"):
        KubeConfig.from_env()
    monkeypatch.setenv("SPOTRUN_KUBERNETES_STORE", "s3://b/p")
    monkeypatch.setenv("SPOTRUN_KUBERNETES_CLUSTER", "gke-spot")
    with pytest.raises(ValueError, match="use one of eks, karpenter, gke, aks, none"):
        KubeConfig.from_env()
    monkeypatch.setenv("SPOTRUN_KUBERNETES_CLUSTER", "gke")
    monkeypatch.setenv("KUBECONFIG", os.devnull)
    assert KubeConfig.from_env().kubeconfig == os.devnull
