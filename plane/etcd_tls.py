"""etcd over TLS for aetcd, which itself only dials plaintext.

``TLSClient`` is aetcd's client with the channel made secure (and etcd's user/password
authentication done on it); ``etcd_credentials`` reads the CA, certificate and key files.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aetcd
import aetcd.exceptions

__all__ = ["TLSClient", "etcd_credentials"]


class TLSClient(aetcd.Client):
    """aetcd's client over a TLS channel (aetcd itself only dials plaintext)."""

    def __init__(self, *args: Any, credentials: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._credentials = credentials

    async def connect(self) -> None:
        if self._connected.is_set():
            return
        if self._is_connecting:  # type: ignore[has-type]
            await asyncio.wait_for(self._connected.wait(), self._connect_wait_timeout)
            return
        from aetcd import rpc, watcher

        try:
            self._is_connecting = True
            self.channel = rpc.secure_channel(f"{self._host}:{self._port}", self._credentials,
                                              options=self._options.items())
            if self._username is not None and self._password is not None:
                self.auth_stub = rpc.AuthStub(self.channel)
                try:
                    resp = await self.auth_stub.Authenticate(
                        rpc.AuthenticateRequest(name=self._username, password=self._password),
                        timeout=self._timeout)
                except rpc.AioRpcError as exc:
                    aetcd.exceptions._handle_exception(exc)
                self.metadata = (("token", resp.token),)
            self.kvstub = rpc.KVStub(self.channel)
            self.clusterstub = rpc.ClusterStub(self.channel)
            self.leasestub = rpc.LeaseStub(self.channel)
            self.maintenancestub = rpc.MaintenanceStub(self.channel)
            self._watcher = watcher.Watcher(rpc.WatchStub(self.channel), timeout=self._timeout,
                                            metadata=self.metadata)
            self._connected.set()
        finally:
            self._is_connecting = False


def etcd_credentials(tls: tuple[Any, Any, Any] | None) -> Any:
    if not tls or not any(tls):
        return None
    import grpc

    ca, cert, key = (open(p, "rb").read() if p else None for p in tls)
    return grpc.ssl_channel_credentials(root_certificates=ca, private_key=key, certificate_chain=cert)
