"""Dialing etcd: the first of several endpoints that answers, with TLS and authentication.

aetcd speaks to one endpoint; :func:`dial` tries each in turn, and turns what went wrong into
messages that say what to do (credentials refused, nothing reachable).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import aetcd

from plane.etcd_tls import TLSClient, etcd_credentials
from plane.records import EtcdUnavailable, RegistryError

__all__ = ["dial", "ETCD_MAX_MESSAGE_BYTES"]

log = logging.getLogger("mesh.registry")

# A registry of many thousand models is read in one range: gRPC's default 4 MiB limit on
# received messages would make that read (and a pod's start) fail.
ETCD_MAX_MESSAGE_BYTES = 1024**3
_AUTH_FAILED = ("authentication failed", "invalid auth", "user name is empty")


async def dial(endpoints: list[tuple[str, int]], *, username: str | None = None, password: str | None = None,
               timeout: float = 5.0, tls: tuple[Any, Any, Any] | None = None) -> tuple[aetcd.Client, str]:
    """A connected client and the ``host:port`` it answers on. Raises RegistryError for refused
    credentials or no endpoint, EtcdUnavailable when none answers within ``timeout``."""
    if not endpoints:
        raise RegistryError("no etcd endpoint: set MESH_ETCD=host:port or start the plane with `mesh up`")
    last: Exception | None = None
    credentials = etcd_credentials(tls)
    options = {"grpc.max_receive_message_length": ETCD_MAX_MESSAGE_BYTES,
               "grpc.max_send_message_length": ETCD_MAX_MESSAGE_BYTES}
    for host, port in endpoints:
        if credentials is not None:
            client: aetcd.Client = TLSClient(host=host, port=port, username=username, password=password,
                                              timeout=timeout, credentials=credentials, options=options)
        else:
            client = aetcd.Client(host=host, port=port, username=username, password=password, timeout=timeout,
                                  options=options)
        try:
            await client.connect()
            await asyncio.wait_for(client.get(b"\0"), timeout)
            return client, f"{host}:{port}"
        except Exception as exc:  # noqa: BLE001 - any failure means 'try the next endpoint'
            last = exc
            try:
                await client.close()
            except Exception as close_exc:  # noqa: BLE001 - a half-open client; the endpoint's error is what matters
                log.debug("closing the failed etcd client for %s:%s: %r", host, port, close_exc)
            if any(t in str(exc).lower() for t in _AUTH_FAILED):
                raise RegistryError(
                    f"etcd at {host}:{port} refused the credentials: check MESH_ETCD_USERNAME and "
                    "MESH_ETCD_PASSWORD"
                ) from None
    where = ", ".join(f"{h}:{p}" for h, p in endpoints)
    raise EtcdUnavailable(
        f"cannot reach etcd at {where} ({type(last).__name__}: {last}); "
        "start it with `mesh up` or point MESH_ETCD at a running etcd"
    )
