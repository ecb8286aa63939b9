"""Fixtures for the pod and container tests: the busybox test image from
tests/images (imported, not edited) in a real docker-registry, a CNI
bridge network kept on this host (pre-created bridge, no gateway, no
masquerade, host-local IPAM on a private /24), and a fresh crispd per test
driven through its socket with grpcio."""

import os
import secrets
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import grpc
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "images"))
import imagetest as it  # noqa: E402

# One bridge and subnet per pytest process, so two runs on this machine
# (a developer's and CI's) never tear down each other's network.
SUBNET = f"10.231.{os.getpid() % 250}.0/24"
BRIDGE = f"crisptest{os.getpid() % 100000}"


@pytest.fixture(scope="session")
def work():
    d = Path(tempfile.mkdtemp(prefix="crisp-pods-"))
    os.chmod(d, 0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="session")
def registry(work):
    lay = it.Layout(work / "layout")
    img = lay.image([it.busybox_layer()])
    lay.tag(img.desc, "busybox")
    lay.write_index()
    reg = it.Registry(work / "registry")
    reg.push(lay, "busybox", "test/busybox:1.0")
    reg.busybox = f"{reg.host}/test/busybox:1.0"
    reg.busybox_digest = img.digest
    # The same image under another repository, for the image-identity tests.
    reg.push(lay, "busybox", "other/busybox:2")
    # The same busybox whose image config names SIGUSR1 as its StopSignal.
    usr1 = lay.image([it.busybox_layer()], stop_signal="SIGUSR1")
    lay.tag(usr1.desc, "busybox-usr1")
    lay.write_index()
    reg.push(lay, "busybox-usr1", "test/busybox-usr1:1.0")
    reg.busybox_usr1 = f"{reg.host}/test/busybox-usr1:1.0"
    yield reg
    reg.stop()


@pytest.fixture(scope="session")
def network(work):
    """A CNI conf dir with one bridge conflist on a pre-created bridge."""
    subprocess.run(["ip", "link", "del", BRIDGE], stderr=subprocess.DEVNULL)
    subprocess.run(["ip", "link", "add", BRIDGE, "type", "bridge"], check=True)
    subprocess.run(["ip", "link", "set", BRIDGE, "up"], check=True)
    conf = work / "cni"
    conf.mkdir()
    ipam_dir = work / "ipam"
    (conf / "10-crisptest.conflist").write_text(
        f"""{{
  "cniVersion": "1.0.0",
  "name": "crisptest",
  "plugins": [{{
    "type": "bridge",
    "bridge": "{BRIDGE}",
    "isGateway": false,
    "ipMasq": false,
    "ipam": {{"type": "host-local", "ranges": [[{{"subnet": "{SUBNET}"}}]], "dataDir": "{ipam_dir}"}}
  }}]
}}
"""
    )

    class Net:
        pass

    n = Net()
    n.conf_dir = conf
    n.ipam_dir = ipam_dir / "crisptest"
    n.prefix = SUBNET.rsplit(".", 1)[0]
    yield n
    subprocess.run(["ip", "link", "del", BRIDGE], stderr=subprocess.DEVNULL)


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


@pytest.fixture
def make_crispd(crispd_bin, cri, network, tmp_path):
    started = []

    def make(cni=True, config=""):
        """`cni`: the session's bridge network, none (False), or a CNI
        conf dir of the test's own (a Path); `config`: extra TOML lines."""
        d = it.Crispd(crispd_bin, tmp_path / f"crispd{len(started)}")
        # A short runtime dir: crispd's CRI socket lives in it.
        d.tag = secrets.token_hex(4)
        d.runtime_dir = Path(f"/run/crisp-t{d.tag}")
        d.socket = d.runtime_dir / "crisp.sock"
        if isinstance(cni, Path):
            conf_dir = cni
        else:
            conf_dir = network.conf_dir if cni else tmp_path / "no-cni"
        d.config_path.write_text(f'cni_conf_dir = "{conf_dir}"\ncni_bin_dir = "/usr/lib/cni"\n{config}')
        d.start()
        d.client = Cri(d, cri)
        started.append(d)
        return d

    yield make
    for d in started:
        # Tests that fail or skip half-way leave pods: remove them through
        # crispd, so their network, mounts and processes go too.
        try:
            if d.proc and d.proc.poll() is None:
                for p in d.client.rt.ListPodSandbox(d.client.pb.ListPodSandboxRequest(), timeout=10).items:
                    d.client.rmp(p.id)
        except grpc.RpcError:
            pass
        d.client.close()
        d.stop()
        shutil.rmtree(d.runtime_dir, ignore_errors=True)
        # Pods' cgroup_parent is /crisptest-<tag>/<name>: crispd removes the
        # pod's level (it made it), the top level is the test's. A top
        # that is not empty stays, for the leak checks to see.
        root = Path("/sys/fs/cgroup")
        hierarchies = [root] if (root / "cgroup.controllers").exists() else [h for h in root.iterdir() if h.is_dir()]
        for h in hierarchies:
            try:
                (h / f"crisptest-{d.tag}").rmdir()
            except OSError:
                pass


@pytest.fixture
def crispd(make_crispd):
    return make_crispd()


@pytest.fixture
def client(crispd):
    return crispd.client
