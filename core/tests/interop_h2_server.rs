//! Interop: the core's gRPC [`Server`] against the independent `h2` crate
//! as the client, over a real Unix socket pair.
//!
//! The requests are built by hand (POST, `application/grpc`, `te:
//! trailers`, 5-byte prefix + protobuf) so nothing of the core's own client
//! or codec is on the other side of the wire.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use common::{checksum, drive, frame, pattern, read_body, send_flow_controlled, within, Exit};
use crisp_core::grpc::server::{self, CallId, Server, ServerConfig};
use crisp_core::grpc::{Code, Status};
use crisp_proto::cri;
use crisp_proto::methods::{self, CallKind, Method, MethodDesc, Service};
use h2::client::SendRequest;
use prost::Message as _;
use tokio::net::UnixStream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

// ---- A test service: CRI Version and GetContainerEvents, plus methods of
// ---- the kinds CRI lacks, through a custom router ----

const fn test_method(name: &'static str, path: &'static str, kind: CallKind) -> MethodDesc {
    MethodDesc {
        // Any variant will do: the test service dispatches on `path`.
        method: Method::Version,
        service: Service::Runtime,
        name,
        path,
        kind,
        request_type: "interop.Bytes",
        response_type: "interop.Bytes",
        read_only: true,
    }
}

/// Client-streaming: 8-byte little-endian numbers in, their sum and count out.
static SUM: MethodDesc = test_method("Sum", "/interop.Test/Sum", CallKind::ClientStreaming);
/// Bidi: each message echoed as it arrives; on half-close, one more
/// message with the count and checksum of everything received.
static ECHO: MethodDesc = test_method("Echo", "/interop.Test/Echo", CallKind::BidiStreaming);
/// Unary: any bytes in; their length and checksum out.
static LEN: MethodDesc = test_method("Len", "/interop.Test/Len", CallKind::Unary);

fn router(path: &[u8]) -> Option<&'static MethodDesc> {
    match path {
        b"/interop.Test/Sum" => Some(&SUM),
        b"/interop.Test/Echo" => Some(&ECHO),
        b"/interop.Test/Len" => Some(&LEN),
        _ => methods::lookup(path),
    }
}

fn config() -> ServerConfig {
    ServerConfig {
        router,
        ..ServerConfig::default()
    }
}

/// Per-call state of the streaming methods.
enum CallState {
    Sum { sum: u64, count: u64 },
    Echo { count: u64, checksum: u64 },
}

/// The server application. Knobs select per-test behaviour.
#[derive(Default)]
struct Svc {
    /// Hold Version answers until this many Version calls are waiting.
    hold_version_until: usize,
    held: Vec<(CallId, String)>,
    /// Send GOAWAY just before answering the held calls.
    go_away_when_released: bool,
    /// Most calls seen open at once on the connection.
    max_open: usize,
    /// Never answer Version (deadline test).
    ignore_version: bool,
    /// GetContainerEvents sends this many events then finishes; `None`
    /// sends one and leaves the call open (cancel test).
    events: Option<usize>,
    calls: HashMap<CallId, CallState>,
    /// Every `Cancelled` event is reported here.
    cancelled: Option<mpsc::UnboundedSender<(CallId, Code)>>,
    errors: Vec<String>,
}

fn version_response(version: String) -> cri::VersionResponse {
    cri::VersionResponse {
        version,
        runtime_name: "crisp".into(),
        runtime_version: "0.1.0".into(),
        runtime_api_version: "v1".into(),
    }
}

