//! One HTTP/2 connection, either role, with no I/O.
//!
//! # Calling order
//! The driver owns the socket and the clock and, in a loop:
//! 1. feeds what it read with [`Connection::recv`] and the current time;
//! 2. drains [`Connection::poll_event`] and acts on each event, issuing
//!    commands ([`Connection::send_headers`], [`Connection::send_data`],
//!    [`Connection::send_trailers`], [`Connection::reset_stream`],
//!    [`Connection::open_stream`], [`Connection::go_away`]);
//! 3. writes out what [`Connection::poll_transmit`] returns until it returns
//!    `None` (or the socket would block);
//! 4. sleeps until readable, writable or [`Connection::poll_timeout`], and
//!    calls [`Connection::handle_timeout`] when that time has come.
//!
//! The driver also calls `handle_timeout(now)` once when the transport is
//! up: that starts the SETTINGS acknowledgement timer, so a peer that never
//! sends a byte is timed out too.
//!
//! Errors split as RFC 9113 §5.4 splits them: a [`StreamError`](super::StreamError) resets one
//! stream (RST_STREAM) and the connection carries on; a [`ConnectionError`]
//! sends GOAWAY and the connection accepts no further input.
//!
//! # Files
//! This one holds the types, construction, getters, the inputs and the
//! outputs; `commands` the application's commands; `recv` turns bytes into
//! frames, state and events; `schedule` keeps the stream table and picks
//! which stream sends next (round-robin, as windows allow); `transmit`
//! encodes frames and header blocks into the output.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use super::error::{ConnectionError, ErrorCode};
use super::flow::{RecvWindow, Window, DEFAULT_WINDOW};
use super::frame::{self, FrameReader};
use super::hpack::{self, Header};
use super::stream::{ClosedStreams, Outgoing, StreamMap};
use super::StreamId;

mod commands;
mod recv;
mod schedule;
mod transmit;

/// Which end of the connection we are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Client,
    Server,
}

/// Our settings and the limits that protect us from a hostile peer.
#[derive(Clone, Debug)]
pub struct Config {
    /// SETTINGS_HEADER_TABLE_SIZE we advertise (the peer's encoder's table).
    pub header_table_size: u32,
    /// SETTINGS_MAX_CONCURRENT_STREAMS: streams the peer may open at once.
    pub max_concurrent_streams: u32,
    /// SETTINGS_INITIAL_WINDOW_SIZE: per-stream receive window.
    pub initial_window_size: u32,
    /// Connection-level receive window (grown with a WINDOW_UPDATE at start).
    pub connection_window_size: u32,
    /// SETTINGS_MAX_FRAME_SIZE we accept.
    pub max_frame_size: u32,
    /// SETTINGS_MAX_HEADER_LIST_SIZE: decoded header bytes per block.
    pub max_header_list_size: u32,
    /// Compressed bytes of one header block (HEADERS + CONTINUATION) we buffer.
    pub max_header_block_size: usize,
    /// CONTINUATION frames in one header block.
    pub max_continuation_frames: u32,
    /// How long the peer has to acknowledge our SETTINGS.
    pub settings_timeout: Duration,
    /// The window over which the flood limits below are counted.
    pub flood_window: Duration,
    /// PING and SETTINGS frames (not acks) per flood window.
    pub max_control_frames: u32,
    /// Streams the peer resets per flood window (rapid reset, CVE-2023-44487).
    pub max_remote_resets: u32,
    /// Streams we reset for the peer's errors per flood window.
    pub max_local_resets: u32,
    /// Empty DATA frames without END_STREAM per flood window.
    pub max_empty_frames: u32,
    /// Stop producing output in one `poll_transmit` past this many bytes.
    pub transmit_chunk: usize,
    /// Closed streams remembered to answer late frames precisely.
    pub closed_streams_remembered: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            header_table_size: 4096,
            max_concurrent_streams: 1024,
            initial_window_size: DEFAULT_WINDOW,
            connection_window_size: DEFAULT_WINDOW,
            max_frame_size: frame::DEFAULT_MAX_FRAME_SIZE,
            max_header_list_size: 16 * 1024,
            max_header_block_size: 64 * 1024,
            max_continuation_frames: 128,
            settings_timeout: Duration::from_secs(10),
            flood_window: Duration::from_secs(10),
            max_control_frames: 1000,
            max_remote_resets: 1000,
            max_local_resets: 1000,
            max_empty_frames: 1000,
            transmit_chunk: 64 * 1024,
            closed_streams_remembered: 1024,
        }
    }
}

