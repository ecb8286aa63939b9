"""TLS and per-call credentials on the TCP listener, against grpcio's own
TLS (BoringSSL) and per-RPC credentials (`grpc.metadata_call_credentials`,
as the seed's interceptor article uses them), with certificates made here
by the `openssl` CLI: a CA, a server certificate, a client certificate
(CN=deployer), and a second CA with a client certificate of the same name.
"""

import signal
import socket
import ssl
import subprocess
import time

import grpc
import pytest

import harness

TOKEN_OPS = "ops-7f3a9c1e5b2d4086"  # read-only
TOKEN_ADMIN = "admin-0c4e8b2a9f6d1357"  # everything


def openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_ca(d, name):
    openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
        "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.pem", "-days", "2",
        "-subj", f"/CN={name}",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        cwd=d,
    )


def make_leaf(d, name, ca, cn, usage, san=None):
    openssl(
        "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/O=crisp tests/CN={cn}",
        cwd=d,
    )
    ext = f"basicConstraints=CA:FALSE\nextendedKeyUsage={usage}\n"
    if san:
        ext += f"subjectAltName={san}\n"
    (d / f"{name}.ext").write_text(ext)
    openssl(
        "x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key",
        "-CAcreateserial", "-out", f"{name}.pem", "-days", "2", "-extfile", f"{name}.ext",
        cwd=d,
    )


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    d = tmp_path_factory.mktemp("pki")
    make_ca(d, "ca")
    make_ca(d, "other-ca")
    san = "DNS:localhost,IP:127.0.0.1"
    make_leaf(d, "server", "ca", "localhost", "serverAuth", san)
    make_leaf(d, "server2", "ca", "localhost", "serverAuth", san)
    make_leaf(d, "client", "ca", "deployer", "clientAuth")
    make_leaf(d, "stranger", "other-ca", "deployer", "clientAuth")
    return d


def hash_token(crispd_bin, token):
    out = subprocess.run(
        [str(crispd_bin), "hash-token"], input=token + "\n", capture_output=True, text=True,
        check=True,
    ).stdout
    assert out.startswith('token_sha256 = "$sha256$'), out
    assert token not in out
    return out.strip()


def tls_config(pki, crispd_bin, client_ca=None, client_auth="required", extra=""):
    c = (
        "[tls]\n"
        f'cert_file = "{pki}/server.pem"\n'
        f'key_file = "{pki}/server.key"\n'
        "handshake_timeout_secs = 1\n"
    )
    if client_ca:
        c += f'client_ca_file = "{pki}/{client_ca}"\nclient_auth = "{client_auth}"\n'
    c += "[access]\ntcp_methods = []\n" + extra
    c += (
        '[[access.identities]]\nname = "ops"\nmethods = ["read-only"]\n'
        + hash_token(crispd_bin, TOKEN_OPS) + "\n"
        '[[access.identities]]\nname = "admin"\nmethods = ["*"]\n'
        + hash_token(crispd_bin, TOKEN_ADMIN) + "\n"
        '[[access.identities]]\nname = "deployer"\nmethods = ["read-only"]\n'
        'cert_subject = "CN=deployer"\n'
    )
    return c


class Bearer(grpc.AuthMetadataPlugin):
    """The seed's per-RPC credentials: a token in every call's metadata."""

    def __init__(self, metadata):
        self.metadata = metadata

    def __call__(self, context, callback):
        callback(self.metadata, None)


def tls_channel(d, pki, metadata=None, client=None):
    creds = grpc.ssl_channel_credentials(
        root_certificates=(pki / "ca.pem").read_bytes(),
        private_key=(pki / f"{client}.key").read_bytes() if client else None,
        certificate_chain=(pki / f"{client}.pem").read_bytes() if client else None,
    )
    if metadata is not None:
        creds = grpc.composite_channel_credentials(
            creds, grpc.metadata_call_credentials(Bearer(metadata))
        )
    return grpc.secure_channel(
        f"127.0.0.1:{d.tcp_port}",
        creds,
        options=[
            ("grpc.ssl_target_name_override", "localhost"),
            ("grpc.use_local_subchannel_pool", 1),
        ],
    )


