"""CRI mounts through crispd's real socket: propagation (private,
host-to-container, bidirectional, as critest checks it: a mount made on
the host under the source and one made in the container, each looked for
on the other side), the host refusing a propagation its mounts cannot
give, recursive read-only binds (and the combinations the CRI forbids),
the feature in Status, ContainerStatus.mounts, and image volumes (an
image's layers read-only in the container, kept in use while mounted)."""

import os
import subprocess
from pathlib import Path

import grpc
import pytest

import imagetest as it
from common.pods import Cri

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (namespaces, mounts, cgroups)")


def sh(*args):
    subprocess.run(args, check=True)


def is_mount_point(path):
    target = str(Path(path))
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        mp = line.split(" ")[4].replace("\\040", " ")
        if mp == target:
            return True
    return False


def create(client, pod, name, image, command, mounts=(), privileged=False):
    pb = client.pb
    cfg = pb.ContainerConfig(
        metadata=pb.ContainerMetadata(name=name, attempt=0),
        image=pb.ImageSpec(image=image),
        command=command,
        mounts=list(mounts),
    )
    cfg.linux.security_context.privileged = privileged
    req = pb.CreateContainerRequest(pod_sandbox_id=pod.id, config=cfg, sandbox_config=pod.cfg)
    return client.rt.CreateContainer(req, timeout=60).container_id


def start(client, cid):
    client.rt.StartContainer(client.pb.StartContainerRequest(container_id=cid), timeout=60)


def status(client, cid):
    return client.rt.ContainerStatus(client.pb.ContainerStatusRequest(container_id=cid), timeout=10).status


def run(client, cid, script):
    r = client.rt.ExecSync(client.pb.ExecSyncRequest(container_id=cid, cmd=["/bin/sh", "-c", script], timeout=30), timeout=60)
    return r.exit_code, r.stdout.decode(), r.stderr.decode()


def remove(client, cid):
    client.rt.RemoveContainer(client.pb.RemoveContainerRequest(container_id=cid), timeout=60)


SLEEP = ["/bin/busybox", "sleep", "1000"]


@pytest.fixture
def pod(crispd, registry):
    client = crispd.client
    client.pull(registry.busybox)
    # Privileged, as critest's mount propagation pods: some containers are.
    pod_id, cfg = client.runp("mnt", privileged=True)

    class Pod:
        pass

    p = Pod()
    p.id, p.cfg, p.image = pod_id, cfg, registry.busybox
    yield p
    crispd.client.rmp(pod_id)  # the client of the moment: a test may restart crispd


@pytest.fixture
def host_mounts():
    """Mount points the test makes on the host, unmounted (innermost first,
    lazily) whatever happens."""
    made = []
    yield made
    for m in reversed(made):
        subprocess.run(["umount", "-R", "-l", str(m)], stderr=subprocess.DEVNULL)


def bind_self(path, propagation, host_mounts):
    """`path` bound onto itself with the given propagation (as critest makes
    its sources), so the test does not depend on how / is mounted."""
    sh("mount", "--bind", str(path), str(path))
    host_mounts.append(path)
    sh("mount", f"--make-{propagation}", str(path))


# ------------------------------------------------------------ propagation


