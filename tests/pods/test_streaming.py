"""Exec, Attach and PortForward: the URLs crispd's CRI calls answer, and
the streaming server behind them, driven by clients we did not write —
Python's websocket-client (the channel protocols kubectl and crictl use
over WebSocket) and moby/spdystream, the SPDY library of kubelet,
client-go and crictl (spdy_client/, built with Go here).

A pod runs busybox `httpd` on port 8080; exec'd processes, the port
forwarding and the checks all stay inside that pod's network namespace
and the host's loopback."""

import json
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path
from urllib.parse import urlparse

import grpc
import pytest
import websocket

from common.channels import ws_read_all
from common.pods import running_pod, start_until_ready, status
from common.wait import wait_until

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (namespaces, mounts, cgroups)")

HERE = Path(__file__).resolve().parent


@pytest.fixture
def crispd(make_crispd):
    return make_crispd()


@pytest.fixture
def pod(crispd, registry, tmp_path):
    logs = tmp_path / "logs"
    logs.mkdir()
    yield from running_pod(crispd.client, "stream", registry.busybox, logs)


@pytest.fixture
def server(crispd, pod):
    """A running container serving its /etc over HTTP on port 8080."""
    cid, _ = start_until_ready(crispd.client, pod, "web", "busybox httpd -p 8080 -h /etc && echo ready; exec busybox sleep 1000")
    return cid


@pytest.fixture(scope="session")
def spdy_client(tmp_path_factory):
    if shutil.which("go") is None:
        pytest.skip("no Go toolchain to build the spdystream client")
    out = tmp_path_factory.mktemp("spdy") / "spdy-client"
    subprocess.run(["go", "build", "-o", str(out), "."], cwd=HERE / "spdy_client", check=True, timeout=600)
    return out


def exec_url(client, cid, cmd, stdin=False, stdout=True, stderr=True, tty=False):
    req = client.pb.ExecRequest(container_id=cid, cmd=cmd, stdin=stdin, stdout=stdout, stderr=stderr, tty=tty)
    return client.rt.Exec(req, timeout=10).url


def ws_connect(url, protocol, query=""):
    u = urlparse(url)
    return websocket.create_connection(f"ws://{u.netloc}{u.path}{query}", subprotocols=[protocol], timeout=10)


def test_urls_point_at_the_loopback_streaming_server(crispd, server):
    url = exec_url(crispd.client, server, ["true"])
    u = urlparse(url)
    assert u.scheme == "http" and u.hostname == "127.0.0.1" and u.path.startswith("/exec/")
    info = crispd.client.rt.Status(crispd.client.pb.StatusRequest(verbose=True), timeout=10).info
    assert json.loads(info["info"])["streamServer"] == u.netloc


def test_requests_that_make_no_sense_are_refused(crispd, pod, server):
    c = crispd.client
    pb = c.pb
    for kw, code in [
        (dict(stdout=False, stderr=False), grpc.StatusCode.INVALID_ARGUMENT),
        (dict(tty=True, stderr=True), grpc.StatusCode.INVALID_ARGUMENT),
    ]:
        with pytest.raises(grpc.RpcError) as e:
            exec_url(c, server, ["true"], **kw)
        assert e.value.code() == code, kw
    with pytest.raises(grpc.RpcError) as e:
        exec_url(c, server, [])
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.RpcError) as e:
        exec_url(c, "nope", ["true"])
    assert e.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError) as e:
        c.rt.PortForward(pb.PortForwardRequest(pod_sandbox_id=pod.id, port=[70000]), timeout=10)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_websocket_exec_with_stdin_output_and_exit_code(crispd, server):
    url = exec_url(crispd.client, server, ["sh", "-c", "cat; echo oops >&2; exit 3"], stdin=True)
    ws = ws_connect(url, "v5.channel.k8s.io")
    ws.send_binary(b"\x00hello over websocket\n")
    ws.send_binary(b"\xff\x00")  # v5 CLOSE of stdin
    got = ws_read_all(ws)
    assert bytes(got[1]) == b"hello over websocket\n"
    assert bytes(got[2]) == b"oops\n"
    st = json.loads(bytes(got[3]))
    assert st["status"] == "Failure" and st["reason"] == "NonZeroExitCode"
    assert st["details"]["causes"] == [{"reason": "ExitCode", "message": "3"}]