def call(cri, ch, method="Version", metadata=None):
    """(code name, details) of one call on the channel."""
    pb2, pb2_grpc = cri
    stub = pb2_grpc.RuntimeServiceStub(ch)
    requests = {
        "Version": pb2.VersionRequest(),
        "Status": pb2.StatusRequest(),
        "RunPodSandbox": pb2.RunPodSandboxRequest(),
    }
    try:
        getattr(stub, method)(requests[method], timeout=harness.IO_TIMEOUT, metadata=metadata)
        return "OK", ""
    except grpc.RpcError as e:
        return e.code().name, e.details()


def test_tokens_over_tls(make_crispd, cri, pki, crispd_bin):
    d = make_crispd(config=tls_config(pki, crispd_bin), tcp=True)
    with tls_channel(d, pki, [("authorization", f"Bearer {TOKEN_OPS}")]) as ch:
        assert call(cri, ch, "Version") == ("OK", "")
        assert call(cri, ch, "Status") == ("OK", "")
        code, details = call(cri, ch, "RunPodSandbox")
        assert code == "PERMISSION_DENIED", details
        assert "/runtime.v1.RuntimeService/RunPodSandbox" in details
        assert "identity=ops" in details
    with tls_channel(d, pki, [("authorization", "Bearer not-the-token")]) as ch:
        code, details = call(cri, ch, "Version")
        assert code == "UNAUTHENTICATED", details
    # The seed's other form: a username/password pair.
    with tls_channel(d, pki, [("username", "admin"), ("password", TOKEN_ADMIN)]) as ch:
        assert call(cri, ch, "Version") == ("OK", "")
    with tls_channel(d, pki, [("username", "admin"), ("password", TOKEN_OPS)]) as ch:
        assert call(cri, ch, "Version")[0] == "UNAUTHENTICATED"
    # No credentials, and tcp_methods = []: even Version needs them.
    with tls_channel(d, pki) as ch:
        code, details = call(cri, ch, "Version")
        assert code == "UNAUTHENTICATED", details
        assert "needs credentials" in details
    # The admin token may run a pod: the call gets past the access check
    # (to the request's own checks).
    with tls_channel(d, pki, [("authorization", f"Bearer {TOKEN_ADMIN}")]) as ch:
        code, _ = call(cri, ch, "RunPodSandbox")
        assert code not in ("UNAUTHENTICATED", "PERMISSION_DENIED")
    log = d.stderr()
    assert "unauthenticated" in log and "permission denied" in log
    for secret in (TOKEN_OPS, TOKEN_ADMIN, "not-the-token"):
        assert secret not in log


def test_mtls_required(make_crispd, cri, pki, crispd_bin):
    d = make_crispd(config=tls_config(pki, crispd_bin, client_ca="ca.pem"), tcp=True)
    # The certificate's CN is the identity "deployer" (read-only).
    with tls_channel(d, pki, client="client") as ch:
        assert call(cri, ch, "Version") == ("OK", "")
        code, details = call(cri, ch, "RunPodSandbox")
        assert code == "PERMISSION_DENIED" and "identity=deployer" in details, details
    # A token on the call wins over the certificate.
    with tls_channel(d, pki, [("authorization", f"Bearer {TOKEN_ADMIN}")], client="client") as ch:
        assert call(cri, ch, "RunPodSandbox")[0] not in ("UNAUTHENTICATED", "PERMISSION_DENIED")
    # No certificate: the handshake fails, whatever the token.
    with tls_channel(d, pki, [("authorization", f"Bearer {TOKEN_ADMIN}")]) as ch:
        assert call(cri, ch, "Version")[0] == "UNAVAILABLE"
    # A certificate of the same name from another CA.
    with tls_channel(d, pki, client="stranger") as ch:
        assert call(cri, ch, "Version")[0] == "UNAVAILABLE"
    assert "TLS failed" in d.stderr()
    with tls_channel(d, pki, client="client") as ch:
        assert call(cri, ch, "Version") == ("OK", "")


