"""Fixtures every suite shares: the crispd binary (built once), the CRI's
grpcio stubs generated from proto/ at test time, and `crispd` and `client`
made by each suite's own `make_crispd`. Run the suites from
the repository's root (`python3 -m pytest -q tests/`), so that pytest loads
this file."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common.crispd import build_crispd  # noqa: E402
from common.stubs import cri_stubs  # noqa: E402


@pytest.fixture(scope="session")
def crispd_bin():
    return build_crispd()


@pytest.fixture(scope="session")
def cri():
    """(api_pb2, api_pb2_grpc) for proto/runtime/v1/api.proto."""
    with cri_stubs() as stubs:
        yield stubs


@pytest.fixture
def crispd(make_crispd):
    """A running crispd from the suite's make_crispd, with its defaults
    (tests/crispd: an empty config file, built-in defaults)."""
    return make_crispd()


@pytest.fixture
def client(crispd):
    """The suite's CRI client of that crispd (tests/images, tests/pods)."""
    return crispd.client
