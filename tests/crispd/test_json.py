"""`application/grpc+json` beside protobuf on the same socket: calls made
with python-hyper's h2 carrying JSON bodies, each answer checked field by
field against the protobuf answer of the same call from grpcio, turned
into JSON by protobuf's own json_format (the reference proto3 JSON
mapping: camelCase names, enums by name, 64-bit integers as strings)."""

import json

import grpc
from google.protobuf import json_format
from grpc_health.v1 import health_pb2, health_pb2_grpc

import harness


def h2_call(crispd, path, messages, content_type="application/grpc+json"):
    """One call with `messages` (bytes each, framed here); returns
    (response headers, response messages, trailers or None)."""
    got, body, trailers = harness.h2_unary(
        crispd.socket,
        harness.grpc_request_headers(path, content_type=content_type),
        b"".join(harness.grpc_frame(m) for m in messages),
    )
    if got.get(b":status") != b"200":
        return got, body, trailers  # not gRPC: a plain-text body
    return got, harness.grpc_unframe(body), trailers


def json_call(crispd, path, request):
    """A JSON unary call that must succeed: its one answer, parsed."""
    headers, messages, trailers = h2_call(crispd, path, [json.dumps(request).encode()])
    assert headers[b":status"] == b"200"
    assert headers[b"content-type"] == b"application/grpc+json", headers
    status = (trailers or headers).get(b"grpc-status")
    assert status == b"0", (headers, trailers)
    [answer] = messages
    return json.loads(answer)


def reference(message):
    return json_format.MessageToDict(message)


def test_unary_calls_match_the_protobuf_answers(crispd, cri, channel):
    pb2, pb2_grpc = cri
    runtime = pb2_grpc.RuntimeServiceStub(channel)
    images = pb2_grpc.ImageServiceStub(channel)
    for path, request, proto in [
        ("/runtime.v1.RuntimeService/Version", {"version": "v1"},
         lambda: runtime.Version(pb2.VersionRequest(version="v1"), timeout=20)),
        # Maps, nested messages, bools.
        ("/runtime.v1.RuntimeService/Status", {"verbose": True},
         lambda: runtime.Status(pb2.StatusRequest(verbose=True), timeout=20)),
        # An enum by name.
        ("/runtime.v1.RuntimeService/RuntimeConfig", {},
         lambda: runtime.RuntimeConfig(pb2.RuntimeConfigRequest(), timeout=20)),
        # 64-bit integers as strings.
        ("/runtime.v1.ImageService/ImageFsInfo", {},
         lambda: images.ImageFsInfo(pb2.ImageFsInfoRequest(), timeout=20)),
        ("/runtime.v1.RuntimeService/ListPodSandbox", {"filter": {"state": {"state": "SANDBOX_READY"}}},
         lambda: runtime.ListPodSandbox(pb2.ListPodSandboxRequest(), timeout=20)),
    ]:
        got = json_call(crispd, path, request)
        want = reference(proto())
        if path.endswith("/ImageFsInfo"):
            # The time of each call: a 64-bit integer, as a string.
            for f in got["imageFilesystems"] + want["imageFilesystems"]:
                assert int(f.pop("timestamp")) > 0
        assert got == want, path
    config = json_call(crispd, "/runtime.v1.RuntimeService/RuntimeConfig", {})
    assert config == {"linux": {"cgroupDriver": "CGROUPFS"}}


def test_health_and_reflection_speak_json_too(crispd, channel):
    health = json_call(crispd, "/grpc.health.v1.Health/Check",
                       {"service": "runtime.v1.RuntimeService"})
    want = reference(health_pb2_grpc.HealthStub(channel).Check(
        health_pb2.HealthCheckRequest(service="runtime.v1.RuntimeService"), timeout=20))
    assert health == want == {"status": "SERVING"}
    # A bidirectional stream: one JSON answer per JSON request.
    headers, messages, trailers = h2_call(
        crispd,
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        [b'{"listServices": ""}', b'{"fileContainingSymbol": "runtime.v1.Nope"}'],
    )
    assert headers[b"content-type"] == b"application/grpc+json"
    assert trailers[b"grpc-status"] == b"0"
    listed, missing = (json.loads(m) for m in messages)
    assert {"name": "runtime.v1.RuntimeService"} in listed["listServicesResponse"]["service"]
    assert missing["errorResponse"]["errorCode"] == 5


def test_bad_json_is_invalid_argument_naming_the_problem(crispd):
    for body, what in [
        (b'{"nope": 1}', "nope"),
        (b'{"version": 1}', "string"),
        (b"not json", "VersionRequest"),
    ]:
        headers, messages, trailers = h2_call(crispd, "/runtime.v1.RuntimeService/Version", [body])
        assert messages == []
        assert headers[b"content-type"] == b"application/grpc+json"
        status = (trailers or headers)
        assert status[b"grpc-status"] == b"3", status
        assert what.encode() in status[b"grpc-message"], status


def test_proto_subtype_is_answered_in_kind(crispd, cri):
    pb2, _ = cri
    headers, messages, trailers = h2_call(
        crispd,
        "/runtime.v1.RuntimeService/Version",
        [pb2.VersionRequest().SerializeToString()],
        content_type="application/grpc+proto",
    )
    assert headers[b"content-type"] == b"application/grpc+proto"
    assert trailers[b"grpc-status"] == b"0"
    assert pb2.VersionResponse.FromString(messages[0]).runtime_name == "crisp"


def test_an_unknown_codec_is_unsupported_media_type(crispd):
    headers, messages, _ = h2_call(
        crispd, "/runtime.v1.RuntimeService/Version", [b"{}"],
        content_type="application/grpc+thrift",
    )
    assert headers[b":status"] == b"415"
    assert b"application/grpc+thrift" in headers[b"grpc-message"]
    # Still serving protobuf on a fresh call.
    with grpc.insecure_channel(crispd.target) as ch:
        grpc.channel_ready_future(ch).result(timeout=20)
