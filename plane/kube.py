"""Kubernetes installation: render the plane's manifests, apply them, wait, uninstall.

Rendering is pure (plain dicts in, plain dicts out) so it can be validated against the
Kubernetes schemas without a cluster; ``manifests/base`` and ``manifests/overlays/quickstart``
are the output of :func:`render_manifests` and :func:`render_quickstart` with their defaults
(``python -m plane.kube write-manifests manifests`` regenerates them; a test keeps them in step).

The I/O functions talk to the API server through the ``kubernetes`` client with server-side
apply (field manager ``mesh-plane``). The client is imported inside the functions that need
it, so importing this module stays cheap for the CLI and the UIs. Every I/O function accepts
an ``api_client`` (a ``kubernetes.client.ApiClient``): the seam the tests use to point it at a
recording HTTP server.

Secrets: rendered ``Secret`` objects carry the storage configuration (SPEC section 4) in
``stringData``. :func:`to_yaml` masks their values unless asked not to, and no function here
logs or reports a secret value.

This module also has a small ``__main__`` for the containers of the plane itself:
``sync-storage`` (an init container of every pod: copies the mounted storage Secret into the
registry) and ``publish-demo`` (the quickstart Job: uploads demo models to MinIO and
registers them).
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import pathlib
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import yaml

from plane.settings import MeshSettings, parse_size

__all__ = [
    "FIELD_MANAGER",
    "KUBERNETES_VERSION",
    "DEFAULT_NAMESPACE",
    "DEFAULT_IMAGE",
    "DEFAULT_PODS",
    "DEFAULT_CAPACITY_BYTES",
    "KubeError",
    "AppliedObject",
    "ApplyResult",
    "PodState",
    "RolloutResult",
    "UninstallResult",
    "Progress",
    "render_manifests",
    "render_quickstart",
    "render_install",
    "install",
    "InstallResult",
    "quickstart_storage_config",
    "memory_resources",
    "to_yaml",
    "mask_secrets",
    "load_storage_file",
    "normalise_storage_config",
    "apply",
    "wait_for_rollout",
    "uninstall",
    "object_ref",
    "sync_storage_dir",
    "publish_demo",
    "write_manifests",
]

Progress = Callable[[str, int, int], None]

# -- names and defaults ----------------------------------------------------------------------------------

PROJECT = "mesh-plane"
FIELD_MANAGER = "mesh-plane"
#: The Kubernetes version the rendered manifests are validated against (kubernetes-validate's newest).
KUBERNETES_VERSION = "1.37"
DEFAULT_NAMESPACE = "mesh-plane"
DEFAULT_IMAGE = "mesh-plane:0.1.0"
DEFAULT_PODS = 3
DEFAULT_CAPACITY_BYTES = 256 * 1024**2
ETCD_IMAGE = "gcr.io/etcd-development/etcd:v3.5.17"
MINIO_IMAGE = "quay.io/minio/minio:RELEASE.2025-04-22T22-12-26Z"

POD_STATEFULSET = "mesh-pods"
POD_HEADLESS_SERVICE = "mesh-pods-headless"
INFERENCE_SERVICE = "mesh-inference"
ETCD_NAME = "mesh-etcd"
ETCD_HEADLESS_SERVICE = "mesh-etcd-headless"
CONFIG_MAP = "mesh-config"
ETCD_SECRET = "mesh-etcd-connection"
STORAGE_SECRET = "mesh-storage-config"
SERVICE_ACCOUNT = "mesh-pod"
MINIO_NAME = "minio"
MINIO_SECRET = "minio-credentials"
DEMO_JOB = "mesh-demo-models"

GRPC_PORT = 8033
METRICS_PORT = 2112
ETCD_CLIENT_PORT = 2379
ETCD_PEER_PORT = 2380
ETCD_METRICS_PORT = 2381
STATE_DIR = "/var/lib/mesh"
STORAGE_MOUNT = "/etc/mesh/storage-config"
RUN_AS_USER = 10001

# Memory: the model cache plus what Python, gRPC and onnxruntime need besides the models.
MEMORY_OVERHEAD_BYTES = 256 * 1024**2
# The limit leaves headroom over the request: a model's real size is only known after its load.
MEMORY_LIMIT_HEADROOM_BYTES = 256 * 1024**2
MEMORY_LIMIT_HEADROOM_FRACTION = 0.25
# A pod drains (moves its models to peers) on SIGTERM for up to ~60 s; give it room to finish.
DRAIN_TIMEOUT_S = 60
TERMINATION_GRACE_PERIOD_S = 90
ETCD_STORAGE = "1Gi"
ETCD_QUOTA_BYTES = 2 * 1024**3
STATE_DIR_HEADROOM_BYTES = 512 * 1024**2
# Namespaces an uninstall never deletes, whatever their labels say.
PROTECTED_NAMESPACES = frozenset({"default", "kube-system", "kube-public", "kube-node-lease"})

ROLLOUT_TIMEOUT_S = 600.0
ROLLOUT_POLL_S = 2.0
REQUEST_TIMEOUT_S = 30.0
MASK = "****"

_LABEL_PART_OF = "app.kubernetes.io/part-of"
_LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
_STORAGE_CHECKSUM = "mesh-plane/storage-config-checksum"


class KubeError(Exception):
    """Talking to the cluster failed; the message says what happened and what to try."""


# -- pure rendering --------------------------------------------------------------------------------------


def _labels(component: str, name: str = PROJECT) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": name,
        "app.kubernetes.io/component": component,
        _LABEL_PART_OF: PROJECT,
        _LABEL_MANAGED_BY: FIELD_MANAGER,
    }


def _selector(component: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": PROJECT, "app.kubernetes.io/component": component}


def _meta(name: str, namespace: str | None, component: str, **extra: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if namespace is not None:
        meta["namespace"] = namespace
    meta["labels"] = _labels(component)
    meta.update(extra)
    return meta


def _mi(num_bytes: int) -> str:
    """A memory quantity in whole MiB, rounded up (the API server keeps it as written)."""
    return f"{math.ceil(num_bytes / 1024**2)}Mi"


def memory_resources(capacity_bytes: int) -> tuple[str, str]:
    """(request, limit) memory quantities for a pod whose model cache holds ``capacity_bytes``."""
    request = capacity_bytes + MEMORY_OVERHEAD_BYTES
    headroom = max(MEMORY_LIMIT_HEADROOM_BYTES, int(capacity_bytes * MEMORY_LIMIT_HEADROOM_FRACTION))
    return _mi(request), _mi(request + headroom)


def _container_security() -> dict[str, Any]:
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
    }


def _pod_security(uid: int) -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "runAsUser": uid,
        "runAsGroup": uid,
        "fsGroup": uid,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _storage_checksum(storage_config: dict[str, dict[str, Any]]) -> str:
    canonical = json.dumps(storage_config, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def _config_data(capacity_bytes: int, settings: dict[str, str] | None) -> dict[str, str]:
    defaults = MeshSettings.model_fields
    data = {
        "MESH_ETCD_PREFIX": str(defaults["etcd_prefix"].default),
        "MESH_CAPACITY": str(capacity_bytes),
        "MESH_HOST": "0.0.0.0",
        "MESH_GRPC_PORT": str(GRPC_PORT),
        "MESH_METRICS_PORT": str(METRICS_PORT),
        "MESH_STATE_DIR": STATE_DIR,
        "MESH_LOAD_TIMEOUT_S": str(defaults["load_timeout_s"].default),
        "MESH_MAX_CONCURRENT_LOADS": str(defaults["max_concurrent_loads"].default),
        "MESH_DISK_CACHE_BYTES": str(defaults["disk_cache_bytes"].default),
        "MESH_MAX_MESSAGE_BYTES": str(defaults["max_message_bytes"].default),
    }
    for key, value in (settings or {}).items():
        name = key.upper() if key.upper().startswith("MESH_") else f"MESH_{key.upper()}"
        data[name] = str(value)
    return data


def _etcd_objects(namespace: str) -> list[dict[str, Any]]:
    peer_host = f"$(POD_NAME).{ETCD_HEADLESS_SERVICE}.$(POD_NAMESPACE).svc"
    ports = [
        {"name": "client", "port": ETCD_CLIENT_PORT, "targetPort": "client"},
        {"name": "peer", "port": ETCD_PEER_PORT, "targetPort": "peer"},
    ]
    container = {
        "name": "etcd",
        "image": ETCD_IMAGE,
        "imagePullPolicy": "IfNotPresent",
        "command": ["/usr/local/bin/etcd"],
        "args": [
            "--name=$(POD_NAME)",
            "--data-dir=/var/run/etcd/data",
            f"--listen-client-urls=http://0.0.0.0:{ETCD_CLIENT_PORT}",
            f"--advertise-client-urls=http://{peer_host}:{ETCD_CLIENT_PORT}",
            f"--listen-peer-urls=http://0.0.0.0:{ETCD_PEER_PORT}",
            f"--initial-advertise-peer-urls=http://{peer_host}:{ETCD_PEER_PORT}",
            f"--initial-cluster=$(POD_NAME)=http://{peer_host}:{ETCD_PEER_PORT}",
            "--initial-cluster-state=new",
            f"--listen-metrics-urls=http://0.0.0.0:{ETCD_METRICS_PORT}",
            "--auto-compaction-mode=periodic",
            "--auto-compaction-retention=1h",
            f"--quota-backend-bytes={ETCD_QUOTA_BYTES}",
        ],
        "env": [
            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        ],
        "ports": [
            {"name": "client", "containerPort": ETCD_CLIENT_PORT, "protocol": "TCP"},
            {"name": "peer", "containerPort": ETCD_PEER_PORT, "protocol": "TCP"},
            {"name": "metrics", "containerPort": ETCD_METRICS_PORT, "protocol": "TCP"},
        ],
        "readinessProbe": {
            "httpGet": {"path": "/health", "port": "metrics"},
            "periodSeconds": 5,
            "timeoutSeconds": 3,
            "failureThreshold": 3,
        },
        "livenessProbe": {
            "tcpSocket": {"port": "client"},
            "initialDelaySeconds": 10,
            "periodSeconds": 15,
            "timeoutSeconds": 5,
            "failureThreshold": 4,
        },
        "resources": {
            "requests": {"cpu": "100m", "memory": "256Mi"},
            "limits": {"memory": "1Gi"},
        },
        "securityContext": _container_security(),
        "volumeMounts": [{"name": "data", "mountPath": "/var/run/etcd"}],
    }
    return [
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": _meta(ETCD_HEADLESS_SERVICE, namespace, "etcd"),
            "spec": {
                "clusterIP": "None",
                "publishNotReadyAddresses": True,  # peers must resolve before the member is ready
                "selector": _selector("etcd"),
                "ports": ports,
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": _meta(ETCD_NAME, namespace, "etcd"),
            "spec": {
                "type": "ClusterIP",
                "selector": _selector("etcd"),
                "ports": [ports[0]],
            },
        },
        {
            "apiVersion": "apps/v1",
            "kind": "StatefulSet",
            "metadata": _meta(ETCD_NAME, namespace, "etcd"),
            "spec": {
                "serviceName": ETCD_HEADLESS_SERVICE,
                "replicas": 1,
                "selector": {"matchLabels": _selector("etcd")},
                "template": {
                    "metadata": {"labels": _labels("etcd")},
                    "spec": {
                        "serviceAccountName": SERVICE_ACCOUNT,
                        "automountServiceAccountToken": False,
                        "securityContext": _pod_security(65532),
                        "terminationGracePeriodSeconds": 30,
                        "containers": [container],
                    },
                },
                "volumeClaimTemplates": [
                    {
                        "metadata": {"name": "data", "labels": _labels("etcd")},
                        "spec": {
                            "accessModes": ["ReadWriteOnce"],
                            "resources": {"requests": {"storage": ETCD_STORAGE}},
                        },
                    }
                ],
            },
        },
        {
            # Only the plane's own pods (and its jobs) reach etcd; `kubectl port-forward` still works.
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": _meta(ETCD_NAME, namespace, "etcd"),
            "spec": {
                "podSelector": {"matchLabels": _selector("etcd")},
                "policyTypes": ["Ingress"],
                "ingress": [
                    {
                        "from": [{"podSelector": {"matchLabels": {_LABEL_PART_OF: PROJECT}}}],
                        "ports": [
                            {"protocol": "TCP", "port": ETCD_CLIENT_PORT},
                            {"protocol": "TCP", "port": ETCD_PEER_PORT},
                            {"protocol": "TCP", "port": ETCD_METRICS_PORT},
                        ],
                    }
                ],
            },
        },
    ]


def _plane_env_from() -> list[dict[str, Any]]:
    return [{"configMapRef": {"name": CONFIG_MAP}}, {"secretRef": {"name": ETCD_SECRET}}]


def _pods_statefulset(
    namespace: str, pods: int, capacity_bytes: int, image: str, checksum: str | None,
    disk_cache_bytes: int,
) -> dict[str, Any]:
    mem_request, mem_limit = memory_resources(capacity_bytes)
    state_size = _mi(disk_cache_bytes + STATE_DIR_HEADROOM_BYTES)
    annotations = {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": str(METRICS_PORT),
        "prometheus.io/path": "/metrics",
    }
    if checksum:
        # A changed storage Secret rolls the pods, whose init container copies it to the registry.
        annotations[_STORAGE_CHECKSUM] = checksum

    def probe(what: str) -> list[str]:
        return ["mesh", "probe", what, "--timeout", "3"]

    pod = {
        "name": "pod",
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "command": ["mesh", "pod"],
        "env": [
            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
            {"name": "MESH_POD_ID", "value": "$(POD_NAME)"},
            {
                "name": "MESH_ADVERTISE_HOST",
                "value": f"$(POD_NAME).{POD_HEADLESS_SERVICE}.$(POD_NAMESPACE).svc",
            },
        ],
        "envFrom": _plane_env_from(),
        "ports": [
            {"name": "grpc", "containerPort": GRPC_PORT, "protocol": "TCP"},
            {"name": "metrics", "containerPort": METRICS_PORT, "protocol": "TCP"},
        ],
        # KServe V2 ServerLive/ServerReady are not grpc.health.v1, so kubelet's gRPC probe cannot
        # ask them; `mesh probe` does.
        "startupProbe": {
            "exec": {"command": probe("live")},
            "periodSeconds": 5,
            "timeoutSeconds": 5,
            "failureThreshold": 36,
        },
        "readinessProbe": {
            "exec": {"command": probe("ready")},
            "periodSeconds": 10,
            "timeoutSeconds": 5,
            "failureThreshold": 3,
        },
        "livenessProbe": {
            "exec": {"command": probe("live")},
            "periodSeconds": 20,
            "timeoutSeconds": 5,
            "failureThreshold": 3,
        },
        "resources": {
            "requests": {"cpu": "500m", "memory": mem_request, "ephemeral-storage": state_size},
            "limits": {"memory": mem_limit},
        },
        "securityContext": _container_security(),
        "volumeMounts": [
            {"name": "state", "mountPath": STATE_DIR},
            {"name": "tmp", "mountPath": "/tmp"},
        ],
    }
    sync = {
        "name": "storage-sync",
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "command": ["python", "-m", "plane.kube", "sync-storage", "--dir", STORAGE_MOUNT],
        "envFrom": _plane_env_from(),
        "resources": {"requests": {"cpu": "50m", "memory": "128Mi"}, "limits": {"memory": "256Mi"}},
        "securityContext": _container_security(),
        "volumeMounts": [
            {"name": "storage-config", "mountPath": STORAGE_MOUNT, "readOnly": True},
            {"name": "tmp", "mountPath": "/tmp"},
        ],
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": _meta(POD_STATEFULSET, namespace, "pod"),
        "spec": {
            "serviceName": POD_HEADLESS_SERVICE,
            "replicas": pods,
            # Pods do not depend on each other's start order: start and replace them in parallel.
            "podManagementPolicy": "Parallel",
            "updateStrategy": {"type": "RollingUpdate"},
            "selector": {"matchLabels": _selector("pod")},
            "template": {
                "metadata": {"labels": _labels("pod"), "annotations": annotations},
                "spec": {
                    "serviceAccountName": SERVICE_ACCOUNT,
                    "automountServiceAccountToken": False,
                    "terminationGracePeriodSeconds": TERMINATION_GRACE_PERIOD_S,
                    "securityContext": _pod_security(RUN_AS_USER),
                    "affinity": {
                        "podAntiAffinity": {
                            "preferredDuringSchedulingIgnoredDuringExecution": [
                                {
                                    "weight": 100,
                                    "podAffinityTerm": {
                                        "topologyKey": "kubernetes.io/hostname",
                                        "labelSelector": {"matchLabels": _selector("pod")},
                                    },
                                }
                            ]
                        }
                    },
                    "initContainers": [sync],
                    "containers": [pod],
                    "volumes": [
                        {"name": "state", "emptyDir": {"sizeLimit": state_size}},
                        {"name": "tmp", "emptyDir": {"sizeLimit": "256Mi"}},
                        {
                            "name": "storage-config",
                            # optional: a plane without a storage Secret still starts
                            "secret": {"secretName": STORAGE_SECRET, "optional": True},
                        },
                    ],
                },
            },
        },
    }


def render_manifests(
    *,
    namespace: str = DEFAULT_NAMESPACE,
    pods: int = DEFAULT_PODS,
    capacity_bytes: int = DEFAULT_CAPACITY_BYTES,
    image: str = DEFAULT_IMAGE,
    storage_config: dict[str, dict[str, Any]] | None = None,
    etcd_endpoint: str | None = None,
    etcd_username: str | None = None,
    etcd_password: str | None = None,
    settings: dict[str, str] | None = None,
) -> list[dict[str, Any]]:
    """The plane's objects, in the order they are applied.

    ``storage_config`` maps storage keys to SPEC section 4 documents; ``None`` renders no
    storage Secret (an existing one is left alone). ``etcd_endpoint`` points the plane at an
    etcd of yours instead of the bundled single-member StatefulSet. ``settings`` adds or
    overrides ``MESH_*`` variables in the ConfigMap.
    """
    if pods < 1:
        raise ValueError("pods must be at least 1")
    if capacity_bytes <= 0:
        raise ValueError("capacity must be a positive number of bytes")
    if not namespace:
        raise ValueError("namespace must not be empty")
    config = _config_data(capacity_bytes, settings)
    disk_cache_bytes = parse_size(config["MESH_DISK_CACHE_BYTES"])
    etcd_conn = {"MESH_ETCD": etcd_endpoint or f"{ETCD_NAME}:{ETCD_CLIENT_PORT}"}
    if etcd_username:
        etcd_conn["MESH_ETCD_USERNAME"] = etcd_username
    if etcd_password:
        etcd_conn["MESH_ETCD_PASSWORD"] = etcd_password
    objects: list[dict[str, Any]] = []
    if namespace not in PROTECTED_NAMESPACES:
        objects.append(
            {"apiVersion": "v1", "kind": "Namespace", "metadata": _meta(namespace, None, "namespace")}
        )
    objects.append(
        {
            # The pods never call the Kubernetes API: no Role, no token mounted.
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": _meta(SERVICE_ACCOUNT, namespace, "pod"),
            "automountServiceAccountToken": False,
        }
    )
    objects.append(
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": _meta(CONFIG_MAP, namespace, "config"),
         "data": config}
    )
    objects.append(
        {"apiVersion": "v1", "kind": "Secret", "metadata": _meta(ETCD_SECRET, namespace, "config"),
         "type": "Opaque", "stringData": etcd_conn}
    )
    checksum = None
    if storage_config is not None:
        docs = {key: normalise_storage_config(key, doc) for key, doc in storage_config.items()}
        checksum = _storage_checksum(docs)
        objects.append(
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": _meta(STORAGE_SECRET, namespace, "storage"),
                "type": "Opaque",
                "stringData": {k: json.dumps(v, sort_keys=True) for k, v in sorted(docs.items())},
            }
        )
    if not etcd_endpoint:
        objects.extend(_etcd_objects(namespace))
    grpc_port = {"name": "grpc", "port": GRPC_PORT, "targetPort": "grpc", "protocol": "TCP"}
    objects.append(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": _meta(POD_HEADLESS_SERVICE, namespace, "pod"),
            "spec": {
                "clusterIP": "None",
                # Pods advertise their DNS name; it must resolve while they start and drain.
                "publishNotReadyAddresses": True,
                "selector": _selector("pod"),
                "ports": [grpc_port, {"name": "metrics", "port": METRICS_PORT, "targetPort": "metrics",
                                      "protocol": "TCP"}],
            },
        }
    )
    objects.append(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": _meta(INFERENCE_SERVICE, namespace, "pod"),
            "spec": {"type": "ClusterIP", "selector": _selector("pod"), "ports": [grpc_port]},
        }
    )
    objects.append(_pods_statefulset(namespace, pods, capacity_bytes, image, checksum, disk_cache_bytes))
    objects.append(
        {
            "apiVersion": "policy/v1",
            "kind": "PodDisruptionBudget",
            "metadata": _meta(POD_STATEFULSET, namespace, "pod"),
            "spec": {"maxUnavailable": 1, "selector": {"matchLabels": _selector("pod")}},
        }
    )
    return objects


def quickstart_storage_config() -> dict[str, dict[str, Any]]:
    """The quickstart's storage key ``default``: the bundled MinIO (demo credentials)."""
    return {
        "default": {
            "type": "s3",
            "access_key_id": "mesh-demo",
            "secret_access_key": "mesh-demo-secret",
            "endpoint_url": f"http://{MINIO_NAME}:9000",
            "default_bucket": "models",
            "region": "us-east-1",
        }
    }


