"""A protocol-level fake Kubernetes API server, with a scheduler and a node runner (tests only).

No kube-apiserver can be installed here, so this plays one on 127.0.0.1 behind a generated
kubeconfig: the provider's real client (the official `kubernetes` package) talks to it
unchanged. It serves the part of the core/v1 API spotrun uses, in the API's documented JSON:

- Pods: create (409 AlreadyExists), get/delete (404 NotFound), list and watch with label
  selectors, `resourceVersion`, `limit`/`continue`, the `log` and `eviction` subresources.
- Secrets: create/get/replace/delete; the garbage collector deletes those owned by a deleted pod.
- A scheduler: node pools (labels, taints, capacity on or off); a pod bound to a fresh node of a
  pool its node selector, affinity and tolerations admit, else `PodScheduled=False/Unschedulable`.
- A kubelet per node: each bound pod's container command runs as a local process group with its
  own scratch directory; `env` with `secretKeyRef` resolved (a missing Secret is
  `CreateContainerConfigError`); an image marked bad never pulls (`ErrImagePull`); memory over
  `limits.memory` is `OOMKilled`; a deletion or an eviction is SIGTERM to the container's main
  process, then SIGKILL after `terminationGracePeriodSeconds`; a node reclaim is the graceful
  node shutdown kubelet does: `DisruptionTarget=True/TerminationByKubelet`, SIGTERM, the grace,
  then `Failed/Terminated`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import re
import signal
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from spotrun.providers.local import procs

TICK_S = 0.05
SHUTDOWN_MESSAGE = "Pod was terminated in response to imminent node shutdown."
_QUANTITY = re.compile(r"^([0-9.]+)([EPTGMK]i?|[mk])?$")
_UNITS = {"": 1, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "m": 1e-3}


def now_iso(at: float | None = None) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() if at is None else at))


def quantity(text: str) -> float:
    found = _QUANTITY.match(str(text))
    if not found:
        raise ValueError(f"quantities must match the regular expression: {text!r}")
    return float(found[1]) * _UNITS[found[2] or ""]


def status(code: int, reason: str, message: str, **details: Any) -> web.Response:
    """The API's error body: a `Status` object (kubectl and the clients print its message)."""
    body = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message,
            "reason": reason, "details": details, "code": code}
    return web.json_response(body, status=code)


def matches_selector(labels: dict[str, str], selector: str | None) -> bool:
    """Equality-based label selectors: `a=b,c!=d,e` (exists) and `!f`."""
    for term in filter(None, (t.strip() for t in (selector or "").split(","))):
        if "!=" in term:
            key, value = term.split("!=", 1)
            if labels.get(key.strip()) == value.strip():
                return False
        elif "=" in term:
            key, value = term.replace("==", "=").split("=", 1)
            if labels.get(key.strip()) != value.strip():
                return False
        elif term.startswith("!"):
            if term[1:] in labels:
                return False
        elif term not in labels:
            return False
    return True


@dataclass
class Pool:
    """A node pool (an EKS node group, a Karpenter NodePool, a GKE/AKS spot pool)."""

    name: str
    labels: dict[str, str]
    taints: list[dict[str, str]] = field(default_factory=list)
    available: bool = True  # False: the cloud has no capacity for it now


@dataclass
class Container:
    proc: asyncio.subprocess.Process | None = None
    marker: str = ""
    root: Path | None = None
    log: Path | None = None
    oom: bool = False


def _tolerated(taint: dict, tolerations: list[dict]) -> bool:
    for t in tolerations:
        if t.get("effect") not in (None, "", taint.get("effect")):
            continue
        if t.get("operator") == "Exists" and t.get("key") in (None, "", taint["key"]):
            return True
        if t.get("key") == taint["key"] and t.get("value", "") == taint.get("value", ""):
            return True
    return False


def _expression(expr: dict, labels: dict[str, str]) -> bool:
    key, op, values = expr["key"], expr["operator"], expr.get("values") or []
    return {"In": lambda: labels.get(key) in values, "NotIn": lambda: labels.get(key) not in values,
            "Exists": lambda: key in labels, "DoesNotExist": lambda: key not in labels}[op]()


