"""The ImageService end to end: crispd pulling from real (docker-registry)
and fake registries, storing, listing, inspecting, removing, importing."""

import json
import os
import subprocess
import tempfile
import uuid
from pathlib import Path

import grpc
import pytest

import imagetest as it


def status_code(excinfo):
    return excinfo.value.code()


def details(excinfo):
    return excinfo.value.details()


def store_names(daemon, sub):
    d = daemon.store / sub
    return sorted(p.name for p in d.iterdir()) if d.exists() else []


def layer_dirs(daemon):
    return store_names(daemon, "layers/sha256")


# ---------------------------------------------------------------- pull, list, status, remove


def test_pull_by_tag_then_list_status_remove(client, crispd, registry, images):
    ref = f"{registry.host}/test/busybox:1.0"
    image_id = client.pull(ref)
    assert image_id == images.busybox.id

    listed = client.list()
    assert [i.id for i in listed] == [image_id]
    img = listed[0]
    assert list(img.repo_tags) == [ref]
    assert list(img.repo_digests) == [f"{registry.host}/test/busybox@{images.busybox.digest}"]
    assert img.size == images.busybox.size
    assert not img.HasField("uid") and img.username == ""

    # Every way of naming it finds it.
    short = image_id[7:19]
    for name in [ref, image_id, image_id[7:], short, f"{registry.host}/test/busybox@{images.busybox.digest}"]:
        st = client.status(name)
        assert st.image.id == image_id, name
        assert not st.info
    st = client.status(ref, verbose=True)
    info = json.loads(st.info["info"])
    assert info["imageSpec"]["rootfs"]["diff_ids"] == images.busybox.diff_ids
    assert info["imageSpec"]["architecture"] == it.host_arch()
    assert info["manifestDigest"] == images.busybox.digest
    assert [l["diffID"] for l in info["layers"]] == images.busybox.diff_ids
    layer = Path(info["layers"][0]["path"])
    assert (layer / "bin" / "busybox").stat().st_size == Path("/bin/busybox").stat().st_size
    assert os.stat(layer / "bin" / "sh").st_ino == os.stat(layer / "bin" / "busybox").st_ino
    assert (layer / "tmp").stat().st_mode & 0o7777 == 0o1777

    # A second pull is a no-op with the same answer.
    assert client.pull(ref) == image_id

    client.remove(ref)
    assert client.list() == []
    st = client.status(ref)
    assert not st.HasField("image") and not st.info
    # Idempotent, and the content is gone.
    client.remove(ref)
    client.remove(image_id)
    assert layer_dirs(crispd) == []
    assert store_names(crispd, "blobs/sha256") == []
    assert store_names(crispd, "tmp") == []


def test_status_of_a_missing_image_is_empty_not_an_error(client):
    st = client.status("docker.io/library/never-pulled:1")
    assert not st.HasField("image")
    st = client.status("sha256:" + "0" * 64, verbose=True)
    assert not st.HasField("image")


def test_pull_by_digest(client, registry, images):
    ref = f"{registry.host}/test/busybox@{images.busybox.digest}"
    assert client.pull(ref) == images.busybox.id
    img = client.list()[0]
    assert list(img.repo_tags) == []
    assert list(img.repo_digests) == [ref]
    assert client.status(ref).image.id == images.busybox.id
    # A digest that is not the tag's content fails and stores nothing.
    wrong = f"{registry.host}/test/busybox@sha256:{'1' * 64}"
    with pytest.raises(grpc.RpcError) as e:
        client.pull(wrong)
    assert status_code(e) == grpc.StatusCode.NOT_FOUND
    assert len(client.list()) == 1


def busybox_names(registry):
    """Names the registry fixture serves the busybox image under: two tags
    of one repository, another repository, and another registry
    (registry.k8s.io, through crispd's mirror)."""
    return [
        f"{registry.host}/test/busybox:1.0",
        f"{registry.host}/test/busybox:alias",
        f"{registry.host}/e2e-test-images/busybox:1.29-2",
        "registry.k8s.io/e2e-test-images/busybox:1.29-2",
    ]


