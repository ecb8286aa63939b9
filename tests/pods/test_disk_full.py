"""A full state directory: crispd's state_dir on a small tmpfs filled to
the last byte by a file. Calls that must persist fail with
RESOURCE_EXHAUSTED naming the path ("No space left on device"), what was
answered OK before stays (also after a restart), crispd recovers by itself
once the file is gone (no restart), and everything can then be removed
with nothing left behind."""

import errno
import os
import subprocess

import grpc
import pytest

from common import leftovers
from common.pods import Cri, create, start, status
from common.wait import wait_until

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (mounts, namespaces)")

SCRIPT = "trap 'exit 0' TERM; busybox sleep 1000 & wait"


@pytest.fixture
def small_state(tmp_path):
    """A 64 MiB tmpfs as the state directory of the test's first crispd
    (make_crispd's crispd0; request this fixture before make_crispd, so
    that it is unmounted after that crispd stopped)."""
    state = tmp_path / "crispd0" / "state"
    state.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m,mode=0755", "crisptest-state", str(state)], check=True)
    yield state
    # Lazily: a crispd a failed test left running must not keep it mounted.
    subprocess.run(["umount", "-l", str(state)], check=False)


def fill(fs):
    """A file taking every free byte of `fs`."""
    filler = fs / "filler"
    with open(filler, "wb", buffering=0) as f:
        for chunk in (1 << 20, 4096, 1):
            try:
                while True:
                    f.write(b"\0" * chunk)
            except OSError as e:
                assert e.errno == errno.ENOSPC, e
    return filler


def assert_full(err, state):
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, err.value
    assert "No space left on device" in err.value.details(), err.value.details()
    assert str(state) in err.value.details(), err.value.details()


def listed(c):
    pb = c.pb
    pods = {p.id: p.state for p in c.rt.ListPodSandbox(pb.ListPodSandboxRequest(), timeout=10).items}
    ctrs = {x.id: x.state for x in c.rt.ListContainers(pb.ListContainersRequest(), timeout=10).containers}
    return pods, ctrs


def test_state_dir_full(small_state, make_crispd, registry, cri, network, tmp_path):
    d = make_crispd(config="[images]\nmin_free_bytes = 0\n")
    c = d.client
    pb = c.pb
    c.pull(registry.busybox)
    pod, cfg = c.runp("full-a")
    running = create(c, pod, cfg, "running", registry.busybox, ["/bin/sh", "-c", SCRIPT])
    start(c, running)
    created = create(c, pod, cfg, "created", registry.busybox, ["/bin/sh", "-c", SCRIPT])

    filler = fill(small_state)

    # Records that exist change in place (their slots keep their blocks):
    # state changes of existing objects still persist.
    start(c, created)
    c.rt.StopContainer(pb.StopContainerRequest(container_id=running, timeout=5), timeout=60)
    # New records need room.
    with pytest.raises(grpc.RpcError) as err:
        c.runp("full-b")
    assert_full(err, small_state)
    # Still serving, and what was answered is as answered.
    pods, ctrs = listed(c)
    assert pods[pod] == pb.SANDBOX_READY
    assert ctrs[running] == pb.CONTAINER_EXITED
    assert ctrs[created] == pb.CONTAINER_RUNNING
    # A failed write leaves no partial file behind taking space.
    assert not [f for f in leftovers.files_in(small_state) if ".tmp-" in f]

    # crispd restarts on the full disk and serves what it had.
    d.stop()
    c.close()
    d.start()
    d.client = c = Cri(d, cri)
    pods, ctrs = listed(c)
    assert pods[pod] == pb.SANDBOX_READY
    assert ctrs[running] == pb.CONTAINER_EXITED
    assert ctrs[created] == pb.CONTAINER_RUNNING
    with pytest.raises(grpc.RpcError) as err:
        create(c, pod, cfg, "late", registry.busybox, ["/bin/sh", "-c", SCRIPT])
    assert_full(err, small_state)

    # Space returns: crispd recovers with no restart.
    filler.unlink()
    pod_b, cfg_b = c.runp("full-b")
    late = create(c, pod_b, cfg_b, "late", registry.busybox, ["/bin/sh", "-c", SCRIPT])
    start(c, late)
    c.rt.RemoveContainer(pb.RemoveContainerRequest(container_id=running), timeout=60)
    # The container whose CreateContainer failed stayed in memory with its
    # name; its record is written again by itself now that there is room,
    # so it survives the restart below, and can be removed.
    pods, ctrs = listed(c)
    ghosts = set(ctrs) - {created, late}
    assert len(ghosts) <= 1, ghosts
    for g in ghosts:
        wait_until("the failed create's record", lambda g=g: (small_state / "cri" / f"container-{g}").exists())

    d.stop()
    c.close()
    d.start()
    d.client = c = Cri(d, cri)
    pods, ctrs = listed(c)
    assert set(pods) == {pod, pod_b}
    assert set(ctrs) == {created, late} | ghosts
    assert status(c, created).state in (pb.CONTAINER_RUNNING, pb.CONTAINER_EXITED)
    log = d.log()
    for word in ("cannot read record", "cannot decode record", "skipped pod sandbox", "skipped container"):
        assert word not in log, word

    for p in (pod, pod_b):
        c.stopp(p)
        c.rmp(p)
    assert listed(c) == ({}, {})
    found = leftovers.mounts_under(d.runtime_dir, d.root / "run")
    found += leftovers.cgroups_under(f"/crisptest-{d.tag}")
    mentions = [f"crisptest-{d.tag}", str(d.runtime_dir)]
    found += [p for p in leftovers.processes_mentioning(mentions, {d.proc.pid}) if "monitor-spare" not in p]
    found += leftovers.files_in(d.runtime_dir / "pods", d.runtime_dir / "containers", small_state / "containers", small_state / "cri" / "net")
    found += [f for f in leftovers.files_in(small_state / "cri") if "/pod-" in f or "/container-" in f or ".tmp-" in f]
    found += leftovers.ip_leases(network.ipam_dir, network.prefix)
    found += leftovers.bridge_ports(network.bridge)
    assert not found, "\n".join(found)
