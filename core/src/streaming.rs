//! One streaming session — exec, attach or port-forward — over whichever
//! transport the client chose, as one sans-I/O machine.
//!
//! The pieces live beside it: [`crate::upgrade`] parses the HTTP/1.1
//! request and picks the transport, [`crate::spdy`] and [`crate::websocket`]
//! frame the bytes, [`crate::remotecommand`] says what the streams mean.
//! [`Session`] joins them so that the host deals in what a process and a
//! TCP connection understand: stdin bytes, a terminal size, "open port 80",
//! and gives back output, exit codes and forwarded bytes.
//!
//! # Calling order
//! 1. [`Session::new`] with the parsed request, once the host has looked
//!    up its token. The `101 Switching Protocols` answer is the first
//!    thing [`Session::poll_transmit`] returns.
//! 2. Feed what the socket reads to [`Session::recv`] with the time; tell
//!    [`Session::peer_closed`] when it reads end-of-file.
//! 3. Drain [`Session::poll_event`]: [`Event::Start`] means every stream
//!    the client will use is there (kubelet starts the process only then);
//!    port-forward sessions ask for connections with [`Event::PortOpen`].
//! 4. Answer with commands: [`Session::send_output`],
//!    [`Session::close_output`], [`Session::finish`] (the exit status,
//!    after the output), [`Session::port_data`], [`Session::port_eof`],
//!    [`Session::port_error`].
//! 5. Write out [`Session::poll_transmit`]; wake at
//!    [`Session::poll_timeout`] and call [`Session::handle_timeout`]; close
//!    the socket once [`Session::is_done`].
//!
//! Over SPDY the client opens one stream per role (kubelet answers each at
//! once); over WebSocket the roles are the channel bytes and everything is
//! there from the start. SPDY tunnelled in WebSocket (client-go's
//! port-forward since Kubernetes 1.30) is a SPDY session whose bytes ride
//! in binary messages.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::grpc::Status;
use crate::remotecommand::{
    self as rc, ExecStreams, PortForwardPairs, ResizeDecoder, StreamOptions, StreamType,
    TerminalSize, Version,
};
use crate::spdy::{self, GoAwayStatus, RstStatus};
use crate::upgrade::{Endpoint, Transport, UpgradeRequest};
use crate::websocket::{self, channel, close_code};

/// The streams an Exec or Attach request asks for, or why they make no
/// sense (kubelet's rules: at least one stream; a terminal has no
/// separate stderr).
pub fn stream_options(
    stdin: bool,
    stdout: bool,
    stderr: bool,
    tty: bool,
) -> Result<StreamOptions, Status> {
    if !(stdin || stdout || stderr) {
        return Err(Status::invalid_argument(
            "one of stdin, stdout and stderr must be set",
        ));
    }
    if tty && stderr {
        return Err(Status::invalid_argument(
            "tty and stderr cannot both be set: a terminal merges stderr into stdout",
        ));
    }
    Ok(StreamOptions {
        stdin,
        stdout,
        stderr,
        tty,
    })
}

/// The single-use tokens behind the URLs that Exec, Attach and
/// PortForward answer: each stands for one request for `ttl`, and at most
/// `max` wait at once (a caller that asks for URLs and never uses them
/// cannot grow the table).
pub struct Tokens<T> {
    entries: BTreeMap<String, (T, Instant)>,
    ttl: Duration,
    max: usize,
}

impl<T> Tokens<T> {
    pub fn new(ttl: Duration, max: usize) -> Self {
        Self {
            entries: BTreeMap::new(),
            ttl,
            max,
        }
    }

    /// Keeps `value` under `token` (which the host drew at random);
    /// `Err` when too many are outstanding.
    pub fn insert(&mut self, token: String, value: T, now: Instant) -> Result<(), Status> {
        self.expire(now);
        if self.entries.len() >= self.max {
            return Err(Status::resource_exhausted(format!(
                "{} streaming requests are waiting to be used; try again later",
                self.entries.len()
            )));
        }
        self.entries.insert(token, (value, now + self.ttl));
        Ok(())
    }

