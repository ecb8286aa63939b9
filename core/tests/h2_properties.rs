//! Properties of `h2::Connection` under generated input.
//!
//! 1. Chunking does not matter: any split of a client's byte stream into
//!    `recv` calls yields the same events and the same output bytes.
//! 2. Random sequences of well-formed frames (in any order, so mostly
//!    protocol violations) never make the connection panic; its output always
//!    parses as frames and header blocks; it never sends DATA past the
//!    windows the peer granted, never resets an idle stream, and writes
//!    nothing after a connection error.

mod peer;

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use crisp_core::grpc::client::{Client, ClientConfig};
use crisp_core::grpc::server::{Server, ServerConfig};
use crisp_core::h2::frame::{self, Frame, PrioritySpec};
use crisp_core::h2::{Config, Connection, ErrorCode, Event, Header, StreamId};
use crisp_proto::cri;
use peer::*;
use proptest::prelude::*;

// ===========================================================================
// 1. Chunking
// ===========================================================================

/// What the generated client does.
#[derive(Clone, Debug)]
enum Call {
    Unary { version_len: usize, timeout: bool },
    Streaming { messages: Vec<usize>, cancel: bool },
}

fn call() -> impl Strategy<Value = Call> {
    prop_oneof![
        3 => (prop_oneof![0usize..100, 0usize..40_000], any::<bool>())
            .prop_map(|(version_len, timeout)| Call::Unary { version_len, timeout }),
        1 => (proptest::collection::vec(0usize..20_000, 0..4), any::<bool>())
            .prop_map(|(messages, cancel)| Call::Streaming { messages, cancel }),
    ]
}

/// Control frames slipped in between the client's frames.
fn extra() -> impl Strategy<Value = Frame> {
    prop_oneof![
        any::<[u8; 8]>().prop_map(|p| frame::Ping::new(p).into()),
        (prop_oneof![Just(0u32), Just(1), Just(3)], 1u32..100_000)
            .prop_map(|(id, n)| frame::WindowUpdate::new(StreamId::new(id), n).into()),
        (0u32..100_000).prop_map(|w| {
            frame::Settings {
                initial_window_size: Some(w),
                ..frame::Settings::default()
            }
            .into()
        }),
        Just(frame::Settings::ack().into()),
        (1u32..10, 0u32..10).prop_map(|(id, dep)| {
            frame::Priority {
                stream_id: StreamId::new(id),
                spec: PrioritySpec {
                    dependency: StreamId::new(if dep == id { 0 } else { dep }),
                    exclusive: false,
                    weight: 7,
                },
            }
            .into()
        }),
        Just(
            frame::Unknown {
                kind: 0x42,
                flags: 0,
                stream_id: StreamId::new(0),
                payload: Bytes::from_static(b"ext")
            }
            .into()
        ),
    ]
}

/// The bytes a gRPC client writes for `calls`, with `extras` inserted at
/// frame boundaries outside header blocks.
fn client_bytes(calls: &[Call], extras: &[(usize, Frame)], now: Instant) -> Vec<u8> {
    let path = "/runtime.v1.RuntimeService/Version";
    let mut c = Client::new(ClientConfig::default());
    for call in calls {
        match call {
            Call::Unary {
                version_len,
                timeout,
            } => {
                let msg = cri::VersionRequest {
                    version: "v".repeat(*version_len),
                };
                let timeout = timeout.then_some(Duration::from_secs(3));
                let _ = c.unary(path, &msg, timeout, now);
            }
            Call::Streaming { messages, cancel } => {
                let Ok(id) = c.start_call(path, vec![h("x-meta", "1")], None, now) else {
                    continue;
                };
                for &n in messages {
                    let _ = c.send_encoded(id, &vec![0x0a; n], false);
                }
                if *cancel {
                    c.cancel(id);
                } else {
                    let _ = c.close_send(id);
                }
            }
        }
    }
    let mut wire = Vec::new();
    while let Some(b) = c.poll_transmit() {
        wire.extend_from_slice(&b);
    }
    // Split into frames after the preface and slip the extras in.
    let (preface, mut rest) = wire.split_at(frame::PREFACE.len());
    let mut frames: Vec<(&[u8], bool)> = Vec::new(); // (bytes, inside a header block after it)
    let mut in_block = false;
    while rest.len() >= frame::HEADER_LEN {
        let len = u32::from_be_bytes([0, rest[0], rest[1], rest[2]]) as usize;
        let (f, tail) = rest.split_at(frame::HEADER_LEN + len);
        let kind = f[3];
        let flags = f[4];
        if kind == frame::kind::HEADERS || kind == frame::kind::CONTINUATION {
            in_block = flags & frame::flags::END_HEADERS == 0;
        }
        frames.push((f, in_block));
        rest = tail;
    }
    assert!(rest.is_empty());
    let mut out = preface.to_vec();
    for (i, (f, in_block)) in frames.iter().enumerate() {
        out.extend_from_slice(f);
        if !in_block {
            for (_, x) in extras.iter().filter(|(at, _)| at % (frames.len() + 1) == i) {
                out.extend(encode(std::slice::from_ref(x)));
            }
        }
    }
    out
}