def test_one_image_under_many_names(client, crispd, registry, images):
    # The same content (config digest) pulled by four names, two
    # registries: one image with every tag, a repo digest per repository,
    # and one ID from every call (CRI v1.36: Image.id ==
    # PullImageResponse.image_ref).
    names = busybox_names(registry)
    assert [client.pull(n) for n in names] == [images.busybox.id] * len(names)
    (img,) = client.list()
    assert img.id == images.busybox.id
    assert list(img.repo_tags) == sorted(names)
    d = images.busybox.digest
    assert list(img.repo_digests) == sorted(
        [
            f"{registry.host}/test/busybox@{d}",
            f"{registry.host}/e2e-test-images/busybox@{d}",
            f"registry.k8s.io/e2e-test-images/busybox@{d}",
        ]
    )
    # ImageStatus answers the same image by any of its names.
    for name in [*names, *img.repo_digests, img.id]:
        assert client.status(name).image == img, name
    assert [i.id for i in client.list(names[3])] == [img.id]
    assert [i.id for i in client.list("registry.k8s.io/e2e-test-images/busybox")] == [img.id]
    assert len(layer_dirs(crispd)) == 1


@pytest.mark.parametrize("by", ["tag", "other-registry", "digest"])
def test_removing_one_name_removes_the_image_with_every_name(client, crispd, registry, images, by):
    # CRI semantics (containerd, CRI-O; critest "removing image by one tag
    # should remove all tags" and "... from one registry should remove all
    # tags from other registries"), not docker rmi's untag.
    names = busybox_names(registry)
    for n in names:
        client.pull(n)
    client.pull(f"{registry.host}/test/user:1")
    (img,) = client.list(images.busybox.id)
    name = {
        "tag": names[1],
        "other-registry": names[3],
        "digest": f"{registry.host}/test/busybox@{images.busybox.digest}",
    }[by]
    client.remove(name)
    assert [i.id for i in client.list()] == [images.user.id]
    for gone in [*names, *img.repo_digests, img.id]:
        assert not client.status(gone).HasField("image"), gone
    # The other image keeps its layer; busybox's is collected.
    assert layer_dirs(crispd) == [images.user.diff_ids[0][7:]]
    # Idempotent, by any name.
    client.remove(name)
    client.remove(names[0])


def test_concurrent_removals_all_succeed(client, registry, images):
    # critest "should not fail on simultaneous RemoveImage calls": each
    # call answers OK and the image is gone when it does.
    client.pull(f"{registry.host}/test/busybox:1.0")
    from concurrent.futures import ThreadPoolExecutor

    def remove_then_status(_):
        client.remove(images.busybox.id)
        return client.status(images.busybox.id).HasField("image")

    with ThreadPoolExecutor(5) as pool:
        assert list(pool.map(remove_then_status, range(5))) == [False] * 5
    assert client.list() == []


def test_shared_layers_are_stored_once_and_kept_while_used(client, crispd, registry, images):
    client.pull(f"{registry.host}/test/busybox:1.0")
    client.pull(f"{registry.host}/test/layers:1")
    # The busybox layer is the bottom of both images.
    assert len(layer_dirs(crispd)) == 4
    client.remove(images.busybox.id)
    assert len(layer_dirs(crispd)) == 4
    client.remove(f"{registry.host}/test/layers:1")
    assert layer_dirs(crispd) == []


