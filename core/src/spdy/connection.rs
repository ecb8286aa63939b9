//! One SPDY/3.1 session, either role, with no I/O.
//!
//! # Calling order
//! As with [`crate::h2::Connection`], the driver owns the socket and the
//! clock and, in a loop:
//! 1. feeds what it read to [`Connection::recv`] with the current time;
//! 2. drains [`Connection::poll_event`] and answers with commands
//!    ([`Connection::reply`], [`Connection::send_data`],
//!    [`Connection::close`], [`Connection::reset`],
//!    [`Connection::open_stream`], [`Connection::ping`],
//!    [`Connection::go_away`]);
//! 3. writes out what [`Connection::poll_transmit`] returns until `None`.
//!
//! # Flow control
//! SPDY/3.1 windows (64 KiB per stream and per session, WINDOW_UPDATE for
//! both) are kept in both directions, and credit for received DATA is
//! returned as soon as the data is handed out in an event: back-pressure
//! towards the peer is the driver's to apply, by not reading the socket.
//!
//! Whether the peer's windows are *obeyed* is [`Config::flow_control`].
//! It is off by default because the peers this session exists for do not
//! implement them: Kubernetes' SPDY code (moby/spdystream, used by kubelet,
//! client-go, kubectl and crictl) announces SPDY/3.1 but never sends
//! WINDOW_UPDATE and ignores those it gets. A sender that waited for credit
//! would stop after 64 KiB of output, and a receiver that enforced its own
//! window would reset a client piping a large stdin. With the option on,
//! the session behaves as the specification says.
//!
//! # Errors
//! A [`StreamError`] resets one stream (RST_STREAM) and the session
//! carries on; a [`ConnectionError`] sends GOAWAY and the session reads
//! nothing more. Header blocks share one zlib stream per direction, so a
//! block we cannot inflate (corrupt, or past [`Config::max_header_block`])
//! is a session error, preceded by RST_STREAM FRAME_TOO_LARGE when it was
//! too large (as SPDY/3.1 §2.4.2 requires).

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};

use super::error::{ConnectionError, GoAwayStatus, RstStatus, StreamError};
use super::frame::{self, be_u32, Head, FLAG_FIN, FLAG_UNIDIRECTIONAL, HEAD_LEN, MAX_STREAM_ID};
use super::headers::{decode_block, encode_block, Deflater, HeaderList, InflateError, Inflater};

/// The initial window of every stream and of the session (SPDY/3.1 §2.6.8).
pub const DEFAULT_WINDOW: u32 = 64 * 1024;

/// Which end of the session we are: clients open odd streams, servers even.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Client,
    Server,
}

/// Limits that protect us from a hostile peer, and our settings.
#[derive(Clone, Debug)]
pub struct Config {
    /// Streams the peer may have open at once; more are refused. Port
    /// forwarding opens two per forwarded connection, and spdystream
    /// clients know no limit, so this is generous.
    pub max_concurrent_streams: u32,
    /// Obey the peer's windows and enforce ours (see the module docs).
    pub flow_control: bool,
    /// Largest inflated header block.
    pub max_header_block: usize,
    /// Largest control frame (compressed header blocks included).
    pub max_control_frame: usize,
    /// Largest DATA payload buffered at once; a larger frame is handed out
    /// in pieces of this size.
    pub max_data_frame: usize,
    /// Largest DATA frame we send.
    pub max_send_frame: usize,
    /// The window over which the flood limits are counted.
    pub flood_window: Duration,
    /// PING and SETTINGS frames (and empty DATA frames) per flood window.
    pub max_control_frames: u32,
    /// Streams we reset for the peer's errors per flood window.
    pub max_local_resets: u32,
    /// Streams the peer resets per flood window.
    pub max_remote_resets: u32,
    /// Control frames we owe the peer (ping echoes, resets, window
    /// updates) that it has not read; past this it is not reading.
    pub max_pending_control: usize,
    /// Stop filling one `poll_transmit` buffer past this many bytes.
    pub transmit_chunk: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            max_concurrent_streams: 1024,
            flow_control: false,
            max_header_block: 16 * 1024,
            max_control_frame: 16 * 1024,
            max_data_frame: 256 * 1024,
            max_send_frame: 32 * 1024,
            flood_window: Duration::from_secs(10),
            max_control_frames: 1000,
            max_local_resets: 1000,
            max_remote_resets: 1000,
            max_pending_control: 64 * 1024,
            transmit_chunk: 64 * 1024,
        }
    }
}

