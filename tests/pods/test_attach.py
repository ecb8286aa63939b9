"""Attach, the container side: containers created with `stdin` and `tty`
through crispd's real socket, and a client speaking the monitor's attach
protocol (crisp_monitor::attach) directly on the container's monitor
socket, as crispd's streaming server does: stdin in, stdout and stderr
out, the exit code last; the tty's size; `stdin_once`; several clients at
once; a client that never reads is dropped while the log keeps growing."""

import os
import socket
import struct
import threading
from pathlib import Path

import pytest

from common.channels import ws_read_all
from common.pods import create, log_lines, running_pod, start, status, wait_exited
from common.wait import wait_until

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (namespaces, mounts, cgroups)")

STDIN, STDOUT, STDERR, EXIT, RESIZE, STDIN_CLOSE = range(6)


@pytest.fixture
def pod(client, registry, tmp_path):
    yield from running_pod(client, "att", registry.busybox, tmp_path / "logs")


def monitor_socket(client, cid):
    return Path(client.daemon.runtime_dir) / "containers" / cid / "sock"


class Attached:
    """One attach connection to a container's monitor."""

    def __init__(self, client, cid, timeout=60):
        self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.s.settimeout(timeout)
        self.s.connect(str(monitor_socket(client, cid)))
        self.s.sendall(b"attach\n")
        line = b""
        while not line.endswith(b"\n"):
            b = self.s.recv(1)
            if not b:
                break
            line += b
        self.answer = line
        self.out = {STDOUT: b"", STDERR: b""}
        self.exit_code = None
        self.closed = False

    def send(self, kind, payload=b""):
        self.s.sendall(struct.pack(">BI", kind, len(payload)) + payload)

    def resize(self, width, height):
        self.send(RESIZE, struct.pack(">HH", width, height))

    def _exactly(self, n):
        data = b""
        while len(data) < n:
            chunk = self.s.recv(n - len(data))
            if not chunk:
                return None
            data += chunk
        return data

    def frame(self):
        """The next frame as (kind, payload); None at the end."""
        head = self._exactly(5)
        if head is None:
            self.closed = True
            return None
        kind, length = struct.unpack(">BI", head)
        assert length <= 65536, length
        payload = self._exactly(length)
        assert payload is not None, "connection closed inside a frame"
        if kind in (STDOUT, STDERR):
            self.out[kind] += payload
        elif kind == EXIT:
            assert self.exit_code is None, "two exit frames"
            self.exit_code = struct.unpack(">i", payload)[0]
        else:
            raise AssertionError(f"unexpected frame kind {kind}")
        return kind, payload

    def read_until(self, what, check):
        """Frames until `check(self)` holds (or the end, which fails)."""
        while not check(self):
            if self.frame() is None:
                raise AssertionError(f"connection closed before {what}: {self.out}")

    def read_to_end(self):
        while self.frame() is not None:
            pass

    def close(self):
        self.s.close()


def tty_log(path):
    """(stream, tag, text) of each line of a tty container's log, split on
    newlines only: the texts keep the pty's carriage returns."""
    out = []
    for line in Path(path).read_bytes().decode().split("\n")[:-1]:
        _, stream, tag, text = line.split(" ", 3)
        out.append((stream, tag, text))
    return out


def with_stdio(stdin=False, stdin_once=False, tty=False):
    def tweak(cfg):
        cfg.stdin, cfg.stdin_once, cfg.tty = stdin, stdin_once, tty

    return tweak


def test_attach_stdin_stdout_stderr_and_exit(client, pod):
    """`cat` reading the stdin pipe: what one client sends comes back as
    stdout to every attached client and into the log; closing stdin (kind
    5) ends `cat`; stderr has its own kind; the exit code comes last, then
    the monitor closes the connections."""
    script = "cat; echo to-stderr >&2; exit 3"
    cid = create(client, pod.id, pod.cfg, "cat", pod.image, ["/bin/sh", "-c", script], tweak=with_stdio(stdin=True))
    # Attaching before the start is allowed: the output comes once it runs.
    a = Attached(client, cid)
    assert a.answer == b"ok\n"
    start(client, cid)
    b = Attached(client, cid)
    assert b.answer == b"ok\n"
    a.send(STDIN, b"hello ")
    a.send(STDIN, b"world\n")
    for c in (a, b):
        c.read_until("the echo", lambda c: b"hello world\n" in c.out[STDOUT])
    # A resize without a tty is ignored.
    b.resize(80, 24)
    b.send(STDIN, b"from b\n")
    a.read_until("b's echo", lambda c: b"from b\n" in c.out[STDOUT])
    a.send(STDIN_CLOSE)
    for c in (a, b):
        c.read_to_end()
        assert c.exit_code == 3
        assert c.out == {STDOUT: b"hello world\nfrom b\n", STDERR: b"to-stderr\n"}, c.out
        c.close()
    st = wait_exited(client, cid)
    assert st.exit_code == 3
    log = pod.logs / "cat.log"
    assert log_lines(log, "stdout") == ["hello world", "from b"]
    assert log_lines(log, "stderr") == ["to-stderr"]