def admits(pool: Pool, spec: dict) -> str | None:
    """None when a node of `pool` can take a pod of `spec`, else why not (the scheduler's words)."""
    for key, value in (spec.get("nodeSelector") or {}).items():
        if pool.labels.get(key) != value:
            return "didn't match Pod's node affinity/selector"
    terms = ((((spec.get("affinity") or {}).get("nodeAffinity") or {})
              .get("requiredDuringSchedulingIgnoredDuringExecution") or {}).get("nodeSelectorTerms")) or []
    if terms and not any(all(_expression(e, pool.labels) for e in t.get("matchExpressions") or []) for t in terms):
        return "didn't match Pod's node affinity/selector"
    for taint in pool.taints:
        if not _tolerated(taint, spec.get("tolerations") or []):
            return f"had untolerated taint {{{taint['key']}: {taint.get('value', '')}}}"
    return None


class FakeCluster:
    """The API server's state and behaviour; runs on its own event loop (see `FakeApiServer`)."""

    def __init__(self, root: Path, env: dict[str, str], *, namespaces: tuple[str, ...] = ("default", "spotrun"),
                 pools: list[Pool] | None = None, shutdown_grace_s: float = 30.0) -> None:
        self.root = root
        self.env = env  # what every container's process starts with (PATH, the interpreter's packages)
        self.namespaces = set(namespaces)
        self.pools = {p.name: p for p in pools or []}
        self.shutdown_grace_s = shutdown_grace_s  # kubelet's shutdownGracePeriod
        self.bad_images: set[str] = set()
        self.pod_gc = False  # True: pods of a deleted node are deleted (PodGC) instead of kept Failed
        self.run_containers = True  # False: pods run without processes (control-plane benchmarks)
        self.token = uuid.uuid4().hex
        self.rv = 0
        self.pods: dict[tuple[str, str], dict] = {}
        self.secrets: dict[tuple[str, str], dict] = {}
        self.nodes: dict[str, dict] = {}
        self.containers: dict[str, Container] = {}  # pod uid -> its running container
        self.events: list[tuple[int, str, dict]] = []  # (resourceVersion, type, pod) for watches
        self.requests: Counter[str] = Counter()  # "VERB resource", as the API server's audit log counts
        self.history: list[tuple[float, str, str]] = []  # (time, verb resource, name)
        self.changed = asyncio.Event()
        self._tasks: set[asyncio.Task] = set()
        self._stopping: set[str] = set()  # pod uids whose container is being stopped

    # --- bookkeeping -------------------------------------------------------------------------

    def _bump(self, obj: dict) -> None:
        self.rv += 1
        obj["metadata"]["resourceVersion"] = str(self.rv)

    def _pod_event(self, kind: str, pod: dict) -> None:
        self._bump(pod)
        self.events.append((self.rv, kind, json.loads(json.dumps(pod))))
        del self.events[:-1000]
        self.changed.set()
        self.changed = asyncio.Event()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def pods_on(self, node: str) -> list[dict]:
        return [p for p in self.pods.values() if p["spec"].get("nodeName") == node]

    def find(self, name: str) -> dict:
        return next(p for p in self.pods.values() if p["metadata"]["name"] == name)

    # --- the API -----------------------------------------------------------------------------

    def create_pod(self, ns: str, body: dict) -> tuple[int, dict]:
        meta = body.get("metadata") or {}
        name = meta.get("name")
        containers = (body.get("spec") or {}).get("containers") or []
        if not name or not containers or any(not c.get("name") or not c.get("image") for c in containers):
            raise ApiError(422, "Invalid", f'Pod "{name}" is invalid: spec.containers: Required value')
        if (ns, name) in self.pods:
            raise ApiError(409, "AlreadyExists", f'pods "{name}" already exists', name=name, kind="pods")
        pod = json.loads(json.dumps(body))
        pod["metadata"].update(namespace=ns, uid=str(uuid.uuid4()), creationTimestamp=now_iso())
        spec = pod["spec"]
        spec.setdefault("restartPolicy", "Always")
        spec.setdefault("terminationGracePeriodSeconds", 30)
        spec.setdefault("dnsPolicy", "ClusterFirst")
        spec.setdefault("schedulerName", "default-scheduler")
        for c in spec["containers"]:
            c.setdefault("terminationMessagePath", "/dev/termination-log")
            c.setdefault("imagePullPolicy", "IfNotPresent")
        limits = [c.get("resources") or {} for c in spec["containers"]]
        qos = "Guaranteed" if all(r.get("limits") and r.get("limits") == r.get("requests") for r in limits) else (
            "Burstable" if any(r for r in limits) else "BestEffort")
        pod["status"] = {"phase": "Pending", "qosClass": qos}
        self.pods[(ns, name)] = pod
        self._pod_event("ADDED", pod)
        self._schedule(pod)
        return 201, pod

    def get_pod(self, ns: str, name: str) -> dict:
        if (ns, name) not in self.pods:
            raise ApiError(404, "NotFound", f'pods "{name}" not found', name=name, kind="pods")
        return self.pods[(ns, name)]

    def delete_pod(self, ns: str, name: str, disruption: dict | None = None) -> dict:
        """Graceful deletion: deletionTimestamp now, the object goes once the container stopped."""
        pod = self.get_pod(ns, name)
        if disruption is not None and pod["status"].get("phase") not in ("Succeeded", "Failed"):
            self._condition(pod, "DisruptionTarget", "True", **disruption)
        if not pod["metadata"].get("deletionTimestamp"):
            grace = pod["spec"]["terminationGracePeriodSeconds"]
            pod["metadata"].update(deletionTimestamp=now_iso(time.time() + grace), deletionGracePeriodSeconds=grace)
            self._pod_event("MODIFIED", pod)
            self._spawn(self._finish_deletion(pod, grace))
        return pod

    async def _finish_deletion(self, pod: dict, grace: float) -> None:
        await self._stop_container(pod, grace)
        key = (pod["metadata"]["namespace"], pod["metadata"]["name"])
        if self.pods.get(key) is pod:
            del self.pods[key]
            self._pod_event("DELETED", pod)
            self._collect(pod)
            node = pod["spec"].get("nodeName")
            if node in self.nodes and not self.pods_on(node):
                del self.nodes[node]  # consolidation: an empty node goes

    def _collect(self, owner: dict) -> None:
        """The garbage collector: objects whose owner is gone go too."""
        uid = owner["metadata"]["uid"]
        for key, secret in list(self.secrets.items()):
            if any(ref.get("uid") == uid for ref in secret["metadata"].get("ownerReferences") or []):
                del self.secrets[key]

    def put_secret(self, ns: str, body: dict, replace: str | None = None) -> tuple[int, dict]:
        name = (body.get("metadata") or {}).get("name")
        if replace is not None:
            if (ns, replace) not in self.secrets:
                raise ApiError(404, "NotFound", f'secrets "{replace}" not found', name=replace, kind="secrets")
        elif (ns, name) in self.secrets:
            raise ApiError(409, "AlreadyExists", f'secrets "{name}" already exists', name=name, kind="secrets")
        secret = json.loads(json.dumps(body))
        old = self.secrets.get((ns, name))
        secret["metadata"].update(namespace=ns, uid=old["metadata"]["uid"] if old else str(uuid.uuid4()),
                                  creationTimestamp=old["metadata"]["creationTimestamp"] if old else now_iso())
        for value in (secret.get("data") or {}).values():
            base64.b64decode(value, validate=True)  # the API refuses data that is not base64
        self._bump(secret)
        self.secrets[(ns, name)] = secret
        return (200 if replace else 201), secret

    # --- the scheduler -----------------------------------------------------------------------

    def _condition(self, pod: dict, kind: str, value: str, reason: str | None = None, message: str | None = None) -> None:
        conditions = pod["status"].setdefault("conditions", [])
        found = next((c for c in conditions if c["type"] == kind), None)
        entry = {"type": kind, "status": value, "lastProbeTime": None, "lastTransitionTime": now_iso(),
                 **({"reason": reason} if reason else {}), **({"message": message} if message else {})}
        if found is None:
            conditions.append(entry)
        elif (found["status"], found.get("reason")) != (value, reason):
            found.clear()
            found.update(entry)

    def _schedule(self, pod: dict) -> None:
        if pod["spec"].get("nodeName") or pod["metadata"].get("deletionTimestamp"):
            return
        why: Counter[str] = Counter()
        for pool in self.pools.values():
            refused = admits(pool, pod["spec"])
            if refused is None and pool.available:
                node = self._add_node(pool)
                pod["spec"]["nodeName"] = node
                self._condition(pod, "PodScheduled", "True")
                self._pod_event("MODIFIED", pod)
                self._spawn(self._kubelet(pod))
                return
            why[refused or "had no capacity (the pool cannot grow now)"] += 1
        total = sum(why.values())
        message = f"0/{total} nodes are available: " + ", ".join(f"{n} node(s) {w}" for w, n in sorted(why.items())) + "."
        before = json.dumps(pod["status"].get("conditions"))
        self._condition(pod, "PodScheduled", "False", "Unschedulable", message)
        if json.dumps(pod["status"].get("conditions")) != before:
            self._pod_event("MODIFIED", pod)

    def _add_node(self, pool: Pool) -> str:
        name = f"{pool.name}-{uuid.uuid4().hex[:6]}"
        self.nodes[name] = {"metadata": {"name": name, "labels": {**pool.labels, "kubernetes.io/hostname": name}},
                            "spec": {"taints": pool.taints},
                            "status": {"conditions": [{"type": "Ready", "status": "True"}]}}
        return name

    async def run(self) -> None:
        """Pending pods are looked at again as pools change (capacity coming back)."""
        while True:
            for pod in list(self.pods.values()):
                if pod["status"]["phase"] == "Pending" and not pod["spec"].get("nodeName"):
                    self._schedule(pod)
            await asyncio.sleep(TICK_S)

    # --- the kubelet -------------------------------------------------------------------------

    def _waiting(self, pod: dict, reason: str, message: str) -> None:
        c = pod["spec"]["containers"][0]
        state = {"waiting": {"reason": reason, "message": message}}
        current = (pod["status"].get("containerStatuses") or [{}])[0].get("state")
        if current != state:
            pod["status"]["containerStatuses"] = [{"name": c["name"], "image": c["image"], "imageID": "",
                                                   "ready": False, "restartCount": 0, "started": False,
                                                   "state": state, "lastState": {}}]
            self._pod_event("MODIFIED", pod)

    def _env(self, pod: dict) -> dict[str, str] | str:
        """The container's environment, or why it cannot be made (CreateContainerConfigError)."""
        ns = pod["metadata"]["namespace"]
        env: dict[str, str] = {}
        for var in pod["spec"]["containers"][0].get("env") or []:
            ref = (var.get("valueFrom") or {}).get("secretKeyRef")
            if ref is None:
                env[var["name"]] = var.get("value", "")
                continue
            secret = self.secrets.get((ns, ref["name"]))
            if secret is None:
                return f'secret "{ref["name"]}" not found'
            if ref["key"] not in (secret.get("data") or {}):
                return f"couldn't find key {ref['key']} in Secret {ns}/{ref['name']}"
            env[var["name"]] = base64.b64decode(secret["data"][ref["key"]]).decode()
        return env

    async def _kubelet(self, pod: dict) -> None:
        spec, uid = pod["spec"], pod["metadata"]["uid"]
        c = spec["containers"][0]
        while True:  # the kubelet's sync loop retries a container it cannot create yet
            if pod["metadata"].get("deletionTimestamp") or spec.get("nodeName") not in self.nodes:
                return
            if c["image"] in self.bad_images:
                self._waiting(pod, "ErrImagePull", f'failed to pull and unpack image "{c["image"]}": not found')
                await asyncio.sleep(TICK_S * 4)
                self._waiting(pod, "ImagePullBackOff", f'Back-off pulling image "{c["image"]}"')
                await asyncio.sleep(TICK_S * 4)
                continue
            env = self._env(pod)
            if isinstance(env, str):
                self._waiting(pod, "CreateContainerConfigError", env)
                await asyncio.sleep(TICK_S)
                continue
            break
        if not self.run_containers:
            self._running(pod, now_iso())
            return
        root = self.root / "pods" / uid
        (root / "tmp").mkdir(parents=True, exist_ok=True)
        box = Container(marker=f"k8s-{uid}", root=root, log=root / "container.log")
        self.containers[uid] = box
        base = {**self.env, "HOME": str(root), "TMPDIR": str(root / "tmp"), "SPOTRUN_HOME": str(root / "spotrun"),
                "HOSTNAME": pod["metadata"]["name"], "KUBERNETES_SERVICE_HOST": "127.0.0.1",
                "KUBERNETES_SERVICE_PORT": "443", **procs.marker_env(box.marker)}
        started = now_iso()
        with open(box.log, "ab") as out:
            box.proc = await asyncio.create_subprocess_exec(
                *c["command"], *(c.get("args") or []), cwd=root, env={**base, **env}, stdin=asyncio.subprocess.DEVNULL,
                stdout=out, stderr=asyncio.subprocess.STDOUT, start_new_session=True)
        self._running(pod, started)
        limit = ((c.get("resources") or {}).get("limits") or {}).get("memory")
        if limit:
            self._spawn(self._memory_watch(box, quantity(limit)))
        code = await box.proc.wait()
        if uid not in self._stopping:  # it ended by itself: the container's other processes go with it
            await asyncio.to_thread(procs.kill_instance, box.marker)
            self._terminated(pod, box, code, started)

    def _running(self, pod: dict, started: str) -> None:
        c, uid = pod["spec"]["containers"][0], pod["metadata"]["uid"]
        pod["status"].update(phase="Running", hostIP="127.0.0.1", podIP="127.0.0.1", startTime=started,
                             podIPs=[{"ip": "127.0.0.1"}], hostIPs=[{"ip": "127.0.0.1"}])
        for kind in ("PodReadyToStartContainers", "Initialized", "Ready", "ContainersReady"):
            self._condition(pod, kind, "True")
        pod["status"]["containerStatuses"] = [{
            "name": c["name"], "image": c["image"], "imageID": f"{c['image']}@sha256:{'0' * 64}",
            "containerID": f"containerd://{uid.replace('-', '')}", "ready": True, "restartCount": 0, "started": True,
            "state": {"running": {"startedAt": started}}, "lastState": {}}]
        self._pod_event("MODIFIED", pod)

    def _terminated(self, pod: dict, box: Container, code: int, started: str, reason: str | None = None,
                    message: str | None = None) -> None:
        code = 128 - code if code < 0 else code  # a signal N as the runtime reports it: 128+N
        why = "OOMKilled" if box.oom else ("Completed" if code == 0 else "Error")
        cs = pod["status"]["containerStatuses"][0]
        cs.update(ready=False, started=False, state={"terminated": {
            "exitCode": code, "reason": why, "startedAt": started, "finishedAt": now_iso(),
            "containerID": cs.get("containerID", "")}})
        phase = "Succeeded" if code == 0 and reason is None else "Failed"
        pod["status"].update(phase=phase, **({"reason": reason} if reason else {}), **({"message": message} if message else {}))
        for kind in ("Ready", "ContainersReady"):
            self._condition(pod, kind, "False", "PodCompleted" if phase == "Succeeded" else "PodFailed")
        self._pod_event("MODIFIED", pod)
        self.containers.pop(pod["metadata"]["uid"], None)

    async def _memory_watch(self, box: Container, limit: float) -> None:
        """The memory cgroup's OOM kill: over the limit, every process of the container dies."""
        page = os.sysconf("SC_PAGE_SIZE")
        while box.proc is not None and box.proc.returncode is None:
            rss = 0
            for pid in procs.instance_pids(box.marker):
                with contextlib.suppress(OSError, ValueError, IndexError):
                    rss += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * page
            if rss > limit:
                box.oom = True
                await asyncio.to_thread(procs.kill_instance, box.marker)
                return
            await asyncio.sleep(TICK_S)

    async def _stop_container(self, pod: dict, grace: float, reason: str | None = None,
                              message: str | None = None) -> None:
        """SIGTERM to the container's main process, SIGKILL to all of it after `grace`."""
        uid = pod["metadata"]["uid"]
        box = self.containers.get(uid)
        if box is None or box.proc is None or box.proc.returncode is not None:
            return
        self._stopping.add(uid)
        started = pod["status"]["containerStatuses"][0]["state"].get("running", {}).get("startedAt", now_iso())
        with contextlib.suppress(ProcessLookupError):
            box.proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(box.proc.wait(), grace)
        except TimeoutError:
            pass
        await asyncio.to_thread(procs.kill_instance, box.marker)
        code = await box.proc.wait()
        self._stopping.discard(uid)
        self._terminated(pod, box, code, started, reason, message)

    async def lose_node(self, node: str) -> None:
        """The node vanishes with no shutdown at all (a VM pulled, a kernel panic): its processes
        die at once and PodGC deletes its pods. Nobody hears a notice; no exit status is written."""
        for pod in self.pods_on(node):
            box = self.containers.pop(pod["metadata"]["uid"], None)
            if box is not None:
                self._stopping.add(pod["metadata"]["uid"])
                await asyncio.to_thread(procs.kill_instance, box.marker)
        self.nodes.pop(node, None)
        self._pod_gc(node)

    def _pod_gc(self, node: str) -> None:
        for pod in self.pods_on(node):
            self._condition(pod, "DisruptionTarget", "True", "DeletionByPodGC", "PodGC: node no longer exists")
            del self.pods[(pod["metadata"]["namespace"], pod["metadata"]["name"])]
            self._pod_event("DELETED", pod)
            self._collect(pod)

    async def reclaim_node(self, node: str) -> None:
        """The cloud takes the node back: kubelet's graceful node shutdown, then the node is gone."""
        self.nodes[node]["status"]["conditions"] = [{"type": "Ready", "status": "False", "reason": "KubeletNotReady",
                                                     "message": "node is shutting down"}]
        victims = [p for p in self.pods_on(node) if p["status"]["phase"] in ("Pending", "Running")]
        for pod in victims:
            self._condition(pod, "DisruptionTarget", "True", "TerminationByKubelet", SHUTDOWN_MESSAGE)
            self._pod_event("MODIFIED", pod)
        await asyncio.gather(*(self._stop_container(
            p, min(p["spec"]["terminationGracePeriodSeconds"], self.shutdown_grace_s), "Terminated",
            SHUTDOWN_MESSAGE) for p in victims))
        for pod in victims:
            if pod["status"]["phase"] == "Pending":
                pod["status"].update(phase="Failed", reason="Terminated", message=SHUTDOWN_MESSAGE)
                self._pod_event("MODIFIED", pod)
        del self.nodes[node]
        if self.pod_gc:  # PodGC: pods bound to a node that no longer exists are deleted
            self._pod_gc(node)

    async def stop(self) -> None:
        for box in list(self.containers.values()):
            await asyncio.to_thread(procs.kill_instance, box.marker)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