/// What happened, for the application.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A request (server) or response (client) header block. For a client,
    /// informational (1xx) responses are not reported.
    Headers {
        stream_id: StreamId,
        headers: Vec<Header>,
        end_stream: bool,
    },
    /// A DATA payload. Flow-control credit is returned automatically.
    Data {
        stream_id: StreamId,
        data: Bytes,
        end_stream: bool,
    },
    /// Trailers; they always end the peer's side of the stream.
    Trailers {
        stream_id: StreamId,
        headers: Vec<Header>,
    },
    /// The stream was reset: by the peer (`remote`), or by us because the
    /// peer broke a rule on it.
    StreamReset {
        stream_id: StreamId,
        code: ErrorCode,
        remote: bool,
    },
    /// The peer acknowledged one of our PINGs.
    PingAck { payload: [u8; 8] },
    /// The peer sent GOAWAY: no new streams; those above `last_stream_id`
    /// that we opened were not processed and have been reset.
    GoAway {
        last_stream_id: StreamId,
        code: ErrorCode,
        debug_data: Bytes,
    },
    /// We hit a connection error and sent GOAWAY; no more input is read.
    ConnectionError(ConnectionError),
}

/// A command the application issued that the protocol does not allow now.
/// This is local misuse, not a peer violation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UsageError {
    /// No such open stream (it may have been reset meanwhile).
    UnknownStream,
    /// END_STREAM was already queued on this stream.
    SendEnded,
    /// Headers were already queued; use `send_trailers` or `send_data`.
    HeadersAlreadySent,
    /// Data or trailers before the initial headers.
    HeadersNotSent,
    /// Only a client opens streams here.
    NotClient,
    /// The peer's SETTINGS_MAX_CONCURRENT_STREAMS is reached.
    StreamLimit,
    /// GOAWAY was sent or received; no new streams.
    GoingAway,
    /// The connection has failed or closed.
    Closed,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Server: bytes of the client preface matched so far.
    Preface(usize),
    /// The peer's first frame must be SETTINGS.
    AwaitSettings,
    Open,
    /// A connection error was sent; all input is ignored.
    Failed,
}

/// The settings values in force in one direction.
#[derive(Clone, Copy, Debug)]
struct Settings {
    header_table_size: u32,
    enable_push: bool,
    max_concurrent_streams: u32,
    initial_window_size: u32,
    max_frame_size: u32,
}

impl Settings {
    /// What the RFC says applies before any SETTINGS is exchanged.
    const INITIAL: Self = Self {
        header_table_size: 4096,
        enable_push: true,
        max_concurrent_streams: u32::MAX,
        initial_window_size: DEFAULT_WINDOW,
        max_frame_size: frame::DEFAULT_MAX_FRAME_SIZE,
    };
}

/// Streams we may open before the peer's first SETTINGS tells us its
/// limit. The RFC's initial value is "unlimited", but a client that opens
/// more than the server allows gets them refused; RFC 9113 §6.5.2
/// recommends servers allow at least 100, and gRPC clients assume that.
const PEER_STREAMS_BEFORE_SETTINGS: u32 = 100;

/// Counts events in a sliding window of time, to stop floods.
#[derive(Clone, Copy, Debug)]
struct RateLimit {
    max: u32,
    count: u32,
    since: Option<Instant>,
}

impl RateLimit {
    fn new(max: u32) -> Self {
        Self {
            max,
            count: 0,
            since: None,
        }
    }

    /// Count one more; true when the limit is exceeded.
    fn exceeded(&mut self, now: Instant, window: Duration) -> bool {
        match self.since {
            Some(t) if now.saturating_duration_since(t) < window => self.count += 1,
            _ => {
                self.since = Some(now);
                self.count = 1;
            }
        }
        self.count > self.max
    }
}

/// A header block still arriving in CONTINUATION frames.
#[derive(Debug)]
struct PartialBlock {
    stream_id: StreamId,
    end_stream: bool,
    block: BytesMut,
    frames: u32,
}

/// How many emptied stream send queues a connection keeps for reuse.
const SPARE_QUEUES: usize = 32;

/// How many emptied header lists a connection keeps for reuse, and the
/// largest (in fields) it keeps: a gRPC block has 6 to 12.
const SPARE_LISTS: usize = 16;
const SPARE_LIST_MAX_FIELDS: usize = 32;