/// What happened, for the application.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// The peer opened a stream (SYN_STREAM). Answer with
    /// [`Connection::reply`] (or reset it) before sending data on it.
    StreamOpened {
        stream_id: u32,
        headers: HeaderList,
        /// The peer sends nothing more on it.
        fin: bool,
        /// We may send nothing on it.
        unidirectional: bool,
        associated_stream_id: u32,
        priority: u8,
    },
    /// The peer answered a stream we opened (SYN_REPLY).
    Reply {
        stream_id: u32,
        headers: HeaderList,
        fin: bool,
    },
    /// More headers on an open stream (HEADERS).
    Headers {
        stream_id: u32,
        headers: HeaderList,
        fin: bool,
    },
    /// Data; `fin` is the peer's half-close.
    Data {
        stream_id: u32,
        data: Bytes,
        fin: bool,
    },
    /// The stream is gone: reset by the peer (`remote`) or by us for the
    /// peer's error on it.
    StreamReset {
        stream_id: u32,
        status: RstStatus,
        remote: bool,
    },
    /// The peer answered one of our PINGs.
    PingAck { id: u32 },
    /// The peer is going away: it opens no new streams.
    GoAway {
        last_good_stream_id: u32,
        status: GoAwayStatus,
    },
    /// We hit a session error and sent GOAWAY; no more input is read.
    ConnectionError(ConnectionError),
}

/// A command the protocol does not allow now: our misuse, not the peer's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UsageError {
    /// No such open stream (it may have been reset meanwhile).
    UnknownStream,
    /// Data or headers on a peer's stream before our SYN_REPLY.
    NotReplied,
    /// SYN_REPLY twice, or on a stream we opened.
    AlreadyReplied,
    /// FIN was already queued on this stream, or it is unidirectional.
    SendClosed,
    /// The peer's stream limit is reached.
    StreamLimit,
    /// GOAWAY was sent or received; no new streams.
    GoingAway,
    /// The session has failed.
    Closed,
    /// Header compression failed (a bug, not the peer's doing).
    Compression,
}

#[derive(Debug)]
struct Stream {
    local: bool,
    replied: bool,
    recv_open: bool,
    send_open: bool,
    fin_queued: bool,
    queue: VecDeque<Bytes>,
    queued: usize,
    send_window: i64,
    recv_window: i64,
    recv_unacked: u32,
}

impl Stream {
    fn new(local: bool, send_window: i64, recv_window: i64) -> Self {
        Self {
            local,
            replied: false,
            recv_open: true,
            send_open: true,
            fin_queued: false,
            queue: VecDeque::new(),
            queued: 0,
            send_window,
            recv_window,
            recv_unacked: 0,
        }
    }

    fn done(&self) -> bool {
        !self.recv_open && !self.send_open && !self.fin_queued && self.queue.is_empty()
    }
}

/// Counts events in a sliding window of fixed length.
#[derive(Debug, Default)]
struct Flood {
    start: Option<Instant>,
    count: u32,
}

impl Flood {
    /// Counts one; `true` when past `max` in the current window.
    fn hit(&mut self, now: Instant, window: Duration, max: u32) -> bool {
        match self.start {
            Some(s) if now.saturating_duration_since(s) < window => {}
            _ => {
                self.start = Some(now);
                self.count = 0;
            }
        }
        self.count = self.count.saturating_add(1);
        self.count > max
    }
}

/// One SPDY/3.1 session.
pub struct Connection {
    role: Role,
    config: Config,
    failed: Option<ConnectionError>,
    input: BytesMut,
    /// Payload bytes of a DATA frame still to drop (its stream was reset).
    skip: usize,
    /// A DATA frame larger than [`Config::max_data_frame`] being handed
    /// out in pieces of that size: (stream, flags, payload bytes left).
    large_data: Option<(u32, u8, usize)>,
    inflater: Inflater,
    deflater: Deflater,
    streams: BTreeMap<u32, Stream>,
    last_peer_stream_id: u32,
    next_local_stream_id: u32,
    next_ping_id: u32,
    pings_sent: VecDeque<u32>,
    peer_initial_window: i64,
    peer_max_streams: u32,
    session_send_window: i64,
    session_recv_window: i64,
    session_recv_unacked: u32,
    goaway_sent: bool,
    goaway_received: bool,
    control: BytesMut,
    events: VecDeque<Event>,
    control_flood: Flood,
    local_resets: Flood,
    remote_resets: Flood,
    /// Where the next round of data scheduling starts.
    cursor: u32,
}

impl Connection {
    pub fn server(config: Config) -> Self {
        Self::new(Role::Server, config)
    }

    pub fn client(config: Config) -> Self {
        Self::new(Role::Client, config)
    }

    fn new(role: Role, config: Config) -> Self {
        let (next_stream, next_ping) = match role {
            Role::Client => (1, 1),
            Role::Server => (2, 2),
        };
        Self {
            role,
            config,
            failed: None,
            input: BytesMut::new(),
            skip: 0,
            large_data: None,
            inflater: Inflater::new(),
            deflater: Deflater::new(),
            streams: BTreeMap::new(),
            last_peer_stream_id: 0,
            next_local_stream_id: next_stream,
            next_ping_id: next_ping,
            pings_sent: VecDeque::new(),
            peer_initial_window: i64::from(DEFAULT_WINDOW),
            peer_max_streams: u32::MAX,
            session_send_window: i64::from(DEFAULT_WINDOW),
            session_recv_window: i64::from(DEFAULT_WINDOW),
            session_recv_unacked: 0,
            goaway_sent: false,
            goaway_received: false,
            control: BytesMut::new(),
            events: VecDeque::new(),
            control_flood: Flood::default(),
            local_resets: Flood::default(),
            remote_resets: Flood::default(),
            cursor: 0,
        }
    }