class ApiError(Exception):
    def __init__(self, code: int, reason: str, message: str, **details: Any) -> None:
        super().__init__(message)
        self.code, self.reason, self.message, self.details = code, reason, message, details

    def response(self) -> web.Response:
        return status(self.code, self.reason, self.message, **self.details)


class FakeApiServer:
    """The HTTP face of a `FakeCluster`, on 127.0.0.1 in a thread of its own, with a kubeconfig.

        with FakeApiServer(tmp_path, env) as api:
            os.environ["KUBECONFIG"] = str(api.kubeconfig)
            api.call(api.cluster.reclaim_node(node))
    """

    def __init__(self, root: Path, env: dict[str, str] | None = None, **cluster: Any) -> None:
        self.root = Path(root)
        self.env = dict(env or os.environ)
        self.cluster_args = cluster
        self.kubeconfig = self.root / "kubeconfig"
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True, name="fake-kube-api")

    def call(self, coro: Any, timeout: float = 120) -> Any:
        future: Future[Any] = asyncio.run_coroutine_threadsafe(coro, self._loop)
        return future.result(timeout=timeout)

    def do(self, fn: Any, *args: Any) -> Any:
        """Run a plain function on the cluster's loop (its state is not thread-safe)."""

        async def run() -> Any:
            return fn(*args)

        return self.call(run())

    def __enter__(self) -> FakeApiServer:
        self.root.mkdir(parents=True, exist_ok=True)
        self._thread.start()
        self.url = self.call(self._start())
        self.kubeconfig.write_text(json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": "fake",
            "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
            "users": [{"name": "spotrun", "user": {"token": self.cluster.token}}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "spotrun", "namespace": "spotrun"}}],
        }))
        return self

    async def _start(self) -> str:
        self.cluster = FakeCluster(self.root / "cluster", self.env, **self.cluster_args)
        app = web.Application(middlewares=[self._auth])
        core = "/api/v1/namespaces/{ns}"
        app.router.add_get(f"{core}/pods", self.list_pods)
        app.router.add_post(f"{core}/pods", self.create_pod)
        app.router.add_get(f"{core}/pods/{{name}}", self.get_pod)
        app.router.add_delete(f"{core}/pods/{{name}}", self.delete_pod)
        app.router.add_get(f"{core}/pods/{{name}}/log", self.pod_log)
        app.router.add_post(f"{core}/pods/{{name}}/eviction", self.evict)
        app.router.add_post(f"{core}/secrets", self.create_secret)
        app.router.add_get(f"{core}/secrets", self.list_secrets)
        app.router.add_get(f"{core}/secrets/{{name}}", self.get_secret)
        app.router.add_put(f"{core}/secrets/{{name}}", self.replace_secret)
        app.router.add_delete(f"{core}/secrets/{{name}}", self.delete_secret)
        app.router.add_get("/api/v1/nodes", self.list_nodes)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self._scheduler = asyncio.ensure_future(self.cluster.run())
        return f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"  # type: ignore[union-attr]

    @web.middleware
    async def _auth(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if request.headers.get("Authorization") != f"Bearer {self.cluster.token}":
            return status(401, "Unauthorized", "Unauthorized")
        ns = request.match_info.get("ns")
        if ns is not None and ns not in self.cluster.namespaces:
            return status(404, "NotFound", f'namespaces "{ns}" not found', name=ns, kind="namespaces")
        resource = request.path.split("/")[5] if ns else "nodes"
        sub = request.path.split("/")[7] if ns and len(request.path.split("/")) > 7 else ""
        verb = {"GET": "get" if request.match_info.get("name") else "list", "POST": "create", "PUT": "update",
                "DELETE": "delete"}[request.method]
        if verb == "list" and request.query.get("watch", "").lower() in ("true", "1"):
            verb = "watch"
        what = f"{verb} {resource}{'/' + sub if sub else ''}"
        self.cluster.requests[what] += 1
        self.cluster.history.append((time.time(), what, request.match_info.get("name", "")))
        try:
            return await handler(request)
        except ApiError as exc:
            return exc.response()

    # --- handlers ----------------------------------------------------------------------------

    async def list_pods(self, request: web.Request) -> web.StreamResponse:
        ns, query = request.match_info["ns"], request.query
        selected = [p for (n, _), p in sorted(self.cluster.pods.items()) if n == ns
                    and matches_selector(p["metadata"].get("labels") or {}, query.get("labelSelector"))]
        if query.get("watch", "").lower() in ("true", "1"):
            return await self._watch(request, ns, int(query.get("resourceVersion") or 0))
        start = int(base64.urlsafe_b64decode(query["continue"]).decode()) if query.get("continue") else 0
        limit = int(query.get("limit") or 0) or len(selected) or 1
        page = selected[start:start + limit]
        meta: dict[str, Any] = {"resourceVersion": str(self.cluster.rv)}
        if start + limit < len(selected):
            meta["continue"] = base64.urlsafe_b64encode(str(start + limit).encode()).decode()
            meta["remainingItemCount"] = len(selected) - start - limit
        return web.json_response({"kind": "PodList", "apiVersion": "v1", "metadata": meta, "items": page})

    async def _watch(self, request: web.Request, ns: str, since: int) -> web.StreamResponse:
        """Events after `since`, one JSON object a line; 410 Gone when `since` is older than kept."""
        selector = request.query.get("labelSelector")
        deadline = time.monotonic() + float(request.query.get("timeoutSeconds") or 30)
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        oldest = self.cluster.events[0][0] if self.cluster.events else self.cluster.rv + 1
        if since and since < oldest - 1:
            gone = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "reason": "Expired",
                    "message": f"too old resource version: {since} ({oldest - 1})", "code": 410}
            await response.write(json.dumps({"type": "ERROR", "object": gone}).encode() + b"\n")
            return response
        sent = since or self.cluster.rv
        while time.monotonic() < deadline:
            for rv, kind, pod in [e for e in self.cluster.events if e[0] > sent]:
                sent = rv
                if pod["metadata"]["namespace"] == ns and matches_selector(pod["metadata"].get("labels") or {}, selector):
                    await response.write(json.dumps({"type": kind, "object": pod}).encode() + b"\n")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.cluster.changed.wait(), max(0.0, deadline - time.monotonic()))
        return response

    async def create_pod(self, request: web.Request) -> web.Response:
        code, pod = self.cluster.create_pod(request.match_info["ns"], await request.json())
        return web.json_response(pod, status=code)

    async def get_pod(self, request: web.Request) -> web.Response:
        return web.json_response(self.cluster.get_pod(request.match_info["ns"], request.match_info["name"]))

    async def delete_pod(self, request: web.Request) -> web.Response:
        return web.json_response(self.cluster.delete_pod(request.match_info["ns"], request.match_info["name"]))

    async def evict(self, request: web.Request) -> web.Response:
        """The Eviction API, as a drain (kubectl drain, Karpenter, the termination handler) uses it."""
        ns, name = request.match_info["ns"], request.match_info["name"]
        self.cluster.delete_pod(ns, name, disruption={"reason": "EvictionByEvictionAPI", "message": "Eviction API: evicting"})
        return web.json_response({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201},
                                 status=201)

    async def pod_log(self, request: web.Request) -> web.Response:
        pod = self.cluster.get_pod(request.match_info["ns"], request.match_info["name"])
        box_log = self.cluster.root / "pods" / pod["metadata"]["uid"] / "container.log"
        if not box_log.exists():
            waiting = ((pod["status"].get("containerStatuses") or [{}])[0].get("state") or {}).get("waiting") or {}
            raise ApiError(400, "BadRequest", f'container "{pod["spec"]["containers"][0]["name"]}" in pod '
                           f'"{pod["metadata"]["name"]}" is waiting to start: {waiting.get("reason", "ContainerCreating")}')
        data = box_log.read_bytes()
        if request.query.get("tailLines"):
            data = b"".join(data.splitlines(keepends=True)[-int(request.query["tailLines"]):])
        if request.query.get("limitBytes"):
            data = data[:int(request.query["limitBytes"])]
        return web.Response(body=data, content_type="text/plain")

    async def create_secret(self, request: web.Request) -> web.Response:
        code, secret = self.cluster.put_secret(request.match_info["ns"], await request.json())
        return web.json_response(secret, status=code)

    async def replace_secret(self, request: web.Request) -> web.Response:
        code, secret = self.cluster.put_secret(request.match_info["ns"], await request.json(), replace=request.match_info["name"])
        return web.json_response(secret, status=code)

    async def list_secrets(self, request: web.Request) -> web.Response:
        ns, selector = request.match_info["ns"], request.query.get("labelSelector")
        items = [v for (n, _), v in sorted(self.cluster.secrets.items())
                 if n == ns and matches_selector(v["metadata"].get("labels") or {}, selector)]
        return web.json_response({"kind": "SecretList", "apiVersion": "v1",
                                  "metadata": {"resourceVersion": str(self.cluster.rv)}, "items": items})

    async def get_secret(self, request: web.Request) -> web.Response:
        key = (request.match_info["ns"], request.match_info["name"])
        if key not in self.cluster.secrets:
            raise ApiError(404, "NotFound", f'secrets "{key[1]}" not found', name=key[1], kind="secrets")
        return web.json_response(self.cluster.secrets[key])

    async def delete_secret(self, request: web.Request) -> web.Response:
        key = (request.match_info["ns"], request.match_info["name"])
        if self.cluster.secrets.pop(key, None) is None:
            raise ApiError(404, "NotFound", f'secrets "{key[1]}" not found', name=key[1], kind="secrets")
        return web.json_response({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"})

    async def list_nodes(self, request: web.Request) -> web.Response:
        return web.json_response({"kind": "NodeList", "apiVersion": "v1", "metadata": {"resourceVersion": str(self.cluster.rv)},
                                  "items": list(self.cluster.nodes.values())})

    def __exit__(self, *exc: object) -> None:
        async def stop() -> None:
            self._scheduler.cancel()
            await self.cluster.stop()
            await self._runner.cleanup()

        with contextlib.suppress(Exception):
            self.call(stop(), timeout=60)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)


__all__ = ["FakeApiServer", "FakeCluster", "Pool"]
