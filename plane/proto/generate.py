"""Regenerate the gRPC Python modules from the .proto files beside this script.

Run ``python -m plane.proto.generate`` from the repository root. The output is
committed so that installing the package needs no code generator; a test checks
that regenerating gives the same files, so the committed code never drifts from
the .proto sources.
"""

from __future__ import annotations

import pathlib
import re
import sys

PROTO_DIR = pathlib.Path(__file__).resolve().parent
PROTOS = ("inference.proto", "mmesh.proto")


def generate(out_dir: pathlib.Path = PROTO_DIR) -> list[pathlib.Path]:
    """Run protoc (from grpcio-tools) and make the imports package-relative."""
    from grpc_tools import protoc  # build-time tool, not a runtime dependency

    written: list[pathlib.Path] = []
    for proto in PROTOS:
        rc = protoc.main(
            [
                "protoc",
                f"-I{PROTO_DIR}",
                f"--python_out={out_dir}",
                f"--pyi_out={out_dir}",
                f"--grpc_python_out={out_dir}",
                str(PROTO_DIR / proto),
            ]
        )
        if rc != 0:
            raise RuntimeError(f"protoc failed on {proto} (exit {rc})")
        stem = proto.removesuffix(".proto")
        # Register our descriptors in a private pool, not protobuf's process-wide default one:
        # clients such as tritonclient register their own copy of the KServe "inference"
        # package there, and two files defining one symbol cannot share a pool. The wire
        # format (package, service and field names/numbers) is unaffected.
        pb2_file = out_dir / f"{stem}_pb2.py"
        text = pb2_file.read_text()
        text = text.replace(
            "_descriptor_pool.Default().AddSerializedFile(",
            "_private_pool.POOL.AddSerializedFile(",
        )
        text = text.replace(
            "from google.protobuf import descriptor_pool as _descriptor_pool\n",
            "from google.protobuf import descriptor_pool as _descriptor_pool\nfrom . import _private_pool\n",
        )
        pb2_file.write_text(text)
        grpc_file = out_dir / f"{stem}_pb2_grpc.py"
        # protoc writes "import x_pb2 as ..." which only works with the folder on
        # sys.path; rewrite it to a relative import inside the plane.proto package.
        text = grpc_file.read_text()
        text = re.sub(rf"^import {stem}_pb2 as", f"from . import {stem}_pb2 as", text, flags=re.M)
        grpc_file.write_text(text)
        written += [out_dir / f"{stem}_pb2.py", out_dir / f"{stem}_pb2.pyi", grpc_file]
    return written


if __name__ == "__main__":
    out = pathlib.Path(sys.argv[1]) if len(sys.argv) > 1 else PROTO_DIR
    for path in generate(out):
        print(path)
