"""The API server's answers, mapped once: which mean "fix this" (one line), which are retried.

A request that can never succeed (no such namespace, no permission, an invalid manifest, no
credentials) becomes `ValueError` with what to do, which fails the job at once. Everything else
(the API server unreachable, a 5xx, throttling) stays an exception the controller retries.
"""

from __future__ import annotations

import json

RBAC = "apply the Role in docs/kubernetes.md (pods: create, get, list, delete; pods/log: get; secrets: create, update, list, delete)"


def _said(exc: object) -> str:
    body = getattr(exc, "body", None)
    try:
        return str(json.loads(body).get("message") or "").strip()
    except (TypeError, ValueError, AttributeError):
        return str(getattr(exc, "reason", "") or "")


def translate(exc: Exception, namespace: str) -> Exception:
    """The exception the controller should see for a failed API call in `namespace`."""
    from kubernetes.client.exceptions import ApiException
    from kubernetes.config.config_exception import ConfigException

    if isinstance(exc, ConfigException):
        return ValueError(f"no usable kubeconfig ({exc}): set KUBECONFIG or SPOTRUN_KUBERNETES_CONTEXT, "
                          "or run the controller in a pod with a service account")
    if not isinstance(exc, ApiException):
        return exc
    said = _said(exc)
    if exc.status == 401:
        return ValueError(f"the Kubernetes API refused the credentials (401: {said}): refresh the kubeconfig's token")
    if exc.status == 403:
        return ValueError(f"the controller may not do this in namespace {namespace!r} (403: {said}): {RBAC}")
    if exc.status == 404 and "namespaces" in said and "not found" in said:
        return ValueError(f"namespace {namespace!r} does not exist: create it or set kubernetes.namespace")
    if exc.status in (400, 422):
        return ValueError(f"the pod was refused as invalid ({exc.status}: {said}): check the job's kubernetes: section")
    return exc


def status_of(exc: Exception) -> int | None:
    return getattr(exc, "status", None)
