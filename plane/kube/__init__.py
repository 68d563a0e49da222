"""Kubernetes installation: render the plane's manifests, apply them, wait, uninstall.

Rendering is pure (plain dicts in, plain dicts out) so it can be validated against the
Kubernetes schemas without a cluster; ``manifests/`` is the output of :func:`render_manifests`,
:func:`render_quickstart`, :func:`render_kserve_example` and :func:`render_kserve_crds` with their
defaults, plus kustomize components for the ``tls`` and ``etcd-ha`` options
(``python -m plane.kube write-manifests manifests`` regenerates it; a test keeps it in step).

The I/O functions talk to the API server through the ``kubernetes`` client with server-side
apply (field manager ``mesh-plane``). The client is imported inside the functions that need
it, so importing this package stays cheap for the CLI and the UIs. Every I/O function accepts
an ``api_client`` (a ``kubernetes.client.ApiClient``): the seam the tests use to point it at a
recording HTTP server.

Secrets: rendered ``Secret`` objects carry the storage configuration (SPEC section 4) in
``stringData``. :func:`to_yaml` masks their values unless asked not to, and no function here
logs or reports a secret value.

The package also has a ``__main__`` for the containers of the plane itself:
``sync-storage`` (an init container of every pod: copies the mounted storage Secrets, ModelMesh's
``storage-config`` and the plane's ``mesh-storage-config``, into the registry) and ``publish-demo``
(the quickstart Job: uploads demo models to MinIO and registers them, and uploads the install
guide's scikit-learn model). The KServe controller itself is :mod:`plane.controller`; its
Deployment and rights are rendered here (:mod:`~plane.kube.controller_deploy`).

Modules, each owning one concern (this package re-exports their public names, so
``from plane import kube; kube.X`` and ``from plane.kube import X`` are the API):

* :mod:`~plane.kube.defaults` - object names, ports, sizes, timeouts; ``Progress``; ``KubeError``
* :mod:`~plane.kube.meta` - labels, metadata, security contexts, memory requests and limits
* :mod:`~plane.kube.workloads` - the runtime pods' StatefulSet
* :mod:`~plane.kube.etcd` - the bundled etcd (one member, or three for ``etcd-ha``)
* :mod:`~plane.kube.tls` - the TLS Secret's volume, mount and ``MESH_TLS_*`` settings
* :mod:`~plane.kube.controller_deploy` - the KServe controller's Deployment and RBAC
* :mod:`~plane.kube.crds` - KServe's resource definitions (the optional ``kserve-crds`` overlay)
* :mod:`~plane.kube.patches` - strategic-merge patches between two renderings (the components)
* :mod:`~plane.kube.render` - ``render_manifests`` and ``render_install``
* :mod:`~plane.kube.quickstart` - MinIO, its storage Secrets, the demo-models Job, the guide's InferenceService
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
from plane.kube.containers import publish_demo, sklearn_example_model, sync_storage_dir
from plane.kube.crds import render_kserve_crds
from plane.kube.defaults import CONTROLLER_NAME as CONTROLLER_NAME
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
from plane.kube.defaults import ETCD_HA_MEMBERS as ETCD_HA_MEMBERS
from plane.kube.defaults import ETCD_NAME as ETCD_NAME
from plane.kube.defaults import ETCD_STORAGE as ETCD_STORAGE
from plane.kube.defaults import GRPC_PORT as GRPC_PORT
from plane.kube.defaults import INFERENCE_SERVICE as INFERENCE_SERVICE
from plane.kube.defaults import MASK as MASK
from plane.kube.defaults import MODELMESH_STORAGE_SECRET as MODELMESH_STORAGE_SECRET
from plane.kube.defaults import POD_HEADLESS_SERVICE as POD_HEADLESS_SERVICE
from plane.kube.defaults import ROLLOUT_TIMEOUT_S as ROLLOUT_TIMEOUT_S
from plane.kube.defaults import SERVICE_ACCOUNT as SERVICE_ACCOUNT
from plane.kube.defaults import STORAGE_SECRET as STORAGE_SECRET
from plane.kube.defaults import TLS_SECRET as TLS_SECRET
from plane.kube.lifecycle import InstallResult, UninstallResult, install, uninstall
from plane.kube.manifest_files import write_manifests
from plane.kube.meta import memory_resources
from plane.kube.output import mask_secrets, object_ref, to_yaml
from plane.kube.quickstart import (
    modelmesh_quickstart_storage_config,
    quickstart_storage_config,
    render_kserve_example,
    render_quickstart,
)
from plane.kube.render import render_install, render_manifests
from plane.kube.rollout import PodState, RolloutResult, wait_for_rollout
from plane.kube.server_apply import AppliedObject, ApplyResult, apply
from plane.kube.storage_config import load_storage_file, normalise_storage_config, plane_storage_key

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
    "render_kserve_example",
    "render_kserve_crds",
    "render_install",
    "install",
    "InstallResult",
    "quickstart_storage_config",
    "modelmesh_quickstart_storage_config",
    "plane_storage_key",
    "sklearn_example_model",
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