def test_mtls_optional(make_crispd, cri, pki, crispd_bin):
    d = make_crispd(
        config=tls_config(pki, crispd_bin, client_ca="ca.pem", client_auth="optional"), tcp=True
    )
    with tls_channel(d, pki) as ch:
        assert call(cri, ch, "Version")[0] == "UNAUTHENTICATED"
    with tls_channel(d, pki, [("authorization", f"Bearer {TOKEN_OPS}")]) as ch:
        assert call(cri, ch, "Version") == ("OK", "")
    with tls_channel(d, pki, client="client") as ch:
        assert call(cri, ch, "Version") == ("OK", "")
    # Optional is not anything: a certificate must still be ours.
    with tls_channel(d, pki, client="stranger") as ch:
        assert call(cri, ch, "Version")[0] == "UNAVAILABLE"


def closed_by_server(sock):
    """Read until the server closes; what it sent. Fails on a timeout."""
    sock.settimeout(harness.IO_TIMEOUT)
    got = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return got
        if not chunk:
            return got
        got += chunk


def client_hello():
    """The first flight of a real TLS client (Python's ssl), unsent."""
    ctx = ssl.create_default_context()
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(incoming, outgoing, server_hostname="localhost")
    with pytest.raises(ssl.SSLWantReadError):
        obj.do_handshake()
    return outgoing.read()


def test_hostile_handshakes(make_crispd, cri, pki, crispd_bin):
    d = make_crispd(config=tls_config(pki, crispd_bin), tcp=True)
    addr = ("127.0.0.1", d.tcp_port)
    # Plaintext HTTP/2 instead of a ClientHello: an alert, then closed.
    with socket.create_connection(addr) as s:
        s.sendall(harness.PREFACE + harness.settings_frame())
        got = closed_by_server(s)
        assert got[:1] in (b"", b"\x15"), got  # nothing or a TLS alert record
    # Random bytes.
    with socket.create_connection(addr) as s:
        s.sendall(bytes(range(256)) * 4)
        closed_by_server(s)
    # A ClientHello claiming 16 MiB: refused at its header, not buffered.
    with socket.create_connection(addr) as s:
        body = b"\x01\xff\xff\xff" + b"\x00" * 1000
        s.sendall(b"\x16\x03\x01" + len(body).to_bytes(2, "big") + body)
        closed_by_server(s)
    # Handshakes that never finish (half a ClientHello; nothing at all):
    # closed after handshake_timeout_secs, while others are served.
    stalled = [socket.create_connection(addr), socket.create_connection(addr)]
    stalled[0].sendall(client_hello()[:20])
    with tls_channel(d, pki, [("authorization", f"Bearer {TOKEN_OPS}")]) as ch:
        assert call(cri, ch, "Version") == ("OK", "")
    for s in stalled:
        assert closed_by_server(s) == b""
        s.close()
    assert "TLS handshake timed out" in d.stderr()
    with tls_channel(d, pki, [("authorization", f"Bearer {TOKEN_OPS}")]) as ch:
        assert call(cri, ch, "Version") == ("OK", "")
        # SIGTERM with a TLS connection up: GOAWAY and close_notify, exit 0.
        assert d.stop() == 0, d.stderr()


def test_stalled_handshakes_hold_bounded_memory(make_crispd, cri, pki, crispd_bin):
    """200 clients each send most of a 64 000-byte ClientHello and stall:
    rustls holds at most one handshake message (64 KiB) per connection,
    and crispd goes on serving."""
    config = tls_config(pki, crispd_bin).replace(
        "handshake_timeout_secs = 1", "handshake_timeout_secs = 120"
    )
    d = make_crispd(config=config, tcp=True)
    with tls_channel(d, pki, [("authorization", f"Bearer {TOKEN_OPS}")]) as ch:
        assert call(cri, ch, "Version") == ("OK", "")
    before = d.rss_kib()
    body = b"\x01" + (64000).to_bytes(3, "big") + b"\x03\x03" + b"\x00" * 59994
    records = b"".join(
        b"\x16\x03\x01" + len(chunk).to_bytes(2, "big") + chunk
        for chunk in (body[i : i + 16000] for i in range(0, len(body), 16000))
    )
    stalled = []
    try:
        for _ in range(200):
            s = socket.create_connection(("127.0.0.1", d.tcp_port))
            s.sendall(records)
            stalled.append(s)
        with tls_channel(d, pki, [("authorization", f"Bearer {TOKEN_OPS}")]) as ch:
            assert call(cri, ch, "Version") == ("OK", "")
        grown = d.rss_kib() - before
        print(f"RSS grew {grown} KiB for 200 stalled handshakes")
        assert grown < 200 * 256, grown
    finally:
        for s in stalled:
            s.close()


