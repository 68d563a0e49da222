"""Kubernetes installation: render the plane's manifests, apply them, wait, uninstall.

Rendering is pure (plain dicts in, plain dicts out) so it can be validated against the
Kubernetes schemas without a cluster; ``manifests/base`` and ``manifests/overlays/quickstart``
are the output of :func:`render_manifests` and :func:`render_quickstart` with their defaults
(``python -m plane.kube write-manifests manifests`` regenerates them; a test keeps them in step).

The I/O functions talk to the API server through the ``kubernetes`` client with server-side
apply (field manager ``mesh-plane``). The client is imported inside the functions that need
it, so importing this package stays cheap for the CLI and the UIs. Every I/O function accepts
an ``api_client`` (a ``kubernetes.client.ApiClient``): the seam the tests use to point it at a
recording HTTP server.

Secrets: rendered ``Secret`` objects carry the storage configuration (SPEC section 4) in
``stringData``. :func:`to_yaml` masks their values unless asked not to, and no function here
logs or reports a secret value.

The package also has a ``__main__`` for the containers of the plane itself:
``sync-storage`` (an init container of every pod: copies the mounted storage Secret into the
registry) and ``publish-demo`` (the quickstart Job: uploads demo models to MinIO and
registers them).

Modules, each owning one concern (this package re-exports their public names, so
``from plane import kube; kube.X`` and ``from plane.kube import X`` are the API):

* :mod:`~plane.kube.defaults` - object names, ports, sizes, timeouts; ``Progress``; ``KubeError``
* :mod:`~plane.kube.meta` - labels, metadata, security contexts, memory requests and limits
* :mod:`~plane.kube.workloads` - the etcd and runtime-pod StatefulSets
* :mod:`~plane.kube.render` - ``render_manifests`` and ``render_install``
* :mod:`~plane.kube.quickstart` - MinIO, its storage Secret and the demo-models Job
* :mod:`~plane.kube.storage_config` - reading and checking the storage Secret's documents
* :mod:`~plane.kube.output` - YAML output with Secret values masked, object refs
* :mod:`~plane.kube.cluster` - loading the client, the kinds applied, describing API errors
* :mod:`~plane.kube.server_apply` - server-side apply
* :mod:`~plane.kube.rollout` - waiting for the StatefulSets and reporting pod problems
* :mod:`~plane.kube.lifecycle` - ``install`` (apply, then wait) and ``uninstall``
* :mod:`~plane.kube.containers` - ``sync-storage`` / ``publish-demo`` and ``python -m plane.kube``
* :mod:`~plane.kube.manifest_files` - writing ``manifests/`` from the default rendering
"""

from __future__ import annotations

# ``X as X``: names outside ``__all__`` that callers read as ``kube.X`` (cli_kube, the UIs'
# Install views, the tests), marked as deliberate re-exports.
from plane.kube.containers import publish_demo, sync_storage_dir
from plane.kube.defaults import (
    DEFAULT_CAPACITY_BYTES,
    DEFAULT_IMAGE,
    DEFAULT_NAMESPACE,
    DEFAULT_PODS,
    FIELD_MANAGER,
    KUBERNETES_VERSION,
    KubeError,
    Progress,
)
from plane.kube.defaults import DRAIN_TIMEOUT_S as DRAIN_TIMEOUT_S
from plane.kube.defaults import ETCD_NAME as ETCD_NAME
from plane.kube.defaults import ETCD_STORAGE as ETCD_STORAGE
from plane.kube.defaults import GRPC_PORT as GRPC_PORT
from plane.kube.defaults import INFERENCE_SERVICE as INFERENCE_SERVICE
from plane.kube.defaults import MASK as MASK
from plane.kube.defaults import POD_HEADLESS_SERVICE as POD_HEADLESS_SERVICE
from plane.kube.defaults import ROLLOUT_TIMEOUT_S as ROLLOUT_TIMEOUT_S
from plane.kube.defaults import SERVICE_ACCOUNT as SERVICE_ACCOUNT
from plane.kube.defaults import STORAGE_SECRET as STORAGE_SECRET
from plane.kube.lifecycle import InstallResult, UninstallResult, install, uninstall
from plane.kube.manifest_files import write_manifests
from plane.kube.meta import memory_resources
from plane.kube.output import mask_secrets, object_ref, to_yaml
from plane.kube.quickstart import quickstart_storage_config, render_quickstart
from plane.kube.render import render_install, render_manifests
from plane.kube.rollout import PodState, RolloutResult, wait_for_rollout
from plane.kube.server_apply import AppliedObject, ApplyResult, apply
from plane.kube.storage_config import load_storage_file, normalise_storage_config

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
