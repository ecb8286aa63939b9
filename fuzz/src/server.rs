//! `server_bytes` and `server_frames`: a gRPC [`Server`] fed hostile input.
//!
//! Both targets drive the same [`Harness`]: it feeds the server the client
//! preface and then the input, with a clock that advances; answers every
//! call it is told about (a small response, an error status, or two
//! messages, depending on the call id); calls `handle_timeout`; and drains
//! `poll_transmit` after every step. Everything the server writes is
//! decoded (frames with a [`FrameReader`], header blocks with our HPACK
//! [`Decoder`]) and checked against what a client may expect, given the
//! frames the client actually sent (the harness reads its own input the
//! way the server does, to know the client's settings, windows and
//! streams):
//!
//! * the output is whole, valid frames, starting with SETTINGS, each within
//!   the client's SETTINGS_MAX_FRAME_SIZE;
//! * after a GOAWAY with an error code nothing more is sent; after any
//!   GOAWAY, no HEADERS on streams above its last stream id, and last
//!   stream ids never grow;
//! * HEADERS only on streams the client opened, at most a response block
//!   and a trailer block per stream, CONTINUATION only right after a
//!   HEADERS without END_HEADERS on the same stream; every block decodes
//!   and is a well-formed response / trailers with a `grpc-status` where
//!   the call ends; the encoder's table respects the client's
//!   SETTINGS_HEADER_TABLE_SIZE;
//! * DATA only between a stream's response headers and its end, within the
//!   client's stream and connection flow-control windows, and made of the
//!   gRPC messages the harness sent;
//! * nothing on a stream after the server reset it; PING and SETTINGS acks
//!   only answer the client's PINGs and SETTINGS; no PUSH_PROMISE, PRIORITY
//!   or unknown frames;
//! * output is bounded by input (see [`Harness::check_bound`]).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use arbitrary::{Arbitrary, Unstructured};
use bytes::{Bytes, BytesMut};
use crisp_core::grpc::codec::{self, Deframer};
use crisp_core::grpc::server::{CallError, Event, Server, ServerConfig};
use crisp_core::grpc::Status;
use crisp_core::h2::frame::{self, Frame, FrameReader, PrioritySpec, MAX_MAX_FRAME_SIZE};
use crisp_core::h2::hpack::{Decoder, Encoder, Header};
use crisp_core::h2::message::{self, BlockKind};
use crisp_core::h2::{Config, ErrorCode, StreamId};
use crisp_proto::cri;
use crisp_proto::methods::{CallKind, METHODS};

use crate::util::{chunks, Rng};

/// The message every call is answered with.
fn response() -> cri::VersionResponse {
    cri::VersionResponse {
        version: "0.1.0".into(),
        runtime_name: "crisp".into(),
        runtime_version: "0.1.0".into(),
        runtime_api_version: "v1".into(),
    }
}

/// The response as it appears on the wire, without its 5-byte prefix.
fn response_bytes() -> Vec<u8> {
    prost::Message::encode_to_vec(&response())
}

/// Most response-message bytes one call can cause: two messages, each
/// with its gRPC prefix and in the worst case its own DATA frame head (a
/// split caused by flow control costs the client a WINDOW_UPDATE, which is
/// counted in the 2 x input allowance).
fn data_per_call() -> usize {
    2 * (frame::HEADER_LEN + codec::PREFIX_LEN + response_bytes().len())
}

/// Most header-block bytes (HEADERS + CONTINUATION, frame heads included)
/// one stream can cause. The largest block is a rejection whose
/// `grpc-message` echoes the `:path`: at most max_header_list_size bytes
/// of path, up to 3x longer after lossy UTF-8 conversion (U+FFFD per bad
/// byte) and 3x again after percent-encoding, sent as a plain literal
/// (Huffman only when shorter), split into frames of at least 16 KiB.
/// Plus a response block and trailers of a few hundred bytes.
fn header_budget(max_header_list_size: u32) -> usize {
    let block = 9 * max_header_list_size as usize + 1024;
    block + frame::HEADER_LEN * (block / 16_384 + 1) + 1024
}

/// What the server has been told by the client: the harness reads its own
/// input the way the server does.
struct ClientModel {
    reader: FrameReader,
    buf: BytesMut,
    initial_window: i64,
    max_frame_size: u32,
    header_table_size: u32,
    conn_window_updates: i64,
    stream_window_updates: HashMap<StreamId, i64>,
    /// Streams the client sent HEADERS on.
    opened: HashMap<StreamId, ()>,
    pings: HashMap<[u8; 8], usize>,
    settings: usize,
}

impl ClientModel {
    fn new() -> Self {
        Self {
            reader: FrameReader::new(MAX_MAX_FRAME_SIZE),
            buf: BytesMut::new(),
            initial_window: 65_535,
            max_frame_size: frame::DEFAULT_MAX_FRAME_SIZE,
            header_table_size: 4096,
            conn_window_updates: 0,
            stream_window_updates: HashMap::new(),
            opened: HashMap::new(),
            pings: HashMap::new(),
            settings: 0,
        }
    }

    /// Bytes the client sent after the preface magic. Frames the server
    /// would reject are modelled too where it does not matter: a connection
    /// error stops all output, a stream error stops output on the stream.
    fn feed(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
        loop {
            match self.reader.read(&mut self.buf) {
                Ok(Some(f)) => self.on_frame(f),
                Ok(None) => return,
                Err(crisp_core::h2::ProtocolError::Stream(_)) => continue,
                Err(_) => {
                    // The server fails here too (or earlier); stop modelling.
                    self.buf.clear();
                    self.reader = FrameReader::new(MAX_MAX_FRAME_SIZE);
                    return;
                }
            }
        }
    }

