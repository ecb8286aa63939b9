"""The pod suites' CRI client: RuntimeService and ImageService over one
crispd's socket, and the container calls the tests make again and again."""

import contextlib
import re
from pathlib import Path

import grpc

from common.wait import wait_until

CGROUP_ROOT = Path("/sys/fs/cgroup")

LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z (stdout|stderr) (P|F) (.*)$")


class Cri:
    """RuntimeService and ImageService over one crispd's socket."""

    def __init__(self, daemon, cri):
        self.daemon = daemon
        self.pb, pb_grpc = cri
        # A subchannel of our own: grpc otherwise shares connections between
        # channels to the same address, and a channel made after a crispd
        # restart may get the dead crispd's connection (UNAVAILABLE,
        # "Stream removed (sendmsg: Broken pipe)").
        self.channel = grpc.insecure_channel(f"unix://{daemon.socket}", options=[("grpc.use_local_subchannel_pool", 1)])
        self.rt = pb_grpc.RuntimeServiceStub(self.channel)
        self.img = pb_grpc.ImageServiceStub(self.channel)

    def close(self):
        self.channel.close()

    def pod_config(self, name, **kw):
        pb = self.pb
        cfg = pb.PodSandboxConfig(
            metadata=pb.PodSandboxMetadata(name=name, uid=f"uid-{name}", namespace="test", attempt=0),
            hostname=kw.pop("hostname", name),
            log_directory=kw.pop("log_directory", ""),
        )
        cfg.linux.cgroup_parent = kw.pop("cgroup_parent", f"/crisptest-{self.daemon.tag}/{name}")
        for k, v in kw.pop("sysctls", {}).items():
            cfg.linux.sysctls[k] = v
        if kw.pop("host_network", False):
            cfg.linux.security_context.namespace_options.network = pb.NODE
        cfg.linux.security_context.namespace_options.pid = kw.pop("pid", pb.CONTAINER)
        # Privileged containers need a privileged sandbox (as containerd).
        cfg.linux.security_context.privileged = kw.pop("privileged", False)
        dns = kw.pop("dns", None)
        if dns:
            cfg.dns_config.CopyFrom(pb.DNSConfig(**dns))
        assert not kw, kw
        return cfg

    def runp(self, name, **kw):
        cfg = self.pod_config(name, **kw)
        return self.rt.RunPodSandbox(self.pb.RunPodSandboxRequest(config=cfg), timeout=60).pod_sandbox_id, cfg

    def podstatus(self, pid):
        return self.rt.PodSandboxStatus(self.pb.PodSandboxStatusRequest(pod_sandbox_id=pid), timeout=10).status

    def stopp(self, pid):
        self.rt.StopPodSandbox(self.pb.StopPodSandboxRequest(pod_sandbox_id=pid), timeout=60)

    def rmp(self, pid):
        self.rt.RemovePodSandbox(self.pb.RemovePodSandboxRequest(pod_sandbox_id=pid), timeout=60)

    def pull(self, image):
        return self.img.PullImage(self.pb.PullImageRequest(image=self.pb.ImageSpec(image=image)), timeout=120).image_ref

    def create(self, pod, pod_cfg, name, image, command, log_path=""):
        pb = self.pb
        cfg = pb.ContainerConfig(
            metadata=pb.ContainerMetadata(name=name, attempt=0),
            image=pb.ImageSpec(image=image),
            command=command,
            log_path=log_path,
        )
        req = pb.CreateContainerRequest(pod_sandbox_id=pod, config=cfg, sandbox_config=pod_cfg)
        return self.rt.CreateContainer(req, timeout=60).container_id


class Pod:
    """A running pod sandbox: its id and config, the directory its
    containers log to, and the image they run."""


def running_pod(client, name, image, logs, pull=()):
    """A fixture's body (`yield from`): pulls `image` and `pull`, runs the
    pod `name` logging under `logs`, yields it as a Pod and removes it."""
    for ref in (image, *pull):
        client.pull(ref)
    pod_id, cfg = client.runp(name, log_directory=str(logs))
    p = Pod()
    p.id, p.cfg, p.logs, p.image = pod_id, cfg, logs, image
    yield p
    client.rmp(pod_id)


def create(client, pod, pod_cfg, name, image, command, log_path="", tweak=None):
    pb = client.pb
    cfg = pb.ContainerConfig(
        metadata=pb.ContainerMetadata(name=name, attempt=0),
        image=pb.ImageSpec(image=image),
        command=command,
        log_path=log_path or f"{name}.log",
    )
    if tweak:
        tweak(cfg)
    req = pb.CreateContainerRequest(pod_sandbox_id=pod, config=cfg, sandbox_config=pod_cfg)
    return client.rt.CreateContainer(req, timeout=60).container_id


def start(client, cid):
    client.rt.StartContainer(client.pb.StartContainerRequest(container_id=cid), timeout=60)


def status(client, cid):
    return client.rt.ContainerStatus(client.pb.ContainerStatusRequest(container_id=cid), timeout=10).status


def start_until_ready(client, pod, name, script, image=None):
    """Creates and starts container `name` running `script` in `pod` (a
    Pod), and waits until it has logged "ready"; its id and log path."""
    cid = create(client, pod.id, pod.cfg, name, image or pod.image, ["/bin/sh", "-c", script])
    start(client, cid)
    log = pod.logs / f"{name}.log"
    wait_until("ready", lambda: "ready" in log_lines(log))
    return cid, log


def pid_of(client, cid):
    r = client.rt.ContainerStatus(client.pb.ContainerStatusRequest(container_id=cid, verbose=True), timeout=10)
    return int(re.search(r'"pid":\s*(\d+)', r.info["info"]).group(1))


def wait_exited(client, cid):
    wait_until("container exit", lambda: status(client, cid).state == client.pb.CONTAINER_EXITED)
    return status(client, cid)


def log_lines(path, stream=None):
    """The texts of the log's lines (partials joined), per stream."""
    out, partial = [], {}
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        return []
    for line in text.splitlines():
        m = LOG_LINE.match(line)
        assert m, f"not a CRI log line: {line!r}"
        _, s, tag, body = m.groups()
        partial[s] = partial.get(s, "") + body
        if tag == "F":
            if stream in (None, s):
                out.append(partial[s])
            partial[s] = ""
    return out


def exec_sync(client, cid, cmd, timeout=30):
    return client.rt.ExecSync(client.pb.ExecSyncRequest(container_id=cid, cmd=cmd, timeout=timeout), timeout=timeout + 30)


def alive(pid):
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(") ", 1)[1][0] != "Z"


def cgroup_hierarchies():
    """The cgroup v2 root, or every v1 (and hybrid v2) mount."""
    if (CGROUP_ROOT / "cgroup.controllers").exists():
        return [CGROUP_ROOT]
    return [h for h in CGROUP_ROOT.iterdir() if (h / "cgroup.procs").exists()]


@contextlib.contextmanager
def kubelet_made_cgroup(path):
    """The cgroup `path` (e.g. crisptest-<tag>/kubelet-pod) made in every
    hierarchy beforehand, as kubelet makes its pod cgroups; it and its
    parent are removed afterwards if empty."""
    made = [h / path for h in cgroup_hierarchies()]
    for d in made:
        d.mkdir(parents=True)
    try:
        yield
    finally:
        for d in made:
            for x in (d, d.parent):
                try:
                    x.rmdir()
                except OSError:
                    pass
