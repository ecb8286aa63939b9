"""Layers written by tools other than our own test builder, pulled through
the real registry (or imported) and checked as unpacked: umoci (a "/" entry
for the layer root, no end-of-archive blocks, not even the last file's
padding), GNU tar with -P (absolute names and hard-link targets) and with
"./" prefixes, Python's tarfile in GNU and PAX formats (a file before its
directory, repeated paths, "a/../b", long names, xattrs), uncompressed and
zstd layers, skopeo conversions (Docker schema 2, docker-archive and back)
and a docker-archive given to `crispd import`. Each image's layers are
stacked with overlayfs and its busybox run in them (`chroot`)."""

import gzip
import io
import json
import os
import tarfile
from pathlib import Path

import pytest

import imagetest as it

BUSYBOX = Path("/bin/busybox")
HELLO = it.FOREIGN_HELLO
run = it.run_tool


class TarfileLayer:
    """A layer written with Python's tarfile, names as given."""

    def __init__(self, fmt):
        self.buf = io.BytesIO()
        self.tar = tarfile.open(fileobj=self.buf, mode="w", format=fmt)

    def add(self, name, kind=tarfile.REGTYPE, data=b"", mode=0o644, uid=0, gid=0, linkname="", pax=None):
        ti = tarfile.TarInfo(name)
        ti.type, ti.mode, ti.uid, ti.gid, ti.mtime = kind, mode, uid, gid, 1700000000
        ti.linkname = linkname
        if pax:
            ti.pax_headers = pax
        ti.size = len(data) if kind == tarfile.REGTYPE else 0
        self.tar.addfile(ti, io.BytesIO(data) if ti.size else None)
        return self

    def busybox(self, prefix=""):
        self.add(f"{prefix}bin/busybox", data=BUSYBOX.read_bytes(), mode=0o755)
        for applet in ["sh", "echo"]:
            self.add(f"{prefix}bin/{applet}", tarfile.LNKTYPE, linkname=f"{prefix}bin/busybox", mode=0o755)
        return self

    def bytes(self, end_blocks=True):
        if not end_blocks:
            # Everything up to the last member's padded data: no
            # end-of-archive blocks.
            data = self.buf.getvalue()[: self.tar.offset]
            self.tar.fileobj = io.BytesIO()  # close() writes its blocks there
            self.tar.close()
            return data
        self.tar.close()
        return self.buf.getvalue()


def layer_tars(layout, tag):
    """The uncompressed layer tars of an image in an OCI layout."""
    index = json.loads((Path(layout) / "index.json").read_text())
    (desc,) = [m for m in index["manifests"] if m["annotations"]["org.opencontainers.image.ref.name"] == tag]
    blob = lambda d: (Path(layout) / "blobs" / "sha256" / d.split(":", 1)[1]).read_bytes()  # noqa: E731
    manifest = json.loads(blob(desc["digest"]))
    out = []
    for l in manifest["layers"]:
        data = blob(l["digest"])
        # By magic bytes: skopeo 1.9 labels the uncompressed layers it
        # copies from a docker-archive "tar+gzip".
        if data[:2] == b"\x1f\x8b":
            data = gzip.decompress(data)
        out.append(data)
    return manifest, out


class Corpus:
    pass


