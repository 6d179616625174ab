"""The Kubernetes provider: one pod per attempt on spot node pools (docs/kubernetes.md)."""

from spotrun.providers.kubernetes.config import KubeConfig
from spotrun.providers.kubernetes.provider import KubernetesProvider

__all__ = ["KubeConfig", "KubernetesProvider"]