    fn on_frame(&mut self, f: Frame) {
        match f {
            Frame::Settings(s) if !s.ack => {
                self.settings += 1;
                if let Some(v) = s.initial_window_size {
                    self.initial_window = i64::from(v);
                }
                if let Some(v) = s.max_frame_size {
                    self.max_frame_size = v;
                }
                if let Some(v) = s.header_table_size {
                    self.header_table_size = v;
                }
            }
            Frame::Ping(p) if !p.ack => *self.pings.entry(p.payload).or_default() += 1,
            Frame::WindowUpdate(w) if w.stream_id == 0 => {
                self.conn_window_updates += i64::from(w.increment)
            }
            Frame::WindowUpdate(w) => {
                *self.stream_window_updates.entry(w.stream_id).or_default() +=
                    i64::from(w.increment)
            }
            Frame::Headers(h) => {
                self.opened.insert(h.stream_id, ());
            }
            _ => {}
        }
    }
}

#[derive(Default)]
struct OutStream {
    blocks: u32,
    ended: bool,
    reset: bool,
    data_sent: i64,
    deframer: Option<Deframer>,
    header_bytes: usize,
    /// The response is an HTTP error for a request that was not gRPC: its
    /// body is plain text, not gRPC messages.
    plain_body: bool,
}

/// Checks the server's output frame by frame.
struct Observer {
    reader: FrameReader,
    buf: BytesMut,
    decoder: Decoder,
    frames: usize,
    /// A header block still arriving in CONTINUATION frames.
    partial: Option<(StreamId, BytesMut, bool)>,
    streams: HashMap<StreamId, OutStream>,
    conn_sent: i64,
    fatal_goaway: bool,
    goaway_last: Option<StreamId>,
    settings_acks: usize,
    /// Bytes of everything but HEADERS and CONTINUATION frames.
    other_bytes: usize,
    total_bytes: usize,
    response: Vec<u8>,
}

impl Observer {
    fn new() -> Self {
        Self {
            reader: FrameReader::new(MAX_MAX_FRAME_SIZE),
            buf: BytesMut::new(),
            decoder: Decoder::new(4096),
            frames: 0,
            partial: None,
            streams: HashMap::new(),
            conn_sent: 0,
            fatal_goaway: false,
            goaway_last: None,
            settings_acks: 0,
            other_bytes: 0,
            total_bytes: 0,
            response: response_bytes(),
        }
    }

    fn output(&mut self, bytes: &[u8], client: &mut ClientModel) {
        self.total_bytes += bytes.len();
        self.buf.extend_from_slice(bytes);
        loop {
            let len = self.buf.len();
            match self.reader.read(&mut self.buf) {
                Ok(Some(f)) => self.on_frame(f, len - self.buf.len(), client),
                Ok(None) => break,
                Err(e) => panic!("server sent an invalid frame: {e:?}"),
            }
        }
        assert!(
            self.buf.is_empty(),
            "poll_transmit returned a partial frame"
        );
    }

    fn on_frame(&mut self, f: Frame, len: usize, client: &mut ClientModel) {
        assert!(!self.fatal_goaway, "{f:?} after a GOAWAY with an error");
        assert!(
            len - frame::HEADER_LEN <= client.max_frame_size as usize,
            "frame of {len} bytes over the client's SETTINGS_MAX_FRAME_SIZE {}",
            client.max_frame_size
        );
        if self.frames == 0 {
            assert!(
                matches!(&f, Frame::Settings(s) if !s.ack),
                "first frame is not SETTINGS: {f:?}"
            );
        }
        self.frames += 1;
        if let Some((id, _, _)) = &self.partial {
            assert!(
                matches!(&f, Frame::Continuation(c) if c.stream_id == *id),
                "{f:?} interrupts a header block on stream {id}"
            );
        }
        let id = f.stream_id();
        if !matches!(f, Frame::Headers(_) | Frame::Continuation(_)) {
            self.other_bytes += len;
        }
        match f {
            Frame::Data(d) => {
                let n = i64::from(d.flow_len);
                let conn = 65_535 + client.conn_window_updates - self.conn_sent;
                assert!(n <= conn, "DATA of {n} over the connection window {conn}");
                self.conn_sent += n;
                let response = std::mem::take(&mut self.response);
                let s = self.open_stream(id, client);
                assert!(s.blocks >= 1, "DATA before HEADERS on {id}");
                assert!(!s.ended, "DATA after END_STREAM on {id}");
                assert!(d.pad_len.is_none());
                let window = client.initial_window
                    + client.stream_window_updates.get(&id).copied().unwrap_or(0)
                    - s.data_sent;
                assert!(n <= window, "DATA of {n} over the stream window {window}");
                s.data_sent += n;
                if s.plain_body {
                    s.ended |= d.end_stream;
                    self.response = response;
                    return;
                }
                let deframer = s.deframer.get_or_insert_with(|| Deframer::new(1 << 20));
                deframer.push(d.data);
                while let Some(m) = deframer.next_message().expect("server's gRPC framing") {
                    assert!(!m.compressed);
                    assert_eq!(&m.payload[..], &response[..], "response message");
                }
                if d.end_stream {
                    s.ended = true;
                    assert_eq!(deframer.finish(), Ok(()));
                }
                self.response = response;
            }
            Frame::Headers(h) => {
                if let Some(last) = self.goaway_last {
                    assert!(id <= last, "HEADERS on {id} after GOAWAY({last})");
                }
                let s = self.open_stream(id, client);
                s.header_bytes += len;
                s.blocks += 1;
                assert!(s.blocks <= 2, "a third header block on {id}");
                assert!(!s.ended, "HEADERS after END_STREAM on {id}");
                assert!(h.priority.is_none() && h.pad_len.is_none());
                let block = BytesMut::from(&h.fragment[..]);
                if h.end_headers {
                    self.on_block(id, block.freeze(), h.end_stream, client);
                } else {
                    self.partial = Some((id, block, h.end_stream));
                }
            }
            Frame::Continuation(c) => {
                let Some((_, mut block, end_stream)) = self.partial.take() else {
                    panic!("CONTINUATION without HEADERS on {id}");
                };
                self.open_stream(id, client).header_bytes += len;
                block.extend_from_slice(&c.fragment);
                if c.end_headers {
                    self.on_block(id, block.freeze(), end_stream, client);
                } else {
                    self.partial = Some((id, block, end_stream));
                }
            }
            Frame::RstStream(_) => {
                assert_ne!(id, 0);
                self.streams.entry(id).or_default().reset = true;
            }
            Frame::Settings(s) => {
                if s.ack {
                    self.settings_acks += 1;
                    assert!(
                        self.settings_acks <= client.settings,
                        "unsolicited SETTINGS ack"
                    );
                } else {
                    assert_eq!(self.frames, 1, "a second SETTINGS from the server");
                }
            }
            Frame::Ping(p) => {
                assert!(p.ack, "the server does not PING");
                let n = client
                    .pings
                    .get_mut(&p.payload)
                    .expect("PING ack for no PING");
                assert!(*n > 0, "more PING acks than PINGs");
                *n -= 1;
            }
            Frame::GoAway(g) => {
                if let Some(prev) = self.goaway_last {
                    assert!(g.last_stream_id <= prev, "GOAWAY last stream id grew");
                }
                self.goaway_last = Some(g.last_stream_id);
                if g.code != ErrorCode::NO_ERROR {
                    self.fatal_goaway = true;
                }
            }
            Frame::WindowUpdate(w) => {
                if w.stream_id != 0 {
                    assert!(
                        client.opened.contains_key(&w.stream_id),
                        "WINDOW_UPDATE on a stream the client did not open"
                    );
                }
            }
            f @ (Frame::PushPromise(_) | Frame::Priority(_) | Frame::Unknown(_)) => {
                panic!("server sent {f:?}")
            }
        }
    }