@pytest.mark.parametrize(
    "propagation, source, host_to_ctr, ctr_to_host",
    [
        ("PROPAGATION_PRIVATE", "rprivate", False, False),
        ("PROPAGATION_HOST_TO_CONTAINER", "rshared", True, False),
        ("PROPAGATION_BIDIRECTIONAL", "rshared", True, True),
    ],
)
def test_mount_propagation_like_critest(client, pod, tmp_path, host_mounts, propagation, source, host_to_ctr, ctr_to_host):
    pb = client.pb
    src = tmp_path / "mnt"
    (src / "from-host").mkdir(parents=True)
    flag_dir = tmp_path / "flag"
    flag_dir.mkdir()
    (flag_dir / "flagFile").write_text("host\n")
    bind_self(src, source, host_mounts)
    mode = getattr(pb, propagation)
    # critest's container: privileged (to mount), the source at its own path.
    m = pb.Mount(container_path=str(src), host_path=str(src), propagation=mode)
    cid = create(client, pod, "prop", pod.image, SLEEP, [m], privileged=True)
    st = status(client, cid)
    assert len(st.mounts) == 1
    assert (st.mounts[0].container_path, st.mounts[0].host_path, st.mounts[0].propagation) == (str(src), str(src), mode)
    start(client, cid)

    # A mount made on the host after the start.
    sh("mount", "--bind", str(flag_dir), str(src / "from-host"))
    host_mounts.append(src / "from-host")
    code, out, err = run(client, cid, f"busybox ls -A {src}/from-host")
    assert code == 0, err
    assert ("flagFile" in out) == host_to_ctr, out

    # A mount made in the container.
    code, _, err = run(client, cid, f"busybox mkdir -p {src}/from-ctr && busybox mount --bind /etc {src}/from-ctr")
    assert code == 0, err
    host_mounts.append(src / "from-ctr")
    seen = sorted(p.name for p in (src / "from-ctr").iterdir())
    assert ("passwd" in seen) == ctr_to_host, seen
    # Nothing else of the container's leaks out: its rootfs stays its own.
    code, _, err = run(client, cid, "busybox mkdir -p /leak && busybox mount -t tmpfs none /leak")
    assert code == 0, err
    assert not any(line.split(" ")[4].endswith("/leak") for line in Path("/proc/self/mountinfo").read_text().splitlines())
    remove(client, cid)


@pytest.mark.parametrize("propagation", ["PROPAGATION_BIDIRECTIONAL", "PROPAGATION_HOST_TO_CONTAINER"])
def test_propagation_the_source_mount_cannot_give_is_refused(client, pod, tmp_path, host_mounts, propagation):
    pb = client.pb
    src = tmp_path / "private"
    src.mkdir()
    bind_self(src, "rprivate", host_mounts)
    m = pb.Mount(container_path="/data", host_path=str(src / "sub"), propagation=getattr(pb, propagation))
    with pytest.raises(grpc.RpcError) as e:
        create(client, pod, "refused", pod.image, SLEEP, [m])
    assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "mounts[0].propagation" in e.value.details() and str(src) in e.value.details(), e.value.details()
    names = [c.metadata.name for c in client.rt.ListContainers(pb.ListContainersRequest(), timeout=10).containers]
    assert "refused" not in names


# ------------------------------------------------------------ read-only


def test_status_advertises_recursive_read_only_mounts(client):
    r = client.rt.Status(client.pb.StatusRequest(), timeout=10)
    default = [h for h in r.runtime_handlers if h.name == ""]
    assert len(default) == 1
    assert default[0].features.recursive_read_only_mounts is True
    assert default[0].features.user_namespaces is False


def test_recursive_read_only_reaches_submounts_plain_readonly_does_not(client, pod, tmp_path, host_mounts):
    pb = client.pb
    # critest's source: a directory with a tmpfs mounted inside.
    src = tmp_path / "vol"
    (src / "tmpfs").mkdir(parents=True)
    sh("mount", "-t", "tmpfs", "none", str(src / "tmpfs"))
    host_mounts.append(src / "tmpfs")
    mounts = [
        pb.Mount(container_path="/ro", host_path=str(src), readonly=True, selinux_relabel=True),
        pb.Mount(container_path="/rro", host_path=str(src), readonly=True, recursive_read_only=True, selinux_relabel=True),
    ]
    cid = create(client, pod, "rro", pod.image, SLEEP, mounts)
    start(client, cid)
    probe = "busybox touch {p} 2>&1 && echo written || echo refused"
    assert run(client, cid, probe.format(p="/ro/top"))[1].split()[-1] == "refused"
    assert run(client, cid, probe.format(p="/ro/tmpfs/sub"))[1].split()[-1] == "written"
    assert run(client, cid, probe.format(p="/rro/top"))[1].split()[-1] == "refused"
    code, out, _ = run(client, cid, probe.format(p="/rro/tmpfs/sub"))
    assert "Read-only file system" in out and out.split()[-1] == "refused", out
    # The host's tmpfs itself stays writable.
    (src / "tmpfs" / "host").write_text("x")
    remove(client, cid)


