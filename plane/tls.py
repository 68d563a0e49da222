"""Transport security: TLS (and mutual TLS) for the pods' gRPC ports, pod-to-pod forwarding,
the management clients, and etcd.

Settings (all optional; without them everything is plaintext on loopback):

* ``MESH_TLS_CERT_FILE`` / ``MESH_TLS_KEY_FILE`` — the pod's certificate and key. Pods serve
  with them and also present them as client certificates to peers (mTLS).
* ``MESH_TLS_CA_FILE`` — the CA that signed the pods' (and clients') certificates.
* ``MESH_TLS_CLIENT_AUTH`` — require client certificates on the pods' ports (mTLS).
* ``MESH_TLS_SERVER_NAME`` — the name to check in the pods' certificates when it differs from
  the address dialled (e.g. pods reached by IP with a certificate for a DNS name).
* ``MESH_ETCD_CA_FILE`` / ``MESH_ETCD_CERT_FILE`` / ``MESH_ETCD_KEY_FILE`` — TLS to etcd,
  combined with ``MESH_ETCD_USERNAME`` / ``MESH_ETCD_PASSWORD`` when etcd has auth enabled.
"""

from __future__ import annotations

import pathlib
from typing import TYPE_CHECKING, Any

import grpc
import grpc.aio

if TYPE_CHECKING:
    from plane.settings import MeshSettings

__all__ = ["server_credentials", "channel_credentials", "sync_channel", "aio_channel", "enabled"]


def _read(path: Any) -> bytes | None:
    return pathlib.Path(path).expanduser().read_bytes() if path else None


def enabled(settings: MeshSettings) -> bool:
    return bool(settings.tls_cert_file or settings.tls_ca_file)


def server_credentials(settings: MeshSettings) -> grpc.ServerCredentials | None:
    if not settings.tls_cert_file:
        return None
    if not settings.tls_key_file:
        raise ValueError("MESH_TLS_CERT_FILE is set but MESH_TLS_KEY_FILE is not")
    return grpc.ssl_server_credentials(
        [(_read(settings.tls_key_file), _read(settings.tls_cert_file))],
        root_certificates=_read(settings.tls_ca_file),
        require_client_auth=bool(settings.tls_client_auth),
    )


def channel_credentials(settings: MeshSettings) -> grpc.ChannelCredentials | None:
    if not enabled(settings):
        return None
    return grpc.ssl_channel_credentials(
        root_certificates=_read(settings.tls_ca_file),
        private_key=_read(settings.tls_key_file),
        certificate_chain=_read(settings.tls_cert_file),
    )


def _options(settings: MeshSettings, options: list[tuple[str, Any]] | None) -> list[tuple[str, Any]]:
    opts = list(options or [])
    if settings.tls_server_name:
        opts.append(("grpc.ssl_target_name_override", settings.tls_server_name))
    return opts


def sync_channel(endpoint: str, settings: MeshSettings, options: list | None = None) -> grpc.Channel:
    creds = channel_credentials(settings)
    if creds is None:
        return grpc.insecure_channel(endpoint, options=options)
    return grpc.secure_channel(endpoint, creds, options=_options(settings, options))


def aio_channel(endpoint: str, settings: MeshSettings, options: list | None = None) -> grpc.aio.Channel:
    creds = channel_credentials(settings)
    if creds is None:
        return grpc.aio.insecure_channel(endpoint, options=options)
    return grpc.aio.secure_channel(endpoint, creds, options=_options(settings, options))
