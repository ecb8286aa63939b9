"""Exits watched without a thread per container or pod: crispd keeps a
connection to each running container's monitor (and a pidfd of each
pod's holder) on its event loop, so its thread count does not grow with
its containers and pods, and every container's exit is still
noticed — with its code, its reason and finished_at, its
GetContainerEvents event, and the kill-all of what a container sharing
its pod's PID namespace left behind — also by a crispd restarted under
running containers."""

import os
import signal
import threading
from pathlib import Path

import grpc
import pytest

import imagetest as it
from common.pods import Cri, cgroup_hierarchies, log_lines, pid_of, status

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (namespaces, mounts, cgroups)")

# CRISP_TEST_CONTAINERS=100 CRISP_TEST_PODS=100 (with `pytest -s`) to
# measure by hand.
CONTAINERS = int(os.environ.get("CRISP_TEST_CONTAINERS", "30"))
PODS = int(os.environ.get("CRISP_TEST_PODS", "10"))
# The main thread and the two pools (4 + 4 by default), with room for a
# short-lived helper (the spare monitor's starter): not one per container
# or pod.
MAX_THREADS = 12


def threads(d):
    return len(os.listdir(f"/proc/{d.proc.pid}/task"))


def memory(d):
    """crispd's RSS and Pss, as text."""
    rss = pss = 0
    for line in Path(f"/proc/{d.proc.pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Rss:"):
            rss = int(line.split()[1])
        elif line.startswith("Pss:"):
            pss = int(line.split()[1])
    return f"{rss} KiB RSS, {pss} KiB Pss"


def procs(cgroup):
    out = set()
    for h in cgroup_hierarchies():
        try:
            out.update(int(p) for p in (h / cgroup.lstrip("/") / "cgroup.procs").read_text().split())
        except OSError:
            pass
    return out


class Events:
    """A GetContainerEvents subscription: (container, event type) as they
    come. Live once it has seen a container created in `pod` for it."""

    def __init__(self, client, registry, pod):
        pb = client.pb
        self.got = []
        self.call = client.rt.GetContainerEvents(pb.GetEventsRequest())
        self.thread = threading.Thread(target=self.listen)
        self.thread.start()
        pod_id, cfg, _ = pod
        n = 0
        while True:
            n += 1
            ccfg = pb.ContainerConfig(
                metadata=pb.ContainerMetadata(name=f"probe{n}", attempt=0),
                image=pb.ImageSpec(image=registry.busybox),
                command=["/bin/sh", "-c", "true"],
            )
            req = pb.CreateContainerRequest(pod_sandbox_id=pod_id, config=ccfg, sandbox_config=cfg)
            probe = client.rt.CreateContainer(req, timeout=60).container_id
            client.rt.RemoveContainer(pb.RemoveContainerRequest(container_id=probe), timeout=60)
            try:
                it.wait_until("the subscription", lambda: (probe, pb.CONTAINER_CREATED_EVENT) in self.got, timeout=2)
                return
            except AssertionError:
                if n == 30:
                    raise

    def listen(self):
        try:
            for ev in self.call:
                self.got.append((ev.container_id, ev.container_event_type))
        except grpc.RpcError:
            pass

    def close(self):
        self.call.cancel()
        self.thread.join(10)


class Ctr:
    pass


