"""Pod sandboxes and containers through crispd's real socket: sandbox
holder processes and their namespaces, CNI networking with real plugins,
records and restore across a SIGKILL, events, concurrent create/remove
leaving nothing behind."""

import os
import re
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest

import imagetest as it
from common.pods import alive

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (namespaces, mounts, cgroups)")


def nsenter(netns, *cmd):
    return subprocess.run(["nsenter", f"--net={netns}", *cmd], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=30)


def mounts_under(path):
    path = str(path)
    return [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines() if line.split()[4].startswith(path)]


def processes_mentioning(word):
    out = []
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            cmd = (p / "cmdline").read_bytes()
        except OSError:
            continue
        if word.encode() in cmd and alive(p.name):
            out.append(int(p.name))
    return out


def cgroups_named(tag):
    found = []
    for root in Path("/sys/fs/cgroup").iterdir():
        if (root / f"crisptest-{tag}").exists():
            for d, dirs, _ in os.walk(root / f"crisptest-{tag}"):
                found.extend(Path(d) / x for x in dirs)
    return found


def remove_test_cgroups(tag):
    for root in Path("/sys/fs/cgroup").iterdir():
        top = root / f"crisptest-{tag}"
        if top.exists():
            for d, dirs, _ in sorted(os.walk(top), key=lambda t: -len(t[0])):
                try:
                    os.rmdir(d)
                except OSError:
                    pass


def info_pid(client, pod):
    return int((client.daemon.runtime_dir / "pods" / pod / "sandbox.json").read_text().split('"pid":')[1].split(",")[0])


def test_pod_lifecycle(client, network):
    pb = client.pb
    pod, _ = client.runp("web", dns={"servers": ["10.0.0.53"], "searches": ["test.svc"], "options": ["ndots:5"]})
    st = client.podstatus(pod)
    assert st.state == pb.SANDBOX_READY
    assert st.network.ip.startswith(network.prefix + ".")
    assert st.metadata.name == "web"
    pod_dir = client.daemon.runtime_dir / "pods" / pod
    for ns in ("net", "ipc", "uts"):
        assert str(pod_dir / "ns" / ns) in mounts_under(pod_dir), ns
    assert (pod_dir / "hostname").read_text() == "web\n"
    resolv = (pod_dir / "resolv.conf").read_text()
    assert "nameserver 10.0.0.53" in resolv and "search test.svc" in resolv and "options ndots:5" in resolv
    assert "localhost" in (pod_dir / "hosts").read_text()
    holder = info_pid(client, pod)
    assert alive(holder)
    # The holder's own namespaces: hostname set in its UTS namespace.
    out = subprocess.run(["nsenter", f"--uts={pod_dir / 'ns' / 'uts'}", "hostname"], stdout=subprocess.PIPE, text=True)
    assert out.stdout.strip() == "web"
    # The pod's IP is on eth0 in its network namespace, loopback is up.
    netns = pod_dir / "ns" / "net"
    assert st.network.ip in nsenter(netns, "ip", "-4", "addr", "show", "eth0").stdout
    assert nsenter(netns, "busybox", "ping", "-c", "1", "-W", "2", "127.0.0.1").returncode == 0
    # Listed, with a filter.
    pods = client.rt.ListPodSandbox(pb.ListPodSandboxRequest()).items
    assert [p.id for p in pods] == [pod]
    # Stop: holder gone, network torn down, namespaces released.
    client.stopp(pod)
    assert client.podstatus(pod).state == pb.SANDBOX_NOTREADY
    it.wait_until("holder exit", lambda: not alive(holder))
    assert mounts_under(pod_dir) == []
    assert not any(network.ipam_dir.glob(f"{network.prefix}.*")), "the IP was not released"
    client.stopp(pod)  # idempotent
    client.rmp(pod)
    assert not pod_dir.exists()
    assert client.rt.ListPodSandbox(pb.ListPodSandboxRequest()).items == []
    client.rmp(pod)  # idempotent
    with pytest.raises(grpc.RpcError) as e:
        client.podstatus(pod)
    assert e.value.code() == grpc.StatusCode.NOT_FOUND


