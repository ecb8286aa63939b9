"""Pulls under registry faults: registries and mirrors that hang, stall
mid-blob, drop the connection, answer 503 with Retry-After, or serve a
gzip bomb; callers whose deadline passes. A stand-in (HangingServer,
FakeRegistry in imagetest.py) makes the faults a real registry won't;
the real docker-registry serves the healthy paths. Nothing here measures
time: waits are bounded only so that a broken crispd fails the test."""

import secrets
import signal
import subprocess
import tempfile
import threading
from pathlib import Path

import grpc
import pytest

import imagetest as it
from common.pods import Cri
from common.wait import wait_until


@pytest.fixture
def hanging():
    h = it.HangingServer()
    yield h
    h.stop()


@pytest.fixture
def start_crispd(crispd_bin, cri, tmp_path):
    """crispd with `config` (TOML) on fresh directories, with `.client`
    (the ImageService) and `.cri` (both services)."""
    made = []

    def start(config, state_dir=None):
        root = Path(tempfile.mkdtemp(prefix="crispd-pf-", dir=tmp_path))
        d = it.Crispd(crispd_bin, root, config)
        if state_dir:
            d.state_dir = state_dir
        d.tag = secrets.token_hex(4)
        d.start()
        d.client = it.Client(d, cri)
        d.cri = Cri(d, cri)
        made.append(d)
        return d

    yield start
    for d in reversed(made):
        d.client.close()
        d.cri.close()
        d.stop()


def no_partial_image(d):
    """Nothing of a failed pull is listed or left in the store."""
    assert d.client.list() == []
    assert list((d.store / "tmp").iterdir()) == []
    layers = d.store / "layers" / "sha256"
    assert not layers.exists() or list(layers.iterdir()) == []


def mirrors_only(*hosts):
    """Config: registry.k8s.io only through these mirrors, in order, each
    given up after 2 s without a byte."""
    mirrors = ", ".join(f'"http://{h}"' for h in hosts)
    return f"""
[images]
read_timeout_secs = 2
[[images.registries]]
host = "registry.k8s.io"
mirrors = [{mirrors}]
mirrors_only = true
"""


def pull_fails(d, ref, code, **kw):
    """Pulls `ref`, which must fail with `code`; returns the error's text."""
    with pytest.raises(grpc.RpcError) as e:
        d.client.pull(ref, **kw)
    assert e.value.code() == code, e.value.details()
    return e.value.details()


def test_stuck_pulls_do_not_starve_other_calls(start_crispd, hanging, cri):
    # Five pulls from a registry that never answers, with a no-progress
    # timeout far beyond the test: all four pull workers are stuck.
    d = start_crispd("[images]\npull_workers = 4\nread_timeout_secs = 3600\n")
    futures = [d.client.pull_future(f"{hanging.host}/stuck/image:{i}", timeout=600) for i in range(5)]
    wait_until("four pulls stuck on the registry", lambda: hanging.counts()[0] >= 4)

    # Everything else still answers.
    pb = d.cri.pb
    assert d.cri.rt.Version(pb.VersionRequest(), timeout=30).runtime_name == "crisp"
    assert d.client.list() == []
    assert not d.client.status("anything:1").HasField("image")
    assert d.client.fs_info().image_filesystems
    pod, _ = d.cri.runp("during-pulls", host_network=True)
    assert d.cri.podstatus(pod).state == pb.SANDBOX_READY
    d.cri.rmp(pod)
    for h in [Path("/sys/fs/cgroup")] + [p for p in Path("/sys/fs/cgroup").iterdir() if p.is_dir()]:
        try:
            (h / f"crisptest-{d.tag}").rmdir()
        except OSError:
            pass

    # The callers go: their pulls stop and let go of the registry.
    for f in futures:
        f.cancel()
    wait_until(
        "crispd to close the stuck pulls' connections",
        lambda: (lambda a, c: a >= 4 and c == a)(*hanging.counts()),
    )
    assert "pull stopped: no caller waits for it any more" in d.log_path.read_text()
    no_partial_image(d)


