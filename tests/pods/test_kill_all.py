"""Everything a container started ends with it (critest's "should support
HostPID"): with the host's or the pod's PID namespace, a container's init
takes nothing with it when it dies, so crispd kills the rest of its cgroup
(cgroup.kill, or freeze / SIGKILL each / thaw) when StopContainer has
stopped the init, when the init exits by itself, at restore for an exit
crispd missed, at StopPodSandbox, and before it removes a cgroup.

Each container here leaves two processes behind: a background child of
its init and a double-forked one, reparented away from the init (to the
host's init, the pod's holder, or the container's own init)."""

import os
from pathlib import Path

import pytest

import imagetest as it
from common.pods import Cri, alive, cgroup_hierarchies, status

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (namespaces, mounts, cgroups)")


# The init starts two sleepers that outlive it, then waits for /tmp/go
# (made by ExecSync, or from the host) and exits 3; or, with `exec`,
# becomes a third sleeper (`sleep 999`).
LEAVE_TWO = "busybox sleep 1000 & (busybox sleep 1001 &); "
WAIT_FOR_GO = "while [ ! -e /tmp/go ]; do busybox usleep 20000; done; exit 3"


def procs(cgroup):
    """Pids in `cgroup` (a path like /crisptest-x/pod/crisp-ctr) and below,
    in every hierarchy."""
    out = set()
    for h in cgroup_hierarchies():
        d = h / cgroup.lstrip("/")
        for sub, _, _ in os.walk(d):
            try:
                out.update(int(p) for p in (Path(sub) / "cgroup.procs").read_text().split())
            except OSError:
                pass
    return out


