"""The committed generated code is exactly what the .proto files produce."""

import pathlib

from plane.proto import generate


def test_generated_code_matches_proto_sources(tmp_path):
    written = generate.generate(tmp_path)
    for path in written:
        committed = generate.PROTO_DIR / path.name
        assert committed.read_text() == path.read_text(), f"{path.name} is stale: run python -m plane.proto.generate"


def test_wire_names_match_the_spec():
    from plane.proto import inference_pb2, mmesh_pb2

    svc = inference_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    assert svc.full_name == "inference.GRPCInferenceService"
    assert {m.name for m in svc.methods} == {"ServerLive", "ServerReady", "ModelReady", "ServerMetadata",
                                             "ModelMetadata", "ModelInfer"}
    req = inference_pb2.ModelInferRequest.DESCRIPTOR
    assert req.fields_by_name["raw_input_contents"].number == 7
    mm = mmesh_pb2.DESCRIPTOR.services_by_name["ModelMesh"]
    assert mm.full_name == "mmesh.ModelMesh"
    assert mmesh_pb2.SetVModelRequest.DESCRIPTOR.fields_by_name["expectedTargetModelId"].number == 9
    assert pathlib.Path(generate.PROTO_DIR / "inference.proto").exists()