def test_without_stdin_the_container_reads_dev_null(client, pod):
    """Without `stdin`, the container's stdin is /dev/null (cat ends at
    once) and stdin frames are dropped."""
    cid = create(client, pod.id, pod.cfg, "nostdin", pod.image, ["/bin/sh", "-c", "busybox readlink /proc/self/fd/0; cat; echo done"])
    a = Attached(client, cid)
    assert a.answer == b"ok\n"
    a.send(STDIN, b"ignored\n")
    start(client, cid)
    a.read_to_end()
    assert (a.out[STDOUT], a.exit_code) == (b"/dev/null\ndone\n", 0)


def test_stdin_once_closes_stdin_when_the_first_writer_detaches(client, pod):
    """With `stdin_once`, the first client that wrote stdin takes it with
    it when it goes: `cat` reads end of file; a client that never wrote
    changes nothing."""
    cid = create(
        client,
        pod.id,
        pod.cfg,
        "once",
        pod.image,
        ["/bin/sh", "-c", "cat; echo eof"],
        tweak=with_stdio(stdin=True, stdin_once=True),
    )
    start(client, cid)
    watcher = Attached(client, cid)
    assert watcher.answer == b"ok\n"
    quiet = Attached(client, cid)
    quiet.close()
    writer = Attached(client, cid)
    writer.send(STDIN, b"once\n")
    watcher.read_until("the echo", lambda c: b"once\n" in c.out[STDOUT])
    assert status(client, cid).state == client.pb.CONTAINER_RUNNING
    writer.close()
    watcher.read_to_end()
    assert (watcher.out[STDOUT], watcher.exit_code) == (b"once\neof\n", 0)


def test_at_most_four_clients_attach(client, pod):
    cid = create(client, pod.id, pod.cfg, "many", pod.image, ["/bin/sh", "-c", "cat"], tweak=with_stdio(stdin=True))
    start(client, cid)
    clients = [Attached(client, cid) for _ in range(4)]
    assert [c.answer for c in clients] == [b"ok\n"] * 4
    fifth = Attached(client, cid)
    assert fifth.answer == b"error too many attached clients\n"
    assert fifth.s.recv(1) == b""
    # A place freed is taken again.
    clients.pop().close()
    clients.append(wait_until("a free place", lambda: (c := Attached(client, cid)).answer == b"ok\n" and c))
    clients[0].send(STDIN_CLOSE)
    for c in clients:
        c.read_to_end()
        assert c.exit_code == 0


def test_tty_output_resize_and_exit(client, pod):
    """A tty container: a shell on the pty, its stderr in the stdout frames
    and as stdout in the log, a resize seen by `stty size`, the exit code
    of `exit`."""
    cid = create(client, pod.id, pod.cfg, "tty", pod.image, ["/bin/sh"], tweak=with_stdio(stdin=True, tty=True))
    start(client, cid)
    a = Attached(client, cid)
    assert a.answer == b"ok\n"
    a.resize(123, 45)
    a.send(STDIN, b"busybox stty size; echo to-stderr-$((6*7)) >&2\n")
    a.read_until("the size", lambda c: b"45 123" in c.out[STDOUT] and b"to-stderr-42" in c.out[STDOUT])
    a.resize(90, 20)
    a.send(STDIN, b"busybox stty size\n")
    a.read_until("the new size", lambda c: b"20 90" in c.out[STDOUT])
    # Closing stdin is ignored for a tty: the shell is still there.
    a.send(STDIN_CLOSE)
    a.send(STDIN, b"echo still-$((1+1))\n")
    a.read_until("the echo", lambda c: b"still-2" in c.out[STDOUT])
    a.send(STDIN, b"exit 5\n")
    a.read_to_end()
    assert a.exit_code == 5
    assert a.out[STDERR] == b""
    st = wait_exited(client, cid)
    assert st.exit_code == 5
    lines = tty_log(pod.logs / "tty.log")
    assert {stream for stream, _, _ in lines} == {"stdout"}, lines
    out = "\n".join(text for _, _, text in lines)
    assert "45 123\r" in out and "to-stderr-42\r" in out and "still-2\r" in out, out