impl common::App<Server> for Svc {
    fn on_event(&mut self, s: &mut Server, ev: server::Event, _now: Instant) {
        self.max_open = self.max_open.max(s.connection().open_streams());
        match ev {
            server::Event::Request { call, message } => match call.method.path {
                VERSION => {
                    let req = cri::VersionRequest::decode(message).expect("VersionRequest");
                    if self.ignore_version {
                        return;
                    }
                    if self.hold_version_until == 0 {
                        s.respond(call.id, &version_response(req.version)).unwrap();
                        return;
                    }
                    self.held.push((call.id, req.version));
                    if self.held.len() >= self.hold_version_until {
                        if self.go_away_when_released {
                            s.go_away();
                        }
                        for (id, v) in self.held.drain(..) {
                            s.respond(id, &version_response(v)).unwrap();
                        }
                    }
                }
                "/runtime.v1.RuntimeService/GetContainerEvents" => {
                    cri::GetEventsRequest::decode(message).expect("GetEventsRequest");
                    let n = self.events.unwrap_or(1);
                    for i in 0..n {
                        let ev = cri::ContainerEventResponse {
                            container_id: format!("c{i}"),
                            created_at: i as i64,
                            ..Default::default()
                        };
                        s.send_message(call.id, &ev).unwrap();
                    }
                    if self.events.is_some() {
                        s.finish(call.id, &Status::ok()).unwrap();
                    }
                }
                "/interop.Test/Len" => {
                    let mut out = Vec::with_capacity(16);
                    out.extend_from_slice(&(message.len() as u64).to_le_bytes());
                    out.extend_from_slice(&checksum(0, &message).to_le_bytes());
                    s.send_encoded(call.id, &out).unwrap();
                    s.finish(call.id, &Status::ok()).unwrap();
                }
                other => self.errors.push(format!("unexpected request to {other}")),
            },
            server::Event::StreamStarted { call } => {
                let state = match call.method.name {
                    "Sum" => CallState::Sum { sum: 0, count: 0 },
                    "Echo" => CallState::Echo {
                        count: 0,
                        checksum: 0,
                    },
                    other => {
                        self.errors.push(format!("unexpected stream {other}"));
                        return;
                    }
                };
                self.calls.insert(call.id, state);
            }
            server::Event::Message { id, message } => match self.calls.get_mut(&id) {
                Some(CallState::Sum { sum, count }) => {
                    *sum += u64::from_le_bytes(message[..].try_into().expect("8 bytes"));
                    *count += 1;
                }
                Some(CallState::Echo { count, checksum: c }) => {
                    *count += 1;
                    *c = checksum(*c, &message);
                    s.send_encoded(id, &message).unwrap();
                }
                None => self.errors.push(format!("message on unknown call {id}")),
            },
            server::Event::HalfClose { id } => match self.calls.remove(&id) {
                Some(CallState::Sum { sum, count }) => {
                    let mut out = sum.to_le_bytes().to_vec();
                    out.extend_from_slice(&count.to_le_bytes());
                    s.send_encoded(id, &out).unwrap();
                    s.finish(id, &Status::ok()).unwrap();
                }
                Some(CallState::Echo { count, checksum: c }) => {
                    let mut out = count.to_le_bytes().to_vec();
                    out.extend_from_slice(&c.to_le_bytes());
                    s.send_encoded(id, &out).unwrap();
                    s.finish(id, &Status::ok()).unwrap();
                }
                None => self.errors.push(format!("half-close on unknown call {id}")),
            },
            server::Event::Cancelled { id, code } => {
                self.calls.remove(&id);
                if let Some(tx) = &self.cancelled {
                    let _ = tx.send((id, code));
                }
            }
            server::Event::GoAway => {}
            server::Event::ConnectionError(e) => self.errors.push(format!("connection error {e}")),
        }
    }
}

// ---- The h2 client side ----

type ServerTask = JoinHandle<(Server, Svc, Exit)>;

/// A core server on one end of a socket pair, an h2 client on the other.
async fn start(config: ServerConfig, svc: Svc) -> (SendRequest<Bytes>, ServerTask) {
    start_with(config, svc, h2::client::Builder::new()).await
}

