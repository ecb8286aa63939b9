"""Fixtures: a running crispd per test on temporary paths (the binary and
the gRPC stubs come from tests/conftest.py)."""

import grpc
import pytest

import harness


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
def channel(crispd):
    ch = grpc.insecure_channel(crispd.target)
    yield ch
    ch.close()


@pytest.fixture
def runtime(cri, channel):
    _, pb2_grpc = cri
    return pb2_grpc.RuntimeServiceStub(channel)
