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
