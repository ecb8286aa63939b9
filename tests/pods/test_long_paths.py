"""A runtime_dir far longer than a Unix socket address (108 bytes) still
runs containers: crispd reaches each container's monitor socket under
<runtime_dir>/containers/<64-hex id>/ whatever the length."""

import os
import secrets
import shutil
from pathlib import Path

import pytest

import imagetest as it
from common.pods import Cri

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (namespaces, mounts, cgroups)")


def test_containers_under_a_long_runtime_dir(crispd_bin, cri, registry, network, tmp_path):
    tag = secrets.token_hex(4)
    runtime_dir = Path(f"/run/crisp-long-{tag}") / ("a-rather-long-directory-name-" * 5)
    sock = runtime_dir / "containers" / ("0" * 64) / "sock"
    assert len(str(sock)) > 107
    d = it.Crispd(crispd_bin, tmp_path / "crispd")
    d.tag = tag
    d.runtime_dir = runtime_dir
    d.socket = Path(f"/run/crisp-long-{tag}.sock")  # the CRI socket must fit
    d.config_path.write_text(f'cni_conf_dir = "{network.conf_dir}"\ncni_bin_dir = "/usr/lib/cni"\n')
    d.start()
    d.client = client = Cri(d, cri)
    pb = client.pb
    try:
        client.pull(registry.busybox)
        pod, cfg = client.runp("longdir")
        cid = client.create(pod, cfg, "c", registry.busybox, ["/bin/busybox", "sleep", "1000"])
        assert (runtime_dir / "containers" / cid / "sock").exists()
        client.rt.StartContainer(pb.StartContainerRequest(container_id=cid), timeout=60)
        r = client.rt.ExecSync(pb.ExecSyncRequest(container_id=cid, cmd=["/bin/echo", "hi"], timeout=10))
        assert (r.stdout, r.exit_code) == (b"hi\n", 0)
        # Restart: the next crispd re-adopts the running container through
        # the same socket.
        d.stop()
        client.close()
        d.start()
        d.client = client = Cri(d, cri)
        st = client.rt.ContainerStatus(pb.ContainerStatusRequest(container_id=cid)).status
        assert st.state == pb.CONTAINER_RUNNING
        client.rt.StopContainer(pb.StopContainerRequest(container_id=cid, timeout=1), timeout=60)
        st = client.rt.ContainerStatus(pb.ContainerStatusRequest(container_id=cid)).status
        assert st.state == pb.CONTAINER_EXITED
        assert st.exit_code == 137
        client.rmp(pod)
    finally:
        try:
            for p in client.rt.ListPodSandbox(pb.ListPodSandboxRequest(), timeout=10).items:
                client.rmp(p.id)
        finally:
            client.close()
            d.stop()
            shutil.rmtree(runtime_dir.parent, ignore_errors=True)
            # The pod's cgroup_parent is /crisptest-<tag>/longdir: crispd
            # removed the pod's level, the top is the test's.
            root = Path("/sys/fs/cgroup")
            for h in [root] if (root / "cgroup.controllers").exists() else [h for h in root.iterdir() if h.is_dir()]:
                try:
                    (h / f"crisptest-{tag}").rmdir()
                except OSError:
                    pass