    // ---- getters ----

    pub fn role(&self) -> Role {
        self.role
    }

    /// A session error happened; only the GOAWAY is left to transmit.
    pub fn is_failed(&self) -> bool {
        self.failed.is_some()
    }

    /// Open streams (either side may still send).
    pub fn open_streams(&self) -> usize {
        self.streams.len()
    }

    /// Whether `stream_id` is open.
    pub fn is_open(&self, stream_id: u32) -> bool {
        self.streams.contains_key(&stream_id)
    }

    /// Bytes queued on a stream and not yet transmitted: the driver stops
    /// reading the stream's source past its own bound.
    pub fn send_buffered(&self, stream_id: u32) -> usize {
        self.streams.get(&stream_id).map_or(0, |s| s.queued)
    }

    /// Buffered input not yet parsed (at most one frame).
    pub fn recv_buffered(&self) -> usize {
        self.input.len()
    }

    /// Whether we sent GOAWAY, or the peer did.
    pub fn going_away(&self) -> bool {
        self.goaway_sent || self.goaway_received
    }

    /// Whether the session has nothing left to do: failed, or going away
    /// with no stream open.
    pub fn is_done(&self) -> bool {
        self.failed.is_some() || (self.going_away() && self.streams.is_empty())
    }

    // ---- input ----

    /// Feeds bytes read from the peer.
    pub fn recv(&mut self, data: &[u8], now: Instant) -> Result<(), ConnectionError> {
        if let Some(e) = self.failed {
            return Err(e);
        }
        self.input.extend_from_slice(data);
        let result = self.process(now);
        if let Err(e) = result {
            self.fail(e);
        }
        result
    }

    fn process(&mut self, now: Instant) -> Result<(), ConnectionError> {
        loop {
            if self.control.len() > self.config.max_pending_control {
                return Err(ConnectionError::protocol(
                    "peer does not read the control frames it causes",
                ));
            }
            if self.skip > 0 {
                let n = self.skip.min(self.input.len());
                self.input.advance(n);
                self.skip -= n;
                if self.skip > 0 {
                    return Ok(());
                }
            }
            if let Some((stream_id, flags, remaining)) = self.large_data {
                let piece = remaining.min(self.config.max_data_frame.max(1));
                if self.input.len() < piece {
                    return Ok(());
                }
                let data = self.input.split_to(piece).freeze();
                let left = remaining - piece;
                // FIN belongs to the last piece only.
                let piece_flags = if left == 0 { flags } else { flags & !FLAG_FIN };
                self.large_data = (left > 0).then_some((stream_id, flags, left));
                self.on_data(stream_id, piece_flags, data, now)?;
                if left > 0 && !self.streams.get(&stream_id).is_some_and(|s| s.recv_open) {
                    // Reset on this piece: the rest is dropped unread.
                    self.large_data = None;
                    self.skip = left;
                    self.session_recv_window -= left as i64;
                    self.return_session_credit(left);
                }
                continue;
            }
            let Some(head) = self.input.get(..HEAD_LEN) else {
                return Ok(());
            };
            let mut raw = [0u8; HEAD_LEN];
            raw.copy_from_slice(head);
            let head = Head::parse(raw);
            let length = head.length() as usize;
            match head {
                Head::Control {
                    version,
                    kind,
                    flags,
                    ..
                } => {
                    if length > self.config.max_control_frame {
                        let carries_block =
                            matches!(kind, frame::SYN_STREAM | frame::SYN_REPLY | frame::HEADERS);
                        if !carries_block {
                            return Err(ConnectionError::protocol("control frame too large"));
                        }
                        // The block cannot be inflated, so the compression
                        // state is lost: reset the stream, then the session.
                        let Some(id) = be_u32(&self.input, HEAD_LEN) else {
                            return Ok(());
                        };
                        self.queue_rst(id & MAX_STREAM_ID, RstStatus::FRAME_TOO_LARGE);
                        return Err(ConnectionError::protocol("header block frame too large"));
                    }
                    if self.input.len() < HEAD_LEN + length {
                        return Ok(());
                    }
                    let mut frame = self.input.split_to(HEAD_LEN + length).freeze();
                    frame.advance(HEAD_LEN);
                    self.on_control(version, kind, flags, frame, now)?;
                }
                Head::Data {
                    stream_id, flags, ..
                } => {
                    if length > self.config.max_data_frame {
                        // SPDY allows 16 MiB frames and spdystream writes
                        // each Write as one frame: hand it out in pieces
                        // rather than buffer it whole. The pieces fall at
                        // fixed offsets, so events do not depend on reads.
                        self.input.advance(HEAD_LEN);
                        self.large_data = Some((stream_id, flags, length));
                        continue;
                    }
                    if self.input.len() < HEAD_LEN + length {
                        return Ok(());
                    }
                    let mut frame = self.input.split_to(HEAD_LEN + length).freeze();
                    frame.advance(HEAD_LEN);
                    self.on_data(stream_id, flags, frame, now)?;
                }
            }
        }
    }