async fn start_with(
    config: ServerConfig,
    svc: Svc,
    builder: h2::client::Builder,
) -> (SendRequest<Bytes>, ServerTask) {
    let (a, b) = UnixStream::pair().unwrap();
    let server = tokio::spawn(drive(a, Server::new(config), svc));
    let (client, conn) = builder.handshake(b).await.expect("h2 handshake");
    tokio::spawn(async move {
        let _ = conn.await;
    });
    (client, server)
}

/// Close the client and wait for the server loop to end; return its state.
async fn stop(client: SendRequest<Bytes>, server: ServerTask) -> (Server, Svc) {
    drop(client);
    let (s, svc, _exit) = within(10, "server shutdown", server).await.unwrap();
    assert!(svc.errors.is_empty(), "server app errors: {:?}", svc.errors);
    (s, svc)
}

fn request(path: &str, content_type: &str) -> http::Request<()> {
    http::Request::builder()
        .method("POST")
        .uri(format!("http://localhost{path}"))
        .header("content-type", content_type)
        .header("te", "trailers")
        .body(())
        .unwrap()
}

/// A whole gRPC response as the h2 client saw it.
#[derive(Debug)]
struct Response {
    http_status: u16,
    headers: http::HeaderMap,
    body: BytesMut,
    trailers: Option<http::HeaderMap>,
}

impl Response {
    /// grpc-status from the trailers, or from the headers of a
    /// Trailers-Only response.
    fn grpc_status(&self) -> Option<u32> {
        let map = self.trailers.as_ref().unwrap_or(&self.headers);
        map.get("grpc-status")
            .map(|v| v.to_str().unwrap().parse().unwrap())
    }
    fn grpc_message(&self) -> String {
        let map = self.trailers.as_ref().unwrap_or(&self.headers);
        map.get("grpc-message")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default()
    }
    fn messages(&self) -> Vec<Bytes> {
        common::unframe(&self.body)
    }
}

async fn read_response(fut: h2::client::ResponseFuture) -> Result<Response, h2::Error> {
    let resp = fut.await?;
    let (parts, mut body) = resp.into_parts();
    let data = read_body(&mut body).await?;
    let trailers = body.trailers().await?;
    Ok(Response {
        http_status: parts.status.as_u16(),
        headers: parts.headers,
        body: data,
        trailers,
    })
}

/// One call: send `messages` (flow-controlled, concurrently with reading
/// the answer), half-close, and read the whole response.
async fn call(
    client: &SendRequest<Bytes>,
    path: &str,
    messages: Vec<Bytes>,
) -> Result<Response, h2::Error> {
    call_with(client, request(path, "application/grpc"), messages).await
}

async fn call_with(
    client: &SendRequest<Bytes>,
    req: http::Request<()>,
    messages: Vec<Bytes>,
) -> Result<Response, h2::Error> {
    let mut client = client.clone().ready().await?;
    let (fut, mut send) = client.send_request(req, false)?;
    let sender = tokio::spawn(async move {
        let n = messages.len();
        for (i, m) in messages.into_iter().enumerate() {
            send_flow_controlled(&mut send, frame(&m), i + 1 == n).await?;
        }
        if n == 0 {
            send.send_data(Bytes::new(), true)?;
        }
        Ok::<_, h2::Error>(send)
    });
    let resp = read_response(fut).await;
    // The send side may have been cut short by an early answer; the
    // response is what the test checks.
    let _ = sender.await.unwrap();
    resp
}

const VERSION: &str = "/runtime.v1.RuntimeService/Version";

/// A Version call asking for version `v`.
async fn call_version(client: &SendRequest<Bytes>, v: &str) -> Result<Response, h2::Error> {
    call(client, VERSION, vec![version_request(v)]).await
}

fn version_request(v: &str) -> Bytes {
    cri::VersionRequest { version: v.into() }
        .encode_to_vec()
        .into()
}

// ---- Tests ----

