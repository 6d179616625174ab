"""One attempt as a Pod: its manifest, its name and labels, and what its status says happened.

The manifest is plain JSON (the API's documented shape), so what is sent is what the docs show.
The name is derived from the attempt's token: a launch repeated after a crash gets a 409 and
reads the first pod back instead of starting a second. The pod facts turn kubelet's and the
scheduler's words (conditions, reasons, container states) into the provider's states; the
agent's status record still comes first (`providers/status.py: outcome`).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from spotrun.providers.base import InstanceState, LaunchRequest
from spotrun.providers.kubernetes.config import CLUSTERS

MANAGED = "app.kubernetes.io/managed-by=spotrun"
LABEL_JOB, LABEL_ATTEMPT, LABEL_TOKEN, LABEL_OWNER = "spotrun.dev/job", "spotrun.dev/attempt", "spotrun.dev/token", "spotrun.dev/owner"
NOTE_TOKEN, NOTE_JOB, NOTE_OWNER = "spotrun.dev/token", "spotrun.dev/job", "spotrun.dev/owner"
NOTE_PRICE, NOTE_SPOT = "spotrun.dev/price", "spotrun.dev/spot"
CONTAINER = "job"
_NAME = re.compile(r"^spotrun-(?P<job>[a-z0-9-]+)-a(?P<attempt>\d+)-[0-9a-f]{10}$")

# Pod-level reasons for a pod that the node took away (kubelet's graceful node shutdown, node
# pressure eviction, a node lost), as opposed to one whose command failed.
RECLAIM_REASONS = {
    "Terminated": "terminated for the node's shutdown",
    "Shutdown": "terminated for the node's shutdown",
    "NodeShutdown": "rejected: the node is shutting down",
    "Evicted": "evicted from its node",
    "NodeLost": "its node was lost",
    "DeadlineExceeded": "its activeDeadlineSeconds passed",
}
# A container that never starts for one of these is the job's own doing (its image, its config).
USER_WAITING = {"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull",
                "CreateContainerConfigError", "CreateContainerError"}
WRAP = 'if [ -n "$SPOTRUN_SETUP" ]; then bash -c "$SPOTRUN_SETUP" || exit $?; fi; exec bash -c "$SPOTRUN_RUN"'


def _slug(text: str, n: int) -> str:
    return re.sub(r"-+", "-", re.sub(r"[^a-z0-9-]", "-", text.lower())).strip("-")[:n].strip("-") or "x"


def _digest(text: str, n: int) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:n]


def pod_name(request: LaunchRequest) -> str:
    """DNS-1123 and at most 63 characters (it becomes the pod's hostname)."""
    return f"spotrun-{_slug(request.job_id, 30)}-a{request.attempt}-{_digest(request.token, 10)}"


def job_attempt(name: str) -> tuple[str, int] | None:
    """(job, attempt) from a pod name, so a pod gone from the API is still matched to its record."""
    found = _NAME.match(name)
    return (found["job"], int(found["attempt"])) if found else None


def label_value(text: str) -> str:
    """A label value (63 characters of [A-Za-z0-9-_.]); exact values live in annotations."""
    clean = re.sub(r"[^A-Za-z0-9_.-]", "-", text)[:63].strip("-_.")
    return clean if clean == text else f"{clean[:50].strip('-_.')}-{_digest(text, 12)}".lstrip("-_.")


def token_label(token: str) -> str:
    return _digest(token, 40)


def placement(cluster: str, spot: bool) -> tuple[dict[str, str], list[dict], list[dict]]:
    """(node selector, tolerations, node affinity terms) that put a pod on spot or on-demand nodes."""
    if cluster not in CLUSTERS:
        return {}, [], []
    label, spot_value, od_value, tainted = CLUSTERS[cluster]
    if spot:
        tolerations = [{"key": label, "operator": "Equal", "value": spot_value, "effect": "NoSchedule"}] if tainted else []
        return {label: spot_value}, tolerations, []
    if od_value is not None:
        return {label: od_value}, [], []
    # On-demand nodes carry no such label: "not spot" is the opposite (NotIn matches a missing label).
    return {}, [], [{"key": label, "operator": "NotIn", "values": [spot_value]}]


def resources(k8s: dict) -> dict:
    """Requests for CPU and memory; memory and GPUs also as limits (a pod over its memory limit is
    OOMKilled, which spotrun reports as the job's error); no CPU limit, which only throttles."""
    requests: dict[str, str] = {}
    limits: dict[str, str] = {}
    if k8s.get("cpu") is not None:
        requests["cpu"] = str(k8s["cpu"])
    if k8s.get("memory") is not None:
        requests["memory"] = limits["memory"] = str(k8s["memory"])
    if k8s.get("gpus"):
        gpu = k8s.get("gpu_resource") or "nvidia.com/gpu"
        requests[gpu] = limits[gpu] = str(int(k8s["gpus"]))
    return {k: v for k, v in (("requests", requests), ("limits", limits)) if v}


@dataclass(frozen=True)
class PodPlan:
    """What the provider decided beyond the request: where the image and agent come from."""

    name: str
    secret: str  # the attempt's Secret: the store URL and the job's secrets, never in the pod spec
    image: str
    agent: list[str]
    cluster: str
    grace_s: int
    price: float


def manifest(request: LaunchRequest, plan: PodPlan) -> dict:
    k8s: dict = request.cloud.get("kubernetes") or {}
    selector, tolerations, affinity = placement(plan.cluster, request.spot)
    labels = {
        "app.kubernetes.io/managed-by": "spotrun", "app.kubernetes.io/name": "spotrun-job",
        LABEL_JOB: label_value(request.job_id), LABEL_ATTEMPT: str(request.attempt),
        LABEL_TOKEN: token_label(request.token),
        **({LABEL_OWNER: label_value(request.owner)} if request.owner else {}),
    }
    notes = {NOTE_TOKEN: request.token, NOTE_JOB: request.job_id, NOTE_PRICE: f"{plan.price:.6f}",
             NOTE_SPOT: "true" if request.spot else "false",
             **({NOTE_OWNER: request.owner} if request.owner else {})}
    env = [{"name": k, "value": v} for k, v in sorted(request.env.items())]
    env += [{"name": "SPOTRUN_SETUP", "value": request.setup or ""}, {"name": "SPOTRUN_RUN", "value": request.run}]
    env += [{"name": k, "valueFrom": {"secretKeyRef": {"name": plan.secret, "key": k}}}
            for k in sorted({*request.secrets, "SPOTRUN_STATUS_STORE"})]
    command = [*plan.agent, "exec", "--provider", "kubernetes", "--k8s-grace", f"{plan.grace_s}s",
               "--job-id", request.job_id, "--attempt", str(request.attempt), *request.agent_args,
               "--", "bash", "-c", WRAP]
    container = {"name": CONTAINER, "image": plan.image, "command": command, "env": env,
                 "resources": resources(k8s), "terminationMessagePolicy": "FallbackToLogsOnError"}
    spec: dict[str, Any] = {
        "restartPolicy": "Never",  # the controller owns retries: a new attempt, a new pod
        "terminationGracePeriodSeconds": plan.grace_s,
        "containers": [container],
        "nodeSelector": {**(k8s.get("node_selector") or {}), **selector},
        "tolerations": [*(k8s.get("tolerations") or []), *tolerations],
        # The agent needs no API access: no token in the pod unless a service account is named
        # (IRSA / Workload Identity hand the store's cloud credentials through one).
        "automountServiceAccountToken": bool(k8s.get("service_account")),
    }
    if affinity:
        spec["affinity"] = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [{"matchExpressions": affinity}]}}}
    if k8s.get("service_account"):
        spec["serviceAccountName"] = k8s["service_account"]
    if k8s.get("image_pull_secrets"):
        spec["imagePullSecrets"] = [{"name": n} for n in k8s["image_pull_secrets"]]
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": plan.name, "labels": labels, "annotations": notes},
            "spec": {k: v for k, v in spec.items() if v not in ({}, [])}}


