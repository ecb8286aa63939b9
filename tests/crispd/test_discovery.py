"""gRPC health checking and server reflection on crispd's socket, through
clients we did not write: grpcio-health-checking's Health stub and
grpcio-reflection's ProtoReflectionDescriptorDatabase (with protobuf's
DescriptorPool on top), plus raw reflection requests on both the v1 and the
v1alpha service."""

import threading
import time

import grpc
import harness
import pytest
from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2 as refl_pb2
from grpc_reflection.v1alpha import reflection_pb2_grpc as refl_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

CRI_SERVICES = ["runtime.v1.RuntimeService", "runtime.v1.ImageService"]
ALL_SERVICES = CRI_SERVICES + [
    "grpc.health.v1.Health",
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
]
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
SERVICE_UNKNOWN = health_pb2.HealthCheckResponse.SERVICE_UNKNOWN
TIMEOUT = 20


@pytest.fixture
def health(channel):
    return health_pb2_grpc.HealthStub(channel)


def test_check_serving_per_service(health):
    for service in ["", *CRI_SERVICES]:
        r = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=TIMEOUT)
        assert r.status == SERVING, service


def test_check_unknown_service_is_not_found(health):
    with pytest.raises(grpc.RpcError) as e:
        health.Check(health_pb2.HealthCheckRequest(service="runtime.v1.Nope"), timeout=TIMEOUT)
    assert e.value.code() == grpc.StatusCode.NOT_FOUND
    assert "runtime.v1.Nope" in e.value.details()


def test_list_names_every_service(health):
    r = health.List(health_pb2.HealthListRequest(), timeout=TIMEOUT)
    assert {name: s.status for name, s in r.statuses.items()} == {
        "": SERVING,
        "runtime.v1.RuntimeService": SERVING,
        "runtime.v1.ImageService": SERVING,
    }


def test_watch_sees_not_serving_on_sigterm(crispd, health):
    """Two watches open when crispd gets SIGTERM: the CRI service's turns
    NOT_SERVING before its stream ends; the unknown service's stays
    SERVICE_UNKNOWN and its stream ends too. crispd still exits 0 (the
    watches do not hold the drain)."""
    known = health.Watch(
        health_pb2.HealthCheckRequest(service="runtime.v1.RuntimeService"), timeout=60
    )
    unknown = health.Watch(health_pb2.HealthCheckRequest(service="no.such.Service"), timeout=60)
    assert next(known).status == SERVING
    assert next(unknown).status == SERVICE_UNKNOWN

    seen, ended = [], []

    def drain(stream, out):
        try:
            for r in stream:
                out.append(r.status)
        except grpc.RpcError as e:
            ended.append(e.code())

    others = []
    threads = [
        threading.Thread(target=drain, args=(known, seen), daemon=True),
        threading.Thread(target=drain, args=(unknown, others), daemon=True),
    ]
    # The readers wait before the signal: grpcio may drop a message that
    # arrives together with a failing status when nobody was reading yet.
    for t in threads:
        t.start()
    time.sleep(0.2)
    crispd.signal()
    for t in threads:
        t.join(timeout=60)
        assert not t.is_alive(), "a Watch stream did not end after SIGTERM"
    assert seen == [NOT_SERVING]
    assert others == []
    # Ended by crispd as it goes (UNAVAILABLE), never by the deadline.
    assert set(ended) <= {grpc.StatusCode.UNAVAILABLE}, ended
    assert crispd.wait() == 0, crispd.stderr()


def test_descriptor_database_describes_the_cri(channel):
    db = ProtoReflectionDescriptorDatabase(channel)
    assert list(db.get_services()) == ALL_SERVICES
    pool = descriptor_pool.DescriptorPool(db)

    runtime = pool.FindServiceByName("runtime.v1.RuntimeService")
    create = runtime.methods_by_name["CreateContainer"]
    assert create.input_type.full_name == "runtime.v1.CreateContainerRequest"
    assert create.output_type.full_name == "runtime.v1.CreateContainerResponse"
    assert len(runtime.methods) == 35
    assert len(pool.FindServiceByName("runtime.v1.ImageService").methods) == 6

    req = pool.FindMessageTypeByName("runtime.v1.CreateContainerRequest")
    fields = {f.name: (f.number, f.message_type and f.message_type.full_name) for f in req.fields}
    assert fields == {
        "pod_sandbox_id": (1, None),
        "config": (2, "runtime.v1.ContainerConfig"),
        "sandbox_config": (3, "runtime.v1.PodSandboxConfig"),
    }
    # Nested types and enums resolve through the same pool.
    config = pool.FindMessageTypeByName("runtime.v1.ContainerConfig")
    assert config.fields_by_name["mounts"].message_type.full_name == "runtime.v1.Mount"
    state = pool.FindEnumTypeByName("runtime.v1.ContainerState")
    assert state.values_by_name["CONTAINER_RUNNING"].number == 1

    watch = pool.FindMethodByName("grpc.health.v1.Health.Watch")
    assert watch.server_streaming and not watch.client_streaming


def _reflect(channel, path, requests):
    """One reflection stream on `path` (v1 and v1alpha are the same on the
    wire, so grpcio-reflection's v1alpha messages serve both)."""
    call = channel.stream_stream(
        path,
        request_serializer=refl_pb2.ServerReflectionRequest.SerializeToString,
        response_deserializer=refl_pb2.ServerReflectionResponse.FromString,
    )
    return list(call(iter(requests), timeout=TIMEOUT))


