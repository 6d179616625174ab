"""The Kubernetes provider on the fake cluster (tests/providers/kubernetes/fakeapi.py): how fast a
node reclaim is replaced, and how many API requests a reconciler pass costs as the fleet grows.

1. Recovery: a job runs in a pod on a spot node; the node is reclaimed as kubelet's graceful
   node shutdown does it (DisruptionTarget, SIGTERM, the grace period), the agent saves and exits
   75. Timed from the shutdown's start to the replacement pod's creation at the API server.
   Baseline in the same run: the node lost with no word at all (processes killed, PodGC deletes
   the pod), so only the pod's absence tells. Target: <= 2 s. Anchor: SkyPilot's managed jobs poll
   every 15 s.
2. Scale: N jobs running (pods without processes, so only the control plane is measured); the API
   requests of each steady reconciler pass, counted at the fake API server. Baseline: N = 1.

    .venv/bin/python benchmarks/k8s_recovery.py [--reclaims 5] [--jobs 1 100] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # the fake cluster lives with the tests

INTERVAL_S = 1.0  # the controller's default pass interval
GRACE_S = 3  # the pods' terminationGracePeriodSeconds (notice.lead_time)


def _env(api, root: Path) -> None:
    os.environ.update({
        "KUBECONFIG": str(api.kubeconfig), "SPOTRUN_KUBERNETES_STORE": f"file://{root / 'store'}",
        "SPOTRUN_KUBERNETES_IMAGE": "python:3.12-slim", "SPOTRUN_KUBERNETES_AGENT": f"{sys.executable} -m spotrun",
        "SPOTRUN_KUBERNETES_CLUSTER": "karpenter", "SPOTRUN_HOME": str(root / "home"),
    })
    os.environ.pop("SPOTRUN_DB_URL", None)


def _cluster(root: Path, **args):
    from tests.providers.kubernetes.conftest import pools
    from tests.providers.kubernetes.fakeapi import FakeApiServer

    env = {k: v for k, v in os.environ.items() if not k.startswith(("SPOTRUN_", "KUBE"))}
    return FakeApiServer(root / "kube", env, pools=pools(), **args)


async def _wait(predicate, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        await asyncio.sleep(0.01)
    raise TimeoutError("benchmark condition not met")


async def _recovery(root: Path, reclaims: int, silent: bool) -> list[float]:
    from spotrun.controller import api as jobs
    from spotrun.controller import repo
    from spotrun.controller.db import Database
    from spotrun.controller.reconciler import Reconciler
    from spotrun.providers.kubernetes import KubeConfig, KubernetesProvider

    out = []
    with _cluster(root) as api:
        _env(api, root)
        db = Database()
        reconciler = Reconciler(db, {"kubernetes": KubernetesProvider(KubeConfig.from_env())}, interval=INTERVAL_S)
        stop = asyncio.Event()
        task = asyncio.create_task(reconciler.run(stop))
        job = jobs.launch({"run": "sleep 3600", "resources": {"cloud": "kubernetes"}, "notice": {"lead_time": f"{GRACE_S}s"},
                           "recovery": {"max_reclaims": reclaims + 1}}, start_controller=False).id

        def created() -> list[tuple[float, str]]:
            return api.do(lambda: [(t, n) for t, what, n in api.cluster.history if what == "create pods"])

        def running(n: int) -> str | None:
            pods = api.do(lambda: [p for p in api.cluster.pods.values() if p["status"]["phase"] == "Running"
                                   and p["metadata"]["labels"]["spotrun.dev/attempt"] == str(n)])
            log = pods and (api.cluster.root / "pods" / pods[0]["metadata"]["uid"] / "container.log")
            return pods[0]["spec"]["nodeName"] if log and log.exists() and "watching" in log.read_text() else None

        try:
            for n in range(reclaims):
                node = await _wait(lambda: running(n + 1))
                before = len(created())
                start = time.time()
                api.call(api.cluster.lose_node(node) if silent else _start(api.cluster.reclaim_node(node)))
                await _wait(lambda: len(created()) > before)
                out.append(created()[before][0] - start)
                await _wait(lambda: repo.get_view(db, job)["reclaims"] == n + 1)
        finally:
            repo.request_cancel(db, job)
            await _wait(lambda: repo.get_view(db, job)["status"] == "CANCELLED")
            stop.set()
            await task
            db.close()
    return out


async def _start(coro) -> None:
    """Begin the node's shutdown and return: the timing starts as kubelet starts."""
    asyncio.ensure_future(coro)