@pytest.fixture(scope="module")
def corpus(work, registry):
    c = Corpus()
    reg = registry.host
    top = work / "foreign"
    top.mkdir()

    # umoci, as critest's images are built.
    c.umoci_layout = top / "umoci"
    it.umoci_image(c.umoci_layout, top)
    it.skopeo_copy(f"oci:{c.umoci_layout}:umoci", f"docker://{reg}/foreign/umoci:1", "--dest-tls-verify=false")
    # The same as Docker schema 2, and with zstd layers (skopeo recompresses).
    it.skopeo_copy(f"oci:{c.umoci_layout}:umoci", f"docker://{reg}/foreign/umoci:v2s2", "--dest-tls-verify=false",
                   "--format", "v2s2")
    # (skopeo 1.9 recompresses into a layout, not on the way to a registry.)
    zstd_layout = top / "zstd"
    it.skopeo_copy(f"oci:{c.umoci_layout}:umoci", f"oci:{zstd_layout}:zstd", "--dest-compress",
                   "--dest-compress-format", "zstd")
    it.skopeo_copy(f"oci:{zstd_layout}:zstd", f"docker://{reg}/foreign/umoci:zstd", "--dest-tls-verify=false")
    # Through a docker-archive and back to an OCI layout, layers left
    # uncompressed.
    c.docker_archive = top / "umoci-docker.tar"
    it.skopeo_copy(f"oci:{c.umoci_layout}:umoci", f"docker-archive:{c.docker_archive}:foreign/umoci:archive")
    back = top / "roundtrip"
    it.skopeo_copy(f"docker-archive:{c.docker_archive}", f"oci:{back}:rt", "--dest-oci-accept-uncompressed-layers")
    c.roundtrip_manifest, _ = layer_tars(back, "rt")
    c.roundtrip_raw = [
        (back / "blobs" / "sha256" / l["digest"][7:]).read_bytes()[:2] for l in c.roundtrip_manifest["layers"]
    ]
    it.skopeo_copy(f"oci:{back}:rt", f"docker://{reg}/foreign/roundtrip:1", "--dest-tls-verify=false")

    lay = it.Layout(top / "layout")
    rootfs = it.busybox_rootfs(top / "tar-rootfs")

    # GNU tar -P: absolute names ("/", "/bin/busybox") and absolute hard-link targets.
    abs_tar = run("tar", "-C", str(rootfs), "-P", "--transform", r"s,^\.,,;s,^$,/,", "-cf", "-", ".").stdout
    c.gnu_abs = lay.image([abs_tar], compression="gzip")
    lay.tag(c.gnu_abs.desc, "gnu-abs")
    # GNU tar with "./" names, an uncompressed layer.
    dot_tar = run("tar", "-C", str(rootfs), "-cf", "-", ".").stdout
    c.gnu_dot = lay.image([dot_tar], compression="none")
    lay.tag(c.gnu_dot.desc, "gnu-dot")

    # Python tarfile, GNU format, zstd: a file before its directory, a
    # repeated path, "a/../b", a long name, a directory listed twice, and
    # no end-of-archive blocks.
    long_name = "long/" + "n" * 150
    g = TarfileLayer(tarfile.GNU_FORMAT).busybox()
    g.add("late/dir/file", data=b"before its directory")
    g.add("late/", tarfile.DIRTYPE, mode=0o750)
    g.add("etc/hello", data=b"first")
    g.add("etc/hello", data=HELLO, mode=0o640)
    g.add("dotdot/../resolved", data=b"resolved")
    g.add(long_name, data=b"long")
    g.add("d/", tarfile.DIRTYPE, mode=0o755).add("d/keep", data=b"keep")
    g.add("d", tarfile.DIRTYPE, mode=0o700)
    g.add("last", data=b"x" * 700)
    c.py_gnu = lay.image([(g.bytes(end_blocks=False), "zstd")])
    lay.tag(c.py_gnu.desc, "py-gnu")
    c.long_name = long_name

    # Python tarfile, PAX format, uncompressed: a "./" root entry that
    # would make the root 0700 and another owner's, absolute names and
    # hard-link targets, a PAX long name, an xattr.
    p = TarfileLayer(tarfile.PAX_FORMAT)
    p.add("./", tarfile.DIRTYPE, mode=0o700, uid=1234, gid=1234)
    p.add("/bin/", tarfile.DIRTYPE, mode=0o755).busybox(prefix="/")
    p.add("/etc/hello", data=HELLO, mode=0o640, pax={"SCHILY.xattr.user.crisp": "foreign"})
    p.add("/" + long_name, data=b"long")
    p.add("/etc/hello-link", tarfile.LNKTYPE, linkname="/etc/hello")
    c.py_pax = lay.image([(p.bytes(), "none")])
    lay.tag(c.py_pax.desc, "py-pax")

    for tag in ["gnu-abs", "gnu-dot", "py-gnu", "py-pax"]:
        registry.push(lay, tag, f"foreign/{tag}:1")
    c.ref = lambda name: f"{reg}/foreign/{name}"  # noqa: E731
    return c


def layer_paths(client, ref):
    info = json.loads(client.status(ref, verbose=True).info["info"])
    return [Path(l["path"]) for l in info["layers"]]


def mode(p):
    return os.lstat(p).st_mode & 0o7777


def run_in(tmp_path, layers, *cmd):
    """Run `cmd` chrooted in the layers stacked as a container sees them."""
    if len(layers) == 1:
        return run("chroot", str(layers[0]), *cmd).stdout
    mnt = tmp_path / "rootfs"
    mnt.mkdir(exist_ok=True)
    lower = ":".join(str(l) for l in reversed(layers))
    run("mount", "-t", "overlay", "overlay", "-o", f"ro,lowerdir={lower}", str(mnt))
    try:
        return run("chroot", str(mnt), *cmd).stdout
    finally:
        run("umount", str(mnt))


def check_busybox_tree(layer):
    """What make_rootfs put in, as one layer unpacked."""
    assert mode(layer / "bin" / "busybox") == 0o755
    ino = os.lstat(layer / "bin" / "busybox").st_ino
    assert os.lstat(layer / "bin" / "sh").st_ino == ino
    assert os.lstat(layer / "bin" / "echo").st_ino == ino
    assert mode(layer / "etc" / "hello") == 0o640
    assert mode(layer / "tmp") == 0o1777
    # The layer root keeps the store's mode: its "/" or "./" entry is skipped.
    assert mode(layer) == 0o755 and os.lstat(layer).st_uid == 0


def check_umoci_layers(tmp_path, layers):
    assert len(layers) == 2
    check_busybox_tree(layers[0])
    assert (layers[0] / "etc" / "hello").read_bytes() == HELLO
    assert (layers[1] / "usr" / "share" / "extra.txt").read_bytes() == b"second layer\n"
    assert mode(layers[1]) == 0o755
    out = run_in(tmp_path, layers, "/bin/busybox", "sh", "-c", "cat /etc/hello /usr/share/extra.txt; echo ran")
    assert out == b"replaced by layer 2\nsecond layer\nran\n"


