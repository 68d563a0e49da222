"""Ray Serve model multiplexing behind Ray Serve's gRPC proxy, speaking KServe V2: the peer of the
plane in bench/multi_model.py. Runs in Ray's own virtualenv (bench/.venvs/ray), never in the
project's, so it imports only ray, onnxruntime, numpy and the KServe V2 stubs that
bench/multi_model.py compiled into that venv (package ``kserve_v2``, from the project's own
plane/proto/inference.proto, with grpcio-tools).

    bench/.venvs/ray/bin/python bench/ray_multiplex_app.py MODELS_DIR --k K --grpc-port P \
        --http-port H --loads-log FILE [--temp-dir DIR]

One deployment, one replica. ``ModelInfer`` picks the model by Ray Serve's multiplexed model id
(``serve.get_multiplexed_model_id()``, which the gRPC proxy takes from the request's
``multiplexed_model_id`` metadata) and gets its session from a ``@serve.multiplexed`` loader
with ``max_num_models_per_replica=K``: Ray Serve's own LRU, one load at a time per replica. A
load creates an onnxruntime session (CPU provider, one intra-op and one inter-op thread, like
the plane and bench/bare_server.py) in a thread, as the plane does, so that hits keep being
answered meanwhile. Every load appends ``<unix time> <model id> <ms>`` to FILE, which the
benchmark reads for the loads (misses) and their duration.

Prints ``READY`` on stdout when the application is running; SIGTERM shuts Serve and Ray down.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import pathlib
import signal
import sys
import threading
import time

SERVICER = "kserve_v2.inference_pb2_grpc.add_GRPCInferenceServiceServicer_to_server"


def build_app(models_dir: str, k: int, loads_log: str):
    import numpy as np
    import onnxruntime as ort
    from kserve_v2 import inference_pb2 as ipb
    from ray import serve

    np_types = {"FP32": np.float32, "FP64": np.float64, "INT64": np.int64, "INT32": np.int32}
    dt_names = {np.dtype(v): n for n, v in np_types.items()}

    @serve.deployment(num_replicas=1, max_ongoing_requests=256, ray_actor_options={"num_cpus": 0})
    class KServeMultiplexed:
        def __init__(self, models_dir: str, loads_log: str):
            manifest = json.loads((pathlib.Path(models_dir) / "manifest.json").read_text())
            self.paths = {m["model_id"]: str(pathlib.Path(models_dir) / m["path"]) for m in manifest["models"]}
            self.loads_log = loads_log

        @serve.multiplexed(max_num_models_per_replica=k)
        async def get_model(self, model_id: str):
            path = self.paths[model_id]  # KeyError: unknown model (the request fails)

            def make():
                opts = ort.SessionOptions()
                opts.intra_op_num_threads = 1
                opts.inter_op_num_threads = 1
                sess = ort.InferenceSession(path, sess_options=opts, providers=["CPUExecutionProvider"])
                return sess, [o.name for o in sess.get_outputs()]

            t0 = time.perf_counter()
            model = await asyncio.to_thread(make)
            with open(self.loads_log, "a") as f:
                f.write(f"{time.time():.3f} {model_id} {(time.perf_counter() - t0) * 1000:.2f}\n")
            return model

        async def ServerLive(self, request):  # noqa: N802
            return ipb.ServerLiveResponse(live=True)

        async def ServerReady(self, request):  # noqa: N802
            return ipb.ServerReadyResponse(ready=True)

        async def ModelInfer(self, request):  # noqa: N802
            model_id = serve.get_multiplexed_model_id() or request.model_name
            sess, names = await self.get_model(model_id)
            feeds = {}
            for t, raw in zip(request.inputs, request.raw_input_contents, strict=True):
                feeds[t.name] = np.frombuffer(raw, dtype=np_types[t.datatype]).reshape(tuple(t.shape))
            outs = sess.run(names, feeds)
            resp = ipb.ModelInferResponse(model_name=request.model_name, id=request.id)
            for name, arr in zip(names, outs, strict=True):
                resp.outputs.add(name=name, datatype=dt_names[arr.dtype], shape=list(arr.shape))
                resp.raw_output_contents.append(np.ascontiguousarray(arr).tobytes())
            return resp

    return KServeMultiplexed.bind(models_dir, loads_log)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models_dir")
    ap.add_argument("--k", type=int, required=True, help="max_num_models_per_replica")
    ap.add_argument("--grpc-port", type=int, required=True)
    ap.add_argument("--http-port", type=int, required=True)
    ap.add_argument("--loads-log", required=True)
    ap.add_argument("--temp-dir", default=None, help="Ray's session directory (default: Ray's own)")
    ap.add_argument("--num-cpus", type=int, default=os.cpu_count() or 2)
    args = ap.parse_args()

    import ray
    from ray import serve

    pathlib.Path(args.loads_log).touch()
    ray.init(num_cpus=args.num_cpus, include_dashboard=False, logging_level=logging.WARNING,
             object_store_memory=256 * 1024**2, _temp_dir=args.temp_dir, log_to_driver=False)
    serve.start(http_options={"host": "127.0.0.1", "port": args.http_port},
                grpc_options={"port": args.grpc_port, "grpc_servicer_functions": [SERVICER]},
                logging_config={"log_level": "WARNING", "enable_access_log": False})
    serve.run(build_app(args.models_dir, args.k, args.loads_log), name="kserve", route_prefix="/",
              blocking=False)
    print("READY", flush=True)

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    while not stop.wait(0.5):
        pass
    try:
        serve.shutdown()
    finally:
        ray.shutdown()
    sys.exit(0)


if __name__ == "__main__":
    main()
