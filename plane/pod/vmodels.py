"""VModels: aliases that move from one model to another without a gap.

A transition loads the target first, then switches active -> target in one compare-and-swap
(SPEC section 3). A newer ``setVModel`` supersedes a pending one: the switch only happens
while the record still names the same target, and the superseded target is released.

``setVModel`` follows VModelManager.java ``updateVModel`` (kserve/modelmesh): the checks of
``expectedTargetModelId`` (FAILED_PRECONDITION "vmodel ... not found" when it is absent and the
expected id is not the target; "Existing target model ... does not match expected" when the
vmodel targets neither), the target (NOT_FOUND without ``modelInfo`` when it is not registered;
ALREADY_EXISTS when ``modelInfo`` names other attributes than the registered model), the owner
(ALREADY_EXISTS for another owner's vmodel, :func:`plane.operations.check_owner`) and
``updateOnly`` (NOT_FOUND when the vmodel does not exist). A target created here with
``autoDeleteTargetModel`` is owned by the vmodel (``ModelRecord.auto_delete``): released by its
last vmodel, it is deleted (:func:`plane.operations.release`, ModelMesh's ``decModelRefsInTxn``).
"""

from __future__ import annotations

import contextlib
from typing import Any

import grpc

from plane import operations
from plane.pod.errors import MeshError
from plane.proto import mmesh_pb2 as mpb
from plane.records import Event, RegistryError, VModelRecord, now_ms

__all__ = ["VModels"]

_PRECONDITION = grpc.StatusCode.FAILED_PRECONDITION


class VModels:
    def __init__(self, *, pod_id: str, registry: Any, view: Any, router: Any, spawn: Any):
        self.pod_id = pod_id
        self.registry = registry
        self.view = view
        self.router = router
        self.spawn = spawn

    async def set(self, req: mpb.SetVModelRequest) -> VModelRecord:
        vid, target, owner, expected = req.vModelId, req.targetModelId, req.owner, req.expectedTargetModelId
        try:
            operations.validate_model_id(vid, what="vmodel id")
            operations.validate_model_id(target, what="target model id")
        except operations.ValidationError as exc:
            raise MeshError(grpc.StatusCode.INVALID_ARGUMENT, str(exc)) from exc
        existing = await self.registry.get_vmodel(vid)  # a strong read, as ModelMesh's getStrong
        if expected and existing is None and expected != target:
            raise MeshError(_PRECONDITION, f"vmodel {vid!r} not found (expected target {expected!r})")
        if expected and existing is not None:
            operations.check_owner(existing, owner)
            if existing.target not in (expected, target):
                raise MeshError(_PRECONDITION, f"existing target model {existing.target!r} of vmodel {vid!r} "
                                               f"does not match expected {expected!r}")
        info = req.modelInfo if req.HasField("modelInfo") and req.modelInfo != mpb.ModelInfo() else None
        spec = operations.ModelSpec(target, info.path, info.key or "default", info.type) if info else None
        if spec is not None:
            operations.check_spec(spec)  # a ValidationError: INVALID_ARGUMENT at the edge
        model = await self.registry.get_model(target)
        if spec is None and model is None:
            raise MeshError(grpc.StatusCode.NOT_FOUND, f"target model {target!r} not found")
        if spec is not None and model is not None and operations.differs(
                model, operations.record_for(spec, load_now=False)):
            raise operations.AlreadyExists(f"target model {target!r} already exists with different attribute values")
        operations.check_owner(existing, owner)
        if existing is None and req.updateOnly:
            raise MeshError(grpc.StatusCode.NOT_FOUND, f"vmodel {vid!r} not found (updateOnly)")
        if spec is not None and model is None:
            # owned by this vmodel when autoDeleteTargetModel (ModelMesh: it applies only with modelInfo)
            await operations.register(self.registry, spec, load_now=req.loadNow, writer=self.pod_id,
                                      auto_delete=req.autoDeleteTargetModel)
        prev = self.view.models.get(existing.active) if existing is not None else None
        added = await operations.add_ref(self.registry, target, vid,
                                         last_used_ms=prev.last_used_ms if prev is not None else 0)
        old: list[str] = []

        def begin(v: VModelRecord | None) -> VModelRecord:
            operations.check_owner(v, owner)
            v = v or VModelRecord(vmodel_id=vid, owner=owner, active=target, target=target)
            old[:] = [v.active, v.target]
            if not v.active or req.force:
                v.active = target
            v.target = target
            v.auto_delete = req.autoDeleteTargetModel
            v.failed = ""
            v.updated_ms = now_ms()
            return v

        try:
            rec = await self.registry.update_vmodel(vid, begin)
        except Exception:  # another owner's by now, or a registry error: undo the reference
            if added:  # give it back (and the target, if it was created owned just now)
                with contextlib.suppress(RegistryError):
                    await operations.release(self.registry, target, vid, writer=self.pod_id)
            raise
        assert rec is not None
        await self._release_replaced(vid, rec, *old)
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

    async def _release_replaced(self, vid: str, rec: VModelRecord, active: str, pending: str) -> None:
        """Release what this ``setVModel`` replaced: a pending target superseded by a newer one
        (VModelManager.java ``prevTargetIdToDelete``) and, when the switch was forced, the old
        active model (``prevActiveIdToDelete``)."""
        if pending not in ("", active, rec.target):
            await operations.release(self.registry, pending, vid, writer=self.pod_id,
                                     why=f"vmodel {vid} target superseded by {rec.target}")
        if active not in ("", rec.active):
            await operations.release(self.registry, active, vid, delete_unowned=rec.auto_delete,
                                     writer=self.pod_id, why=f"vmodel {vid} moved to {rec.active}")

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
        # deleted when owned (ModelMesh) or the vmodel asked for auto-delete (the plane's --auto-delete)
        await operations.release(self.registry, old, vid, delete_unowned=rec.auto_delete, writer=self.pod_id,
                                 why=f"vmodel {vid} moved to {target}")
