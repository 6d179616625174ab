"""The Kubernetes provider's own settings, apart from what each job asks for (`kubernetes:`).

From the environment, so a controller needs no file: `SPOTRUN_KUBERNETES_STORE` (required: a
store both the controller and the pods reach, `s3://`, `gs://`, `az://`; status records and the
default checkpoint store), `SPOTRUN_KUBERNETES_CONTEXT` (else the kubeconfig's current context,
or the in-cluster service account), `SPOTRUN_KUBERNETES_NAMESPACE` (else the context's, else
`default`), `SPOTRUN_KUBERNETES_IMAGE` (the default image; it must have spotrun),
`SPOTRUN_KUBERNETES_AGENT` (the command that is spotrun in the image, default `spotrun`) and
`SPOTRUN_KUBERNETES_CLUSTER` (how spot nodes are labelled: eks, karpenter, gke, aks or none).
The kubeconfig is the usual one (`KUBECONFIG`, `~/.kube/config`); spotrun never copies it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

# How each kind of cluster tells spot nodes from on-demand ones (docs/kubernetes.md):
# (label, spot value, on-demand value or None when on-demand nodes lack the label, spot taint).
CLUSTERS: dict[str, tuple[str, str, str | None, bool]] = {
    "eks": ("eks.amazonaws.com/capacityType", "SPOT", "ON_DEMAND", False),
    "karpenter": ("karpenter.sh/capacity-type", "spot", "on-demand", False),
    "gke": ("cloud.google.com/gke-spot", "true", None, True),
    "aks": ("kubernetes.azure.com/scalesetpriority", "spot", None, True),
}
CLUSTER_KINDS = (*CLUSTERS, "none")


@dataclass(frozen=True)
class KubeConfig:
    store: str
    context: str | None = None
    namespace: str | None = None  # None: the context's namespace, else "default"
    image: str | None = None
    agent: str = "spotrun"
    cluster: str = "none"
    boot_timeout_s: float = 900.0  # no first heartbeat by then (image pull included): never booted
    stale_after_s: float = 90.0  # heartbeat this old: the pod is lost
    schedule_timeout_s: float = 300.0  # unschedulable this long: no capacity, the launch is refused
    pull_timeout_s: float = 120.0  # image / config errors this long after creation: the user's error
    kubeconfig: str | None = None  # None: KUBECONFIG / ~/.kube/config, or in-cluster

    @classmethod
    def from_env(cls) -> KubeConfig:
        env = os.environ.get
        store = env("SPOTRUN_KUBERNETES_STORE", "")
        if "://" not in store:
            raise ValueError("the kubernetes provider needs SPOTRUN_KUBERNETES_STORE=s3://bucket/prefix (or gs://, az://): "
                             "a store its pods can read and write; see docs/kubernetes.md")
        cluster = env("SPOTRUN_KUBERNETES_CLUSTER") or "none"
        if cluster not in CLUSTER_KINDS:
            raise ValueError(f"SPOTRUN_KUBERNETES_CLUSTER={cluster!r}: use one of {', '.join(CLUSTER_KINDS)}")
        return cls(
            store=store, context=env("SPOTRUN_KUBERNETES_CONTEXT") or None,
            namespace=env("SPOTRUN_KUBERNETES_NAMESPACE") or None, image=env("SPOTRUN_KUBERNETES_IMAGE") or None,
            agent=env("SPOTRUN_KUBERNETES_AGENT") or cls.agent, cluster=cluster,
            # Read now: the client reads KUBECONFIG once, when it is first imported.
            kubeconfig=env("KUBECONFIG") or None,
        )