/// Feed `wire` in chunks of the given lengths (cycled); collect events and
/// output after every chunk.
fn feed_h2(wire: &[u8], chunks: &[usize], now: Instant) -> (Vec<Event>, Vec<u8>) {
    let mut s = Connection::server(Config::default());
    let mut events = Vec::new();
    let mut out = Vec::new();
    let mut rest = wire;
    let mut sizes = chunks.iter().cycle();
    while !rest.is_empty() {
        let n = (*sizes.next().unwrap()).min(rest.len());
        let (chunk, tail) = rest.split_at(n);
        let _ = s.recv(chunk, now);
        events.extend(std::iter::from_fn(|| s.poll_event()));
        while let Some(b) = s.poll_transmit() {
            out.extend_from_slice(&b);
        }
        rest = tail;
    }
    (events, out)
}

fn chunk_sizes() -> impl Strategy<Value = Vec<usize>> {
    proptest::collection::vec(prop_oneof![1usize..4, 1usize..64, 1usize..20_000], 1..40)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn any_split_gives_the_same_events_and_output(
        calls in proptest::collection::vec(call(), 1..6),
        extras in proptest::collection::vec((any::<usize>(), extra()), 0..6),
        chunks in chunk_sizes(),
    ) {
        let now = Instant::now();
        let wire = client_bytes(&calls, &extras, now);
        let (events, out) = feed_h2(&wire, &[wire.len()], now);
        let (split_events, split_out) = feed_h2(&wire, &chunks, now);
        prop_assert!(!events.is_empty());
        prop_assert_eq!(&split_events, &events);
        prop_assert_eq!(split_out, out);
    }

    /// At the gRPC level only the calls are compared: the server answers
    /// some requests early, and whether RST_STREAM(NO_ERROR) must follow
    /// depends on whether the rest of the request had arrived yet (§8.1).
    #[test]
    fn any_split_gives_the_same_grpc_calls(
        calls in proptest::collection::vec(call(), 1..6),
        chunks in chunk_sizes(),
    ) {
        let now = Instant::now();
        let wire = client_bytes(&calls, &[], now);
        let run = |chunks: &[usize]| {
            let mut s = Server::new(ServerConfig::default());
            let mut events = Vec::new();
            let mut rest = &wire[..];
            let mut sizes = chunks.iter().cycle();
            while !rest.is_empty() {
                let n = (*sizes.next().unwrap()).min(rest.len());
                let _ = s.recv(&rest[..n], now);
                events.extend(std::iter::from_fn(|| s.poll_event()));
                rest = &rest[n..];
            }
            while s.poll_transmit().is_some() {}
            events
        };
        let whole = run(&[wire.len()]);
        prop_assert_eq!(run(&chunks), whole);
    }
}

// ===========================================================================
// 2. Random frame sequences
// ===========================================================================

#[derive(Clone, Copy, Debug)]
enum BlockKind {
    Request,
    /// Past our 16 KiB header list limit: answered with 431.
    HugeRequest,
    MalformedRequest,
    Response,
    Informational,
    Trailers,
}

/// Which stream a frame goes to, resolved against the run's state so that
/// most frames make sense and the connection lives long enough to matter.
#[derive(Clone, Copy, Debug)]
enum Target {
    /// One of the streams opened so far (index modulo their number).
    Existing(usize),
    /// The next stream id the opening side would use.
    New,
    /// Any id at all: mostly idle, even or closed streams.
    Wild(u32),
}