def test_a_pull_ends_by_its_callers_deadline(start_crispd, hanging):
    d = start_crispd("[images]\nread_timeout_secs = 3600\n")
    pull_fails(d, f"{hanging.host}/slow/image:1", grpc.StatusCode.DEADLINE_EXCEEDED, timeout=2)
    # The pull itself stopped: its connection is closed long before the
    # hour-long no-progress timeout.
    wait_until("crispd to close the pull's connection", lambda: (lambda a, c: a >= 1 and c == a)(*hanging.counts()))
    wait_until(
        "the pull's stop in the log",
        lambda: "pull stopped: no caller waits for it any more" in d.log_path.read_text(),
    )
    no_partial_image(d)


def test_a_pull_stalled_mid_blob_stops_at_the_deadline(start_crispd, fake, images):
    layer = images.busybox.layers[0]["digest"]
    fake.stall[layer] = 1000
    d = start_crispd("[images]\nread_timeout_secs = 3600\n")
    pull_fails(d, f"{fake.host}/any/busybox:busybox", grpc.StatusCode.DEADLINE_EXCEEDED, timeout=3)
    assert fake.stall_closed.wait(60), "crispd kept the stalled download open"
    wait_until("the pull's stop in the log", lambda: "pull stopped" in d.log_path.read_text())
    no_partial_image(d)


def test_a_hanging_mirror_is_skipped_for_the_next(start_crispd, hanging, registry, images):
    d = start_crispd(mirrors_only(hanging.host, registry.host))
    ref = "registry.k8s.io/e2e-test-images/busybox:1.29-2"
    assert d.client.pull(ref, timeout=120) == images.busybox.id
    log = d.log_path.read_text()
    assert "endpoint failed or stalled; trying the next" in log
    assert hanging.host in log
    assert [i.id for i in d.client.list()] == [images.busybox.id]


def test_mirrors_only_error_names_every_place_tried(start_crispd, hanging):
    closed = it.free_port()
    d = start_crispd(mirrors_only(hanging.host, f"127.0.0.1:{closed}"))
    msg = pull_fails(d, "registry.k8s.io/pause:3.10", grpc.StatusCode.UNAVAILABLE, timeout=120)
    assert "tried 2 places" in msg, msg
    assert hanging.host in msg and "timeout" in msg, msg
    assert f"127.0.0.1:{closed}" in msg, msg
    assert "registry.k8s.io/v2" not in msg.replace("registry.k8s.io/pause", ""), msg
    no_partial_image(d)


def test_busy_registry_is_retried_after_retry_after(start_crispd, fake, images):
    fake.busy = {"manifest": 1, images.busybox.layers[0]["digest"]: 2}
    d = start_crispd("")
    assert d.client.pull(f"{fake.host}/any/busybox:busybox") == images.busybox.id
    assert fake.busy_answers == 3
    assert "registry busy or failing; retrying" in d.log_path.read_text()


@pytest.mark.parametrize("fault", ["cut", "stall"])
def test_a_broken_download_is_resumed_with_a_range_request(start_crispd, fake, images, fault):
    layer = images.busybox.layers[0]
    half = layer["size"] // 2
    getattr(fake, fault)[layer["digest"]] = half
    d = start_crispd("[images]\nread_timeout_secs = 2\n")
    assert d.client.pull(f"{fake.host}/any/busybox:busybox") == images.busybox.id
    assert fake.ranges == [f"bytes={half}-"]
    assert "resuming with a Range request" in d.log_path.read_text()
    # Resumed, and still verified: the image runs from what was stored.
    assert [i.id for i in d.client.list()] == [images.busybox.id]


def test_a_corrupt_resume_fails_on_the_digest(start_crispd, fake, images):
    layer = images.busybox.layers[0]
    fake.cut[layer["digest"]] = layer["size"] // 2
    fake.corrupt.add(layer["digest"])
    d = start_crispd("")
    assert "digest mismatch" in pull_fails(d, f"{fake.host}/any/busybox:busybox", grpc.StatusCode.DATA_LOSS)
    no_partial_image(d)