    /// State of a stream the server sends HEADERS or DATA on: one the
    /// client opened, not reset by the server.
    fn open_stream(&mut self, id: StreamId, client: &ClientModel) -> &mut OutStream {
        assert!(id.is_client_initiated(), "server frame on even stream {id}");
        assert!(
            client.opened.contains_key(&id),
            "server frame on stream {id}, which the client never opened"
        );
        let s = self.streams.entry(id).or_default();
        assert!(!s.reset, "frame on stream {id} after RST_STREAM");
        s
    }

    fn on_block(&mut self, id: StreamId, block: Bytes, end_stream: bool, client: &ClientModel) {
        let mut headers = Vec::new();
        self.decoder
            .decode(&block, usize::MAX, &mut headers)
            .unwrap_or_else(|e| panic!("server's header block does not decode: {e}"));
        let limit = (client.header_table_size as usize).min(4096);
        assert!(
            self.decoder.table_size() <= limit,
            "server's HPACK table {} over the client's limit {limit}",
            self.decoder.table_size()
        );
        let s = self.streams.entry(id).or_default();
        let kind = if s.blocks == 1 {
            BlockKind::Response
        } else {
            BlockKind::Trailers
        };
        if let Err(e) = message::check(&headers, kind) {
            panic!("malformed {kind:?} from the server ({e}): {headers:?}");
        }
        let has = |name: &[u8]| headers.iter().any(|h| &h.name[..] == name);
        if kind == BlockKind::Response {
            assert!(has(b":status"), "response without :status");
        } else {
            assert!(end_stream, "trailers without END_STREAM");
        }
        let status_200 = headers
            .iter()
            .any(|h| &h.name[..] == b":status" && &h.value[..] == b"200");
        if kind == BlockKind::Response && !status_200 && !end_stream {
            assert!(
                headers
                    .iter()
                    .any(|h| &h.name[..] == b"content-type" && h.value.starts_with(b"text/plain")),
                "a non-200 response with a body must be plain text: {headers:?}"
            );
            s.plain_body = true;
        }
        if end_stream && status_200 {
            assert!(
                has(b"grpc-status"),
                "call ended without grpc-status: {headers:?}"
            );
        }
        if end_stream {
            s.ended = true;
        }
    }
}

/// What a run did, for choosing seeds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Stats {
    pub calls: usize,
    pub goaway: bool,
    pub output_frames: usize,
}

/// The server, its clock and the checks.
pub struct Harness {
    server: Server,
    now: Instant,
    max_header_list_size: u32,
    input_bytes: usize,
    calls: usize,
    client: ClientModel,
    observer: Observer,
    connection_error: bool,
}

impl Harness {
    pub fn new(config: ServerConfig) -> Self {
        let max_header_list_size = config.h2.max_header_list_size;
        let mut h = Self {
            server: Server::new(config),
            now: Instant::now(),
            max_header_list_size,
            input_bytes: 0,
            calls: 0,
            client: ClientModel::new(),
            observer: Observer::new(),
            connection_error: false,
        };
        h.drain();
        h
    }

    /// The client preface's magic; the SETTINGS that completes it comes
    /// with the input.
    pub fn preface(&mut self) {
        self.input_bytes += frame::PREFACE.len();
        let _ = self.server.recv(frame::PREFACE, self.now);
        self.step();
    }

