"""The management API's semantics equal ModelMesh's, on the wire: a client generated from the
project's own mmesh.proto against real pods over a real etcd.

Each case names what it was checked against in kserve/modelmesh: ModelMesh.java
(``registerModel``, ``deleteModel``), ModelMeshApi.java (``toStatus``), VModelManager.java
(``updateVModel``, ``deleteVModel``, ``getVModelStatus``, ``decModelRefsInTxn``); and in
kserve/modelmesh-serving, controllers/predictor_controller.go (what the controller sends and
expects). See docs/modelmesh-compat.md.
"""

from __future__ import annotations

import grpc
import pytest

from plane import operations
from plane.proto import mmesh_pb2 as mpb
from plane.proto import mmesh_pb2_grpc as mgrpc
from tests.support import uid, wait_for

pytestmark = pytest.mark.slow

MS = mpb.ModelStatusInfo
VS = mpb.VModelStatusInfo
TINY = "tiny/model.onnx"


@pytest.fixture
def mm(endpoints):
    """A ModelMesh stub on one pod; ``mm.at(i)`` on pod i."""
    channels = [grpc.insecure_channel(ep) for ep in endpoints]
    stubs = [mgrpc.ModelMeshStub(ch) for ch in channels]

    class Stubs:
        def __getattr__(self, name):
            return getattr(stubs[0], name)

        def at(self, i: int) -> mgrpc.ModelMeshStub:
            return stubs[i % len(stubs)]

    try:
        yield Stubs()
    finally:
        for ch in channels:
            ch.close()


def code_of(call, *args, **kw) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as err:
        call(*args, timeout=30, **kw)
    return err.value.code()


def info(path: str = TINY, type: str = "onnx") -> mpb.ModelInfo:
    return mpb.ModelInfo(type=type, path=path)


def model_status(mm, model_id: str) -> int:
    return mm.getModelStatus(mpb.GetStatusRequest(modelId=model_id), timeout=30).status


# -- registerModel / unregisterModel -------------------------------------------------------------


def test_unregister_of_an_unknown_model_is_ok(mm):
    # ModelMesh.java deleteModel: "while (mr != null) { // fine if not found"
    mm.unregisterModel(mpb.UnregisterModelRequest(modelId=uid("never-registered")), timeout=30)
    model_id = uid("twice")
    mm.registerModel(mpb.RegisterModelRequest(modelId=model_id, modelInfo=info()), timeout=30)
    for i in range(2):  # the second time it is already gone: still OK
        mm.at(i).unregisterModel(mpb.UnregisterModelRequest(modelId=model_id), timeout=30)
    assert model_status(mm, model_id) == MS.NOT_FOUND
    # an empty id is still invalid (ModelMeshApi.validateModelId)
    assert code_of(mm.unregisterModel, mpb.UnregisterModelRequest(modelId="")) == grpc.StatusCode.INVALID_ARGUMENT


def test_register_same_info_is_idempotent_other_info_is_already_exists(mm, plane_client):
    model_id = uid("reg")
    req = mpb.RegisterModelRequest(modelId=model_id, modelInfo=info())
    first = mm.registerModel(req, timeout=30)
    assert first.status == MS.NOT_LOADED
    again = mm.at(1).registerModel(req, timeout=30)  # any pod, same answer
    assert again.status == MS.NOT_LOADED
    # ModelMesh.java registerModel: "Model already exists with different attribute values",
    # which ModelMeshApi.toStatus maps to ALREADY_EXISTS (not INVALID_ARGUMENT)
    other = mpb.RegisterModelRequest(modelId=model_id, modelInfo=info(path="corrupt/model.onnx"))
    with pytest.raises(grpc.RpcError) as err:
        mm.at(2).registerModel(other, timeout=30)
    assert err.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert "already registered" in err.value.details()
    assert plane_client.get_model(model_id).path == TINY  # unchanged
    # the same rule for the plane's own clients: AlreadyExists is a ValidationError
    with pytest.raises(operations.AlreadyExists):
        plane_client.register_model(model_id, path="corrupt/model.onnx")
    with pytest.raises(operations.ValidationError):
        plane_client.register_model(model_id, path="corrupt/model.onnx")
    assert plane_client.register_model(model_id, path=TINY).path == TINY  # identical: fine
    # bad input is still INVALID_ARGUMENT
    bad = mpb.RegisterModelRequest(modelId=uid("bad"), modelInfo=info(type=""))
    assert code_of(mm.registerModel, bad) == grpc.StatusCode.INVALID_ARGUMENT


# -- vmodels: autoDeleteTargetModel owns the target ----------------------------------------------


def set_vm(mm, vmodel_id: str, target: str, **kw) -> mpb.VModelStatusInfo:
    return mm.setVModel(mpb.SetVModelRequest(vModelId=vmodel_id, targetModelId=target, **kw), timeout=60)


