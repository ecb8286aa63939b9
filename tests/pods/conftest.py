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
from pathlib import Path

import grpc
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "images"))
import imagetest as it  # noqa: E402
from common.pods import Cri  # noqa: E402
from common.scratch import shared_tmpdir  # noqa: E402

# One bridge and subnet per pytest process, so two runs on this machine
# (a developer's and CI's) never tear down each other's network.
SUBNET = f"10.231.{os.getpid() % 250}.0/24"
BRIDGE = f"crisptest{os.getpid() % 100000}"


@pytest.fixture(scope="session")
def work():
    yield from shared_tmpdir("crisp-pods-")


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
    n.bridge = BRIDGE
    yield n
    subprocess.run(["ip", "link", "del", BRIDGE], stderr=subprocess.DEVNULL)


@pytest.fixture
def make_crispd(crispd_bin, cri, network, tmp_path):
    started = []

    def make(cni=True, config="", cni_bin_dir="/usr/lib/cni"):
        """`cni`: the session's bridge network, none (False), or a CNI
        conf dir of the test's own (a Path); `config`: extra TOML lines;
        `cni_bin_dir`: where the plugins are."""
        d = it.Crispd(crispd_bin, tmp_path / f"crispd{len(started)}")
        # A short runtime dir: crispd's CRI socket lives in it.
        d.tag = secrets.token_hex(4)
        d.runtime_dir = Path(f"/run/crisp-t{d.tag}")
        d.socket = d.runtime_dir / "crisp.sock"
        if isinstance(cni, Path):
            conf_dir = cni
        else:
            conf_dir = network.conf_dir if cni else tmp_path / "no-cni"
        d.config_path.write_text(f'cni_conf_dir = "{conf_dir}"\ncni_bin_dir = "{cni_bin_dir}"\n{config}')
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