def test_a_gzip_bomb_is_stopped_by_the_layer_cap(start_crispd, work, fake):
    lay = it.Layout(work / "bomb-layout")
    bomb = lay.image([it.Layer().file("zeros", b"\0" * (16 << 20)).bytes()])
    lay.tag(bomb.desc, "bomb")
    fake.layout = lay
    assert bomb.layers[0]["size"] < (1 << 20)
    d = start_crispd("[images]\nmax_layer_bytes = 1048576\n")
    msg = pull_fails(d, f"{fake.host}/any/bomb:bomb", grpc.StatusCode.RESOURCE_EXHAUSTED)
    assert bomb.layers[0]["digest"] in msg and "max_layer_bytes" in msg, msg
    no_partial_image(d)


def test_the_image_cap_counts_every_layer(start_crispd, work, fake):
    lay = it.Layout(work / "big-layout")
    two = [it.Layer().file(f"f{i}", bytes([i + 1]) * (3 << 20)).bytes() for i in range(2)]
    img = lay.image(two)
    lay.tag(img.desc, "big")
    fake.layout = lay
    d = start_crispd("[images]\nmax_layer_bytes = 4194304\nmax_image_bytes = 5242880\n")
    msg = pull_fails(d, f"{fake.host}/any/big:big", grpc.StatusCode.RESOURCE_EXHAUSTED)
    # Layers unpack in parallel: either may be the one that crosses it.
    assert any(l["digest"] in msg for l in img.layers) and "max_image_bytes" in msg, msg
    assert d.client.list() == []


def test_too_little_free_space_refuses_the_pull(start_crispd, fake):
    d = start_crispd("[images]\nmin_free_bytes = 9223372036854775807\n")
    assert "min_free_bytes" in pull_fails(d, f"{fake.host}/any/busybox:busybox", grpc.StatusCode.RESOURCE_EXHAUSTED)
    no_partial_image(d)


def slow_second_layer(start_crispd, fake, images, slow):
    """crispd, and the reference of the layered image whose second layer
    the fake registry holds back (`slow` is `fake.hold` or `fake.stall`)."""
    slow[images.layered.layers[1]["digest"]] = 10
    d = start_crispd("[images]\nread_timeout_secs = 3600\n")
    return d, f"{fake.host}/test/layers:layered"


def test_a_shared_pull_goes_on_while_one_caller_still_waits(start_crispd, fake, images):
    d, ref = slow_second_layer(start_crispd, fake, images, fake.hold)
    patient = d.client.pull_future(ref, timeout=600)
    it.wait_until("the pull to reach the held layer", fake.held.is_set)
    # A second caller of the same image, with a short deadline, gives up...
    pull_fails(d, ref, grpc.StatusCode.DEADLINE_EXCEEDED, timeout=2)
    # ...and the first caller's pull is untouched by it.
    fake.release.set()
    assert patient.result().image_ref == images.layered.id
    for l in images.layered.layers:
        assert fake.blob_gets[l["digest"]] == 1, l
    log = d.log_path.read_text()
    assert "pull stopped" not in log
    # The pull outlived the 2 s deadline above: its progress was logged.
    assert "pull progress" in log


def test_a_shared_pull_stops_when_its_last_caller_goes(start_crispd, fake, images):
    d, ref = slow_second_layer(start_crispd, fake, images, fake.stall)
    first = d.client.pull_future(ref, timeout=600)
    second = d.client.pull_future(ref, timeout=600)
    it.wait_until("both callers waiting", lambda: "waiting for the same work in progress" in d.log_path.read_text())
    first.cancel()
    assert not fake.stall_closed.wait(1), "the pull stopped while a caller still waited"
    second.cancel()
    assert fake.stall_closed.wait(60), "crispd kept the stalled download open"
    wait_until("the pull's stop in the log", lambda: "pull stopped" in d.log_path.read_text())
    # Layers that were complete and verified may stay (unreferenced, for
    # the next garbage collection); never the stalled one, nothing else.
    assert d.client.list() == []
    assert list((d.store / "tmp").iterdir()) == []
    complete = {x.split(":")[1] for i, x in enumerate(images.layered.diff_ids) if i != 1}
    kept = {p.name for p in (d.store / "layers" / "sha256").iterdir()}
    assert kept <= complete, kept