def test_delete_vmodel_deletes_the_target_it_owns_when_nothing_else_refers_to_it(mm, plane_client):
    # modelmesh-serving's controller: SetVModel(owner=sourceId, autoDeleteTargetModel=true, modelInfo=...)
    target, a, b = uid("owned"), uid("vm-a"), uid("vm-b")
    st = set_vm(mm, a, target, modelInfo=info(), autoDeleteTargetModel=True, owner="ksp")
    assert st.status == VS.DEFINED and st.activeModelId == target and st.owner == "ksp"
    assert plane_client.get_model(target).auto_delete  # created by the vmodel: owned
    set_vm(mm.at(1), a, target, modelInfo=info(), autoDeleteTargetModel=True, owner="ksp")  # reconcile again
    set_vm(mm.at(2), b, target)  # a second vmodel refers to it
    assert sorted(plane_client.get_model(target).refs) == sorted([a, b])
    # registered with another vmodel's reference: unregistering it is refused (FAILED_PRECONDITION)
    assert code_of(mm.unregisterModel, mpb.UnregisterModelRequest(modelId=target)) == \
        grpc.StatusCode.FAILED_PRECONDITION
    mm.deleteVModel(mpb.DeleteVModelRequest(vModelId=a, owner="ksp"), timeout=30)
    assert model_status(mm, target) == MS.NOT_LOADED  # b still refers to it
    assert plane_client.get_model(target).refs == [b]
    mm.at(1).deleteVModel(mpb.DeleteVModelRequest(vModelId=b), timeout=30)
    # VModelManager.decModelRefsInTxn: refcount 0 and autoDelete -> deleted with the vmodel
    assert model_status(mm, target) == MS.NOT_FOUND
    assert plane_client.get_model(target) is None


def test_a_registered_target_is_not_owned_even_with_auto_delete(mm, plane_client):
    # mmesh proto: autoDeleteTargetModel "applies only if modelInfo is provided"
    target, vm = uid("registered"), uid("vm")
    plane_client.register_model(target, path=TINY)
    set_vm(mm, vm, target, autoDeleteTargetModel=True)
    mm.deleteVModel(mpb.DeleteVModelRequest(vModelId=vm), timeout=30)
    rec = plane_client.get_model(target)
    assert rec is not None and rec.refs == [] and not rec.auto_delete
    mm.unregisterModel(mpb.UnregisterModelRequest(modelId=target), timeout=30)  # free to go now


def test_set_vmodel_with_other_model_info_than_the_registered_target_is_already_exists(mm, plane_client):
    target, vm = uid("taken"), uid("vm")
    plane_client.register_model(target, path=TINY)
    # VModelManager.updateVModel: "Target model ... already exists with different attribute values"
    req = mpb.SetVModelRequest(vModelId=vm, targetModelId=target, modelInfo=info(path="corrupt/model.onnx"))
    assert code_of(mm.setVModel, req) == grpc.StatusCode.ALREADY_EXISTS
    assert mm.getVModelStatus(mpb.GetVModelStatusRequest(vModelId=vm), timeout=30).status == VS.NOT_FOUND
    # no modelInfo and no such target: NOT_FOUND
    missing = mpb.SetVModelRequest(vModelId=vm, targetModelId=uid("nowhere"))
    assert code_of(mm.setVModel, missing) == grpc.StatusCode.NOT_FOUND
    assert plane_client.get_model(target).refs == []  # nothing was left behind


def test_a_superseded_pending_target_is_released(mm, plane_client):
    # VModelManager.updateVModel: a new target replaces a pending one (prevTargetIdToDelete),
    # whose reference is dropped and which is deleted when owned and unreferenced
    active, vm = uid("active"), uid("vm")
    set_vm(mm, vm, active, modelInfo=info(), autoDeleteTargetModel=True, loadNow=True, sync=True)
    assert plane_client.get_model(active).loaded_on()
    owned_pending, plain_pending, final = uid("pend-owned"), uid("pend-plain"), uid("final")
    # a pending target that cannot load (a corrupt file): the transition stays pending or fails
    set_vm(mm, vm, owned_pending, modelInfo=info(path="corrupt/model.onnx"), autoDeleteTargetModel=True)
    assert plane_client.get_vmodel(vm).target == owned_pending
    plane_client.register_model(plain_pending, path="corrupt/model.onnx")
    set_vm(mm.at(1), vm, plain_pending)
    assert plane_client.get_model(owned_pending) is None  # owned and unreferenced: deleted
    assert model_status(mm, owned_pending) == MS.NOT_FOUND
    st = set_vm(mm.at(2), vm, final, modelInfo=info(), autoDeleteTargetModel=True, sync=True)
    assert st.activeModelId == final and st.status == VS.DEFINED
    assert plane_client.get_model(plain_pending).refs == []  # released: it can be unregistered now
    mm.unregisterModel(mpb.UnregisterModelRequest(modelId=plain_pending), timeout=30)
    assert plane_client.get_model(plain_pending) is None
    # the old active was owned by the vmodel: deleted after the switch
    wait_for(lambda: plane_client.get_model(active) is None, 20, "the old owned active model to be deleted")
    mm.deleteVModel(mpb.DeleteVModelRequest(vModelId=vm), timeout=30)
    assert plane_client.get_model(final) is None


