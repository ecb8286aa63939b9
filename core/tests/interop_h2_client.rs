//! Interop: the core's gRPC [`Client`] against the independent `h2` crate
//! as the server, over a real Unix socket pair.
//!
//! The server is a tiny gRPC-shaped service written here on
//! `h2::server`: it frames and unframes messages and writes `grpc-status`
//! and `grpc-message` by hand, so nothing of the core is on its side.

mod common;

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{
    checksum, drive, frame, pattern, percent_encode, read_body, send_flow_controlled, within, App,
    Exit, Unframer,
};
use crisp_core::grpc::client::{self, CallId, Client, ClientConfig};
use crisp_core::grpc::{Code, Status};
use crisp_core::h2::Header;
use crisp_proto::cri;
use h2::server::SendResponse;
use h2::RecvStream;
use prost::Message as _;
use tokio::net::UnixStream;
use tokio::sync::Barrier;

// ---- The h2 server ----

/// What the test server shares with the test.
#[derive(Default)]
struct Shared {
    /// Version calls being handled right now, and the most at once.
    active: AtomicUsize,
    max_active: AtomicUsize,
    /// When set, each Version call waits here before answering: a batch
    /// of that many calls must be in flight together.
    barrier: Option<Barrier>,
    /// Streams the client reset (seen by the Hang method).
    resets: Mutex<Vec<h2::Reason>>,
    /// Anything the server found wrong with a request.
    errors: Mutex<Vec<String>>,
}

/// Messages sent by GetContainerEvents.
const EVENTS: usize = 300;

/// The grpc-message of the NotFound methods: non-ASCII on purpose.
const NOT_FOUND_MESSAGE: &str = "conteneur «café» introuvable — 容器 🚢 100% absent";

async fn h2_server(io: UnixStream, builder: h2::server::Builder, shared: Arc<Shared>) {
    let mut conn = match builder.handshake::<_, Bytes>(io).await {
        Ok(c) => c,
        Err(e) => {
            shared
                .errors
                .lock()
                .unwrap()
                .push(format!("handshake: {e}"));
            return;
        }
    };
    while let Some(r) = conn.accept().await {
        let Ok((req, respond)) = r else { break };
        tokio::spawn(handle(req, respond, shared.clone()));
    }
}

fn response_head() -> http::Response<()> {
    http::Response::builder()
        .status(200)
        .header("content-type", "application/grpc")
        .body(())
        .unwrap()
}

fn status_trailers(code: u32, message: Option<&str>) -> http::HeaderMap {
    let mut t = http::HeaderMap::new();
    t.insert("grpc-status", code.to_string().parse().unwrap());
    if let Some(m) = message {
        t.insert("grpc-message", percent_encode(m).parse().unwrap());
    }
    t
}

