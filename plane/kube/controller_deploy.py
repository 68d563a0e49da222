"""The KServe controller's objects: its ServiceAccount, RBAC and Deployment (``mesh controller``).

A Deployment of its own rather than a container in the pods' StatefulSet, so that the runtime
pods keep a ServiceAccount with no rights and no token (they never call the Kubernetes API),
and so the controller can be scaled to zero where modelmesh-serving still runs in the same
namespace (two controllers would fight over the same InferenceServices' status).

Its rights are what modelmesh-serving's PredictorReconciler asks for in its kubebuilder RBAC
markers (controllers/predictor_controller.go), narrowed to what this controller does: read
InferenceServices, Predictors and ServingRuntimes, patch their ``status``, read the two storage
Secrets by name; and, cluster-wide, read ClusterServingRuntimes (to resolve ``runtime:``).
"""

from __future__ import annotations

from typing import Any

from plane.kube.defaults import (
    CONFIG_MAP,
    CONTROLLER_NAME,
    CONTROLLER_SERVICE_ACCOUNT,
    ETCD_SECRET,
    MODELMESH_STORAGE_SECRET,
    RUN_AS_USER,
    STORAGE_SECRET,
)
from plane.kube.meta import _container_security, _labels, _meta, _pod_security, _selector
from plane.kube.tls import tls_mount, tls_volume

KSERVE_GROUP = "serving.kserve.io"


def cluster_role_name(namespace: str) -> str:
    """Cluster-scoped names must be unique across namespaces: one per installed plane."""
    return f"mesh-plane-controller-{namespace}"


def _rules() -> list[dict[str, Any]]:
    return [
        {"apiGroups": [KSERVE_GROUP], "resources": ["inferenceservices", "predictors", "servingruntimes"],
         "verbs": ["get", "list", "watch"]},
        {"apiGroups": [KSERVE_GROUP], "resources": ["inferenceservices/status", "predictors/status"],
         "verbs": ["get", "patch"]},
        {"apiGroups": [""], "resources": ["secrets"], "resourceNames": [MODELMESH_STORAGE_SECRET, STORAGE_SECRET],
         "verbs": ["get"]},
    ]


def controller_objects(namespace: str, image: str, *, tls_secret: str | None = None) -> list[dict[str, Any]]:
    """ServiceAccount, Role + RoleBinding, ClusterRole + ClusterRoleBinding, Deployment."""
    subject = [{"kind": "ServiceAccount", "name": CONTROLLER_SERVICE_ACCOUNT, "namespace": namespace}]
    container = {
        "name": "controller",
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "command": ["mesh", "controller", "--namespace", "$(POD_NAMESPACE)"],
        "env": [
            {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
            {"name": "HOME", "value": "/tmp"},
            {"name": "MESH_STATE_DIR", "value": "/tmp/mesh-state"},
        ],
        "envFrom": [{"configMapRef": {"name": CONFIG_MAP}}, {"secretRef": {"name": ETCD_SECRET}}],
        "resources": {"requests": {"cpu": "50m", "memory": "128Mi"}, "limits": {"memory": "512Mi"}},
        "securityContext": _container_security(),
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}, *([tls_mount()] if tls_secret else [])],
    }
    return [
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": _meta(CONTROLLER_SERVICE_ACCOUNT, namespace, "controller"),
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": _meta(CONTROLLER_NAME, namespace, "controller"),
            "rules": _rules(),
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": _meta(CONTROLLER_NAME, namespace, "controller"),
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": CONTROLLER_NAME},
            "subjects": subject,
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": _meta(cluster_role_name(namespace), None, "controller"),
            "rules": [{"apiGroups": [KSERVE_GROUP], "resources": ["clusterservingruntimes"],
                       "verbs": ["get", "list", "watch"]}],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": _meta(cluster_role_name(namespace), None, "controller"),
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                        "name": cluster_role_name(namespace)},
            "subjects": subject,
        },
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": _meta(CONTROLLER_NAME, namespace, "controller"),
            "spec": {
                "replicas": 1,
                # Never two at once: both would reconcile (harmlessly, but twice) during a rollout.
                "strategy": {"type": "Recreate"},
                "selector": {"matchLabels": _selector("controller")},
                "template": {
                    "metadata": {"labels": _labels("controller")},
                    "spec": {
                        "serviceAccountName": CONTROLLER_SERVICE_ACCOUNT,
                        # The one workload that calls the API server: it needs its token.
                        "automountServiceAccountToken": True,
                        "securityContext": _pod_security(RUN_AS_USER),
                        "containers": [container],
                        "volumes": [{"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}},
                                    *([tls_volume(tls_secret)] if tls_secret else [])],
                    },
                },
            },
        },
    ]
