"""Helpers for the ImageService tests: the crispd process, OCI layouts
built here from scratch (tar + gzip/zstd + sha256 + JSON), a real
registry (Debian's docker-registry), and a small fake registry for the
failure cases a real one will not produce (corrupt blobs, stalled
downloads, hostile layers, bearer tokens).

Everything listens on 127.0.0.1. Waits are bounded only so that a broken
crispd fails a test instead of hanging it; nothing measures time.
"""

import base64
import gzip
import hashlib
import io
import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import tarfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import grpc

from common.wait import WAIT, wait_until

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
LAYER_TYPES = {
    "gzip": "application/vnd.oci.image.layer.v1.tar+gzip",
    "zstd": "application/vnd.oci.image.layer.v1.tar+zstd",
    "none": "application/vnd.oci.image.layer.v1.tar",
}


def host_arch():
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())


def other_arch():
    return "arm64" if host_arch() != "arm64" else "amd64"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sha256(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


# ---------------------------------------------------------------- crispd


class Crispd:
    """One crispd on private directories under `root`."""

    def __init__(self, binary, root, config=""):
        self.binary = Path(binary)
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.state_dir = self.root / "state"
        self.runtime_dir = self.root / "run"
        self.socket = self.runtime_dir / "crisp.sock"
        self.config_path = self.root / "config.toml"
        self.log_path = self.root / "crispd.log"
        self.config_path.write_text(config)
        self.proc = None

    @property
    def store(self):
        return self.state_dir / "images"

    def base_args(self):
        return [str(self.binary), "--config", str(self.config_path), "--state-dir", str(self.state_dir)]

    def start(self):
        log = open(self.log_path, "ab")
        try:
            self.proc = subprocess.Popen(
                self.base_args()
                + ["--socket", str(self.socket), "--runtime-dir", str(self.runtime_dir), "--log-level", "debug"],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )
        finally:
            log.close()

        def ready():
            if self.proc.poll() is not None:
                raise AssertionError(f"crispd exited with {self.proc.returncode}:\n{self.log()}")
            try:
                with socket.socket(socket.AF_UNIX) as s:
                    s.connect(str(self.socket))
                return True
            except OSError:
                return False

        wait_until("crispd's socket", ready)
        return self

    def kill(self):
        """SIGKILL: no shutdown, no cleanup."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(WAIT)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(WAIT)
            except subprocess.TimeoutExpired:
                self.kill()

    def log(self):
        try:
            return self.log_path.read_text(errors="replace")[-6000:]
        except OSError:
            return ""

    def run(self, *args, check=True):
        """`crispd ARGS` on this instance's config and state directory."""
        # --socket, --runtime-dir: `crispd pull` goes through this
        # instance (and reads its progress files), never the default's.
        proc = subprocess.run(
            self.base_args() + ["--socket", str(self.socket), "--runtime-dir", str(self.runtime_dir)] + list(args),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            timeout=WAIT * 2,
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"crispd {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
        return proc


# ---------------------------------------------------------------- CRI client


class Client:
    """The ImageService over crispd's socket."""

    def __init__(self, daemon, cri):
        self.daemon = daemon
        self.pb, pb_grpc = cri
        self.channel = grpc.insecure_channel(f"unix://{daemon.socket}")
        self.stub = pb_grpc.ImageServiceStub(self.channel)

    def pull(self, image, timeout=120, **auth):
        req = self.pb.PullImageRequest(image=self.pb.ImageSpec(image=image))
        if auth:
            req.auth.CopyFrom(self.pb.AuthConfig(**auth))
        return self.stub.PullImage(req, timeout=timeout).image_ref

    def pull_future(self, image, timeout=120):
        req = self.pb.PullImageRequest(image=self.pb.ImageSpec(image=image))
        return self.stub.PullImage.future(req, timeout=timeout)

    def list(self, image=""):
        req = self.pb.ListImagesRequest()
        if image:
            req.filter.image.image = image
        return list(self.stub.ListImages(req, timeout=60).images)

    def stream(self, image=""):
        req = self.pb.StreamImagesRequest()
        if image:
            req.filter.image.image = image
        return [i for chunk in self.stub.StreamImages(req, timeout=60) for i in chunk.images]

    def status(self, image, verbose=False):
        req = self.pb.ImageStatusRequest(image=self.pb.ImageSpec(image=image), verbose=verbose)
        return self.stub.ImageStatus(req, timeout=60)

    def remove(self, image):
        self.stub.RemoveImage(self.pb.RemoveImageRequest(image=self.pb.ImageSpec(image=image)), timeout=60)

    def fs_info(self):
        return self.stub.ImageFsInfo(self.pb.ImageFsInfoRequest(), timeout=60)

    def close(self):
        self.channel.close()



# ---------------------------------------------------------------- images


class Layer:
    """A layer tarball built entry by entry. Names are written as given,
    hostile ones included."""

    def __init__(self):
        self.buf = io.BytesIO()
        self.tar = tarfile.open(fileobj=self.buf, mode="w", format=tarfile.PAX_FORMAT)

    def _info(self, name, kind, mode, uid=0, gid=0):
        ti = tarfile.TarInfo(name)
        ti.type = kind
        ti.mode = mode
        ti.uid, ti.gid = uid, gid
        ti.mtime = 1700000000
        return ti

    def dir(self, name, mode=0o755):
        self.tar.addfile(self._info(name, tarfile.DIRTYPE, mode))
        return self

    def file(self, name, data=b"", mode=0o644, uid=0, gid=0):
        ti = self._info(name, tarfile.REGTYPE, mode, uid, gid)
        ti.size = len(data)
        self.tar.addfile(ti, io.BytesIO(data))
        return self

    def symlink(self, name, target):
        ti = self._info(name, tarfile.SYMTYPE, 0o777)
        ti.linkname = target
        self.tar.addfile(ti)
        return self

    def hardlink(self, name, target):
        ti = self._info(name, tarfile.LNKTYPE, 0o644)
        ti.linkname = target
        self.tar.addfile(ti)
        return self

    def whiteout(self, path):
        d, _, base = path.rpartition("/")
        return self.file(f"{d}/.wh.{base}" if d else f".wh.{base}")

    def opaque(self, dirpath):
        return self.file(f"{dirpath.rstrip('/')}/.wh..wh..opq")

    def bytes(self):
        self.tar.close()
        return self.buf.getvalue()


def busybox_layer():
    """A complete small image: Debian's static busybox and a few files."""
    busybox = Path("/bin/busybox").read_bytes()
    layer = Layer().dir("bin").dir("etc").dir("tmp", 0o1777)
    layer.file("bin/busybox", busybox, 0o755)
    for applet in ["sh", "ls", "cat", "echo", "id"]:
        layer.hardlink(f"bin/{applet}", "bin/busybox")
    layer.file("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\n")
    layer.file("etc/group", b"root:x:0:\napp:x:1000:\n")
    return layer.bytes()


def compress(data, how):
    if how == "gzip":
        return gzip.compress(data, mtime=0)
    if how == "zstd":
        return subprocess.run(["zstd", "-q", "-c", "-3"], input=data, stdout=subprocess.PIPE, check=True).stdout
    return data


# ---------------------------------------------------------------- images by other tools

FOREIGN_HELLO = b"hello from a foreign layer\n"
UMOCI_CREATED = "2024-01-01T00:00:00Z"
UMOCI_PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def run_tool(*args, **kw):
    return subprocess.run(args, check=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=WAIT * 2, **kw)


def busybox_rootfs(root):
    """A small busybox tree on disk, for the tools that archive a directory:
    busybox with hard-linked applets, a 0640 file, a sticky /tmp."""
    root = Path(root)
    for d in ["bin", "etc", "tmp", "usr/share"]:
        (root / d).mkdir(parents=True, exist_ok=True)
    # Last in the name order umoci writes: a layer that ends inside a
    # file's padding.
    (root / "usr" / "share" / "motd").write_bytes(b"odd-sized\n")
    shutil.copy(Path("/bin/busybox"), root / "bin" / "busybox")
    os.chmod(root / "bin" / "busybox", 0o755)
    for applet in ["sh", "echo", "cat"]:
        os.link(root / "bin" / "busybox", root / "bin" / applet)
    (root / "etc" / "hello").write_bytes(FOREIGN_HELLO)
    os.chmod(root / "etc" / "hello", 0o640)
    os.chmod(root / "tmp", 0o1777)
    os.chmod(root, 0o755)
    return root


def umoci_image(layout, work):
    """A two-layer image tagged "umoci" in a new OCI layout, built the way
    the critest images are built by hand: `umoci insert DIR /` on an empty
    image (a "/" entry, no end-of-archive blocks, no last padding), then
    `umoci config`."""
    base = busybox_rootfs(work / "umoci-base")
    extra = work / "umoci-extra"
    (extra / "usr" / "share").mkdir(parents=True)
    (extra / "usr" / "share" / "extra.txt").write_bytes(b"second layer\n")
    (extra / "etc").mkdir()
    (extra / "etc" / "hello").write_bytes(b"replaced by layer 2\n")
    created = ["--history.created", UMOCI_CREATED]
    run_tool("umoci", "init", "--layout", str(layout))
    run_tool("umoci", "new", "--image", f"{layout}:empty")
    run_tool("umoci", "insert", "--image", f"{layout}:empty", "--tag", "one", *created, str(base), "/")
    run_tool("umoci", "insert", "--image", f"{layout}:one", "--tag", "two", *created, str(extra), "/")
    run_tool("umoci", "config", "--image", f"{layout}:two", "--tag", "umoci", "--config.env", UMOCI_PATH_ENV,
             "--config.cmd", "sh", *created)


class Layout:
    """An OCI image layout directory written from scratch."""

    def __init__(self, path):
        self.path = Path(path)
        (self.path / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
        (self.path / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
        self.refs = []
        self.write_index()

    def blob(self, data, media_type):
        digest = sha256(data)
        (self.path / "blobs" / "sha256" / digest[7:]).write_bytes(data)
        return {"mediaType": media_type, "digest": digest, "size": len(data)}

    def blob_path(self, digest):
        return self.path / "blobs" / "sha256" / digest.split(":", 1)[1]

    def image(self, layers, user="", arch=None, compression="gzip", env=(), stop_signal=""):
        """layers: uncompressed tar bytes (or (bytes, compression)).
        Returns an Image with the manifest descriptor and its parts."""
        arch = arch or host_arch()
        descs, diff_ids = [], []
        for layer in layers:
            tar, how = layer if isinstance(layer, tuple) else (layer, compression)
            diff_ids.append(sha256(tar))
            descs.append(self.blob(compress(tar, how), LAYER_TYPES[how]))
        config = {
            "created": "2024-01-01T00:00:00Z",
            "architecture": arch,
            "os": "linux",
            "config": {"User": user, "Env": list(env) or ["PATH=/bin"], "Cmd": ["/bin/sh"]},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        }
        if stop_signal:
            config["config"]["StopSignal"] = stop_signal
        config_bytes = json.dumps(config, sort_keys=True).encode()
        config_desc = self.blob(config_bytes, OCI_CONFIG)
        manifest = {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config_desc, "layers": descs}
        manifest_desc = self.blob(json.dumps(manifest).encode(), OCI_MANIFEST)
        manifest_desc["platform"] = {"architecture": arch, "os": "linux"}
        return Image(manifest_desc, config_desc, descs, diff_ids, config)

    def index(self, images, extra=()):
        manifests = [dict(i.desc) for i in images] + list(extra)
        index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests}
        return self.blob(json.dumps(index).encode(), OCI_INDEX)

    def tag(self, desc, ref_name):
        d = {k: v for k, v in desc.items() if k != "platform"}
        d["annotations"] = {"org.opencontainers.image.ref.name": ref_name}
        self.refs = [r for r in self.refs if r["annotations"]["org.opencontainers.image.ref.name"] != ref_name]
        self.refs.append(d)
        self.write_index()

    def write_index(self):
        (self.path / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": self.refs}))

    def find(self, ref_name):
        for r in self.refs:
            if r["annotations"]["org.opencontainers.image.ref.name"] == ref_name:
                return r
        return None


class Image:
    def __init__(self, desc, config_desc, layers, diff_ids, config):
        self.desc = desc
        self.config_desc = config_desc
        self.layers = layers
        self.diff_ids = diff_ids
        self.config = config

    @property
    def id(self):
        return self.config_desc["digest"]

    @property
    def digest(self):
        return self.desc["digest"]

    @property
    def size(self):
        return self.config_desc["size"] + sum(l["size"] for l in self.layers)


def skopeo_copy(src, dst, *extra):
    proc = subprocess.run(
        ["skopeo", "copy", "--quiet", "--insecure-policy", *extra, src, dst],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        timeout=WAIT * 2,
    )
    if proc.returncode != 0:
        raise AssertionError(f"skopeo copy {src} {dst} failed:\n{proc.stderr}")


# ---------------------------------------------------------------- registries


class Registry:
    """Debian's docker-registry (distribution 2.8) on 127.0.0.1."""

    def __init__(self, root, htpasswd=None, tls=None):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        cfg = [
            "version: 0.1",
            "log: {level: error, accesslog: {disabled: true}}",
            "storage:",
            f"  filesystem: {{rootdirectory: {self.root / 'data'}}}",
            "  delete: {enabled: true}",
            "http:",
            f"  addr: {self.host}",
            "  secret: crisp-test-secret",
        ]
        if tls:
            cfg += [f"  tls: {{certificate: {tls[0]}, key: {tls[1]}}}"]
        if htpasswd:
            cfg += ["auth:", f"  htpasswd: {{realm: crisp-test, path: {htpasswd}}}"]
        (self.root / "config.yml").write_text("\n".join(cfg) + "\n")
        self.tls = bool(tls)
        self.log = open(self.root / "registry.log", "ab")
        self.proc = subprocess.Popen(
            ["docker-registry", "serve", str(self.root / "config.yml")],
            stdin=subprocess.DEVNULL,
            stdout=self.log,
            stderr=self.log,
        )

        def up():
            if self.proc.poll() is not None:
                raise AssertionError("docker-registry exited: " + (self.root / "registry.log").read_text())
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return True
            except OSError:
                return False

        wait_until("docker-registry", up)

    def push(self, layout, ref_name, repo, *extra):
        args = ["--dest-tls-verify=false", *extra]
        skopeo_copy(f"oci:{layout.path}:{ref_name}", f"docker://{self.host}/{repo}", *args)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(WAIT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.log.close()


class FakeRegistry:
    """A registry API over an OCI layout, with knobs for what a real one
    will not do:

    * `corrupt`: digests whose blob is served with one byte changed;
    * `extra`: digest → bytes served after the blob (a longer blob);
    * `hold`: digest → bytes sent before the response stalls until
      `release` is set (a download cut by a crash);
    * `token`: require a bearer token, issued at /token for `user:pass`;
    * `blob_gets`: how many times each blob was requested;
    * `cut`: digest → bytes sent before the first response of that blob
      closes its connection (a dropped connection);
    * `stall`: digest → bytes sent before the first response of that blob
      goes silent until the client closes the connection (`stall_closed`
      is then set);
    * `busy`: "manifest" or a digest → how many times to answer 503 with
      `Retry-After: 1` first (`busy_answers` counts them);
    * `ranges`: the `Range` headers of blob requests, in order (a Range
      `bytes=N-` is answered 206 with the rest).
    """

    def __init__(self, layout):
        self.layout = layout
        self.corrupt = set()
        self.extra = {}
        self.hold = {}
        self.release = threading.Event()
        self.held = threading.Event()
        self.token = None
        self.credentials = ("user", "pass")
        self.refresh_token = "refresh-" + os.urandom(8).hex()
        self.blob_gets = {}
        self.cut = {}
        self.stall = {}
        self.stall_closed = threading.Event()
        self.busy = {}
        self.busy_answers = 0
        self.ranges = []
        self.lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def send(self, code, body=b"", headers=()):
                self.send_response(code)
                for k, v in headers:
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):
                path = self.path.split("?", 1)[0]
                if path == "/token":
                    return self.token_endpoint()
                if fake.token and self.headers.get("Authorization") != f"Bearer {fake.token}":
                    realm = f"http://127.0.0.1:{fake.port}/token"
                    challenge = f'Bearer realm="{realm}",service="fake",scope="repository:x:pull"'
                    return self.send(401, b'{"errors":[{"code":"UNAUTHORIZED","message":"token required"}]}',
                                     [("WWW-Authenticate", challenge), ("Content-Type", "application/json")])
                if path == "/v2/":
                    return self.send(200, b"{}")
                m = re.match(r"^/v2/(.+)/(manifests|blobs)/([^/]+)$", path)
                if not m:
                    return self.send(404)
                _, kind, ref = m.groups()
                with fake.lock:
                    busy_key = "manifest" if kind == "manifests" else ref
                    busy = fake.busy.get(busy_key, 0)
                    if busy:
                        fake.busy[busy_key] = busy - 1
                        fake.busy_answers += 1
                if busy:
                    return self.send(503, b'{"errors":[{"code":"UNAVAILABLE","message":"try later"}]}',
                                     [("Retry-After", "1")])
                if kind == "manifests":
                    desc = fake.layout.find(ref) if not ref.startswith("sha256:") else {"digest": ref}
                    if desc is None or not fake.layout.blob_path(desc["digest"]).exists():
                        return self.send(404, b'{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}')
                    data = fake.layout.blob_path(desc["digest"]).read_bytes()
                    media = json.loads(data).get("mediaType", OCI_MANIFEST)
                    return self.send(200, data, [("Content-Type", media), ("Docker-Content-Digest", desc["digest"])])
                blob = fake.layout.blob_path(ref)
                if not blob.exists():
                    return self.send(404, b'{"errors":[{"code":"BLOB_UNKNOWN","message":"blob unknown"}]}')
                with fake.lock:
                    fake.blob_gets[ref] = fake.blob_gets.get(ref, 0) + 1
                data = bytearray(blob.read_bytes())
                if ref in fake.corrupt:
                    data[len(data) // 2] ^= 0xFF
                data += fake.extra.get(ref, b"")
                rng = self.headers.get("Range")
                with fake.lock:
                    if rng:
                        fake.ranges.append(rng)
                    cut = fake.cut.pop(ref, None)
                    stall = fake.stall.pop(ref, None)
                start = 0
                m = re.match(r"^bytes=(\d+)-$", rng or "")
                if m:
                    start = int(m.group(1))
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                    data = data[start:]
                else:
                    self.send_response(200)
                held = fake.hold.get(ref)
                self.send_header("Content-Length", str(len(data)))
                self.send_header("Content-Type", "application/octet-stream")
                self.end_headers()
                if cut is not None or stall is not None:
                    try:
                        self.wfile.write(bytes(data[: cut if cut is not None else stall]))
                        self.wfile.flush()
                        if stall is not None:
                            # Silent until the client gives up on us.
                            while self.connection.recv(1 << 16):
                                pass
                            fake.stall_closed.set()
                    except OSError:
                        fake.stall_closed.set()
                    self.close_connection = True
                    return
                try:
                    if held is not None and not fake.release.is_set():
                        self.wfile.write(bytes(data[:held]))
                        self.wfile.flush()
                        fake.held.set()
                        fake.release.wait(WAIT * 2)
                        data = data[held:]
                    self.wfile.write(bytes(data))
                except OSError:
                    pass

            def do_POST(self):
                # OAuth2 refresh-token grant (an identity token).
                if self.path.split("?", 1)[0] != "/token":
                    return self.send(404)
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
                form = dict(p.split("=", 1) for p in body.split("&") if "=" in p)
                if form.get("grant_type") != "refresh_token" or form.get("refresh_token") != fake.refresh_token:
                    return self.send(401, b'{"error":"invalid_grant"}')
                body = json.dumps({"access_token": fake.token}).encode()
                return self.send(200, body, [("Content-Type", "application/json")])

            def token_endpoint(self):
                want = "Basic " + base64.b64encode(":".join(fake.credentials).encode()).decode()
                if self.headers.get("Authorization") != want:
                    return self.send(401, b'{"errors":[{"code":"UNAUTHORIZED","message":"bad credentials"}]}')
                return self.send(200, json.dumps({"token": fake.token}).encode(), [("Content-Type", "application/json")])

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.host = f"127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self):
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


class HangingServer:
    """Accepts connections and never answers: a registry (or mirror)
    that hangs. Counts the connections it accepted and those the client
    closed."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.host = f"127.0.0.1:{self.port}"
        self.accepted = 0
        self.closed = 0
        self.lock = threading.Lock()
        self.conns = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with self.lock:
                self.accepted += 1
                self.conns.append(conn)
            threading.Thread(target=self._hold, args=(conn,), daemon=True).start()

    def _hold(self, conn):
        try:
            while conn.recv(1 << 16):
                pass
        except OSError:
            pass
        with self.lock:
            self.closed += 1

    def counts(self):
        with self.lock:
            return self.accepted, self.closed

    def stop(self):
        self.sock.close()
        with self.lock:
            for c in self.conns:
                try:
                    c.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                c.close()


# ---------------------------------------------------------------- TLS


def make_tls(dirpath):
    """A CA and a server certificate for 127.0.0.1 and localhost."""
    d = Path(dirpath)
    d.mkdir(parents=True, exist_ok=True)

    def run(*args):
        subprocess.run(args, cwd=d, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    run("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=crisp test CA",
        "-keyout", "ca.key", "-out", "ca.pem", "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    run("openssl", "req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
        "-keyout", "server.key", "-out", "server.csr")
    (d / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n")
    run("openssl", "x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
        "-days", "2", "-out", "server.pem", "-extfile", "ext.cnf")
    return d / "ca.pem", d / "server.pem", d / "server.key"


def tree_files(root):
    """Every path under root, relative, as strings."""
    root = Path(root)
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))
