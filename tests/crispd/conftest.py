"""Fixtures: the crispd binary (built once), gRPC stubs generated from our
proto at test time, and a running crispd per test on temporary paths."""

import importlib
import sys
import tempfile
import shutil
from pathlib import Path

import grpc
import pytest

import harness


@pytest.fixture(scope="session")
def crispd_bin():
    return harness.build_crispd()


@pytest.fixture(scope="session")
def cri():
    """(api_pb2, api_pb2_grpc) generated from proto/runtime/v1/api.proto
    into a temporary directory with grpcio-tools."""
    from grpc_tools import protoc

    out = Path(tempfile.mkdtemp(prefix="crisp-stubs-"))
    proto_root = harness.REPO / "proto"
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


@pytest.fixture
def make_crispd(crispd_bin):
    """Factory: make_crispd(config=..., extra_args=..., start=True). Every
    instance is stopped and its directories removed after the test, pass or
    fail."""
    made = []

    def make(config="", extra_args=(), start=True, tcp=False, **kw):
        d = harness.Crispd(crispd_bin, config=config, extra_args=extra_args, **kw)
        made.append(d)
        if tcp:
            d.with_tcp()
        if start:
            d.start()
        return d

    yield make
    for d in reversed(made):
        d.cleanup()


@pytest.fixture
def crispd(make_crispd):
    """A running crispd with an empty config file (built-in defaults)."""
    return make_crispd()


@pytest.fixture
def channel(crispd):
    ch = grpc.insecure_channel(crispd.target)
    yield ch
    ch.close()


@pytest.fixture
def runtime(cri, channel):
    _, pb2_grpc = cri
    return pb2_grpc.RuntimeServiceStub(channel)