def test_list_filters(client, registry, images):
    client.pull(f"{registry.host}/test/busybox:1.0")
    client.pull(f"{registry.host}/test/user:1")
    assert {i.id for i in client.list()} == {images.busybox.id, images.user.id}
    assert [i.id for i in client.list(f"{registry.host}/test/user:1")] == [images.user.id]
    assert [i.id for i in client.list(f"{registry.host}/test/busybox")] == [images.busybox.id]
    assert [i.id for i in client.list(images.user.id)] == [images.user.id]
    assert client.list("docker.io/library/nothing:1") == []
    # StreamImages answers the same.
    assert {i.id for i in client.stream()} == {images.busybox.id, images.user.id}
    assert [i.id for i in client.stream(images.user.id)] == [images.user.id]
    # Nothing matches: no message at all (batches hold at least one item).
    req = client.pb.StreamImagesRequest()
    req.filter.image.image = "docker.io/library/nothing:1"
    assert list(client.stub.StreamImages(req, timeout=60)) == []


def test_user_from_the_config(client, registry, images):
    client.pull(f"{registry.host}/test/layers:1")
    client.pull(f"{registry.host}/test/user:1")
    assert client.status(images.layered.id).image.uid.value == 1000
    img = client.status(images.user.id).image
    assert img.username == "app" and not img.HasField("uid")


def test_invalid_references_are_refused(client):
    for bad in ["", "Busybox", "docker.io/Library/x", "busybox:-bad", "a" * 64, "busybox@sha256:abc"]:
        with pytest.raises(grpc.RpcError) as e:
            client.pull(bad)
        assert status_code(e) == grpc.StatusCode.INVALID_ARGUMENT, bad
        assert "invalid reference" in details(e)


def test_image_fs_info(client, crispd, registry):
    before = client.fs_info().image_filesystems[0]
    client.pull(f"{registry.host}/test/busybox:1.0")
    after = client.fs_info().image_filesystems[0]
    assert after.fs_id.mountpoint == str(crispd.store)
    assert after.used_bytes.value > before.used_bytes.value + 1_000_000
    assert after.inodes_used.value > before.inodes_used.value
    assert after.timestamp > 0


# ---------------------------------------------------------------- layers, platforms


def test_multi_layer_whiteouts_opaque_dirs_and_zstd(client, registry, images, tmp_path):
    image_id = client.pull(f"{registry.host}/test/layers:1")
    assert image_id == images.layered.id
    info = json.loads(client.status(image_id, verbose=True).info["info"])
    layers = [l["path"] for l in info["layers"]]
    assert [l["mediaType"] for l in info["layers"]][-1].endswith("+zstd")
    top = Path(layers[2])
    wh = os.lstat(top / "etc" / "hello")
    assert (wh.st_mode & 0o170000) == 0o020000 and wh.st_rdev == 0
    assert os.getxattr(top / "data" / "dir", "trusted.overlay.opaque") == b"y"
    assert (top / "data" / "suid").stat().st_mode & 0o7777 == 0o4755

    # What a container will see: the layers stacked with overlayfs.
    mnt = tmp_path / "rootfs"
    mnt.mkdir()
    lower = ":".join(reversed(layers))
    subprocess.run(["mount", "-t", "overlay", "overlay", "-o", f"ro,lowerdir={lower}", str(mnt)], check=True)
    try:
        assert not (mnt / "etc" / "hello").exists()
        assert (mnt / "etc" / "passwd").exists()
        assert sorted(os.listdir(mnt / "data" / "dir")) == ["c"]
        assert (mnt / "data" / "keep").read_bytes() == b"keep"
        assert (mnt / "z" / "zstd.txt").read_bytes() == b"zstd layer\n" * 100
        assert os.stat(mnt / "data" / "suid-link").st_ino == os.stat(mnt / "data" / "suid").st_ino
        out = subprocess.run(["chroot", str(mnt), "/bin/sh", "-c", "echo hi from busybox; id -u"],
                             stdout=subprocess.PIPE, text=True, check=True)
        assert out.stdout.split() == ["hi", "from", "busybox", "0"]
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


