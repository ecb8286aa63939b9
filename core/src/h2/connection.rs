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
//! Errors split as RFC 9113 §5.4 splits them: a [`StreamError`] resets one
//! stream (RST_STREAM) and the connection carries on; a [`ConnectionError`]
//! sends GOAWAY and the connection accepts no further input.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::error::{ConnectionError, ErrorCode, ProtocolError, StreamError};
use super::flow::{RecvWindow, Window, DEFAULT_WINDOW};
use super::frame::{self, Frame, FrameReader};
use super::hpack::{self, Header, HeaderListStatus};
use super::message::{self, BlockKind};
use super::stream::{Closed, ClosedStreams, Outgoing, RecvState, SendState, Stream, StreamMap};
use super::StreamId;

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

    // ---- Commands ----

    /// Client: open a stream with a request header block.
    pub fn open_stream(
        &mut self,
        headers: impl Into<HeaderList>,
        end_stream: bool,
    ) -> Result<StreamId, UsageError> {
        if self.role != Role::Client {
            return Err(UsageError::NotClient);
        }
        if self.phase == Phase::Failed {
            return Err(UsageError::Closed);
        }
        if self.goaway_received.is_some() || self.goaway_sent.is_some() {
            return Err(UsageError::GoingAway);
        }
        if !self.can_open_stream() {
            return Err(UsageError::StreamLimit);
        }
        let Some(id) = self.next_local_id else {
            return Err(UsageError::StreamLimit);
        };
        self.next_local_id = id.next();
        let mut stream = Stream::new(
            id,
            self.remote.initial_window_size,
            self.local.initial_window_size,
        );
        if let Some(q) = self.spare_queues.pop() {
            stream.queue = q;
        }
        self.streams.insert(id, stream);
        self.local_open += 1;
        self.send_headers(id, headers, end_stream)?;
        Ok(id)
    }

    /// Queue the initial header block of a stream (a response, for a server).
    pub fn send_headers(
        &mut self,
        stream_id: StreamId,
        headers: impl Into<HeaderList>,
        end_stream: bool,
    ) -> Result<(), UsageError> {
        let stream = self.sendable(stream_id)?;
        if stream.send != SendState::Idle {
            return Err(UsageError::HeadersAlreadySent);
        }
        stream.send = SendState::after_queueing(end_stream);
        stream.queue.push_back(Outgoing::Headers {
            headers: headers.into(),
            end_stream,
        });
        self.schedule(stream_id);
        Ok(())
    }

    /// Queue DATA. It leaves as flow control allows.
    pub fn send_data(
        &mut self,
        stream_id: StreamId,
        data: Bytes,
        end_stream: bool,
    ) -> Result<(), UsageError> {
        let stream = self.sendable(stream_id)?;
        if stream.send == SendState::Idle {
            return Err(UsageError::HeadersNotSent);
        }
        stream.send = SendState::after_queueing(end_stream);
        stream.queued_bytes += data.len();
        stream.queue.push_back(Outgoing::Data { data, end_stream });
        self.schedule(stream_id);
        Ok(())
    }

    /// Queue trailers, ending our side of the stream.
    pub fn send_trailers(
        &mut self,
        stream_id: StreamId,
        headers: impl Into<HeaderList>,
    ) -> Result<(), UsageError> {
        let stream = self.sendable(stream_id)?;
        if stream.send == SendState::Idle {
            return Err(UsageError::HeadersNotSent);
        }
        stream.send = SendState::Ending;
        stream.queue.push_back(Outgoing::Headers {
            headers: headers.into(),
            end_stream: true,
        });
        self.schedule(stream_id);
        Ok(())
    }

    /// An empty header list to fill and hand to [`Connection::send_headers`]
    /// (or `open_stream`, `send_trailers`): a spare one when there is one,
    /// so building a block per call need not allocate.
    pub fn header_list(&mut self) -> Vec<Header> {
        self.spare_lists
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(12))
    }

    /// Hand back a header list taken from an [`Event`] once done with it:
    /// the next header block is decoded into it instead of a new
    /// allocation. Optional; a list not handed back is simply dropped.
    pub fn recycle_headers(&mut self, list: Vec<Header>) {
        recycle(&mut self.spare_lists, list);
    }

    /// Reset a stream (RST_STREAM), dropping whatever it still had queued.
    pub fn reset_stream(&mut self, stream_id: StreamId, code: ErrorCode) -> Result<(), UsageError> {
        if self.phase == Phase::Failed {
            return Err(UsageError::Closed);
        }
        if !self.streams.contains_key(&stream_id) {
            return Err(UsageError::UnknownStream);
        }
        self.remove_stream(stream_id, Closed::LocalReset);
        self.write_frame(frame::RstStream { stream_id, code });
        Ok(())
    }

    /// Once everything queued on the stream has been sent, reset it with
    /// `code` unless the peer has finished its side by then. Used to answer
    /// early and refuse the rest of a request (RFC 9113 §8.1).
    pub fn reset_after_send(
        &mut self,
        stream_id: StreamId,
        code: ErrorCode,
    ) -> Result<(), UsageError> {
        let stream = self
            .streams
            .get_mut(&stream_id)
            .ok_or(UsageError::UnknownStream)?;
        if stream.recv != RecvState::Closed {
            stream.reset_when_sent = Some(code);
        }
        self.after_send(stream_id);
        Ok(())
    }

    /// Send a PING; the ack arrives as [`Event::PingAck`].
    pub fn ping(&mut self, payload: [u8; 8]) {
        if self.phase != Phase::Failed {
            self.write_frame(frame::Ping {
                ack: false,
                payload,
            });
        }
    }

    /// Graceful shutdown: GOAWAY naming the last stream we will process.
    /// Streams already open finish; new ones are refused.
    pub fn go_away(&mut self, code: ErrorCode) {
        if self.phase == Phase::Failed || self.goaway_sent.is_some() {
            return;
        }
        let last = self.max_remote_id;
        self.goaway_sent = Some(last);
        self.write_frame(frame::GoAway {
            last_stream_id: last,
            code,
            debug_data: Bytes::new(),
        });
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

    // ---- Receiving ----

    fn process(&mut self, now: Instant) -> Result<(), ConnectionError> {
        if let Phase::Preface(matched) = self.phase {
            let want = frame::PREFACE.get(matched..).unwrap_or_default();
            let n = want.len().min(self.recv_buf.len());
            if self.recv_buf.get(..n) != want.get(..n) {
                return Err(ConnectionError::protocol("invalid connection preface"));
            }
            let _ = self.recv_buf.split_to(n);
            if matched + n < frame::PREFACE.len() {
                self.phase = Phase::Preface(matched + n);
                return Ok(());
            }
            self.phase = Phase::AwaitSettings;
        }
        while self.phase != Phase::Failed {
            let frame = match self.reader.read(&mut self.recv_buf) {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(ProtocolError::Connection(e)) => return Err(e),
                Err(ProtocolError::Stream(e)) => {
                    if self.partial.is_some() {
                        return Err(ConnectionError::protocol("expected CONTINUATION"));
                    }
                    // RST_STREAM must not be sent on an idle stream (§6.4),
                    // so there the error ends the connection (§5.4.1).
                    if !self.streams.contains_key(&e.stream_id)
                        && self.lookup_inactive(e.stream_id) == Inactive::Idle
                    {
                        return Err(ConnectionError::new(e.code, e.reason));
                    }
                    self.stream_error(e, now)?;
                    continue;
                }
            };
            if self.phase == Phase::AwaitSettings {
                match &frame {
                    Frame::Settings(s) if !s.ack => {
                        self.phase = Phase::Open;
                        // The peer states its limit now, or has none.
                        if s.max_concurrent_streams.is_none() {
                            self.remote.max_concurrent_streams =
                                Settings::INITIAL.max_concurrent_streams;
                        }
                    }
                    _ => return Err(ConnectionError::protocol("first frame is not SETTINGS")),
                }
            }
            self.handle_frame(frame, now)?;
        }
        Ok(())
    }

    fn handle_frame(&mut self, frame: Frame, now: Instant) -> Result<(), ConnectionError> {
        if let Some(partial) = &self.partial {
            match &frame {
                Frame::Continuation(c) if c.stream_id == partial.stream_id => {}
                _ => return Err(ConnectionError::protocol("expected CONTINUATION")),
            }
        }
        match frame {
            Frame::Data(d) => self.on_data(d, now),
            Frame::Headers(h) => self.on_headers(h, now),
            Frame::Priority(_) | Frame::Unknown(_) => Ok(()),
            Frame::RstStream(r) => self.on_rst_stream(r, now),
            Frame::Settings(s) => self.on_settings(s, now),
            Frame::PushPromise(_) => Err(ConnectionError::protocol("PUSH_PROMISE is not accepted")),
            Frame::Ping(p) => self.on_ping(p, now),
            Frame::GoAway(g) => {
                self.on_goaway(g);
                Ok(())
            }
            Frame::WindowUpdate(w) => self.on_window_update(w, now),
            Frame::Continuation(c) => self.on_continuation(c, now),
        }
    }

    fn is_remote_id(&self, id: StreamId) -> bool {
        let odd = id.is_client_initiated();
        match self.role {
            Role::Server => odd,
            Role::Client => !odd,
        }
    }

    /// Where a stream not in the table stands: idle (never opened) or
    /// closed, and if closed, how.
    fn lookup_inactive(&self, id: StreamId) -> Inactive {
        let idle = if self.is_remote_id(id) {
            id > self.max_remote_id
        } else {
            self.next_local_id.is_some_and(|next| id >= next)
        };
        if idle {
            Inactive::Idle
        } else {
            Inactive::Closed(self.closed.get(id))
        }
    }

    fn on_data(&mut self, d: frame::Data, now: Instant) -> Result<(), ConnectionError> {
        if self.recv_window.receive(d.flow_len).is_err() {
            return Err(ConnectionError::new(
                ErrorCode::FLOW_CONTROL_ERROR,
                "DATA exceeds the connection window",
            ));
        }
        let id = d.stream_id;
        let Some(stream) = self.streams.get_mut(&id) else {
            self.release_connection(d.flow_len);
            return match self.lookup_inactive(id) {
                Inactive::Idle => Err(ConnectionError::protocol("DATA on an idle stream")),
                Inactive::Closed(Some(Closed::LocalReset)) => Ok(()),
                Inactive::Closed(Some(Closed::RemoteReset)) => self.stream_error(
                    StreamError::new(id, ErrorCode::STREAM_CLOSED, "DATA on a reset stream"),
                    now,
                ),
                Inactive::Closed(_) => Err(ConnectionError::new(
                    ErrorCode::STREAM_CLOSED,
                    "DATA on a closed stream",
                )),
            };
        };
        if stream.recv == RecvState::Closed && stream.reset_when_sent.is_some() {
            // We answered without reading the request (a 431) and reset the
            // stream once that is out; the rest of the request is dropped.
            self.release_connection(d.flow_len);
            return Ok(());
        }
        let fail = |reason| StreamError::new(id, ErrorCode::PROTOCOL_ERROR, reason);
        let error = if stream.recv == RecvState::Closed {
            Some(StreamError::new(
                id,
                ErrorCode::STREAM_CLOSED,
                "DATA after END_STREAM",
            ))
        } else if stream.recv == RecvState::AwaitingHeaders {
            Some(fail("DATA before HEADERS"))
        } else if stream.recv_window.receive(d.flow_len).is_err() {
            Some(StreamError::new(
                id,
                ErrorCode::FLOW_CONTROL_ERROR,
                "DATA exceeds the stream window",
            ))
        } else {
            stream.data_received += d.data.len() as u64;
            match stream.content_length {
                Some(n) if stream.data_received > n => Some(fail("DATA exceeds content-length")),
                Some(n) if d.end_stream && stream.data_received != n => {
                    Some(fail("DATA shorter than content-length"))
                }
                _ => None,
            }
        };
        if let Some(e) = error {
            self.release_connection(d.flow_len);
            return self.stream_error(e, now);
        }
        if d.end_stream {
            stream.recv = RecvState::Closed;
        }
        let stream_increment = stream.recv_window.release(d.flow_len);
        let stream_done = d.end_stream;
        if d.flow_len == 0
            && !d.end_stream
            && self.empty_frames.exceeded(now, self.config.flood_window)
        {
            return Err(ConnectionError::new(
                ErrorCode::ENHANCE_YOUR_CALM,
                "too many empty DATA frames",
            ));
        }
        if let Some(increment) = stream_increment.filter(|_| !stream_done) {
            self.write_frame(frame::WindowUpdate {
                stream_id: id,
                increment,
            });
        }
        self.release_connection(d.flow_len);
        self.events.push_back(Event::Data {
            stream_id: id,
            data: d.data,
            end_stream: d.end_stream,
        });
        if stream_done {
            self.finish_if_done(id);
        }
        Ok(())
    }

    /// Hand back connection-level credit for bytes consumed or discarded.
    fn release_connection(&mut self, n: u32) {
        if let Some(increment) = self.recv_window.release(n) {
            self.write_frame(frame::WindowUpdate {
                stream_id: StreamId::ZERO,
                increment,
            });
        }
    }

    fn on_headers(&mut self, h: frame::Headers, now: Instant) -> Result<(), ConnectionError> {
        if h.end_headers {
            return self.on_header_block(h.stream_id, h.fragment, h.end_stream, now);
        }
        if h.fragment.len() > self.config.max_header_block_size {
            return Err(too_large_block());
        }
        self.partial = Some(PartialBlock {
            stream_id: h.stream_id,
            end_stream: h.end_stream,
            block: BytesMut::from(&h.fragment[..]),
            frames: 0,
        });
        Ok(())
    }

    fn on_continuation(
        &mut self,
        c: frame::Continuation,
        now: Instant,
    ) -> Result<(), ConnectionError> {
        let Some(partial) = self.partial.as_mut() else {
            return Err(ConnectionError::protocol("CONTINUATION without HEADERS"));
        };
        partial.frames += 1;
        if partial.frames > self.config.max_continuation_frames
            || partial.block.len() + c.fragment.len() > self.config.max_header_block_size
        {
            return Err(too_large_block());
        }
        partial.block.extend_from_slice(&c.fragment);
        if !c.end_headers {
            return Ok(());
        }
        let Some(partial) = self.partial.take() else {
            return Ok(());
        };
        self.on_header_block(
            partial.stream_id,
            partial.block.freeze(),
            partial.end_stream,
            now,
        )
    }

    /// A complete header block. It is always decoded first, even when the
    /// stream will be refused, to keep the HPACK table in step with the peer.
    fn on_header_block(
        &mut self,
        id: StreamId,
        block: Bytes,
        end_stream: bool,
        now: Instant,
    ) -> Result<(), ConnectionError> {
        let mut headers = self.header_list();
        // A gRPC request has 6 to 10 fields: one allocation of this size
        // instead of growing from 4 to 8 to 16.
        headers.reserve(12);
        let status = self
            .decoder
            .decode(
                &block,
                self.config.max_header_list_size as usize,
                &mut headers,
            )
            .map_err(|e| ConnectionError::new(ErrorCode::COMPRESSION_ERROR, e.reason()))?;
        let too_large = matches!(status, HeaderListStatus::TooLarge);

        if let Some(stream) = self.streams.get_mut(&id) {
            if stream.recv == RecvState::Closed && stream.reset_when_sent.is_some() {
                // Trailers of a request answered unread (see on_data).
                self.recycle_headers(headers);
                return Ok(());
            }
            if stream.recv == RecvState::Closed {
                return self.stream_error(
                    StreamError::new(id, ErrorCode::STREAM_CLOSED, "HEADERS after END_STREAM"),
                    now,
                );
            }
            let kind = match stream.recv {
                RecvState::AwaitingHeaders => BlockKind::Response,
                RecvState::Open | RecvState::Closed => BlockKind::Trailers,
            };
            if too_large {
                return self.stream_error(
                    StreamError::new(id, ErrorCode::PROTOCOL_ERROR, "header list too large"),
                    now,
                );
            }
            if kind == BlockKind::Trailers && !end_stream {
                return self.stream_error(
                    StreamError::new(id, ErrorCode::PROTOCOL_ERROR, "trailers without END_STREAM"),
                    now,
                );
            }
            let info = match message::check(&headers, kind) {
                Ok(info) => info,
                Err(reason) => {
                    return self
                        .stream_error(StreamError::new(id, ErrorCode::PROTOCOL_ERROR, reason), now)
                }
            };
            if info.informational {
                if end_stream {
                    return self.stream_error(
                        StreamError::new(
                            id,
                            ErrorCode::PROTOCOL_ERROR,
                            "1xx response with END_STREAM",
                        ),
                        now,
                    );
                }
                self.recycle_headers(headers);
                return Ok(());
            }
            if kind == BlockKind::Trailers {
                stream.recv = RecvState::Closed;
                if stream
                    .content_length
                    .is_some_and(|n| n != stream.data_received)
                {
                    return self.stream_error(
                        StreamError::new(
                            id,
                            ErrorCode::PROTOCOL_ERROR,
                            "DATA shorter than content-length",
                        ),
                        now,
                    );
                }
                self.events.push_back(Event::Trailers {
                    stream_id: id,
                    headers,
                });
            } else {
                stream.recv = RecvState::after_headers(end_stream);
                stream.content_length = info.content_length;
                if end_stream && info.content_length.is_some_and(|n| n != 0) {
                    return self.stream_error(
                        StreamError::new(
                            id,
                            ErrorCode::PROTOCOL_ERROR,
                            "DATA shorter than content-length",
                        ),
                        now,
                    );
                }
                self.events.push_back(Event::Headers {
                    stream_id: id,
                    headers,
                    end_stream,
                });
            }
            if end_stream {
                self.finish_if_done(id);
            }
            return Ok(());
        }

        match self.lookup_inactive(id) {
            Inactive::Closed(Some(Closed::LocalReset)) => {
                self.recycle_headers(headers);
                Ok(())
            }
            Inactive::Closed(Some(Closed::RemoteReset)) => self.stream_error(
                StreamError::new(id, ErrorCode::STREAM_CLOSED, "HEADERS on a reset stream"),
                now,
            ),
            Inactive::Closed(Some(Closed::Ended)) => Err(ConnectionError::new(
                ErrorCode::STREAM_CLOSED,
                "HEADERS on a closed stream",
            )),
            Inactive::Closed(None) => Err(ConnectionError::protocol(
                "stream id lower than one already used",
            )),
            Inactive::Idle if self.role == Role::Client || !self.is_remote_id(id) => Err(
                ConnectionError::protocol("HEADERS on a stream the peer may not open"),
            ),
            Inactive::Idle => self.open_remote_stream(id, headers, end_stream, too_large, now),
        }
    }

    /// Server: the client opened stream `id` with a request.
    fn open_remote_stream(
        &mut self,
        id: StreamId,
        headers: Vec<Header>,
        end_stream: bool,
        too_large: bool,
        now: Instant,
    ) -> Result<(), ConnectionError> {
        self.max_remote_id = id;
        if self.goaway_sent.is_some_and(|last| id > last) {
            // After our GOAWAY new streams are ignored; the client retries
            // them elsewhere. Remember the stream so that its frames still
            // in flight are ignored too (§6.8), not taken for a closed one.
            self.closed.insert(id, Closed::LocalReset);
            self.recycle_headers(headers);
            return Ok(());
        }
        if self.remote_open >= self.config.max_concurrent_streams {
            self.closed.insert(id, Closed::LocalReset);
            self.write_frame(frame::RstStream {
                stream_id: id,
                code: ErrorCode::REFUSED_STREAM,
            });
            self.recycle_headers(headers);
            // Refusals cost us a decode and a frame each: they count
            // against the same limit as the peer's other stream errors.
            if self.local_resets.exceeded(now, self.config.flood_window) {
                return Err(ConnectionError::new(
                    ErrorCode::ENHANCE_YOUR_CALM,
                    "too many streams over the concurrency limit",
                ));
            }
            return Ok(());
        }
        let mut stream = Stream::new(
            id,
            self.remote.initial_window_size,
            self.local.initial_window_size,
        );
        stream.recv = RecvState::after_headers(end_stream);
        if let Some(q) = self.spare_queues.pop() {
            stream.queue = q;
        }
        self.streams.insert(id, stream);
        self.remote_open += 1;

        if too_large {
            // RFC 9113 §8.1: answer 431, then ask the client to stop sending.
            self.recycle_headers(headers);
            if let Some(s) = self.streams.get_mut(&id) {
                s.recv = RecvState::Closed;
                s.reset_when_sent = (!end_stream).then_some(ErrorCode::NO_ERROR);
            }
            static TOO_LARGE: [Header; 1] = [Header::from_static(":status", "431")];
            let _ = self.send_headers(id, &TOO_LARGE, true);
            return Ok(());
        }
        let info = match message::check(&headers, BlockKind::Request) {
            Ok(info) => info,
            Err(reason) => {
                return self
                    .stream_error(StreamError::new(id, ErrorCode::PROTOCOL_ERROR, reason), now)
            }
        };
        if end_stream && info.content_length.is_some_and(|n| n != 0) {
            return self.stream_error(
                StreamError::new(
                    id,
                    ErrorCode::PROTOCOL_ERROR,
                    "DATA shorter than content-length",
                ),
                now,
            );
        }
        if let Some(s) = self.streams.get_mut(&id) {
            s.content_length = info.content_length;
        }
        self.events.push_back(Event::Headers {
            stream_id: id,
            headers,
            end_stream,
        });
        Ok(())
    }

    fn on_rst_stream(&mut self, r: frame::RstStream, now: Instant) -> Result<(), ConnectionError> {
        let id = r.stream_id;
        if !self.streams.contains_key(&id) {
            return match self.lookup_inactive(id) {
                Inactive::Idle => Err(ConnectionError::protocol("RST_STREAM on an idle stream")),
                Inactive::Closed(_) => Ok(()),
            };
        }
        self.remove_stream(id, Closed::RemoteReset);
        self.events.push_back(Event::StreamReset {
            stream_id: id,
            code: r.code,
            remote: true,
        });
        if self.remote_resets.exceeded(now, self.config.flood_window) {
            return Err(ConnectionError::new(
                ErrorCode::ENHANCE_YOUR_CALM,
                "too many streams reset by the peer",
            ));
        }
        Ok(())
    }

    fn on_settings(&mut self, s: frame::Settings, now: Instant) -> Result<(), ConnectionError> {
        if s.ack {
            if let Some(acked) = self.local_pending.pop_front() {
                self.apply_local(acked)?;
            }
            self.settings_deadline = if self.local_pending.is_empty() {
                None
            } else {
                Some(now + self.config.settings_timeout)
            };
            return Ok(());
        }
        if self.control_frames.exceeded(now, self.config.flood_window) {
            return Err(ConnectionError::new(
                ErrorCode::ENHANCE_YOUR_CALM,
                "SETTINGS flood",
            ));
        }
        if let Some(v) = s.enable_push {
            if self.role == Role::Client && v != 0 {
                return Err(ConnectionError::protocol(
                    "server sent SETTINGS_ENABLE_PUSH=1",
                ));
            }
            self.remote.enable_push = v == 1;
        }
        if let Some(v) = s.header_table_size {
            self.remote.header_table_size = v;
            self.encoder.set_max_table_size(v as usize);
        }
        if let Some(v) = s.max_concurrent_streams {
            self.remote.max_concurrent_streams = v;
        }
        if let Some(v) = s.max_frame_size {
            self.remote.max_frame_size = v;
        }
        if let Some(v) = s.initial_window_size {
            let delta = i64::from(v) - i64::from(self.remote.initial_window_size);
            self.remote.initial_window_size = v;
            for stream in self.streams.values_mut() {
                stream.send_window.shift(delta).map_err(|_| {
                    ConnectionError::new(
                        ErrorCode::FLOW_CONTROL_ERROR,
                        "SETTINGS_INITIAL_WINDOW_SIZE overflows a stream window",
                    )
                })?;
            }
            if delta > 0 {
                let ids: Vec<StreamId> = self.streams.keys().copied().collect();
                for id in ids {
                    self.schedule(id);
                }
            }
        }
        self.write_frame(frame::Settings::ack());
        Ok(())
    }

    /// The peer acknowledged settings of ours: they apply from now on.
    fn apply_local(&mut self, acked: Settings) -> Result<(), ConnectionError> {
        self.reader.set_max_frame_size(acked.max_frame_size);
        self.decoder
            .set_max_table_size(acked.header_table_size as usize);
        if acked.initial_window_size != self.local.initial_window_size {
            let mut updates = Vec::new();
            for stream in self.streams.values_mut() {
                stream
                    .recv_window
                    .retarget(acked.initial_window_size)
                    .map_err(|_| {
                        ConnectionError::new(ErrorCode::FLOW_CONTROL_ERROR, "window overflow")
                    })?;
                // Against a smaller target, credit we still owe may be due
                // now; a stream left at or below zero would otherwise stall.
                if stream.recv != RecvState::Closed {
                    if let Some(increment) = stream.recv_window.release(0) {
                        updates.push((stream.id, increment));
                    }
                }
            }
            for (stream_id, increment) in updates {
                self.write_frame(frame::WindowUpdate {
                    stream_id,
                    increment,
                });
            }
        }
        self.local = acked;
        Ok(())
    }

    fn on_ping(&mut self, p: frame::Ping, now: Instant) -> Result<(), ConnectionError> {
        if p.ack {
            self.events.push_back(Event::PingAck { payload: p.payload });
            return Ok(());
        }
        if self.control_frames.exceeded(now, self.config.flood_window) {
            return Err(ConnectionError::new(
                ErrorCode::ENHANCE_YOUR_CALM,
                "PING flood",
            ));
        }
        self.write_frame(frame::Ping {
            ack: true,
            payload: p.payload,
        });
        Ok(())
    }

    fn on_goaway(&mut self, g: frame::GoAway) {
        self.goaway_received = Some(g.last_stream_id);
        // Streams we opened above the peer's last id were never processed.
        let refused: Vec<StreamId> = self
            .streams
            .keys()
            .copied()
            .filter(|&id| !self.is_remote_id(id) && id > g.last_stream_id)
            .collect();
        for id in refused {
            self.remove_stream(id, Closed::LocalReset);
            self.events.push_back(Event::StreamReset {
                stream_id: id,
                code: ErrorCode::REFUSED_STREAM,
                remote: true,
            });
        }
        self.events.push_back(Event::GoAway {
            last_stream_id: g.last_stream_id,
            code: g.code,
            debug_data: g.debug_data,
        });
    }

    fn on_window_update(
        &mut self,
        w: frame::WindowUpdate,
        now: Instant,
    ) -> Result<(), ConnectionError> {
        if w.stream_id == 0 {
            self.send_window.grow(w.increment).map_err(|_| {
                ConnectionError::new(ErrorCode::FLOW_CONTROL_ERROR, "connection window overflow")
            })?;
            while let Some(id) = self.conn_blocked.pop_front() {
                self.schedule(id);
            }
            return Ok(());
        }
        let id = w.stream_id;
        let Some(stream) = self.streams.get_mut(&id) else {
            return match self.lookup_inactive(id) {
                Inactive::Idle => Err(ConnectionError::protocol("WINDOW_UPDATE on an idle stream")),
                Inactive::Closed(_) => Ok(()),
            };
        };
        if stream.send_window.grow(w.increment).is_err() {
            return self.stream_error(
                StreamError::new(id, ErrorCode::FLOW_CONTROL_ERROR, "stream window overflow"),
                now,
            );
        }
        self.schedule(id);
        Ok(())
    }

    /// Reset one stream for the peer's error; the connection carries on.
    fn stream_error(&mut self, e: StreamError, now: Instant) -> Result<(), ConnectionError> {
        let was_open = self.streams.contains_key(&e.stream_id);
        if was_open {
            self.remove_stream(e.stream_id, Closed::LocalReset);
            self.events.push_back(Event::StreamReset {
                stream_id: e.stream_id,
                code: e.code,
                remote: false,
            });
        } else if self.closed.get(e.stream_id).is_none() {
            self.closed.insert(e.stream_id, Closed::LocalReset);
        }
        if self.is_remote_id(e.stream_id) && e.stream_id > self.max_remote_id {
            self.max_remote_id = e.stream_id;
        }
        self.write_frame(frame::RstStream {
            stream_id: e.stream_id,
            code: e.code,
        });
        if self.local_resets.exceeded(now, self.config.flood_window) {
            return Err(ConnectionError::new(
                ErrorCode::ENHANCE_YOUR_CALM,
                "too many stream errors",
            ));
        }
        Ok(())
    }

    /// A connection error: GOAWAY, then nothing more is read.
    fn fail(&mut self, e: ConnectionError) {
        if self.phase == Phase::Failed {
            return;
        }
        // Streams above an earlier GOAWAY's last id were ignored, so that id
        // still holds; it may never grow (RFC 9113 §6.8).
        self.write_frame(frame::GoAway {
            last_stream_id: self.goaway_sent.unwrap_or(self.max_remote_id),
            code: e.code,
            debug_data: Bytes::from_static(e.reason.as_bytes()),
        });
        self.phase = Phase::Failed;
        self.streams.clear();
        self.ready.clear();
        self.conn_blocked.clear();
        self.recv_buf = BytesMut::new();
        self.partial = None;
        self.settings_deadline = None;
        self.events.push_back(Event::ConnectionError(e));
    }

    // ---- Stream bookkeeping ----

    fn sendable(&mut self, stream_id: StreamId) -> Result<&mut Stream, UsageError> {
        if self.phase == Phase::Failed {
            return Err(UsageError::Closed);
        }
        let stream = self
            .streams
            .get_mut(&stream_id)
            .ok_or(UsageError::UnknownStream)?;
        if stream.send.is_ended() {
            return Err(UsageError::SendEnded);
        }
        Ok(stream)
    }

    fn schedule(&mut self, id: StreamId) {
        if let Some(stream) = self.streams.get_mut(&id) {
            if !stream.scheduled && !stream.queue.is_empty() {
                stream.scheduled = true;
                self.ready.push_back(id);
            }
        }
    }

    fn remove_stream(&mut self, id: StreamId, how: Closed) {
        let remote = self.is_remote_id(id);
        if let Some(stream) = self.streams.remove(&id) {
            if remote {
                self.remote_open -= 1;
            } else {
                self.local_open -= 1;
            }
            self.closed.insert(id, how);
            let mut q = stream.queue;
            if q.capacity() > 0 && q.capacity() <= 16 && self.spare_queues.len() < SPARE_QUEUES {
                q.clear();
                self.spare_queues.push(q);
            }
        }
    }

    fn finish_if_done(&mut self, id: StreamId) {
        if self.streams.get(&id).is_some_and(Stream::is_done) {
            self.remove_stream(id, Closed::Ended);
        }
    }

    /// Our side of the stream is fully sent: close it if the peer's is too,
    /// or reset it when the rest of the request is not wanted (RFC 9113
    /// §8.1: a complete early response, then RST_STREAM NO_ERROR).
    fn after_send(&mut self, id: StreamId) {
        let Some(s) = self.streams.get(&id) else {
            return;
        };
        if !(s.send == SendState::Closed && s.queue.is_empty()) {
            return;
        }
        if let Some(code) = s.reset_when_sent {
            self.remove_stream(id, Closed::LocalReset);
            self.write_frame(frame::RstStream {
                stream_id: id,
                code,
            });
        } else {
            self.finish_if_done(id);
        }
    }

    // ---- Sending ----

    fn write_frame(&mut self, f: impl Into<Frame>) {
        f.into().encode(&mut self.out);
    }

    fn write_settings(&mut self, wanted: Settings) {
        let init = Settings::INITIAL;
        let differs = |a: u32, b: u32| (a != b).then_some(a);
        let frame = frame::Settings {
            ack: false,
            header_table_size: differs(wanted.header_table_size, init.header_table_size),
            enable_push: (self.role == Role::Client).then_some(0),
            max_concurrent_streams: Some(wanted.max_concurrent_streams),
            initial_window_size: differs(wanted.initial_window_size, init.initial_window_size),
            max_frame_size: differs(wanted.max_frame_size, init.max_frame_size),
            max_header_list_size: Some(self.config.max_header_list_size),
            enable_connect_protocol: None,
        };
        self.write_frame(frame);
        self.local_pending.push_back(wanted);
        if let Some(now) = self.now {
            self.settings_deadline = Some(now + self.config.settings_timeout);
        }
    }

    /// Move queued stream frames to the output, round-robin, as windows allow.
    fn fill_output(&mut self) {
        if self.settings_deadline.is_none() && !self.local_pending.is_empty() {
            // The clock was unknown when the SETTINGS went out; start now.
            if let Some(now) = self.now {
                self.settings_deadline = Some(now + self.config.settings_timeout);
            }
        }
        while self.out.len() < self.config.transmit_chunk {
            let Some(id) = self.ready.pop_front() else {
                break;
            };
            let Some(stream) = self.streams.get_mut(&id) else {
                continue;
            };
            stream.scheduled = false;
            match write_stream(
                stream,
                &mut self.out,
                &mut self.encoder,
                &mut self.send_window,
                self.remote.max_frame_size,
                &mut self.spare_lists,
            ) {
                Progress::More => {
                    stream.scheduled = true;
                    self.ready.push_back(id);
                }
                Progress::ConnBlocked => self.conn_blocked.push_back(id),
                Progress::StreamBlocked | Progress::Empty => {}
            }
            self.after_send(id);
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Inactive {
    Idle,
    Closed(Option<Closed>),
}

enum Progress {
    /// Wrote a frame and has more that could go now.
    More,
    Empty,
    StreamBlocked,
    ConnBlocked,
}

fn too_large_block() -> ConnectionError {
    ConnectionError::new(ErrorCode::ENHANCE_YOUR_CALM, "header block too large")
}

/// Write the next frame(s) of one stream: all its leading header blocks and
/// at most one DATA frame, so streams share the connection fairly.
fn write_stream(
    stream: &mut Stream,
    out: &mut BytesMut,
    encoder: &mut hpack::Encoder,
    conn_window: &mut Window,
    max_frame_size: u32,
    spare_lists: &mut Vec<Vec<Header>>,
) -> Progress {
    while let Some(item) = stream.queue.front_mut() {
        match item {
            Outgoing::Headers {
                headers,
                end_stream,
            } => {
                let end_stream = *end_stream;
                write_header_block(stream.id, headers, end_stream, out, encoder, max_frame_size);
                if let Some(Outgoing::Headers {
                    headers: Cow::Owned(list),
                    ..
                }) = stream.queue.pop_front()
                {
                    recycle(spare_lists, list);
                }
                if end_stream {
                    stream.send = SendState::Closed;
                }
            }
            Outgoing::Data { data, end_stream } => {
                if data.is_empty() {
                    let end_stream = *end_stream;
                    frame::Data::new(stream.id, Bytes::new(), end_stream).encode(out);
                    stream.queue.pop_front();
                    if end_stream {
                        stream.send = SendState::Closed;
                    }
                    continue;
                }
                let stream_room = stream.send_window.available();
                let conn_room = conn_window.available();
                let room = u64::from(stream_room)
                    .min(u64::from(conn_room))
                    .min(u64::from(max_frame_size)) as usize;
                if room == 0 {
                    // Even after writing headers: a stream waiting for
                    // connection credit must be on `conn_blocked`, or the
                    // next connection WINDOW_UPDATE never wakes it.
                    return if stream_room == 0 {
                        Progress::StreamBlocked
                    } else {
                        Progress::ConnBlocked
                    };
                }
                // One DATA frame with as much of the queued data as fits, so
                // many small writes (one per gRPC message) share a frame.
                let head_at = out.len();
                out.put_bytes(0, frame::HEADER_LEN);
                let mut n = 0;
                let mut end = false;
                while let Some(Outgoing::Data { data, end_stream }) = stream.queue.front_mut() {
                    let take = (room - n).min(data.len());
                    out.extend_from_slice(data.get(..take).unwrap_or_default());
                    data.advance(take);
                    n += take;
                    if !data.is_empty() {
                        break;
                    }
                    end = *end_stream;
                    stream.queue.pop_front();
                    if end {
                        break;
                    }
                }
                let flags = if end { frame::flags::END_STREAM } else { 0 };
                patch_head(out, head_at, n, frame::kind::DATA, flags, stream.id);
                stream.send_window.spend(n as u32);
                conn_window.spend(n as u32);
                stream.queued_bytes -= n;
                if end {
                    stream.send = SendState::Closed;
                }
                return if stream.queue.is_empty() {
                    Progress::Empty
                } else {
                    Progress::More
                };
            }
        }
    }
    Progress::Empty
}

/// HPACK-encode a header block straight into the output and split it into
/// HEADERS + CONTINUATION frames no larger than the peer allows.
fn write_header_block(
    stream_id: StreamId,
    headers: &[Header],
    end_stream: bool,
    out: &mut BytesMut,
    encoder: &mut hpack::Encoder,
    max_frame_size: u32,
) {
    let head_at = out.len();
    out.put_bytes(0, frame::HEADER_LEN);
    encoder.encode(headers.iter(), out);
    let len = out.len() - head_at - frame::HEADER_LEN;
    let end_stream_flag = if end_stream {
        frame::flags::END_STREAM
    } else {
        0
    };
    let max = max_frame_size as usize;
    if len <= max {
        let flags = end_stream_flag | frame::flags::END_HEADERS;
        patch_head(out, head_at, len, frame::kind::HEADERS, flags, stream_id);
        return;
    }
    let block = out.split_off(head_at + frame::HEADER_LEN).freeze();
    patch_head(
        out,
        head_at,
        max,
        frame::kind::HEADERS,
        end_stream_flag,
        stream_id,
    );
    let mut rest = block;
    out.extend_from_slice(&rest.split_to(max));
    while !rest.is_empty() {
        let n = rest.len().min(max);
        let chunk = rest.split_to(n);
        frame::Continuation {
            stream_id,
            fragment: chunk,
            end_headers: rest.is_empty(),
        }
        .encode(out);
    }
}

/// Keep an emptied header list for reuse, within the pool's bounds.
fn recycle(spare: &mut Vec<Vec<Header>>, mut list: Vec<Header>) {
    if list.capacity() == 0 || list.capacity() > SPARE_LIST_MAX_FIELDS || spare.len() >= SPARE_LISTS
    {
        return;
    }
    list.clear();
    spare.push(list);
}

/// Fill in the frame header reserved at `head_at` once the payload after
/// it is written and its length known.
fn patch_head(
    out: &mut [u8],
    head_at: usize,
    len: usize,
    kind: u8,
    flags: u8,
    stream_id: StreamId,
) {
    let Some(head) = out
        .get_mut(head_at..)
        .and_then(|rest| rest.first_chunk_mut::<{ frame::HEADER_LEN }>())
    else {
        return;
    };
    let [_, len @ ..] = (len as u32).to_be_bytes();
    let [a, b, c, d] = stream_id.get().to_be_bytes();
    *head = [len[0], len[1], len[2], kind, flags, a, b, c, d];
}
