"""Fixtures for the ImageService tests: test images built here, a real
registry (plain, basic-auth and TLS), a fake registry for failures, and a
fresh crispd per test talking to them, driven through its socket with
grpcio stubs generated from proto/ at test time."""

import subprocess
import tempfile
from pathlib import Path

import pytest

import imagetest as it
from common.scratch import shared_tmpdir


@pytest.fixture(scope="session")
def work():
    yield from shared_tmpdir("crisp-images-")


class Images:
    """The test images, in one OCI layout."""


@pytest.fixture(scope="session")
def images(work):
    lay = it.Layout(work / "layout")
    imgs = Images()
    imgs.layout = lay
    imgs.busybox = lay.image([it.busybox_layer()])
    lay.tag(imgs.busybox.desc, "busybox")

    base = it.busybox_layer()
    extra = (
        it.Layer()
        .dir("etc")
        .file("etc/hello", b"hello from layer 1\n")
        .dir("data")
        .dir("data/dir")
        .file("data/dir/a", b"a")
        .file("data/dir/b", b"b")
        .file("data/keep", b"keep")
        .bytes()
    )
    top = (
        it.Layer()
        .dir("etc")
        .whiteout("etc/hello")
        .dir("data")
        .dir("data/dir")
        .opaque("data/dir")
        .file("data/dir/c", b"c")
        .file("data/suid", b"#!/bin/sh\n", mode=0o4755)
        .hardlink("data/suid-link", "data/suid")
        .bytes()
    )
    zstd_layer = it.Layer().dir("z").file("z/zstd.txt", b"zstd layer\n" * 100).bytes()
    imgs.layered = lay.image([base, extra, top, (zstd_layer, "zstd")], user="1000:1000")
    lay.tag(imgs.layered.desc, "layered")

    imgs.user = lay.image([it.Layer().file("u", b"u").bytes()], user="app:app")
    lay.tag(imgs.user.desc, "user")

    imgs.other_arch = lay.image([it.Layer().file("arch", it.other_arch().encode()).bytes()], arch=it.other_arch())
    attestation = lay.image([it.Layer().file("att", b"{}").bytes()], arch="unknown")
    att_desc = dict(attestation.desc)
    att_desc["platform"] = {"architecture": "unknown", "os": "unknown"}
    imgs.index = lay.index([imgs.other_arch, imgs.busybox], extra=[att_desc])
    lay.tag(imgs.index, "multi")
    return imgs


@pytest.fixture(scope="session")
def registry(work, images):
    reg = it.Registry(work / "registry")
    lay = images.layout
    reg.push(lay, "busybox", "test/busybox:1.0")
    reg.push(lay, "busybox", "test/busybox:alias")
    reg.push(lay, "busybox", "e2e-test-images/busybox:1.29-2")
    reg.push(lay, "layered", "test/layers:1")
    reg.push(lay, "user", "test/user:1")
    reg.push(lay, "multi", "test/multi:1", "--all")
    # The same images as Docker schema 2 (manifest list and manifests).
    reg.push(lay, "busybox", "test/busybox:v2s2", "--format", "v2s2")
    reg.push(lay, "multi", "test/multi:v2s2", "--all", "--format", "v2s2")
    yield reg
    reg.stop()


@pytest.fixture(scope="session")
def auth_registry(work, images):
    htpasswd = work / "htpasswd"
    out = subprocess.run(["htpasswd", "-Bbn", "user", "secret"], stdout=subprocess.PIPE, check=True, text=True)
    htpasswd.write_text(out.stdout)
    reg = it.Registry(work / "auth-registry", htpasswd=htpasswd)
    reg.push(images.layout, "busybox", "private/busybox:1.0", "--dest-creds", "user:secret")
    yield reg
    reg.stop()


@pytest.fixture(scope="session")
def tls_registry(work, images):
    ca, cert, key = it.make_tls(work / "tls")
    reg = it.Registry(work / "tls-registry", tls=(cert, key))
    reg.ca = ca
    reg.push(images.layout, "busybox", "secure/busybox:1.0")
    yield reg
    reg.stop()


@pytest.fixture
def fake(work, images):
    reg = it.FakeRegistry(images.layout)
    yield reg
    reg.stop()


@pytest.fixture
def make_crispd(crispd_bin, cri, registry, tls_registry, tmp_path):
    """Factory for crispd instances (started) on temporary directories,
    configured with a mirror for registry.k8s.io and the TLS registry's
    CA. Each comes with a Client as `.client`."""
    made = []

    def make(root=None, start=True):
        root = Path(root or tempfile.mkdtemp(prefix="crispd-img-", dir=tmp_path))
        config = f"""
workers = 4
[images]
read_timeout_secs = 20
[[images.registries]]
host = "registry.k8s.io"
mirrors = ["http://{registry.host}"]
[[images.registries]]
host = "{tls_registry.host}"
plain_http = false
ca_files = ["{tls_registry.ca}"]
[[images.registries]]
host = "localhost:{tls_registry.port}"
plain_http = false
"""
        d = it.Crispd(crispd_bin, root, config)
        made.append(d)
        if start:
            d.start()
            d.client = it.Client(d, cri)
        return d

    yield make
    for d in reversed(made):
        if getattr(d, "client", None):
            d.client.close()
        d.stop()