def test_multi_arch_index_picks_the_host_platform(client, registry, images):
    ref = f"{registry.host}/test/multi:1"
    assert client.pull(ref) == images.busybox.id
    img = client.status(ref).image
    assert list(img.repo_digests) == [f"{registry.host}/test/multi@{images.index['digest']}"]
    info = json.loads(client.status(ref, verbose=True).info["info"])
    assert info["indexDigest"] == images.index["digest"]
    assert info["manifestDigest"] == images.busybox.digest
    assert info["platform"] == f"linux/{it.host_arch()}"


def test_docker_schema_2_manifests_and_lists(client, registry, images):
    for ref in [f"{registry.host}/test/busybox:v2s2", f"{registry.host}/test/multi:v2s2"]:
        image_id = client.pull(ref)
        info = json.loads(client.status(image_id, verbose=True).info["info"])
        assert info["platform"] == f"linux/{it.host_arch()}", ref
        assert [l["diffID"] for l in info["layers"]] == images.busybox.diff_ids, ref
        assert info["layers"][0]["mediaType"] == "application/vnd.docker.image.rootfs.diff.tar.gzip"
    assert json.loads(client.status(f"{registry.host}/test/multi:v2s2", verbose=True).info["info"])["indexDigest"]


# ---------------------------------------------------------------- registries


def test_mirror_serves_a_registry_k8s_io_image(client, registry, images):
    # crispd's config mirrors registry.k8s.io to the local registry; the
    # pull never leaves the machine.
    ref = "registry.k8s.io/e2e-test-images/busybox:1.29-2"
    assert client.pull(ref) == images.busybox.id
    img = client.status(ref).image
    assert list(img.repo_tags) == [ref]
    assert list(img.repo_digests) == [f"registry.k8s.io/e2e-test-images/busybox@{images.busybox.digest}"]
    info = json.loads(client.status(ref, verbose=True).info["info"])
    assert info["source"] == f"pull http://{registry.host}"


def test_basic_auth(client, auth_registry, images):
    ref = f"{auth_registry.host}/private/busybox:1.0"
    with pytest.raises(grpc.RpcError) as e:
        client.pull(ref)
    assert status_code(e) == grpc.StatusCode.UNAUTHENTICATED
    assert "requires authentication" in details(e) and auth_registry.host in details(e)

    with pytest.raises(grpc.RpcError) as e:
        client.pull(ref, username="user", password="wrong")
    assert status_code(e) == grpc.StatusCode.UNAUTHENTICATED
    assert "rejected the credentials" in details(e)
    assert client.list() == []

    assert client.pull(ref, username="user", password="secret") == images.busybox.id
    client.remove(ref)
    # The `auth` form: base64 of user:password.
    assert client.pull(ref, auth="dXNlcjpzZWNyZXQ=") == images.busybox.id


def test_bearer_token_auth(client, fake, images):
    fake.token = "t0ken-" + uuid.uuid4().hex
    ref = f"{fake.host}/any/busybox:busybox"
    with pytest.raises(grpc.RpcError) as e:
        client.pull(ref)
    assert status_code(e) == grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.RpcError) as e:
        client.pull(ref, username="user", password="nope")
    assert status_code(e) == grpc.StatusCode.UNAUTHENTICATED
    assert "token service" in details(e)
    assert client.pull(ref, username="user", password="pass") == images.busybox.id
    client.remove(ref)
    assert client.pull(ref, registry_token=fake.token) == images.busybox.id
    client.remove(ref)
    # An identity token is exchanged for an access token (OAuth2).
    assert client.pull(ref, identity_token=fake.refresh_token) == images.busybox.id
    client.remove(ref)
    with pytest.raises(grpc.RpcError) as e:
        client.pull(ref, identity_token="stale")
    assert status_code(e) == grpc.StatusCode.UNAUTHENTICATED