async def _scale(root: Path, n_jobs: int, passes: int) -> dict[str, float]:
    from spotrun.controller import api as jobs
    from spotrun.controller import repo
    from spotrun.controller.db import Database
    from spotrun.controller.reconciler import Reconciler
    from spotrun.providers.kubernetes import KubeConfig, KubernetesProvider

    with _cluster(root) as api:
        api.cluster.run_containers = False
        _env(api, root)
        db = Database()
        reconciler = Reconciler(db, {"kubernetes": KubernetesProvider(KubeConfig.from_env())}, interval=INTERVAL_S)
        ids = [jobs.launch({"run": "sleep 3600", "resources": {"cloud": "kubernetes"}}, start_controller=False).id
               for _ in range(n_jobs)]
        stop = asyncio.Event()
        task = asyncio.create_task(reconciler.run(stop))
        try:
            await _wait(lambda: api.do(lambda: len(api.cluster.pods)) == n_jobs, timeout=300)
            await _wait(lambda: not reconciler._inflight, timeout=300)
            start_pass, start = reconciler.passes, dict(api.cluster.requests)
            t0 = time.monotonic()
            await _wait(lambda: reconciler.passes >= start_pass + passes, timeout=300)
            elapsed = time.monotonic() - t0
            done = reconciler.passes - start_pass
            delta = {k: v - start.get(k, 0) for k, v in api.cluster.requests.items() if v - start.get(k, 0)}
        finally:
            stop.set()
            await task
            for j in ids:
                repo.request_cancel(db, j)
            db.close()
    return {"jobs": n_jobs, "passes": done, "requests_per_pass": sum(delta.values()) / done,
            "by_kind": {k: v / done for k, v in sorted(delta.items())}, "pass_s": elapsed / done}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reclaims", type=int, default=5)
    parser.add_argument("--jobs", type=int, nargs="+", default=[1, 100])
    parser.add_argument("--passes", type=int, default=10)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        notice = asyncio.run(_recovery(root / "notice", args.reclaims, silent=False))
        silent = asyncio.run(_recovery(root / "silent", args.reclaims, silent=True))
        scale = [asyncio.run(_scale(root / f"scale-{n}", n, args.passes)) for n in args.jobs]
    result = {
        "recovery": {"graceful_shutdown_s": notice, "node_lost_s": silent,
                     "median_graceful_s": statistics.median(notice), "median_node_lost_s": statistics.median(silent)},
        "scale": scale,
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"node reclaim -> replacement pod created ({args.reclaims} reclaims, pass interval {INTERVAL_S:g}s, grace {GRACE_S}s)")
    print(f"  graceful node shutdown (agent exits 75): median {statistics.median(notice):.2f}s  max {max(notice):.2f}s  (target <= 2 s)")
    print(f"  baseline, node lost without a word:      median {statistics.median(silent):.2f}s  max {max(silent):.2f}s")
    base = scale[0]["requests_per_pass"]
    print("API requests per reconciler pass")
    for row in scale:
        kinds = ", ".join(f"{k} {v:.2f}" for k, v in row["by_kind"].items())
        print(f"  {row['jobs']:>5} jobs: {row['requests_per_pass']:.2f} per pass ({kinds}); "
              f"{row['requests_per_pass'] / base:.2f}x the 1-job baseline; pass {row['pass_s'] * 1000:.0f} ms")


if __name__ == "__main__":
    main()