def test_layers_are_fetched_in_parallel(start_crispd, fake, images):
    held = images.layered.layers[1]["digest"]
    others = [l["digest"] for l in images.layered.layers if l["digest"] != held]
    fake.hold[held] = 10
    d = start_crispd("[images]\nmax_parallel_layers = 3\n")
    pull = d.client.pull_future(f"{fake.host}/test/layers:layered", timeout=600)
    # While one layer's download is held, the pull's other layers come.
    it.wait_until("the other layers fetched meanwhile", lambda: all(fake.blob_gets.get(o) == 1 for o in others))
    assert fake.held.is_set()
    fake.release.set()
    assert pull.result().image_ref == images.layered.id


def test_sigterm_with_stuck_pulls_stops_them_and_exits(start_crispd, hanging):
    d = start_crispd("shutdown_timeout_secs = 1\n[images]\nread_timeout_secs = 3600\n")
    futures = [d.client.pull_future(f"{hanging.host}/stuck/image:{i}", timeout=600) for i in range(2)]
    wait_until("the pulls stuck on the registry", lambda: hanging.counts()[0] >= 2)
    d.proc.send_signal(signal.SIGTERM)
    assert d.proc.wait(60) == 0
    wait_until("the stuck pulls' connections closed", lambda: (lambda a, c: c == a)(*hanging.counts()))
    for f in futures:
        with pytest.raises(grpc.RpcError):
            f.result()


@pytest.fixture
def small_disk(tmp_path):
    """A 6 MiB tmpfs: a disk that fills."""
    mnt = tmp_path / "small-disk"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", str(mnt)], check=True)
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


@pytest.mark.parametrize("min_free", [0, 2 << 20])
def test_a_full_disk_fails_the_pull_and_keeps_the_store_consistent(
    start_crispd, small_disk, work, fake, images, min_free
):
    lay = it.Layout(work / f"large-layout-{min_free}")
    large = lay.image([it.Layer().file("big", b"\1" * (16 << 20)).bytes()])
    lay.tag(large.desc, "large")
    d = start_crispd(f"[images]\nmin_free_bytes = {min_free}\n", state_dir=small_disk / "state")
    fake.layout = lay
    msg = pull_fails(d, f"{fake.host}/any/large:large", grpc.StatusCode.RESOURCE_EXHAUSTED)
    assert large.layers[0]["digest"] in msg, msg
    assert ("min_free_bytes" if min_free else "the disk is full") in msg, msg
    no_partial_image(d)
    # Space is back (the failed layer's files are gone): a small image pulls.
    fake.layout = images.layout
    assert d.client.pull(f"{fake.host}/any/busybox:busybox") == images.busybox.id


def test_crispd_pull_shows_the_daemons_progress(start_crispd, fake, images):
    """`crispd pull` through the daemon follows the pull's progress file:
    while a layer is held mid-blob it has printed the image's layers and
    the layers done, and the file is gone once the pull is over."""
    layer = images.layered.layers[1]["digest"]
    fake.hold[layer] = 10
    d = start_crispd("[images]\nread_timeout_secs = 3600\n")
    ref = f"{fake.host}/test/layers:layered"
    cli = subprocess.Popen(
        d.base_args() + ["--socket", str(d.socket), "--runtime-dir", str(d.runtime_dir), "pull", ref],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    lines = []

    def read_stderr():
        for line in cli.stderr:
            lines.append(line)

    reader = threading.Thread(target=read_stderr, daemon=True)
    reader.start()
    try:
        it.wait_until("the pull to reach the held layer", fake.held.is_set)
        layers = len(images.layered.layers)
        # The others are done, the held one is not.
        wait_until("the CLI showing the layers done", lambda: any(f"done ({layers - 1}/{layers})" in l for l in lines))
        assert any(f"{layers} layers," in l for l in lines), lines
        assert list((d.runtime_dir / "pulls").iterdir()) != []
    finally:
        fake.release.set()
    assert cli.wait(120) == 0, "".join(lines)
    reader.join(10)
    assert cli.stdout.read().strip() == images.layered.id
    assert f"done ({layers}/{layers})" in "".join(lines)
    assert f"through crispd on {d.socket}" in "".join(lines)
    assert list((d.runtime_dir / "pulls").iterdir()) == []