def test_tls_registry_with_a_configured_ca(client, tls_registry, images):
    assert client.pull(f"{tls_registry.host}/secure/busybox:1.0") == images.busybox.id
    # The same server as "localhost:PORT" is configured for TLS without
    # the CA: the certificate is refused.
    with pytest.raises(grpc.RpcError) as e:
        client.pull(f"localhost:{tls_registry.port}/secure/busybox:1.0")
    assert status_code(e) == grpc.StatusCode.UNAVAILABLE
    assert f"localhost:{tls_registry.port}" in details(e)
    assert "certificate" in details(e).lower() or "issuer" in details(e).lower()


def test_registry_down(client, crispd):
    port = it.free_port()
    with pytest.raises(grpc.RpcError) as e:
        client.pull(f"127.0.0.1:{port}/test/busybox:1.0")
    assert status_code(e) == grpc.StatusCode.UNAVAILABLE
    assert f"127.0.0.1:{port}" in details(e)
    assert "cannot reach" in details(e)
    assert client.list() == []


def test_missing_image(client, registry):
    with pytest.raises(grpc.RpcError) as e:
        client.pull(f"{registry.host}/test/busybox:no-such-tag")
    assert status_code(e) == grpc.StatusCode.NOT_FOUND
    assert "MANIFEST_UNKNOWN" in details(e)


# ---------------------------------------------------------------- bad content


def test_corrupted_blob_fails_and_stores_nothing(client, crispd, fake, images):
    layer = images.busybox.layers[0]["digest"]
    fake.corrupt.add(layer)
    with pytest.raises(grpc.RpcError) as e:
        client.pull(f"{fake.host}/test/busybox:busybox")
    assert status_code(e) == grpc.StatusCode.DATA_LOSS
    assert "digest mismatch" in details(e) and layer in details(e)
    assert client.list() == []
    assert layer_dirs(crispd) == []
    assert store_names(crispd, "tmp") == []
    assert store_names(crispd, "records") == []
    # A corrupted config is caught the same way.
    fake.corrupt = {images.busybox.id}
    with pytest.raises(grpc.RpcError) as e:
        client.pull(f"{fake.host}/test/busybox:busybox")
    assert status_code(e) == grpc.StatusCode.DATA_LOSS
    assert "config" in details(e)
    fake.corrupt = set()
    assert client.pull(f"{fake.host}/test/busybox:busybox") == images.busybox.id


def test_a_blob_longer_than_its_descriptor_is_refused(client, crispd, fake, images):
    layer = images.busybox.layers[0]
    fake.extra[layer["digest"]] = b"\0" * (8 << 20)
    with pytest.raises(grpc.RpcError) as e:
        client.pull(f"{fake.host}/test/busybox:busybox")
    assert status_code(e) == grpc.StatusCode.DATA_LOSS
    assert "mismatch" in details(e)
    assert client.list() == [] and layer_dirs(crispd) == [] and store_names(crispd, "tmp") == []


@pytest.mark.parametrize(
    "kind", ["dotdot", "absolute-symlink", "relative-symlink", "hardlink", "absolute-names", "absolute-hardlink"]
)
def test_escaping_layers_are_refused(client, crispd, fake, images, kind):
    victim = Path(tempfile.mkdtemp(prefix="crisp-victim-"))
    try:
        layer = it.Layer().dir("etc").file("etc/ok", b"ok")
        if kind == "dotdot":
            layer.file("../../../../../../../../.." + str(victim) + "/pwned", b"pwned")
            layer.file("../escaped", b"pwned")
        elif kind == "absolute-symlink":
            layer.symlink("evil", str(victim)).file("evil/pwned", b"pwned")
        elif kind == "relative-symlink":
            layer.symlink("evil", "../" * 12 + str(victim).lstrip("/")).file("evil/pwned", b"pwned")
        elif kind == "absolute-names":
            # Absolute names are inside the layer; the link they go through is not.
            layer.symlink("/evil", str(victim)).file("/evil/pwned", b"pwned")
        elif kind == "absolute-hardlink":
            layer.hardlink("/evil", "/../../../../../etc/passwd")
        else:
            layer.hardlink("evil", "../../../../../etc/passwd")
        image = images.layout.image([layer.bytes()])
        tag = f"escape-{kind}"
        images.layout.tag(image.desc, tag)
        with pytest.raises(grpc.RpcError) as e:
            client.pull(f"{fake.host}/test/escape:{tag}")
        assert status_code(e) == grpc.StatusCode.DATA_LOSS
        assert "refused" in details(e), details(e)
        assert os.listdir(victim) == []
        assert "escaped" not in [p.name for p in crispd.store.rglob("escaped")]
        assert client.list() == []
        assert layer_dirs(crispd) == []
        assert store_names(crispd, "tmp") == []
    finally:
        os.rmdir(victim)


