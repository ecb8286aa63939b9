"""crispd against grpcio, a gRPC client we did not write."""

import json
import threading
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest

import harness

CALL_TIMEOUT = 30  # bounds a hung call; never a speed assertion


@pytest.fixture
def cni_dir(tmp_path):
    d = tmp_path / "cni"
    d.mkdir()
    return d


@pytest.fixture
def served(make_crispd, cni_dir, cri):
    """crispd with a private (empty) CNI directory, and a RuntimeService stub."""
    d = make_crispd(config=f'cni_conf_dir = "{cni_dir}"\n')
    ch = grpc.insecure_channel(d.target)
    yield d, cri[1].RuntimeServiceStub(ch)
    ch.close()


def test_version(runtime, cri):
    pb2, _ = cri
    r = runtime.Version(pb2.VersionRequest(version="v1"), timeout=CALL_TIMEOUT)
    assert r.runtime_name == "crisp"
    assert r.runtime_api_version == "v1"
    assert r.runtime_version


def test_status_conditions_and_verbose_info(served, cri, cni_dir):
    pb2, _ = cri
    _, rt = served
    r = rt.Status(pb2.StatusRequest(), timeout=CALL_TIMEOUT)
    conds = {c.type: c for c in r.status.conditions}
    assert set(conds) == {"RuntimeReady", "NetworkReady"}
    assert conds["RuntimeReady"].status
    assert not conds["NetworkReady"].status
    assert conds["NetworkReady"].reason == "NetworkPluginNotReady"
    assert str(cni_dir) in conds["NetworkReady"].message
    assert dict(r.info) == {}, "info only when verbose"

    (cni_dir / "10-test.conflist").write_text('{"cniVersion": "1.0.0", "name": "t", "plugins": []}')
    r = rt.Status(pb2.StatusRequest(verbose=True), timeout=CALL_TIMEOUT)
    conds = {c.type: c for c in r.status.conditions}
    assert conds["NetworkReady"].status
    info = json.loads(r.info["info"])
    assert info["runtime"] == "crisp"
    assert info["cniConfig"].endswith("10-test.conflist")
    config = json.loads(r.info["config"])
    assert config["cni_conf_dir"] == str(cni_dir)


def test_runtime_config_is_cgroupfs(runtime, cri):
    pb2, _ = cri
    r = runtime.RuntimeConfig(pb2.RuntimeConfigRequest(), timeout=CALL_TIMEOUT)
    assert r.linux.cgroup_driver == pb2.CGROUPFS


def test_update_runtime_config_persists_across_restart(served, cri):
    pb2, pb2_grpc = cri
    d, rt = served
    cidr = "10.244.0.0/16"
    req = pb2.UpdateRuntimeConfigRequest(
        runtime_config=pb2.RuntimeConfig(network_config=pb2.NetworkConfig(pod_cidr=cidr))
    )
    rt.UpdateRuntimeConfig(req, timeout=CALL_TIMEOUT)
    assert json.loads((d.state_dir / "runtime-config.json").read_text()) == {"pod_cidr": cidr}

    assert d.stop() == 0
    d.start()
    with grpc.insecure_channel(d.target) as ch:
        r = pb2_grpc.RuntimeServiceStub(ch).Status(
            pb2.StatusRequest(verbose=True), timeout=CALL_TIMEOUT
        )
    assert json.loads(r.info["info"])["podCIDR"] == cidr


@pytest.mark.parametrize(
    "service,method,request_type",
    [
        # Methods that stay UNIMPLEMENTED until their issue lands.
        ("RuntimeServiceStub", "CheckpointContainer", "CheckpointContainerRequest"),
    ],
)
def test_unimplemented_method_is_named(channel, cri, service, method, request_type):
    pb2, pb2_grpc = cri
    stub = getattr(pb2_grpc, service)(channel)
    with pytest.raises(grpc.RpcError) as e:
        getattr(stub, method)(getattr(pb2, request_type)(), timeout=CALL_TIMEOUT)
    assert e.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert method in e.value.details()


# Every RuntimeService rpc of the schema is served but this one (with its
# issue): checkpoints.
STILL_UNIMPLEMENTED = {"CheckpointContainer"}


def test_every_other_runtime_rpc_is_served(served, cri):
    """Each RuntimeService rpc, called with an empty request on a fresh
    crispd, answers something other than UNIMPLEMENTED (mostly OK or
    INVALID_ARGUMENT for the missing fields), its server streams end; only
    STILL_UNIMPLEMENTED answer UNIMPLEMENTED, naming themselves."""
    pb2, _ = cri
    d, _ = served
    service = pb2.DESCRIPTOR.services_by_name["RuntimeService"]
    seen = set()
    with grpc.insecure_channel(d.target) as ch:
        for m in service.methods:
            if m.name == "GetContainerEvents":
                continue  # a stream that never ends (tests/pods)
            req, resp = getattr(pb2, m.input_type.name), getattr(pb2, m.output_type.name)
            path = f"/runtime.v1.RuntimeService/{m.name}"
            kind = ch.unary_stream if m.server_streaming else ch.unary_unary
            call = kind(path, request_serializer=req.SerializeToString, response_deserializer=resp.FromString)
            try:
                answer = call(req(), timeout=CALL_TIMEOUT)
                if m.server_streaming:
                    assert list(answer) == [], f"{m.name}: nothing to list, no message"
                code, details = grpc.StatusCode.OK, ""
            except grpc.RpcError as e:
                code, details = e.code(), e.details()
            if m.name in STILL_UNIMPLEMENTED:
                assert code == grpc.StatusCode.UNIMPLEMENTED and m.name in details, (m.name, code, details)
            else:
                assert code != grpc.StatusCode.UNIMPLEMENTED, (m.name, details)
            seen.add(m.name)
    assert STILL_UNIMPLEMENTED <= seen
    assert len(seen) == len(service.methods) - 1


