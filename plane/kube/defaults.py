"""Names and defaults of a Kubernetes install, the progress callback type, and :class:`KubeError`.

Every other module of :mod:`plane.kube` reads its object names, ports, sizes and timeouts
from here, so one install always agrees with itself (the pods' DNS names, the Services they
sit behind, the Secret they mount) and the CLI and UIs can show the defaults without
importing the rendering or the client code.
"""

from __future__ import annotations

from collections.abc import Callable

Progress = Callable[[str, int, int], None]

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
#: ModelMesh's name for the storage Secret (modelmesh-serving config/default/storage-secret.yaml): read
#: too, so a ModelMesh user's Secret works as it is. On a key in both, ``mesh-storage-config`` wins.
MODELMESH_STORAGE_SECRET = "storage-config"
SERVICE_ACCOUNT = "mesh-pod"
CONTROLLER_NAME = "mesh-controller"
CONTROLLER_SERVICE_ACCOUNT = "mesh-controller"
#: The Secret the ``tls`` overlay mounts: ``tls.crt``, ``tls.key``, ``ca.crt`` (the kubernetes.io/tls
#: layout cert-manager writes). One certificate for the pods, the controller and etcd's client port.
TLS_SECRET = "mesh-tls"
TLS_MOUNT = "/etc/mesh/tls"
MINIO_NAME = "minio"
MINIO_SECRET = "minio-credentials"
DEMO_JOB = "mesh-demo-models"

GRPC_PORT = 8033
REST_PORT = 8008  # KServe V2 REST, ModelMesh's REST port
METRICS_PORT = 2112
ETCD_CLIENT_PORT = 2379
ETCD_PEER_PORT = 2380
ETCD_METRICS_PORT = 2381
STATE_DIR = "/var/lib/mesh"
STORAGE_MOUNT = "/etc/mesh/storage-config"
MODELMESH_STORAGE_MOUNT = "/etc/mesh/modelmesh-storage-config"
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
#: Members of the etcd StatefulSet in the ``etcd-ha`` overlay (a quorum survives one member down).
ETCD_HA_MEMBERS = 3
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