async fn handle(
    req: http::Request<RecvStream>,
    mut respond: SendResponse<Bytes>,
    shared: Arc<Shared>,
) {
    let path = req.uri().path().to_owned();
    {
        let h = req.headers();
        let ok = req.method() == http::Method::POST
            && h.get("content-type")
                .is_some_and(|v| v == "application/grpc")
            && h.get("te").is_some_and(|v| v == "trailers");
        if !ok {
            shared
                .errors
                .lock()
                .unwrap()
                .push(format!("bad gRPC request headers on {path}: {req:?}"));
        }
    }
    let mut body = req.into_body();
    match path.as_str() {
        "/runtime.v1.RuntimeService/Version" => {
            let now = shared.active.fetch_add(1, Ordering::SeqCst) + 1;
            shared.max_active.fetch_max(now, Ordering::SeqCst);
            let data = read_body(&mut body).await.unwrap();
            let msgs = common::unframe(&data);
            assert_eq!(msgs.len(), 1);
            let req = cri::VersionRequest::decode(msgs[0].clone()).unwrap();
            if let Some(b) = &shared.barrier {
                b.wait().await;
            }
            let resp = cri::VersionResponse {
                version: req.version,
                runtime_name: "h2-test".into(),
                runtime_version: "0.4".into(),
                runtime_api_version: "v1".into(),
            };
            let mut send = respond.send_response(response_head(), false).unwrap();
            send_flow_controlled(&mut send, frame(&resp.encode_to_vec()), false)
                .await
                .unwrap();
            shared.active.fetch_sub(1, Ordering::SeqCst);
            send.send_trailers(status_trailers(0, None)).unwrap();
        }
        "/runtime.v1.RuntimeService/GetContainerEvents" => {
            let data = read_body(&mut body).await.unwrap();
            assert_eq!(common::unframe(&data), vec![Bytes::new()]);
            let mut send = respond.send_response(response_head(), false).unwrap();
            for i in 0..EVENTS {
                let ev = cri::ContainerEventResponse {
                    container_id: format!("c{i}"),
                    created_at: i as i64,
                    ..Default::default()
                };
                send_flow_controlled(&mut send, frame(&ev.encode_to_vec()), false)
                    .await
                    .unwrap();
            }
            send.send_trailers(status_trailers(0, None)).unwrap();
        }
        "/interop.Test/Echo" => {
            // Echo the raw bytes as they come, flow-controlled both ways,
            // then one message with the count and checksum of the messages
            // received.
            let mut send = respond.send_response(response_head(), false).unwrap();
            let mut rx = Unframer::default();
            let (mut count, mut sum) = (0u64, 0u64);
            while let Some(chunk) = body.data().await {
                let chunk = chunk.unwrap();
                body.flow_control().release_capacity(chunk.len()).unwrap();
                rx.push(&chunk);
                while let Some(m) = rx.next() {
                    count += 1;
                    sum = checksum(sum, &m);
                }
                send_flow_controlled(&mut send, chunk, false).await.unwrap();
            }
            assert!(rx.is_empty(), "request ended inside a message");
            let mut summary = count.to_le_bytes().to_vec();
            summary.extend_from_slice(&sum.to_le_bytes());
            send_flow_controlled(&mut send, frame(&summary), false)
                .await
                .unwrap();
            send.send_trailers(status_trailers(0, None)).unwrap();
        }
        "/interop.Test/NotFound" => {
            let _ = read_body(&mut body).await.unwrap();
            let mut send = respond.send_response(response_head(), false).unwrap();
            send.send_trailers(status_trailers(5, Some(NOT_FOUND_MESSAGE)))
                .unwrap();
        }
        "/interop.Test/NotFoundTrailersOnly" => {
            let _ = read_body(&mut body).await.unwrap();
            let mut head = response_head();
            head.headers_mut()
                .extend(status_trailers(5, Some(NOT_FOUND_MESSAGE)));
            respond.send_response(head, true).unwrap();
        }
        "/interop.Test/Hang" => {
            // Never answer; report how the client gave up.
            let reason = std::future::poll_fn(|cx| respond.poll_reset(cx)).await;
            if let Ok(r) = reason {
                shared.resets.lock().unwrap().push(r);
            }
        }
        other => {
            let mut head = response_head();
            head.headers_mut().extend(status_trailers(
                12,
                Some(&format!("unknown method {other}")),
            ));
            respond.send_response(head, true).unwrap();
        }
    }
}

// ---- The core client side ----

/// A call to make.
struct Planned {
    path: &'static str,
    messages: Vec<Bytes>,
    timeout: Option<Duration>,
}

/// What came back for one call.
#[derive(Debug, Default)]
struct Outcome {
    messages: Vec<Bytes>,
    status: Option<Status>,
    trailers: Vec<Header>,
}

/// Starts planned calls whenever the connection allows one more
/// (`can_start_call`), and collects their outcomes in plan order.
#[derive(Default)]
struct Batch {
    plan: VecDeque<Planned>,
    started: usize,
    by_id: HashMap<CallId, usize>,
    outcomes: Vec<Outcome>,
    finished: usize,
    max_active: usize,
    errors: Vec<String>,
}

impl Batch {
    fn new(plan: Vec<Planned>) -> Self {
        let n = plan.len();
        Self {
            plan: plan.into(),
            outcomes: (0..n).map(|_| Outcome::default()).collect(),
            ..Self::default()
        }
    }
}