def render_quickstart(
    *, namespace: str = DEFAULT_NAMESPACE, image: str = DEFAULT_IMAGE, models: int = 50
) -> list[dict[str, Any]]:
    """MinIO, the storage Secret that points at it, and a Job that creates ``models`` demo models,
    uploads them and registers them. Apply after :func:`render_manifests` (without storage)."""
    creds = quickstart_storage_config()["default"]
    minio_labels = _selector("minio")
    minio = {
        "name": "minio",
        "image": MINIO_IMAGE,
        "imagePullPolicy": "IfNotPresent",
        "args": ["server", "/data", "--console-address", ":9001"],
        "env": [
            {"name": "MINIO_ROOT_USER",
             "valueFrom": {"secretKeyRef": {"name": MINIO_SECRET, "key": "MINIO_ROOT_USER"}}},
            {"name": "MINIO_ROOT_PASSWORD",
             "valueFrom": {"secretKeyRef": {"name": MINIO_SECRET, "key": "MINIO_ROOT_PASSWORD"}}},
        ],
        "ports": [
            {"name": "s3", "containerPort": 9000, "protocol": "TCP"},
            {"name": "console", "containerPort": 9001, "protocol": "TCP"},
        ],
        "readinessProbe": {"httpGet": {"path": "/minio/health/ready", "port": "s3"}, "periodSeconds": 5},
        "livenessProbe": {"httpGet": {"path": "/minio/health/live", "port": "s3"}, "periodSeconds": 15},
        "resources": {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"memory": "1Gi"}},
        "securityContext": {k: v for k, v in _container_security().items() if k != "readOnlyRootFilesystem"},
        "volumeMounts": [{"name": "data", "mountPath": "/data"}],
    }
    job_env = _plane_env_from()
    # The Job has no state volume: keep anything written under the /tmp emptyDir.
    job_env_vars = [{"name": "HOME", "value": "/tmp"}, {"name": "MESH_STATE_DIR", "value": "/tmp/mesh-state"}]
    job_mounts = [{"name": "models", "mountPath": "/models"}, {"name": "tmp", "mountPath": "/tmp"}]
    objects: list[dict[str, Any]] = [
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": _meta(MINIO_SECRET, namespace, "minio"),
            "type": "Opaque",
            "stringData": {"MINIO_ROOT_USER": creds["access_key_id"],
                           "MINIO_ROOT_PASSWORD": creds["secret_access_key"]},
        },
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": _meta(STORAGE_SECRET, namespace, "storage"),
            "type": "Opaque",
            "stringData": {k: json.dumps(v, sort_keys=True)
                           for k, v in quickstart_storage_config().items()},
        },
        {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": _meta(MINIO_NAME, namespace, "minio"),
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "2Gi"}}},
        },
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": _meta(MINIO_NAME, namespace, "minio"),
            "spec": {
                "replicas": 1,
                "strategy": {"type": "Recreate"},  # one writer of the ReadWriteOnce volume
                "selector": {"matchLabels": minio_labels},
                "template": {
                    "metadata": {"labels": _labels("minio")},
                    "spec": {
                        "serviceAccountName": SERVICE_ACCOUNT,
                        "automountServiceAccountToken": False,
                        "securityContext": _pod_security(1000),
                        "containers": [minio],
                        "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": MINIO_NAME}}],
                    },
                },
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": _meta(MINIO_NAME, namespace, "minio"),
            "spec": {
                "type": "ClusterIP",
                "selector": minio_labels,
                "ports": [
                    {"name": "s3", "port": 9000, "targetPort": "s3", "protocol": "TCP"},
                    {"name": "console", "port": 9001, "targetPort": "console", "protocol": "TCP"},
                ],
            },
        },
        {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": _meta(DEMO_JOB, namespace, "demo"),
            "spec": {
                "backoffLimit": 10,
                "template": {
                    "metadata": {"labels": _labels("demo")},
                    "spec": {
                        "restartPolicy": "OnFailure",
                        "serviceAccountName": SERVICE_ACCOUNT,
                        "automountServiceAccountToken": False,
                        "securityContext": _pod_security(RUN_AS_USER),
                        "initContainers": [
                            {
                                "name": "make-models",
                                "image": image,
                                "imagePullPolicy": "IfNotPresent",
                                # --no-register: the publish step registers them against MinIO
                                "command": ["mesh", "demo", "--models", str(models), "--out", "/models",
                                            "--no-register"],
                                "env": job_env_vars,
                                "resources": {"requests": {"cpu": "200m", "memory": "256Mi"},
                                              "limits": {"memory": "1Gi"}},
                                "securityContext": _container_security(),
                                "volumeMounts": job_mounts,
                            }
                        ],
                        "containers": [
                            {
                                "name": "publish",
                                "image": image,
                                "imagePullPolicy": "IfNotPresent",
                                "command": ["python", "-m", "plane.kube", "publish-demo", "--dir", "/models",
                                            "--storage-dir", STORAGE_MOUNT, "--key", "default",
                                            "--prefix", "demo"],
                                "envFrom": job_env,
                                "env": job_env_vars,
                                "resources": {"requests": {"cpu": "100m", "memory": "256Mi"},
                                              "limits": {"memory": "512Mi"}},
                                "securityContext": _container_security(),
                                "volumeMounts": [
                                    *job_mounts,
                                    {"name": "storage-config", "mountPath": STORAGE_MOUNT, "readOnly": True},
                                ],
                            }
                        ],
                        "volumes": [
                            {"name": "models", "emptyDir": {"sizeLimit": "1Gi"}},
                            {"name": "tmp", "emptyDir": {"sizeLimit": "256Mi"}},
                            {"name": "storage-config", "secret": {"secretName": STORAGE_SECRET}},
                        ],
                    },
                },
            },
        },
    ]
    return objects