    pub fn feed(&mut self, data: &[u8]) {
        self.input_bytes += data.len();
        self.client.feed(data);
        let result = self.server.recv(data, self.now);
        if result.is_err() {
            self.connection_error = true;
        }
        self.step();
    }

    pub fn advance(&mut self, d: Duration) {
        self.now += d;
        if self.server.poll_timeout().is_some_and(|t| t <= self.now) {
            self.server.handle_timeout(self.now);
        }
        self.step();
    }

    pub fn timeout(&mut self) {
        self.server.handle_timeout(self.now);
        self.step();
    }

    pub fn go_away(&mut self) {
        self.server.go_away();
        self.step();
    }

    fn step(&mut self) {
        self.answer();
        self.drain();
    }

    /// Answer what the server reports: every complete call gets an answer
    /// that depends on its id, so all kinds of answers are exercised.
    fn answer(&mut self) {
        let events: Vec<Event> = std::iter::from_fn(|| self.server.poll_event()).collect();
        for (i, ev) in events.iter().enumerate() {
            // A call announced and then cancelled within the same batch of
            // events (a connection error, a reset right after the request)
            // no longer takes commands.
            let gone_later = |id| {
                events[i + 1..].iter().any(|e| {
                    matches!(e, Event::Cancelled { id: x, .. } if *x == id)
                        || matches!(e, Event::ConnectionError(_))
                })
            };
            match ev {
                Event::Request { call, message: _ } => {
                    // The request headers stay with the server while the
                    // call lives (a call already gone has none).
                    match self.server.request_headers(call.id) {
                        Some(headers) => {
                            let path = headers.iter().find(|h| &h.name[..] == b":path");
                            assert_eq!(
                                path.map(|h| &h.value[..]),
                                Some(call.method.path.as_bytes()),
                                "call routed to the wrong method"
                            );
                        }
                        None => assert!(gone_later(call.id), "headers of a live call missing"),
                    }
                    if let Some(deadline) = call.deadline {
                        assert!(deadline >= self.now);
                    }
                    let id = call.id;
                    let result = match id.get() % 4 {
                        3 => self.server.finish(id, &Status::not_found("no such thing")),
                        1 if call.method.kind == CallKind::ServerStreaming => self
                            .server
                            .send_message(id, &response())
                            .and_then(|()| self.server.send_message(id, &response()))
                            .and_then(|()| self.server.finish(id, &Status::ok())),
                        _ => self.server.respond(id, &response()),
                    };
                    if gone_later(id) {
                        assert!(matches!(result, Ok(()) | Err(CallError::UnknownCall)));
                    } else {
                        assert_eq!(result, Ok(()), "answering a call just announced");
                    }
                    self.calls += 1;
                }
                Event::StreamStarted { call } => {
                    // No CRI rpc streams requests; answer at once.
                    let _ = self.server.respond(call.id, &response());
                    self.calls += 1;
                }
                Event::Message { .. } => {}
                Event::HalfClose { id } => {
                    let _ = self.server.finish(*id, &Status::ok());
                }
                Event::Cancelled { id, .. } => {
                    assert_eq!(
                        self.server.finish(*id, &Status::ok()),
                        Err(CallError::UnknownCall),
                        "a cancelled call still accepts commands"
                    );
                }
                Event::GoAway => {}
                Event::ConnectionError(_) => self.connection_error = true,
            }
        }
    }

    fn drain(&mut self) {
        while let Some(bytes) = self.server.poll_transmit() {
            assert!(!bytes.is_empty());
            self.observer.output(&bytes, &mut self.client);
        }
    }

    /// Output bounded by input.
    ///
    /// Header blocks are checked per stream: at most two blocks, together
    /// within [`header_budget`] (done as they arrive). Everything else
    /// must fit `2 x input + data_per_call x calls + 32 x streams + 512`:
    /// * each control frame the server writes answers one client frame at
    ///   most as large (PING ack 17 for 17, SETTINGS ack 9 for >= 9) or is
    ///   an RST_STREAM (13) or WINDOW_UPDATE (13) caused by a client frame
    ///   of >= 9 bytes; a WINDOW_UPDATE returning credit needs half a
    ///   window of received DATA first. So these take <= 2 x input;
    /// * DATA carries only the harness's answers: `data_per_call` per call;
    /// * per stream the server may add one RST_STREAM of its own (after an
    ///   early answer, or a deadline): 32 per stream it wrote on;
    /// * 512 covers the initial SETTINGS and WINDOW_UPDATE and GOAWAYs.
    pub fn check_bound(&self) {
        let budget = header_budget(self.max_header_list_size);
        let mut streams = 0;
        for (id, s) in &self.observer.streams {
            assert!(
                s.header_bytes <= budget,
                "{} header bytes on stream {id} (budget {budget})",
                s.header_bytes
            );
            streams += 1;
        }
        let bound = 2 * self.input_bytes + data_per_call() * self.calls + 32 * streams + 512;
        assert!(
            self.observer.other_bytes <= bound,
            "output of {} non-header bytes for {} input bytes, {} calls, {streams} streams",
            self.observer.other_bytes,
            self.input_bytes,
            self.calls
        );
        let header_total: usize = self.observer.streams.values().map(|s| s.header_bytes).sum();
        assert_eq!(
            self.observer.other_bytes + header_total,
            self.observer.total_bytes
        );
    }

    pub fn finish(mut self) -> Stats {
        // Let every timer fire.
        self.advance(Duration::from_secs(1 << 20));
        if self.connection_error {
            assert!(
                self.observer.goaway_last.is_some(),
                "connection error without GOAWAY"
            );
        }
        self.check_bound();
        Stats {
            calls: self.calls,
            goaway: self.observer.goaway_last.is_some(),
            output_frames: self.observer.frames,
        }
    }
}