# ---------------------------------------------------------------- crashes and concurrency


def test_crash_mid_pull_leaves_a_consistent_store(make_crispd, fake, images, cri):
    d = make_crispd()
    client = d.client
    big = images.layout.image([it.Layer().file("big", os.urandom(3 << 20)).bytes()])
    images.layout.tag(big.desc, "big")
    layer = big.layers[0]["digest"]
    fake.hold[layer] = 1 << 20
    future = client.pull_future(f"{fake.host}/test/big:big")
    it.wait_until("the download to stall", fake.held.is_set)
    # Part of the layer is in a temporary directory, nothing is recorded.
    it.wait_until("a partial unpack", lambda: any(d.store.glob("tmp/layer-*/big")))
    d.kill()
    with pytest.raises(grpc.RpcError):
        future.result()
    client.close()
    assert store_names(d, "records") == []
    assert layer_dirs(d) == []

    d.start()
    d.client = client = it.Client(d, cri)
    assert client.list() == []
    # Start-up removed what the crash left.
    assert store_names(d, "tmp") == []
    fake.release.set()
    assert client.pull(f"{fake.host}/test/big:big") == big.id
    assert [i.id for i in client.list()] == [big.id]
    assert store_names(d, "tmp") == []


def test_concurrent_pulls_of_one_image_share_the_work(client, fake, images):
    layer = images.layered.layers[1]["digest"]
    fake.hold[layer] = 10
    ref = f"{fake.host}/test/layers:layered"
    first = client.pull_future(ref)
    it.wait_until("the first pull to reach the held layer", fake.held.is_set)
    second = client.pull_future(ref)
    # A third, by another name, shares the layers it has in common.
    third = client.pull_future(f"{fake.host}/other/name:layered")
    fake.release.set()
    ids = {f.result().image_ref for f in (first, second, third)}
    assert ids == {images.layered.id}
    for l in images.layered.layers:
        assert fake.blob_gets[l["digest"]] == 1, l
    (img,) = client.list()
    assert sorted(img.repo_tags) == sorted([ref, f"{fake.host}/other/name:layered"])


# ---------------------------------------------------------------- offline import


