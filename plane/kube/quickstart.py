"""The quickstart overlay: MinIO, storage Secrets pointing at it, the demo-models Job, and the
install guide's InferenceService.

Rendered as plain dicts like the rest (``manifests/overlays/quickstart`` is its output with
the defaults). The demo credentials live here and nowhere else; a storage configuration of
yours replaces the quickstart's ``mesh-storage-config`` in :func:`plane.kube.render.render_install`.

The KServe part follows modelmesh-serving's own quickstart (docs/quickstart.md and
config/dependencies/quickstart.yaml): a ``storage-config`` Secret whose key ``localMinIO`` is one
JSON document in ModelMesh's format, and ``example-sklearn-isvc``, an InferenceService annotated
``serving.kserve.io/deploymentMode: ModelMesh`` with ``modelFormat: sklearn`` and
``storage: {key: localMinIO, path: sklearn/mnist-svm.joblib}``. The demo Job uploads that model
(:func:`plane.kube.containers.sklearn_example_model`) to the same bucket.
"""

from __future__ import annotations

import json
from typing import Any

from plane.kube.defaults import (
    DEFAULT_IMAGE,
    DEFAULT_NAMESPACE,
    DEMO_JOB,
    MINIO_IMAGE,
    MINIO_NAME,
    MINIO_SECRET,
    MODELMESH_STORAGE_SECRET,
    RUN_AS_USER,
    SERVICE_ACCOUNT,
    STORAGE_MOUNT,
    STORAGE_SECRET,
)
from plane.kube.meta import _container_security, _labels, _meta, _pod_security, _selector
from plane.kube.workloads import _plane_env_from


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


#: The guide's example: names and path as in modelmesh-serving docs/quickstart.md.
EXAMPLE_ISVC = "example-sklearn-isvc"
EXAMPLE_STORAGE_KEY = "localMinIO"
EXAMPLE_MODEL_PATH = "sklearn/mnist-svm.joblib"


def modelmesh_quickstart_storage_config() -> dict[str, dict[str, Any]]:
    """The ``storage-config`` Secret's documents, field for field in ModelMesh's format (``bucket``,
    not ``default_bucket``), pointing at the bundled MinIO's demo bucket."""
    creds = quickstart_storage_config()["default"]
    return {
        EXAMPLE_STORAGE_KEY: {
            "type": "s3",
            "access_key_id": creds["access_key_id"],
            "secret_access_key": creds["secret_access_key"],
            "endpoint_url": creds["endpoint_url"],
            "bucket": creds["default_bucket"],
            "region": creds["region"],
        }
    }


def render_kserve_example(*, namespace: str = DEFAULT_NAMESPACE) -> list[dict[str, Any]]:
    """The guide's InferenceService (needs the InferenceService definition: KServe's, or the
    ``kserve-crds`` overlay)."""
    meta = _meta(EXAMPLE_ISVC, namespace, "example")
    meta["annotations"] = {"serving.kserve.io/deploymentMode": "ModelMesh"}
    return [{
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": meta,
        "spec": {"predictor": {"model": {
            "modelFormat": {"name": "sklearn"},
            "storage": {"key": EXAMPLE_STORAGE_KEY, "path": EXAMPLE_MODEL_PATH},
        }}},
    }]


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
            # ModelMesh's Secret, in ModelMesh's format: the pods and the controller read it too.
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": _meta(MODELMESH_STORAGE_SECRET, namespace, "storage"),
            "type": "Opaque",
            "stringData": {k: json.dumps(v, indent=2)
                           for k, v in modelmesh_quickstart_storage_config().items()},
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
                                            "--prefix", "demo", "--sklearn-example", EXAMPLE_MODEL_PATH],
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