def test_two_pods_network(client, network):
    a, _ = client.runp("a")
    b, _ = client.runp("b")
    ips = [client.podstatus(p).network.ip for p in (a, b)]
    assert ips[0] != ips[1]
    assert all(ip.startswith(network.prefix + ".") for ip in ips)
    for p, ip in zip((a, b), ips):
        netns = client.daemon.runtime_dir / "pods" / p / "ns" / "net"
        assert nsenter(netns, "busybox", "ping", "-c", "1", "-W", "2", "127.0.0.1").returncode == 0
        assert ip in nsenter(netns, "ip", "-4", "addr").stdout
    # And each other, over the test bridge (nothing leaves the host).
    netns_a = client.daemon.runtime_dir / "pods" / a / "ns" / "net"
    r = nsenter(netns_a, "busybox", "ping", "-c", "1", "-W", "2", ips[1])
    assert r.returncode == 0, r.stdout
    for p in (a, b):
        client.rmp(p)


def test_sysctls_and_host_network(client):
    pb = client.pb
    pod, _ = client.runp("sys", sysctls={"net.ipv4.ip_unprivileged_port_start": "123", "kernel.shmmni": "2048"})
    pod_dir = client.daemon.runtime_dir / "pods" / pod
    out = nsenter(pod_dir / "ns" / "net", "cat", "/proc/sys/net/ipv4/ip_unprivileged_port_start")
    assert out.stdout.strip() == "123"
    out = subprocess.run(["nsenter", f"--ipc={pod_dir / 'ns' / 'ipc'}", "cat", "/proc/sys/kernel/shmmni"], stdout=subprocess.PIPE, text=True)
    assert out.stdout.strip() == "2048"
    host_value = Path("/proc/sys/net/ipv4/ip_unprivileged_port_start").read_text().strip()
    assert host_value != "123"
    hn, _ = client.runp("hostnet", host_network=True)
    st = client.podstatus(hn)
    assert st.state == pb.SANDBOX_READY
    assert st.network.ip == ""
    assert not (client.daemon.runtime_dir / "pods" / hn / "ns" / "net").exists()
    shared, _ = client.runp("sharedpid", pid=pb.POD)
    assert (client.daemon.runtime_dir / "pods" / shared / "ns" / "pid").exists()
    for p in (pod, hn, shared):
        client.rmp(p)


def test_bad_sysctl_fails_and_leaves_nothing(client):
    with pytest.raises(grpc.RpcError) as e:
        client.runp("bad", sysctls={"net.nonexistent.knob": "1"})
    assert e.value.code() == grpc.StatusCode.INTERNAL
    assert "net.nonexistent.knob" in e.value.details()
    assert client.rt.ListPodSandbox(client.pb.ListPodSandboxRequest()).items == []
    assert list((client.daemon.runtime_dir / "pods").iterdir()) == []
    # The name is free again.
    pod, _ = client.runp("bad")
    client.rmp(pod)


