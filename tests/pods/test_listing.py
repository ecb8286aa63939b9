"""CRI v1.30-v1.36 listings and metrics through the socket with grpcio:
the Stream* twins of the List* calls (same filters, batches of at least
one item, no duplicates, then OK), kubelet's CRI metrics
(ListMetricDescriptors, ListPodSandboxMetrics, StreamPodSandboxMetrics)
with cAdvisor's names read from real cgroups and the pod's network
namespace, pressure (PSI) in stats where the kernel shows it, and
UpdatePodSandboxResources on the pod cgroup."""

import json
import os
from pathlib import Path

import grpc
import pytest

from common.pods import kubelet_made_cgroup

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (namespaces, mounts, cgroups)")

ROOT = Path("/sys/fs/cgroup")
V2 = (ROOT / "cgroup.controllers").exists()


def streamed(call, request, key):
    """Every item of a server stream, checking the CRI's batch rules."""
    batches = [getattr(m, key) for m in call(request, timeout=60)]
    assert all(len(b) > 0 for b in batches), "a batch holds at least one item"
    return [x for b in batches for x in b]


def ids(items, get=lambda x: x.id):
    got = [get(x) for x in items]
    assert len(got) == len(set(got)), f"duplicates in {got}"
    return sorted(got)


def pod_setup(client, registry):
    """Two pods (labels app=a / app=b), a running container in the first,
    a created one in the second."""
    pb = client.pb
    client.pull(registry.busybox)
    cfga = client.pod_config("lista")
    cfga.labels["app"] = "a"
    cfgb = client.pod_config("listb")
    cfgb.labels["app"] = "b"
    pa = client.rt.RunPodSandbox(pb.RunPodSandboxRequest(config=cfga), timeout=60).pod_sandbox_id
    pbid = client.rt.RunPodSandbox(pb.RunPodSandboxRequest(config=cfgb), timeout=60).pod_sandbox_id
    ca = client.create(pa, cfga, "runner", registry.busybox, ["/bin/busybox", "sleep", "1000"])
    client.rt.StartContainer(pb.StartContainerRequest(container_id=ca), timeout=60)
    cb = client.create(pbid, cfgb, "waiter", registry.busybox, ["/bin/busybox", "true"])
    return pa, pbid, ca, cb


