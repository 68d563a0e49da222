"""Running one large request with string tensors in a child process.

onnxruntime converts string (BYTES) tensors between Python objects and its own strings one
element at a time inside a single C call that holds the GIL: for a 60 MB request of 2.6 million
strings that call takes 0.3-0.8 s, and no other thread of the pod (its event loop: health
checks, other models' requests, the etcd lease keepalive) runs meanwhile. That cannot be cut in
slices without knowing what the model computes, so such a request runs in a child process that
has its own GIL: the pod only moves bytes through a pipe (the reads and writes release the GIL)
and answers the serialized response as it comes back.

The child (``python -m plane.pod.isolated``) loads the model from the same local file the pod
loaded, with the same runtime and settings, keeps the last one loaded and exits after
``IDLE_EXIT_S`` without work, or as soon as the pod is gone (its stdin closes, its parent
changes). One request runs at a time: the memory a big request takes is bounded by one
request. Its memory is the child's, outside the pod's model cache, and given back when it exits.

Frames on the pipe: 4-byte big-endian header length, a JSON header, then ``header["size"]``
bytes of payload. Request header: ``{"type", "model_id", "path", "max_elements", "max_bytes"}``
with the serialized ``ModelInferRequest``; answer header ``{"ok": true}`` with the serialized
``ModelInferResponse``, or ``{"ok": false, "code": "<grpc.StatusCode name>", "message": ...}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import pathlib
import struct
import subprocess
import sys
import threading
import time
from typing import IO, Any

import grpc

__all__ = ["IsolatedRunner", "IsolatedError", "IDLE_EXIT_S", "main"]

log = logging.getLogger("mesh.pod.isolated")

IDLE_EXIT_S = 300.0  # a child without work this long exits and gives its memory back
START_TIMEOUT_S = 60.0  # importing onnxruntime and friends in the child
_CHUNK = 1 << 20  # bytes per read/write: each call releases the GIL
_LEN = struct.Struct(">I")


class IsolatedError(Exception):
    """The request failed in the child (``code`` is a grpc.StatusCode), or the child did."""

    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(message)
        self.code = code


def _write_frame(out: IO[bytes], header: dict[str, Any], payload: bytes | memoryview) -> None:
    head = json.dumps(dict(header, size=len(payload))).encode()
    _write_all(out, _LEN.pack(len(head)) + head)
    _write_all(out, payload)
    out.flush()


def _write_all(out: IO[bytes], data: bytes | memoryview) -> None:
    view = memoryview(data).cast("B")
    done = 0
    while done < len(view):  # a raw pipe may take less than it is given
        done += out.write(view[done:done + _CHUNK]) or 0


def _read_exact(inp: IO[bytes], n: int) -> bytes:
    # Chunks of at most _CHUNK, each read with the GIL released, joined once: zero-filling a
    # buffer of n bytes first, then copying it into bytes, would cost twice the GIL time.
    fd = inp.fileno()
    chunks: list[bytes] = []
    got = 0
    while got < n:
        chunk = os.read(fd, min(_CHUNK, n - got))
        if not chunk:
            raise EOFError(f"pipe closed after {got} of {n} bytes")
        chunks.append(chunk)
        got += len(chunk)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _read_frame(inp: IO[bytes]) -> tuple[dict[str, Any], bytes]:
    (n,) = _LEN.unpack(_read_exact(inp, _LEN.size))
    header = json.loads(_read_exact(inp, n))
    return header, _read_exact(inp, int(header["size"]))


class IsolatedRunner:
    """The pod's side: one child process, started on first use, one request at a time."""

    def __init__(self, *, python: str = sys.executable, env: dict[str, str] | None = None):
        self._python = python
        self._env = env
        self._proc: subprocess.Popen[bytes] | None = None
        self._lock = asyncio.Lock()
        self.runs = 0
        self.failures = 0  # children that died or answered nonsense (each logged)

    async def run(self, *, model_type: str, model_id: str, path: str, raw: bytes,
                  max_elements: int, max_bytes: int) -> bytes:
        """The serialized ModelInferResponse for the serialized request ``raw``; raises
        IsolatedError with the status the request deserves."""
        header = {"type": model_type, "model_id": model_id, "path": path,
                  "max_elements": max_elements, "max_bytes": max_bytes}
        async with self._lock:
            answer, payload = await asyncio.to_thread(self._exchange, header, raw)
        self.runs += 1
        if not answer.get("ok"):
            code = getattr(grpc.StatusCode, str(answer.get("code")), grpc.StatusCode.INTERNAL)
            raise IsolatedError(code, str(answer.get("message", "the isolated run failed")))
        return payload

    def _exchange(self, header: dict[str, Any], raw: bytes) -> tuple[dict[str, Any], bytes]:
        proc = self._child()
        assert proc.stdin is not None and proc.stdout is not None
        try:
            _write_frame(proc.stdin, header, raw)
            return _read_frame(proc.stdout)
        except (OSError, EOFError, ValueError) as exc:
            self.failures += 1
            status = proc.poll()
            log.error("isolated run of %s failed: %s (child exit status %s); a new child starts next time",
                      header.get("model_id"), exc, status)
            self._stop_child()
            raise IsolatedError(grpc.StatusCode.INTERNAL,
                                f"the process running this large request died (exit status {status})") from exc

    def _child(self) -> subprocess.Popen[bytes]:
        if self._proc is not None:
            status = self._proc.poll()
            if status is None and not _dying(self._proc.pid):
                return self._proc
            self.failures += 1
            log.warning("the isolated-run child exited between requests (status %s); starting a new one", status)
            self._stop_child()
        env = dict(self._env if self._env is not None else os.environ)
        env["MESH_ISOLATED_PARENT"] = str(os.getpid())
        self._proc = subprocess.Popen([self._python, "-m", "plane.pod.isolated"], stdin=subprocess.PIPE,
                                      stdout=subprocess.PIPE, env=env, bufsize=0)
        return self._proc

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None and self._proc.poll() is None else None

    def _stop_child(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        for stream in (proc.stdin, proc.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):  # already closed by a dead child: nothing to flush
                    stream.close()
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)

    def close(self) -> None:
        self._stop_child()