/// `server_bytes`: `[seed: 2 bytes]` then the bytes the client sends after
/// the preface magic, delivered in seed-chosen chunks with the clock
/// advancing between them (mostly by milliseconds, sometimes by seconds so
/// deadlines and the SETTINGS timeout fire). Unless the top bit of the
/// first seed byte is set, an empty SETTINGS completes the preface before
/// the input, so that mutations of the input's first frame do not all end
/// in "first frame is not SETTINGS".
pub fn server_bytes(data: &[u8]) {
    let [a, b, input @ ..] = data else {
        return;
    };
    let mut rng = Rng::new(u64::from(*a) << 8 | u64::from(*b));
    let mut h = Harness::new(ServerConfig::default());
    h.preface();
    if a & 0x80 == 0 {
        let mut settings = BytesMut::new();
        frame::Settings::default().encode(&mut settings);
        h.feed(&settings);
    }
    for chunk in chunks(input, &mut rng) {
        h.feed(chunk);
        match rng.below(16) {
            0 => h.advance(Duration::from_secs(1 + rng.below(20) as u64)),
            1..=7 => h.advance(Duration::from_millis(rng.below(50) as u64)),
            8 => h.timeout(),
            _ => {}
        }
    }
    let _ = h.finish();
}

// ---- server_frames: structured, well-formed but hostile frames ----

#[derive(Arbitrary, Debug)]
pub struct FramesInput {
    config: u8,
    settings: Vec<SettingParam>,
    steps: Vec<Step>,
}

#[derive(Arbitrary, Debug)]
enum Step {
    Frames(Vec<FrameSpec>),
    /// One frame delivered in two reads, cut at this offset.
    Split(FrameSpec, u16),
    Flood(FloodKind, u16),
    AdvanceMillis(u16),
    AdvanceSecs(u8),
    Timeout,
    GoAway,
    Raw(Vec<u8>),
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum FloodKind {
    Ping,
    Settings,
    RapidReset,
    EmptyData,
    Continuation,
    WindowUpdate,
    Priority,
    Requests,
    Unknown,
}

#[derive(Arbitrary, Debug)]
enum StreamRef {
    New,
    Last,
    Recent(u8),
    Zero,
    Even(u8),
    Raw(u32),
}

#[derive(Arbitrary, Debug)]
struct SettingParam {
    id: u8,
    value: SettingValue,
}

#[derive(Arbitrary, Debug)]
enum SettingValue {
    Small(u16),
    Raw(u32),
}

#[derive(Arbitrary, Debug)]
enum Increment {
    Small(u16),
    Raw(u32),
    Max,
}

#[derive(Arbitrary, Debug)]
enum FrameSpec {
    Headers {
        stream: StreamRef,
        block: BlockSpec,
        end_stream: bool,
        /// 0: one HEADERS with END_HEADERS; n: the block split over a
        /// HEADERS and n CONTINUATION frames; 255: no END_HEADERS at all.
        split: u8,
        priority: Option<(u32, bool, u8)>,
        pad: Option<u8>,
    },
    Continuation {
        stream: StreamRef,
        block: BlockSpec,
        end_headers: bool,
    },
    Data {
        stream: StreamRef,
        body: Body,
        end_stream: bool,
        pad: Option<u8>,
    },
    Priority {
        stream: StreamRef,
        dependency: StreamRef,
        exclusive: bool,
        weight: u8,
    },
    RstStream {
        stream: StreamRef,
        code: u32,
    },
    Settings {
        ack: bool,
        params: Vec<SettingParam>,
    },
    PushPromise {
        stream: StreamRef,
        promised: u32,
        block: Vec<u8>,
        end_headers: bool,
    },
    Ping {
        ack: bool,
        payload: [u8; 8],
    },
    GoAway {
        last: StreamRef,
        code: u32,
        debug: Vec<u8>,
    },
    WindowUpdate {
        stream: StreamRef,
        increment: Increment,
    },
    /// Any frame type (known ones included) with an arbitrary payload.
    Raw {
        kind: u8,
        flags: u8,
        stream: StreamRef,
        payload: Vec<u8>,
    },
}

#[derive(Arbitrary, Debug)]
enum BlockSpec {
    Request(RequestSpec),
    Fields(Vec<FieldSpec>),
    Raw(Vec<u8>),
}

#[derive(Arbitrary, Debug)]
struct RequestSpec {
    /// Index into the method table; past it, odd paths.
    method: u8,
    /// Bits that break the request in various ways.
    flaws: u8,
    timeout: Option<(u32, u8)>,
    encoding: Option<u8>,
    extra: Vec<FieldSpec>,
}

#[derive(Arbitrary, Debug)]
struct FieldSpec {
    name: NameSpec,
    value: ValueSpec,
    sensitive: bool,
}

#[derive(Arbitrary, Debug)]
enum NameSpec {
    Known(u8),
    Raw(Vec<u8>),
}

#[derive(Arbitrary, Debug)]
enum ValueSpec {
    Known(u8),
    Raw(Vec<u8>),
    Big(u16, u8),
}

#[derive(Arbitrary, Debug)]
enum Body {
    /// `count` real request messages (the default message of the method's
    /// request type, or a VersionRequest).
    Grpc(u8),
    Raw(Vec<u8>),
    Fill(u16, u8),
    /// A lone message prefix.
    Prefix(u8, u32),
}

const NAMES: &[&str] = &[
    "x-a",
    "user-agent",
    "grpc-timeout",
    "content-length",
    "te",
    "connection",
    ":path",
    ":status",
    "Upper",
    "",
    "grpc-encoding",
    "grpc-accept-encoding",
    "cookie",
    "content-type",
    ":method",
    "x-b",
];

const VALUES: &[&str] = &[
    "",
    "1",
    "trailers",
    "gzip",
    "100m",
    " x",
    "a\r\nb",
    "application/grpc",
    "POST",
    "0",
    "18446744073709551616",
    "identity",
];

/// The client side of the hostile conversation: stream ids and HPACK state.
struct Client {
    next_id: u32,
    recent: Vec<u32>,
    encoder: Encoder,
}

impl Client {
    fn stream(&mut self, r: &StreamRef) -> StreamId {
        StreamId::new(self.stream_number(r))
    }