impl App<Client> for Batch {
    fn on_idle(&mut self, c: &mut Client, now: Instant) {
        while !self.plan.is_empty() && c.can_start_call() {
            let p = self.plan.pop_front().unwrap();
            let id = c.start_call(p.path, Vec::new(), p.timeout, now).unwrap();
            let n = p.messages.len();
            for (i, m) in p.messages.iter().enumerate() {
                c.send_encoded(id, m, i + 1 == n).unwrap();
            }
            if n == 0 {
                c.close_send(id).unwrap();
            }
            self.by_id.insert(id, self.started);
            self.started += 1;
            self.max_active = self.max_active.max(c.active_calls());
        }
    }

    fn on_event(&mut self, _c: &mut Client, ev: client::Event, _now: Instant) {
        match ev {
            client::Event::Headers { .. } | client::Event::GoAway => {}
            client::Event::Message { id, message } => {
                self.outcomes[self.by_id[&id]].messages.push(message)
            }
            client::Event::Finished {
                id,
                status,
                trailers,
            } => {
                let o = &mut self.outcomes[self.by_id[&id]];
                assert!(o.status.is_none(), "call {id} finished twice");
                o.status = Some(status);
                o.trailers = trailers;
                self.finished += 1;
            }
            client::Event::ConnectionError(e) => self.errors.push(format!("{e}")),
        }
    }

    fn done(&self, _c: &Client) -> bool {
        self.finished == self.outcomes.len() || !self.errors.is_empty()
    }
}

/// Run `app` on a core client against an h2 server built by `builder`.
async fn run<A: App<Client>>(
    builder: h2::server::Builder,
    shared: Arc<Shared>,
    app: A,
) -> (Client, A) {
    let (a, b) = UnixStream::pair().unwrap();
    let server = tokio::spawn(h2_server(b, builder, shared.clone()));
    let (client, app, exit) = within(
        60,
        "core client",
        drive(a, Client::new(ClientConfig::default()), app),
    )
    .await;
    assert_eq!(exit, Exit::AppDone);
    // The socket is closed now; the server's accept loop ends.
    within(10, "h2 server shutdown", server).await.unwrap();
    let errors = shared.errors.lock().unwrap();
    assert!(errors.is_empty(), "h2 server: {errors:?}");
    (client, app)
}

fn version_request(v: &str) -> Bytes {
    cri::VersionRequest { version: v.into() }
        .encode_to_vec()
        .into()
}

fn version_call(v: &str) -> Planned {
    Planned {
        path: "/runtime.v1.RuntimeService/Version",
        messages: vec![version_request(v)],
        timeout: None,
    }
}

fn assert_ok(o: &Outcome) {
    assert_eq!(o.status, Some(Status::ok()), "{o:?}");
}

// ---- Tests ----

#[tokio::test(flavor = "current_thread")]
async fn unary_version() {
    let shared = Arc::new(Shared::default());
    let batch = Batch::new(vec![version_call("v1")]);
    let (c, batch) = run(h2::server::Builder::new(), shared, batch).await;
    assert!(batch.errors.is_empty(), "{:?}", batch.errors);
    let o = &batch.outcomes[0];
    assert_ok(o);
    assert!(o
        .trailers
        .iter()
        .any(|h| &h.name[..] == b"grpc-status" && &h.value[..] == b"0"));
    assert_eq!(o.messages.len(), 1);
    let v = cri::VersionResponse::decode(o.messages[0].clone()).unwrap();
    assert_eq!(v.version, "v1");
    assert_eq!(v.runtime_name, "h2-test");
    assert_eq!(c.active_calls(), 0);
    assert_eq!(c.connection().open_streams(), 0);
}

#[tokio::test(flavor = "current_thread")]
async fn server_streaming_events() {
    let shared = Arc::new(Shared::default());
    let batch = Batch::new(vec![Planned {
        path: "/runtime.v1.RuntimeService/GetContainerEvents",
        messages: vec![Bytes::new()],
        timeout: None,
    }]);
    let (_, batch) = run(h2::server::Builder::new(), shared, batch).await;
    let o = &batch.outcomes[0];
    assert_ok(o);
    assert_eq!(o.messages.len(), EVENTS);
    for (i, m) in o.messages.iter().enumerate() {
        let ev = cri::ContainerEventResponse::decode(m.clone()).unwrap();
        assert_eq!(ev.container_id, format!("c{i}"));
        assert_eq!(ev.created_at, i as i64);
    }
}

