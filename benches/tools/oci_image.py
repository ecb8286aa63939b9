#!/usr/bin/env python3
"""Write a one-layer OCI image archive (an oci-archive, which scripts/bench
pushes to its local docker-registry with skopeo) whose root filesystem is
Debian's static busybox, plus the bench's `stamp` binary as /bin/stamp.

    oci_image.py OUT.tar NAME STAMP_BINARY

NAME is the full reference (e.g. 127.0.0.1:5000/bench/busybox:1). The
default command sleeps, so the same image can be containerd's sandbox
(pause) image.
"""
import hashlib
import io
import json
import sys
import tarfile
import time

APPLETS = ["sh", "sleep", "true", "ls", "cat"]


def layer_bytes(stamp_path):
    busybox = open("/bin/busybox", "rb").read()
    stamp = open(stamp_path, "rb").read()
    buf = io.BytesIO()
    mtime = int(time.time())
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        for d in ["bin", "tmp", "proc", "sys", "dev", "etc"]:
            ti = tarfile.TarInfo(d)
            ti.type, ti.mode, ti.mtime = tarfile.DIRTYPE, 0o755, mtime
            t.addfile(ti)
        ti = tarfile.TarInfo("bin/busybox")
        ti.size, ti.mode, ti.mtime = len(busybox), 0o755, mtime
        t.addfile(ti, io.BytesIO(busybox))
        ti = tarfile.TarInfo("bin/stamp")
        ti.size, ti.mode, ti.mtime = len(stamp), 0o755, mtime
        t.addfile(ti, io.BytesIO(stamp))
        for a in APPLETS:
            ti = tarfile.TarInfo(f"bin/{a}")
            ti.type, ti.linkname, ti.mtime = tarfile.LNKTYPE, "bin/busybox", mtime
            ti.mode = 0o755
            t.addfile(ti)
    return buf.getvalue()


def main():
    out, name, stamp = sys.argv[1], sys.argv[2], sys.argv[3]
    blobs = {}

    def blob(data):
        d = hashlib.sha256(data).hexdigest()
        blobs[d] = data
        return "sha256:" + d

    layer = layer_bytes(stamp)
    layer_digest = blob(layer)
    config = json.dumps({
        "architecture": "amd64",
        "os": "linux",
        "config": {"Cmd": ["/bin/sleep", "2147483647"], "Env": ["PATH=/bin"]},
        "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
    }).encode()
    config_digest = blob(config)
    manifest = json.dumps({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": config_digest, "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": layer_digest, "size": len(layer)}],
    }).encode()
    manifest_digest = blob(manifest)
    index = json.dumps({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest_digest, "size": len(manifest),
            "annotations": {"io.containerd.image.name": name,
                            "org.opencontainers.image.ref.name": name.rsplit(":", 1)[1]},
        }],
    }).encode()
    with tarfile.open(out, "w") as t:
        def add(path, data):
            ti = tarfile.TarInfo(path)
            ti.size = len(data)
            t.addfile(ti, io.BytesIO(data))
        add("oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
        add("index.json", index)
        for d, data in blobs.items():
            add(f"blobs/sha256/{d}", data)


if __name__ == "__main__":
    main()