    fn on_control(
        &mut self,
        version: u16,
        kind: u16,
        flags: u8,
        payload: Bytes,
        now: Instant,
    ) -> Result<(), ConnectionError> {
        if version != frame::VERSION {
            if kind == frame::SYN_STREAM {
                if let Some(id) = be_u32(&payload, 0) {
                    self.queue_rst(id & MAX_STREAM_ID, RstStatus::UNSUPPORTED_VERSION);
                }
            }
            return Err(ConnectionError::protocol("unsupported SPDY version"));
        }
        let fin = flags & FLAG_FIN != 0;
        match kind {
            frame::SYN_STREAM => {
                if payload.len() < 10 {
                    return Err(ConnectionError::protocol("SYN_STREAM too short"));
                }
                let id = be_u32(&payload, 0).unwrap_or(0) & MAX_STREAM_ID;
                let associated = be_u32(&payload, 4).unwrap_or(0) & MAX_STREAM_ID;
                let priority = payload.get(8).map_or(0, |p| p >> 5);
                let block = self.inflate(id, payload.get(10..).unwrap_or(&[]))?;
                self.on_syn_stream(id, associated, priority, flags, block, now)
            }
            frame::SYN_REPLY | frame::HEADERS => {
                let Some(id) = be_u32(&payload, 0) else {
                    return Err(ConnectionError::protocol("header frame too short"));
                };
                let id = id & MAX_STREAM_ID;
                let block = self.inflate(id, payload.get(4..).unwrap_or(&[]))?;
                if id == 0 {
                    return Err(ConnectionError::protocol("header frame on stream 0"));
                }
                let headers = match decode_block(&block) {
                    Ok(h) => h,
                    Err(reason) => {
                        return self.stream_error(
                            StreamError {
                                stream_id: id,
                                status: RstStatus::PROTOCOL_ERROR,
                                reason,
                            },
                            now,
                        )
                    }
                };
                if kind == frame::SYN_REPLY {
                    self.on_syn_reply(id, headers, fin, now)
                } else {
                    self.on_headers(id, headers, fin, now)
                }
            }
            frame::RST_STREAM => {
                let (Some(id), Some(status), 8) =
                    (be_u32(&payload, 0), be_u32(&payload, 4), payload.len())
                else {
                    return Err(ConnectionError::protocol("RST_STREAM of wrong length"));
                };
                let id = id & MAX_STREAM_ID;
                if id == 0 || status == 0 {
                    return Err(ConnectionError::protocol("invalid RST_STREAM"));
                }
                if self.streams.remove(&id).is_some() {
                    self.events.push_back(Event::StreamReset {
                        stream_id: id,
                        status: RstStatus(status),
                        remote: true,
                    });
                    if self.remote_resets.hit(
                        now,
                        self.config.flood_window,
                        self.config.max_remote_resets,
                    ) {
                        return Err(ConnectionError::protocol("too many streams reset by peer"));
                    }
                }
                Ok(())
            }
            frame::SETTINGS => self.on_settings(&payload, now),
            frame::PING => {
                let (Some(id), 4) = (be_u32(&payload, 0), payload.len()) else {
                    return Err(ConnectionError::protocol("PING of wrong length"));
                };
                if self.is_local_id(id) {
                    // An answer to one of ours, or else ignored (§2.6.5).
                    if let Some(pos) = self.pings_sent.iter().position(|p| *p == id) {
                        self.pings_sent.remove(pos);
                        self.events.push_back(Event::PingAck { id });
                    }
                    return Ok(());
                }
                self.count_control(now)?;
                frame::encode_ping(&mut self.control, id);
                Ok(())
            }
            frame::GOAWAY => {
                let (Some(last), Some(status), 8) =
                    (be_u32(&payload, 0), be_u32(&payload, 4), payload.len())
                else {
                    return Err(ConnectionError::protocol("GOAWAY of wrong length"));
                };
                let last = last & MAX_STREAM_ID;
                self.goaway_received = true;
                // Streams we opened that the peer never saw are gone.
                let unseen: Vec<u32> = self
                    .streams
                    .iter()
                    .filter(|(id, s)| s.local && **id > last)
                    .map(|(id, _)| *id)
                    .collect();
                for id in unseen {
                    self.streams.remove(&id);
                    self.events.push_back(Event::StreamReset {
                        stream_id: id,
                        status: RstStatus::REFUSED_STREAM,
                        remote: true,
                    });
                }
                self.events.push_back(Event::GoAway {
                    last_good_stream_id: last,
                    status: GoAwayStatus(status),
                });
                Ok(())
            }
            frame::WINDOW_UPDATE => {
                let (Some(id), Some(delta), 8) =
                    (be_u32(&payload, 0), be_u32(&payload, 4), payload.len())
                else {
                    return Err(ConnectionError::protocol("WINDOW_UPDATE of wrong length"));
                };
                let id = id & MAX_STREAM_ID;
                let delta = i64::from(delta & MAX_STREAM_ID);
                let max = i64::from(MAX_STREAM_ID);
                if id == 0 {
                    if delta == 0 {
                        return Err(ConnectionError::protocol("session WINDOW_UPDATE of 0"));
                    }
                    self.session_send_window += delta;
                    if self.session_send_window > max {
                        return Err(ConnectionError::protocol("session window overflow"));
                    }
                    return Ok(());
                }
                let Some(stream) = self.streams.get_mut(&id) else {
                    return Ok(()); // late, after a reset or close
                };
                stream.send_window += delta;
                let status = if delta == 0 {
                    Some(RstStatus::PROTOCOL_ERROR)
                } else if stream.send_window > max {
                    Some(RstStatus::FLOW_CONTROL_ERROR)
                } else {
                    None
                };
                match status {
                    Some(status) => self.stream_error(
                        StreamError {
                            stream_id: id,
                            status,
                            reason: "bad stream WINDOW_UPDATE",
                        },
                        now,
                    ),
                    None => Ok(()),
                }
            }
            // Unknown control frames (CREDENTIAL, NOOP, ...) are ignored
            // (§2.2.1), but count against the flood limit.
            _ => self.count_control(now),
        }
    }