    fn stream_number(&mut self, r: &StreamRef) -> u32 {
        match r {
            StreamRef::New => {
                let id = self.next_id;
                self.next_id = (self.next_id + 2) & 0x7fff_ffff;
                if self.recent.len() == 8 {
                    self.recent.remove(0);
                }
                self.recent.push(id);
                id
            }
            StreamRef::Last => self.recent.last().copied().unwrap_or(1),
            StreamRef::Recent(i) => {
                let n = self.recent.len();
                if n == 0 {
                    1
                } else {
                    self.recent[usize::from(*i) % n]
                }
            }
            StreamRef::Zero => 0,
            StreamRef::Even(i) => 2 * (u32::from(*i) + 1),
            StreamRef::Raw(v) => v & 0x7fff_ffff,
        }
    }

    fn field(f: &FieldSpec) -> Header {
        let name = match &f.name {
            NameSpec::Known(i) => {
                Bytes::from_static(NAMES[usize::from(*i) % NAMES.len()].as_bytes())
            }
            NameSpec::Raw(v) => Bytes::copy_from_slice(v),
        };
        let value = match &f.value {
            ValueSpec::Known(i) => {
                Bytes::from_static(VALUES[usize::from(*i) % VALUES.len()].as_bytes())
            }
            ValueSpec::Raw(v) => Bytes::copy_from_slice(v),
            ValueSpec::Big(n, b) => Bytes::from(vec![*b; usize::from(*n) % 20_000]),
        };
        Header {
            name,
            value,
            sensitive: f.sensitive,
        }
    }

    fn request(r: &RequestSpec) -> Vec<Header> {
        let flaw = |bit: u8| r.flaws & (1 << bit) != 0;
        let mut h = Vec::new();
        if flaw(6) {
            h.push(Header::from_static("x-first", "1"));
        }
        h.push(Header::from_static(
            ":method",
            if flaw(0) { "GET" } else { "POST" },
        ));
        if !flaw(1) {
            h.push(Header::from_static(":scheme", "http"));
        }
        let i = usize::from(r.method) % 48;
        let path: Bytes = match i {
            0..=40 => Bytes::from_static(METHODS[i].path.as_bytes()),
            41 => Bytes::from_static(b"/"),
            42 => Bytes::new(),
            43 => Bytes::from(vec![b'a'; 4000]),
            44 => Bytes::from_static(b"/runtime.v1.RuntimeService/version"),
            45 => Bytes::from(vec![0xff; 100]),
            _ => Bytes::from_static(b"/x"),
        };
        h.push(Header::new(Bytes::from_static(b":path"), path));
        if !flaw(2) {
            h.push(Header::from_static(":authority", "localhost"));
        }
        h.push(Header::from_static(
            "content-type",
            match (flaw(3), flaw(4)) {
                (false, false) => "application/grpc",
                (true, false) => "application/grpc+proto",
                (false, true) => "text/plain",
                (true, true) => "application/grpcx",
            },
        ));
        if !flaw(5) {
            h.push(Header::from_static("te", "trailers"));
        }
        if let Some((v, unit)) = r.timeout {
            let unit = b"HMSmunx?"[usize::from(unit) % 8] as char;
            let v = format!("{}{unit}", v % 1_000_000_000);
            h.push(Header::new(Bytes::from_static(b"grpc-timeout"), v));
        }
        if let Some(e) = r.encoding {
            let e = ["identity", "gzip", "deflate", "br", "x"][usize::from(e) % 5];
            h.push(Header::from_static("grpc-encoding", e));
        }
        if flaw(7) {
            h.push(Header::from_static("content-length", "5"));
        }
        h.extend(r.extra.iter().map(Self::field));
        h
    }

    fn block(&mut self, b: &BlockSpec) -> Bytes {
        let list = match b {
            BlockSpec::Request(r) => Self::request(r),
            BlockSpec::Fields(f) => f.iter().map(Self::field).collect(),
            BlockSpec::Raw(v) => return Bytes::copy_from_slice(v),
        };
        let mut dst = BytesMut::new();
        self.encoder.encode(&list, &mut dst);
        dst.freeze()
    }

    fn body(b: &Body) -> Bytes {
        match b {
            Body::Grpc(n) => {
                let mut dst = BytesMut::new();
                for i in 0..(n % 4) {
                    if i % 2 == 0 {
                        let m = cri::VersionRequest {
                            version: "v1".into(),
                        };
                        let _ = codec::encode_message(&m, &mut dst);
                    } else {
                        let _ = codec::encode_payload(false, &[], &mut dst);
                    }
                }
                dst.freeze()
            }
            Body::Raw(v) => Bytes::copy_from_slice(v),
            Body::Fill(n, b) => Bytes::from(vec![*b; usize::from(*n) % 40_000]),
            Body::Prefix(flag, len) => {
                let mut v = vec![*flag];
                v.extend_from_slice(&len.to_be_bytes());
                Bytes::from(v)
            }
        }
    }