/// 1 000 calls at once on one connection: the h2 server allows 1 000
/// streams and answers none until all 1 000 are in.
#[tokio::test(flavor = "current_thread")]
async fn thousand_concurrent_calls() {
    const N: usize = 1000;
    let shared = Arc::new(Shared {
        barrier: Some(Barrier::new(N)),
        ..Shared::default()
    });
    let mut builder = h2::server::Builder::new();
    builder.max_concurrent_streams(N as u32);
    let plan = (0..N).map(|i| version_call(&format!("call-{i}"))).collect();
    let (c, batch) = run(builder, shared.clone(), Batch::new(plan)).await;
    assert!(batch.errors.is_empty(), "{:?}", batch.errors);
    for (i, o) in batch.outcomes.iter().enumerate() {
        assert_ok(o);
        let v = cri::VersionResponse::decode(o.messages[0].clone()).unwrap();
        assert_eq!(v.version, format!("call-{i}"));
    }
    assert_eq!(batch.max_active, N);
    assert_eq!(shared.max_active.load(Ordering::SeqCst), N);
    assert_eq!(c.connection().open_streams(), 0);
}

/// The h2 server allows only 100 streams: the client must hold the other
/// calls back (waiting on `can_start_call`) rather than have them refused.
/// The server answers in batches of exactly 100, so the client must also
/// use all 100.
#[tokio::test(flavor = "current_thread")]
async fn respects_max_concurrent_streams_100() {
    const N: usize = 1000;
    const LIMIT: usize = 100;
    let shared = Arc::new(Shared {
        barrier: Some(Barrier::new(LIMIT)),
        ..Shared::default()
    });
    let mut builder = h2::server::Builder::new();
    builder.max_concurrent_streams(LIMIT as u32);
    let plan = (0..N).map(|i| version_call(&format!("call-{i}"))).collect();
    let (_, batch) = run(builder, shared.clone(), Batch::new(plan)).await;
    assert!(batch.errors.is_empty(), "{:?}", batch.errors);
    for o in &batch.outcomes {
        assert_ok(o);
    }
    assert_eq!(batch.max_active, LIMIT);
    assert_eq!(shared.max_active.load(Ordering::SeqCst), LIMIT);
}

/// A server whose SETTINGS name no stream limit has none: after the first
/// 100 (assumed until its SETTINGS arrive), the client opens all 300.
#[tokio::test(flavor = "current_thread")]
async fn no_stream_limit_when_server_states_none() {
    const N: usize = 300;
    let shared = Arc::new(Shared {
        barrier: Some(Barrier::new(N)),
        ..Shared::default()
    });
    let plan = (0..N).map(|i| version_call(&format!("call-{i}"))).collect();
    let (_, batch) = run(h2::server::Builder::new(), shared.clone(), Batch::new(plan)).await;
    assert!(batch.errors.is_empty(), "{:?}", batch.errors);
    for o in &batch.outcomes {
        assert_ok(o);
    }
    assert_eq!(shared.max_active.load(Ordering::SeqCst), N);
}