    /// The request behind `token`, once: a used or expired token is gone.
    pub fn take(&mut self, token: &str, now: Instant) -> Option<T> {
        self.expire(now);
        self.entries.remove(token).map(|(v, _)| v)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn expire(&mut self, now: Instant) {
        self.entries.retain(|_, (_, until)| *until > now);
    }
}

/// What the token stood for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Exec(StreamOptions),
    Attach(StreamOptions),
    PortForward,
}

impl Kind {
    pub fn endpoint(self) -> Endpoint {
        match self {
            Kind::Exec(_) => Endpoint::Exec,
            Kind::Attach(_) => Endpoint::Attach,
            Kind::PortForward => Endpoint::PortForward,
        }
    }
}

/// Limits and timeouts of one session.
#[derive(Clone, Debug)]
pub struct Config {
    pub spdy: spdy::Config,
    pub websocket: websocket::Config,
    /// How long an exec or attach client has to open its streams, and a
    /// port-forward stream to find its pair (kubelet: 30 s).
    pub stream_creation_timeout: Duration,
    /// Port-forward pairs waiting for their second stream.
    pub max_pending_pairs: usize,
    /// Forwarded connections open at once in one session.
    pub max_port_connections: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            spdy: spdy::Config::default(),
            websocket: websocket::Config::default(),
            stream_creation_timeout: Duration::from_secs(30),
            max_pending_pairs: 128,
            max_port_connections: 256,
        }
    }
}

/// What the host has to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// Exec or attach: every stream is there; start the process (or attach).
    Start,
    Stdin(Bytes),
    /// The client closed stdin.
    StdinEof,
    Resize(TerminalSize),
    /// Port forward: connect to `port` in the pod; `conn` names the
    /// connection in the commands and events that follow.
    PortOpen {
        conn: u32,
        port: u16,
    },
    PortData {
        conn: u32,
        data: Bytes,
    },
    /// The client will send nothing more on the connection (half-close).
    PortEof {
        conn: u32,
    },
    /// The client dropped the connection: close it.
    PortClosed {
        conn: u32,
    },
    /// The session is over from the client's side (gone, or broke the
    /// protocol): stop what it started. Comes once.
    Ended(String),
}

/// Which output stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    Stdout,
    Stderr,
}

impl Output {
    /// The SPDY stream type that carries this output.
    fn stream_type(self) -> StreamType {
        match self {
            Output::Stdout => StreamType::Stdout,
            Output::Stderr => StreamType::Stderr,
        }
    }
}

/// Why a session cannot start: the HTTP status and text to answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub status: u16,
    pub reason: String,
}

/// The transport under the session.
enum Wire {
    /// (Boxed: a SPDY session is large beside a WebSocket's state.)
    Spdy(Box<spdy::Connection>),
    /// The Kubernetes channel protocol in WebSocket messages.
    Channels {
        ws: websocket::Connection,
        protocol: channel::Protocol,
    },
    /// A SPDY session's bytes in binary WebSocket messages.
    Tunnel {
        ws: websocket::Connection,
        spdy: Box<spdy::Connection>,
    },
}

/// One forwarded connection over SPDY, keyed by its data stream.
struct SpdyPort {
    error_stream: u32,
}

/// One streaming session.
pub struct Session {
    kind: Kind,
    wire: Wire,
    /// The `101` answer, sent before anything else.
    accept: Option<Bytes>,
    events: VecDeque<Event>,
    /// Exec and attach over SPDY: the streams so far.
    exec: Option<ExecStreams>,
    /// The remotecommand version (what the error stream carries).
    version: Version,
    started: bool,
    start_deadline: Option<Instant>,
    resize: ResizeDecoder,
    pairs: PortForwardPairs,
    spdy_ports: BTreeMap<u32, SpdyPort>,
    /// Port forward over channels: the URL's ports, by connection index.
    channel_ports: Vec<u16>,
    max_port_connections: usize,
    finished: bool,
    ended: bool,
    /// The time of the latest input (when a port-forward half arrived).
    now: Instant,
}