def test_umoci_layers_with_root_entries_and_no_end_blocks(client, corpus, tmp_path):
    # What makes this image the hard one: umoci's own tar stream.
    manifest, tars = layer_tars(corpus.umoci_layout, "umoci")
    names = [m.name for m in tarfile.open(fileobj=io.BytesIO(tars[0] + b"\0" * 1024))]
    assert names[0] in ("", "/", ".")  # tarfile strips the "/" umoci wrote
    assert tars[0][:1] == b"/"
    for tar in tars:
        assert len(tar) % 512 != 0, "umoci now pads its layers: this test checks less than it says"

    image_id = client.pull(corpus.ref("umoci:1"))
    assert image_id == manifest["config"]["digest"]
    check_umoci_layers(tmp_path, layer_paths(client, image_id))


@pytest.mark.parametrize("tag", ["v2s2", "zstd"])
def test_umoci_image_converted_by_skopeo(client, corpus, tmp_path, tag):
    ref = corpus.ref(f"umoci:{tag}")
    image_id = client.pull(ref)
    info = json.loads(client.status(image_id, verbose=True).info["info"])
    media = [l["mediaType"] for l in info["layers"]]
    if tag == "v2s2":
        assert all(m == "application/vnd.docker.image.rootfs.diff.tar.gzip" for m in media), media
    else:
        assert all(m.endswith("+zstd") for m in media), media
    check_umoci_layers(tmp_path, layer_paths(client, image_id))


def test_docker_archive_round_trip_with_uncompressed_layers(client, corpus, tmp_path):
    # Uncompressed, whatever the media type says (skopeo 1.9 says gzip).
    assert all(magic != b"\x1f\x8b" for magic in corpus.roundtrip_raw)
    image_id = client.pull(corpus.ref("roundtrip:1"))
    assert image_id == corpus.roundtrip_manifest["config"]["digest"]
    check_umoci_layers(tmp_path, layer_paths(client, image_id))


def test_docker_archive_import(crispd, client, corpus, tmp_path):
    out = crispd.run("import", str(corpus.docker_archive)).stdout
    assert "docker.io/foreign/umoci:archive" in out
    check_umoci_layers(tmp_path, layer_paths(client, "docker.io/foreign/umoci:archive"))


@pytest.mark.parametrize("tag", ["gnu-abs", "gnu-dot"])
def test_gnu_tar_absolute_and_dot_names(client, corpus, tmp_path, tag):
    image = corpus.gnu_abs if tag == "gnu-abs" else corpus.gnu_dot
    assert client.pull(corpus.ref(f"{tag}:1")) == image.id
    (layer,) = layer_paths(client, image.id)
    check_busybox_tree(layer)
    assert run_in(tmp_path, [layer], "/bin/echo", "ran") == b"ran\n"


def test_python_tarfile_gnu_format_zstd_without_end_blocks(client, corpus, tmp_path):
    assert client.pull(corpus.ref("py-gnu:1")) == corpus.py_gnu.id
    (layer,) = layer_paths(client, corpus.py_gnu.id)
    assert (layer / "late" / "dir" / "file").read_bytes() == b"before its directory"
    assert mode(layer / "late") == 0o750 and mode(layer / "late" / "dir") == 0o755
    assert (layer / "etc" / "hello").read_bytes() == HELLO and mode(layer / "etc" / "hello") == 0o640
    assert (layer / "resolved").read_bytes() == b"resolved"
    assert not (layer / "dotdot").exists()
    assert (layer / corpus.long_name).read_bytes() == b"long"
    assert (layer / "d" / "keep").read_bytes() == b"keep" and mode(layer / "d") == 0o700
    assert (layer / "last").read_bytes() == b"x" * 700
    assert os.lstat(layer / "bin" / "sh").st_ino == os.lstat(layer / "bin" / "busybox").st_ino
    assert run_in(tmp_path, [layer], "/bin/sh", "-c", "echo ran") == b"ran\n"


def test_python_tarfile_pax_format_uncompressed_absolute_names(client, corpus, tmp_path):
    assert client.pull(corpus.ref("py-pax:1")) == corpus.py_pax.id
    (layer,) = layer_paths(client, corpus.py_pax.id)
    # The "./" entry (0700, uid 1234) did not change the layer root.
    assert mode(layer) == 0o755 and os.lstat(layer).st_uid == 0
    assert (layer / "etc" / "hello").read_bytes() == HELLO
    assert os.getxattr(layer / "etc" / "hello", "user.crisp") == b"foreign"
    assert os.lstat(layer / "etc" / "hello-link").st_ino == os.lstat(layer / "etc" / "hello").st_ino
    assert (layer / corpus.long_name).read_bytes() == b"long"
    assert os.lstat(layer / "bin" / "echo").st_ino == os.lstat(layer / "bin" / "busybox").st_ino
    assert run_in(tmp_path, [layer], "/bin/echo", "ran") == b"ran\n"
