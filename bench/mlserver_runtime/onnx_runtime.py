"""A minimal MLServer custom runtime: one onnxruntime session, the same settings as
bench/bare_server.py (CPU provider, one intra-op and one inter-op thread).

Loaded by MLServer from ``model-settings.json``::

    {"name": "m", "implementation": "onnx_runtime.OnnxRuntime", "parameters": {"uri": "/abs/model.onnx"}}

with this folder on ``PYTHONPATH``. It runs inside MLServer's own virtualenv, never in the
project's, so it imports only mlserver, onnxruntime and numpy.
"""

from __future__ import annotations

import onnxruntime as ort
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse


class OnnxRuntime(MLModel):
    async def load(self) -> bool:
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        self._sess = ort.InferenceSession(self.settings.parameters.uri, sess_options=opts,
                                          providers=["CPUExecutionProvider"])
        self._outputs = [o.name for o in self._sess.get_outputs()]
        self.ready = True
        return self.ready

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        feeds = {inp.name: NumpyCodec.decode_input(inp) for inp in payload.inputs}
        results = self._sess.run(self._outputs, feeds)
        return InferenceResponse(
            model_name=self.name,
            id=payload.id,
            outputs=[NumpyCodec.encode_output(name, arr) for name, arr in zip(self._outputs, results, strict=True)],
        )