def _files(response):
    assert response.WhichOneof("message_response") == "file_descriptor_response", response
    return [
        descriptor_pb2.FileDescriptorProto.FromString(b)
        for b in response.file_descriptor_response.file_descriptor_proto
    ]


@pytest.mark.parametrize(
    "path",
    [
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
    ],
)
def test_raw_reflection_requests(channel, path):
    R = refl_pb2.ServerReflectionRequest
    responses = _reflect(
        channel,
        path,
        [
            R(host="crisp", list_services=""),
            R(file_by_filename="grpc/health/v1/health.proto"),
            R(file_containing_symbol="runtime.v1.ImageService.PullImage"),
            R(file_containing_symbol="runtime.v1.PullImageRequest.auth"),
            R(file_containing_symbol="runtime.v1.NoSuchThing"),
            R(file_by_filename="no/such.proto"),
            R(all_extension_numbers_of_type="runtime.v1.VersionRequest"),
            R(all_extension_numbers_of_type="runtime.v1.NoSuchThing"),
            R(
                file_containing_extension=refl_pb2.ExtensionRequest(
                    containing_type="runtime.v1.VersionRequest", extension_number=1000
                )
            ),
        ],
    )
    assert len(responses) == 9, "one answer per request, in order"
    listed, health_file, api, api_again, unknown, no_file, exts, no_type, no_ext = responses

    assert listed.valid_host == "crisp"
    assert listed.original_request.list_services == ""
    assert [s.name for s in listed.list_services_response.service] == ALL_SERVICES

    (health,) = _files(health_file)
    assert health.package == "grpc.health.v1"
    assert [m.name for m in health.service[0].method] == ["Check", "List", "Watch"]

    (api_file,) = _files(api)
    assert api_file.name == "runtime/v1/api.proto"
    # The file every time it is asked for, even on the same stream.
    assert [f.name for f in _files(api_again)] == ["runtime/v1/api.proto"]
    # What crispd serves is a complete, consistent schema.
    pool = descriptor_pool.DescriptorPool()
    pool.Add(api_file)
    assert pool.FindMessageTypeByName("runtime.v1.PullImageRequest").fields_by_name["auth"]

    for r in (unknown, no_file, no_type, no_ext):
        assert r.WhichOneof("message_response") == "error_response", r
        assert r.error_response.error_code == grpc.StatusCode.NOT_FOUND.value[0]
        assert r.error_response.error_message
    assert exts.all_extension_numbers_response.base_type_name == "runtime.v1.VersionRequest"
    assert list(exts.all_extension_numbers_response.extension_number) == []


def test_reflection_stub_of_grpcio_reflection(channel):
    """grpcio-reflection's own v1alpha stub, as other tools use it."""
    stub = refl_pb2_grpc.ServerReflectionStub(channel)
    (r,) = list(
        stub.ServerReflectionInfo(
            iter([refl_pb2.ServerReflectionRequest(file_containing_symbol="grpc.health.v1.Health")]),
            timeout=TIMEOUT,
        )
    )
    assert [f.name for f in _files(r)] == ["grpc/health/v1/health.proto"]


def test_a_request_that_asks_nothing_ends_the_stream(channel):
    with pytest.raises(grpc.RpcError) as e:
        _reflect(
            channel,
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
            [refl_pb2.ServerReflectionRequest(host="x")],
        )
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_a_reflection_client_that_never_reads_is_cut_off(crispd):
    """A reflection stream whose client asks for the CRI's file (~100 KiB)
    200 times with a zero stream window, so that nothing can be sent: crispd
    ends the stream with RESOURCE_EXHAUSTED once about 1 MiB waits, instead
    of holding 20 MiB of answers. Opening the window then shows the answers
    that were queued and the status; other callers are served meanwhile."""
    ask = refl_pb2.ServerReflectionRequest(file_by_filename="runtime/v1/api.proto")
    body = b"".join(harness.grpc_frame(ask.SerializeToString()) for _ in range(200))
    path = "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"
    with harness.RawH2(crispd.socket, settings=[(harness.SETTINGS_INITIAL_WINDOW_SIZE, 0)]) as c:
        c.send(
            harness.frame("HEADERS", harness.END_HEADERS, 1,
                          harness.header_block(harness.grpc_request_headers(path)))
            + harness.frame("DATA", 0, 1, body)
        )
        # Served meanwhile, on another connection.
        with grpc.insecure_channel(crispd.target) as ch:
            r = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=TIMEOUT)
            assert r.status == SERVING
        # Now let everything out.
        c.send(harness.settings_frame([(harness.SETTINGS_INITIAL_WINDOW_SIZE, 1 << 30)])
               + harness.window_update_frame(0, (1 << 31) - 1 - 65535))
        data, trailers = b"", None
        while trailers is None:
            f = c.read_frame()
            if f.stream_id != 1:
                continue
            if f.kind == "DATA":
                data += f.payload
                c.send(harness.window_update_frame(0, len(f.payload)) if f.payload else b"")
            elif f.kind == "HEADERS" and f.flags & harness.END_STREAM:
                trailers = dict(f.headers)
            elif f.kind == "RST_STREAM":
                raise AssertionError(f"stream reset: {f.error_code()}")
    answers = harness.grpc_unframe(data)
    print(f"{len(answers)} answers were queued before RESOURCE_EXHAUSTED")
    assert trailers["grpc-status"] == "8", trailers
    assert 1 <= len(answers) < 20, len(answers)
    for a in answers:
        assert _files(refl_pb2.ServerReflectionResponse.FromString(a))