    fn on_syn_stream(
        &mut self,
        id: u32,
        associated: u32,
        priority: u8,
        flags: u8,
        block: Vec<u8>,
        now: Instant,
    ) -> Result<(), ConnectionError> {
        if id == 0 {
            return Err(ConnectionError::protocol("SYN_STREAM on stream 0"));
        }
        if self.is_local_id(id) {
            return Err(ConnectionError::protocol("SYN_STREAM with our parity"));
        }
        if id <= self.last_peer_stream_id {
            if self.streams.contains_key(&id) {
                return self.stream_error(
                    StreamError {
                        stream_id: id,
                        status: RstStatus::PROTOCOL_ERROR,
                        reason: "SYN_STREAM for an open stream",
                    },
                    now,
                );
            }
            return Err(ConnectionError::protocol("stream id went backwards"));
        }
        self.last_peer_stream_id = id;
        if self.goaway_sent {
            return Ok(()); // ignored after GOAWAY (§2.6.6)
        }
        let headers = match decode_block(&block) {
            Ok(h) => h,
            Err(reason) => {
                return self.stream_error(
                    StreamError {
                        stream_id: id,
                        status: RstStatus::PROTOCOL_ERROR,
                        reason,
                    },
                    now,
                )
            }
        };
        let peer_open = self.streams.values().filter(|s| !s.local).count();
        if peer_open >= self.config.max_concurrent_streams as usize {
            return self.stream_error(
                StreamError {
                    stream_id: id,
                    status: RstStatus::REFUSED_STREAM,
                    reason: "too many concurrent streams",
                },
                now,
            );
        }
        let fin = flags & FLAG_FIN != 0;
        let unidirectional = flags & FLAG_UNIDIRECTIONAL != 0;
        let mut stream = Stream::new(false, self.peer_initial_window, i64::from(DEFAULT_WINDOW));
        stream.recv_open = !fin;
        stream.send_open = !unidirectional;
        if !stream.done() {
            self.streams.insert(id, stream);
        }
        self.events.push_back(Event::StreamOpened {
            stream_id: id,
            headers,
            fin,
            unidirectional,
            associated_stream_id: associated,
            priority,
        });
        Ok(())
    }

    fn on_syn_reply(
        &mut self,
        id: u32,
        headers: HeaderList,
        fin: bool,
        now: Instant,
    ) -> Result<(), ConnectionError> {
        let Some(stream) = self.streams.get_mut(&id) else {
            return Ok(()); // late, after a reset
        };
        if !stream.local || stream.replied {
            let status = if stream.local {
                RstStatus::STREAM_IN_USE
            } else {
                RstStatus::PROTOCOL_ERROR
            };
            return self.stream_error(
                StreamError {
                    stream_id: id,
                    status,
                    reason: "unexpected SYN_REPLY",
                },
                now,
            );
        }
        stream.replied = true;
        if fin {
            stream.recv_open = false;
        }
        self.events.push_back(Event::Reply {
            stream_id: id,
            headers,
            fin,
        });
        self.remove_if_done(id);
        Ok(())
    }

    fn on_headers(
        &mut self,
        id: u32,
        headers: HeaderList,
        fin: bool,
        now: Instant,
    ) -> Result<(), ConnectionError> {
        let status = match self.streams.get_mut(&id) {
            None => RstStatus::INVALID_STREAM,
            Some(s) if !s.recv_open => RstStatus::STREAM_ALREADY_CLOSED,
            Some(s) => {
                if fin {
                    s.recv_open = false;
                }
                self.events.push_back(Event::Headers {
                    stream_id: id,
                    headers,
                    fin,
                });
                self.remove_if_done(id);
                return Ok(());
            }
        };
        self.stream_error(
            StreamError {
                stream_id: id,
                status,
                reason: "HEADERS on a stream not open",
            },
            now,
        )
    }