impl Session {
    /// A session for `request`, whose token stood for `kind`.
    pub fn new(
        request: &UpgradeRequest,
        kind: Kind,
        config: &Config,
        now: Instant,
    ) -> Result<Self, Refusal> {
        if request.endpoint != kind.endpoint() {
            return Err(Refusal {
                status: 400,
                reason: "the token is for another endpoint".into(),
            });
        }
        let (wire, version, channel_ports) = match &request.transport {
            Transport::Spdy { protocol } => {
                let version = match kind {
                    Kind::PortForward => Version::V4,
                    _ => Version::from_protocol(*protocol).unwrap_or(Version::V1),
                };
                let spdy = Box::new(spdy::Connection::server(config.spdy.clone()));
                (Wire::Spdy(spdy), version, Vec::new())
            }
            Transport::WebSocket { protocol, .. } => {
                let ws = websocket::Connection::new(config.websocket.clone());
                match channel::Protocol::from_subprotocol(*protocol) {
                    Some(p) => {
                        let ports = match kind {
                            Kind::PortForward => rc::websocket_ports(request.query_values("port"))
                                .map_err(|reason| Refusal {
                                    status: 400,
                                    reason,
                                })?,
                            _ => Vec::new(),
                        };
                        let version = if p.status_json {
                            Version::V4
                        } else {
                            Version::V1
                        };
                        (Wire::Channels { ws, protocol: p }, version, ports)
                    }
                    // The SPDY tunnel is offered for port forwarding only.
                    None => {
                        let spdy = spdy::Connection::server(config.spdy.clone());
                        let spdy = Box::new(spdy);
                        (Wire::Tunnel { ws, spdy }, Version::V4, Vec::new())
                    }
                }
            }
        };
        let mut session = Self {
            kind,
            exec: match (kind, &wire) {
                (Kind::Exec(o) | Kind::Attach(o), Wire::Spdy(_)) => {
                    Some(ExecStreams::new(version, o))
                }
                _ => None,
            },
            wire,
            accept: Some(Bytes::from(request.accept_response())),
            events: VecDeque::new(),
            version,
            started: false,
            start_deadline: None,
            resize: ResizeDecoder::new(),
            pairs: PortForwardPairs::new(config.stream_creation_timeout, config.max_pending_pairs),
            spdy_ports: BTreeMap::new(),
            channel_ports,
            max_port_connections: config.max_port_connections,
            finished: false,
            ended: false,
            now,
        };
        session.begin(config, now);
        Ok(session)
    }

    fn begin(&mut self, config: &Config, now: Instant) {
        let channels = match &mut self.wire {
            Wire::Channels { ws, protocol } => Some((ws, *protocol)),
            _ => None,
        };
        match (self.kind, channels) {
            (Kind::PortForward, Some((ws, protocol))) => {
                // Each port's channels start with the port, as kubelet's do.
                for (i, port) in self.channel_ports.iter().enumerate() {
                    let Some((data, error)) = rc::websocket_port_channels(i) else {
                        continue;
                    };
                    for ch in [data, error] {
                        let (binary, msg) =
                            channel::encode(protocol, ch, &rc::websocket_port_prefix(*port));
                        let _ = ws.send_message(binary, &msg);
                    }
                    self.events.push_back(Event::PortOpen {
                        conn: i as u32,
                        port: *port,
                    });
                }
            }
            (Kind::Exec(_) | Kind::Attach(_), Some(_)) => {
                self.started = true;
                self.events.push_back(Event::Start);
            }
            (Kind::Exec(_) | Kind::Attach(_), None) => {
                self.start_deadline = Some(now + config.stream_creation_timeout);
            }
            (Kind::PortForward, None) => {}
        }
    }