def _dying(pid: int) -> bool:
    """Killed but not yet reapable: the kernel shows the process as a zombie while its other
    threads still exit, and ``waitpid`` says nothing until they have (Linux's /proc; elsewhere
    False)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            state = f.read().rpartition(b")")[2].split()[0]
    except (OSError, IndexError):
        return False
    return state in (b"Z", b"X")


# --- the child ---------------------------------------------------------------------------------

def _die_with_parent(parent: int, *, every_s: float = 1.0) -> None:
    """Exit once the pod is gone. (Not ``PR_SET_PDEATHSIG``: it fires when the *thread* that
    started the child ends, and the pod starts it from a worker thread.) Stdin closing ends the
    child too; this covers a child busy with a request when the pod dies."""

    def watch() -> None:
        while True:
            if os.getppid() != parent:
                os._exit(0)
            time.sleep(every_s)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def _serve_one(header: dict[str, Any], raw: bytes, loaded: dict[str, Any]) -> tuple[dict[str, Any], bytes]:
    from plane import runtimes
    from plane.proto import inference_pb2 as ipb
    from plane.tensors import TensorError, decode_inputs, encode_outputs

    path = pathlib.Path(header["path"])
    try:
        key = f"{header['type']}|{path}|{path.stat().st_mtime_ns}"
    except OSError:
        return {"ok": False, "code": "UNAVAILABLE", "message": "the model file is gone from this pod"}, b""
    if loaded.get("key") != key:
        loaded.clear()
        loaded["sess"] = runtimes.load(header["type"], header["model_id"], path)
        loaded["key"] = key
    sess = loaded["sess"]
    try:
        request = ipb.ModelInferRequest.FromString(raw)
    except Exception:  # noqa: BLE001 - protobuf's DecodeError and friends: bad client bytes
        return {"ok": False, "code": "INVALID_ARGUMENT",
                "message": "the request is not a valid ModelInferRequest message"}, b""
    try:
        inputs = decode_inputs(request, sess.inputs, max_elements=int(header["max_elements"]),
                               max_bytes=int(header["max_bytes"]))
        requested = [o.name for o in request.outputs] if request.outputs else None
        outputs = sess.run(inputs, requested)
        response = ipb.ModelInferResponse(model_name=header["model_id"], id=request.id)
        encode_outputs(response, outputs, requested)
    except TensorError as exc:
        return {"ok": False, "code": "INVALID_ARGUMENT", "message": str(exc)}, b""
    return {"ok": True}, response.SerializeToString()


def main() -> None:
    """The child's loop: a request frame in, an answer frame out, until stdin closes or idle."""
    _die_with_parent(int(os.environ.get("MESH_ISOLATED_PARENT", "0")) or os.getppid())
    logging.basicConfig(level=logging.INFO, format="%(asctime)s isolated %(levelname)s %(message)s")
    # Frames go out on a private copy of stdout; whatever a library prints goes to stderr (the
    # pod's log) instead of corrupting them.
    inp = sys.stdin.buffer
    out = os.fdopen(os.dup(1), "wb", buffering=0)
    os.dup2(2, 1)
    loaded: dict[str, Any] = {}
    idle = threading.Timer(IDLE_EXIT_S, lambda: os._exit(0))
    idle.daemon = True
    idle.start()
    while True:
        try:
            header, raw = _read_frame(inp)
        except EOFError:
            return
        idle.cancel()
        try:
            answer, payload = _serve_one(header, raw, loaded)
        except Exception as exc:  # noqa: BLE001 - reported to the pod, which logs and counts it
            log.exception("isolated run of %s failed", header.get("model_id"))
            answer, payload = {"ok": False, "code": "INTERNAL", "message": f"{type(exc).__name__}: {exc}"[:500]}, b""
        del raw
        _write_frame(out, answer, payload)
        idle = threading.Timer(IDLE_EXIT_S, lambda: os._exit(0))
        idle.daemon = True
        idle.start()


if __name__ == "__main__":
    main()