def test_import_oci_archive_and_docker_archive(crispd, client, images, tmp_path, work):
    lay = images.layout
    oci_archive = tmp_path / "layered-oci.tar"
    docker_archive = tmp_path / "busybox-docker.tar"
    it.skopeo_copy(f"oci:{lay.path}:layered", f"oci-archive:{oci_archive}:offline/layered:oci")
    it.skopeo_copy(f"oci:{lay.path}:busybox", f"docker-archive:{docker_archive}:offline/busybox:docker")

    # Into the store of a running crispd: it sees them at once.
    out = crispd.run("import", str(oci_archive)).stdout
    assert images.layered.id in out and "docker.io/offline/layered:oci" in out
    out = crispd.run("import", str(docker_archive)).stdout
    assert images.busybox.id in out
    listed = {i.id: list(i.repo_tags) for i in client.list()}
    assert listed == {
        images.layered.id: ["docker.io/offline/layered:oci"],
        images.busybox.id: ["docker.io/offline/busybox:docker"],
    }
    table = crispd.run("images").stdout
    assert "docker.io/offline/busybox" in table and images.busybox.id[7:20] in table
    assert "docker.io/offline/layered" in table
    # The imported layers are the ones a pull makes.
    info = json.loads(client.status(images.layered.id, verbose=True).info["info"])
    assert [l["diffID"] for l in info["layers"]] == images.layered.diff_ids

    # Into a store no crispd serves, from a gzipped archive and a layout
    # directory with --name.
    offline = it.Crispd(crispd.binary, tmp_path / "offline")
    gz = tmp_path / "busybox-docker.tar.gz"
    subprocess.run(f"gzip -c {docker_archive} > {gz}", shell=True, check=True)
    offline.run("import", str(gz))
    single = tmp_path / "single-layout"
    it.skopeo_copy(f"oci:{lay.path}:busybox", f"oci:{single}:latest")
    offline.run("import", "--name", "named/busybox:v1", str(single))
    table = offline.run("images").stdout.splitlines()
    assert table[0].split() == ["IMAGE", "TAG", "IMAGE", "ID", "SIZE"]
    rows = sorted(r.split()[:2] for r in table[1:])
    assert rows == [["docker.io/named/busybox", "v1"], ["docker.io/offline/busybox", "docker"]]

    # A layout image with only a tag and no --name is refused, clearly.
    proc = offline.run("import", str(single), check=False)
    assert proc.returncode != 0 and "--name" in proc.stderr
    # So is something that is not an image.
    junk = tmp_path / "junk.tar"
    junk.write_bytes(b"\0" * 1024)
    proc = offline.run("import", str(junk), check=False)
    assert proc.returncode != 0 and "neither an OCI image layout" in proc.stderr


def test_pull_from_the_command_line_while_crispd_runs(crispd, client, registry, images):
    ref = f"{registry.host}/test/layers:1"
    pulled = crispd.run("pull", ref)
    assert pulled.stdout.strip() == images.layered.id
    # Through the daemon (PullImage on its socket), not beside it.
    assert f"through crispd on {crispd.socket}" in pulled.stderr
    assert f'method="/runtime.v1.ImageService/PullImage"' in crispd.log()
    # The running crispd sees it, from the same store.
    assert [i.id for i in client.list()] == [images.layered.id]
    assert "test/layers" in crispd.run("images").stdout
    failed = crispd.run("pull", f"{registry.host}/test/nothing:1", check=False)
    assert failed.returncode == 1
    assert "crispd pull: " in failed.stderr and "MANIFEST_UNKNOWN" in failed.stderr


def test_pull_from_the_command_line_without_crispd(make_crispd, registry, images):
    """No crispd on the socket: `crispd pull` pulls into the store itself
    and says so."""
    d = make_crispd(start=False)
    pulled = d.run("pull", f"{registry.host}/test/layers:1")
    assert pulled.stdout.strip() == images.layered.id
    assert "no crispd serves on" in pulled.stderr and "directly" in pulled.stderr
    # Not a terminal: plain progress lines, every layer done.
    layers = len(images.layered.layers)
    assert f"{layers} layers," in pulled.stderr
    assert f"done ({layers}/{layers})" in pulled.stderr
    assert "test/layers" in d.run("images").stdout
    # On a terminal (script(1) gives it one): a bar per layer and overall.
    tty = subprocess.run(
        ["script", "-qec", " ".join(d.base_args() + ["--socket", str(d.socket), "pull", f"{registry.host}/test/busybox:1.0"]), "/dev/null"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=120,
    )
    assert tty.returncode == 0, tty.stdout
    assert "(1/1 layers)" in tty.stdout and "sha256:" in tty.stdout, tty.stdout
    # No info log lines between the bars.
    assert "INFO" not in tty.stdout, tty.stdout