# -- storage config ----------------------------------------------------------------------------------


def normalise_storage_config(key: str, doc: dict[str, Any]) -> dict[str, Any]:
    """Check one SPEC section 4 document and return it normalised (``bucket`` -> ``default_bucket``).

    ``local`` paths are paths inside the pods, so they are kept as written, not resolved here.
    """
    from plane import storage
    from plane.api import validate_model_id

    if not isinstance(doc, dict):
        raise ValueError(f"storage key {key!r}: expected a JSON object, got {type(doc).__name__}")
    params = {k: v for k, v in doc.items() if k != "type"}
    typ = str(doc.get("type") or "").lower()
    if typ == "local":
        validate_model_id(key, what="storage key")
        root = params.get("path") or params.get("root")
        if not root:
            raise ValueError(f"storage key {key!r}: a local storage config needs 'path'")
        return {"type": "local", "path": str(root)}
    cfg = storage.validate_config(key, typ, params)
    return {"type": cfg.type, **cfg.params}


def load_storage_file(path: str | pathlib.Path) -> dict[str, dict[str, Any]]:
    """Read storage configs from a JSON or YAML file.

    Accepted shapes: ``{key: {type: ..., ...}, ...}``; one document with a ``type`` (it becomes
    the ``default`` key); or a Kubernetes Secret whose ``stringData``/``data`` values are the
    documents (the ModelMesh ``storage-config`` Secret).
    """
    import base64

    p = pathlib.Path(path).expanduser()
    try:
        text = p.read_text()
    except OSError as exc:
        raise ValueError(f"cannot read storage file {str(p)!r}: {exc.strerror or exc}") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ValueError(f"storage file {str(p)!r} is neither JSON nor YAML: {exc}") from exc
    if not isinstance(data, dict) or not data:
        raise ValueError(f"storage file {str(p)!r} must hold a mapping of storage keys to configs")
    if data.get("kind") == "Secret":
        raw: dict[str, Any] = {}
        for k, v in (data.get("data") or {}).items():
            raw[k] = base64.b64decode(v).decode()
        raw.update(data.get("stringData") or {})
        data = raw
    elif "type" in data and not isinstance(data["type"], dict):
        data = {"default": data}
    out: dict[str, dict[str, Any]] = {}
    for key, doc in data.items():
        if isinstance(doc, str):
            try:
                doc = json.loads(doc)
            except json.JSONDecodeError as exc:
                raise ValueError(f"storage key {key!r} is not a JSON document") from exc
        out[str(key)] = normalise_storage_config(str(key), doc)
    return out


