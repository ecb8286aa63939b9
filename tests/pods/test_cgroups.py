"""Pod cgroups through crispd's one cgroup abstraction (the executor's
v1/v2 `Cgroups`): the pod's cgroup is its cgroup_parent, the holder and
each container go inside it, stats come from them, and RemovePodSandbox
removes the pod cgroup only when crisp created it."""

import os
from pathlib import Path

import pytest

from common.pods import cgroup_hierarchies, kubelet_made_cgroup

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (namespaces, mounts, cgroups)")

ROOT = Path("/sys/fs/cgroup")


def memory_dir():
    """Where memory cgroups live: the v1 memory hierarchy, or v2's root."""
    return ROOT if (ROOT / "cgroup.controllers").exists() else ROOT / "memory"


def cgroup_of(pid):
    """The process's memory cgroup path (v1), or its v2 path."""
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, ctrls, path = line.split(":", 2)
        if "memory" in ctrls.split(",") or (ctrls == "" and memory_dir() == ROOT):
            return path
    raise AssertionError(f"no memory cgroup for {pid}")


def pid_of(client, pod):
    return int((client.daemon.runtime_dir / "pods" / pod / "sandbox.json").read_text().split('"pid":')[1].split(",")[0])


def test_pod_cgroups_stats_and_removal(client, registry):
    pb = client.pb
    tag = client.daemon.tag
    client.pull(registry.busybox)
    pod, cfg = client.runp("cg")
    parent = f"/crisptest-{tag}/cg"
    mem = memory_dir()
    assert (mem / parent.lstrip("/")).is_dir()
    assert cgroup_of(pid_of(client, pod)) == f"{parent}/crisp-{pod}"
    cid = client.create(pod, cfg, "c", registry.busybox, ["/bin/busybox", "sleep", "1000"])
    client.rt.StartContainer(pb.StartContainerRequest(container_id=cid), timeout=60)
    assert (mem / parent.lstrip("/") / f"crisp-{cid}").is_dir()

    stats = client.rt.ContainerStats(pb.ContainerStatsRequest(container_id=cid)).stats
    assert stats.memory.working_set_bytes.value > 0
    assert stats.HasField("cpu")
    pstats = client.rt.PodSandboxStats(pb.PodSandboxStatsRequest(pod_sandbox_id=pod)).stats
    assert pstats.linux.memory.working_set_bytes.value > 0
    assert pstats.linux.HasField("cpu")

    client.rt.StopContainer(pb.StopContainerRequest(container_id=cid, timeout=0), timeout=60)
    client.rmp(pod)
    assert not (mem / parent.lstrip("/")).exists()
    # The test's own top directory (crispd made only the pod's level).
    for h in cgroup_hierarchies():
        top = h / f"crisptest-{tag}"
        if top.is_dir():
            top.rmdir()


def test_a_cgroup_parent_crisp_did_not_make_stays(client):
    tag = client.daemon.tag
    mem = memory_dir()
    # Made beforehand, as kubelet makes its pod cgroups.
    with kubelet_made_cgroup(f"crisptest-{tag}/kubelet-made"):
        pod, _ = client.runp("kept", cgroup_parent=f"/crisptest-{tag}/kubelet-made")
        assert (mem / f"crisptest-{tag}" / "kubelet-made" / f"crisp-{pod}").is_dir()
        client.rmp(pod)
        assert not (mem / f"crisptest-{tag}" / "kubelet-made" / f"crisp-{pod}").exists()
        assert (mem / f"crisptest-{tag}" / "kubelet-made").is_dir()
