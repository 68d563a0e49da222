"""The runtime pods' StatefulSet, rendered as a plain dict (the bundled etcd is :mod:`plane.kube.etcd`).

The largest object of an install (containers, probes, resources, volumes, anti-affinity), so it
lives here, apart from the list of objects :func:`plane.kube.render.render_manifests` assembles
around it.

The init container copies both storage Secrets into the registry: the plane's own
``mesh-storage-config`` and ModelMesh's ``storage-config`` (both mounted optionally, so either may
be absent); on a key present in both, ``mesh-storage-config`` wins (it is listed last).
"""

from __future__ import annotations

from typing import Any

from plane.kube.defaults import (
    _STORAGE_CHECKSUM,
    CONFIG_MAP,
    ETCD_SECRET,
    GRPC_PORT,
    MEMORY_OVERHEAD_BYTES,
    METRICS_PORT,
    MODELMESH_STORAGE_MOUNT,
    MODELMESH_STORAGE_SECRET,
    POD_HEADLESS_SERVICE,
    POD_STATEFULSET,
    REST_PORT,
    RUN_AS_USER,
    SERVICE_ACCOUNT,
    STATE_DIR,
    STATE_DIR_HEADROOM_BYTES,
    STORAGE_MOUNT,
    STORAGE_SECRET,
    TERMINATION_GRACE_PERIOD_S,
)
from plane.kube.meta import _container_security, _labels, _meta, _mi, _pod_security, _selector, memory_resources
from plane.kube.tls import tls_mount, tls_volume


def _plane_env_from() -> list[dict[str, Any]]:
    return [{"configMapRef": {"name": CONFIG_MAP}}, {"secretRef": {"name": ETCD_SECRET}}]


def _storage_volumes() -> list[dict[str, Any]]:
    # optional: a plane without a storage Secret still starts
    return [
        {"name": "storage-config", "secret": {"secretName": STORAGE_SECRET, "optional": True}},
        {"name": "modelmesh-storage-config", "secret": {"secretName": MODELMESH_STORAGE_SECRET, "optional": True}},
    ]


def _pods_statefulset(
    namespace: str, pods: int, capacity_bytes: int, image: str, checksum: str | None,
    disk_cache_bytes: int, *, tls_secret: str | None = None, memory_overhead_bytes: int = MEMORY_OVERHEAD_BYTES,
) -> dict[str, Any]:
    mem_request, mem_limit = memory_resources(capacity_bytes, overhead_bytes=memory_overhead_bytes)
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
            {"name": "http", "containerPort": REST_PORT, "protocol": "TCP"},
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
            *([tls_mount()] if tls_secret else []),
        ],
    }
    sync = {
        "name": "storage-sync",
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        # Later directories win on a key in both: the plane's own Secret over ModelMesh's.
        "command": ["python", "-m", "plane.kube", "sync-storage", "--dir", MODELMESH_STORAGE_MOUNT,
                    "--dir", STORAGE_MOUNT],
        "envFrom": _plane_env_from(),
        "resources": {"requests": {"cpu": "50m", "memory": "128Mi"}, "limits": {"memory": "256Mi"}},
        "securityContext": _container_security(),
        "volumeMounts": [
            {"name": "storage-config", "mountPath": STORAGE_MOUNT, "readOnly": True},
            {"name": "modelmesh-storage-config", "mountPath": MODELMESH_STORAGE_MOUNT, "readOnly": True},
            {"name": "tmp", "mountPath": "/tmp"},
            *([tls_mount()] if tls_secret else []),
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
                        *_storage_volumes(),
                        *([tls_volume(tls_secret)] if tls_secret else []),
                    ],
                },
            },
        },
    }