#[tokio::test(flavor = "current_thread")]
async fn unary_version() {
    let (client, server) = start(config(), Svc::default()).await;
    let resp = within(10, "Version", async {
        call_version(&client, "v1").await.unwrap()
    })
    .await;
    assert_eq!(resp.http_status, 200);
    assert_eq!(resp.headers["content-type"], "application/grpc");
    assert_eq!(resp.grpc_status(), Some(0), "{resp:?}");
    let msgs = resp.messages();
    assert_eq!(msgs.len(), 1);
    let v = cri::VersionResponse::decode(msgs[0].clone()).unwrap();
    assert_eq!(v, version_response("v1".into()));
    let (s, _) = stop(client, server).await;
    assert_eq!(s.active_calls(), 0);
}

#[tokio::test(flavor = "current_thread")]
async fn server_streaming_events() {
    const N: usize = 500;
    let svc = Svc {
        events: Some(N),
        ..Svc::default()
    };
    let (client, server) = start(config(), svc).await;
    let resp = within(10, "GetContainerEvents", async {
        call(
            &client,
            "/runtime.v1.RuntimeService/GetContainerEvents",
            vec![Bytes::new()],
        )
        .await
        .unwrap()
    })
    .await;
    assert_eq!(resp.grpc_status(), Some(0), "{resp:?}");
    let msgs = resp.messages();
    assert_eq!(msgs.len(), N);
    for (i, m) in msgs.into_iter().enumerate() {
        let ev = cri::ContainerEventResponse::decode(m).unwrap();
        assert_eq!(ev.container_id, format!("c{i}"));
        assert_eq!(ev.created_at, i as i64);
    }
    stop(client, server).await;
}

#[tokio::test(flavor = "current_thread")]
async fn client_streaming_sum() {
    const N: u64 = 2000;
    let (client, server) = start(config(), Svc::default()).await;
    let msgs: Vec<Bytes> = (1..=N)
        .map(|i| Bytes::copy_from_slice(&(i * 7).to_le_bytes()))
        .collect();
    let resp = within(10, "Sum", call(&client, "/interop.Test/Sum", msgs))
        .await
        .unwrap();
    assert_eq!(resp.grpc_status(), Some(0), "{resp:?}");
    let out = resp.messages();
    assert_eq!(out.len(), 1);
    let sum = u64::from_le_bytes(out[0][..8].try_into().unwrap());
    let count = u64::from_le_bytes(out[0][8..].try_into().unwrap());
    assert_eq!(count, N);
    assert_eq!(sum, 7 * N * (N + 1) / 2);
    stop(client, server).await;
}

/// Bidi in lock-step: each message is answered before the next is sent,
/// so the echo must come back while the request stream is still open.
#[tokio::test(flavor = "current_thread")]
async fn bidi_echo_ping_pong() {
    const ROUNDS: u64 = 200;
    let (client, server) = start(config(), Svc::default()).await;
    within(10, "Echo ping-pong", async {
        let mut c = client.clone().ready().await.unwrap();
        let (fut, mut send) = c
            .send_request(request("/interop.Test/Echo", "application/grpc"), false)
            .unwrap();
        // The server sends its response headers with its first message,
        // so the first message goes out before the headers are awaited.
        let mut fut = Some(fut);
        let mut body = None;
        let mut rx = common::Unframer::default();
        let mut sent_sum = 0;
        for i in 0..ROUNDS {
            let m = pattern(1, i, (i as usize * 37) % 3000);
            sent_sum = checksum(sent_sum, &m);
            send_flow_controlled(&mut send, frame(&m), false)
                .await
                .unwrap();
            if let Some(fut) = fut.take() {
                let resp = fut.await.unwrap();
                assert_eq!(resp.status(), 200);
                body = Some(resp.into_body());
            }
            let body = body.as_mut().unwrap();
            let echoed = loop {
                if let Some(e) = rx.next() {
                    break e;
                }
                let chunk = body.data().await.expect("echo").unwrap();
                body.flow_control().release_capacity(chunk.len()).unwrap();
                rx.push(&chunk);
            };
            assert_eq!(echoed, m, "round {i}");
        }
        send.send_data(Bytes::new(), true).unwrap();
        let mut body = body.unwrap();
        let rest = read_body(&mut body).await.unwrap();
        rx.push(&rest);
        let summary = rx.next().expect("summary message");
        assert!(rx.is_empty());
        assert_eq!(u64::from_le_bytes(summary[..8].try_into().unwrap()), ROUNDS);
        assert_eq!(
            u64::from_le_bytes(summary[8..].try_into().unwrap()),
            sent_sum
        );
        let trailers = body.trailers().await.unwrap().expect("trailers");
        assert_eq!(trailers["grpc-status"], "0");
    })
    .await;
    stop(client, server).await;
}