#[derive(Clone, Debug)]
enum Op {
    Headers {
        target: Target,
        /// A block that fits the stream (request, response or trailers);
        /// otherwise `kind`.
        fitting: bool,
        kind: BlockKind,
        end_stream: bool,
        split: bool,
        pad: Option<u8>,
        priority: Option<u32>,
    },
    Data {
        target: Target,
        len: usize,
        end_stream: bool,
        pad: Option<u8>,
    },
    Priority {
        target: Target,
        dependency: u32,
    },
    Rst {
        target: Target,
        code: u32,
    },
    Settings {
        initial_window_size: Option<u32>,
        max_frame_size: Option<u32>,
        header_table_size: Option<u32>,
        max_concurrent_streams: Option<u32>,
    },
    SettingsAck,
    Ping {
        ack: bool,
    },
    WindowUpdate {
        /// None: the connection.
        target: Option<Target>,
        increment: u32,
    },
    GoAway {
        last: u32,
        code: u32,
    },
    Continuation {
        target: Target,
        len: usize,
        end_headers: bool,
    },
    Unknown {
        target: Target,
    },
    Advance {
        ms: u64,
    },
    // The application's commands.
    AppReset {
        target: Target,
    },
    AppPing,
    AppGoAway,
    /// Client role: open a stream with a request and a body.
    AppOpen {
        body: usize,
    },
}

