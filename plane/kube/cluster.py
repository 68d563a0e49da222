"""The connection to the API server: loading a client, the kinds the plane applies, API errors.

The ``kubernetes`` client is imported inside these functions, never at module level, so that
importing :mod:`plane.kube` stays cheap for the CLI and the UIs. Every I/O function of the
package accepts an ``api_client`` (a ``kubernetes.client.ApiClient``): :func:`_client` returns
it as is, which is the seam the tests use to point the package at a recording HTTP server.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

from plane.kube.defaults import KubeError


@dataclass(frozen=True)
class _Kind:
    api: str
    snake: str
    namespaced: bool


_KINDS: dict[str, _Kind] = {
    "Namespace": _Kind("CoreV1Api", "namespace", False),
    "ServiceAccount": _Kind("CoreV1Api", "service_account", True),
    "ConfigMap": _Kind("CoreV1Api", "config_map", True),
    "Secret": _Kind("CoreV1Api", "secret", True),
    "Service": _Kind("CoreV1Api", "service", True),
    "PersistentVolumeClaim": _Kind("CoreV1Api", "persistent_volume_claim", True),
    "StatefulSet": _Kind("AppsV1Api", "stateful_set", True),
    "Deployment": _Kind("AppsV1Api", "deployment", True),
    "PodDisruptionBudget": _Kind("PolicyV1Api", "pod_disruption_budget", True),
    "NetworkPolicy": _Kind("NetworkingV1Api", "network_policy", True),
    "Job": _Kind("BatchV1Api", "job", True),
    # the KServe controller's rights (plane.kube.controller_deploy)
    "Role": _Kind("RbacAuthorizationV1Api", "role", True),
    "RoleBinding": _Kind("RbacAuthorizationV1Api", "role_binding", True),
    "ClusterRole": _Kind("RbacAuthorizationV1Api", "cluster_role", False),
    "ClusterRoleBinding": _Kind("RbacAuthorizationV1Api", "cluster_role_binding", False),
}


def _client(context: str | None, api_client: Any | None) -> Any:
    """``api_client`` when given, else one from kubeconfig (``context``) or the in-cluster config."""
    if api_client is not None:
        return api_client
    from kubernetes import client, config

    try:
        # KUBECONFIG is read now, not when the kubernetes package was first imported.
        return config.new_client_from_config(config_file=os.environ.get("KUBECONFIG") or None,
                                             context=context)
    except Exception as exc:  # noqa: BLE001 - ConfigException, missing file, bad YAML: same advice
        if context is None:
            try:
                config.load_incluster_config()
                return client.ApiClient()
            except config.ConfigException:
                pass
        where = f"context {context!r}" if context else "the current context"
        raise KubeError(
            f"cannot load a Kubernetes configuration for {where}: {str(exc).rstrip('.')}. "
            "Check KUBECONFIG or ~/.kube/config, or name a context with --context"
        ) from exc


def _api(api_client: Any, kind: str) -> tuple[Any, _Kind]:
    from kubernetes import client

    info = _KINDS.get(kind)
    if info is None:
        raise KubeError(f"mesh-plane does not know how to apply a {kind}")
    return getattr(client, info.api)(api_client), info


def _describe_api_error(exc: BaseException) -> str:
    status = getattr(exc, "status", None)
    body = getattr(exc, "body", None)
    message = ""
    if body:
        try:
            message = json.loads(body).get("message", "")
        except (ValueError, AttributeError):
            message = ""
    if not message:
        message = getattr(exc, "reason", None) or str(exc)
    if status == 401:
        return f"unauthorised (401): log in again or check the context's credentials ({message})"
    if status == 403:
        return f"forbidden (403): your user may not do this ({message})"
    if status is None:
        return f"the API server did not answer: {exc}"
    return f"{status}: {message}"


def _api_exception_types() -> tuple[type[BaseException], ...]:
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import HTTPError

    return (ApiException, HTTPError, OSError)


def _read_json(resp: Any) -> dict[str, Any]:
    data = resp.data if hasattr(resp, "data") else resp.read()
    return json.loads(data or b"{}")
