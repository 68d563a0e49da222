"""The ModelMesh management service (SPEC section 3): protobuf in, registry operations and
loads, protobuf out.

The rules are in :mod:`plane.operations` and :mod:`plane.pod.vmodels`, checked against
kserve/modelmesh (ModelMesh.java ``registerModel``/``deleteModel``, ModelMeshApi.java
``toStatus``, VModelManager.java ``updateVModel``/``deleteVModel``/``getVModelStatus``; see
docs/modelmesh-compat.md): registering an id again with the same info is idempotent, with other
info ALREADY_EXISTS; unregistering an unknown id is OK; deleting an absent or another owner's
vmodel is OK and leaves it alone; another owner's vmodel reads as NOT_FOUND.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from plane import operations
from plane.pod.edge import edge, status_info, vmodel_info
from plane.proto import mmesh_pb2 as mpb
from plane.proto import mmesh_pb2_grpc as mgrpc
from plane.records import ModelRecord

if TYPE_CHECKING:
    from plane.pod.server import Pod

__all__ = ["ManagementServicer"]


class ManagementServicer(mgrpc.ModelMeshServicer):
    def __init__(self, pod: Pod):
        self.pod = pod
        self.router = pod.router

    def _status(self, rec: ModelRecord | None) -> mpb.ModelStatusInfo:
        return status_info(rec, self.pod.membership.reachable)

    @edge
    async def registerModel(self, request, context):  # noqa: N802
        pod = self.pod
        info = request.modelInfo
        spec = operations.ModelSpec(request.modelId, info.path, info.key or "default", info.type)
        rec = await operations.register(pod.registry, spec, load_now=request.loadNow,
                                        last_used_ms=int(request.lastUsedTime), writer=pod.pod_id)
        pod.view.models.setdefault(rec.model_id, rec)
        if request.loadNow:
            if request.sync:
                await self.router.ensure_loaded_anywhere(rec.model_id)
            else:
                pod.spawn(self.router.ensure_loaded_anywhere(rec.model_id), f"loading {rec.model_id}")
        return self._status(await pod.registry.get_model(rec.model_id))

    @edge
    async def unregisterModel(self, request, context):  # noqa: N802
        # an id that is not registered is already done (ModelMesh.java deleteModel): OK either way
        await operations.unregister(self.pod.registry, request.modelId, writer=self.pod.pod_id)
        return mpb.UnregisterModelResponse()

    @edge
    async def getModelStatus(self, request, context):  # noqa: N802
        return self._status(await self.pod.registry.get_model(request.modelId))

    @edge
    async def ensureLoaded(self, request, context):  # noqa: N802
        pod = self.pod
        call = pod.calls.read(context.invocation_metadata())
        hop, purpose = call.hop, call.purpose
        await self.router.model_record(request.modelId)
        if request.lastUsedTime:
            stamp = int(request.lastUsedTime)

            def touch(m: ModelRecord) -> ModelRecord:
                m.last_used_ms = max(m.last_used_ms, stamp)
                return m

            await pod.registry.update_model(request.modelId, touch)
        if request.sync or hop:
            await self.router.ensure_loaded_anywhere(request.modelId, hop=hop, purpose=purpose)
        else:
            pod.spawn(self.router.ensure_loaded_anywhere(request.modelId), f"loading {request.modelId}")
            await asyncio.sleep(0)
        return self._status(await pod.registry.get_model(request.modelId))

    @edge
    async def setVModel(self, request, context):  # noqa: N802
        rec = await self.pod.vmodels.set(request)
        return vmodel_info(rec, self.pod.view.models, self.pod.membership.reachable)

    @edge
    async def deleteVModel(self, request, context):  # noqa: N802
        # absent or another owner's: nothing to do, OK (VModelManager.java deleteVModel)
        pod = self.pod
        await operations.delete_vmodel(pod.registry, request.vModelId, owner=request.owner, writer=pod.pod_id)
        return mpb.DeleteVModelResponse()

    @edge
    async def getVModelStatus(self, request, context):  # noqa: N802
        # another owner's vmodel reads as NOT_FOUND (VModelManager.java getVModelStatus)
        rec = await operations.get_vmodel(self.pod.registry, request.vModelId, owner=request.owner)
        return vmodel_info(rec, self.pod.view.models, self.pod.membership.reachable)