@pytest.mark.parametrize(
    "fields, why",
    [
        ({"readonly": False}, "must also be readonly"),
        ({"propagation": "PROPAGATION_HOST_TO_CONTAINER"}, "PROPAGATION_PRIVATE"),
        ({"propagation": "PROPAGATION_BIDIRECTIONAL"}, "PROPAGATION_PRIVATE"),
    ],
)
def test_invalid_recursive_read_only_combinations_are_refused(client, pod, tmp_path, fields, why):
    pb = client.pb
    kw = {"container_path": "/mnt", "host_path": str(tmp_path), "readonly": True, "recursive_read_only": True, "selinux_relabel": True}
    kw.update({k: getattr(pb, v) if k == "propagation" else v for k, v in fields.items()})
    with pytest.raises(grpc.RpcError) as e:
        create(client, pod, "bad", pod.image, SLEEP, [pb.Mount(**kw)])
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "mounts[0].recursive_read_only" in e.value.details() and why in e.value.details(), e.value.details()


def test_idmapped_mounts_are_refused(client, pod, tmp_path):
    pb = client.pb
    m = pb.Mount(container_path="/mnt", host_path=str(tmp_path), uidMappings=[pb.IDMapping(host_id=1000, container_id=0, length=1)])
    with pytest.raises(grpc.RpcError) as e:
        create(client, pod, "idmap", pod.image, SLEEP, [m])
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "mounts[0].uidMappings" in e.value.details()


def test_container_status_reports_every_mount_field(client, pod, tmp_path, host_mounts):
    pb = client.pb
    shared = tmp_path / "shared"
    shared.mkdir()
    bind_self(shared, "rshared", host_mounts)
    mounts = [
        pb.Mount(container_path="/a", host_path=str(tmp_path / "a"), readonly=True, recursive_read_only=True, selinux_relabel=True),
        pb.Mount(container_path="/b", host_path=str(shared), propagation=pb.PROPAGATION_HOST_TO_CONTAINER),
        pb.Mount(container_path="/c", host_path=str(shared), propagation=pb.PROPAGATION_BIDIRECTIONAL),
        pb.Mount(container_path="/d", host_path=str(tmp_path / "a"), readonly=True),
    ]
    cid = create(client, pod, "fields", pod.image, SLEEP, mounts)
    # Every field as requested, in order (a missing host path was created).
    assert list(status(client, cid).mounts) == mounts
    assert (tmp_path / "a").is_dir()
    start(client, cid)
    assert list(status(client, cid).mounts) == mounts
    remove(client, cid)


# ------------------------------------------------------------ image volumes


@pytest.fixture
def data_image(registry):
    """Two layers written with Python's tarfile: the second adds a file and
    whites one out, so the volume must be the overlay of both."""
    if not hasattr(registry, "data"):
        lay = it.Layout(registry.root.parent / "data-layout")
        one = it.Layer().dir("data").file("data/a.txt", b"one\n").dir("data/sub").file("data/sub/b.txt", b"two\n")
        one.file("data/plain", b"not a directory\n").symlink("data/link", "/data/sub")
        two = it.Layer().dir("data").file("data/c.txt", b"three\n").whiteout("data/a.txt")
        img = lay.image([one.bytes(), two.bytes()])
        lay.tag(img.desc, "data")
        lay.write_index()
        registry.push(lay, "data", "test/data:1.0")
        registry.data = f"{registry.host}/test/data:1.0"
    return registry.data


