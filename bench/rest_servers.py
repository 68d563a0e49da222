"""Which HTTP server should carry the pods' KServe V2 REST front door?

The REST server has to run on the pod's own asyncio loop (grpc.aio's), in the pod's process,
so the candidates are asyncio servers that can be started programmatically on a running loop:

* ``aiohttp``         — aiohttp's low-level ``web.Server`` (llhttp C parser) on ``loop.create_server``
* ``uvicorn``         — uvicorn with httptools and a minimal ASGI app, started with
                        ``Server.startup()`` (not ``serve()``, which would take the process's signals)
* ``uvicorn-h11``     — the same with the pure-Python h11 parser (uvicorn's default without httptools)
* ``httptools-floor`` — a bare keep-alive protocol on httptools: what HTTP parsing costs at least
* ``plane-rest``      — the chosen one as shipped: ``plane.rest.start_rest`` (aiohttp) with a stub
                        pod whose router echoes the input, so JSON -> protobuf -> JSON, the limits
                        and the ``mm-*`` header reading are all in the measurement

Every server does the same work per request: read the body, ``json.loads``, await a stub infer
function (echo the input as output ``y``), ``json.dumps``. Each runs in its own process; the
client (aiohttp, one process, keep-alive connections) drives ``POST /v2/models/m/infer`` with a
small JSON body at concurrency 1 and 8, the servers interleaved rep by rep in one run.

    python bench/rest_servers.py [--seconds 3] [--reps 3] [--concurrency 1 8] [--servers aiohttp uvicorn]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import multiprocessing
import platform
import socket
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

BODY = json.dumps({"id": "1", "inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32",
                                          "data": [1.0, 2.0, 3.0, 4.0]}]}).encode()
PATH = "/v2/models/m/infer"


async def stub_infer(model: str, req: dict[str, Any]) -> dict[str, Any]:
    inp = req["inputs"][0]
    return {"model_name": model, "id": req.get("id", ""),
            "outputs": [{"name": "y", "shape": inp["shape"], "datatype": inp["datatype"], "data": inp["data"]}]}


def _model(path: str) -> str:
    return path.split("/")[3]


# -- the candidates (each run in its own process) --------------------------------------------------

async def serve_aiohttp(port: int) -> None:
    from aiohttp import web

    async def handler(request: web.BaseRequest) -> web.StreamResponse:
        body = await request.read()
        out = await stub_infer(_model(request.path), json.loads(body))
        return web.Response(body=json.dumps(out).encode(), content_type="application/json")

    server = web.Server(handler, access_log=None, keepalive_timeout=30)
    await asyncio.get_running_loop().create_server(server, "127.0.0.1", port)
    await asyncio.Event().wait()


def _asgi_app() -> Callable[..., Awaitable[None]]:
    headers = [(b"content-type", b"application/json")]

    async def app(scope: dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]) -> None:
        chunks = []
        while True:
            msg = await receive()
            chunks.append(msg.get("body", b""))
            if not msg.get("more_body"):
                break
        out = json.dumps(await stub_infer(_model(scope["path"]), json.loads(b"".join(chunks)))).encode()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [*headers, (b"content-length", str(len(out)).encode())]})
        await send({"type": "http.response.body", "body": out})

    return app


async def _serve_uvicorn(port: int, http: str) -> None:
    import uvicorn

    config = uvicorn.Config(_asgi_app(), host="127.0.0.1", port=port, loop="none", http=http, lifespan="off",
                            log_level="warning", access_log=False, timeout_keep_alive=30)
    server = uvicorn.Server(config)
    config.load()
    server.lifespan = config.lifespan_class(config)
    await server.startup()
    await server.main_loop()


async def serve_uvicorn(port: int) -> None:
    await _serve_uvicorn(port, "httptools")


async def serve_uvicorn_h11(port: int) -> None:
    await _serve_uvicorn(port, "h11")


async def serve_httptools_floor(port: int) -> None:
    import httptools

    class Proto(asyncio.Protocol):
        def connection_made(self, transport: Any) -> None:
            self.transport = transport
            self.parser = httptools.HttpRequestParser(self)
            self.body: list[bytes] = []
            self.url = b""

        def data_received(self, data: bytes) -> None:
            self.parser.feed_data(data)

        def on_url(self, url: bytes) -> None:
            self.url = url

        def on_body(self, body: bytes) -> None:
            self.body.append(body)

        def on_message_complete(self) -> None:
            body, self.body = b"".join(self.body), []
            asyncio.get_running_loop().create_task(self.respond(self.url.decode(), body))

        async def respond(self, path: str, body: bytes) -> None:
            out = json.dumps(await stub_infer(_model(path), json.loads(body))).encode()
            self.transport.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: "
                                 + str(len(out)).encode() + b"\r\n\r\n" + out)

    await asyncio.get_running_loop().create_server(Proto, "127.0.0.1", port)
    await asyncio.Event().wait()


async def serve_plane_rest(port: int) -> None:
    from plane.pod.calls import CallReader
    from plane.proto import inference_pb2 as ipb
    from plane.rest import start_rest
    from plane.settings import MeshSettings

    class Router:
        async def infer(self, request: ipb.ModelInferRequest, call: Any) -> ipb.ModelInferResponse:
            resp = ipb.ModelInferResponse(model_name=request.model_name, id=request.id)
            for inp, raw in zip(request.inputs, request.raw_input_contents, strict=True):
                resp.outputs.add(name="y", datatype=inp.datatype, shape=inp.shape)
                resp.raw_output_contents.append(raw)
            return resp

    class StubPod:
        settings = MeshSettings()
        router = Router()
        calls = CallReader(lambda: None)

        def is_ready(self) -> bool:
            return True

    await start_rest(StubPod(), "127.0.0.1", port)
    await asyncio.Event().wait()


SERVERS: dict[str, Callable[[int], Awaitable[None]]] = {
    "aiohttp": serve_aiohttp,
    "uvicorn": serve_uvicorn,
    "uvicorn-h11": serve_uvicorn_h11,
    "httptools-floor": serve_httptools_floor,
    "plane-rest": serve_plane_rest,
}
NEEDS = {"aiohttp": ("aiohttp",), "uvicorn": ("uvicorn", "httptools"), "uvicorn-h11": ("uvicorn", "h11"),
         "httptools-floor": ("httptools",), "plane-rest": ("aiohttp",)}


def _available(name: str) -> bool:
    import importlib.util

    missing = [m for m in NEEDS[name] if importlib.util.find_spec(m) is None]
    if missing:
        print(f"# skipping {name}: pip install {' '.join(missing)}", file=sys.stderr)
    return not missing


def _run_server(name: str, port: int) -> None:
    asyncio.run(SERVERS[name](port))


# -- the client ---------------------------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_port(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"server on {port} did not start")


async def drive(port: int, concurrency: int, seconds: float) -> tuple[float, list[float], int]:
    import aiohttp

    url = f"http://127.0.0.1:{port}{PATH}"
    lat: list[float] = []
    errors = 0
    conn = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=conn, headers={"Content-Type": "application/json"}) as session:
        async def one() -> None:
            nonlocal errors
            t0 = time.perf_counter()
            async with session.post(url, data=BODY) as resp:
                await resp.read()
                if resp.status != 200:
                    errors += 1
            lat.append((time.perf_counter() - t0) * 1000)

        async def worker(stop: float) -> None:
            while time.perf_counter() < stop:
                await one()

        await asyncio.gather(*(worker(time.perf_counter() + 0.5) for _ in range(concurrency)))  # warm-up
        lat.clear()
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(t0 + seconds) for _ in range(concurrency)))
        return time.perf_counter() - t0, lat, errors


def _cpu(pid: int) -> float:
    import psutil

    t = psutil.Process(pid).cpu_times()
    return float(t.user + t.system)


def _pct(data: list[float], q: float) -> float:
    data = sorted(data)
    return data[min(len(data) - 1, int(q / 100 * len(data)))] if data else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--servers", nargs="+", default=list(SERVERS), choices=list(SERVERS))
    args = ap.parse_args()
    args.servers = [name for name in args.servers if _available(name)]

    ctx = multiprocessing.get_context("spawn")
    ports = {}
    pids = {}
    procs = []
    for name in args.servers:
        ports[name] = _free_port()
        proc = ctx.Process(target=_run_server, args=(name, ports[name]), daemon=True)
        proc.start()
        procs.append(proc)
        pids[name] = proc.pid
    try:
        for port in ports.values():
            _wait_port(port)
        results: dict[tuple[str, int], list[tuple[float, float, float, float]]] = {}
        for rep in range(args.reps):
            order = args.servers if rep % 2 == 0 else list(reversed(args.servers))
            for c in args.concurrency:
                for name in order:
                    cpu0 = _cpu(pids[name])
                    secs, lat, errors = asyncio.run(drive(ports[name], c, args.seconds))
                    cpu_us = (_cpu(pids[name]) - cpu0) / max(1, len(lat)) * 1e6  # includes the 0.5 s warm-up
                    if errors:
                        print(f"# {name} c={c}: {errors} errors", file=sys.stderr)
                    results.setdefault((name, c), []).append((len(lat) / secs, _pct(lat, 50), _pct(lat, 99), cpu_us))
    finally:
        for proc in procs:
            proc.terminate()
            proc.join(5)

    print(f"## REST server candidates — {platform.node()} ({platform.machine()}, {multiprocessing.cpu_count()} "
          f"cores), {datetime.date.today()}, `python bench/rest_servers.py --seconds {args.seconds:g} "
          f"--reps {args.reps}`\n")
    print("POST /v2/models/m/infer, 4-element FP32 JSON body, stub infer, aiohttp client in another process; "
          f"median of {args.reps} interleaved reps (± half-range). Server CPU is the server process's user+system "
          "time per request: the figure that survives a shared machine, where requests/s is mostly the client's.\n")
    print("| server | concurrency | requests/s | p50 ms | p99 ms | server CPU µs/request |")
    print("|---|---:|---:|---:|---:|---:|")
    for c in args.concurrency:
        for name in args.servers:
            reps = results[(name, c)]

            def med(i: int, reps: list[tuple[float, float, float, float]] = reps) -> str:
                vals = [r[i] for r in reps]
                half = (max(vals) - min(vals)) / 2
                fmt = "{:,.0f} ± {:,.0f}" if i in (0, 3) else "{:.2f} ± {:.2f}"
                return fmt.format(statistics.median(vals), half)

            print(f"| {name} | {c} | {med(0)} | {med(1)} | {med(2)} | {med(3)} |")


if __name__ == "__main__":
    main()