# -- output ------------------------------------------------------------------------------------------


def mask_secrets(objects: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Copies of ``objects`` with every Secret value replaced by ``****``."""
    out = []
    for obj in objects:
        obj = copy.deepcopy(obj)
        if obj.get("kind") == "Secret":
            for fld in ("data", "stringData"):
                if isinstance(obj.get(fld), dict):
                    obj[fld] = {k: MASK for k in obj[fld]}
        out.append(obj)
    return out


def to_yaml(objects: Iterable[dict[str, Any]], *, mask: bool = True) -> str:
    """A multi-document YAML stream; Secret values masked unless ``mask=False``."""
    objs = mask_secrets(objects) if mask else list(objects)
    return yaml.safe_dump_all(objs, sort_keys=False, default_flow_style=False, width=120)


def object_ref(obj: dict[str, Any]) -> str:
    """``Kind/namespace/name`` (``Kind/name`` for cluster-scoped objects)."""
    meta = obj.get("metadata", {})
    ns = meta.get("namespace")
    return f"{obj['kind']}/{ns}/{meta['name']}" if ns else f"{obj['kind']}/{meta['name']}"


# -- I/O: the kubernetes client --------------------------------------------------------------------------


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
}


@dataclass
class AppliedObject:
    ref: str
    created: bool


@dataclass
class ApplyResult:
    applied: list[AppliedObject] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors


@dataclass
class PodState:
    name: str
    ready: bool
    phase: str
    reason: str = ""
    restarts: int = 0


@dataclass
class RolloutResult:
    ready: bool
    message: str
    pods: list[PodState] = field(default_factory=list)


@dataclass
class UninstallResult:
    deleted: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors


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


def _apply_body(obj: dict[str, Any]) -> dict[str, Any]:
    """The object as sent: a Secret's ``stringData`` becomes base64 ``data``.

    ``stringData`` is write-only (the server folds it into ``data``), so with server-side apply a
    key dropped from it would never be removed; owning ``data`` itself makes removals work."""
    if obj.get("kind") != "Secret" or not obj.get("stringData"):
        return obj
    import base64

    body = {k: v for k, v in obj.items() if k != "stringData"}
    data = dict(obj.get("data") or {})
    for key, value in obj["stringData"].items():
        data[key] = base64.b64encode(str(value).encode()).decode()
    body["data"] = data
    return body


def apply(
    objects: list[dict[str, Any]],
    *,
    context: str | None = None,
    progress: Progress | None = None,
    api_client: Any | None = None,
    force: bool = True,
) -> ApplyResult:
    """Server-side apply each object (field manager ``mesh-plane``), in order.

    Errors are collected, not raised, so one refused object does not hide the others; a
    configuration that cannot be loaded raises :class:`KubeError`.
    """
    api_client = _client(context, api_client)
    errors_t = _api_exception_types()
    result = ApplyResult()
    total = len(objects)
    for i, obj in enumerate(objects):
        ref = object_ref(obj)
        if progress:
            progress(f"applying {ref}", i, total)
        try:
            api, info = _api(api_client, obj["kind"])
            name = obj["metadata"]["name"]
            kwargs: dict[str, Any] = {
                # The client serialises a dict body as JSON, which is valid YAML for apply-patch+yaml.
                "body": _apply_body(obj),
                "field_manager": FIELD_MANAGER,
                "force": force,
                "_content_type": "application/apply-patch+yaml",
                "_preload_content": False,
                "_request_timeout": REQUEST_TIMEOUT_S,
            }
            if info.namespaced:
                call = getattr(api, f"patch_namespaced_{info.snake}")
                args: tuple[str, ...] = (name, obj["metadata"]["namespace"])
            else:
                call, args = getattr(api, f"patch_{info.snake}"), (name,)
            try:
                resp = call(*args, **kwargs)
            except errors_t as exc:
                # Clients before the pydantic generation refuse dict bodies for YAML content types
                # ("Cannot prepare a request message") but send strings as they are.
                if getattr(exc, "status", None) != 0:
                    raise
                resp = call(*args, **{**kwargs, "body": json.dumps(kwargs["body"])})
            result.applied.append(AppliedObject(ref, created=getattr(resp, "status", 200) == 201))
        except KubeError as exc:
            result.errors.append(f"{ref}: {exc}")
        except errors_t as exc:
            result.errors.append(f"{ref}: {_describe_api_error(exc)}")
            if getattr(exc, "status", None) is None:
                # No answer at all: the next objects would only wait for the same timeout.
                if i + 1 < total:
                    result.errors.append(f"{total - i - 1} more objects not applied")
                break
    if progress:
        progress(f"applied {len(result.applied)} of {total} objects", total, total)
    return result


def _read_json(resp: Any) -> dict[str, Any]:
    data = resp.data if hasattr(resp, "data") else resp.read()
    return json.loads(data or b"{}")


def _container_reason(pod: dict[str, Any]) -> tuple[str, int]:
    reason, restarts = "", 0
    status = pod.get("status", {})
    for cs in (status.get("initContainerStatuses") or []) + (status.get("containerStatuses") or []):
        restarts += int(cs.get("restartCount") or 0)
        waiting = (cs.get("state") or {}).get("waiting") or {}
        if waiting.get("reason") and waiting["reason"] not in ("PodInitializing", "ContainerCreating"):
            reason = reason or f"{cs.get('name')}: {waiting['reason']}"
    return reason, restarts


def _pod_states(core: Any, namespace: str) -> list[PodState]:
    resp = core.list_namespaced_pod(
        namespace, label_selector=f"{_LABEL_PART_OF}={PROJECT}", _preload_content=False,
        _request_timeout=REQUEST_TIMEOUT_S,
    )
    out = []
    for pod in _read_json(resp).get("items", []):
        status = pod.get("status", {})
        conditions = status.get("conditions") or []
        ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)
        reason, restarts = _container_reason(pod)
        out.append(PodState(pod["metadata"]["name"], ready, status.get("phase", "Unknown"), reason, restarts))
    return sorted(out, key=lambda p: p.name)


def _set_progress(sts: dict[str, Any]) -> tuple[int, int, bool]:
    """(ready, wanted, rolled out) of a StatefulSet."""
    spec, status = sts.get("spec", {}), sts.get("status", {})
    wanted = int(spec.get("replicas", 1))
    ready = int(status.get("readyReplicas") or 0)
    updated = int(status.get("updatedReplicas") or 0)
    generation = int(sts.get("metadata", {}).get("generation") or 0)
    observed = int(status.get("observedGeneration") or 0) >= generation
    revision = status.get("updateRevision")
    same_revision = not revision or status.get("currentRevision") == revision
    done = observed and ready >= wanted and updated >= wanted and same_revision
    return min(ready, wanted), wanted, done


def wait_for_rollout(
    *,
    namespace: str = DEFAULT_NAMESPACE,
    context: str | None = None,
    progress: Progress | None = None,
    timeout_s: float = ROLLOUT_TIMEOUT_S,
    poll_s: float = ROLLOUT_POLL_S,
    api_client: Any | None = None,
    statefulsets: Iterable[str] = (ETCD_NAME, POD_STATEFULSET),
) -> RolloutResult:
    """Poll the StatefulSets until every replica is updated and ready, or ``timeout_s`` passes.

    A StatefulSet that does not exist (etcd when the plane uses yours) is skipped. The
    progress callback gets ready/wanted replicas and the first problem a pod reports
    (``ImagePullBackOff``, ``CrashLoopBackOff``...).
    """
    from kubernetes import client

    api_client = _client(context, api_client)
    apps, core = client.AppsV1Api(api_client), client.CoreV1Api(api_client)
    errors_t = _api_exception_types()
    names = list(statefulsets)
    deadline = time.monotonic() + timeout_s
    last_error = ""
    while True:
        ready_total = wanted_total = 0
        all_done = True
        seen = 0
        try:
            for name in names:
                try:
                    resp = apps.read_namespaced_stateful_set(
                        name, namespace, _preload_content=False, _request_timeout=REQUEST_TIMEOUT_S
                    )
                except errors_t as exc:
                    if getattr(exc, "status", None) == 404:
                        continue
                    raise
                seen += 1
                ready, wanted, done = _set_progress(_read_json(resp))
                ready_total += ready
                wanted_total += wanted
                all_done = all_done and done
            pods = _pod_states(core, namespace)
            last_error = ""
        except errors_t as exc:
            last_error = _describe_api_error(exc)
            all_done, pods = False, []
        if seen == 0 and not last_error:
            all_done = False
            last_error = f"no mesh-plane StatefulSet in namespace {namespace!r}"
        problems = [f"{p.name} {p.reason}" for p in pods if p.reason]
        message = f"{ready_total}/{wanted_total} replicas ready"
        if problems:
            message += " - " + ", ".join(problems[:3])
        elif last_error:
            message += f" - {last_error}"
        if progress:
            progress(message, ready_total, max(wanted_total, 1))
        if all_done:
            return RolloutResult(True, f"rolled out: {ready_total}/{wanted_total} replicas ready", pods)
        if time.monotonic() >= deadline:
            return RolloutResult(False, f"timed out after {timeout_s:.0f}s: {message}", pods)
        time.sleep(poll_s)


def render_install(
    *,
    namespace: str = DEFAULT_NAMESPACE,
    pods: int = DEFAULT_PODS,
    capacity_bytes: int = DEFAULT_CAPACITY_BYTES,
    image: str = DEFAULT_IMAGE,
    storage_config: dict[str, dict[str, Any]] | None = None,
    etcd_endpoint: str | None = None,
    quickstart: bool = False,
    settings: dict[str, str] | None = None,
) -> list[dict[str, Any]]:
    """What ``mesh install --kubernetes`` applies: :func:`render_manifests`, plus the quickstart
    objects when asked (whose MinIO storage Secret gives way to ``storage_config``)."""
    objects = render_manifests(
        namespace=namespace, pods=pods, capacity_bytes=capacity_bytes, image=image,
        storage_config=storage_config, etcd_endpoint=etcd_endpoint, settings=settings,
    )
    if quickstart:
        extra = render_quickstart(namespace=namespace, image=image)
        if storage_config is not None:
            extra = [o for o in extra if object_ref(o) != f"Secret/{namespace}/{STORAGE_SECRET}"]
        objects += extra
    return objects


@dataclass
class InstallResult:
    applied: ApplyResult
    rollout: RolloutResult | None = None

    @property
    def ok(self) -> bool:
        return self.applied.ok and (self.rollout is None or self.rollout.ready)


def install(
    objects: list[dict[str, Any]],
    *,
    namespace: str = DEFAULT_NAMESPACE,
    context: str | None = None,
    progress: Progress | None = None,
    wait: bool = True,
    timeout_s: float = ROLLOUT_TIMEOUT_S,
    poll_s: float = ROLLOUT_POLL_S,
    api_client: Any | None = None,
) -> InstallResult:
    """Apply ``objects`` (from :func:`render_install`) and, when ``wait``, wait for the rollout.

    The one entry point of the CLI, the console's and the dashboard's Install views."""
    api_client = _client(context, api_client)
    applied = apply(objects, progress=progress, api_client=api_client)
    if not wait or not applied.ok:
        return InstallResult(applied)
    rollout = wait_for_rollout(namespace=namespace, progress=progress, timeout_s=timeout_s, poll_s=poll_s,
                               api_client=api_client)
    return InstallResult(applied, rollout)


def _installed_objects(namespace: str) -> list[dict[str, Any]]:
    """Everything an install may have created in ``namespace`` (bundled etcd and quickstart included)."""
    objs = render_manifests(namespace=namespace, pods=1, storage_config={})
    refs = {object_ref(o) for o in objs}
    return objs + [o for o in render_quickstart(namespace=namespace) if object_ref(o) not in refs]


def uninstall(
    *,
    namespace: str = DEFAULT_NAMESPACE,
    context: str | None = None,
    progress: Progress | None = None,
    delete_data: bool = False,
    api_client: Any | None = None,
) -> UninstallResult:
    """Delete what an install applied, in reverse order.

    The etcd volume (the registry: models, vmodels, storage configs) and the namespace are
    kept unless ``delete_data``; then the PersistentVolumeClaims labelled as the plane's go
    too, and the namespace when the plane created it (never ``default`` or ``kube-*``).
    """
    from kubernetes import client

    api_client = _client(context, api_client)
    errors_t = _api_exception_types()
    result = UninstallResult()
    # Reverse order: the pods go before etcd, so their drain on SIGTERM can still reach it.
    objects = [
        obj for obj in reversed(_installed_objects(namespace))
        if obj["kind"] != "Namespace" and (delete_data or obj["kind"] != "PersistentVolumeClaim")
    ]
    total = len(objects) + (1 if delete_data else 0)
    for i, obj in enumerate(objects):
        ref = object_ref(obj)
        if progress:
            progress(f"deleting {ref}", i, total)
        try:
            api, info = _api(api_client, obj["kind"])
            getattr(api, f"delete_namespaced_{info.snake}")(
                obj["metadata"]["name"], namespace, propagation_policy="Background",
                _preload_content=False, _request_timeout=REQUEST_TIMEOUT_S,
            )
            result.deleted.append(ref)
        except errors_t as exc:
            if getattr(exc, "status", None) == 404:
                result.missing.append(ref)
            else:
                result.errors.append(f"{ref}: {_describe_api_error(exc)}")
    if delete_data:
        core = client.CoreV1Api(api_client)
        if progress:
            progress("deleting volumes", len(objects), total)
        try:
            resp = core.list_namespaced_persistent_volume_claim(
                namespace, label_selector=f"{_LABEL_PART_OF}={PROJECT}", _preload_content=False,
                _request_timeout=REQUEST_TIMEOUT_S,
            )
            for pvc in _read_json(resp).get("items", []):
                name = pvc["metadata"]["name"]
                core.delete_namespaced_persistent_volume_claim(
                    name, namespace, _preload_content=False, _request_timeout=REQUEST_TIMEOUT_S
                )
                result.deleted.append(f"PersistentVolumeClaim/{namespace}/{name}")
            if namespace not in PROTECTED_NAMESPACES:
                ns = _read_json(core.read_namespace(namespace, _preload_content=False,
                                                    _request_timeout=REQUEST_TIMEOUT_S))
                if (ns.get("metadata", {}).get("labels") or {}).get(_LABEL_MANAGED_BY) == FIELD_MANAGER:
                    core.delete_namespace(namespace, _preload_content=False,
                                          _request_timeout=REQUEST_TIMEOUT_S)
                    result.deleted.append(f"Namespace/{namespace}")
        except errors_t as exc:
            if getattr(exc, "status", None) != 404:
                result.errors.append(f"volumes/namespace: {_describe_api_error(exc)}")
    if progress:
        progress(f"deleted {len(result.deleted)} objects", total, total)
    return result


# -- the plane's own containers --------------------------------------------------------------------------

CONNECT_RETRY_S = 180.0


def _read_storage_dir(directory: pathlib.Path) -> dict[str, dict[str, Any]]:
    """Storage configs from a mounted Secret: one file per key (hidden ``..data`` links skipped)."""
    out: dict[str, dict[str, Any]] = {}
    if not directory.is_dir():
        return out
    for path in sorted(directory.iterdir()):
        if path.name.startswith(".") or not path.is_file():
            continue
        out[path.name] = json.loads(path.read_text())
    return out


def _connect_with_retry(timeout_s: float = CONNECT_RETRY_S) -> Any:
    from plane.api import PlaneClient
    from plane.registry import RegistryError

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return PlaneClient.connect()
        except (RegistryError, OSError, TimeoutError) as exc:
            if time.monotonic() >= deadline:
                raise
            print(f"etcd not reachable yet ({exc}); retrying", flush=True)
            time.sleep(3)


def sync_storage_dir(directory: str | pathlib.Path, *, plane: Any | None = None) -> list[str]:
    """Copy every storage config of a mounted Secret into the registry; returns the keys copied.

    Keys that are in the registry but not in the Secret are left alone (they may have been
    added with the console)."""
    docs = _read_storage_dir(pathlib.Path(directory))
    if not docs:
        return []
    own = plane is None
    plane = plane or _connect_with_retry()
    try:
        for key, doc in docs.items():
            params = {k: v for k, v in doc.items() if k != "type"}
            plane.set_storage(key, doc.get("type", ""), params)
    finally:
        if own:
            plane.close()
    return sorted(docs)


def _demo_model_ids(root: pathlib.Path) -> dict[str, str]:
    """relative path -> model id, from the manifest ``mesh demo`` writes (empty without one)."""
    try:
        manifest = json.loads((root / "manifest.json").read_text())
        return {m["path"]: m["model_id"] for m in manifest.get("models", [])}
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def publish_demo(directory: str | pathlib.Path, *, storage_dir: str | pathlib.Path, key: str = "default",
                 prefix: str = "demo", plane: Any | None = None) -> int:
    """Upload the ``*.onnx`` files under ``directory`` to storage ``key`` (S3) and register them.

    Model ids come from the ``manifest.json`` that ``mesh demo`` writes; without one, from the
    relative path (``a/b.onnx`` -> ``a.b``). Paths are ``prefix/<relative path>``. Returns how
    many models are registered."""
    from plane.api import ModelSpec
    from plane.registry import StorageConfig
    from plane.storage import _s3_client

    root = pathlib.Path(directory)
    files = sorted(p for p in root.rglob("*.onnx") if p.is_file())
    docs = _read_storage_dir(pathlib.Path(storage_dir))
    if key not in docs:
        raise KubeError(f"storage key {key!r} is not in {storage_dir}")
    doc = docs[key]
    specs = []
    if doc.get("type") == "s3":
        cfg = StorageConfig(key=key, type="s3", params={k: v for k, v in doc.items() if k != "type"})
        s3 = _s3_client(cfg)
        bucket = cfg.params.get("default_bucket") or cfg.params.get("bucket")
        deadline = time.monotonic() + CONNECT_RETRY_S
        while True:
            try:
                existing = {b["Name"] for b in s3.list_buckets().get("Buckets", [])}
                break
            except Exception as exc:  # noqa: BLE001 - MinIO may still be starting
                if time.monotonic() >= deadline:
                    raise KubeError(f"storage {key!r} did not answer: {type(exc).__name__}") from exc
                time.sleep(3)
        if bucket not in existing:
            s3.create_bucket(Bucket=bucket)
        for f in files:
            rel = f.relative_to(root).as_posix()
            s3.upload_file(str(f), bucket, f"{prefix}/{rel}" if prefix else rel)
    ids = _demo_model_ids(root)
    for f in files:
        rel = f.relative_to(root).as_posix()
        model_id = ids.get(rel) or rel.removesuffix(".onnx").replace("/", ".")
        specs.append(ModelSpec(model_id=model_id, path=f"{prefix}/{rel}" if prefix else rel, storage_key=key))
    own = plane is None
    plane = plane or _connect_with_retry()
    try:
        plane.set_storage(key, doc.get("type", ""), {k: v for k, v in doc.items() if k != "type"})
        plane.register_models(specs)
    finally:
        if own:
            plane.close()
    return len(specs)


# Which file of manifests/base each object goes to.
_BASE_FILES = {
    "Namespace": "namespace.yaml",
    "ServiceAccount": "serviceaccount.yaml",
    "ConfigMap": "config.yaml",
    "Secret": "config.yaml",
}


_QUICKSTART_FILES = {"minio": "minio.yaml", "storage": "storage-config.yaml", "demo": "demo-models.yaml"}


def write_manifests(root: str | pathlib.Path) -> list[pathlib.Path]:
    """Write ``base/`` and ``overlays/quickstart/`` under ``root`` from the default rendering."""
    root = pathlib.Path(root)
    written = []
    groups: dict[pathlib.Path, list[dict[str, Any]]] = {}
    for obj in render_manifests():
        component = obj["metadata"]["labels"]["app.kubernetes.io/component"]
        name = _BASE_FILES.get(obj["kind"]) or ("etcd.yaml" if component == "etcd" else "pods.yaml")
        groups.setdefault(root / "base" / name, []).append(obj)
    quick = render_quickstart()
    for obj in quick:
        component = obj["metadata"]["labels"]["app.kubernetes.io/component"]
        name = _QUICKSTART_FILES[component]
        groups.setdefault(root / "overlays" / "quickstart" / name, []).append(obj)
    header = "# Generated by `python -m plane.kube write-manifests` from plane/kube.py: edit that.\n"
    for path, objs in groups.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(header + to_yaml(objs, mask=False))
        written.append(path)
    kustomizations: dict[pathlib.Path, dict[str, Any]] = {
        root / "base" / "kustomization.yaml": {
            "resources": sorted({p.name for p in groups if p.parent.name == "base"}, key=_base_order),
        },
        root / "overlays" / "quickstart" / "kustomization.yaml": {
            "resources": ["../../base"] + sorted(p.name for p in groups if p.parent.name == "quickstart"),
            # Point the plane's containers at the image you pushed (see docs/kubernetes.md).
            "images": [{"name": DEFAULT_IMAGE.split(":")[0], "newName": DEFAULT_IMAGE.split(":")[0],
                        "newTag": DEFAULT_IMAGE.split(":")[1]}],
        },
    }
    for path, body in kustomizations.items():
        doc: dict[str, Any] = {"apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization"}
        doc.update(body)
        path.write_text(header + yaml.safe_dump(doc, sort_keys=False))
        written.append(path)
    return written


def _base_order(name: str) -> int:
    order = ["namespace.yaml", "serviceaccount.yaml", "config.yaml", "etcd.yaml", "pods.yaml"]
    return order.index(name) if name in order else len(order)


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m plane.kube", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("sync-storage", help="copy a mounted storage Secret into the registry")
    p.add_argument("--dir", default=STORAGE_MOUNT)
    p = sub.add_parser("publish-demo", help="upload demo models to storage and register them")
    p.add_argument("--dir", required=True)
    p.add_argument("--storage-dir", default=STORAGE_MOUNT)
    p.add_argument("--key", default="default")
    p.add_argument("--prefix", default="demo")
    p = sub.add_parser("write-manifests", help="regenerate manifests/base and manifests/overlays/quickstart")
    p.add_argument("root", nargs="?", default="manifests")
    args = parser.parse_args(argv)
    if args.cmd == "sync-storage":
        keys = sync_storage_dir(args.dir)
        print(f"storage keys in the registry: {', '.join(keys) if keys else '(none in the Secret)'}")
    elif args.cmd == "publish-demo":
        n = publish_demo(args.dir, storage_dir=args.storage_dir, key=args.key, prefix=args.prefix)
        print(f"published and registered {n} demo models")
    else:
        for path in write_manifests(args.root):
            print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
