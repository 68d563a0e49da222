"""The plane's two StatefulSets, rendered as plain dicts: the bundled etcd and the runtime pods.

These are the largest objects of an install (containers, probes, resources, volumes,
anti-affinity), so they live here, apart from the list of objects
:func:`plane.kube.render.render_manifests` assembles around them.
"""

from __future__ import annotations

from typing import Any

from plane.kube.defaults import (
    _LABEL_PART_OF,
    _STORAGE_CHECKSUM,
    CONFIG_MAP,
    ETCD_CLIENT_PORT,
    ETCD_HEADLESS_SERVICE,
    ETCD_IMAGE,
    ETCD_METRICS_PORT,
    ETCD_NAME,
    ETCD_PEER_PORT,
    ETCD_QUOTA_BYTES,
    ETCD_SECRET,
    ETCD_STORAGE,
    GRPC_PORT,
    METRICS_PORT,
    POD_HEADLESS_SERVICE,
    POD_STATEFULSET,
    PROJECT,
    RUN_AS_USER,
    SERVICE_ACCOUNT,
    STATE_DIR,
    STATE_DIR_HEADROOM_BYTES,
    STORAGE_MOUNT,
    STORAGE_SECRET,
    TERMINATION_GRACE_PERIOD_S,
)
from plane.kube.meta import _container_security, _labels, _meta, _mi, _pod_security, _selector, memory_resources


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

