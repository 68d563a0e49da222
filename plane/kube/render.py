"""Pure rendering of an install: :func:`render_manifests` and :func:`render_install`.

Plain dicts in, plain dicts out, so the result can be validated against the Kubernetes
schemas without a cluster; ``manifests/base`` is the output of :func:`render_manifests` with
its defaults (see :mod:`plane.kube.manifest_files`). The objects are listed in the order they
are applied. The two StatefulSets come from :mod:`plane.kube.workloads`, the quickstart's
objects from :mod:`plane.kube.quickstart`.

Options that the kustomize overlays also offer are rendered here, once: ``tls_secret`` is the
``tls`` overlay, ``etcd_members=3`` the ``etcd-ha`` overlay (:mod:`plane.kube.manifest_files`
writes each overlay as the difference between this rendering and the default one, and a test
builds the overlays with kustomize and compares them with this rendering).
"""

from __future__ import annotations

import json
from typing import Any

from plane.kube.controller_deploy import controller_objects
from plane.kube.defaults import (
    CONFIG_MAP,
    DEFAULT_CAPACITY_BYTES,
    DEFAULT_IMAGE,
    DEFAULT_NAMESPACE,
    DEFAULT_PODS,
    ETCD_CLIENT_PORT,
    ETCD_NAME,
    ETCD_SECRET,
    GRPC_PORT,
    INFERENCE_SERVICE,
    MEMORY_OVERHEAD_BYTES,
    METRICS_PORT,
    POD_HEADLESS_SERVICE,
    POD_STATEFULSET,
    PROTECTED_NAMESPACES,
    REST_PORT,
    SERVICE_ACCOUNT,
    STATE_DIR,
    STORAGE_SECRET,
)
from plane.kube.etcd import _etcd_objects
from plane.kube.meta import _meta, _selector
from plane.kube.output import object_ref
from plane.kube.quickstart import render_quickstart
from plane.kube.storage_config import _storage_checksum, normalise_storage_config
from plane.kube.tls import tls_settings
from plane.kube.workloads import _pods_statefulset
from plane.settings import MeshSettings, parse_size


def _config_data(capacity_bytes: int, settings: dict[str, str] | None) -> dict[str, str]:
    defaults = MeshSettings.model_fields
    data = {
        "MESH_ETCD_PREFIX": str(defaults["etcd_prefix"].default),
        "MESH_CAPACITY": str(capacity_bytes),
        "MESH_HOST": "0.0.0.0",
        "MESH_GRPC_PORT": str(GRPC_PORT),
        "MESH_REST_PORT": str(REST_PORT),
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
    tls_secret: str | None = None,
    etcd_members: int = 1,
    controller: bool = True,
    memory_overhead_bytes: int = MEMORY_OVERHEAD_BYTES,
) -> list[dict[str, Any]]:
    """The plane's objects, in the order they are applied.

    ``storage_config`` maps storage keys to SPEC section 4 documents; ``None`` renders no
    storage Secret (an existing one is left alone). ``etcd_endpoint`` points the plane at an
    etcd of yours instead of the bundled StatefulSet of ``etcd_members`` members. ``settings``
    adds or overrides ``MESH_*`` variables in the ConfigMap. ``tls_secret`` names a Secret
    (``tls.crt``, ``tls.key``, ``ca.crt``) that every workload mounts for mTLS on the pods'
    gRPC port and, with the bundled etcd, on etcd's client port. ``controller`` adds the KServe
    controller (``mesh controller``: InferenceServices and Predictors into registrations).
    ``memory_overhead_bytes`` is the ``overhead`` of the memory request
    (:func:`plane.kube.meta.memory_resources`).
    """
    if pods < 1:
        raise ValueError("pods must be at least 1")
    if capacity_bytes <= 0:
        raise ValueError("capacity must be a positive number of bytes")
    if not namespace:
        raise ValueError("namespace must not be empty")
    config = _config_data(capacity_bytes, settings)
    if tls_secret:
        tls = tls_settings()
        if etcd_endpoint:  # your etcd: its TLS is yours to configure (MESH_ETCD_* in ``settings``)
            tls = {k: v for k, v in tls.items() if not k.startswith("MESH_ETCD_")}
        config = {**config, **{k: v for k, v in tls.items() if k not in config}}
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
        objects.extend(_etcd_objects(namespace, members=etcd_members, tls_secret=tls_secret))
    grpc_port = {"name": "grpc", "port": GRPC_PORT, "targetPort": "grpc", "protocol": "TCP"}
    # KServe V2 REST; https when TLS is on (same certificates as gRPC)
    http_port = {"name": "http", "port": REST_PORT, "targetPort": "http", "protocol": "TCP"}
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
                "ports": [grpc_port, http_port, {"name": "metrics", "port": METRICS_PORT,
                                                 "targetPort": "metrics", "protocol": "TCP"}],
            },
        }
    )
    objects.append(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": _meta(INFERENCE_SERVICE, namespace, "pod"),
            "spec": {"type": "ClusterIP", "selector": _selector("pod"), "ports": [grpc_port, http_port]},
        }
    )
    objects.append(_pods_statefulset(namespace, pods, capacity_bytes, image, checksum, disk_cache_bytes,
                                     tls_secret=tls_secret, memory_overhead_bytes=memory_overhead_bytes))
    objects.append(
        {
            "apiVersion": "policy/v1",
            "kind": "PodDisruptionBudget",
            "metadata": _meta(POD_STATEFULSET, namespace, "pod"),
            "spec": {"maxUnavailable": 1, "selector": {"matchLabels": _selector("pod")}},
        }
    )
    if controller:
        objects.extend(controller_objects(namespace, image, tls_secret=tls_secret))
    return objects


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