    fn on_settings(&mut self, payload: &[u8], now: Instant) -> Result<(), ConnectionError> {
        self.count_control(now)?;
        let count = be_u32(payload, 0).ok_or(ConnectionError::protocol("SETTINGS too short"))?;
        let expected = (count as usize)
            .checked_mul(8)
            .and_then(|n| n.checked_add(4));
        if expected != Some(payload.len()) {
            return Err(ConnectionError::protocol("SETTINGS of wrong length"));
        }
        for i in 0..count as usize {
            let at = 4 + 8 * i;
            let id = be_u32(payload, at).unwrap_or(0) & 0x00ff_ffff;
            let value = be_u32(payload, at + 4).unwrap_or(0);
            match id {
                frame::SETTINGS_INITIAL_WINDOW_SIZE => {
                    if value > MAX_STREAM_ID {
                        return Err(ConnectionError::protocol("initial window too large"));
                    }
                    // §2.6.8: the change applies to every open stream.
                    let delta = i64::from(value) - self.peer_initial_window;
                    self.peer_initial_window = i64::from(value);
                    for s in self.streams.values_mut() {
                        s.send_window += delta;
                    }
                }
                frame::SETTINGS_MAX_CONCURRENT_STREAMS => self.peer_max_streams = value,
                _ => {}
            }
        }
        Ok(())
    }

    fn on_data(
        &mut self,
        id: u32,
        flags: u8,
        data: Bytes,
        now: Instant,
    ) -> Result<(), ConnectionError> {
        if id == 0 {
            return Err(ConnectionError::protocol("DATA on stream 0"));
        }
        let len = data.len();
        let fin = flags & FLAG_FIN != 0;
        self.session_recv_window -= len as i64;
        if self.config.flow_control && self.session_recv_window < 0 {
            return Err(ConnectionError::protocol(
                "session flow-control window exceeded",
            ));
        }
        if len == 0 && !fin {
            self.count_control(now)?;
        }
        let status = match self.streams.get_mut(&id) {
            None => Some(RstStatus::INVALID_STREAM),
            Some(s) if !s.recv_open => Some(RstStatus::STREAM_ALREADY_CLOSED),
            Some(s) => {
                s.recv_window -= len as i64;
                if self.config.flow_control && s.recv_window < 0 {
                    Some(RstStatus::FLOW_CONTROL_ERROR)
                } else {
                    None
                }
            }
        };
        if let Some(status) = status {
            self.return_session_credit(len);
            return self.stream_error(
                StreamError {
                    stream_id: id,
                    status,
                    reason: "DATA not allowed on this stream",
                },
                now,
            );
        }
        if let Some(s) = self.streams.get_mut(&id) {
            if fin {
                s.recv_open = false;
            }
            // Credit goes back as the data is handed out (module docs).
            s.recv_unacked = s
                .recv_unacked
                .saturating_add(u32::try_from(len).unwrap_or(u32::MAX));
            if s.recv_open && s.recv_unacked >= DEFAULT_WINDOW / 2 {
                frame::encode_window_update(&mut self.control, id, s.recv_unacked);
                s.recv_window += i64::from(s.recv_unacked);
                s.recv_unacked = 0;
            }
        }
        self.return_session_credit(len);
        if len > 0 || fin {
            self.events.push_back(Event::Data {
                stream_id: id,
                data,
                fin,
            });
        }
        self.remove_if_done(id);
        Ok(())
    }

    fn return_session_credit(&mut self, len: usize) {
        self.session_recv_unacked = self
            .session_recv_unacked
            .saturating_add(u32::try_from(len).unwrap_or(u32::MAX));
        if self.session_recv_unacked >= DEFAULT_WINDOW / 2 {
            let delta = self.session_recv_unacked.min(MAX_STREAM_ID);
            frame::encode_window_update(&mut self.control, 0, delta);
            self.session_recv_window += i64::from(delta);
            self.session_recv_unacked -= delta;
        }
    }

    /// Inflates a header block; any failure is the session's.
    fn inflate(&mut self, stream_id: u32, block: &[u8]) -> Result<Vec<u8>, ConnectionError> {
        let mut out = Vec::new();
        match self
            .inflater
            .inflate(block, self.config.max_header_block, &mut out)
        {
            Ok(()) => Ok(out),
            Err(InflateError::TooLarge) => {
                if stream_id != 0 {
                    self.queue_rst(stream_id, RstStatus::FRAME_TOO_LARGE);
                }
                Err(ConnectionError::protocol(
                    "header block inflates past the limit",
                ))
            }
            Err(InflateError::Corrupt) => {
                Err(ConnectionError::protocol("header block does not inflate"))
            }
        }
    }

