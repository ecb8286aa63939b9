"""Hostile HTTP/2 peers, written byte by byte. Each abuse gets the exact
GOAWAY or RST_STREAM code asserted, and is followed by a normal grpcio
call that must succeed."""

import resource
import select
import socket
import struct

import grpc
import pytest

import harness
from harness import (
    ACK, END_HEADERS, END_STREAM, PREFACE, RawH2, frame, grpc_frame, grpc_request_headers,
    header_block, literal, ping_frame, rst_frame, settings_frame,
)


@pytest.fixture
def serving(crispd, cri):
    """Asserts, after the abuse, that crispd is alive and answers grpcio."""
    pb2, pb2_grpc = cri

    def check():
        assert crispd.proc.poll() is None, crispd.stderr()
        with grpc.insecure_channel(crispd.target) as ch:
            r = pb2_grpc.RuntimeServiceStub(ch).Version(pb2.VersionRequest(), timeout=30)
        assert r.runtime_name == "crisp"

    return check


def send_tolerant(c, data):
    """Send what the server takes: it may close the connection midway once
    it has seen enough."""
    try:
        c.send(data)
    except (BrokenPipeError, ConnectionResetError):
        pass


def expect_goaway(c, code):
    g = c.goaway_or_close()
    assert g is not None, f"connection closed without GOAWAY; frames: {c.frames}"
    assert g.error_code() == code, (g, g.payload[8:])
    c.wait_closed()  # and the connection is closed after it
    return g


def request_headers_frame(stream_id, end_stream=False, extra=()):
    flags = END_HEADERS | (END_STREAM if end_stream else 0)
    return frame("HEADERS", flags, stream_id, header_block(grpc_request_headers(extra=extra)))


# ---- broken framing ----


