"""grpcio stubs for the CRI, generated from our proto/ at test time."""

import contextlib
import importlib
import shutil
import sys
import tempfile
from pathlib import Path

from common.crispd import REPO


@contextlib.contextmanager
def cri_stubs():
    """(api_pb2, api_pb2_grpc) generated from proto/runtime/v1/api.proto
    with grpcio-tools into a temporary directory, importable while the
    context lasts."""
    from grpc_tools import protoc

    out = Path(tempfile.mkdtemp(prefix="crisp-stubs-"))
    proto_root = REPO / "proto"
    rc = protoc.main(
        [
            "grpc_tools.protoc",
            f"-I{proto_root}",
            f"--python_out={out}",
            f"--grpc_python_out={out}",
            str(proto_root / "runtime" / "v1" / "api.proto"),
        ]
    )
    assert rc == 0, "protoc failed on proto/runtime/v1/api.proto"
    sys.path.insert(0, str(out))
    try:
        pb2 = importlib.import_module("runtime.v1.api_pb2")
        pb2_grpc = importlib.import_module("runtime.v1.api_pb2_grpc")
        yield pb2, pb2_grpc
    finally:
        sys.path.remove(str(out))
        shutil.rmtree(out, ignore_errors=True)
