"""Load from h2load (nghttp2), and the trailers of one call seen by
python-hyper's h2. Throughput is printed, never asserted."""

import re
import shutil
import subprocess

import grpc

import harness


def version_request(pb2):
    return harness.grpc_frame(pb2.VersionRequest(version="v1").SerializeToString())


def parse_summary(out):
    m = re.search(
        r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, "
        r"(\d+) failed, (\d+) errored, (\d+) timeout", out)
    assert m, out
    keys = ["total", "started", "done", "succeeded", "failed", "errored", "timeout"]
    summary = dict(zip(keys, map(int, m.groups())))
    m = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", out)
    assert m, out
    summary["2xx"] = int(m.group(1))
    m = re.search(r"finished in .*?, ([\d.]+) req/s", out)
    summary["req/s"] = float(m.group(1)) if m else None
    return summary


def test_h2load_20000_calls(crispd, cri, tmp_path):
    h2load = shutil.which("h2load")
    assert h2load, "h2load is missing: run scripts/install-test-deps (Debian nghttp2-client)"
    pb2, pb2_grpc = cri
    req = tmp_path / "req.bin"
    req.write_bytes(version_request(pb2))
    rss_before = crispd.rss_kib()
    proc = subprocess.run(
        [h2load, "-B", f"unix:{crispd.socket}", "-n", "20000", "-c", "16", "-m", "32",
         "-H", "content-type: application/grpc", "-H", "te: trailers",
         "-d", str(req), "http://localhost/runtime.v1.RuntimeService/Version"],
        capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    s = parse_summary(proc.stdout)
    print(f"h2load: {s['req/s']} req/s, {s['succeeded']} succeeded, "
          f"{s['failed']} failed, {s['errored']} errored, {s['timeout']} timeout; "
          f"crispd RSS {rss_before} -> {crispd.rss_kib()} KiB")
    assert s["total"] == s["started"] == s["done"] == s["succeeded"] == s["2xx"] == 20000, s
    assert s["failed"] == s["errored"] == s["timeout"] == 0, s
    # Still serving a real gRPC client.
    with grpc.insecure_channel(crispd.target) as ch:
        r = pb2_grpc.RuntimeServiceStub(ch).Version(pb2.VersionRequest(), timeout=30)
    assert r.runtime_name == "crisp"


def test_trailers_carry_grpc_status_python_h2(crispd, cri):
    """h2load ignores grpc-status; python-hyper's h2 shows the whole
    response: headers, one message, trailers with grpc-status 0."""
    pb2, _ = cri
    headers, body, trailers = harness.h2_unary(
        crispd.socket, harness.grpc_request_headers(), version_request(pb2)
    )
    assert headers[b":status"] == b"200"
    assert headers[b"content-type"] == b"application/grpc"
    assert trailers is not None, "no trailers"
    assert trailers[b"grpc-status"] == b"0"
    [msg] = harness.grpc_unframe(body)
    r = pb2.VersionResponse.FromString(msg)
    assert r.runtime_name == "crisp" and r.runtime_api_version == "v1"