# -- vmodels: owner ------------------------------------------------------------------------------


def test_owner_scopes_vmodels_as_modelmesh_does(mm, plane_client):
    target, vm = uid("t"), uid("owned-vm")
    plane_client.register_model(target, path=TINY)
    st = set_vm(mm, vm, target, owner="alice")
    assert st.owner == "alice"
    # getVModelStatus: absentOrOwnerMismatch -> the empty status (NOT_FOUND)
    other = mm.at(1).getVModelStatus(mpb.GetVModelStatusRequest(vModelId=vm, owner="bob"), timeout=30)
    assert other.status == VS.NOT_FOUND and other.activeModelId == "" and other.owner == ""
    mine = mm.getVModelStatus(mpb.GetVModelStatusRequest(vModelId=vm, owner="alice"), timeout=30)
    assert mine.status == VS.DEFINED and mine.owner == "alice"
    anyone = mm.getVModelStatus(mpb.GetVModelStatusRequest(vModelId=vm), timeout=30)
    assert anyone.status == VS.DEFINED  # no owner given: no check
    # setVModel on another owner's vmodel: ALREADY_EXISTS ("already exists with different owner");
    # modelmesh-serving reads this as "Predictor already exists ... from a different source"
    assert code_of(mm.at(2).setVModel, mpb.SetVModelRequest(vModelId=vm, targetModelId=target, owner="bob")) == \
        grpc.StatusCode.ALREADY_EXISTS
    set_vm(mm, vm, target)  # no owner: allowed, the owner stays
    assert plane_client.get_vmodel(vm).owner == "alice"
    # deleteVModel of another owner's vmodel: "all good", nothing deleted
    mm.deleteVModel(mpb.DeleteVModelRequest(vModelId=vm, owner="bob"), timeout=30)
    assert plane_client.get_vmodel(vm) is not None
    mm.deleteVModel(mpb.DeleteVModelRequest(vModelId=vm, owner="alice"), timeout=30)
    assert plane_client.get_vmodel(vm) is None
    mm.deleteVModel(mpb.DeleteVModelRequest(vModelId=vm, owner="alice"), timeout=30)  # absent: OK
    # a vmodel without owner does not match a named owner
    plain = uid("plain-vm")
    set_vm(mm, plain, target)
    assert code_of(mm.setVModel, mpb.SetVModelRequest(vModelId=plain, targetModelId=target, owner="carol")) == \
        grpc.StatusCode.ALREADY_EXISTS
    assert mm.getVModelStatus(mpb.GetVModelStatusRequest(vModelId=plain, owner="carol"),
                              timeout=30).status == VS.NOT_FOUND
    mm.deleteVModel(mpb.DeleteVModelRequest(vModelId=plain), timeout=30)
    assert plane_client.get_model(target).refs == []


def test_update_only_and_expected_target(mm, plane_client):
    a, b, vm = uid("a"), uid("b"), uid("vm")
    plane_client.register_model(a, path=TINY)
    plane_client.register_model(b, path=TINY)
    # updateOnly on a vmodel that does not exist: NOT_FOUND
    assert code_of(mm.setVModel, mpb.SetVModelRequest(vModelId=vm, targetModelId=a, updateOnly=True)) == \
        grpc.StatusCode.NOT_FOUND
    # expectedTargetModelId on an absent vmodel: only when it equals the target
    assert code_of(mm.setVModel, mpb.SetVModelRequest(vModelId=vm, targetModelId=a, expectedTargetModelId=b)) == \
        grpc.StatusCode.FAILED_PRECONDITION
    set_vm(mm, vm, a, expectedTargetModelId=a)
    # the existing target must be the expected one (or already the requested one)
    assert code_of(mm.setVModel, mpb.SetVModelRequest(vModelId=vm, targetModelId=b, expectedTargetModelId=b)) == \
        grpc.StatusCode.FAILED_PRECONDITION
    set_vm(mm, vm, a, expectedTargetModelId=b)  # target already a: fine
    st = set_vm(mm, vm, b, expectedTargetModelId=a, force=True)
    assert st.activeModelId == b
    assert plane_client.get_model(a).refs == []  # the forced switch released the old active
    mm.deleteVModel(mpb.DeleteVModelRequest(vModelId=vm), timeout=30)
    assert plane_client.get_model(b).refs == []
