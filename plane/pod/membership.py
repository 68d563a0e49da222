"""Membership: this pod's lease and instance record, and what happens to pods that vanish.

A pod's instance record is bound to its lease, so it vanishes when the pod dies, and also when
etcd was away long enough for the lease to expire while the pod kept serving (etcd paused or
restarted). Two rules keep the registry truthful through that:

* A pod that finds its lease expired takes a new one, publishes itself again and reconciles
  (re-asserts) its copies; it does not lose them.
* Copies of a pod that vanished are removed only after ``purge_grace_s`` during which it did
  not come back, by one pod (the *janitor*: the live pod with the smallest id). Until then
  routing still tries the vanished pod (``recently_gone``), so a lease blip reloads nothing.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from plane import operations
from plane.records import Event, InstanceRecord, RegistryError

__all__ = ["Membership", "PUBLISH_INTERVAL_S"]

log = logging.getLogger("mesh.pod.membership")

PUBLISH_INTERVAL_S = 1.0
PUBLISH_COALESCE_S = 0.2
MIN_PURGE_GRACE_S = 3.0


class Membership:
    def __init__(self, *, pod_id: str, settings: Any, registry: Any, view: Any,
                 record: Callable[[], InstanceRecord], reregistered: Callable[[], Awaitable[Any]],
                 metrics: Any):
        self.pod_id = pod_id
        self.settings = settings
        self.registry = registry
        self.view = view
        self.record = record  # builds this pod's instance record from its parts
        self.reregistered = reregistered  # reconcile after a new lease
        self.metrics = metrics
        self.lease: Any = None
        self.purge_grace_s = max(MIN_PURGE_GRACE_S, 2.0 * settings.lease_ttl_s + 1.0)
        self.gone: dict[str, tuple[InstanceRecord, float]] = {}  # pod -> (last record, vanished at)
        self._absent_since: dict[str, float] = {}  # pods named by copies but not registered
        self._dirty = asyncio.Event()
        self._lock = asyncio.Lock()
        self.shutting_down = False
        self._etcd_ok = True  # the last lease refresh got an answer

    # -- this pod's record -------------------------------------------------------------------------

    async def join(self) -> None:
        self.lease = await self.registry.client.lease(self.settings.lease_ttl_s)
        await self.publish()

    async def publish(self) -> None:
        # Serialised with reregister: a put carrying an expired lease must never land after the
        # put with the new one (the record would vanish when the old lease goes).
        async with self._lock:
            rec = self.record()
            await self.registry.put_instance(rec, self.lease)
        self.metrics.instance(rec)

    def etcd_ok(self) -> bool:
        """False from a lease refresh that got no answer until the next one that does."""
        return self._etcd_ok

    def mark_dirty(self) -> None:
        self._dirty.set()

    async def publish_loop(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._dirty.wait(), PUBLISH_INTERVAL_S)
            except TimeoutError:
                pass
            self._dirty.clear()
            try:
                await self.publish()
            except RegistryError as exc:
                self.metrics.registry_write_failed("instance")
                log.debug("publish failed (etcd away?): %s", exc)
            await asyncio.sleep(PUBLISH_COALESCE_S)

    async def keepalive_loop(self) -> None:
        interval = max(0.5, self.settings.lease_ttl_s / 3)
        while True:
            await asyncio.sleep(interval)
            try:
                reply = await asyncio.wait_for(self.lease.refresh(), self.settings.etcd_timeout_s)
                expired = reply is None or getattr(reply, "TTL", 1) <= 0
            except Exception as exc:  # noqa: BLE001 - aetcd raises several types while etcd is away
                self._etcd_ok = False
                self.metrics.registry_write_failed("lease")
                log.warning("lease refresh failed: %s", exc or type(exc).__name__)
                continue
            self._etcd_ok = True
            if expired or (self.view.synced.is_set() and self.view.connected
                           and self.pod_id not in self.view.instances and not self.shutting_down):
                await self.reregister("lease expired" if expired else "instance record missing")

    async def reregister(self, why: str) -> None:
        """Our lease expired (etcd was away): take a new one, publish, re-assert our copies."""
        log.warning("%s: registering again and re-asserting this pod's copies", why)
        try:
            async with self._lock:
                self.lease = await self.registry.client.lease(self.settings.lease_ttl_s)
            await self.publish()
        except RegistryError as exc:
            self.metrics.registry_write_failed("lease")
            log.warning("re-registration failed (%s); will retry", exc)
            return
        try:
            await self.registry.add_event(Event("pod", pod=self.pod_id, reason=f"re-registered ({why})"))
        except RegistryError as exc:
            self.metrics.registry_write_failed("event")
            log.warning("event not recorded: %s", exc)
        await self.reregistered()

    async def leave(self) -> None:
        self.shutting_down = True
        try:
            await self.registry.delete_instance(self.pod_id)
            if self.lease is not None:
                await self.lease.revoke()
        except Exception as exc:  # noqa: BLE001 - aetcd's lease calls raise its own types
            log.warning("could not deregister (%s); the lease will expire", exc)

    # -- other pods --------------------------------------------------------------------------------

    def on_instance_change(self, name: str, old: InstanceRecord | None, new: InstanceRecord | None) -> None:
        if new is not None:
            self.gone.pop(name, None)
            self._absent_since.pop(name, None)
        elif old is not None and name != self.pod_id:
            self.gone[name] = (old, time.monotonic())

    def recently_gone(self, pod_id: str) -> InstanceRecord | None:
        """The last record of a pod that vanished less than the purge grace ago."""
        got = self.gone.get(pod_id)
        if got is None:
            return None
        rec, at = got
        if time.monotonic() - at > self.purge_grace_s:
            return None
        return rec

    def reachable(self, pod_id: str) -> bool:
        """Registered, or vanished so recently that it may be a lease blip (try it)."""
        return pod_id == self.pod_id or pod_id in self.view.instances or self.recently_gone(pod_id) is not None

    def endpoint_of(self, pod_id: str) -> str | None:
        rec = self.view.instances.get(pod_id) or self.recently_gone(pod_id)
        return rec.endpoint if rec is not None else None

    def is_janitor(self) -> bool:
        live = sorted(p for p, r in self.view.instances.items() if not r.shutting_down)
        return bool(live) and live[0] == self.pod_id

    async def sweep(self) -> int:
        """Janitor only: remove copies of pods absent for longer than the grace. Returns the
        number of copy entries removed."""
        if not self.view.synced.is_set() or not self.view.connected:
            return 0
        now = time.monotonic()
        named: dict[str, list[str]] = {}
        for rec in self.view.models.values():
            for pod in rec.copies:
                if pod != self.pod_id and pod not in self.view.instances:
                    named.setdefault(pod, []).append(rec.model_id)
        for pod in list(self._absent_since):
            if pod not in named:
                del self._absent_since[pod]
        if not self.is_janitor():
            return 0
        removed = 0
        for pod, models in named.items():
            since = self._absent_since.setdefault(pod, self.gone.get(pod, (None, now))[1])
            if now - since < self.purge_grace_s:
                continue
            for model_id in models:
                rec = self.view.models.get(model_id)
                size = rec.copies[pod].size if rec is not None and pod in rec.copies else 0
                try:
                    await operations.drop_copies(self.registry, model_id, {pod})
                    await self.registry.add_event(Event("unload", model=model_id, pod=pod, size=size,
                                                        reason=f"pod gone (absent for {now - since:.0f}s)"))
                    removed += 1
                except RegistryError as exc:
                    self.metrics.registry_write_failed("purge")
                    log.warning("could not purge %s's copy of %s: %s", pod, model_id, exc)
        return removed