#[tokio::test(flavor = "current_thread")]
async fn client_cancel_mid_stream() {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let svc = Svc {
        events: None,
        cancelled: Some(tx),
        ..Svc::default()
    };
    let (client, server) = start(config(), svc).await;
    within(10, "cancel", async {
        let mut c = client.clone().ready().await.unwrap();
        let (fut, mut send) = c
            .send_request(
                request(
                    "/runtime.v1.RuntimeService/GetContainerEvents",
                    "application/grpc",
                ),
                false,
            )
            .unwrap();
        send.send_data(frame(&[]), true).unwrap();
        let resp = fut.await.unwrap();
        assert_eq!(resp.status(), 200);
        let mut body = resp.into_body();
        let first = body.data().await.expect("first event").unwrap();
        assert!(!first.is_empty());
        let stream_id = body.stream_id().as_u32();
        send.send_reset(h2::Reason::CANCEL);
        drop(body);
        let (id, code) = rx.recv().await.expect("Cancelled event");
        assert_eq!(id, stream_id);
        assert_eq!(code, Code::Cancelled);

        // The connection carries on.
        let resp = call_version(&client, "after-cancel").await.unwrap();
        assert_eq!(resp.grpc_status(), Some(0), "{resp:?}");
        let v = cri::VersionResponse::decode(resp.messages()[0].clone()).unwrap();
        assert_eq!(v.version, "after-cancel");
    })
    .await;
    let (s, _) = stop(client, server).await;
    assert_eq!(s.active_calls(), 0);
}

/// 1 000 calls in flight on one connection at the same time: the service
/// answers none until all 1 000 have arrived.
#[tokio::test(flavor = "current_thread")]
async fn thousand_concurrent_streams() {
    const N: usize = 1000;
    let svc = Svc {
        hold_version_until: N,
        ..Svc::default()
    };
    let mut cfg = config();
    // Exactly enough (the default is 1024).
    cfg.h2.max_concurrent_streams = N as u32;
    // h2 (since 0.4.16) charges every DATA frame under 256 bytes against a
    // 32 KiB budget until the application reads it, and closes the
    // connection (ENHANCE_YOUR_CALM, "too_many_data_frames") when it runs
    // out. 1 000 answers released at once are 1 000 small DATA frames on
    // 1 000 streams, which no server can merge; give the budget room for
    // them (256 bytes each).
    let mut builder = h2::client::Builder::new();
    builder.data_frame_budget(N * 256);
    let (client, server) = start_with(cfg, svc, builder).await;
    within(30, "1000 concurrent calls", async {
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..N {
            let client = client.clone();
            tasks.spawn(async move {
                let v = format!("call-{i}");
                let resp = call_version(&client, &v).await.unwrap();
                assert_eq!(resp.grpc_status(), Some(0), "{resp:?}");
                let got = cri::VersionResponse::decode(resp.messages()[0].clone()).unwrap();
                assert_eq!(got.version, v);
            });
        }
        while let Some(r) = tasks.join_next().await {
            r.unwrap();
        }
    })
    .await;
    let (s, svc) = stop(client, server).await;
    assert_eq!(svc.max_open, N);
    assert_eq!(s.active_calls(), 0);
    assert_eq!(s.connection().open_streams(), 0);
}

