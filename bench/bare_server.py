"""The floor for the hit-path benchmark: a bare grpc.aio KServe V2 server around one
onnxruntime session. No registry, no routing, no cache, no metrics; just decode, run, encode.

    python bench/bare_server.py MODEL.onnx PORT
"""

from __future__ import annotations

import asyncio
import sys

import grpc
import numpy as np
import onnxruntime as ort

from plane.proto import inference_pb2 as ipb
from plane.proto import inference_pb2_grpc as igrpc

_NP = {"FP32": np.float32, "FP64": np.float64, "INT64": np.int64, "INT32": np.int32}
_DT = {np.dtype(v): k for k, v in _NP.items()}


class Bare(igrpc.GRPCInferenceServiceServicer):
    def __init__(self, path: str):
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        self.sess = ort.InferenceSession(path, sess_options=opts, providers=["CPUExecutionProvider"])

    async def ServerReady(self, request, context):  # noqa: N802
        return ipb.ServerReadyResponse(ready=True)

    async def ServerLive(self, request, context):  # noqa: N802
        return ipb.ServerLiveResponse(live=True)

    async def ModelInfer(self, request, context):  # noqa: N802
        feeds = {}
        for t, raw in zip(request.inputs, request.raw_input_contents, strict=True):
            feeds[t.name] = np.frombuffer(raw, dtype=_NP[t.datatype]).reshape(tuple(t.shape))
        names = [o.name for o in self.sess.get_outputs()]
        outs = self.sess.run(names, feeds)
        resp = ipb.ModelInferResponse(model_name=request.model_name, id=request.id)
        for name, arr in zip(names, outs, strict=True):
            resp.outputs.add(name=name, datatype=_DT[arr.dtype], shape=list(arr.shape))
            resp.raw_output_contents.append(np.ascontiguousarray(arr).tobytes())
        return resp


async def main(path: str, port: int) -> None:
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    igrpc.add_GRPCInferenceServiceServicer_to_server(Bare(path), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