    fn settings(params: &[SettingParam]) -> Bytes {
        let mut p = Vec::new();
        for s in params {
            p.extend_from_slice(&u16::from(s.id % 10).to_be_bytes());
            let v = match s.value {
                SettingValue::Small(v) => u32::from(v),
                SettingValue::Raw(v) => v,
            };
            p.extend_from_slice(&v.to_be_bytes());
        }
        Bytes::from(p)
    }

    fn encode(&mut self, f: &FrameSpec, out: &mut BytesMut) {
        match f {
            FrameSpec::Headers {
                stream,
                block,
                end_stream,
                split,
                priority,
                pad,
            } => {
                let id = self.stream(stream);
                let block = self.block(block);
                let pieces = match split {
                    0 | 255 => 1,
                    n => usize::from(*n) + 1,
                };
                let size = block.len().div_ceil(pieces).max(1);
                let mut parts = block.chunks(size).map(Bytes::copy_from_slice);
                let first = parts.next().unwrap_or_default();
                let rest: Vec<Bytes> = parts.collect();
                let mut h = frame::Headers::new(id, first, *end_stream, rest.is_empty());
                if *split == 255 {
                    h.end_headers = false;
                }
                h.priority = priority.map(|(dependency, exclusive, weight)| PrioritySpec {
                    dependency: StreamId::new(dependency),
                    exclusive,
                    weight,
                });
                h.pad_len = *pad;
                h.encode(out);
                let n = rest.len();
                for (i, fragment) in rest.into_iter().enumerate() {
                    frame::Continuation {
                        stream_id: id,
                        fragment,
                        end_headers: i + 1 == n,
                    }
                    .encode(out);
                }
            }
            FrameSpec::Continuation {
                stream,
                block,
                end_headers,
            } => {
                let stream_id = self.stream(stream);
                frame::Continuation {
                    stream_id,
                    fragment: self.block(block),
                    end_headers: *end_headers,
                }
                .encode(out);
            }
            FrameSpec::Data {
                stream,
                body,
                end_stream,
                pad,
            } => {
                let id = self.stream(stream);
                let body = Self::body(body);
                // Frames of at most 16 KiB (with padding).
                let pieces: Vec<Bytes> = if body.is_empty() {
                    vec![Bytes::new()]
                } else {
                    body.chunks(16_000).map(Bytes::copy_from_slice).collect()
                };
                let n = pieces.len();
                for (i, piece) in pieces.into_iter().enumerate() {
                    let mut d = frame::Data::new(id, piece, *end_stream && i + 1 == n);
                    if let Some(p) = pad {
                        d = d.with_padding(*p);
                    }
                    d.encode(out);
                }
            }
            FrameSpec::Priority {
                stream,
                dependency,
                exclusive,
                weight,
            } => {
                let stream_id = self.stream(stream);
                let dependency = self.stream(dependency);
                frame::Priority {
                    stream_id,
                    spec: PrioritySpec {
                        dependency,
                        exclusive: *exclusive,
                        weight: *weight,
                    },
                }
                .encode(out);
            }
            FrameSpec::RstStream { stream, code } => {
                let id = self.stream(stream);
                frame::RstStream::new(id, ErrorCode(*code)).encode(out);
            }
            FrameSpec::Settings { ack, params } => frame::Unknown {
                kind: frame::kind::SETTINGS,
                flags: u8::from(*ack),
                stream_id: StreamId::ZERO,
                payload: Self::settings(params),
            }
            .encode(out),
            FrameSpec::PushPromise {
                stream,
                promised,
                block,
                end_headers,
            } => {
                let stream_id = self.stream(stream);
                frame::PushPromise {
                    stream_id,
                    promised_id: StreamId::new(*promised),
                    fragment: Bytes::copy_from_slice(block),
                    end_headers: *end_headers,
                }
                .encode(out);
            }
            FrameSpec::Ping { ack, payload } => frame::Ping {
                ack: *ack,
                payload: *payload,
            }
            .encode(out),
            FrameSpec::GoAway { last, code, debug } => {
                let last_stream_id = self.stream(last);
                frame::GoAway {
                    last_stream_id,
                    code: ErrorCode(*code),
                    debug_data: Bytes::copy_from_slice(debug),
                }
                .encode(out);
            }
            FrameSpec::WindowUpdate { stream, increment } => {
                let id = self.stream(stream);
                let increment = match increment {
                    Increment::Small(v) => u32::from(*v),
                    Increment::Raw(v) => *v,
                    Increment::Max => 0x7fff_ffff,
                };
                frame::WindowUpdate::new(id, increment).encode(out);
            }
            FrameSpec::Raw {
                kind,
                flags,
                stream,
                payload,
            } => {
                let stream_id = self.stream(stream);
                frame::Unknown {
                    kind: *kind,
                    flags: *flags,
                    stream_id,
                    payload: Bytes::copy_from_slice(payload),
                }
                .encode(out);
            }
        }
    }