    fn count_control(&mut self, now: Instant) -> Result<(), ConnectionError> {
        if self.control_flood.hit(
            now,
            self.config.flood_window,
            self.config.max_control_frames,
        ) {
            return Err(ConnectionError::protocol("control frame flood"));
        }
        Ok(())
    }

    /// Resets a stream for the peer's error on it; too many is a flood.
    fn stream_error(&mut self, e: StreamError, now: Instant) -> Result<(), ConnectionError> {
        self.queue_rst(e.stream_id, e.status);
        if self.streams.remove(&e.stream_id).is_some() {
            self.events.push_back(Event::StreamReset {
                stream_id: e.stream_id,
                status: e.status,
                remote: false,
            });
        }
        if self
            .local_resets
            .hit(now, self.config.flood_window, self.config.max_local_resets)
        {
            return Err(ConnectionError::protocol("too many stream errors"));
        }
        Ok(())
    }

    fn queue_rst(&mut self, stream_id: u32, status: RstStatus) {
        frame::encode_rst_stream(&mut self.control, stream_id, status.0);
    }

    fn fail(&mut self, e: ConnectionError) {
        if self.failed.is_some() {
            return;
        }
        frame::encode_goaway(&mut self.control, self.last_peer_stream_id, e.status.0);
        self.failed = Some(e);
        self.goaway_sent = true;
        self.streams.clear();
        self.input = BytesMut::new();
        self.skip = 0;
        self.large_data = None;
        self.events.push_back(Event::ConnectionError(e));
    }

    fn is_local_id(&self, id: u32) -> bool {
        let odd = id % 2 == 1;
        match self.role {
            Role::Client => odd,
            Role::Server => !odd,
        }
    }

    fn remove_if_done(&mut self, id: u32) {
        if self.streams.get(&id).is_some_and(Stream::done) {
            self.streams.remove(&id);
        }
    }

    // ---- commands ----

    fn compress(&mut self, headers: &[(String, String)]) -> Result<Vec<u8>, UsageError> {
        let mut block = Vec::new();
        self.deflater
            .deflate(&encode_block(headers), &mut block)
            .map_err(|_| UsageError::Compression)?;
        Ok(block)
    }

    fn usable(&self) -> Result<(), UsageError> {
        match self.failed {
            Some(_) => Err(UsageError::Closed),
            None => Ok(()),
        }
    }

    /// Answers a stream the peer opened (SYN_REPLY); `fin` ends our side.
    pub fn reply(
        &mut self,
        stream_id: u32,
        headers: &[(String, String)],
        fin: bool,
    ) -> Result<(), UsageError> {
        self.usable()?;
        let stream = self
            .streams
            .get(&stream_id)
            .ok_or(UsageError::UnknownStream)?;
        if stream.local || stream.replied {
            return Err(UsageError::AlreadyReplied);
        }
        if !stream.send_open {
            // A unidirectional stream gets no reply (§2.3.2).
            return Err(UsageError::SendClosed);
        }
        let block = self.compress(headers)?;
        let flags = if fin { FLAG_FIN } else { 0 };
        frame::encode_syn_reply(&mut self.control, stream_id, flags, &block);
        if let Some(s) = self.streams.get_mut(&stream_id) {
            s.replied = true;
            if fin {
                s.send_open = false;
            }
        }
        self.remove_if_done(stream_id);
        Ok(())
    }

    /// Sends more headers on a stream (HEADERS).
    pub fn send_headers(
        &mut self,
        stream_id: u32,
        headers: &[(String, String)],
        fin: bool,
    ) -> Result<(), UsageError> {
        self.usable()?;
        let s = self
            .streams
            .get(&stream_id)
            .ok_or(UsageError::UnknownStream)?;
        if !s.local && !s.replied {
            return Err(UsageError::NotReplied);
        }
        if !s.send_open {
            return Err(UsageError::SendClosed);
        }
        let block = self.compress(headers)?;
        let flags = if fin { FLAG_FIN } else { 0 };
        frame::encode_headers(&mut self.control, stream_id, flags, &block);
        if fin {
            if let Some(s) = self.streams.get_mut(&stream_id) {
                s.send_open = false;
            }
        }
        self.remove_if_done(stream_id);
        Ok(())
    }

    /// Queues data on a stream; `fin` half-closes our side after it.
    pub fn send_data(&mut self, stream_id: u32, data: Bytes, fin: bool) -> Result<(), UsageError> {
        self.usable()?;
        let s = self
            .streams
            .get_mut(&stream_id)
            .ok_or(UsageError::UnknownStream)?;
        if !s.local && !s.replied {
            return Err(UsageError::NotReplied);
        }
        if !s.send_open {
            return Err(UsageError::SendClosed);
        }
        if !data.is_empty() {
            s.queued = s.queued.saturating_add(data.len());
            s.queue.push_back(data);
        }
        if fin {
            s.send_open = false;
            s.fin_queued = true;
        }
        Ok(())
    }

