"""TLS from a Secret: the volume, the mount and the ``MESH_*`` settings of the ``tls`` overlay.

The Secret holds ``tls.crt``, ``tls.key`` and ``ca.crt`` (the ``kubernetes.io/tls`` layout that
cert-manager writes, or ``kubectl create secret generic --from-file`` of ``mesh certs`` output).
One certificate serves everywhere: the pods present it as gRPC servers and as clients of their
peers and of etcd (``plane/tls.py``: "Pods serve with them and also present them as client
certificates to peers"), the controller as a client, and etcd on its client port. Its names are
listed in docs/kubernetes.md.
"""

from __future__ import annotations

from typing import Any

from plane.kube.defaults import TLS_MOUNT


def tls_volume(secret: str) -> dict[str, Any]:
    # 0440 + fsGroup: readable by the containers' group only; not optional, so a missing Secret
    # stops the pod at start instead of letting it run in plaintext.
    return {"name": "tls", "secret": {"secretName": secret, "defaultMode": 0o440}}


def tls_mount() -> dict[str, Any]:
    return {"name": "tls", "mountPath": TLS_MOUNT, "readOnly": True}


def tls_settings() -> dict[str, str]:
    """The ``MESH_*`` variables (plane/settings.py) that switch the plane's gRPC and etcd clients to mTLS."""
    return {
        "MESH_TLS_CERT_FILE": f"{TLS_MOUNT}/tls.crt",
        "MESH_TLS_KEY_FILE": f"{TLS_MOUNT}/tls.key",
        "MESH_TLS_CA_FILE": f"{TLS_MOUNT}/ca.crt",
        "MESH_TLS_CLIENT_AUTH": "true",
        "MESH_ETCD_CA_FILE": f"{TLS_MOUNT}/ca.crt",
        "MESH_ETCD_CERT_FILE": f"{TLS_MOUNT}/tls.crt",
        "MESH_ETCD_KEY_FILE": f"{TLS_MOUNT}/tls.key",
    }