def test_garbage_instead_of_preface(crispd, serving):
    with RawH2(crispd.socket, preface=False) as c:
        c.send(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        expect_goaway(c, "PROTOCOL_ERROR")
    serving()


def test_truncated_frame_then_close(crispd, serving):
    with RawH2(crispd.socket) as c:
        c.send(frame("HEADERS", END_HEADERS, 1, b"", length=100) + b"\x00" * 10)
        c.sock.shutdown(socket.SHUT_WR)
        c.wait_closed()  # crispd sees EOF and closes its side
        assert not any(f.kind == "HEADERS" for f in c.frames)
    serving()


@pytest.mark.parametrize("kind,stream_id", [("HEADERS", 1), ("DATA", 1), ("SETTINGS", 0)])
def test_frame_header_announcing_16_mib(crispd, serving, kind, stream_id):
    with RawH2(crispd.socket) as c:
        # 2^24-1 bytes, the largest length a frame header can carry; only the
        # header and a few bytes are sent: the size alone must be refused.
        c.send(frame(kind, 0, stream_id, b"\x00" * 16, length=(1 << 24) - 1))
        expect_goaway(c, "FRAME_SIZE_ERROR")
    serving()


# ---- header blocks ----


def test_hpack_bomb_gets_431_and_the_connection_survives(crispd, serving):
    """A 4000-byte header entered in the HPACK table once, then referenced
    20 times by its one-byte index: ~1.4 KB on the wire decode past the
    16 KiB header-list limit."""
    block = (
        header_block(grpc_request_headers())
        + literal("x-bomb", "a" * 4000, indexed=True)
        + bytes([0x80 | 62]) * 20  # indexed field: the newest dynamic entry
    )
    assert len(block) < 4400
    with RawH2(crispd.socket) as c:
        c.send(frame("HEADERS", END_HEADERS | END_STREAM, 1, block))
        h = c.read_until(lambda f: f.kind == "HEADERS" and f.stream_id == 1)
        assert dict(h.headers)[":status"] == "431"
        assert h.flags & END_STREAM
        # Same connection: the HPACK table stayed in step (one reference to
        # the 4000-byte entry is within the limit) and calls still work.
        ok_block = header_block(grpc_request_headers()) + bytes([0x80 | 62])
        c.send(frame("HEADERS", END_HEADERS, 3, ok_block) + frame("DATA", END_STREAM, 3, grpc_frame(b"")))
        _, _, trailers = c.response(3)
        assert trailers["grpc-status"] == "0"
    serving()


def test_continuation_flood(crispd, serving):
    with RawH2(crispd.socket) as c:
        first = header_block(grpc_request_headers())
        flood = b"".join(frame("CONTINUATION", 0, 1, b"\x00\x01x\x01y") for _ in range(500))
        send_tolerant(c, frame("HEADERS", 0, 1, first) + flood)
        expect_goaway(c, "ENHANCE_YOUR_CALM")
    serving()


@pytest.mark.parametrize(
    "extra,body,trailers",
    [
        ([("content-length", "10")], grpc_frame(b""), None),  # 5 bytes, not 10
        ([], grpc_frame(b""), [(":method", "POST")]),  # pseudo-header in trailers
    ],
    ids=["content-length-mismatch", "pseudo-header-in-trailers"],
)
def test_malformed_grpc_request_is_reset(crispd, serving, extra, body, trailers):
    """The httpwg cases that crispd's early 415 can mask, with gRPC headers
    so that the body is read: RST_STREAM(PROTOCOL_ERROR)."""
    with RawH2(crispd.socket) as c:
        data = request_headers_frame(1, extra=extra)
        data += frame("DATA", END_STREAM if trailers is None else 0, 1, body)
        if trailers is not None:
            data += frame("HEADERS", END_HEADERS | END_STREAM, 1, header_block(trailers))
        c.send(data)
        r = c.read_until(lambda f: f.kind in ("RST_STREAM", "GOAWAY") or
                         (f.kind == "HEADERS" and f.stream_id == 1))
        assert r.kind == "RST_STREAM" and r.stream_id == 1, r
        assert r.error_code() == "PROTOCOL_ERROR"
        _, _, t = c.call(3)
        assert t["grpc-status"] == "0"
    serving()


def test_trailers_without_end_stream_is_reset(crispd, serving):
    with RawH2(crispd.socket) as c:
        c.send(request_headers_frame(1) + frame("DATA", 0, 1, grpc_frame(b""))
               + frame("HEADERS", END_HEADERS, 1, header_block([("x-test", "ok")])))
        r = c.read_until(lambda f: f.kind in ("RST_STREAM", "GOAWAY"))
        assert (r.kind, r.stream_id, r.error_code()) == ("RST_STREAM", 1, "PROTOCOL_ERROR")
    serving()


# ---- floods ----


def test_rapid_reset_flood(crispd, serving):
    """CVE-2023-44487: open a stream, reset it, 1100 times."""
    with RawH2(crispd.socket) as c:
        data = b"".join(
            request_headers_frame(sid) + rst_frame(sid, 0x8)  # CANCEL
            for sid in range(1, 2 * 1100, 2)
        )
        send_tolerant(c, data)
        expect_goaway(c, "ENHANCE_YOUR_CALM")
    serving()


def test_settings_flood(crispd, serving):
    with RawH2(crispd.socket) as c:
        send_tolerant(c, settings_frame([(harness.SETTINGS_MAX_CONCURRENT_STREAMS, 100)]) * 1100)
        expect_goaway(c, "ENHANCE_YOUR_CALM")
    serving()


def test_ping_flood(crispd, serving):
    with RawH2(crispd.socket) as c:
        send_tolerant(c, ping_frame() * 1100)
        acks = 0
        g = c.read_until(lambda f: f.kind == "GOAWAY")
        acks = sum(1 for f in c.frames if f.kind == "PING" and f.flags & ACK)
        assert g.error_code() == "ENHANCE_YOUR_CALM"
        assert acks <= 1000  # answered up to the limit, then refused
        c.wait_closed()
    serving()


# ---- slow and idle peers ----


def fill_without_reading(c, data, idle=1.0):
    """Send until all is sent or crispd has taken no byte for `idle`
    seconds (it stops reading a peer whose answers back up); how much was
    sent. Never reads. The pause only decides when to stop pushing; nothing
    is asserted about it."""
    c.sock.setblocking(False)
    sent = 0
    view = memoryview(data)
    while sent < len(data):
        try:
            sent += c.sock.send(view[sent : sent + 65536])
        except BlockingIOError:
            _, writable, _ = select.select([], [c.sock], [], idle)
            if not writable:
                break
        except (BrokenPipeError, ConnectionResetError):
            break
    return sent


def test_peers_that_never_read(crispd, serving):
    """Two clients send thousands of calls and never read: one with a zero
    initial window (crispd cannot send any DATA), one with a normal window
    (its socket fills up). Others are served meanwhile, and crispd's memory
    stays bounded (a generous bound; nothing is timed)."""
    rss_before = crispd.rss_kib()
    calls = lambda n: b"".join(  # noqa: E731
        request_headers_frame(sid) + frame("DATA", END_STREAM, sid, grpc_frame(b"\x0a\x02v1"))
        for sid in range(1, 2 * n, 2)
    )
    zero = RawH2(crispd.socket, settings=[(harness.SETTINGS_INITIAL_WINDOW_SIZE, 0)], auto_ack=False)
    full = RawH2(crispd.socket, auto_ack=False)
    try:
        zero.send(settings_frame(ack=True))  # ack crispd's SETTINGS without reading them
        full.send(settings_frame(ack=True))
        sent_zero = fill_without_reading(zero, calls(3000))
        sent_full = fill_without_reading(full, calls(40000))
        for _ in range(3):
            serving()  # others are served while those two are stuck
        rss_after = crispd.rss_kib()
        print(f"sent {sent_zero} + {sent_full} bytes; crispd RSS {rss_before} -> {rss_after} KiB")
        assert rss_after - rss_before < 64 * 1024
    finally:
        zero.close()
        full.close()
    serving()


def test_1500_idle_connections(make_crispd, cri):
    """crispd starts with the common default soft limit of 1024 open files
    (hard limit left high, as systemd does) and must still hold 1500 idle
    HTTP/2 connections and answer a normal call."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 4096:
        pytest.skip(f"hard RLIMIT_NOFILE {hard} is too low for this test")
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    def low_soft_limit():
        resource.setrlimit(resource.RLIMIT_NOFILE, (1024, hard))

    d = make_crispd(preexec_fn=low_soft_limit)
    conns = []
    try:
        for _ in range(1500):
            conns.append(RawH2(d.socket))
        for c in conns:  # every one was accepted and served its SETTINGS
            f = c.read_frame()
            assert f.kind == "SETTINGS" and not f.flags & ACK
        pb2, pb2_grpc = cri
        with grpc.insecure_channel(d.target) as ch:
            r = pb2_grpc.RuntimeServiceStub(ch).Version(pb2.VersionRequest(), timeout=30)
        assert r.runtime_name == "crisp"
    finally:
        for c in conns:
            c.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert d.proc.poll() is None, d.stderr()
