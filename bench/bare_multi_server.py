"""The ceiling for the multi-model benchmark: a bare grpc.aio KServe V2 server with every model
resident. One onnxruntime session per model (CPU provider, one intra-op and one inter-op
thread, as in bench/bare_server.py), chosen by the request's ``model_name``; no registry, no
routing, no cache, no metrics.

    python bench/bare_multi_server.py MODELS_DIR PORT

MODELS_DIR holds ``manifest.json`` as written by ``plane.demo.generate_models`` (each model's
``model_id`` and ``path``); every model in it is loaded at start, before the port opens.
"""

from __future__ import annotations

import asyncio
import json
import pathlib
import sys

import grpc
import numpy as np
import onnxruntime as ort

from plane.proto import inference_pb2 as ipb
from plane.proto import inference_pb2_grpc as igrpc

_NP = {"FP32": np.float32, "FP64": np.float64, "INT64": np.int64, "INT32": np.int32}
_DT = {np.dtype(v): k for k, v in _NP.items()}


def load_all(models_dir: pathlib.Path) -> dict[str, tuple[ort.InferenceSession, list[str]]]:
    manifest = json.loads((models_dir / "manifest.json").read_text())
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    out = {}
    for m in manifest["models"]:
        sess = ort.InferenceSession(str(models_dir / m["path"]), sess_options=opts,
                                    providers=["CPUExecutionProvider"])
        out[m["model_id"]] = (sess, [o.name for o in sess.get_outputs()])
    return out


class BareMulti(igrpc.GRPCInferenceServiceServicer):
    def __init__(self, models_dir: pathlib.Path):
        self.sessions = load_all(models_dir)

    async def ServerReady(self, request, context):  # noqa: N802
        return ipb.ServerReadyResponse(ready=True)

    async def ServerLive(self, request, context):  # noqa: N802
        return ipb.ServerLiveResponse(live=True)

    async def ModelReady(self, request, context):  # noqa: N802
        return ipb.ModelReadyResponse(ready=request.name in self.sessions)

    async def ModelInfer(self, request, context):  # noqa: N802
        try:
            sess, names = self.sessions[request.model_name]
        except KeyError:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"unknown model {request.model_name!r}")
        feeds = {}
        for t, raw in zip(request.inputs, request.raw_input_contents, strict=True):
            feeds[t.name] = np.frombuffer(raw, dtype=_NP[t.datatype]).reshape(tuple(t.shape))
        outs = sess.run(names, feeds)
        resp = ipb.ModelInferResponse(model_name=request.model_name, id=request.id)
        for name, arr in zip(names, outs, strict=True):
            resp.outputs.add(name=name, datatype=_DT[arr.dtype], shape=list(arr.shape))
            resp.raw_output_contents.append(np.ascontiguousarray(arr).tobytes())
        return resp


async def main(models_dir: str, port: int) -> None:
    servicer = BareMulti(pathlib.Path(models_dir))
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    igrpc.add_GRPCInferenceServiceServicer_to_server(servicer, server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