/// A header block to send: borrowed from a `static` (the fixed blocks sent
/// on every call, built with the `const` [`Header::from_static`]) or owned.
/// `Vec<Header>`, `&'static [Header]` and `&'static [Header; N]` convert
/// into it. An owned list is kept for reuse once encoded (see
/// [`Connection::header_list`]).
pub type HeaderList = Cow<'static, [Header]>;

/// An HTTP/2 connection.
pub struct Connection {
    role: Role,
    config: Config,
    phase: Phase,
    recv_buf: BytesMut,
    reader: FrameReader,
    decoder: hpack::Decoder,
    encoder: hpack::Encoder,
    out: BytesMut,
    events: VecDeque<Event>,
    streams: StreamMap,
    closed: ClosedStreams,
    /// Streams with something sendable, served round-robin.
    ready: VecDeque<StreamId>,
    /// Streams waiting only for connection-level window.
    conn_blocked: VecDeque<StreamId>,
    /// Settings we sent and are waiting for the peer to acknowledge, oldest
    /// first; ours apply only once acknowledged.
    local_pending: VecDeque<Settings>,
    local: Settings,
    remote: Settings,
    settings_deadline: Option<Instant>,
    send_window: Window,
    recv_window: RecvWindow,
    /// The id our next stream gets; `None` once the id space is used up.
    next_local_id: Option<StreamId>,
    max_remote_id: StreamId,
    remote_open: u32,
    local_open: u32,
    partial: Option<PartialBlock>,
    goaway_sent: Option<StreamId>,
    goaway_received: Option<StreamId>,
    now: Option<Instant>,
    control_frames: RateLimit,
    remote_resets: RateLimit,
    local_resets: RateLimit,
    empty_frames: RateLimit,
    /// Emptied header lists (decoded blocks handed back with
    /// `recycle_headers`, sent blocks once encoded), reused so a steady
    /// stream of calls decodes and sends header blocks without allocating.
    spare_lists: Vec<Vec<Header>>,
    /// Emptied send queues of closed streams, reused by new streams so a
    /// call's frames are queued without allocating (at most
    /// `SPARE_QUEUES`, each small).
    spare_queues: Vec<VecDeque<Outgoing>>,
}

impl Connection {
    /// A server connection. Our SETTINGS are queued at once: a server may
    /// send them before the client preface arrives.
    pub fn server(config: Config) -> Self {
        Self::new(Role::Server, config)
    }

    /// A client connection. The preface and our SETTINGS are queued at once.
    pub fn client(config: Config) -> Self {
        Self::new(Role::Client, config)
    }

    fn new(role: Role, config: Config) -> Self {
        let wanted = Settings {
            header_table_size: config.header_table_size,
            enable_push: false,
            max_concurrent_streams: config.max_concurrent_streams,
            initial_window_size: config.initial_window_size.min(frame::MAX_WINDOW_SIZE),
            max_frame_size: config
                .max_frame_size
                .clamp(frame::DEFAULT_MAX_FRAME_SIZE, frame::MAX_MAX_FRAME_SIZE),
        };
        let mut conn = Self {
            role,
            phase: match role {
                Role::Server => Phase::Preface(0),
                Role::Client => Phase::AwaitSettings,
            },
            recv_buf: BytesMut::new(),
            reader: FrameReader::new(frame::DEFAULT_MAX_FRAME_SIZE),
            decoder: hpack::Decoder::new(4096),
            encoder: hpack::Encoder::new(),
            out: BytesMut::with_capacity(4096),
            events: VecDeque::new(),
            streams: StreamMap::default(),
            closed: ClosedStreams::new(config.closed_streams_remembered),
            ready: VecDeque::new(),
            conn_blocked: VecDeque::new(),
            local_pending: VecDeque::new(),
            local: Settings::INITIAL,
            remote: Settings {
                max_concurrent_streams: PEER_STREAMS_BEFORE_SETTINGS,
                ..Settings::INITIAL
            },
            settings_deadline: None,
            send_window: Window::new(DEFAULT_WINDOW),
            recv_window: RecvWindow::new(DEFAULT_WINDOW),
            next_local_id: Some(match role {
                Role::Client => StreamId::new(1),
                Role::Server => StreamId::new(2),
            }),
            max_remote_id: StreamId::ZERO,
            remote_open: 0,
            local_open: 0,
            partial: None,
            goaway_sent: None,
            goaway_received: None,
            now: None,
            control_frames: RateLimit::new(config.max_control_frames),
            remote_resets: RateLimit::new(config.max_remote_resets),
            local_resets: RateLimit::new(config.max_local_resets),
            empty_frames: RateLimit::new(config.max_empty_frames),
            spare_lists: Vec::new(),
            spare_queues: Vec::new(),
            config,
        };
        if role == Role::Client {
            conn.out.extend_from_slice(frame::PREFACE);
        }
        conn.write_settings(wanted);
        let connection_window = conn
            .config
            .connection_window_size
            .min(frame::MAX_WINDOW_SIZE);
        if let Some(increment) = conn.recv_window.enlarge(connection_window) {
            conn.write_frame(frame::WindowUpdate {
                stream_id: StreamId::ZERO,
                increment,
            });
        }
        conn
    }