/// 50 MiB up and 50 MiB down on one bidi call, through the default
/// 64 KiB windows, at the same time; checked byte for byte.
#[tokio::test(flavor = "current_thread")]
async fn fifty_mib_each_way() {
    const MSGS: u64 = 50;
    const SIZE: usize = 1 << 20;
    let (client, server) = start(config(), Svc::default()).await;
    within(60, "50 MiB echo", async {
        let mut c = client.clone().ready().await.unwrap();
        let (fut, mut send) = c
            .send_request(request("/interop.Test/Echo", "application/grpc"), false)
            .unwrap();
        let sender = tokio::spawn(async move {
            let mut sum = 0;
            for i in 0..MSGS {
                let m = pattern(42, i, SIZE);
                sum = checksum(sum, &m);
                send_flow_controlled(&mut send, frame(&m), i + 1 == MSGS)
                    .await
                    .unwrap();
            }
            sum
        });
        let resp = fut.await.unwrap();
        let mut body = resp.into_body();
        let mut rx = common::Unframer::default();
        let mut got = 0u64;
        let mut summary = None;
        while let Some(chunk) = body.data().await {
            let chunk = chunk.unwrap();
            body.flow_control().release_capacity(chunk.len()).unwrap();
            rx.push(&chunk);
            while let Some(m) = rx.next() {
                if got < MSGS {
                    assert!(m == pattern(42, got, SIZE), "message {got} differs");
                    got += 1;
                } else {
                    summary = Some(m);
                }
            }
        }
        assert_eq!(got, MSGS);
        let trailers = body.trailers().await.unwrap().expect("trailers");
        assert_eq!(trailers["grpc-status"], "0");
        let sent_sum = sender.await.unwrap();
        let summary = summary.expect("summary message");
        assert_eq!(u64::from_le_bytes(summary[..8].try_into().unwrap()), MSGS);
        assert_eq!(
            u64::from_le_bytes(summary[8..].try_into().unwrap()),
            sent_sum,
            "server saw different bytes"
        );
    })
    .await;
    stop(client, server).await;
}

async fn len_call(client: &SendRequest<Bytes>, size: usize) -> Response {
    let m = pattern(7, size as u64, size);
    within(30, "Len", call(client, "/interop.Test/Len", vec![m]))
        .await
        .unwrap()
}

fn assert_len_ok(resp: &Response, size: usize) {
    assert_eq!(resp.grpc_status(), Some(0), "{size} bytes: {resp:?}");
    let out = resp.messages();
    assert_eq!(
        u64::from_le_bytes(out[0][..8].try_into().unwrap()),
        size as u64
    );
    let m = pattern(7, size as u64, size);
    assert_eq!(
        u64::from_le_bytes(out[0][8..].try_into().unwrap()),
        checksum(0, &m)
    );
}

fn assert_exhausted(resp: &Response, size: usize, limit: usize) {
    assert_eq!(resp.http_status, 200);
    assert_eq!(resp.grpc_status(), Some(8), "{size} bytes: {resp:?}");
    let msg = resp.grpc_message();
    assert!(
        msg.contains(&size.to_string()) && msg.contains(&limit.to_string()),
        "grpc-message should name the size and the limit: {msg:?}"
    );
    assert!(msg.contains("exceeds"), "{msg:?}");
}

#[tokio::test(flavor = "current_thread")]
async fn receive_size_limit_one_mib() {
    const LIMIT: usize = 1 << 20;
    let cfg = ServerConfig {
        max_recv_message_size: LIMIT,
        ..config()
    };
    let (client, server) = start(cfg, Svc::default()).await;
    assert_len_ok(&len_call(&client, LIMIT - 1).await, LIMIT - 1);
    assert_len_ok(&len_call(&client, LIMIT).await, LIMIT);
    assert_exhausted(&len_call(&client, LIMIT + 1).await, LIMIT + 1, LIMIT);
    // The connection still serves calls, big and small.
    assert_len_ok(&len_call(&client, LIMIT).await, LIMIT);
    let resp = call_version(&client, "next").await.unwrap();
    assert_eq!(resp.grpc_status(), Some(0), "{resp:?}");
    let (s, _) = stop(client, server).await;
    assert_eq!(s.active_calls(), 0);
}