def test_stream_twins_answer_their_lists(client, registry):
    pb = client.pb
    rt = client.rt
    pa, pbid, ca, cb = pod_setup(client, registry)

    pod_filters = [
        None,
        pb.PodSandboxFilter(id=pa),
        pb.PodSandboxFilter(id=pbid[:12]),
        pb.PodSandboxFilter(label_selector={"app": "b"}),
        pb.PodSandboxFilter(state=pb.PodSandboxStateValue(state=pb.SANDBOX_READY)),
        pb.PodSandboxFilter(id="ffff"),  # nothing
    ]
    for f in pod_filters:
        listed = rt.ListPodSandbox(pb.ListPodSandboxRequest(filter=f), timeout=30).items
        got = streamed(rt.StreamPodSandboxes, pb.StreamPodSandboxesRequest(filter=f), "pod_sandboxes")
        assert ids(got) == ids(listed), f
        assert sorted(x.SerializeToString(deterministic=True) for x in got) == sorted(
            x.SerializeToString(deterministic=True) for x in listed
        )
    assert ids(streamed(rt.StreamPodSandboxes, pb.StreamPodSandboxesRequest(), "pod_sandboxes")) == sorted([pa, pbid])

    ctr_filters = [
        None,
        pb.ContainerFilter(id=ca),
        pb.ContainerFilter(pod_sandbox_id=pbid),
        pb.ContainerFilter(state=pb.ContainerStateValue(state=pb.CONTAINER_RUNNING)),
        pb.ContainerFilter(state=pb.ContainerStateValue(state=pb.CONTAINER_EXITED)),  # nothing
    ]
    for f in ctr_filters:
        listed = rt.ListContainers(pb.ListContainersRequest(filter=f), timeout=30).containers
        got = streamed(rt.StreamContainers, pb.StreamContainersRequest(filter=f), "containers")
        assert ids(got) == ids(listed), f
    assert ids(streamed(rt.StreamContainers, pb.StreamContainersRequest(), "containers")) == sorted([ca, cb])

    for f in [None, pb.ContainerStatsFilter(pod_sandbox_id=pa), pb.ContainerStatsFilter(id=cb)]:
        listed = rt.ListContainerStats(pb.ListContainerStatsRequest(filter=f), timeout=30).stats
        got = streamed(rt.StreamContainerStats, pb.StreamContainerStatsRequest(filter=f), "container_stats")
        attr = lambda s: s.attributes.id  # noqa: E731
        assert ids(got, attr) == ids(listed, attr), f
    running = streamed(rt.StreamContainerStats, pb.StreamContainerStatsRequest(filter=pb.ContainerStatsFilter(id=ca)), "container_stats")
    assert running[0].memory.working_set_bytes.value > 0, "the usage is filled in, as for the list"

    for f in [None, pb.PodSandboxStatsFilter(label_selector={"app": "a"}), pb.PodSandboxStatsFilter(id="ffff")]:
        listed = rt.ListPodSandboxStats(pb.ListPodSandboxStatsRequest(filter=f), timeout=30).stats
        got = streamed(rt.StreamPodSandboxStats, pb.StreamPodSandboxStatsRequest(filter=f), "pod_sandbox_stats")
        attr = lambda s: s.attributes.id  # noqa: E731
        assert ids(got, attr) == ids(listed, attr), f
    (pod_a,) = streamed(
        rt.StreamPodSandboxStats,
        pb.StreamPodSandboxStatsRequest(filter=pb.PodSandboxStatsFilter(id=pa)),
        "pod_sandbox_stats",
    )
    assert pod_a.linux.memory.working_set_bytes.value > 0
    assert [c.attributes.id for c in pod_a.linux.containers] == [ca]

    # Images: the ImageService's stream shares ListImages' path.
    listed = client.img.ListImages(pb.ListImagesRequest(), timeout=30).images
    got = streamed(client.img.StreamImages, pb.StreamImagesRequest(), "images")
    assert listed and ids(got) == ids(listed)
    nothing = pb.ImageFilter(image=pb.ImageSpec(image="no/such:image"))
    assert streamed(client.img.StreamImages, pb.StreamImagesRequest(filter=nothing), "images") == []


def holder_pid(client, pod):
    return json.loads((client.daemon.runtime_dir / "pods" / pod / "sandbox.json").read_text())["pid"]


def net_dev(pid, name):
    for line in Path(f"/proc/{pid}/net/dev").read_text().splitlines():
        if line.strip().startswith(name + ":"):
            f = line.split(":", 1)[1].split()
            return int(f[0]), int(f[8])
    raise AssertionError(f"no {name} in the pod's namespace")