def test_websocket_exec_tty_is_a_pty_of_the_container_and_resizes(crispd, server):
    url = exec_url(crispd.client, server, ["sh", "-c", "tty; read x; stty size"], stdin=True, stderr=False, tty=True)
    ws = ws_connect(url, "v4.channel.k8s.io")
    ws.send_binary(b'\x04{"Width":123,"Height":45}')
    ws.send_binary(b"\x00go\n")
    got = ws_read_all(ws)
    out = bytes(got[1]).decode()
    assert "/dev/pts/" in out, out
    assert "45 123" in out, out
    assert json.loads(bytes(got[3]))["status"] == "Success"


def test_a_url_is_single_use(crispd, server):
    url = exec_url(crispd.client, server, ["true"])
    ws = ws_connect(url, "v4.channel.k8s.io")
    ws_read_all(ws)
    with pytest.raises(websocket.WebSocketBadStatusException) as e:
        ws_connect(url, "v4.channel.k8s.io")
    assert e.value.status_code == 404
    with pytest.raises(websocket.WebSocketBadStatusException) as e:
        ws_connect(url.rsplit("/", 1)[0] + "/0123", "v4.channel.k8s.io")
    assert e.value.status_code == 404


def sleepers():
    out = []
    for p in Path("/proc").iterdir():
        try:
            if p.name.isdigit() and (p / "cmdline").read_bytes().split(b"\0")[-2:-1] == [b"4321"]:
                out.append(int(p.name))
        except OSError:
            pass
    return out


def test_a_client_that_leaves_takes_its_process_along(crispd, server):
    url = exec_url(crispd.client, server, ["busybox", "sleep", "4321"])
    ws = ws_connect(url, "v4.channel.k8s.io")
    wait_until("exec'd sleep", lambda: sleepers())
    ws.sock.close()
    wait_until("sleep gone", lambda: not sleepers())
    # The container itself runs on.
    assert status(crispd.client, server).state == crispd.client.pb.CONTAINER_RUNNING


def test_websocket_port_forward_reaches_the_pod(crispd, pod, server):
    c = crispd.client
    url = c.rt.PortForward(c.pb.PortForwardRequest(pod_sandbox_id=pod.id, port=[8080]), timeout=10).url
    ws = ws_connect(url, "v4.channel.k8s.io", "?port=8080")
    # Each channel opens with its port, little-endian.
    first = [ws.recv_data()[1] for _ in range(2)]
    assert sorted(first) == [b"\x00\x90\x1f", b"\x01\x90\x1f"]
    ws.send_binary(b"\x00GET /hostname HTTP/1.0\r\n\r\n")
    body = bytearray()
    deadline = time.monotonic() + 10
    while b"stream" not in body and time.monotonic() < deadline:
        op, data = ws.recv_data()
        if data and data[0] == 0:
            body.extend(data[1:])
    assert body.startswith(b"HTTP/1.") and body.rstrip().endswith(b"stream"), body
    ws.close()


def test_spdy_exec_with_spdystream(crispd, server, spdy_client):
    url = exec_url(crispd.client, server, ["sh", "-c", "cat; echo oops >&2; exit 7"], stdin=True)
    big = "x" * 200_000
    r = subprocess.run([str(spdy_client), "exec", url], input="hello\n" + big, capture_output=True, timeout=60, text=True)
    out = json.loads(r.stdout)
    assert "failure" not in out, out
    assert out["stdout"] == "hello\n" + big
    assert out["stderr"] == "oops\n"
    st = json.loads(out["status"])
    assert st["details"]["causes"] == [{"reason": "ExitCode", "message": "7"}]


def test_spdy_port_forward_with_spdystream(crispd, pod, server, spdy_client):
    c = crispd.client

    def url():
        return c.rt.PortForward(c.pb.PortForwardRequest(pod_sandbox_id=pod.id), timeout=10).url

    r = subprocess.run([str(spdy_client), "portforward", url(), "8080", "GET /hostname HTTP/1.0\r\n\r\n"], capture_output=True, timeout=60, text=True)
    out = json.loads(r.stdout)
    assert out["data"].startswith("HTTP/1.") and out["data"].rstrip().endswith("stream"), out
    # Nothing listens on 9: the error stream says so, as kubelet's does.
    r = subprocess.run([str(spdy_client), "portforward", url(), "9", "x"], capture_output=True, timeout=60, text=True)
    out = json.loads(r.stdout)
    assert "error forwarding port 9" in out["error"] and "refused" in out["error"], out