    // ---- Getters ----

    pub fn role(&self) -> Role {
        self.role
    }

    /// True once the connection has nothing left to do: it failed, or a
    /// GOAWAY was exchanged and every stream finished; and all output was
    /// taken. The driver then closes the socket.
    pub fn is_closed(&self) -> bool {
        if !self.out.is_empty() {
            return false;
        }
        match self.phase {
            Phase::Failed => true,
            _ => {
                (self.goaway_sent.is_some() || self.goaway_received.is_some())
                    && self.streams.is_empty()
            }
        }
    }

    /// Bytes queued on a stream that flow control has not let out yet; a
    /// producer uses it to apply back-pressure.
    pub fn send_buffered(&self, stream_id: StreamId) -> usize {
        self.streams.get(&stream_id).map_or(0, |s| s.queued_bytes)
    }

    /// Streams currently open (either direction).
    pub fn open_streams(&self) -> usize {
        self.streams.len()
    }

    /// Whether the peer's SETTINGS_MAX_CONCURRENT_STREAMS lets us open one more.
    pub fn can_open_stream(&self) -> bool {
        self.role == Role::Client
            && self.phase != Phase::Failed
            && self.goaway_received.is_none()
            && self.goaway_sent.is_none()
            && self.local_open < self.remote.max_concurrent_streams
            && self.next_local_id.is_some()
    }

    // ---- Inputs ----

    /// Feed bytes read from the peer. On a connection error the GOAWAY is
    /// queued, the error is also reported as an event, and later input is
    /// ignored.
    pub fn recv(&mut self, data: &[u8], now: Instant) -> Result<(), ConnectionError> {
        if self.phase == Phase::Failed {
            return Ok(());
        }
        self.now = Some(now);
        self.recv_buf.extend_from_slice(data);
        match self.process(now) {
            Ok(()) => Ok(()),
            Err(e) => {
                self.fail(e);
                Err(e)
            }
        }
    }

    /// The time from `poll_timeout` has come.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.now = Some(now);
        if self.settings_deadline.is_none() && !self.local_pending.is_empty() {
            self.settings_deadline = Some(now + self.config.settings_timeout);
        }
        if let Some(deadline) = self.settings_deadline {
            if now >= deadline && self.phase != Phase::Failed {
                self.fail(ConnectionError::new(
                    ErrorCode::SETTINGS_TIMEOUT,
                    "SETTINGS not acknowledged in time",
                ));
            }
        }
    }

    // ---- Outputs ----

    #[must_use]
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// The next bytes to write to the peer, or `None` when there are none.
    /// Each call produces about `transmit_chunk` bytes at most, so a driver
    /// that stops calling while the socket is full bounds its buffering.
    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<Bytes> {
        self.fill_output();
        if self.out.is_empty() {
            None
        } else {
            Some(self.out.split().freeze())
        }
    }

    /// Like `poll_transmit`, appending into the caller's buffer instead.
    /// Returns the number of bytes appended.
    pub fn transmit_into(&mut self, dst: &mut BytesMut) -> usize {
        self.fill_output();
        let n = self.out.len();
        if dst.is_empty() {
            std::mem::swap(dst, &mut self.out);
        } else {
            dst.extend_from_slice(&self.out);
            self.out.clear();
        }
        n
    }

    /// When `handle_timeout` should next be called.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.phase == Phase::Failed {
            return None;
        }
        self.settings_deadline
    }
}