def test_unknown_method(channel):
    nope = channel.unary_unary("/runtime.v1.RuntimeService/Nope")
    with pytest.raises(grpc.RpcError) as e:
        nope(b"", timeout=CALL_TIMEOUT)
    assert e.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert "/runtime.v1.RuntimeService/Nope" in e.value.details()


@pytest.mark.parametrize("timeout", [0.001, 0.000001], ids=["1ms", "1us"])
def test_client_deadline(channel, runtime, cri, timeout):
    """A call with a 1 ms (or already expired) deadline ends DEADLINE_EXCEEDED
    on the client, and the channel goes on working.

    Version answers in well under a millisecond, so a plain Version call
    races the deadline: grpcio sends the remaining time rounded up to
    `grpc-timeout: 1m` at times, crispd answers within it, and grpcio
    reports OK when the answer beats its own timer. To make the outcome
    certain the request is never finished before the deadline: the call
    is made with a request stream that waits."""
    pb2, _ = cri
    release = threading.Event()

    def requests():
        release.wait(CALL_TIMEOUT)
        yield pb2.VersionRequest()

    call = channel.stream_unary(
        harness.VERSION_PATH,
        request_serializer=pb2.VersionRequest.SerializeToString,
        response_deserializer=pb2.VersionResponse.FromString,
    )
    try:
        with pytest.raises(grpc.RpcError) as e:
            call(requests(), timeout=timeout)
    finally:
        release.set()
    assert e.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert runtime.Version(pb2.VersionRequest(), timeout=CALL_TIMEOUT).runtime_name == "crisp"


def test_server_enforces_grpc_timeout(crispd, runtime, cri):
    """crispd's own deadline: a request that never completes, sent with
    grpc-timeout 50m, is answered DEADLINE_EXCEEDED by crispd itself (the
    raw client has no deadline of its own)."""
    with harness.RawH2(crispd.socket) as c:
        headers = harness.grpc_request_headers(extra=[("grpc-timeout", "50m")])
        c.send(harness.frame("HEADERS", harness.END_HEADERS, 1, harness.header_block(headers)))
        h, data, trailers = c.response(1)
        assert h[":status"] == "200"
        assert trailers["grpc-status"] == "4", trailers  # DEADLINE_EXCEEDED
        # The rest of the request is refused without error (RFC 9113 §8.1):
        # RST_STREAM(CANCEL) would turn the status into CANCELLED at clients.
        rst = c.read_until(lambda f: f.kind == "RST_STREAM" and f.stream_id == 1)
        assert rst.error_code() == "NO_ERROR"
        # The connection is still good for a normal call.
        _, data, trailers = c.call(3)
        assert trailers["grpc-status"] == "0"
    pb2, _ = cri
    assert runtime.Version(pb2.VersionRequest(), timeout=CALL_TIMEOUT).runtime_name == "crisp"


def test_server_refuses_an_expired_deadline(crispd):
    """`grpc-timeout: 1n` (what grpcio sends once its deadline has passed)
    on a complete request: crispd answers DEADLINE_EXCEEDED rather than
    doing the work."""
    with harness.RawH2(crispd.socket) as c:
        _, data, trailers = c.call(1, extra=[("grpc-timeout", "1n")])
        assert trailers["grpc-status"] == "4", trailers
        assert data == b""
        _, data, trailers = c.call(3, extra=[("grpc-timeout", "10S")])
        assert trailers["grpc-status"] == "0"


def test_200_concurrent_calls_from_8_threads(runtime, cri):
    pb2, _ = cri

    def one(i):
        return runtime.Version(pb2.VersionRequest(version=f"v{i}"), timeout=CALL_TIMEOUT)

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(one, range(200)))
    assert len(results) == 200
    assert all(r.runtime_name == "crisp" for r in results)


def test_message_over_16_mib_is_refused(crispd, cri):
    pb2, pb2_grpc = cri
    big = pb2.VersionRequest(version="x" * (17 << 20))
    with grpc.insecure_channel(
        crispd.target,
        options=[("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)],
    ) as ch:
        rt = pb2_grpc.RuntimeServiceStub(ch)
        with pytest.raises(grpc.RpcError) as e:
            rt.Version(big, timeout=CALL_TIMEOUT)
        assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        # Same channel, and a fresh one: crispd still answers.
        assert rt.Version(pb2.VersionRequest(), timeout=CALL_TIMEOUT).runtime_name == "crisp"
    with grpc.insecure_channel(crispd.target) as ch:
        r = pb2_grpc.RuntimeServiceStub(ch).Version(pb2.VersionRequest(), timeout=CALL_TIMEOUT)
        assert r.runtime_name == "crisp"