def test_image_volume_is_read_only_in_use_while_mounted_and_cleaned_up(crispd, pod, data_image, cri):
    client = crispd.client
    pb = client.pb
    image_id = client.pull(data_image)
    vol = pb.ImageSpec(image=data_image)
    mounts = [
        pb.Mount(container_path="/vol", image=vol, readonly=True),
        pb.Mount(container_path="/sub", image=vol, image_sub_path="data/sub", readonly=True),
        pb.Mount(container_path="/via-link", image=vol, image_sub_path="data/link", readonly=True),
    ]
    cid = create(client, pod, "vol", pod.image, SLEEP, mounts)
    st = status(client, cid)
    assert [m.container_path for m in st.mounts] == ["/vol", "/sub", "/via-link"]
    for got, want in zip(st.mounts, mounts):
        assert got.image.image == data_image and got.readonly and got.image_sub_path == want.image_sub_path
    # The host path each is bound from, as containerd reports it.
    host_paths = [Path(m.host_path) for m in st.mounts]
    assert is_mount_point(host_paths[0])
    # One overlay of the image, however many mounts use it.
    assert host_paths[1] == host_paths[0] / "data" / "sub"
    assert host_paths[2] == host_paths[0] / "data" / "sub"
    assert host_paths[0].name == image_id.split(":")[1]
    start(client, cid)

    code, out, err = run(client, cid, "busybox cat /vol/data/c.txt /sub/b.txt /via-link/b.txt; busybox ls /vol/data")
    assert code == 0, err
    assert out.split("\n")[:3] == ["three", "two", "two"]
    assert "a.txt" not in out.split("\n")[3:], "the upper layer's whiteout was not applied"
    for p in ["/vol/new", "/vol/data/c.txt", "/sub/new"]:
        code, out, _ = run(client, cid, f"echo x > {p} 2>&1 && echo written || echo refused")
        assert out.split()[-1] == "refused", (p, out)
    assert "Read-only file system" in run(client, cid, "busybox touch /vol/new 2>&1")[1]

    # Kept in use: RemoveImage is refused while the container exists, even
    # stopped.
    client.rt.StopContainer(pb.StopContainerRequest(container_id=cid, timeout=0), timeout=60)
    with pytest.raises(grpc.RpcError) as e:
        client.img.RemoveImage(pb.RemoveImageRequest(image=pb.ImageSpec(image=image_id)), timeout=30)
    assert "container" in e.value.details(), e.value.details()
    # And after a restart of crispd, from the container's record.
    crispd.stop()
    client.close()
    crispd.start()
    client = crispd.client = Cri(crispd, cri)
    assert list(status(client, cid).mounts) == list(st.mounts)
    with pytest.raises(grpc.RpcError) as e:
        client.img.RemoveImage(pb.RemoveImageRequest(image=pb.ImageSpec(image=image_id)), timeout=30)
    assert "container" in e.value.details(), e.value.details()
    remove(client, cid)
    assert not host_paths[0].exists() and not is_mount_point(host_paths[0])
    client.img.RemoveImage(pb.RemoveImageRequest(image=pb.ImageSpec(image=image_id)), timeout=30)
    assert client.img.ImageStatus(pb.ImageStatusRequest(image=pb.ImageSpec(image=data_image)), timeout=10).image.id == ""


def test_image_volume_refusals(client, pod, data_image):
    pb = client.pb
    vol = pb.ImageSpec(image=data_image)
    # Not pulled: refused, as containerd does (kubelet pulls first).
    client.img.RemoveImage(pb.RemoveImageRequest(image=vol), timeout=30)
    with pytest.raises(grpc.RpcError) as e:
        create(client, pod, "nopull", pod.image, SLEEP, [pb.Mount(container_path="/vol", image=vol, readonly=True)])
    assert e.value.code() == grpc.StatusCode.NOT_FOUND
    assert "mounts[0].image" in e.value.details() and "pulled" in e.value.details(), e.value.details()
    client.pull(data_image)
    cases = [
        (pb.Mount(container_path="/vol", image=vol), grpc.StatusCode.INVALID_ARGUMENT, "mounts[0].readonly"),
        (pb.Mount(container_path="/vol", image=vol, readonly=True, host_path="/tmp"), grpc.StatusCode.INVALID_ARGUMENT, "mounts[0].host_path"),
        (pb.Mount(container_path="/vol", image=vol, readonly=True, image_sub_path="../etc"), grpc.StatusCode.INVALID_ARGUMENT, "mounts[0].image_sub_path"),
        (pb.Mount(container_path="/vol", image=vol, readonly=True, image_sub_path="data/plain"), grpc.StatusCode.INVALID_ARGUMENT, "mounts[0].image_sub_path"),
        (pb.Mount(container_path="/vol", image=vol, readonly=True, image_sub_path="data/missing"), grpc.StatusCode.INVALID_ARGUMENT, "mounts[0].image_sub_path"),
    ]
    for m, code, what in cases:
        with pytest.raises(grpc.RpcError) as e:
            create(client, pod, "bad", pod.image, SLEEP, [m])
        assert e.value.code() == code, (what, e.value.details())
        assert what in e.value.details(), e.value.details()
    # A failed creation leaves nothing mounted and the image free.
    assert not any("/volumes/" in line.split(" ")[4] for line in Path("/proc/self/mountinfo").read_text().splitlines())
    client.img.RemoveImage(pb.RemoveImageRequest(image=vol), timeout=30)