def start_sleepers(d, registry, logs):
    """CONTAINERS containers over PODS pods, each waiting in `wait` for a
    background sleeper, exiting with its own code on SIGTERM. The last
    pod shares its PID namespace between its containers: a sleeper there
    outlives its init unless crispd ends it."""
    pb = d.client.pb
    d.client.pull(registry.busybox)
    pods = []
    for p in range(PODS):
        mode = pb.POD if p == PODS - 1 else pb.CONTAINER
        pod_id, cfg = d.client.runp(f"watch{p}", log_directory=str(logs), pid=mode)
        pods.append((pod_id, cfg, mode))
    ctrs = []
    for i in range(CONTAINERS):
        pod_id, cfg, mode = pods[i % PODS]
        c = Ctr()
        c.name, c.code, c.pod = f"s{i}", 10 + i, pod_id
        script = f"trap 'exit {c.code}' TERM; busybox sleep 99999 & echo ready; wait"
        ccfg = pb.ContainerConfig(
            metadata=pb.ContainerMetadata(name=c.name, attempt=0),
            image=pb.ImageSpec(image=registry.busybox),
            command=["/bin/sh", "-c", script],
            log_path=f"{c.name}.log",
        )
        ccfg.linux.security_context.namespace_options.pid = mode
        req = pb.CreateContainerRequest(pod_sandbox_id=pod_id, config=ccfg, sandbox_config=cfg)
        c.id = d.client.rt.CreateContainer(req, timeout=60).container_id
        c.cgroup = f"{cfg.linux.cgroup_parent}/crisp-{c.id}"
        c.shares_pid = mode == pb.POD
        d.client.rt.StartContainer(pb.StartContainerRequest(container_id=c.id), timeout=60)
        ctrs.append(c)
    for c in ctrs:
        it.wait_until(f"{c.name} ready", lambda c=c: "ready" in log_lines(logs / f"{c.name}.log"))
    return pods, ctrs


def end(d, ctrs):
    """End each container its own way: StopContainer, SIGTERM or SIGKILL
    from the host (exits only the watcher can notice). Returns each one's
    expected exit code."""
    pb = d.client.pb
    want = {}
    for n, c in enumerate(ctrs):
        way = n % 3
        if way == 0:
            d.client.rt.StopContainer(pb.StopContainerRequest(container_id=c.id, timeout=30), timeout=60)
            want[c.id] = c.code
        elif way == 1:
            os.kill(pid_of(d.client, c.id), signal.SIGTERM)
            want[c.id] = c.code
        else:
            os.kill(pid_of(d.client, c.id), signal.SIGKILL)
            want[c.id] = 137
    return want


def check_exited(d, ctrs, want, events):
    pb = d.client.pb
    for c in ctrs:
        it.wait_until(f"{c.name}'s exit", lambda c=c: status(d.client, c.id).state == pb.CONTAINER_EXITED)
        st = status(d.client, c.id)
        assert (st.exit_code, st.reason) == (want[c.id], "Error"), c.name
        assert st.finished_at >= st.started_at > 0, c.name
        if c.shares_pid:
            # Its sleeper, left in its cgroup by the init's exit, ended.
            it.wait_until(f"{c.name}'s leftovers ended", lambda c=c: procs(c.cgroup) == set())
    it.wait_until("a stopped event for each", lambda: {c.id for c in ctrs} <= {cid for cid, t in events.got if t == pb.CONTAINER_STOPPED_EVENT})
    stopped = [cid for cid, t in events.got if t == pb.CONTAINER_STOPPED_EVENT]
    for c in ctrs:
        assert stopped.count(c.id) == 1, c.name


def test_exits_are_watched_without_a_thread_per_container(make_crispd, registry, tmp_path):
    d = make_crispd()
    pb = d.client.pb
    logs = tmp_path / "logs"
    pods, ctrs = start_sleepers(d, registry, logs)
    print(f"\n{CONTAINERS} running containers: {threads(d)} threads, {memory(d)}")
    it.wait_until(f"at most {MAX_THREADS} threads", lambda: threads(d) <= MAX_THREADS)

    half = CONTAINERS // 2
    events = Events(d.client, registry, pods[0])
    want = end(d, ctrs[:half])
    check_exited(d, ctrs[:half], want, events)
    events.close()

    # A crash with the other half running: the new crispd finds them
    # running and watches them the same way.
    d.kill()
    d.start()
    d.client.close()
    d.client = Cri(d, (pb, __import__("runtime.v1.api_pb2_grpc", fromlist=["x"])))
    for c in ctrs[half:]:
        assert status(d.client, c.id).state == pb.CONTAINER_RUNNING, c.name
    print(f"after the restart, {CONTAINERS - half} running: {threads(d)} threads, {memory(d)}")
    it.wait_until(f"at most {MAX_THREADS} threads after the restart", lambda: threads(d) <= MAX_THREADS)
    events = Events(d.client, registry, pods[0])
    want = end(d, ctrs[half:])
    check_exited(d, ctrs[half:], want, events)
    events.close()
    assert threads(d) <= MAX_THREADS
    for pod_id, _, _ in pods:
        d.client.rmp(pod_id)
