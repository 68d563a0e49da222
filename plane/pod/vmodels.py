"""VModels: aliases that move from one model to another without a gap.

A transition loads the target first, then switches active -> target in one compare-and-swap
(SPEC section 3). A newer ``setVModel`` supersedes a pending one: the switch only happens
while the record still names the same target.
"""

from __future__ import annotations

from typing import Any

import grpc

from plane import operations
from plane.pod.errors import MeshError
from plane.proto import mmesh_pb2 as mpb
from plane.records import Event, VModelRecord, now_ms

__all__ = ["VModels"]


class VModels:
    def __init__(self, *, pod_id: str, registry: Any, view: Any, router: Any, spawn: Any):
        self.pod_id = pod_id
        self.registry = registry
        self.view = view
        self.router = router
        self.spawn = spawn

    async def set(self, req: mpb.SetVModelRequest) -> VModelRecord:
        vid = req.vModelId
        target = req.targetModelId
        try:
            operations.validate_model_id(vid, what="vmodel id")
            operations.validate_model_id(target, what="target model id")
        except operations.ValidationError as exc:
            raise MeshError(grpc.StatusCode.INVALID_ARGUMENT, str(exc)) from exc
        existing = self.view.vmodels.get(vid) or await self.registry.get_vmodel(vid)
        if req.updateOnly and existing is None:
            raise MeshError(grpc.StatusCode.NOT_FOUND, f"vmodel {vid!r} does not exist (updateOnly)")
        if existing is not None and req.owner and existing.owner and existing.owner != req.owner:
            raise MeshError(grpc.StatusCode.ALREADY_EXISTS, f"vmodel {vid!r} is owned by {existing.owner!r}")
        if req.expectedTargetModelId and existing is not None and existing.target != req.expectedTargetModelId:
            raise MeshError(grpc.StatusCode.FAILED_PRECONDITION,
                            f"vmodel {vid!r} targets {existing.target!r}, not {req.expectedTargetModelId!r}")
        if req.HasField("modelInfo") and req.modelInfo.type:
            spec = operations.ModelSpec(target, req.modelInfo.path, req.modelInfo.key or "default", req.modelInfo.type)
            try:
                await operations.register(self.registry, spec, load_now=req.loadNow, writer=self.pod_id)
            except operations.ValidationError as exc:
                raise MeshError(grpc.StatusCode.INVALID_ARGUMENT, str(exc)) from exc
        await self.router.model_record(target)  # NOT_FOUND when the target is not registered

        def begin(v: VModelRecord | None) -> VModelRecord:
            v = v or VModelRecord(vmodel_id=vid, owner=req.owner)
            if not v.active or req.force:
                v.active = target
            v.target = target
            v.auto_delete = req.autoDeleteTargetModel
            v.failed = ""
            v.updated_ms = now_ms()
            return v

        rec = await self.registry.update_vmodel(vid, begin)
        assert rec is not None
        await operations.add_ref(self.registry, target, vid)
        await self.registry.add_event(Event("vmodel", model=target, pod=self.pod_id,
                                            reason=f"vmodel {vid} -> {target}"))
        if rec.active != rec.target:
            if req.sync:
                await self.transition(vid, target)
            else:
                self.spawn(self.transition(vid, target), f"vmodel {vid} transition")
        elif req.loadNow or req.sync:
            if req.sync:
                await self.router.ensure_loaded_anywhere(target)
            else:
                self.spawn(self.router.ensure_loaded_anywhere(target), f"loading {target}")
        return await self.registry.get_vmodel(vid) or rec

    async def transition(self, vid: str, target: str) -> None:
        """Load the target first, then switch active -> target in one transaction."""
        try:
            await self.router.ensure_loaded_anywhere(target)
        except MeshError as exc:
            message = exc.message

            def failed(v: VModelRecord | None) -> VModelRecord | None:
                if v is None or v.target != target:
                    return v
                v.failed = message
                return v

            await self.registry.update_vmodel(vid, failed)
            raise
        old_active: list[str] = []

        def switch(v: VModelRecord | None) -> VModelRecord | None:
            if v is None or v.target != target:
                return v  # superseded by a newer setVModel
            old_active[:] = [v.active] if v.active != target else []
            v.active = target
            v.updated_ms = now_ms()
            return v

        rec = await self.registry.update_vmodel(vid, switch)
        if rec is None or not old_active:
            return
        old = old_active[0]
        await self.registry.add_event(Event("vmodel", model=target, pod=self.pod_id,
                                            reason=f"vmodel {vid} switched {old} -> {target}"))
        old_rec = await operations.remove_ref(self.registry, old, vid)
        if rec.auto_delete and old_rec is not None and not old_rec.refs:
            await self.registry.delete_model(old)
            await self.registry.add_event(Event("unregister", model=old, pod=self.pod_id,
                                                reason=f"auto-deleted after vmodel {vid} moved to {target}"))