def test_tty_without_stdin(client, pod):
    """A tty without `stdin`: the pty is its stdio (so `-t 0` holds), and
    what clients send is dropped (the tty would have echoed it)."""
    script = "[ -t 0 ] && [ -t 1 ] && [ -t 2 ] && echo tty; echo done"
    cid = create(client, pod.id, pod.cfg, "ttyout", pod.image, ["/bin/sh", "-c", script], tweak=with_stdio(tty=True))
    a = Attached(client, cid)
    a.send(STDIN, b"dropped\n")
    start(client, cid)
    a.read_to_end()
    assert a.exit_code == 0
    assert a.out[STDOUT] == b"tty\r\ndone\r\n", a.out
    assert tty_log(pod.logs / "ttyout.log") == [("stdout", "F", "tty\r"), ("stdout", "F", "done\r")]


def test_a_client_that_never_reads_is_dropped(client, pod):
    """Output the container writes goes on into the log while an attached
    client reads nothing: the monitor drops that client (the connection
    ends without an exit frame, the container still running) instead of
    waiting for it; another client attaches and reads as usual."""
    script = "while true; do busybox head -c 16384 /dev/zero | busybox tr '\\0' x; echo; busybox usleep 10000; done"
    cid = create(client, pod.id, pod.cfg, "flood", pod.image, ["/bin/sh", "-c", script])
    stalled = Attached(client, cid)
    assert stalled.answer == b"ok\n"
    start(client, cid)
    log = pod.logs / "flood.log"
    # Far more than the socket's buffers and the monitor's backlog hold.
    wait_until("4 MiB of log", lambda: log.exists() and log.stat().st_size > 4 << 20)
    stalled.read_to_end()
    assert stalled.closed and stalled.exit_code is None
    assert status(client, cid).state == client.pb.CONTAINER_RUNNING
    size = log.stat().st_size
    wait_until("more log", lambda: log.stat().st_size > size + (1 << 20))
    reader = Attached(client, cid)
    assert reader.answer == b"ok\n"
    reader.read_until("a line", lambda c: b"x" * 16384 + b"\n" in c.out[STDOUT])
    # Read on while the container is stopped: a client that paused here
    # would be dropped too.
    reading = threading.Thread(target=reader.read_to_end)
    reading.start()
    client.rt.StopContainer(client.pb.StopContainerRequest(container_id=cid, timeout=1), timeout=60)
    reading.join()
    assert reader.exit_code == status(client, cid).exit_code != 0



def test_the_std_monitor_runs_a_tty_but_refuses_attach(make_crispd, registry, tmp_path, monkeypatch):
    """The std monitor (CRISP_STD_MONITOR set, or where the tiny one cannot
    run) gives a tty container its pty and logs it, but does not serve
    attach: it says so."""
    monkeypatch.setenv("CRISP_STD_MONITOR", "1")
    client = make_crispd().client
    pods = running_pod(client, "std", registry.busybox, tmp_path / "logs")
    pod = next(pods)
    script = "[ -t 0 ] && [ -t 2 ] && echo tty-$((1+1)); exec busybox sleep 1000"
    cid = create(client, pod.id, pod.cfg, "stdtty", pod.image, ["/bin/sh", "-c", script], tweak=with_stdio(stdin=True, tty=True))
    start(client, cid)
    log = pod.logs / "stdtty.log"
    wait_until("the line", lambda: log.exists() and ("stdout", "F", "tty-2\r") in tty_log(log))
    a = Attached(client, cid)
    assert a.answer == b"error attach needs the tiny monitor\n"
    client.rt.StopContainer(client.pb.StopContainerRequest(container_id=cid, timeout=1), timeout=60)
    assert status(client, cid).state == client.pb.CONTAINER_EXITED
    next(pods, None)