    // ---- inputs ----

    /// Bytes read from the client.
    pub fn recv(&mut self, data: &[u8], now: Instant) {
        if self.ended {
            return;
        }
        self.now = now;
        match &mut self.wire {
            Wire::Spdy(spdy) => {
                let _ = spdy.recv(data, now);
                self.drain_spdy();
            }
            Wire::Channels { ws, .. } | Wire::Tunnel { ws, .. } => {
                let _ = ws.recv(data, now);
                self.drain_websocket(now);
            }
        }
    }

    /// The client closed its end of the socket.
    pub fn peer_closed(&mut self) {
        self.end("the client closed the connection");
    }

    /// Timers: streams that never came.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self
            .start_deadline
            .is_some_and(|at| !self.started && now >= at)
        {
            self.start_deadline = None;
            self.end("the client did not open its streams in time");
            if let Some(spdy) = self.spdy_mut() {
                spdy.go_away(GoAwayStatus::OK);
            }
            return;
        }
        let expired = self.pairs.expire(now);
        if let Some(spdy) = self.spdy_mut() {
            for id in expired {
                let _ = spdy.reset(id, RstStatus::REFUSED_STREAM);
            }
        }
        self.flush_tunnel();
    }

    // ---- commands ----

    /// Output of the process (or the attached container). Dropped when the
    /// client did not ask for that stream.
    pub fn send_output(&mut self, which: Output, data: &[u8]) {
        if data.is_empty() || self.finished {
            return;
        }
        let role = which.stream_type();
        match &mut self.wire {
            Wire::Spdy(spdy) => {
                if let Some(id) = self.exec.as_ref().and_then(|e| e.get(role)) {
                    let _ = spdy.send_data(id, Bytes::copy_from_slice(data), false);
                }
            }
            Wire::Channels { ws, protocol } => {
                if let Some(ch) = role.channel() {
                    let (binary, msg) = channel::encode(*protocol, ch, data);
                    let _ = ws.send_message(binary, &msg);
                }
            }
            Wire::Tunnel { .. } => {}
        }
    }

    /// The output stream ended (EOF on the process's pipe).
    pub fn close_output(&mut self, which: Output) {
        let role = which.stream_type();
        match &mut self.wire {
            Wire::Spdy(spdy) => {
                if let Some(id) = self.exec.as_ref().and_then(|e| e.get(role)) {
                    let _ = spdy.close(id);
                }
            }
            // v5's CLOSE goes from the client to us only (clients discard
            // it as an unknown stream): the exit status ends the output.
            Wire::Channels { .. } | Wire::Tunnel { .. } => {}
        }
    }

    /// The end of an exec or attach: `Ok(code)` when the process exited
    /// with `code`, `Err(why)` when it could not run. Written on the error
    /// stream; the session then closes.
    pub fn finish(&mut self, exit: Result<i32, String>) {
        if self.finished {
            return;
        }
        self.finished = true;
        let (code, error) = match &exit {
            Ok(c) => (Some(*c), ""),
            Err(e) => (None, e.as_str()),
        };
        let message = rc::error_stream_message(self.version, code, error);
        match &mut self.wire {
            Wire::Spdy(spdy) => {
                let exec = self.exec.as_ref();
                for role in [StreamType::Stdout, StreamType::Stderr] {
                    if let Some(id) = exec.and_then(|e| e.get(role)) {
                        if spdy.is_open(id) {
                            let _ = spdy.close(id);
                        }
                    }
                }
                if let Some(id) = exec.and_then(|e| e.get(StreamType::Error)) {
                    let _ = spdy.send_data(id, Bytes::from(message), true);
                }
                // No GOAWAY: spdystream tears the session down on one at
                // once, racing the readers of data it already received.
                // The client closes once it has read the error stream.
            }
            Wire::Channels { ws, protocol } => {
                if !message.is_empty() {
                    let (binary, msg) = channel::encode(*protocol, channel::ERROR, &message);
                    let _ = ws.send_message(binary, &msg);
                }
                let _ = ws.close(close_code::NORMAL, "");
            }
            Wire::Tunnel { ws, .. } => {
                let _ = ws.close(close_code::NORMAL, "");
            }
        }
    }

    /// Bytes from the pod for forwarded connection `conn`.
    pub fn port_data(&mut self, conn: u32, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        match &mut self.wire {
            Wire::Channels { ws, protocol } => {
                if let Some((ch, _)) = rc::websocket_port_channels(conn as usize) {
                    let (binary, msg) = channel::encode(*protocol, ch, data);
                    let _ = ws.send_message(binary, &msg);
                }
            }
            Wire::Spdy(spdy) | Wire::Tunnel { spdy, .. } => {
                if self.spdy_ports.contains_key(&conn) {
                    let _ = spdy.send_data(conn, Bytes::copy_from_slice(data), false);
                }
            }
        }
        self.flush_tunnel();
    }

    /// The pod's side of connection `conn` ended.
    pub fn port_eof(&mut self, conn: u32) {
        match &mut self.wire {
            // The channel form has no half-close towards the client.
            Wire::Channels { .. } => {}
            Wire::Spdy(spdy) | Wire::Tunnel { spdy, .. } => {
                if let Some(p) = self.spdy_ports.remove(&conn) {
                    let _ = spdy.close(conn);
                    let _ = spdy.close(p.error_stream);
                }
            }
        }
        self.flush_tunnel();
    }

    /// Connection `conn` failed (could not connect, or broke): the
    /// message goes on its error stream, as kubelet's does.
    pub fn port_error(&mut self, conn: u32, message: &str) {
        match &mut self.wire {
            Wire::Channels { ws, protocol } => {
                if let Some((_, ch)) = rc::websocket_port_channels(conn as usize) {
                    let (binary, msg) = channel::encode(*protocol, ch, message.as_bytes());
                    let _ = ws.send_message(binary, &msg);
                }
            }
            Wire::Spdy(spdy) | Wire::Tunnel { spdy, .. } => {
                if let Some(p) = self.spdy_ports.remove(&conn) {
                    let msg = Bytes::copy_from_slice(message.as_bytes());
                    let _ = spdy.send_data(p.error_stream, msg, true);
                    let _ = spdy.close(conn);
                }
            }
        }
        self.flush_tunnel();
    }

    // ---- outputs ----

    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Bytes to write to the client.
    pub fn poll_transmit(&mut self) -> Option<Bytes> {
        if let Some(a) = self.accept.take() {
            return Some(a);
        }
        self.flush_tunnel();
        match &mut self.wire {
            Wire::Spdy(spdy) => spdy.poll_transmit(),
            Wire::Channels { ws, .. } | Wire::Tunnel { ws, .. } => ws.poll_transmit(),
        }
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        let start = self.start_deadline.filter(|_| !self.started);
        match (start, self.pairs.poll_timeout()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Nothing more will be sent: close the socket once `poll_transmit`
    /// has been drained.
    pub fn is_done(&self) -> bool {
        if self.ended || self.finished {
            return true;
        }
        match &self.wire {
            Wire::Spdy(spdy) => spdy.is_failed(),
            Wire::Channels { ws, .. } | Wire::Tunnel { ws, .. } => ws.is_closed(),
        }
    }

    /// Whether [`Event::Start`] has come.
    pub fn is_started(&self) -> bool {
        self.started
    }

    pub fn kind(&self) -> Kind {
        self.kind
    }

    // ---- internals ----

    fn spdy_mut(&mut self) -> Option<&mut spdy::Connection> {
        match &mut self.wire {
            Wire::Spdy(s) | Wire::Tunnel { spdy: s, .. } => Some(&mut **s),
            Wire::Channels { .. } => None,
        }
    }

    fn end(&mut self, why: &str) {
        if !self.ended && !self.finished {
            self.events.push_back(Event::Ended(why.to_string()));
        }
        self.ended = true;
    }

    /// Moves the tunnelled SPDY session's output into WebSocket messages.
    fn flush_tunnel(&mut self) {
        if let Wire::Tunnel { ws, spdy } = &mut self.wire {
            while let Some(bytes) = spdy.poll_transmit() {
                if ws.send_message(true, &bytes).is_err() {
                    break;
                }
            }
        }
    }

    fn drain_websocket(&mut self, now: Instant) {
        loop {
            let event = match &mut self.wire {
                Wire::Channels { ws, .. } | Wire::Tunnel { ws, .. } => ws.poll_event(),
                Wire::Spdy(_) => None,
            };
            let Some(event) = event else { break };
            match event {
                websocket::Event::Message { binary, data } => match &mut self.wire {
                    Wire::Channels { protocol, ws } => {
                        match channel::decode(*protocol, binary, &data) {
                            Ok(m) => self.on_channel_message(m),
                            Err(e) => {
                                let _ =
                                    ws.close(close_code::UNSUPPORTED_DATA, "bad channel message");
                                self.end(&format!("bad channel message: {e:?}"));
                            }
                        }
                    }
                    Wire::Tunnel { spdy, ws } => {
                        if !binary {
                            let _ = ws.close(close_code::UNSUPPORTED_DATA, "text in SPDY tunnel");
                            self.end("a text message in the SPDY tunnel");
                        } else {
                            let _ = spdy.recv(&data, now);
                            self.drain_spdy();
                        }
                    }
                    Wire::Spdy(_) => {}
                },
                websocket::Event::Pong(_) => {}
                websocket::Event::Closed { .. } => self.end("the client closed the WebSocket"),
                websocket::Event::Failed(e) => self.end(&format!("WebSocket error: {e}")),
            }
        }
        self.flush_tunnel();
    }

    fn on_channel_message(&mut self, message: channel::Message) {
        let (channel_no, data) = match message {
            channel::Message::Empty => return,
            channel::Message::Close { channel } => {
                let port_data =
                    channel % 2 == 0 && usize::from(channel / 2) < self.channel_ports.len();
                match self.kind {
                    Kind::PortForward if port_data => self.events.push_back(Event::PortEof {
                        conn: u32::from(channel / 2),
                    }),
                    Kind::Exec(_) | Kind::Attach(_) if channel == channel::STDIN => {
                        self.events.push_back(Event::StdinEof)
                    }
                    _ => {}
                }
                return;
            }
            channel::Message::Data { channel, data } => (channel, data),
        };
        match self.kind {
            Kind::PortForward => {
                let index = usize::from(channel_no / 2);
                if channel_no % 2 == 0 && index < self.channel_ports.len() && !data.is_empty() {
                    self.events.push_back(Event::PortData {
                        conn: index as u32,
                        data,
                    });
                }
            }
            Kind::Exec(o) | Kind::Attach(o) => match channel_no {
                channel::STDIN if o.stdin && !data.is_empty() => {
                    self.events.push_back(Event::Stdin(data))
                }
                channel::RESIZE if o.tty => self.on_resize(&data),
                _ => {}
            },
        }
    }

    fn on_resize(&mut self, data: &[u8]) {
        match self.resize.push(data) {
            Ok(sizes) => self.events.extend(sizes.into_iter().map(Event::Resize)),
            // kubelet stops reading a broken resize stream; so do we.
            Err(_) => self.resize = ResizeDecoder::new(),
        }
    }

    fn drain_spdy(&mut self) {
        loop {
            let event = match self.spdy_mut() {
                Some(s) => s.poll_event(),
                None => None,
            };
            let Some(event) = event else { break };
            match event {
                spdy::Event::StreamOpened {
                    stream_id, headers, ..
                } => self.on_stream_opened(stream_id, &headers),
                spdy::Event::Data {
                    stream_id,
                    data,
                    fin,
                } => self.on_spdy_data(stream_id, data, fin),
                spdy::Event::StreamReset { stream_id, .. } => {
                    if self.spdy_ports.remove(&stream_id).is_some() {
                        self.events.push_back(Event::PortClosed { conn: stream_id });
                    } else if let Some(StreamType::Stdin) =
                        self.exec.as_ref().and_then(|e| e.role(stream_id))
                    {
                        self.events.push_back(Event::StdinEof);
                    }
                }
                spdy::Event::GoAway { .. } => {
                    // A port-forward client sends GOAWAY when it is done;
                    // an exec client just closes.
                    self.end("the client sent GOAWAY");
                }
                spdy::Event::ConnectionError(e) => self.end(&format!("SPDY error: {e}")),
                spdy::Event::Reply { .. }
                | spdy::Event::Headers { .. }
                | spdy::Event::PingAck { .. } => {}
            }
        }
        self.flush_tunnel();
    }

    fn on_stream_opened(&mut self, stream_id: u32, headers: &[(String, String)]) {
        let kind = self.kind;
        let Some(spdy) = self.spdy_mut() else { return };
        // kubelet answers every stream as it comes.
        if spdy.reply(stream_id, &[], false).is_err() {
            return;
        }
        match kind {
            Kind::Exec(_) | Kind::Attach(_) => {
                let Some(exec) = self.exec.as_mut() else {
                    return;
                };
                match exec.add(stream_id, headers) {
                    Ok(true) if !self.started => {
                        self.started = true;
                        self.start_deadline = None;
                        self.events.push_back(Event::Start);
                    }
                    Ok(_) => {}
                    Err(_) => {
                        if let Some(s) = self.spdy_mut() {
                            let _ = s.reset(stream_id, RstStatus::PROTOCOL_ERROR);
                        }
                    }
                }
            }
            Kind::PortForward => {
                let now_pairs = self.spdy_ports.len();
                let result = self.pairs.add(stream_id, headers, self.now);
                match result {
                    Ok(Some(pair)) if now_pairs < self.max_port_connections => {
                        self.spdy_ports.insert(
                            pair.data_stream,
                            SpdyPort {
                                error_stream: pair.error_stream,
                            },
                        );
                        self.events.push_back(Event::PortOpen {
                            conn: pair.data_stream,
                            port: pair.port,
                        });
                    }
                    Ok(Some(pair)) => {
                        if let Some(s) = self.spdy_mut() {
                            let _ = s.reset(pair.data_stream, RstStatus::REFUSED_STREAM);
                            let _ = s.reset(pair.error_stream, RstStatus::REFUSED_STREAM);
                        }
                    }
                    Ok(None) => {}
                    Err(_) => {
                        if let Some(s) = self.spdy_mut() {
                            let _ = s.reset(stream_id, RstStatus::PROTOCOL_ERROR);
                        }
                    }
                }
            }
        }
    }

    fn on_spdy_data(&mut self, stream_id: u32, data: Bytes, fin: bool) {
        if self.spdy_ports.contains_key(&stream_id) {
            if !data.is_empty() {
                self.events.push_back(Event::PortData {
                    conn: stream_id,
                    data,
                });
            }
            if fin {
                self.events.push_back(Event::PortEof { conn: stream_id });
            }
            return;
        }
        let (role, options) = match (&self.exec, self.kind) {
            (Some(e), Kind::Exec(o) | Kind::Attach(o)) => (e.role(stream_id), o),
            _ => return,
        };
        match role {
            Some(StreamType::Stdin) => {
                if !data.is_empty() {
                    self.events.push_back(Event::Stdin(data));
                }
                if fin {
                    self.events.push_back(Event::StdinEof);
                }
            }
            Some(StreamType::Resize) if options.tty => self.on_resize(&data),
            _ => {}
        }
    }
}
