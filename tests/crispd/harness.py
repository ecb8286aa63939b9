"""Starting the real crispd binary for tests, and small raw HTTP/2 tools.

Everything here is plain Python plus the PyPI packages the suite installs
(grpcio, grpcio-tools, h2/hpack). Nothing measures time: waits are bounded
only so that a broken crispd fails a test instead of hanging it.
"""

import os
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import time
from pathlib import Path

import h2.config
import h2.connection
import h2.events
import hpack


# Generous bounds for waits; a healthy crispd answers in microseconds, a
# loaded 2-core VM may still take seconds.
START_TIMEOUT = 30.0
EXIT_TIMEOUT = 30.0
IO_TIMEOUT = 20.0

VERSION_PATH = "/runtime.v1.RuntimeService/Version"


def free_tcp_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Crispd:
    """One crispd process on private directories under a temporary root.

    `root` is created 0711 so that a non-root test client can reach the
    socket inside it. `stop()` (SIGTERM, then SIGKILL if it will not go)
    and `cleanup()` are safe to call more than once.
    """

    def __init__(self, binary, root=None, config="", extra_args=(), preexec_fn=None):
        self.binary = Path(binary)
        self.own_root = root is None
        self.root = Path(root or tempfile.mkdtemp(prefix="crispd-test-"))
        os.chmod(self.root, 0o711)
        self.runtime_dir = self.root / "run"
        self.state_dir = self.root / "state"
        self.socket = self.runtime_dir / "crisp.sock"
        self.config_path = self.root / "config.toml"
        self.stderr_path = self.root / "crispd.stderr"
        self.config = config
        self.extra_args = list(extra_args)
        self.preexec_fn = preexec_fn
        self.proc = None
        self.tcp_port = None
        self.returncode = None

    # ---- lifecycle ----

    def args(self):
        return [
            str(self.binary),
            "--config", str(self.config_path),
            "--socket", str(self.socket),
            "--state-dir", str(self.state_dir),
            "--runtime-dir", str(self.runtime_dir),
            *self.extra_args,
        ]

    def start(self, wait=True):
        self.config_path.write_text(self.config)
        self.returncode = None
        err = open(self.stderr_path, "ab")
        try:
            self.proc = subprocess.Popen(
                self.args(),
                stdin=subprocess.DEVNULL,
                stdout=err,
                stderr=err,
                preexec_fn=self.preexec_fn,
            )
        finally:
            err.close()
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self):
        """Until the socket accepts a connection (and the TCP port, if any)."""
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"crispd exited with {self.proc.returncode} before serving:\n{self.stderr()}"
                )
            if self._accepts():
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"crispd did not start serving:\n{self.stderr()}")
            time.sleep(0.02)

    def _accepts(self):
        try:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(str(self.socket))
            s.close()
            if self.tcp_port:
                socket.create_connection(("127.0.0.1", self.tcp_port), timeout=1).close()
            return True
        except OSError:
            return False

    def signal(self, sig=signal.SIGTERM):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)

    def wait(self, timeout=EXIT_TIMEOUT):
        self.returncode = self.proc.wait(timeout=timeout)
        return self.returncode

    def stop(self):
        """SIGTERM and wait; SIGKILL if it does not exit. Its exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=EXIT_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.returncode = self.proc.returncode
        return self.returncode

    def restart(self):
        self.stop()
        return self.start()

    def cleanup(self):
        try:
            self.stop()
        finally:
            if self.own_root:
                shutil.rmtree(self.root, ignore_errors=True)

    def with_tcp(self):
        self.tcp_port = free_tcp_port()
        self.extra_args += ["--tcp-listen", f"127.0.0.1:{self.tcp_port}"]
        return self

    # ---- observation ----

    @property
    def pid(self):
        return self.proc.pid

    @property
    def target(self):
        return f"unix://{self.socket}"

    def stderr(self):
        try:
            return self.stderr_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def rss_kib(self):
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise RuntimeError("no VmRSS")


# ---- gRPC message framing ----


def grpc_frame(payload: bytes, compressed=False) -> bytes:
    return struct.pack(">BI", 1 if compressed else 0, len(payload)) + payload


def grpc_unframe(data: bytes):
    """The messages in a gRPC DATA stream."""
    out = []
    while data:
        assert len(data) >= 5, "truncated gRPC message prefix"
        _, n = struct.unpack(">BI", data[:5])
        out.append(data[5 : 5 + n])
        data = data[5 + n :]
    return out


# ---- a raw HTTP/2 peer: exactly the bytes we choose ----

FRAME_TYPES = {
    "DATA": 0x0, "HEADERS": 0x1, "PRIORITY": 0x2, "RST_STREAM": 0x3,
    "SETTINGS": 0x4, "PUSH_PROMISE": 0x5, "PING": 0x6, "GOAWAY": 0x7,
    "WINDOW_UPDATE": 0x8, "CONTINUATION": 0x9,
}
TYPE_NAMES = {v: k for k, v in FRAME_TYPES.items()}

END_STREAM = 0x1
ACK = 0x1
END_HEADERS = 0x4

ERROR_CODES = {
    0x0: "NO_ERROR", 0x1: "PROTOCOL_ERROR", 0x2: "INTERNAL_ERROR",
    0x3: "FLOW_CONTROL_ERROR", 0x4: "SETTINGS_TIMEOUT", 0x5: "STREAM_CLOSED",
    0x6: "FRAME_SIZE_ERROR", 0x7: "REFUSED_STREAM", 0x8: "CANCEL",
    0x9: "COMPRESSION_ERROR", 0xA: "CONNECT_ERROR", 0xB: "ENHANCE_YOUR_CALM",
    0xC: "INADEQUATE_SECURITY", 0xD: "HTTP_1_1_REQUIRED",
}

SETTINGS_HEADER_TABLE_SIZE = 0x1
SETTINGS_ENABLE_PUSH = 0x2
SETTINGS_MAX_CONCURRENT_STREAMS = 0x3
SETTINGS_INITIAL_WINDOW_SIZE = 0x4
SETTINGS_MAX_FRAME_SIZE = 0x5

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def frame(kind, flags, stream_id, payload=b"", length=None) -> bytes:
    t = FRAME_TYPES[kind] if isinstance(kind, str) else kind
    n = len(payload) if length is None else length
    return struct.pack(">I", n)[1:] + struct.pack(">BBI", t, flags, stream_id) + payload


def settings_frame(pairs=(), ack=False) -> bytes:
    payload = b"".join(struct.pack(">HI", k, v) for k, v in pairs)
    return frame("SETTINGS", ACK if ack else 0, 0, payload)


def ping_frame(data=b"12345678", ack=False) -> bytes:
    return frame("PING", ACK if ack else 0, 0, data)


def rst_frame(stream_id, code) -> bytes:
    return frame("RST_STREAM", 0, stream_id, struct.pack(">I", code))


def window_update_frame(stream_id, increment) -> bytes:
    return frame("WINDOW_UPDATE", 0, stream_id, struct.pack(">I", increment))


def hpack_int(value, prefix_bits, first_byte_flags=0) -> bytes:
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes([first_byte_flags | value])
    out = bytearray([first_byte_flags | limit])
    value -= limit
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def hpack_str(s: bytes) -> bytes:
    return hpack_int(len(s), 7) + s


def literal(name, value, indexed=False) -> bytes:
    """A literal header field with a new name, not Huffman-coded: without
    indexing (0x00) or with incremental indexing (0x40)."""
    name = name.encode() if isinstance(name, str) else name
    value = value.encode() if isinstance(value, str) else value
    return bytes([0x40 if indexed else 0x00]) + hpack_str(name) + hpack_str(value)


def header_block(headers) -> bytes:
    """Headers as literals without indexing: the server's table is never
    touched, so blocks can be built independently of each other."""
    return b"".join(literal(n, v) for n, v in headers)


def grpc_request_headers(path=VERSION_PATH, extra=(), content_type="application/grpc"):
    return [
        (":method", "POST"),
        (":scheme", "http"),
        (":path", path),
        (":authority", "localhost"),
        ("content-type", content_type),
        ("te", "trailers"),
        *extra,
    ]


def h2_unary(socket_path, headers, body):
    """One call through python-hyper's h2 on a fresh connection: `headers`,
    then `body` (already gRPC-framed) ending the stream. Returns (response
    headers, raw response body, trailers or None); a reset fails the test."""
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(IO_TIMEOUT)
    sock.connect(str(socket_path))
    try:
        sock.sendall(conn.data_to_send())
        sid = conn.get_next_available_stream_id()
        conn.send_headers(sid, headers, end_stream=False)
        conn.send_data(sid, body, end_stream=True)
        sock.sendall(conn.data_to_send())
        got, body, trailers, ended = None, b"", None, False
        while not ended:
            data = sock.recv(65536)
            assert data, "crispd closed the connection"
            for ev in conn.receive_data(data):
                if isinstance(ev, h2.events.ResponseReceived):
                    got = dict(ev.headers)
                elif isinstance(ev, h2.events.DataReceived):
                    body += ev.data
                    conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                elif isinstance(ev, h2.events.TrailersReceived):
                    trailers = dict(ev.headers)
                elif isinstance(ev, h2.events.StreamEnded):
                    ended = ev.stream_id == sid
                elif isinstance(ev, h2.events.StreamReset):
                    raise AssertionError(f"stream reset: {ev.error_code}")
            sock.sendall(conn.data_to_send())
    finally:
        sock.close()
    return got, body, trailers


class Frame:
    def __init__(self, kind, flags, stream_id, payload):
        self.type = kind
        self.kind = TYPE_NAMES.get(kind, f"0x{kind:x}")
        self.flags = flags
        self.stream_id = stream_id
        self.payload = payload

    def error_code(self):
        if self.kind == "RST_STREAM":
            return ERROR_CODES.get(struct.unpack(">I", self.payload[:4])[0])
        if self.kind == "GOAWAY":
            return ERROR_CODES.get(struct.unpack(">I", self.payload[4:8])[0])
        return None

    def __repr__(self):
        extra = f" {self.error_code()}" if self.error_code() else ""
        return f"<{self.kind} stream={self.stream_id} flags=0x{self.flags:x} len={len(self.payload)}{extra}>"


class Closed(Exception):
    """The server closed the connection."""


class RawH2:
    """A client HTTP/2 connection where the test writes exact bytes.

    Reads are blocking with a generous timeout; SETTINGS from the server
    are acknowledged automatically when `auto_ack` is set.
    """

    def __init__(self, path, preface=True, settings=(), auto_ack=True):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(IO_TIMEOUT)
        self.sock.connect(str(path))
        self.buf = b""
        self.auto_ack = auto_ack
        self.decoder = hpack.Decoder()
        self.decoder.max_allowed_table_size = 65536
        self.frames = []
        if preface:
            self.send(PREFACE + settings_frame(settings))

    def send(self, data: bytes):
        self.sock.sendall(data)

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _fill(self):
        try:
            chunk = self.sock.recv(65536)
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            raise Closed()
        self.buf += chunk

    def read_frame(self) -> Frame:
        while len(self.buf) < 9:
            self._fill()
        n = int.from_bytes(self.buf[:3], "big")
        while len(self.buf) < 9 + n:
            self._fill()
        kind, flags, sid = struct.unpack(">BBI", self.buf[3:9])
        f = Frame(kind, flags, sid & 0x7FFFFFFF, self.buf[9 : 9 + n])
        self.buf = self.buf[9 + n :]
        if f.kind == "SETTINGS" and not f.flags & ACK and self.auto_ack:
            try:
                self.send(settings_frame(ack=True))
            except (BrokenPipeError, ConnectionResetError):
                pass  # the server may already have given up on us
        if f.kind in ("HEADERS", "CONTINUATION"):
            f.headers = self.decoder.decode(f.payload, raw=False) if f.flags & END_HEADERS else None
        self.frames.append(f)
        return f

    def read_until(self, pred):
        """Frames until one satisfies `pred`; that frame. Raises Closed at EOF."""
        while True:
            f = self.read_frame()
            if pred(f):
                return f

    def goaway_or_close(self):
        """The server's GOAWAY frame, or None when it closed without one."""
        try:
            return self.read_until(lambda f: f.kind == "GOAWAY")
        except Closed:
            return None

    def wait_closed(self):
        """Read until EOF (frames are recorded)."""
        try:
            while True:
                self.read_frame()
        except Closed:
            return

    def call(self, stream_id, path=VERSION_PATH, message=b"", extra=()):
        """A whole unary gRPC call on `stream_id`; its (headers, data, trailers)."""
        self.send(
            frame("HEADERS", END_HEADERS, stream_id, header_block(grpc_request_headers(path, extra)))
            + frame("DATA", END_STREAM, stream_id, grpc_frame(message))
        )
        return self.response(stream_id)

    def response(self, stream_id):
        """(headers, data, trailers) of the response on `stream_id`. A
        Trailers-Only response gives trailers == headers and data b""."""
        headers = None
        data = b""
        while True:
            f = self.read_frame()
            if f.stream_id != stream_id:
                if f.kind == "GOAWAY":
                    raise AssertionError(f"GOAWAY {f.error_code()} during a call: {f.payload[8:]!r}")
                continue
            if f.kind == "RST_STREAM":
                if headers is not None and f.error_code() == "NO_ERROR":
                    continue
                raise AssertionError(f"stream {stream_id} reset: {f.error_code()}")
            if f.kind == "DATA":
                data += f.payload
                if f.flags & END_STREAM:
                    return dict(headers), data, {}
            if f.kind == "HEADERS":
                if headers is None:
                    headers = f.headers
                    if f.flags & END_STREAM:
                        return dict(headers), data, dict(headers)
                else:
                    return dict(headers), data, dict(f.headers)