def test_metrics_of_a_running_container(client, registry):
    pb = client.pb
    rt = client.rt
    pa, pbid, ca, cb = pod_setup(client, registry)

    descs = {d.name: list(d.label_keys) for d in rt.ListMetricDescriptors(pb.ListMetricDescriptorsRequest(), timeout=30).descriptors}
    base = ["pod", "namespace", "container", "id", "image"]
    for name in [
        "container_cpu_usage_seconds_total",
        "container_memory_working_set_bytes",
        "container_memory_usage_bytes",
        "container_memory_rss",
        "container_memory_cache",
        "container_processes",
    ]:
        assert descs[name][:5] == base, name
    assert descs["container_network_receive_bytes_total"] == base + ["interface"]
    assert descs["container_cpu_usage_seconds_total"] == base + ["cpu"]

    rx_before, tx_before = net_dev(holder_pid(client, pa), "eth0")
    listed = rt.ListPodSandboxMetrics(pb.ListPodSandboxMetricsRequest(), timeout=30).pod_metrics
    streamed_pods = streamed(rt.StreamPodSandboxMetrics, pb.StreamPodSandboxMetricsRequest(), "pod_sandbox_metrics")
    pid_of = lambda m: m.pod_sandbox_id  # noqa: E731
    assert ids(listed, pid_of) == ids(streamed_pods, pid_of) == sorted([pa, pbid])

    for pm in list(listed) + list(streamed_pods):
        for m in list(pm.metrics) + [x for c in pm.container_metrics for x in c.metrics]:
            assert m.name in descs, m.name
            assert len(m.label_values) == len(descs[m.name]), m.name
            assert m.timestamp == 0, "gathered live"

    (a,) = [m for m in listed if m.pod_sandbox_id == pa]
    # The running container's figures, with its labels.
    (c,) = a.container_metrics
    assert c.container_id == ca
    by_name = {m.name: m for m in c.metrics}
    ws = by_name["container_memory_working_set_bytes"]
    assert ws.value.value > 0
    assert ws.metric_type == pb.GAUGE
    labels = dict(zip(descs[ws.name], ws.label_values))
    assert labels == {"pod": "lista", "namespace": "test", "container": "runner", "id": ca, "image": registry.busybox}
    assert by_name["container_memory_usage_bytes"].value.value >= ws.value.value
    assert by_name["container_cpu_usage_seconds_total"].metric_type == pb.COUNTER
    assert by_name["container_processes"].value.value >= 1
    # The created container's cgroup already holds its process, waiting
    # for StartContainer: it is measured too.
    (b,) = [m for m in listed if m.pod_sandbox_id == pbid]
    assert [c.container_id for c in b.container_metrics] == [cb]

    # The pod's own network namespace, eth0 on the test bridge.
    net = {m.name: m for m in a.metrics if m.name.startswith("container_network_")}
    rx = net["container_network_receive_bytes_total"]
    assert dict(zip(descs[rx.name], rx.label_values))["interface"] == "eth0"
    assert dict(zip(descs[rx.name], rx.label_values))["id"] == pa
    assert rx.value.value >= rx_before
    assert net["container_network_transmit_bytes_total"].value.value >= tx_before

    # Stats carry the same network counters.
    pstats = rt.PodSandboxStats(pb.PodSandboxStatsRequest(pod_sandbox_id=pa), timeout=30).stats
    assert pstats.linux.network.default_interface.name == "eth0"
    assert pstats.linux.network.default_interface.rx_bytes.value >= rx_before
    assert pstats.linux.process.process_count.value >= 1


def cgroup_dirs(pid):
    """Every cgroup directory of a process (v2: one; v1: one per hierarchy)."""
    dirs = []
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, ctrls, path = line.split(":", 2)
        if V2:
            dirs.append(ROOT / path.lstrip("/"))
        elif ctrls:
            name = ctrls.replace("name=", "")
            d = ROOT / name / path.lstrip("/")
            if d.is_dir():
                dirs.append(d)
    return dirs


def test_pressure_in_stats_where_the_kernel_has_it(client, registry):
    """CPU, memory and IO pressure come from the container's cgroup's
    `*.pressure` files; where the cgroup has none (cgroup v1), the fields
    stay unset rather than made up."""
    pb = client.pb
    pa, _, ca, _ = pod_setup(client, registry)
    info = client.rt.ContainerStatus(pb.ContainerStatusRequest(container_id=ca, verbose=True), timeout=30).info["info"]
    pid = json.loads(info)["pid"]
    dirs = cgroup_dirs(pid)
    assert dirs
    has = {r: any((d / f"{r}.pressure").exists() for d in dirs) for r in ("cpu", "memory", "io")}
    s = client.rt.ContainerStats(pb.ContainerStatsRequest(container_id=ca), timeout=30).stats
    assert s.cpu.HasField("psi") == has["cpu"]
    assert s.memory.HasField("psi") == has["memory"]
    assert s.HasField("io") == has["io"]
    if has["cpu"]:
        assert s.cpu.psi.HasField("some")
        assert s.cpu.psi.some.avg10 >= 0
    if has["io"]:
        assert s.io.psi.HasField("some") and s.io.timestamp > 0


def cg_file(pod_cgroup, controller, name):
    if V2:
        return ROOT / pod_cgroup.lstrip("/") / name
    return ROOT / controller / pod_cgroup.lstrip("/") / name