#[tokio::test(flavor = "current_thread")]
async fn receive_size_limit_default_sixteen_mib() {
    const LIMIT: usize = 16 << 20;
    let cfg = config();
    assert_eq!(cfg.max_recv_message_size, LIMIT);
    let (client, server) = start(cfg, Svc::default()).await;
    assert_len_ok(&len_call(&client, LIMIT - 5).await, LIMIT - 5);
    assert_exhausted(&len_call(&client, LIMIT + 1).await, LIMIT + 1, LIMIT);
    let resp = call_version(&client, "next").await.unwrap();
    assert_eq!(resp.grpc_status(), Some(0), "{resp:?}");
    stop(client, server).await;
}

#[tokio::test(flavor = "current_thread")]
async fn deadline_exceeded() {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let svc = Svc {
        ignore_version: true,
        cancelled: Some(tx),
        ..Svc::default()
    };
    let (client, server) = start(config(), svc).await;
    let mut req = request(VERSION, "application/grpc");
    req.headers_mut()
        .insert("grpc-timeout", http::HeaderValue::from_static("1m"));
    let started = Instant::now();
    let resp = within(
        10,
        "deadline",
        call_with(&client, req, vec![version_request("v1")]),
    )
    .await;
    match resp {
        Ok(resp) => {
            assert_eq!(resp.grpc_status(), Some(4), "{resp:?}");
            assert!(resp.messages().is_empty());
        }
        Err(e) => assert_eq!(e.reason(), Some(h2::Reason::CANCEL), "{e}"),
    }
    assert!(started.elapsed() < Duration::from_secs(5));
    let (_, code) = rx.recv().await.unwrap();
    assert_eq!(code, Code::DeadlineExceeded);
    let (s, _) = stop(client, server).await;
    assert_eq!(s.active_calls(), 0);
}

#[tokio::test(flavor = "current_thread")]
async fn wrong_content_type_is_415() {
    let (client, server) = start(config(), Svc::default()).await;
    let req = request(VERSION, "text/plain");
    let resp = within(
        10,
        "415",
        call_with(&client, req, vec![version_request("v1")]),
    )
    .await
    .unwrap();
    assert_eq!(resp.http_status, 415, "{resp:?}");
    // And a good call still works afterwards.
    let resp = call_version(&client, "v1").await.unwrap();
    assert_eq!(resp.grpc_status(), Some(0));
    stop(client, server).await;
}

#[tokio::test(flavor = "current_thread")]
async fn unknown_path_is_unimplemented() {
    let (client, server) = start(config(), Svc::default()).await;
    let resp = within(
        10,
        "unknown path",
        call(
            &client,
            "/runtime.v1.RuntimeService/NoSuchMethod",
            vec![version_request("v1")],
        ),
    )
    .await
    .unwrap();
    assert_eq!(resp.http_status, 200);
    assert_eq!(resp.grpc_status(), Some(12), "{resp:?}");
    assert!(resp.grpc_message().contains("NoSuchMethod"));
    stop(client, server).await;
}