def secret_manifest(request: LaunchRequest, plan: PodPlan, status_store: str, pod: dict | None = None) -> dict:
    """The attempt's store URL(s) and secrets, which the pod reads by `secretKeyRef`. Made before
    the pod (kubelet would back off ~10 s from a pod whose Secret is missing), then owned by it,
    so Kubernetes' garbage collector deletes it with the pod."""
    import base64

    values = {**request.secrets, "SPOTRUN_STATUS_STORE": status_store}
    owners = [{"apiVersion": "v1", "kind": "Pod", "name": pod["metadata"]["name"], "uid": pod["metadata"]["uid"]}] if pod else []
    return {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": {"name": plan.secret, **({"ownerReferences": owners} if owners else {}),
                         "labels": {"app.kubernetes.io/managed-by": "spotrun", LABEL_JOB: label_value(request.job_id),
                                    LABEL_TOKEN: token_label(request.token)}},
            "data": {k: base64.b64encode(v.encode()).decode() for k, v in values.items()}}


# --- what a pod's status says ------------------------------------------------------------------

def when(text: str | None) -> float | None:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() if text else None


@dataclass(frozen=True)
class PodFacts:
    state: InstanceState
    reason: str = ""
    returncode: int | None = None
    ended_at: float | None = None


def _container(status: dict) -> dict:
    found = [c for c in status.get("containerStatuses") or [] if c.get("name") == CONTAINER]
    return found[0] if found else {}


