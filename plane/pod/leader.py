"""Leadership: one pod at a time plans copies and preloads for the whole mesh.

The ``leader`` key is bound to the holder's lease, so it frees itself when the leader dies.
Every ``planner_interval_s`` the leader runs :func:`plane.planner.plan` over its registry view
(pure: records in, actions out) and carries the actions out. Planned loads travel with the
``planned`` purpose: the pod that loads them uses free space only and never evicts for them.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from plane import planner, stats
from plane.pod.errors import MeshError, PeerError, Purpose
from plane.records import Event, RegistryError, now_ms

__all__ = ["Leader"]

log = logging.getLogger("mesh.pod.leader")

PLANNED_LOAD_TIMEOUT_S = 10.0


class Leader:
    def __init__(self, *, pod_id: str, settings: Any, registry: Any, view: Any, copies: Any, peers: Any,
                 membership: Any, spawn: Any):
        self.pod_id = pod_id
        self.settings = settings
        self.registry = registry
        self.view = view
        self.copies = copies
        self.peers = peers
        self.membership = membership
        self.spawn = spawn  # (coroutine, name) -> None: a background task the pod owns
        self.leading = False

    async def loop(self) -> None:
        key = self.registry.key("leader", "")[:-1]
        while True:
            await asyncio.sleep(self.settings.planner_interval_s)
            if self.membership.shutting_down:
                return
            try:
                if await self.elect(key):
                    await self.run_planner()
                    await self.registry.trim_stats(before_ms=now_ms() - stats.RETENTION_MS)
            except RegistryError as exc:
                log.warning("planner round skipped: %s", exc)

    async def elect(self, key: bytes) -> bool:
        client = self.registry.client
        tx = client.transactions
        ok, _ = await self.registry._call(client.transaction(
            compare=[tx.version(key) == 0],
            success=[tx.put(key, self.pod_id.encode(), lease=self.membership.lease)],
            failure=[],
        ))
        if ok:
            log.info("pod %s is now the leader", self.pod_id)
            await self.registry.add_event(Event("leader", pod=self.pod_id, reason="elected leader"))
            self.leading = True
            return True
        value, _ = await self.registry.get_raw(key)
        self.leading = value == self.pod_id.encode()
        return self.leading

    def planner_settings(self) -> planner.PlannerSettings:
        return planner.PlannerSettings(
            scale_up_rpm=self.settings.scale_up_rpm,
            pressure_fraction=self.settings.pressure_fraction,
            size_multiplier=self.settings.size_multiplier,
            failure_expiry_ms=int(self.settings.failure_expiry_s * 1000),
            second_copy=self.settings.second_copy,
        )

    async def run_planner(self) -> list[planner.Action]:
        pods = list(self.view.instances.values())
        actions = planner.plan(self.view.models.values(), pods, now_ms=now_ms(), settings=self.planner_settings())
        if not self.settings.preload:
            actions = [a for a in actions if not a.reason.startswith("preload")]
        for action in actions:
            log.info("planner: %s %s on %s (%s)", action.kind, action.model_id, action.pod_id, action.reason)
            try:
                if action.kind == "load":
                    await self.load_on(action)
                else:
                    await self.unload_on(action.model_id, action.pod_id, action.reason)
            except (MeshError, PeerError) as exc:
                log.warning("planner action %s failed: %s", action, exc)
        return actions

    async def load_on(self, action: planner.Action) -> None:
        purpose = Purpose.REQUEST if action.evicts else Purpose.PLANNED
        await self.registry.add_event(Event("plan", model=action.model_id, pod=action.pod_id, reason=action.reason))
        if action.pod_id == self.pod_id:
            self.spawn(self.copies.ensure_local(action.model_id, purpose=purpose), f"planned load {action.model_id}")
            return
        await self.peers.ensure_loaded(action.pod_id, action.model_id, sync=False, purpose=purpose,
                                       timeout=PLANNED_LOAD_TIMEOUT_S)

    async def unload_on(self, model_id: str, pod_id: str, reason: str) -> None:
        if pod_id == self.pod_id:
            await self.copies.unload(model_id, reason)
            return
        await self.peers.unload(pod_id, model_id, reason)