/// A call answered while another stream has used up the connection's
/// send window: its HEADERS go out, its DATA waits for connection credit,
/// and it must go out once that credit comes back.
#[tokio::test(flavor = "current_thread")]
async fn call_blocked_on_connection_window_resumes() {
    const SIZE: usize = 1 << 20;
    let (client, server) = start(config(), Svc::default()).await;
    within(20, "blocked call", async {
        // A bidi echo of 1 MiB that we do not read yet: the server fills
        // the stream and connection windows (65 535 bytes each) and stops.
        let mut c = client.clone().ready().await.unwrap();
        let (fut, mut send) = c
            .send_request(request("/interop.Test/Echo", "application/grpc"), false)
            .unwrap();
        let big = pattern(3, 0, SIZE);
        let sender = tokio::spawn({
            let big = big.clone();
            async move {
                send_flow_controlled(&mut send, frame(&big), true)
                    .await
                    .unwrap();
            }
        });
        let mut echo = fut.await.unwrap().into_body();
        let mut held = BytesMut::new();
        while held.len() < 65_535 {
            let chunk = echo.data().await.expect("echo data").unwrap();
            held.extend_from_slice(&chunk);
        }
        assert_eq!(held.len(), 65_535, "the server overran the window");

        // Now a unary call: its answer is blocked on the connection window.
        let mut c = client.clone().ready().await.unwrap();
        let (fut, mut send) = c
            .send_request(request(VERSION, "application/grpc"), false)
            .unwrap();
        send.send_data(frame(&version_request("blocked")), true)
            .unwrap();
        let resp = fut.await.unwrap();
        assert_eq!(resp.status(), 200);

        // Give the window back by draining the echo, then the unary call
        // must complete.
        echo.flow_control().release_capacity(held.len()).unwrap();
        let rest = read_body(&mut echo).await.unwrap();
        held.extend_from_slice(&rest);
        let msgs = common::unframe(&held);
        assert!(msgs[0] == big);
        sender.await.unwrap();

        let (_, mut body) = resp.into_parts();
        let data = read_body(&mut body).await.unwrap();
        let trailers = body.trailers().await.unwrap().expect("trailers");
        assert_eq!(trailers["grpc-status"], "0");
        let v = cri::VersionResponse::decode(common::unframe(&data)[0].clone()).unwrap();
        assert_eq!(v.version, "blocked");
    })
    .await;
    stop(client, server).await;
}

/// PINGs from the h2 client are acknowledged.
#[tokio::test(flavor = "current_thread")]
async fn ping_is_answered() {
    let (a, b) = UnixStream::pair().unwrap();
    let server = tokio::spawn(drive(a, Server::new(config()), Svc::default()));
    let (client, mut conn) = h2::client::handshake(b).await.unwrap();
    let mut pings = conn.ping_pong().expect("ping_pong");
    tokio::spawn(async move {
        let _ = conn.await;
    });
    within(10, "ping", async {
        for _ in 0..3 {
            pings.ping(h2::Ping::opaque()).await.unwrap();
        }
    })
    .await;
    drop(pings);
    stop(client, server).await;
}

/// Graceful shutdown: GOAWAY while calls are in flight. Those calls
/// finish; new ones are not served; the server then closes by itself.
#[tokio::test(flavor = "current_thread")]
async fn graceful_go_away_finishes_calls_in_flight() {
    const N: usize = 10;
    let svc = Svc {
        hold_version_until: N,
        go_away_when_released: true,
        ..Svc::default()
    };
    let (client, server) = start(config(), svc).await;
    within(10, "calls across GOAWAY", async {
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..N {
            let client = client.clone();
            tasks.spawn(async move {
                let v = format!("call-{i}");
                let resp = call_version(&client, &v).await.unwrap();
                assert_eq!(resp.grpc_status(), Some(0), "{resp:?}");
            });
        }
        while let Some(r) = tasks.join_next().await {
            r.unwrap();
        }
        let after = call_version(&client, "late").await;
        assert!(after.is_err(), "a call after GOAWAY was served: {after:?}");
    })
    .await;
    // The server closes by itself: GOAWAY sent and every stream done.
    let (s, svc, exit) = within(10, "server close", server).await.unwrap();
    assert_eq!(exit, Exit::EndpointClosed);
    assert!(svc.errors.is_empty(), "{:?}", svc.errors);
    assert_eq!(s.active_calls(), 0);
    drop(client);
}