def facts(pod: dict, now: float, pull_timeout_s: float) -> PodFacts:
    """The cloud's witness for one pod: reclaimed (the node went), the job's own failure (out of
    memory, an image that cannot be pulled), ended, or still pending / running."""
    meta, status = pod.get("metadata") or {}, pod.get("status") or {}
    phase = status.get("phase") or "Pending"
    conditions = {c.get("type"): c for c in status.get("conditions") or []}
    disruption = conditions.get("DisruptionTarget")
    disrupted = disruption is not None and disruption.get("status") == "True"
    state = _container(status).get("state") or {}
    term, waiting = state.get("terminated"), state.get("waiting")
    ended_at = when(term.get("finishedAt")) if term else None
    if phase in ("Failed", "Succeeded"):
        if disrupted:
            why = disruption.get("message") or disruption.get("reason") or "DisruptionTarget"
            return PodFacts(InstanceState.RECLAIMED, f"reclaimed: {disruption.get('reason')}: {why}", None, ended_at)
        if status.get("reason") in RECLAIM_REASONS:
            said = status.get("message") or ""
            return PodFacts(InstanceState.RECLAIMED, f"{RECLAIM_REASONS[status['reason']]} ({status['reason']}: {said})".replace(": )", ")"), None, ended_at)
        if term and term.get("reason") == "OOMKilled":
            return PodFacts(InstanceState.EXITED, "OOMKilled: the container went over its memory limit (kubernetes.memory)",
                            int(term.get("exitCode", 137)), ended_at)
        if term:
            code = int(term.get("exitCode", 0))
            return PodFacts(InstanceState.EXITED, f"the container exited with status {code} ({term.get('reason', '')})", code, ended_at)
        return PodFacts(InstanceState.GONE, f"pod {phase}: {status.get('reason', '')} {status.get('message', '')}".strip(), None, ended_at)
    if disrupted or meta.get("deletionTimestamp"):
        return PodFacts(InstanceState.NOTICE, "being stopped: " + ((disruption or {}).get("reason") or "deleted"))
    if waiting and waiting.get("reason") in USER_WAITING:
        created = when(meta.get("creationTimestamp")) or now
        if now - created > pull_timeout_s:
            return PodFacts(InstanceState.UNBOOTED, f"{waiting['reason']}: {waiting.get('message', '')}".rstrip(": "))
    if phase == "Pending":
        return PodFacts(InstanceState.PENDING)
    return PodFacts(InstanceState.RUNNING)


def unschedulable(pod: dict) -> str | None:
    """The scheduler's message while no node can take the pod, else None."""
    for c in (pod.get("status") or {}).get("conditions") or []:
        if c.get("type") == "PodScheduled" and c.get("status") == "False" and c.get("reason") == "Unschedulable":
            return c.get("message") or "Unschedulable"
    return None


def scheduled(pod: dict) -> bool:
    return any(c.get("type") == "PodScheduled" and c.get("status") == "True"
               for c in (pod.get("status") or {}).get("conditions") or [])


__all__ = ["MANAGED", "PodFacts", "PodPlan", "facts", "manifest", "pod_name", "placement"]
