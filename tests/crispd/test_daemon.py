"""crispd as a process: its socket, one instance per runtime directory,
shutdown under load, and its command line."""

import os
import signal
import socket
import subprocess
import threading
import time
import tomllib

import grpc

import harness

FLAGS = [
    "--socket",
    "--state-dir",
    "--runtime-dir",
    "--tcp-listen",
    "--log-level",
    "--log-format",
    "--config",
    "--print-config",
]


def test_second_instance_on_the_same_runtime_dir_refuses(make_crispd, crispd_bin):
    first = make_crispd()
    second = harness.Crispd(crispd_bin, root=first.root)
    try:
        second.start(wait=False)
        assert second.wait() != 0
        assert "another crispd is running" in second.stderr()
        assert "refusing to start" in second.stderr()
    finally:
        second.cleanup()
    # The first one is untouched and still serves.
    assert first.proc.poll() is None
    assert first.socket.is_socket()
    with grpc.insecure_channel(first.target) as ch:
        grpc.channel_ready_future(ch).result(timeout=harness.IO_TIMEOUT)


def test_second_instance_on_a_live_socket_refuses(make_crispd, crispd_bin, tmp_path):
    first = make_crispd()
    # Its own runtime directory (so no lock conflict), the first one's socket.
    second = harness.Crispd(crispd_bin, root=tmp_path)
    second.socket = first.socket
    try:
        second.start(wait=False)
        assert second.wait() != 0
        assert "served by another process" in second.stderr()
    finally:
        second.cleanup()
    assert first.socket.is_socket()
    with grpc.insecure_channel(first.target) as ch:
        grpc.channel_ready_future(ch).result(timeout=harness.IO_TIMEOUT)


def test_stale_socket_is_replaced(make_crispd, cri):
    d = make_crispd(start=False)
    d.runtime_dir.mkdir(mode=0o711)
    leftover = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    leftover.bind(str(d.socket))  # a socket file with nobody listening
    leftover.close()
    assert d.socket.is_socket()
    d.start()
    assert "replacing stale socket" in d.stderr()
    pb2, pb2_grpc = cri
    with grpc.insecure_channel(d.target) as ch:
        r = pb2_grpc.RuntimeServiceStub(ch).Version(pb2.VersionRequest(), timeout=30)
    assert r.runtime_name == "crisp"


def test_socket_held_by_a_dead_servers_child_is_replaced(make_crispd, cri):
    """A crispd killed while a child it forked had not exec'd yet leaves
    its listening socket open in that child: connections are queued, never
    accepted. The next crispd sees that the process that listens has
    exited (the connection's peer credentials) and replaces the socket."""
    d = make_crispd(start=False)
    d.runtime_dir.mkdir(mode=0o711)
    # A child listens and forks a grandchild that keeps the socket, then
    # exits: the socket's listener is gone, the socket still accepts.
    script = (
        "import os, socket, time\n"
        "s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)\n"
        f"s.bind({str(d.socket)!r}); s.listen(8)\n"
        "pid = os.fork()\n"
        "if pid == 0:\n"
        "    os.close(1); time.sleep(60); os._exit(0)\n"
        "print(pid, flush=True)\n"
    )
    out = subprocess.run(["python3", "-c", script], stdout=subprocess.PIPE, check=True, timeout=30).stdout
    holder = int(out)
    try:
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        probe.connect(str(d.socket))  # still accepts: the grandchild holds it
        probe.close()
        # The stale socket accepts too: wait for crispd's word, not a connect.
        d.start(wait=False)
        deadline = time.monotonic() + 60
        while "crispd serving" not in d.stderr() and d.proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert "the socket's server has exited" in d.stderr(), d.stderr()
        pb2, pb2_grpc = cri
        with grpc.insecure_channel(d.target) as ch:
            r = pb2_grpc.RuntimeServiceStub(ch).Version(pb2.VersionRequest(), timeout=30)
        assert r.runtime_name == "crisp"
    finally:
        os.kill(holder, signal.SIGKILL)


def test_sigterm_under_load(make_crispd, cri):
    """SIGTERM while 50 threads keep calling Version over 5 connections:
    every call ends OK or with a clean UNAVAILABLE (none hangs: each has a
    deadline, which would show as DEADLINE_EXCEEDED); crispd exits 0 and
    removes its socket."""
    pb2, pb2_grpc = cri
    d = make_crispd()
    channels = [grpc.insecure_channel(d.target) for _ in range(5)]
    outcomes = []
    lock = threading.Lock()
    warmed = threading.Semaphore(0)
    signalled = threading.Event()

    def worker(i):
        stub = pb2_grpc.RuntimeServiceStub(channels[i % len(channels)])
        first = True
        while True:
            try:
                stub.Version(pb2.VersionRequest(), timeout=30)
                code = grpc.StatusCode.OK
            except grpc.RpcError as e:
                code = e.code()
            with lock:
                outcomes.append((signalled.is_set(), code))
            if first:
                first = False
                warmed.release()
            if code != grpc.StatusCode.OK:
                return
            if signalled.is_set() and len(outcomes) > 100_000:
                return  # bounded, should crispd never stop answering

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(50)]
    try:
        for t in threads:
            t.start()
        for _ in threads:
            assert warmed.acquire(timeout=60), "calls did not get going"
        signalled.set()
        d.signal()
        assert d.wait() == 0, d.stderr()
        for t in threads:
            t.join(timeout=60)
            assert not t.is_alive(), "a call hung after SIGTERM"
    finally:
        signalled.set()
        for ch in channels:
            ch.close()
    codes = {code for _, code in outcomes}
    print(f"{len(outcomes)} calls; after SIGTERM:",
          sorted((c.name, sum(1 for b, x in outcomes if b and x == c)) for c in codes))
    assert codes <= {grpc.StatusCode.OK, grpc.StatusCode.UNAVAILABLE}, codes
    assert all(code == grpc.StatusCode.OK for before, code in outcomes if not before)
    assert not d.socket.exists()
    assert "shutting down" in d.stderr()


def test_print_config_reads_back(crispd_bin, tmp_path):
    empty = tmp_path / "empty.toml"
    empty.write_text("")
    first = subprocess.run(
        [str(crispd_bin), "--config", str(empty), "--print-config", "--socket", "/x/y.sock",
         "--tcp-listen", "127.0.0.1:1234", "--log-level", "debug"],
        capture_output=True, text=True, check=True,
    ).stdout
    parsed = tomllib.loads(first)
    assert parsed["socket"] == "/x/y.sock"
    assert parsed["tcp_listen"] == "127.0.0.1:1234"
    assert parsed["log"]["level"] == "debug"
    assert parsed["grpc"]["max_recv_message_size"] == 16 << 20
    assert parsed["access"]["tcp_methods"] == ["read-only"]
    printed = tmp_path / "printed.toml"
    printed.write_text(first)
    again = subprocess.run(
        [str(crispd_bin), "--config", str(printed), "--print-config"],
        capture_output=True, text=True, check=True,
    ).stdout
    assert again == first


def test_help_mentions_every_flag(crispd_bin):
    out = subprocess.run([str(crispd_bin), "--help"], capture_output=True, text=True, check=True).stdout
    for flag in FLAGS:
        assert flag in out, flag


def test_bad_config_is_refused(crispd_bin, tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('sockett = "/x"\n')
    p = subprocess.run([str(crispd_bin), "--config", str(bad), "--print-config"],
                       capture_output=True, text=True)
    assert p.returncode != 0
    assert "invalid config" in p.stderr