fn target() -> impl Strategy<Value = Target> {
    prop_oneof![
        16 => (0usize..8).prop_map(Target::Existing),
        6 => Just(Target::New),
        1 => prop_oneof![Just(1u32), Just(2), Just(4), Just(7), Just(101)].prop_map(Target::Wild),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    let kind = prop_oneof![
        6 => Just(BlockKind::Request),
        1 => Just(BlockKind::HugeRequest),
        1 => Just(BlockKind::MalformedRequest),
        4 => Just(BlockKind::Response),
        1 => Just(BlockKind::Informational),
        3 => Just(BlockKind::Trailers),
    ];
    let window = prop_oneof![0u32..100, 0u32..200_000, Just((1u32 << 31) - 1)];
    let increment = prop_oneof![
        1 => Just(0u32),
        10 => 1u32..1_000,
        10 => 1u32..100_000,
        1 => Just((1u32 << 31) - 1),
    ];
    prop_oneof![
        16 => (target(), proptest::bool::weighted(0.85), kind, any::<bool>(),
              proptest::bool::weighted(0.2),
              proptest::option::weighted(0.2, any::<u8>()),
              proptest::option::weighted(0.2, 0u32..12))
            .prop_map(|(target, fitting, kind, end_stream, split, pad, priority)| Op::Headers {
                target, fitting, kind, end_stream, split, pad, priority,
            }),
        16 => (target(), prop_oneof![0usize..10, 0usize..16_000], proptest::bool::weighted(0.3),
              proptest::option::weighted(0.2, any::<u8>()))
            .prop_map(|(target, len, end_stream, pad)| Op::Data { target, len, end_stream, pad }),
        2 => (target(), 0u32..12).prop_map(|(target, dependency)| Op::Priority { target, dependency }),
        3 => (target(), 0u32..0x10).prop_map(|(target, code)| Op::Rst { target, code }),
        4 => (proptest::option::of(window),
              proptest::option::weighted(0.3, 16_384u32..=16_777_215),
              proptest::option::weighted(0.3, 0u32..8192),
              proptest::option::weighted(0.3, 0u32..8))
            .prop_map(|(initial_window_size, max_frame_size, header_table_size, max_concurrent_streams)| {
                Op::Settings { initial_window_size, max_frame_size, header_table_size, max_concurrent_streams }
            }),
        4 => Just(Op::SettingsAck),
        2 => any::<bool>().prop_map(|ack| Op::Ping { ack }),
        16 => (proptest::option::weighted(0.7, target()), increment)
            .prop_map(|(target, increment)| Op::WindowUpdate { target, increment }),
        2 => (0u32..12, 0u32..3).prop_map(|(last, code)| Op::GoAway { last, code }),
        1 => (target(), 0usize..20, any::<bool>())
            .prop_map(|(target, len, end_headers)| Op::Continuation { target, len, end_headers }),
        2 => target().prop_map(|target| Op::Unknown { target }),
        4 => prop_oneof![9 => 0u64..2_000, 1 => 0u64..20_000].prop_map(|ms| Op::Advance { ms }),
        2 => target().prop_map(|target| Op::AppReset { target }),
        2 => Just(Op::AppPing),
        1 => Just(Op::AppGoAway),
        8 => prop_oneof![0usize..10, 0usize..100_000].prop_map(|body| Op::AppOpen { body }),
    ]
}

fn block_headers(kind: BlockKind) -> Vec<Header> {
    match kind {
        BlockKind::Request => request(),
        BlockKind::HugeRequest => {
            let mut r = request();
            for i in 0..18 {
                r.push(h(&format!("x-pad-{i}"), &"p".repeat(1_000)));
            }
            r
        }
        BlockKind::MalformedRequest => request_with(&[("Upper", "case")]),
        BlockKind::Response => response(),
        BlockKind::Informational => vec![h(":status", "100")],
        BlockKind::Trailers => trailers(),
    }
}

/// What the peer granted the connection, and what it has used, as the
/// peer (the test) sees it.
struct Model {
    /// Send window of the connection under test, connection level.
    conn_window: i64,
    /// The peer's SETTINGS_INITIAL_WINDOW_SIZE as last sent.
    initial: i64,
    /// Send windows of the streams the connection may send on.
    streams: HashMap<u32, i64>,
    /// Streams opened by the side that opens them (the peer for a server,
    /// the application for a client), and the highest of their ids.
    opened: Vec<u32>,
    max_opened: u32,
    /// Client role: streams the peer has sent a response on.
    responded: HashSet<u32>,
    /// A connection error was seen: nothing more may be written.
    dead: bool,
}

struct Run {
    p: Peer,
    model: Model,
    server: bool,
}

impl Run {
    fn new(server: bool) -> Self {
        let p = if server {
            let mut p = Peer::raw_server(Config::default());
            p.recv_bytes(frame::PREFACE).unwrap();
            p
        } else {
            Peer::raw_client(Config::default())
        };
        let mut run = Self {
            p,
            model: Model {
                conn_window: 65_535,
                initial: 65_535,
                streams: HashMap::new(),
                opened: Vec::new(),
                max_opened: 0,
                responded: HashSet::new(),
                dead: false,
            },
            server,
        };
        run.send(vec![frame::Settings::default().into()]);
        run
    }

    fn send(&mut self, frames: Vec<Frame>) {
        let _ = self.p.send_all(frames);
    }

    /// The stream id for a frame from the peer; `None` skips the frame
    /// (an existing stream is wanted and there is none yet). A new stream
    /// is only opened by the server's peer, with HEADERS (`opening`); for
    /// other frames `New` means the newest stream.
    fn resolve(&self, target: Target, opening: bool) -> Option<u32> {
        let m = &self.model;
        match target {
            Target::New if opening => Some(m.max_opened + if m.max_opened == 0 { 1 } else { 2 }),
            Target::New => m.opened.last().copied(),
            Target::Existing(i) if !m.opened.is_empty() => Some(m.opened[i % m.opened.len()]),
            Target::Existing(_) => None,
            Target::Wild(id) => Some(id),
        }
    }

    fn apply(&mut self, op: Op) {
        match op {
            Op::Headers {
                target,
                fitting,
                kind,
                end_stream,
                split,
                pad,
                priority,
            } => {
                let server = self.server;
                let Some(id) = self
                    .resolve(target, server)
                    .or(self.resolve(Target::New, server))
                else {
                    return;
                };
                let m = &mut self.model;
                let new = id % 2 == 1 && id > m.max_opened;
                let kind = match (fitting, self.server) {
                    (false, _) => kind,
                    (true, true) if new => BlockKind::Request,
                    (true, true) => BlockKind::Trailers,
                    (true, false) if m.responded.insert(id) => BlockKind::Response,
                    (true, false) => BlockKind::Trailers,
                };
                if self.server && new {
                    // A new stream opened by the peer gets the initial window.
                    m.streams.insert(id, m.initial);
                    m.opened.push(id);
                    m.max_opened = id;
                }
                let block = self.p.block(&block_headers(kind));
                let mut pieces: Vec<Bytes> = Vec::new();
                let mut rest = block;
                let max = if split { rest.len() / 2 + 1 } else { 16_000 };
                while !rest.is_empty() {
                    pieces.push(rest.split_to(rest.len().min(max)));
                }
                if pieces.is_empty() {
                    pieces.push(Bytes::new());
                }
                let n = pieces.len();
                let mut frames: Vec<Frame> = Vec::new();
                for (i, fragment) in pieces.into_iter().enumerate() {
                    let last = i + 1 == n;
                    if i == 0 {
                        let mut f =
                            frame::Headers::new(StreamId::new(id), fragment, end_stream, last);
                        f.pad_len = pad;
                        f.priority = priority.map(|dependency| PrioritySpec {
                            dependency: StreamId::new(dependency),
                            exclusive: dependency % 2 == 0,
                            weight: 42,
                        });
                        frames.push(f.into());
                    } else {
                        frames.push(
                            frame::Continuation {
                                stream_id: StreamId::new(id),
                                fragment,
                                end_headers: last,
                            }
                            .into(),
                        );
                    }
                }
                self.send(frames);
            }
            Op::Data {
                target,
                len,
                end_stream,
                pad,
            } => {
                let Some(id) = self.resolve(target, false) else {
                    return;
                };
                let mut d =
                    frame::Data::new(StreamId::new(id), Bytes::from(vec![0x5a; len]), end_stream);
                if let Some(pad) = pad {
                    d = d.with_padding(pad);
                }
                self.send(vec![d.into()]);
            }
            Op::Priority { target, dependency } => {
                let Some(id) = self.resolve(target, false) else {
                    return;
                };
                self.send(vec![frame::Priority {
                    stream_id: StreamId::new(id),
                    spec: PrioritySpec {
                        dependency: StreamId::new(dependency),
                        exclusive: false,
                        weight: 1,
                    },
                }
                .into()])
            }
            Op::Rst { target, code } => {
                let Some(id) = self.resolve(target, false) else {
                    return;
                };
                self.send(vec![frame::RstStream::new(
                    StreamId::new(id),
                    ErrorCode(code),
                )
                .into()])
            }
            Op::Settings {
                initial_window_size,
                max_frame_size,
                header_table_size,
                max_concurrent_streams,
            } => {
                let m = &mut self.model;
                let s = frame::Settings {
                    initial_window_size,
                    max_frame_size,
                    header_table_size,
                    max_concurrent_streams,
                    ..frame::Settings::default()
                };
                if let Some(w) = initial_window_size {
                    let delta = i64::from(w) - m.initial;
                    m.initial = i64::from(w);
                    for window in m.streams.values_mut() {
                        *window += delta;
                    }
                }
                if let Some(n) = max_frame_size {
                    self.p.set_max_frame_size(n);
                }
                self.send(vec![s.into()]);
            }
            Op::SettingsAck => self.send(vec![frame::Settings::ack().into()]),
            Op::Ping { ack } => self.send(vec![frame::Ping {
                ack,
                payload: *b"proptest",
            }
            .into()]),
            Op::WindowUpdate { target, increment } => {
                let Some(id) = target.map_or(Some(0), |t| self.resolve(t, false)) else {
                    return;
                };
                let m = &mut self.model;
                if id == 0 {
                    m.conn_window += i64::from(increment);
                } else if let Some(w) = m.streams.get_mut(&id) {
                    *w += i64::from(increment);
                }
                self.send(vec![
                    frame::WindowUpdate::new(StreamId::new(id), increment).into()
                ]);
            }
            Op::GoAway { last, code } => self.send(vec![frame::GoAway::new(
                StreamId::new(last),
                ErrorCode(code),
            )
            .into()]),
            Op::Continuation {
                target,
                len,
                end_headers,
            } => {
                let Some(id) = self.resolve(target, false) else {
                    return;
                };
                self.send(vec![frame::Continuation {
                    stream_id: StreamId::new(id),
                    fragment: Bytes::from(vec![0x82; len]),
                    end_headers,
                }
                .into()])
            }
            Op::Unknown { target } => {
                let Some(id) = self.resolve(target, false) else {
                    return;
                };
                self.send(vec![frame::Unknown {
                    kind: 0xbb,
                    flags: 0xff,
                    stream_id: StreamId::new(id),
                    payload: Bytes::from_static(b"?"),
                }
                .into()])
            }
            Op::Advance { ms } => {
                self.p.advance(Duration::from_millis(ms));
                let now = self.p.now;
                if self.p.conn.poll_timeout().is_some_and(|t| t <= now) {
                    self.p.conn.handle_timeout(now);
                }
            }
            Op::AppReset { target } => {
                let Some(id) = self.resolve(target, false) else {
                    return;
                };
                let _ = self
                    .p
                    .conn
                    .reset_stream(StreamId::new(id), ErrorCode::CANCEL);
            }
            Op::AppPing => self.p.conn.ping(*b"app-ping"),
            Op::AppGoAway => self.p.conn.go_away(ErrorCode::NO_ERROR),
            Op::AppOpen { body } => {
                if !self.server {
                    if let Ok(id) = self.p.conn.open_stream(request(), false) {
                        let id = id.get();
                        let m = &mut self.model;
                        m.streams.insert(id, m.initial);
                        m.opened.push(id);
                        m.max_opened = id;
                        let _ = self.p.conn.send_data(
                            StreamId::new(id),
                            Bytes::from(vec![0x11; body]),
                            true,
                        );
                    }
                }
            }
        }
    }

    /// The server application answers every request it sees.
    fn serve(&mut self) {
        for e in self.p.events() {
            assert!(!self.model.dead, "event after a connection error: {e:?}");
            match e {
                Event::Headers { stream_id, .. } if self.server => {
                    let c = &mut self.p.conn;
                    let body = (stream_id.get() as usize * 7_919) % 70_000;
                    let _ = c.send_headers(stream_id, response(), false);
                    let _ = c.send_data(stream_id, Bytes::from(vec![0x33; body]), false);
                    let _ = c.send_trailers(stream_id, trailers());
                }
                Event::ConnectionError(_) => self.model.dead = true,
                _ => {}
            }
        }
    }

    /// Everything written since the last check, against the model.
    fn check(&mut self) -> Result<(), TestCaseError> {
        let was_dead = self.model.dead;
        self.serve();
        let frames = self.p.output(); // panics on anything that is not a frame
        if was_dead {
            prop_assert_eq!(frames, vec![], "output after a connection error");
            return Ok(());
        }
        let mut goaway_error = false;
        for f in &frames {
            prop_assert!(!goaway_error, "{:?} after GOAWAY with an error", f);
            match f {
                Frame::Data(d) => {
                    let n = i64::from(d.flow_len);
                    let m = &mut self.model;
                    m.conn_window -= n;
                    prop_assert!(m.conn_window >= 0, "connection window overrun");
                    let Some(w) = m.streams.get_mut(&d.stream_id.get()) else {
                        return Err(TestCaseError::fail(format!(
                            "DATA on stream {} the peer never opened",
                            d.stream_id
                        )));
                    };
                    *w -= n;
                    prop_assert!(*w >= 0, "stream {} window overrun: {}", d.stream_id, *w);
                }
                Frame::RstStream(r) => {
                    prop_assert!(
                        r.stream_id.is_client_initiated()
                            && r.stream_id.get() <= self.model.max_opened,
                        "RST_STREAM on idle stream {}",
                        r.stream_id
                    );
                }
                Frame::GoAway(g) if g.code != ErrorCode::NO_ERROR => goaway_error = true,
                Frame::PushPromise(_) => prop_assert!(false, "PUSH_PROMISE sent"),
                _ => {}
            }
        }
        if goaway_error {
            self.model.dead = true;
            prop_assert!(self.p.conn.is_closed());
        }
        Ok(())
    }
}

fn run_ops(server: bool, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let mut run = Run::new(server);
    run.check()?;
    for op in ops {
        run.apply(op);
        run.check()?;
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn server_survives_random_frames(ops in proptest::collection::vec(op(), 0..80)) {
        run_ops(true, ops)?;
    }

    #[test]
    fn client_survives_random_frames(ops in proptest::collection::vec(op(), 0..80)) {
        run_ops(false, ops)?;
    }

    #[test]
    fn arbitrary_bytes_never_panic(
        chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 0..8),
        server in any::<bool>(),
    ) {
        let now = Instant::now();
        let mut c = if server {
            Connection::server(Config::default())
        } else {
            Connection::client(Config::default())
        };
        let mut out = BytesMut::new();
        for (i, chunk) in chunks.iter().enumerate() {
            let mut bytes = Vec::new();
            if server && i == 0 {
                bytes.extend_from_slice(frame::PREFACE);
            }
            bytes.extend_from_slice(chunk);
            let _ = c.recv(&bytes, now);
            while c.poll_event().is_some() {}
            c.transmit_into(&mut out);
        }
        c.transmit_into(&mut out);
        // Whatever came out parses.
        if !server {
            prop_assert_eq!(&out[..frame::PREFACE.len()], &frame::PREFACE[..]);
            let _ = out.split_to(frame::PREFACE.len());
        }
        let mut reader = frame::FrameReader::default();
        while let Some(f) = reader.read(&mut out).map_err(|e| TestCaseError::fail(e.to_string()))? {
            let _ = f;
        }
        prop_assert!(out.is_empty());
    }
}
