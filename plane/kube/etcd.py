"""The bundled etcd: a StatefulSet of one member (or three, the ``etcd-ha`` overlay), its Services,
a NetworkPolicy, and with three members a PodDisruptionBudget.

etcd is configured through its ``ETCD_*`` environment variables, not flags: every flag has one
(``--initial-cluster`` is ``ETCD_INITIAL_CLUSTER``, see etcd's ``Documentation/op-guide/configuration``),
and a container's ``env`` list merges by name in a strategic-merge patch while ``args`` is replaced
whole. That is what lets the ``tls`` and ``etcd-ha`` kustomize components (which each change a few
of these settings) be combined in one overlay.

TLS covers etcd's *client* port (the pods, the controller and the init containers dial it); peer
traffic stays inside the namespace, behind the NetworkPolicy, and is left plaintext so the two
components never touch the same variable.
"""

from __future__ import annotations

from typing import Any

from plane.kube.defaults import (
    _LABEL_PART_OF,
    ETCD_CLIENT_PORT,
    ETCD_HEADLESS_SERVICE,
    ETCD_IMAGE,
    ETCD_METRICS_PORT,
    ETCD_NAME,
    ETCD_PEER_PORT,
    ETCD_QUOTA_BYTES,
    ETCD_STORAGE,
    PROJECT,
    SERVICE_ACCOUNT,
    TLS_MOUNT,
)
from plane.kube.meta import _container_security, _labels, _meta, _pod_security, _selector
from plane.kube.tls import tls_mount, tls_volume

_DATA_DIR = "/var/run/etcd"


def _peer_host(member: str) -> str:
    # $(POD_NAMESPACE) is expanded by the kubelet: the same manifest works in any namespace.
    return f"{member}.{ETCD_HEADLESS_SERVICE}.$(POD_NAMESPACE).svc"


def _etcd_env(members: int, tls_secret: str | None) -> list[dict[str, Any]]:
    scheme = "https" if tls_secret else "http"
    if members == 1:
        initial_cluster = f"$(POD_NAME)=http://{_peer_host('$(POD_NAME)')}:{ETCD_PEER_PORT}"
    else:
        initial_cluster = ",".join(
            f"{ETCD_NAME}-{i}=http://{_peer_host(f'{ETCD_NAME}-{i}')}:{ETCD_PEER_PORT}" for i in range(members))
    settings = {
        "ETCD_NAME": "$(POD_NAME)",
        "ETCD_DATA_DIR": f"{_DATA_DIR}/data",
        "ETCD_LISTEN_CLIENT_URLS": f"{scheme}://0.0.0.0:{ETCD_CLIENT_PORT}",
        "ETCD_ADVERTISE_CLIENT_URLS": f"{scheme}://{_peer_host('$(POD_NAME)')}:{ETCD_CLIENT_PORT}",
        "ETCD_LISTEN_PEER_URLS": f"http://0.0.0.0:{ETCD_PEER_PORT}",
        "ETCD_INITIAL_ADVERTISE_PEER_URLS": f"http://{_peer_host('$(POD_NAME)')}:{ETCD_PEER_PORT}",
        "ETCD_INITIAL_CLUSTER": initial_cluster,
        "ETCD_INITIAL_CLUSTER_STATE": "new",
        "ETCD_INITIAL_CLUSTER_TOKEN": ETCD_NAME,
        # Plain HTTP on its own port, so the readiness probe works whatever the client port speaks.
        "ETCD_LISTEN_METRICS_URLS": f"http://0.0.0.0:{ETCD_METRICS_PORT}",
        "ETCD_AUTO_COMPACTION_MODE": "periodic",
        "ETCD_AUTO_COMPACTION_RETENTION": "1h",
        "ETCD_QUOTA_BACKEND_BYTES": str(ETCD_QUOTA_BYTES),
    }
    if tls_secret:
        settings |= {
            "ETCD_CERT_FILE": f"{TLS_MOUNT}/tls.crt",
            "ETCD_KEY_FILE": f"{TLS_MOUNT}/tls.key",
            "ETCD_TRUSTED_CA_FILE": f"{TLS_MOUNT}/ca.crt",
            "ETCD_CLIENT_CERT_AUTH": "true",
        }
    return [
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        *({"name": k, "value": v} for k, v in settings.items()),
    ]


def _etcd_pod_spec(members: int, tls_secret: str | None) -> dict[str, Any]:
    container = {
        "name": "etcd",
        "image": ETCD_IMAGE,
        "imagePullPolicy": "IfNotPresent",
        "command": ["/usr/local/bin/etcd"],
        "env": _etcd_env(members, tls_secret),
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
        "volumeMounts": [{"name": "data", "mountPath": _DATA_DIR}, *([tls_mount()] if tls_secret else [])],
    }
    spec: dict[str, Any] = {
        "serviceAccountName": SERVICE_ACCOUNT,
        "automountServiceAccountToken": False,
        "securityContext": _pod_security(65532),
        "terminationGracePeriodSeconds": 30,
        "containers": [container],
    }
    if tls_secret:
        spec["volumes"] = [tls_volume(tls_secret)]
    if members > 1:
        # Members on different nodes where the cluster has them: one node down keeps a quorum.
        spec["affinity"] = {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
            {"weight": 100, "podAffinityTerm": {"topologyKey": "kubernetes.io/hostname",
                                                "labelSelector": {"matchLabels": _selector("etcd")}}}]}}
    return spec


def _etcd_objects(namespace: str, *, members: int = 1, tls_secret: str | None = None) -> list[dict[str, Any]]:
    """etcd's Services, StatefulSet and NetworkPolicy (and a PodDisruptionBudget with several members)."""
    if members < 1 or members % 2 == 0:
        raise ValueError("etcd members must be an odd number (1 or 3 or 5): an even count adds no fault tolerance")
    ports = [
        {"name": "client", "port": ETCD_CLIENT_PORT, "targetPort": "client"},
        {"name": "peer", "port": ETCD_PEER_PORT, "targetPort": "peer"},
    ]
    objects: list[dict[str, Any]] = [
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
                "replicas": members,
                # Members of a new cluster must start together: with OrderedReady the first one would
                # wait for a quorum that its peers, not yet created, cannot give. (Immutable field:
                # one setting for every size, so the etcd-ha overlay can be applied over the base.)
                "podManagementPolicy": "Parallel",
                "selector": {"matchLabels": _selector("etcd")},
                "template": {
                    "metadata": {"labels": _labels("etcd")},
                    "spec": _etcd_pod_spec(members, tls_secret),
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
    if members > 1:
        objects.append({
            # A drain takes one member at a time: the others keep the quorum.
            "apiVersion": "policy/v1",
            "kind": "PodDisruptionBudget",
            "metadata": _meta(ETCD_NAME, namespace, "etcd"),
            "spec": {"maxUnavailable": 1, "selector": {"matchLabels": _selector("etcd")}},
        })
    return objects
