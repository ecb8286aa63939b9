//! crispd against the `h2` crate's client: an HTTP/2 implementation we did
//! not write, driving the real crispd binary over its Unix socket.
//!
//! Each test starts its own crispd on a temporary directory; the guard
//! stops it (SIGTERM, then SIGKILL) and removes the directory even when an
//! assertion fails. Waits are bounded but nothing is timed.

use std::fs;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use crisp_proto::cri;
use h2::client::SendRequest;
use http::{HeaderMap, Request, StatusCode};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use prost::Message;
use tokio::net::UnixStream;

const WAIT: Duration = Duration::from_secs(30);

/// A running crispd, stopped and cleaned up on drop.
struct Daemon {
    child: Option<Child>,
    root: PathBuf,
    socket: PathBuf,
}

impl Daemon {
    fn start() -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let root = std::env::temp_dir().join(format!(
            "crispd-h2-client-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&root);
        fs::create_dir_all(&root).expect("temporary directory");
        let config = root.join("config.toml");
        fs::write(&config, "").expect("config file");
        let socket = root.join("run").join("crisp.sock");
        let stderr = fs::File::create(root.join("stderr")).expect("stderr file");
        let mut daemon = Daemon {
            child: None,
            socket: socket.clone(),
            root: root.clone(),
        };
        let child = Command::new(env!("CARGO_BIN_EXE_crispd"))
            .arg("--config")
            .arg(&config)
            .arg("--socket")
            .arg(&socket)
            .arg("--state-dir")
            .arg(root.join("state"))
            .arg("--runtime-dir")
            .arg(root.join("run"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("start crispd");
        daemon.child = Some(child);
        daemon.wait_ready();
        daemon
    }

    fn stderr(&self) -> String {
        fs::read_to_string(self.root.join("stderr")).unwrap_or_default()
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!(
                    "crispd exited with {status} before serving:\n{}",
                    self.stderr()
                );
            }
            if std::os::unix::net::UnixStream::connect(&self.socket).is_ok() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "crispd did not start serving:\n{}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
            let deadline = Instant::now() + WAIT;
            while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = fs::remove_dir_all(&self.root);
    }
}

async fn connect(daemon: &Daemon) -> SendRequest<Bytes> {
    let io = UnixStream::connect(&daemon.socket).await.expect("connect");
    let (client, connection) = h2::client::handshake(io).await.expect("handshake");
    tokio::spawn(async move {
        let _ = connection.await;
    });
    client
}

fn grpc_request(method: &str) -> Request<()> {
    Request::builder()
        .method("POST")
        .uri(format!(
            "http://localhost/runtime.v1.RuntimeService/{method}"
        ))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .expect("request")
}

/// The 5-byte gRPC prefix and the message.
fn framed(message: &impl Message) -> Bytes {
    let mut buf = BytesMut::new();
    buf.put_u8(0);
    buf.put_u32(message.encoded_len() as u32);
    message.encode(&mut buf).expect("encode");
    buf.freeze()
}

struct Response {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
    trailers: Option<HeaderMap>,
}

async fn unary(client: &SendRequest<Bytes>, method: &str, message: Bytes) -> Response {
    let mut client = client.clone().ready().await.expect("ready");
    let (response, mut send) = client
        .send_request(grpc_request(method), false)
        .expect("send_request");
    send.send_data(message, true).expect("send_data");
    let (parts, mut body) = response.await.expect("response").into_parts();
    let mut data = BytesMut::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.expect("data");
        let _ = body.flow_control().release_capacity(chunk.len());
        data.extend_from_slice(&chunk);
    }
    let trailers = body.trailers().await.expect("trailers");
    Response {
        status: parts.status,
        headers: parts.headers,
        body: data.freeze(),
        trailers,
    }
}

fn assert_version_ok(r: &Response) {
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.headers["content-type"], "application/grpc");
    let trailers = r.trailers.as_ref().expect("trailers");
    assert_eq!(trailers["grpc-status"], "0");
    assert_eq!(r.body[0], 0, "uncompressed");
    let len = u32::from_be_bytes(r.body[1..5].try_into().unwrap()) as usize;
    assert_eq!(r.body.len(), 5 + len);
    let v = cri::VersionResponse::decode(&r.body[5..]).expect("VersionResponse");
    assert_eq!(v.runtime_name, "crisp");
    assert_eq!(v.runtime_api_version, "v1");
}

#[tokio::test]
async fn unary_version() {
    let daemon = Daemon::start();
    let client = connect(&daemon).await;
    let request = framed(&cri::VersionRequest {
        version: "v1".into(),
    });
    let r = unary(&client, "Version", request.clone()).await;
    assert_version_ok(&r);
    // And again on the same connection.
    assert_version_ok(&unary(&client, "Version", request).await);
}

#[tokio::test]
async fn empty_server_stream_and_unimplemented_call_are_clean_trailers_only() {
    let daemon = Daemon::start();
    let client = connect(&daemon).await;
    // A server-streaming listing with nothing to list: no message (CRI
    // v1.36: batches hold at least one item), just the OK status.
    let r = unary(
        &client,
        "StreamPodSandboxMetrics",
        framed(&cri::StreamPodSandboxMetricsRequest::default()),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    // Trailers-Only: the status is in the one header block, which ends
    // the stream; no message, no separate trailers.
    assert_eq!(r.headers["grpc-status"], "0", "{:?}", r.headers);
    assert!(r.body.is_empty());
    assert!(r.trailers.is_none());
    // An rpc crisp does not implement: UNIMPLEMENTED naming it, the same way.
    let r = unary(
        &client,
        "CheckpointContainer",
        framed(&cri::CheckpointContainerRequest::default()),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.headers["grpc-status"], "12", "{:?}", r.headers);
    let message = r.headers["grpc-message"].to_str().expect("ascii");
    assert!(message.contains("CheckpointContainer"), "{message}");
    assert!(r.body.is_empty());
    assert!(r.trailers.is_none());
    assert_version_ok(&unary(&client, "Version", framed(&cri::VersionRequest::default())).await);
}

#[tokio::test]
async fn cancel_mid_message_then_call_on_the_same_connection() {
    let daemon = Daemon::start();
    let client = connect(&daemon).await;
    let whole = framed(&cri::VersionRequest {
        version: "a version string long enough to cut in two".into(),
    });
    let mut ready = client.clone().ready().await.expect("ready");
    let (response, mut send) = ready
        .send_request(grpc_request("Version"), false)
        .expect("send_request");
    send.send_data(whole.slice(..whole.len() / 2), false)
        .expect("half a message");
    // A whole call on another stream while that one waits for the rest of
    // its message. h2 writes queued frames in order, so when this answer
    // is back, crispd has read the half message too.
    assert_version_ok(&unary(&client, "Version", whole.clone()).await);
    send.send_reset(h2::Reason::CANCEL);
    // Our own reset ends the stream for us.
    let err = response
        .await
        .expect_err("the cancelled call has no answer");
    assert_eq!(err.reason(), Some(h2::Reason::CANCEL));
    // The connection is fine: a whole call on it succeeds.
    assert_version_ok(&unary(&client, "Version", whole).await);
    assert!(daemon.stderr().lines().all(|l| !l.contains("ERROR")));
}