def test_streaming_listener_is_loopback_only(crispd, server):
    url = exec_url(crispd.client, server, ["true"])
    port = urlparse(url).port
    # Bound to 127.0.0.1, so not reachable on another local address.
    with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
        s.settimeout(2)
        assert s.connect_ex(("::1", port)) != 0


def rss_kib(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def test_a_client_that_never_reads_costs_bounded_memory(crispd, server):
    """`yes` writes as fast as it can to a client that reads nothing:
    crispd stops reading the pipe once its buffer for the client is full,
    so its memory stays put; the client's leaving ends `yes`."""
    before = rss_kib(crispd.proc.pid)
    url = exec_url(crispd.client, server, ["busybox", "yes", "4321"])
    ws = ws_connect(url, "v4.channel.k8s.io")
    ws.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    wait_until("exec'd yes", lambda: sleepers())
    # Long enough for an unbounded buffer to grow by hundreds of MiB.
    time.sleep(3)
    grown = rss_kib(crispd.proc.pid) - before
    assert grown < 32 * 1024, f"crispd grew by {grown} KiB"
    ws.sock.close()
    wait_until("yes gone", lambda: not sleepers())


def raw_upgrade(url, headers):
    """A raw socket on which the upgrade to `url` was answered 101."""
    u = urlparse(url)
    s = socket.create_connection((u.hostname, u.port), timeout=10)
    req = f"POST {u.path} HTTP/1.1\r\nHost: {u.netloc}\r\nConnection: Upgrade\r\n{headers}\r\n"
    s.sendall(req.encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = s.recv(1)
        assert chunk, head
        head += chunk
    assert head.startswith(b"HTTP/1.1 101"), head
    return s


def read_until_closed(s, limit=1 << 20):
    got = b""
    while len(got) < limit:
        try:
            chunk = s.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        got += chunk
    return got


def test_hostile_spdy_peer_is_refused_and_crispd_serves_on(crispd, server):
    """A SPDY control frame of an unknown version after the upgrade:
    RST_STREAM UNSUPPORTED_VERSION (SPDY/3.1 §2.4.2), the session ends and
    the connection closes; the exec never starts and the next client is
    served."""
    url = exec_url(crispd.client, server, ["true"])
    s = raw_upgrade(url, "Upgrade: SPDY/3.1\r\nX-Stream-Protocol-Version: v4.channel.k8s.io\r\n")
    # Control bit, version 2 (not 3), type SYN_STREAM, a length.
    s.sendall(b"\x80\x02\x00\x01\x00\x00\x00\x0a" + b"\x00" * 10)
    got = read_until_closed(s)
    s.close()
    # RST_STREAM (type 3), status 4 (UNSUPPORTED_VERSION).
    assert got[:4] == b"\x80\x03\x00\x03" and got[12:16] == b"\x00\x00\x00\x04", got[:16]
    ws = ws_connect(exec_url(crispd.client, server, ["busybox", "true"]), "v4.channel.k8s.io")
    assert json.loads(bytes(ws_read_all(ws)[3]))["status"] == "Success"


def test_hostile_websocket_peer_gets_a_protocol_error_close(crispd, server):
    """An unmasked client frame breaks RFC 6455 §5.1: Close 1002."""
    url = exec_url(crispd.client, server, ["busybox", "sleep", "4321"])
    s = raw_upgrade(url, "Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
                    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Protocol: v4.channel.k8s.io\r\n")
    s.sendall(b"\x82\x03\x00ab")  # binary, FIN, unmasked
    got = read_until_closed(s)
    s.close()
    i = got.find(b"\x88")
    assert i >= 0 and got[i + 2:i + 4] == (1002).to_bytes(2, "big"), got
    # The session's process goes with it.
    wait_until("sleep gone", lambda: not sleepers())