    /// Half-closes our side of a stream (an empty DATA frame with FIN
    /// after what is queued).
    pub fn close(&mut self, stream_id: u32) -> Result<(), UsageError> {
        self.send_data(stream_id, Bytes::new(), true)
    }

    /// Resets a stream; what was queued on it is dropped.
    pub fn reset(&mut self, stream_id: u32, status: RstStatus) -> Result<(), UsageError> {
        self.usable()?;
        self.streams
            .remove(&stream_id)
            .ok_or(UsageError::UnknownStream)?;
        self.queue_rst(stream_id, status);
        Ok(())
    }

    /// Opens a stream (SYN_STREAM) and returns its id.
    pub fn open_stream(
        &mut self,
        headers: &[(String, String)],
        fin: bool,
    ) -> Result<u32, UsageError> {
        self.usable()?;
        if self.going_away() {
            return Err(UsageError::GoingAway);
        }
        let local_open = self.streams.values().filter(|s| s.local).count();
        if local_open >= self.peer_max_streams as usize {
            return Err(UsageError::StreamLimit);
        }
        let id = self.next_local_stream_id;
        if id > MAX_STREAM_ID {
            return Err(UsageError::StreamLimit);
        }
        let block = self.compress(headers)?;
        self.next_local_stream_id = id.saturating_add(2);
        let flags = if fin { FLAG_FIN } else { 0 };
        frame::encode_syn_stream(&mut self.control, id, 0, 0, flags, &block);
        let mut stream = Stream::new(true, self.peer_initial_window, i64::from(DEFAULT_WINDOW));
        stream.send_open = !fin;
        self.streams.insert(id, stream);
        Ok(id)
    }

    /// Sends a PING; the answer comes as [`Event::PingAck`] with this id.
    pub fn ping(&mut self) -> Result<u32, UsageError> {
        self.usable()?;
        let id = self.next_ping_id;
        // Ids keep our parity and wrap before 31 bits run out.
        self.next_ping_id = if id >= MAX_STREAM_ID - 1 {
            2 - id % 2
        } else {
            id + 2
        };
        if self.pings_sent.len() >= 16 {
            self.pings_sent.pop_front();
        }
        self.pings_sent.push_back(id);
        frame::encode_ping(&mut self.control, id);
        Ok(id)
    }

    /// Sends GOAWAY: the peer's later streams are ignored; open ones go on.
    pub fn go_away(&mut self, status: GoAwayStatus) {
        if self.failed.is_some() || self.goaway_sent {
            return;
        }
        self.goaway_sent = true;
        frame::encode_goaway(&mut self.control, self.last_peer_stream_id, status.0);
    }

    // ---- output ----

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Bytes to write to the peer: control frames first, then DATA from
    /// the streams in turn (within the peer's windows when
    /// [`Config::flow_control`] is on).
    pub fn poll_transmit(&mut self) -> Option<Bytes> {
        let mut out = self.control.split();
        if self.failed.is_none() {
            self.schedule_data(&mut out);
        }
        if out.is_empty() {
            None
        } else {
            Some(out.freeze())
        }
    }

    fn schedule_data(&mut self, out: &mut BytesMut) {
        let max_frame = self.config.max_send_frame.max(1);
        loop {
            let mut progress = false;
            // Streams from the cursor on, then the ones before it.
            let ids: Vec<u32> = self
                .streams
                .range(self.cursor..)
                .chain(self.streams.range(..self.cursor))
                .filter(|(_, s)| !s.queue.is_empty() || s.fin_queued)
                .map(|(id, _)| *id)
                .collect();
            for id in ids {
                if out.len() >= self.config.transmit_chunk {
                    return;
                }
                let session_window = self.session_send_window;
                let flow_control = self.config.flow_control;
                let Some(s) = self.streams.get_mut(&id) else {
                    continue;
                };
                let allowance = if flow_control {
                    let w = s.send_window.min(session_window).max(0);
                    usize::try_from(w).unwrap_or(0).min(max_frame)
                } else {
                    max_frame
                };
                let mut chunk = BytesMut::new();
                while chunk.len() < allowance {
                    let Some(front) = s.queue.front_mut() else {
                        break;
                    };
                    let n = front.len().min(allowance - chunk.len());
                    chunk.extend_from_slice(&front.split_to(n));
                    if front.is_empty() {
                        s.queue.pop_front();
                    }
                }
                let fin = s.fin_queued && s.queue.is_empty();
                if chunk.is_empty() && !fin {
                    continue;
                }
                let n = chunk.len();
                s.queued -= n.min(s.queued);
                s.send_window -= n as i64;
                if fin {
                    s.fin_queued = false;
                }
                self.session_send_window -= n as i64;
                frame::encode_data(out, id, if fin { FLAG_FIN } else { 0 }, &chunk);
                self.cursor = id.saturating_add(1);
                progress = true;
                self.remove_if_done(id);
            }
            if !progress {
                return;
            }
        }
    }

    /// No timers today: flood limits count with the time given to `recv`.
    pub fn poll_timeout(&self) -> Option<Instant> {
        None
    }
}