def test_credentials_on_plaintext_are_refused(make_crispd, cri, crispd_bin):
    ops = hash_token(crispd_bin, TOKEN_OPS)
    identities = f'[[access.identities]]\nname = "ops"\nmethods = ["read-only"]\n{ops}\n'
    d = make_crispd(config=identities, tcp=True)
    with grpc.insecure_channel(f"127.0.0.1:{d.tcp_port}") as ch:
        # Without credentials, TCP callers get tcp_methods (read-only).
        assert call(cri, ch, "Version") == ("OK", "")
        code, details = call(cri, ch, "Version", [("authorization", f"Bearer {TOKEN_OPS}")])
        assert code == "UNAUTHENTICATED", details
        assert "credentials on a plaintext connection" in details
        code, details = call(cri, ch, "Version", [("username", "ops"), ("password", TOKEN_OPS)])
        assert code == "UNAUTHENTICATED", details
    assert TOKEN_OPS not in d.stderr()
    d2 = make_crispd(
        config="[access]\nallow_plaintext_credentials_on_loopback = true\n" + identities, tcp=True
    )
    with grpc.insecure_channel(f"127.0.0.1:{d2.tcp_port}") as ch:
        metadata = [("authorization", f"Bearer {TOKEN_OPS}")]
        assert call(cri, ch, "Version", metadata) == ("OK", "")
        code, details = call(cri, ch, "RunPodSandbox", metadata)
        assert code == "PERMISSION_DENIED" and "identity=ops" in details, details


def served_certificate(d, pki):
    """The DER certificate a new TLS connection is served."""
    ctx = ssl.create_default_context(cafile=str(pki / "ca.pem"))
    ctx.set_alpn_protocols(["h2"])
    with socket.create_connection(("127.0.0.1", d.tcp_port)) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost") as s:
            assert s.selected_alpn_protocol() == "h2"
            return s.getpeercert(binary_form=True)


def der(path):
    return ssl.PEM_cert_to_DER_cert(path.read_text())


def sighup_until(d, line):
    """Sends crispd SIGHUP and waits until its log says `line`."""
    d.signal(signal.SIGHUP)
    deadline = time.monotonic() + harness.IO_TIMEOUT
    while line not in d.stderr():
        assert time.monotonic() < deadline, d.stderr()
        time.sleep(0.05)


def test_sighup_reloads_certificates(make_crispd, cri, pki, crispd_bin, tmp_path):
    for name in ("server.pem", "server.key"):
        (tmp_path / name).write_bytes((pki / name).read_bytes())
    config = tls_config(pki, crispd_bin).replace(f"{pki}/server", f"{tmp_path}/server")
    d = make_crispd(config=config, tcp=True)
    assert served_certificate(d, pki) == der(pki / "server.pem")
    metadata = [("authorization", f"Bearer {TOKEN_OPS}")]
    with tls_channel(d, pki, metadata) as before:
        assert call(cri, before, "Version") == ("OK", "")
        for name in ("pem", "key"):
            (tmp_path / f"server.{name}").write_bytes((pki / f"server2.{name}").read_bytes())
        sighup_until(d, "TLS certificates reloaded")
        assert served_certificate(d, pki) == der(pki / "server2.pem")
        # The connection made before keeps serving.
        assert call(cri, before, "Version") == ("OK", "")
    # A reload that fails keeps the certificates in use.
    (tmp_path / "server.key").write_text("not a key\n")
    sighup_until(d, "TLS reload failed")
    assert served_certificate(d, pki) == der(pki / "server2.pem")
    assert d.proc.poll() is None
