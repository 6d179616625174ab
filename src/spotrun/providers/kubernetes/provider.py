"""`KubernetesProvider`: each attempt is one Pod on a spot node pool, its agent the entrypoint.

Shaped like the AWS provider (and controller-runtime's reconcilers): pods are found by their
labels, never by a list kept in memory, so a restarted controller sees everything the last one
started. A pod's name is derived from the attempt's token, so a launch repeated after a crash
gets a 409 and reads the first pod back. Every observation in one reconciler pass shares one
LIST of spotrun's pods per namespace in use and one LIST of the status records
(`providers/status.py`), whatever the number of jobs.

The client is the official `kubernetes` package (synchronous; its calls run in threads): it
reads every kubeconfig (exec plugins for EKS, GKE and AKS, in-cluster service accounts) and its
models are what the test fake is checked against. Responses are read as plain JSON, which is
what the API documents and costs no model building per pod per pass.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import shlex
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spotrun.providers.base import ENDED, Instance, InstanceState, LaunchRefused, LaunchRequest
from spotrun.providers.kubernetes import errors, pods
from spotrun.providers.kubernetes.config import KubeConfig
from spotrun.providers.listing import SharedListing
from spotrun.providers.status import Status, StatusReader, outcome

log = logging.getLogger("spotrun.kubernetes")

STATUS_RETRY_S = 2.0
FLEET_TTL_S = 1.0  # observations this close share one LIST: one per pass at the default 1 s interval
SCHEDULE_POLL_S = 0.2
REQUEST_TIMEOUT_S = 30.0
LOG_TAIL_LINES, LOG_LIMIT_BYTES = 100_000, 8 * 1024 * 1024  # an attempt's log the controller keeps: its end
SECRET_SWEEP_S = 60.0
ORPHAN_SECRET_S = 300.0  # a Secret whose pod was never made, this long after: a launch that will not come back
DEFAULT_GRACE_S = 30  # Kubernetes' own default terminationGracePeriodSeconds
IN_CLUSTER_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


def instance_id(context: str | None, namespace: str, name: str) -> str:
    """`namespace/pod`, and `@context` when the job names one (contexts may hold `:` and `/`)."""
    return f"{namespace}/{name}" + (f"@{context}" if context else "")


def parse_id(iid: str) -> tuple[str | None, str, str]:
    where, _, context = iid.partition("@")
    namespace, _, name = where.partition("/")
    return context or None, namespace, name


@dataclass(frozen=True)
class _Fleet:
    started: float  # monotonic, when its LIST began: a pod made after it cannot be in it
    instances: dict[str, Instance]
    raw: dict[str, dict]
    statuses: dict[tuple[str, int], Status]


class KubernetesProvider:
    name = "kubernetes"

    def __init__(self, config: KubeConfig, root: Path | None = None) -> None:
        from spotrun.paths import home

        self.config = config
        self.calls: Counter[str] = Counter()  # API calls by operation, for benchmarks
        self.root = root or home() / "kubernetes"  # each attempt's log, read before its pod is deleted
        self._apis: dict[str | None, Any] = {}
        self._namespaces: dict[str | None, str] = {}
        self._places: set[tuple[str | None, str]] = set()
        self._status = StatusReader(config.store, retry_timeout_s=STATUS_RETRY_S)
        self._fleet = SharedListing(self._observe, FLEET_TTL_S)
        self._deleted: set[str] = set()  # pods this provider deleted: their end is ours, not the cloud's
        self._logged: set[str] = set()  # pods whose final log is kept
        self._ended_seen: dict[str, float] = {}
        self._swept_at = -SECRET_SWEEP_S

    @property
    def store_url(self) -> str:
        """Where jobs keep checkpoints unless they name a store: one the pods can reach."""
        return self.config.store

    # --- the API ---------------------------------------------------------------------------

    def _api(self, context: str | None) -> Any:
        if context not in self._apis:
            from kubernetes import client
            from kubernetes import config as kube

            try:
                if context is None and self.config.kubeconfig is None and _in_cluster():
                    conf = client.Configuration()
                    kube.load_incluster_config(client_configuration=conf)
                    api_client = client.ApiClient(conf)
                else:
                    api_client = kube.new_client_from_config(config_file=self.config.kubeconfig, context=context)
            except Exception as exc:
                raise errors.translate(exc, "") from None
            self._apis[context] = client.CoreV1Api(api_client)
        return self._apis[context]

    def namespace(self, context: str | None) -> str:
        """The configured namespace, else the context's own, else `default`."""
        if self.config.namespace:
            return self.config.namespace
        if context not in self._namespaces:
            found = None
            if context is None and self.config.kubeconfig is None and _in_cluster():
                found = IN_CLUSTER_NAMESPACE.read_text().strip() if IN_CLUSTER_NAMESPACE.exists() else None
            else:
                from kubernetes import config as kube

                try:
                    contexts, active = kube.list_kube_config_contexts(config_file=self.config.kubeconfig)
                    chosen = next((c for c in contexts if c["name"] == context), None) if context else active
                    found = ((chosen or {}).get("context") or {}).get("namespace")
                except Exception as exc:
                    raise errors.translate(exc, "") from None
            self._namespaces[context] = found or "default"
        return self._namespaces[context]

    async def _call(self, context: str | None, op: str, *args: Any, **kwargs: Any) -> Any:
        """One API call in a thread; the body as JSON (bytes for a log)."""
        api = self._api(context)
        self.calls[op] += 1

        def call() -> bytes:
            return getattr(api, op)(*args, _preload_content=False, _request_timeout=REQUEST_TIMEOUT_S, **kwargs).data

        data = await asyncio.to_thread(call)
        return data if op == "read_namespaced_pod_log" else json.loads(data or b"{}")

    # --- launch ----------------------------------------------------------------------------

    def _where(self, request: LaunchRequest) -> tuple[str | None, str]:
        k8s = request.cloud.get("kubernetes") or {}
        context = k8s.get("context") or self.config.context
        return context, k8s.get("namespace") or self.namespace(context)

    def _plan(self, request: LaunchRequest) -> pods.PodPlan:
        k8s = request.cloud.get("kubernetes") or {}
        image = k8s.get("image") or request.cloud.get("image") or self.config.image
        if not image:
            raise ValueError("no image for the pod: set kubernetes.image (or SPOTRUN_KUBERNETES_IMAGE) to an image "
                             "with spotrun installed, e.g. one built FROM python:3.12-slim with `pip install spotrun`")
        if request.workdir:
            raise ValueError("workdir is not copied into pods: build the code into kubernetes.image instead")
        lead = request.cloud.get("notice_lead")
        name = pods.pod_name(request)
        spot_price, od_price = self.prices(request.instance_type, request.zone)
        return pods.PodPlan(
            name=name, secret=name, image=image, agent=shlex.split(k8s.get("agent") or self.config.agent),
            cluster=k8s.get("cluster") or self.config.cluster,
            grace_s=DEFAULT_GRACE_S if lead is None else max(1, math.ceil(lead)),
            price=spot_price if request.spot else od_price,
        )

    async def launch(self, request: LaunchRequest) -> Instance:
        """Create the attempt's pod (or find it), then wait until a node takes it: a pod no node
        can take within `schedule_timeout` (no spot capacity) is deleted and the launch refused."""
        context, namespace = self._where(request)
        plan = self._plan(request)
        self._places.add((context, namespace))
        try:
            await self._put_secret(context, namespace, pods.secret_manifest(request, plan, self.config.store))
            try:
                pod = await self._call(context, "create_namespaced_pod", namespace, pods.manifest(request, plan))
            except Exception as exc:
                if errors.status_of(exc) != 409:
                    raise
                pod = await self._call(context, "read_namespaced_pod", plan.name, namespace)
                if (pod["metadata"].get("annotations") or {}).get(pods.NOTE_TOKEN) != request.token:
                    raise ValueError(f"pod {namespace}/{plan.name} exists and is not this attempt's: delete it") from None
            owned = pods.secret_manifest(request, plan, self.config.store, pod)
            await self._call(context, "replace_namespaced_secret", plan.secret, namespace, owned)
        except Exception as exc:
            raise errors.translate(exc, namespace) from None
        self._fleet.forget()
        made = time.monotonic()
        iid = instance_id(context, namespace, plan.name)
        log.info("created pod %s for %s attempt %d", iid, request.job_id, request.attempt)
        timeout = (request.cloud.get("kubernetes") or {}).get("schedule_timeout") or self.config.schedule_timeout_s
        pod = await self._until_scheduled(iid, pod, timeout, made)
        return self._to_instance(context, namespace, pod, {})

    async def _put_secret(self, context: str | None, namespace: str, body: dict) -> None:
        """The attempt's Secret, owned by its pod (deleted with it); values re-read on a relaunch."""
        try:
            await self._call(context, "create_namespaced_secret", namespace, body)
        except Exception as exc:
            if errors.status_of(exc) != 409:
                raise
            await self._call(context, "replace_namespaced_secret", body["metadata"]["name"], namespace, body)

    async def _until_scheduled(self, iid: str, pod: dict, timeout_s: float, made: float) -> dict:
        created = pods.when(pod["metadata"].get("creationTimestamp")) or time.time()
        while not pods.scheduled(pod) and (pod.get("status") or {}).get("phase", "Pending") == "Pending":
            if time.time() - created > timeout_s:
                why = pods.unschedulable(pod) or "not scheduled"
                await self.terminate(iid)
                raise LaunchRefused(f"no node took pod {iid} within {timeout_s:g}s (no spot capacity?): {why}")
            await asyncio.sleep(SCHEDULE_POLL_S)
            fleet = await self._snapshot()
            if iid in fleet.raw:
                pod = fleet.raw[iid]
            elif fleet.started > made:  # else a LIST begun before the pod was made: look again
                raise LaunchRefused(f"pod {iid} was deleted before a node took it")
        return pod

    # --- observe ---------------------------------------------------------------------------

    async def _list(self, context: str | None, namespace: str) -> list[dict]:
        items, token = [], None
        while True:
            page = await self._call(context, "list_namespaced_pod", namespace, label_selector=pods.MANAGED,
                                    limit=500, **({"_continue": token} if token else {}))
            items += page.get("items") or []
            token = (page.get("metadata") or {}).get("continue")
            if not token:
                return items

    async def _observe(self) -> _Fleet:
        """Every spotrun pod in every namespace in use, and every status record: one pass's view."""
        started = time.monotonic()
        places = sorted(self._places, key=lambda p: (p[0] or "", p[1]))
        found, statuses = await asyncio.gather(asyncio.gather(*(self._list(c, n) for c, n in places)),
                                               self._status_or_none())
        instances, raw = {}, {}
        for (context, namespace), items in zip(places, found):
            for pod in items:
                inst = self._to_instance(context, namespace, pod, statuses)
                instances[inst.id], raw[inst.id] = inst, pod
        ended = [i for i in instances.values() if i.state in ENDED and i.id not in self._logged]
        await asyncio.gather(*(self._keep_log(i.id) for i in ended))
        return _Fleet(started, instances, raw, statuses)

    async def _status_or_none(self) -> dict[tuple[str, int], Status]:
        try:
            return await self._status.read_all()
        except Exception as exc:  # noqa: BLE001  a store outage: judge by the pods alone
            log.warning("status records unreadable (%s); using the pods' state only", exc)
            return {}

    async def _snapshot(self) -> _Fleet:
        if not self._places:
            context = self.config.context
            self._places.add((context, self.namespace(context)))
        return await self._fleet.get()

    async def query(self, instance_id: str) -> Instance:
        context, namespace, _ = parse_id(instance_id)
        if (context, namespace) not in self._places:  # a pod from before a restart, in a namespace not yet seen
            self._places.add((context, namespace))
            self._fleet.forget()
        fleet = await self._snapshot()
        return fleet.instances.get(instance_id) or self._vanished(instance_id, fleet.statuses)

    async def list_instances(self, job_id: str | None = None) -> list[Instance]:
        fleet = await self._snapshot()
        if job_id is None:  # the controller's leak sweep
            await self._sweep_secrets(fleet)
        found = [i for i in fleet.instances.values() if job_id is None or i.job_id == job_id]
        return sorted(found, key=lambda i: i.launched_at or 0.0)

    async def _sweep_secrets(self, fleet: _Fleet) -> None:
        """Delete attempt Secrets no pod ever owned (a controller killed between the Secret and its
        pod, and the attempt cancelled meanwhile); at most once a minute, one LIST per namespace."""
        if time.monotonic() - self._swept_at < SECRET_SWEEP_S:
            return
        self._swept_at = time.monotonic()
        for context, namespace in sorted(self._places, key=lambda p: (p[0] or "", p[1])):
            try:
                found = await self._call(context, "list_namespaced_secret", namespace, label_selector=pods.MANAGED)
                for secret in found.get("items") or []:
                    meta = secret["metadata"]
                    iid = instance_id(context, namespace, meta["name"])
                    age = time.time() - (pods.when(meta.get("creationTimestamp")) or time.time())
                    if not meta.get("ownerReferences") and iid not in fleet.raw and age > ORPHAN_SECRET_S:
                        log.warning("deleting Secret %s: no pod took it", iid)
                        await self._call(context, "delete_namespaced_secret", meta["name"], namespace)
            except Exception as exc:  # noqa: BLE001  best effort; the next sweep tries again
                log.warning("could not sweep the Secrets of %s: %s", namespace, getattr(exc, "reason", exc))

    def _to_instance(self, context: str | None, namespace: str, pod: dict, statuses: dict[tuple[str, int], Status]) -> Instance:
        meta = pod["metadata"]
        notes, labels = meta.get("annotations") or {}, meta.get("labels") or {}
        iid = instance_id(context, namespace, meta["name"])
        job_id, attempt = notes.get(pods.NOTE_JOB, ""), int(labels.get(pods.LABEL_ATTEMPT, "0") or 0)
        now = time.time()
        launched_at = pods.when(meta.get("creationTimestamp")) or now
        said = pods.facts(pod, now, self.config.pull_timeout_s)
        cloud = InstanceState.TERMINATED if iid in self._deleted and said.state not in ENDED else said.state
        status = statuses.get((job_id, attempt))
        seen = outcome(cloud, said.reason, status, launched_at=launched_at, now=now,
                       boot_timeout_s=self.config.boot_timeout_s, stale_after_s=self.config.stale_after_s,
                       cloud_returncode=said.returncode)
        return self._instance(iid, seen, said.reason, status, now, token=notes.get(pods.NOTE_TOKEN, ""), job_id=job_id,
                              attempt=attempt, owner=notes.get(pods.NOTE_OWNER), launched_at=launched_at,
                              spot=notes.get(pods.NOTE_SPOT) == "true", price=notes.get(pods.NOTE_PRICE), ended_at=said.ended_at)

    def _instance(self, iid: str, seen: Any, reason: str, status: Status | None, now: float, *, price: str | None,
                  ended_at: float | None, **fields: Any) -> Instance:
        ended = None
        if seen.state in ENDED:
            ended = (status and (status.exited_at or status.ended_at)) or ended_at or self._ended_seen.setdefault(iid, now)
        # The pod's own words (OOMKilled, evicted, reclaimed) whenever it has some; else why the
        # silence ended it (no heartbeat). The agent's exit status speaks for itself.
        detail = reason or (seen.detail if seen.state in ENDED and seen.returncode is None else "")
        return Instance(id=iid, state=seen.state, returncode=seen.returncode, ended_at=ended, detail=detail,
                        price_per_hour=float(price) if price else None, log_path=self._log_path(iid), **fields)

    def _vanished(self, iid: str, statuses: dict[tuple[str, int], Status]) -> Instance:
        """A pod the API no longer has: deleted by us, by a drain, or with its node (PodGC)."""
        _, _, name = parse_id(iid)
        job_id, attempt = pods.job_attempt(name) or ("", 0)
        ours = iid in self._deleted
        reason = "deleted by spotrun" if ours else "the pod is gone (drained, or deleted with its node)"
        now = time.time()
        status = statuses.get((job_id, attempt))
        seen = outcome(InstanceState.TERMINATED if ours else InstanceState.GONE, reason, status, launched_at=now,
                       now=now, boot_timeout_s=self.config.boot_timeout_s, stale_after_s=self.config.stale_after_s)
        return self._instance(iid, seen, reason, status, now, token="", job_id=job_id, attempt=attempt, spot=False,
                              price=None, ended_at=None)

    # --- logs ------------------------------------------------------------------------------

    def _log_path(self, iid: str) -> str:
        context, namespace, name = parse_id(iid)
        return str(self.root / "logs" / (context or "_").replace("/", "_") / namespace / f"{name}.log")

    async def _keep_log(self, iid: str) -> None:
        """The pod's log (`Instance.log_path`), read once it ended and again just before the pod
        (and its log) is deleted; best effort: a node that went takes its logs along, and then
        the copy read before is kept."""
        context, namespace, name = parse_id(iid)
        try:
            data = await self._call(context, "read_namespaced_pod_log", name, namespace, container=pods.CONTAINER,
                                    tail_lines=LOG_TAIL_LINES, limit_bytes=LOG_LIMIT_BYTES)
        except Exception as exc:  # noqa: BLE001
            log.info("no log for pod %s: %s", iid, getattr(exc, "reason", exc))
            data = b""
        from spotrun.paths import open_private

        path = Path(self._log_path(iid))
        path.parent.mkdir(parents=True, exist_ok=True)
        if data or not path.exists():
            with open_private(path, "wb") as f:
                f.write(data)
        self._logged.add(iid)

    # --- stop ------------------------------------------------------------------------------

    async def terminate(self, instance_id: str) -> None:
        """Delete the pod (its grace period lets the agent save work; its Secret goes with it)."""
        if instance_id in self._deleted:
            return
        context, namespace, name = parse_id(instance_id)
        await self._keep_log(instance_id)
        try:
            await self._call(context, "delete_namespaced_pod", name, namespace)
        except Exception as exc:
            if errors.status_of(exc) != 404:
                raise errors.translate(exc, namespace) from None
        self._deleted.add(instance_id)
        self._fleet.forget()

    async def interrupt(self, instance_id: str, lead_s: float | None = None) -> None:
        raise NotImplementedError(
            "the cluster reclaims spot nodes on its own; to rehearse one, drain the pod's node "
            "(`kubectl drain NODE --ignore-daemonsets`) or delete its VM in the cloud's console"
        )

    def prices(self, instance_type: str | None, zone: str | None) -> tuple[float, float]:
        """A pod's share of a node has no list price: costs are reported as 0 on Kubernetes."""
        return (0.0, 0.0)


def _in_cluster() -> bool:
    """A controller in a pod with no kubeconfig of its own uses the pod's service account."""
    return bool(os.environ.get("KUBERNETES_SERVICE_HOST")) and not (Path.home() / ".kube" / "config").exists()