    fn flood(&mut self, kind: FloodKind, count: u16, out: &mut BytesMut) {
        let count = usize::from(count) % 1100;
        let request = |method| {
            BlockSpec::Request(RequestSpec {
                method,
                flaws: 0,
                timeout: None,
                encoding: None,
                extra: Vec::new(),
            })
        };
        match kind {
            FloodKind::Ping => {
                for i in 0..count {
                    frame::Ping::new((i as u64).to_be_bytes()).encode(out);
                }
            }
            FloodKind::Settings => {
                for _ in 0..count {
                    frame::Settings::default().encode(out);
                }
            }
            FloodKind::RapidReset => {
                for _ in 0..count {
                    let id = self.stream(&StreamRef::New);
                    let block = self.block(&request(0));
                    frame::Headers::new(id, block, false, true).encode(out);
                    frame::RstStream::new(id, ErrorCode::CANCEL).encode(out);
                }
            }
            FloodKind::EmptyData => {
                let id = self.stream(&StreamRef::Last);
                for _ in 0..count {
                    frame::Data::new(id, Bytes::new(), false).encode(out);
                }
            }
            FloodKind::Continuation => {
                let id = self.stream(&StreamRef::New);
                let block = self.block(&request(0));
                frame::Headers::new(id, Bytes::new(), true, false).encode(out);
                for (i, b) in block.iter().enumerate() {
                    frame::Continuation {
                        stream_id: id,
                        fragment: Bytes::copy_from_slice(&[*b]),
                        end_headers: false,
                    }
                    .encode(out);
                    if i >= count {
                        break;
                    }
                }
                for i in 0..count {
                    frame::Continuation {
                        stream_id: id,
                        fragment: Bytes::new(),
                        end_headers: i + 1 == count,
                    }
                    .encode(out);
                }
            }
            FloodKind::WindowUpdate => {
                for _ in 0..count {
                    frame::WindowUpdate::new(StreamId::ZERO, 1).encode(out);
                }
            }
            FloodKind::Priority => {
                for i in 0..count {
                    frame::Priority {
                        stream_id: StreamId::new(2 * i as u32 + 1),
                        spec: PrioritySpec {
                            dependency: StreamId::ZERO,
                            exclusive: false,
                            weight: 16,
                        },
                    }
                    .encode(out);
                }
            }
            FloodKind::Requests => {
                // Each one is answered: a few dozen are plenty (and keep the
                // target fast); the stream limit is reached with the tight
                // config.
                for i in 0..count.min(128) {
                    let id = self.stream(&StreamRef::New);
                    let block = self.block(&request((i % 41) as u8));
                    frame::Headers::new(id, block, false, true).encode(out);
                    frame::Data::new(id, Self::body(&Body::Grpc(1)), true).encode(out);
                }
            }
            FloodKind::Unknown => {
                for _ in 0..count {
                    frame::Unknown {
                        kind: 0xfa,
                        flags: 0,
                        stream_id: StreamId::ZERO,
                        payload: Bytes::new(),
                    }
                    .encode(out);
                }
            }
        }
    }
}

fn server_config(sel: u8) -> ServerConfig {
    let mut c = ServerConfig::default();
    match sel % 3 {
        0 => {}
        1 => {
            // Tight limits, reached by short inputs.
            c.h2 = Config {
                max_concurrent_streams: 4,
                initial_window_size: 100,
                max_header_list_size: 512,
                max_header_block_size: 1024,
                max_continuation_frames: 4,
                max_control_frames: 8,
                max_remote_resets: 8,
                max_local_resets: 8,
                max_empty_frames: 8,
                transmit_chunk: 100,
                closed_streams_remembered: 4,
                ..Config::default()
            };
            c.max_recv_message_size = 64;
        }
        _ => {
            // Large frames and windows, no HPACK table for the client.
            c.h2 = Config {
                header_table_size: 0,
                max_frame_size: 1 << 20,
                initial_window_size: 1 << 20,
                connection_window_size: 1 << 22,
                ..Config::default()
            };
        }
    }
    c
}

/// `server_frames`: a [`FramesInput`] built by `arbitrary`.
pub fn server_frames(data: &[u8]) {
    let _ = server_frames_stats(data);
}

/// The structured input `server_frames` reads from `data`, for debugging.
pub fn server_frames_input(data: &[u8]) -> String {
    match FramesInput::arbitrary_take_rest(Unstructured::new(data)) {
        Ok(input) => format!("{input:#?}"),
        Err(e) => format!("not an input: {e}"),
    }
}

/// `server_frames`, telling what the run did (`None`: not a valid input).
pub fn server_frames_stats(data: &[u8]) -> Option<Stats> {
    let input = FramesInput::arbitrary_take_rest(Unstructured::new(data)).ok()?;
    Some(run_frames(&input))
}

fn run_frames(input: &FramesInput) -> Stats {
    let mut h = Harness::new(server_config(input.config));
    let mut client = Client {
        next_id: 1,
        recent: Vec::new(),
        encoder: Encoder::new(),
    };
    h.preface();
    let mut out = BytesMut::new();
    frame::Unknown {
        kind: frame::kind::SETTINGS,
        flags: 0,
        stream_id: StreamId::ZERO,
        payload: Client::settings(&input.settings),
    }
    .encode(&mut out);
    h.feed(&out.split());
    for step in input.steps.iter().take(256) {
        match step {
            Step::Frames(frames) => {
                for f in frames {
                    client.encode(f, &mut out);
                }
                h.feed(&out.split());
            }
            Step::Split(f, at) => {
                client.encode(f, &mut out);
                let all = out.split();
                let at = usize::from(*at).min(all.len());
                h.feed(&all[..at]);
                h.feed(&all[at..]);
            }
            Step::Flood(kind, count) => {
                client.flood(*kind, *count, &mut out);
                h.feed(&out.split());
            }
            Step::AdvanceMillis(ms) => h.advance(Duration::from_millis(u64::from(*ms))),
            Step::AdvanceSecs(s) => h.advance(Duration::from_secs(u64::from(*s))),
            Step::Timeout => h.timeout(),
            Step::GoAway => h.go_away(),
            Step::Raw(bytes) => h.feed(bytes),
        }
    }
    h.finish()
}