def test_update_pod_sandbox_resources(client):
    pb = client.pb
    rt = client.rt
    tag = client.daemon.tag
    pod, _ = client.runp("resize")  # cgroup_parent /crisptest-<tag>/resize: crisp makes it
    cg = f"/crisptest-{tag}/resize"
    mib = 1 << 20
    req = pb.UpdatePodSandboxResourcesRequest(
        pod_sandbox_id=pod[:16],
        resources=pb.LinuxContainerResources(cpu_period=100000, cpu_quota=50000, cpu_shares=512, memory_limit_in_bytes=64 * mib),
        overhead=pb.LinuxContainerResources(cpu_period=100000, cpu_quota=10000, cpu_shares=128, memory_limit_in_bytes=16 * mib),
    )
    rt.UpdatePodSandboxResources(req, timeout=30)
    if V2:
        assert cg_file(cg, "memory", "memory.max").read_text().strip() == str(80 * mib)
        assert cg_file(cg, "cpu", "cpu.max").read_text().split() == ["60000", "100000"]
    else:
        assert cg_file(cg, "memory", "memory.limit_in_bytes").read_text().strip() == str(80 * mib)
        assert cg_file(cg, "cpu", "cpu.cfs_quota_us").read_text().strip() == "60000"
        assert cg_file(cg, "cpu", "cpu.shares").read_text().strip() == "640"
    # Growing back (as a resize does), without an overhead.
    req = pb.UpdatePodSandboxResourcesRequest(
        pod_sandbox_id=pod, resources=pb.LinuxContainerResources(memory_limit_in_bytes=128 * mib)
    )
    rt.UpdatePodSandboxResources(req, timeout=30)
    limit = cg_file(cg, "memory", "memory.max" if V2 else "memory.limit_in_bytes")
    assert limit.read_text().strip() == str(128 * mib)

    # Fields no pod cgroup takes, named.
    bad = pb.UpdatePodSandboxResourcesRequest(pod_sandbox_id=pod, resources=pb.LinuxContainerResources(oom_score_adj=5))
    with pytest.raises(grpc.RpcError) as e:
        rt.UpdatePodSandboxResources(bad, timeout=30)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "resources.oom_score_adj" in e.value.details()
    # Unknown and stopped pods.
    with pytest.raises(grpc.RpcError) as e:
        rt.UpdatePodSandboxResources(pb.UpdatePodSandboxResourcesRequest(pod_sandbox_id="f" * 64), timeout=30)
    assert e.value.code() == grpc.StatusCode.NOT_FOUND
    client.stopp(pod)
    with pytest.raises(grpc.RpcError) as e:
        rt.UpdatePodSandboxResources(pb.UpdatePodSandboxResourcesRequest(pod_sandbox_id=pod), timeout=30)
    assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    client.rmp(pod)


def test_update_pod_sandbox_resources_leaves_kubelets_cgroup(client):
    """A pod cgroup crisp found in place is kubelet's: kubelet sizes it
    before the call, crisp does not write to it."""
    tag = client.daemon.tag
    with kubelet_made_cgroup(f"crisptest-{tag}/kubelet-pod"):
        pod, _ = client.runp("kept", cgroup_parent=f"/crisptest-{tag}/kubelet-pod")
        limit = cg_file(f"/crisptest-{tag}/kubelet-pod", "memory", "memory.max" if V2 else "memory.limit_in_bytes")
        before = limit.read_text()
        pb = client.pb
        req = pb.UpdatePodSandboxResourcesRequest(
            pod_sandbox_id=pod, resources=pb.LinuxContainerResources(memory_limit_in_bytes=64 << 20)
        )
        client.rt.UpdatePodSandboxResources(req, timeout=30)
        assert limit.read_text() == before
        client.rmp(pod)


def test_a_long_listing_comes_in_several_batches(make_crispd):
    """Above crisp's per-message budget (1 MiB of items) a stream carries
    several messages: every one holds items, each item comes once, and
    together they are the List* answer (which still fits in one message
    of grpcio's default 4 MiB here)."""
    d = make_crispd(cni=False)
    client, pb = d.client, d.client.pb
    big = "x" * (400 << 10)
    pods = []
    for i in range(6):
        cfg = client.pod_config(f"big{i}", host_network=True)
        cfg.annotations["filler"] = big
        pods.append(client.rt.RunPodSandbox(pb.RunPodSandboxRequest(config=cfg), timeout=60).pod_sandbox_id)
    batches = [m.pod_sandboxes for m in client.rt.StreamPodSandboxes(pb.StreamPodSandboxesRequest(), timeout=60)]
    assert len(batches) >= 2, [len(b) for b in batches]
    assert all(len(b) > 0 for b in batches)
    got = [p.id for b in batches for p in b]
    assert sorted(got) == sorted(pods) and len(set(got)) == len(got)
    listed = client.rt.ListPodSandbox(pb.ListPodSandboxRequest(), timeout=60).items
    assert sorted(p.id for p in listed) == sorted(got)
    for p in pods:
        client.rmp(p)