def test_events_reach_every_subscriber(client):
    pb = client.pb
    got = [[], []]
    calls = []

    def listen(i):
        call = client.rt.GetContainerEvents(pb.GetEventsRequest())
        calls.append(call)
        try:
            for ev in call:
                got[i].append((ev.container_id, ev.container_event_type))
        except grpc.RpcError:
            pass

    threads = [threading.Thread(target=listen, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    it.wait_until("subscribers", lambda: len(calls) == 2)
    time.sleep(0.5)
    pod, _ = client.runp("ev")
    client.stopp(pod)
    client.rmp(pod)
    want = [pb.CONTAINER_CREATED_EVENT, pb.CONTAINER_STARTED_EVENT, pb.CONTAINER_STOPPED_EVENT, pb.CONTAINER_DELETED_EVENT]
    for i in range(2):
        it.wait_until("events", lambda i=i: len(got[i]) >= 4)
        assert [t for (cid, t) in got[i] if cid == pod] == want
    for c in calls:
        c.cancel()
    for t in threads:
        t.join(10)


def test_pods_survive_crispd_sigkill(make_crispd, network):
    d = make_crispd()
    pod, _ = d.client.runp("survivor")
    holder = info_pid(d.client, pod)
    ip = d.client.podstatus(pod).network.ip
    d.kill()
    assert alive(holder), "a crispd crash must not kill pods"
    d.start()
    d.client.close()
    from common.pods import Cri

    d.client = Cri(d, (d.client.pb, __import__("runtime.v1.api_pb2_grpc", fromlist=["x"])))
    st = d.client.podstatus(pod)
    assert st.state == d.client.pb.SANDBOX_READY
    assert st.network.ip == ip
    d.client.stopp(pod)
    assert not alive(holder)
    assert not any(network.ipam_dir.glob(f"{network.prefix}.*"))
    d.client.rmp(pod)


def test_pod_whose_holder_died_is_notready_after_restart(make_crispd):
    d = make_crispd()
    pod, _ = d.client.runp("dies")
    holder = info_pid(d.client, pod)
    d.kill()
    os.kill(holder, 9)
    it.wait_until("holder exit", lambda: not alive(holder))
    d.start()
    from common.pods import Cri

    d.client = Cri(d, (d.client.pb, __import__("runtime.v1.api_pb2_grpc", fromlist=["x"])))
    assert d.client.podstatus(pod).state == d.client.pb.SANDBOX_NOTREADY
    d.client.rmp(pod)
    assert mounts_under(d.runtime_dir) == []


# ------------------------------------------------------------ containers


LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z (stdout|stderr) (P|F) (.*)$")


def test_container_lifecycle_and_logs(client, registry, tmp_path):
    pb = client.pb
    image = client.pull(registry.busybox)
    pod, cfg = client.runp("app", log_directory=str(tmp_path / "logs"))
    cid = client.create(pod, cfg, "main", registry.busybox, ["/bin/sh", "-c", "echo out; echo err >&2; exit 3"], log_path="main.log")
    st = client.rt.ContainerStatus(pb.ContainerStatusRequest(container_id=cid)).status
    assert st.state == pb.CONTAINER_CREATED
    assert st.image_id == image
    assert st.image.image == registry.busybox
    assert st.image_ref == f"{registry.host}/test/busybox@{registry.busybox_digest}"
    client.rt.StartContainer(pb.StartContainerRequest(container_id=cid), timeout=60)
    it.wait_until(
        "exit",
        lambda: client.rt.ContainerStatus(pb.ContainerStatusRequest(container_id=cid)).status.state == pb.CONTAINER_EXITED,
    )
    st = client.rt.ContainerStatus(pb.ContainerStatusRequest(container_id=cid)).status
    assert st.exit_code == 3
    assert st.reason == "Error"
    lines = (tmp_path / "logs" / "main.log").read_text().splitlines()
    parsed = [LOG_LINE.match(l).groups()[1:] for l in lines]
    assert ("stdout", "F", "out") in parsed and ("stderr", "F", "err") in parsed
    client.rt.RemoveContainer(pb.RemoveContainerRequest(container_id=cid), timeout=60)
    client.rmp(pod)


def test_one_image_id_everywhere_and_removal_waits_for_its_containers(make_crispd, registry):
    # CRI v1.36: Image.id, PullImageResponse.image_ref, Container.image_id
    # and ContainerStatus.image_id are one value for one image, whatever
    # name or registry it was pulled by (critest's "Image Identifier
    # Consistency"). ContainerStatus.image and image_ref name it as
    # containerd does: a tag and a repo digest, of the repository the
    # container asked for.
    d = make_crispd(
        config=f"""
[[images.registries]]
host = "registry.k8s.io"
mirrors = ["http://{registry.host}"]
"""
    )
    client, pb = d.client, d.client.pb
    other = f"{registry.host}/other/busybox:2"
    mirrored = "registry.k8s.io/test/busybox:1.0"
    ids = {client.pull(n) for n in [registry.busybox, other, mirrored]}
    assert len(ids) == 1
    (image_id,) = ids
    (img,) = client.img.ListImages(pb.ListImagesRequest(), timeout=10).images
    assert img.id == image_id
    assert sorted(img.repo_tags) == sorted([registry.busybox, other, mirrored])
    for name in [registry.busybox, other, mirrored, image_id]:
        st = client.img.ImageStatus(pb.ImageStatusRequest(image=pb.ImageSpec(image=name)), timeout=10).image
        assert st.id == image_id, name

    events, calls = [], []

    def listen():
        call = client.rt.GetContainerEvents(pb.GetEventsRequest())
        calls.append(call)
        try:
            events.extend(call)
        except grpc.RpcError:
            pass

    listener = threading.Thread(target=listen)
    listener.start()
    it.wait_until("subscriber", lambda: calls)
    pod, cfg = client.runp("ids")
    created = {}
    # As kubelet creates containers: the image ID, and the name the user
    # wrote; and as crictl does: the name alone.
    for ctr, spec in [
        ("by-id", pb.ImageSpec(image=image_id, user_specified_image=mirrored)),
        ("by-name", pb.ImageSpec(image=other)),
    ]:
        config = pb.ContainerConfig(metadata=pb.ContainerMetadata(name=ctr), image=spec, command=["/bin/busybox", "sleep", "60"])
        req = pb.CreateContainerRequest(pod_sandbox_id=pod, config=config, sandbox_config=cfg)
        created[ctr] = client.rt.CreateContainer(req, timeout=60).container_id
    client.rt.StartContainer(pb.StartContainerRequest(container_id=created["by-id"]), timeout=60)

    listed = {c.id: c for c in client.rt.ListContainers(pb.ListContainersRequest(), timeout=10).containers}
    expect = {
        "by-id": (mirrored, f"registry.k8s.io/test/busybox@{registry.busybox_digest}"),
        "by-name": (other, f"{registry.host}/other/busybox@{registry.busybox_digest}"),
    }
    for ctr, cid in created.items():
        c = listed[cid]
        assert c.image_id == image_id and c.image_ref == image_id, ctr
        st = client.rt.ContainerStatus(pb.ContainerStatusRequest(container_id=cid), timeout=10).status
        assert st.image_id == image_id, ctr
        assert (st.image.image, st.image_ref) == expect[ctr], ctr
    by_id = client.rt.ContainerStatus(pb.ContainerStatusRequest(container_id=created["by-id"]), timeout=10).status
    assert by_id.image.user_specified_image == mirrored
    # GetContainerEvents carries the same statuses.
    started = it.wait_until(
        "the started event",
        lambda: [e for e in list(events) if e.container_id == created["by-id"] and e.container_event_type == pb.CONTAINER_STARTED_EVENT],
    )[0]
    in_event = {st.id: st for st in started.containers_statuses}
    for ctr, cid in created.items():
        assert in_event[cid].image_id == image_id, ctr
        assert (in_event[cid].image.image, in_event[cid].image_ref) == expect[ctr], ctr
    calls[0].cancel()
    listener.join(10)

    # An image a container uses is not removed, by any of its names.
    for name in [other, image_id]:
        with pytest.raises(grpc.RpcError) as e:
            client.img.RemoveImage(pb.RemoveImageRequest(image=pb.ImageSpec(image=name)), timeout=10)
        assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "in use" in e.value.details()
    assert len(client.img.ListImages(pb.ListImagesRequest(), timeout=10).images) == 1

    client.stopp(pod)
    client.rmp(pod)
    # Then one name removes it with all the others.
    client.img.RemoveImage(pb.RemoveImageRequest(image=pb.ImageSpec(image=other)), timeout=10)
    assert list(client.img.ListImages(pb.ListImagesRequest(), timeout=10).images) == []


def test_exec_stop_stats(client, registry):
    pb = client.pb
    client.pull(registry.busybox)
    pod, cfg = client.runp("svc")
    cid = client.create(pod, cfg, "sleeper", registry.busybox, ["/bin/busybox", "sleep", "1000"])
    client.rt.StartContainer(pb.StartContainerRequest(container_id=cid), timeout=60)
    r = client.rt.ExecSync(pb.ExecSyncRequest(container_id=cid, cmd=["/bin/sh", "-c", "echo hi; echo oops >&2; exit 7"], timeout=10))
    assert (r.stdout, r.stderr, r.exit_code) == (b"hi\n", b"oops\n", 7)
    stats = client.rt.ContainerStats(pb.ContainerStatsRequest(container_id=cid)).stats
    assert stats.attributes.id == cid
    assert stats.writable_layer.used_bytes is not None
    assert [c.id for c in client.rt.ListContainers(pb.ListContainersRequest()).containers] == [cid]
    client.rt.StopContainer(pb.StopContainerRequest(container_id=cid, timeout=1), timeout=60)
    st = client.rt.ContainerStatus(pb.ContainerStatusRequest(container_id=cid)).status
    assert st.state == pb.CONTAINER_EXITED
    client.rmp(pod)
    assert client.rt.ListContainers(pb.ListContainersRequest()).containers == []


def test_containers_survive_crispd_sigkill(make_crispd, registry, tmp_path):
    d = make_crispd()
    pb = d.client.pb
    d.client.pull(registry.busybox)
    pod, cfg = d.client.runp("keep", log_directory=str(tmp_path / "logs"))
    long = d.client.create(pod, cfg, "long", registry.busybox, ["/bin/sh", "-c", "echo started; exec /bin/busybox sleep 1000"], log_path="long.log")
    short = d.client.create(pod, cfg, "short", registry.busybox, ["/bin/sh", "-c", "/bin/busybox sleep 2; exit 5"], log_path="short.log")
    for c in (long, short):
        d.client.rt.StartContainer(pb.StartContainerRequest(container_id=c), timeout=60)
    d.kill()
    time.sleep(3)
    d.start()
    from common.pods import Cri

    d.client = Cri(d, (pb, __import__("runtime.v1.api_pb2_grpc", fromlist=["x"])))
    st = d.client.rt.ContainerStatus(pb.ContainerStatusRequest(container_id=long)).status
    assert st.state == pb.CONTAINER_RUNNING
    st = d.client.rt.ContainerStatus(pb.ContainerStatusRequest(container_id=short)).status
    assert (st.state, st.exit_code) == (pb.CONTAINER_EXITED, 5)
    assert "started" in (tmp_path / "logs" / "long.log").read_text()
    d.client.rmp(pod)


# ------------------------------------------------------------ scale, cleanup


def test_concurrent_pods_leave_nothing_behind(client, registry, network):
    pb = client.pb
    n = int(os.environ.get("CRISP_PODS_SCALE", "50"))
    client.pull(registry.busybox)

    def one(i):
        pod, cfg = client.runp(f"p{i}")
        ctrs = [client.create(pod, cfg, f"c{j}", registry.busybox, ["/bin/busybox", "sleep", "1000"]) for j in range(2)]
        for c in ctrs:
            client.rt.StartContainer(pb.StartContainerRequest(container_id=c), timeout=60)
        return pod, ctrs

    with ThreadPoolExecutor(8) as ex:
        made = list(ex.map(one, range(n)))
    assert len(client.rt.ListPodSandbox(pb.ListPodSandboxRequest()).items) == n
    running = client.rt.ListContainers(pb.ListContainersRequest()).containers
    assert len(running) == 2 * n and all(c.state == pb.CONTAINER_RUNNING for c in running)
    ips = {client.podstatus(p).network.ip for p, _ in made}
    assert len(ips) == n
    with ThreadPoolExecutor(8) as ex:
        list(ex.map(lambda m: client.rmp(m[0]), made))
    d = client.daemon
    assert client.rt.ListPodSandbox(pb.ListPodSandboxRequest()).items == []
    assert client.rt.ListContainers(pb.ListContainersRequest()).containers == []
    assert mounts_under(d.runtime_dir) == []
    for p, _ in made:
        assert processes_mentioning(p) == [], p
    assert list((d.runtime_dir / "pods").iterdir()) == []
    assert not (d.runtime_dir / "containers").exists() or list((d.runtime_dir / "containers").iterdir()) == []
    assert list((d.state_dir / "cri").glob("pod-*")) == []
    assert list((d.state_dir / "cri" / "net").glob("*")) == []
    assert not any(network.ipam_dir.glob(f"{network.prefix}.*"))
    left = cgroups_named(d.tag)
    # Only the cgroup_parent dirs the test asked for (kubelet's, not crisp's) may remain.
    assert [c for c in left if "crisp-" in c.name] == []
    remove_test_cgroups(d.tag)


def test_streaming_methods_check_their_container(client):
    """Exec and Attach of a container that does not exist: NOT_FOUND, not
    a URL (tests/pods/test_streaming.py drives the URLs)."""
    pb = client.pb
    with pytest.raises(grpc.RpcError) as e:
        client.rt.Exec(pb.ExecRequest(container_id="x", cmd=["true"], stdout=True))
    assert e.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError) as e:
        client.rt.Attach(pb.AttachRequest(container_id="x", stdout=True))
    assert e.value.code() == grpc.StatusCode.NOT_FOUND