/// 50 MiB up and 50 MiB down on one bidi call through the default 64 KiB
/// windows: the client produces 1 MiB messages as its send buffer drains,
/// the h2 server echoes the bytes as they come.
#[tokio::test(flavor = "current_thread")]
async fn fifty_mib_each_way() {
    const MSGS: u64 = 50;
    const SIZE: usize = 1 << 20;

    #[derive(Default)]
    struct Transfer {
        id: Option<CallId>,
        sent: u64,
        sent_sum: u64,
        received: u64,
        summary: Option<Bytes>,
        status: Option<Status>,
        errors: Vec<String>,
    }
    impl App<Client> for Transfer {
        fn on_idle(&mut self, c: &mut Client, now: Instant) {
            let id = *self.id.get_or_insert_with(|| {
                c.start_call("/interop.Test/Echo", vec![], None, now)
                    .unwrap()
            });
            // Keep at most about one message queued beyond the windows.
            while self.sent < MSGS && c.connection().send_buffered(id) < SIZE {
                let m = pattern(9, self.sent, SIZE);
                self.sent_sum = checksum(self.sent_sum, &m);
                self.sent += 1;
                c.send_encoded(id, &m, self.sent == MSGS).unwrap();
            }
        }
        fn on_event(&mut self, _c: &mut Client, ev: client::Event, _now: Instant) {
            match ev {
                client::Event::Headers { .. } | client::Event::GoAway => {}
                client::Event::Message { message, .. } => {
                    if self.received < MSGS {
                        if message != pattern(9, self.received, SIZE) {
                            self.errors
                                .push(format!("message {} differs", self.received));
                        }
                        self.received += 1;
                    } else {
                        self.summary = Some(message);
                    }
                }
                client::Event::Finished { status, .. } => self.status = Some(status),
                client::Event::ConnectionError(e) => self.errors.push(format!("{e}")),
            }
        }
        fn done(&self, _c: &Client) -> bool {
            self.status.is_some() || !self.errors.is_empty()
        }
    }

    let shared = Arc::new(Shared::default());
    let (_, t) = run(h2::server::Builder::new(), shared, Transfer::default()).await;
    assert!(t.errors.is_empty(), "{:?}", t.errors);
    assert_eq!(t.status, Some(Status::ok()));
    assert_eq!(t.sent, MSGS);
    assert_eq!(t.received, MSGS);
    let summary = t.summary.expect("summary message");
    assert_eq!(u64::from_le_bytes(summary[..8].try_into().unwrap()), MSGS);
    assert_eq!(
        u64::from_le_bytes(summary[8..].try_into().unwrap()),
        t.sent_sum,
        "the h2 server received different bytes"
    );
}

/// grpc-status 5 with a percent-encoded, non-ASCII grpc-message, in
/// trailers after headers and as a Trailers-Only response.
#[tokio::test(flavor = "current_thread")]
async fn not_found_with_non_ascii_message() {
    // The wire form really is escaped.
    assert!(percent_encode(NOT_FOUND_MESSAGE).is_ascii());
    assert!(percent_encode(NOT_FOUND_MESSAGE).contains("%C3%A9"));
    assert!(percent_encode(NOT_FOUND_MESSAGE).contains("100%25"));
    let shared = Arc::new(Shared::default());
    let plan = vec![
        Planned {
            path: "/interop.Test/NotFound",
            messages: vec![version_request("x")],
            timeout: None,
        },
        Planned {
            path: "/interop.Test/NotFoundTrailersOnly",
            messages: vec![version_request("x")],
            timeout: None,
        },
        version_call("after"),
    ];
    let (_, batch) = run(h2::server::Builder::new(), shared, Batch::new(plan)).await;
    for o in &batch.outcomes[..2] {
        let status = o.status.as_ref().unwrap();
        assert_eq!(status.code, Code::NotFound, "{o:?}");
        assert_eq!(status.message, NOT_FOUND_MESSAGE);
        assert!(o.messages.is_empty());
    }
    assert_ok(&batch.outcomes[2]);
}

/// The client's own deadline: the server never answers, the client gives
/// up with DEADLINE_EXCEEDED and resets the stream with CANCEL.
#[tokio::test(flavor = "current_thread")]
async fn client_deadline_resets_stream() {
    let shared = Arc::new(Shared::default());
    let plan = vec![
        Planned {
            path: "/interop.Test/Hang",
            messages: vec![Bytes::from_static(b"x")],
            timeout: Some(Duration::from_millis(20)),
        },
        version_call("after"),
    ];
    let started = Instant::now();
    let (_, batch) = run(h2::server::Builder::new(), shared.clone(), Batch::new(plan)).await;
    assert!(started.elapsed() < Duration::from_secs(5));
    let status = batch.outcomes[0].status.as_ref().unwrap();
    assert_eq!(status.code, Code::DeadlineExceeded, "{status}");
    assert_ok(&batch.outcomes[1]);
    // The handler task that saw the reset may run after the accept loop
    // has ended.
    within(5, "reset seen by the server", async {
        while shared.resets.lock().unwrap().is_empty() {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await;
    assert_eq!(*shared.resets.lock().unwrap(), vec![h2::Reason::CANCEL]);
}