def test_a_megabyte_through_stdin_and_back(client, pod):
    """More stdin than the pipe holds, in the largest frames: the monitor
    feeds it as `cat` reads (holding the client back meanwhile), and every
    byte comes back, in order."""
    cid = create(client, pod.id, pod.cfg, "mega", pod.image, ["/bin/cat"], tweak=with_stdio(stdin=True))
    start(client, cid)
    a = Attached(client, cid)
    data = bytes((i * 7 + i // 251) % 256 for i in range(1 << 20))

    reading = threading.Thread(target=a.read_to_end)
    reading.start()
    for at in range(0, len(data), 65536):
        # At most 64 KiB ahead of what came back, so that a reader slowed
        # by this machine's load never lags enough to be dropped.
        wait_until("the echo", lambda: len(a.out[STDOUT]) >= at - 65536)
        a.send(STDIN, data[at : at + 65536])
    a.send(STDIN_CLOSE)
    reading.join()
    assert a.exit_code == 0
    assert len(a.out[STDOUT]) == len(data) and a.out[STDOUT] == data


def test_a_bad_frame_drops_only_its_client(client, pod):
    """A frame crispd must not send (here an output kind, then an
    oversized length) ends that connection without an exit frame; the
    container and other clients carry on."""
    cid = create(client, pod.id, pod.cfg, "bad", pod.image, ["/bin/cat"], tweak=with_stdio(stdin=True))
    start(client, cid)
    good = Attached(client, cid)
    for bad in (struct.pack(">BI", STDOUT, 1) + b"x", struct.pack(">BI", STDIN, 65537)):
        b = Attached(client, cid)
        assert b.answer == b"ok\n"
        b.s.sendall(bad)
        b.read_to_end()
        assert b.exit_code is None and b.out[STDOUT] == b""
    good.send(STDIN, b"still here\n")
    good.read_until("the echo", lambda c: b"still here\n" in c.out[STDOUT])
    good.send(STDIN_CLOSE)
    good.read_to_end()
    assert good.exit_code == 0


# ------------------------------------------------- through crispd's Attach


def attach_ws(client, cid, protocol="v5.channel.k8s.io", **kw):
    """A WebSocket to the URL crispd's Attach gives for `cid`."""
    import websocket
    from urllib.parse import urlparse

    req = client.pb.AttachRequest(container_id=cid, **kw)
    u = urlparse(client.rt.Attach(req, timeout=10).url)
    return websocket.create_connection(f"ws://{u.netloc}{u.path}", subprotocols=[protocol], timeout=30)


def test_attach_through_crispd_over_websocket(client, pod):
    """End to end: Attach's URL, a WebSocket client (websocket-client),
    crispd's streaming server, the monitor: stdin in, the echo out, the
    end of stdin closing a `stdin_once` container's stdin, its exit code
    in the status message."""
    import json

    script = "cat; echo bye >&2; exit 3"
    cid = create(client, pod.id, pod.cfg, "wscat", pod.image, ["/bin/sh", "-c", script], tweak=with_stdio(stdin=True, stdin_once=True))
    start(client, cid)
    ws = attach_ws(client, cid, stdin=True, stdout=True, stderr=True)
    ws.send_binary(b"\x00hello through attach\n")
    ws.send_binary(b"\xff\x00")  # v5 CLOSE of stdin
    got = ws_read_all(ws)
    assert bytes(got.get(1, b"")) == b"hello through attach\n", got
    assert bytes(got.get(2, b"")) == b"bye\n", got
    st = json.loads(bytes(got[3]))
    assert st["reason"] == "NonZeroExitCode" and st["details"]["causes"] == [{"reason": "ExitCode", "message": "3"}], st


def test_tty_attach_through_crispd_over_websocket(client, pod):
    """A tty container's shell through Attach: the resize reaches the pty,
    the exit code comes back."""
    import json

    cid = create(client, pod.id, pod.cfg, "wstty", pod.image, ["/bin/sh"], tweak=with_stdio(stdin=True, tty=True))
    start(client, cid)
    ws = attach_ws(client, cid, "v4.channel.k8s.io", stdin=True, stdout=True, tty=True)
    ws.send_binary(b'\x04{"Width":123,"Height":45}')
    ws.send_binary(b"\x00busybox stty size; exit 4\n")
    got = ws_read_all(ws)
    out = bytes(got.get(1, b"")).decode()
    assert "45 123" in out, out
    st = json.loads(bytes(got[3]))
    assert st["details"]["causes"] == [{"reason": "ExitCode", "message": "4"}], st