def sleepers(pids):
    """The `sleep 1000` and `sleep 1001` among `pids`."""
    found = {}
    for p in pids:
        try:
            cmd = Path(f"/proc/{p}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if cmd[-2:-1] in ([b"1000"], [b"1001"]) and b"sleep" in cmd:
            found[p] = cmd[-2].decode()
    return found


def pid_mode(pb, name):
    return {"host": pb.NODE, "pod": pb.POD, "container": pb.CONTAINER}[name]


def run_leaver(client, registry, name, mode, script, cgroup_parent=None):
    """A pod with the PID namespace mode `mode` and one started container
    running `script`; waits until both sleepers run. Returns the pod, the
    container, its cgroup and the sleepers' host pids."""
    pb = client.pb
    client.pull(registry.busybox)
    kw = {"pid": pid_mode(pb, mode)}
    if cgroup_parent:
        kw["cgroup_parent"] = cgroup_parent
    pod, cfg = client.runp(name, **kw)
    ccfg = pb.ContainerConfig(
        metadata=pb.ContainerMetadata(name="leaver", attempt=0),
        image=pb.ImageSpec(image=registry.busybox),
        command=["/bin/sh", "-c", script],
    )
    # kubelet gives the container the pod's namespace options.
    ccfg.linux.security_context.namespace_options.pid = pid_mode(pb, mode)
    cid = client.rt.CreateContainer(pb.CreateContainerRequest(pod_sandbox_id=pod, config=ccfg, sandbox_config=cfg), timeout=60).container_id
    client.rt.StartContainer(pb.StartContainerRequest(container_id=cid), timeout=60)
    cgroup = f"{cfg.linux.cgroup_parent}/crisp-{cid}"
    found = it.wait_until("both sleepers in the container's cgroup", lambda: (lambda s: s if sorted(s.values()) == ["1000", "1001"] else None)(sleepers(procs(cgroup))))
    return pod, cid, cgroup, set(found)


def assert_pod_gone(client, pod, cfg_parent, pids):
    assert [p for p in pids if alive(p)] == []
    assert not any((h / cfg_parent.lstrip("/")).exists() for h in cgroup_hierarchies())
    assert pod not in [p.id for p in client.rt.ListPodSandbox(client.pb.ListPodSandboxRequest(), timeout=10).items]


@pytest.mark.parametrize("mode", ["host", "pod", "container"])
def test_stop_container_ends_every_process_it_started(client, registry, mode):
    pb = client.pb
    pod, cid, cgroup, left = run_leaver(client, registry, f"stop-{mode}", mode, LEAVE_TWO + "exec busybox sleep 999")
    everything = procs(cgroup)
    assert left <= everything and len(everything) == 3
    # The init (sleep) ends at SIGTERM; the sleepers would outlive it.
    client.rt.StopContainer(pb.StopContainerRequest(container_id=cid, timeout=10), timeout=60)
    assert [p for p in everything if alive(p)] == []
    assert procs(cgroup) == set()
    assert status(client, cid).state == pb.CONTAINER_EXITED
    client.stopp(pod)
    client.rmp(pod)
    assert_pod_gone(client, pod, f"/crisptest-{client.daemon.tag}/stop-{mode}", everything)


@pytest.mark.parametrize("mode", ["host", "pod", "container"])
def test_an_init_that_exits_takes_what_it_left_with_it(client, registry, mode):
    pb = client.pb
    pod, cid, cgroup, left = run_leaver(client, registry, f"exit-{mode}", mode, LEAVE_TWO + WAIT_FOR_GO)
    r = client.rt.ExecSync(pb.ExecSyncRequest(container_id=cid, cmd=["busybox", "touch", "/tmp/go"], timeout=30), timeout=60)
    assert r.exit_code == 0, r.stderr
    it.wait_until("container exit", lambda: status(client, cid).state == pb.CONTAINER_EXITED)
    # Reported exited only once nothing of it is left, as containerd does.
    assert [p for p in left if alive(p)] == []
    assert procs(cgroup) == set()
    assert status(client, cid).exit_code == 3
    client.rmp(pod)
    assert_pod_gone(client, pod, f"/crisptest-{client.daemon.tag}/exit-{mode}", left)


@pytest.mark.parametrize("parent", ["made-by-crisp", "made-by-kubelet"])
@pytest.mark.parametrize("mode", ["host", "pod"])
def test_stop_pod_sandbox_ends_every_process_of_the_pod(client, registry, mode, parent):
    pb = client.pb
    tag = client.daemon.tag
    cgroup_parent = f"/crisptest-{tag}/pod-{mode}-{parent}"
    made = []
    if parent == "made-by-kubelet":
        made = [h / cgroup_parent.lstrip("/") for h in cgroup_hierarchies()]
        for d in made:
            d.mkdir(parents=True)
    try:
        pod, cid, cgroup, left = run_leaver(client, registry, f"pod-{mode}-{parent}", mode, LEAVE_TWO + "exec busybox sleep 999", cgroup_parent=cgroup_parent)
        everything = procs(cgroup_parent)
        assert left <= everything
        # No StopContainer: StopPodSandbox stops the container and ends
        # the rest.
        client.stopp(pod)
        assert [p for p in everything if alive(p)] == []
        assert procs(cgroup_parent) == set()
        assert status(client, cid).state == pb.CONTAINER_EXITED
        client.rmp(pod)
        assert [p for p in everything if alive(p)] == []
        if made:
            # kubelet's cgroup stays (kubelet removes it), emptied.
            assert all(d.is_dir() for d in made)
            assert not any((d / f"crisp-{cid}").exists() or (d / f"crisp-{pod}").exists() for d in made)
        else:
            assert_pod_gone(client, pod, cgroup_parent, everything)
    finally:
        for d in made:
            if d.exists():
                d.rmdir()


def test_a_busy_container_cgroup_is_killed_then_removed(client, registry):
    """RemovePodSandbox right away, with the container and its leftovers
    running: the pod goes at the first attempt, not after a minute of
    EBUSY."""
    pod, cid, cgroup, left = run_leaver(client, registry, "busy", "host", LEAVE_TWO + "exec busybox sleep 999")
    everything = procs(cgroup)
    client.rmp(pod)
    assert_pod_gone(client, pod, f"/crisptest-{client.daemon.tag}/busy", everything)


def test_leftovers_of_an_exit_crispd_missed_end_at_restore(make_crispd, registry, cri):
    d = make_crispd()
    pb = d.client.pb
    pod, cid, cgroup, left = run_leaver(d.client, registry, "restore", "host", LEAVE_TWO + WAIT_FOR_GO)
    d.kill()
    # The init exits while crispd is down (the rootfs is the container's
    # overlay, mounted on the host too); its monitor records the exit.
    (d.runtime_dir / "containers" / cid / "rootfs" / "tmp" / "go").write_text("")
    it.wait_until("the exit recorded", lambda: (d.runtime_dir / "containers" / cid / "exit.json").exists())
    assert all(alive(p) for p in left), "with nobody to end them, the sleepers outlive the init"
    d.start()
    d.client = Cri(d, cri)
    it.wait_until("the sleepers gone", lambda: not any(alive(p) for p in left))
    assert procs(cgroup) == set()
    st = status(d.client, cid)
    assert (st.state, st.exit_code) == (pb.CONTAINER_EXITED, 3)
    d.client.rmp(pod)
    assert_pod_gone(d.client, pod, f"/crisptest-{d.tag}/restore", left)
