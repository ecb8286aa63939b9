//! The client side of gRPC over one HTTP/2 connection, with no I/O.
//!
//! crisp serves the CRI, but a client is needed to test the core against
//! independent servers, to benchmark, and for crisp's own tools. It has the
//! same shape as [`super::server::Server`]: bytes and `now` in, events and
//! bytes out, deadlines polled.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use super::codec::{self, Deframer};
use super::compression::{self, Encoding};
use super::deadline::{self, Deadlines};
use super::metadata;
use super::status::{Code, Status};
use super::timeout;
use crate::h2::{self, ConnectionError, ErrorCode, Header, StreamId, UsageError};

#[derive(Clone, Debug)]
pub struct ClientConfig {
    pub h2: h2::Config,
    pub max_recv_message_size: usize,
    /// The `:authority` sent with every call.
    pub authority: Bytes,
    /// The `content-type` of every call: `application/grpc` (protobuf), or
    /// e.g. `application/grpc+json` for a caller that sends JSON messages
    /// with [`Client::send_encoded`].
    pub content_type: &'static str,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            h2: h2::Config::default(),
            max_recv_message_size: codec::DEFAULT_MAX_RECV_MESSAGE_SIZE,
            authority: Bytes::from_static(b"localhost"),
            content_type: metadata::CONTENT_TYPE_GRPC,
        }
    }
}

/// A call is named by its HTTP/2 stream id.
pub type CallId = StreamId;

/// The send buffer's least capacity once a call starts: a small request
/// and its `grpc-timeout` fit without growing it.
const SEND_BUF_MIN: usize = 512;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// The server's response headers (absent for Trailers-Only answers).
    Headers {
        id: CallId,
        headers: Vec<Header>,
    },
    Message {
        id: CallId,
        message: Bytes,
    },
    /// The call is over, with its status (and trailers, when there were).
    Finished {
        id: CallId,
        status: Status,
        trailers: Vec<Header>,
    },
    GoAway,
    ConnectionError(ConnectionError),
}

struct Call {
    deadline: Option<Instant>,
    deframer: Deframer,
    encoding: Encoding,
    headers_seen: bool,
}

pub struct Client {
    conn: h2::Connection,
    config: ClientConfig,
    calls: HashMap<CallId, Call, std::hash::BuildHasherDefault<h2::StreamIdHasher>>,
    deadlines: Deadlines,
    events: VecDeque<Event>,
    buf: BytesMut,
}

impl Client {
    pub fn new(config: ClientConfig) -> Self {
        Self {
            conn: h2::Connection::client(config.h2.clone()),
            config,
            calls: HashMap::default(),
            deadlines: Deadlines::default(),
            events: VecDeque::new(),
            buf: BytesMut::new(),
        }
    }

    pub fn connection(&self) -> &h2::Connection {
        &self.conn
    }

    /// Whether another call may start now (the server's stream limit).
    pub fn can_start_call(&self) -> bool {
        self.conn.can_open_stream()
    }

    pub fn active_calls(&self) -> usize {
        self.calls.len()
    }

    pub fn is_closed(&self) -> bool {
        self.conn.is_closed()
    }

    // ---- Inputs ----

    pub fn recv(&mut self, data: &[u8], now: Instant) -> Result<(), ConnectionError> {
        let result = self.conn.recv(data, now);
        self.pump();
        result
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        self.conn.handle_timeout(now);
        while let Some((at, id)) = self.deadlines.pop_due(now) {
            if self.calls.get(&id).is_some_and(|c| c.deadline == Some(at)) {
                let _ = self.conn.reset_stream(id, ErrorCode::CANCEL);
                self.end(
                    id,
                    Status::deadline_exceeded("deadline exceeded"),
                    Vec::new(),
                );
            }
        }
        self.pump();
    }

    // ---- Commands ----

    /// Start a call to `path` (e.g. `/runtime.v1.RuntimeService/Version`).
    /// `metadata` is added to the request headers.
    ///
    /// `path` is anything that converts into `Bytes`: a `&'static str` (or
    /// `Bytes::from_static`) is used without copying; a `String` is moved.
    pub fn start_call(
        &mut self,
        path: impl Into<Bytes>,
        metadata: Vec<Header>,
        timeout: Option<Duration>,
        now: Instant,
    ) -> Result<CallId, UsageError> {
        // A spare list of the connection's (the previous call's request
        // block, once encoded): building the block does not allocate.
        let mut headers = self.conn.header_list();
        headers.reserve(7 + metadata.len());
        headers.push(Header::from_static(":method", "POST"));
        headers.push(Header::from_static(":scheme", "http"));
        headers.push(Header::new(Bytes::from_static(b":path"), path.into()));
        headers.push(Header::new(
            Bytes::from_static(b":authority"),
            self.config.authority.clone(),
        ));
        headers.push(Header::from_static(
            "content-type",
            self.config.content_type,
        ));
        headers.push(Header::from_static("te", "trailers"));
        if let Some(t) = timeout {
            // Into the send buffer, as messages are: a slice of it, not an
            // allocation per call. Room for the message too, so the buffer
            // (reclaimed once the last call's slices are sent) is not
            // outgrown at once.
            self.buf.reserve(SEND_BUF_MIN);
            self.buf
                .extend_from_slice(timeout::encode_timeout(t).as_bytes());
            headers.push(Header::new(
                Bytes::from_static(b"grpc-timeout"),
                self.buf.split().freeze(),
            ));
        }
        headers.extend(metadata);
        let id = self.conn.open_stream(headers, false)?;
        let deadline = timeout.map(|t| now + t);
        if let Some(at) = deadline {
            self.deadlines.push(at, id);
        }
        self.calls.insert(
            id,
            Call {
                deadline,
                deframer: Deframer::new(self.config.max_recv_message_size),
                encoding: Encoding::Identity,
                headers_seen: false,
            },
        );
        Ok(id)
    }

    /// Send one request message; `end` half-closes the call after it.
    pub fn send_message<M: prost::Message>(
        &mut self,
        id: CallId,
        message: &M,
        end: bool,
    ) -> Result<(), UsageError> {
        let mut buf = std::mem::take(&mut self.buf);
        let framed = codec::encode_message(message, &mut buf);
        let payload = buf.split().freeze();
        self.buf = buf;
        framed.map_err(|_| UsageError::SendEnded)?;
        self.conn.send_data(id, payload, end)
    }

    /// Send one request message given as encoded bytes (protobuf, or JSON
    /// under an `application/grpc+json` content-type).
    pub fn send_encoded(
        &mut self,
        id: CallId,
        message: &[u8],
        end: bool,
    ) -> Result<(), UsageError> {
        let mut buf = std::mem::take(&mut self.buf);
        let framed = codec::encode_payload(false, message, &mut buf);
        let payload = buf.split().freeze();
        self.buf = buf;
        framed.map_err(|_| UsageError::SendEnded)?;
        self.conn.send_data(id, payload, end)
    }

    /// Send raw bytes on the call's stream, framed or not: for tests that
    /// need to misbehave (split prefixes, bad flags, oversized lengths).
    pub fn send_raw(&mut self, id: CallId, bytes: Bytes, end: bool) -> Result<(), UsageError> {
        self.conn.send_data(id, bytes, end)
    }

    /// The client will send no more messages.
    pub fn close_send(&mut self, id: CallId) -> Result<(), UsageError> {
        self.conn.send_data(id, Bytes::new(), true)
    }

    /// A unary call in one step.
    pub fn unary<M: prost::Message>(
        &mut self,
        path: impl Into<Bytes>,
        message: &M,
        timeout: Option<Duration>,
        now: Instant,
    ) -> Result<CallId, UsageError> {
        let id = self.start_call(path, Vec::new(), timeout, now)?;
        self.send_message(id, message, true)?;
        Ok(id)
    }

    /// Cancel a call (RST_STREAM CANCEL); it finishes with `CANCELLED`.
    pub fn cancel(&mut self, id: CallId) {
        if self.calls.contains_key(&id) {
            let _ = self.conn.reset_stream(id, ErrorCode::CANCEL);
            self.end(id, Status::cancelled("cancelled by the client"), Vec::new());
        }
    }

    pub fn go_away(&mut self) {
        self.conn.go_away(ErrorCode::NO_ERROR);
    }

    // ---- Outputs ----

    #[must_use]
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<Bytes> {
        self.conn.poll_transmit()
    }

    pub fn transmit_into(&mut self, dst: &mut BytesMut) -> usize {
        self.conn.transmit_into(dst)
    }

    /// Hand back a header list from an event ([`Event::Headers`],
    /// [`Event::Finished`]) once done with it, so the next response's
    /// headers are decoded into it without allocating. Optional.
    pub fn recycle_headers(&mut self, list: Vec<Header>) {
        self.conn.recycle_headers(list);
    }

    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        deadline::earliest(self.conn.poll_timeout(), self.deadlines.next())
    }

    // ---- Turning stream events into call events ----

    fn pump(&mut self) {
        while let Some(ev) = self.conn.poll_event() {
            match ev {
                h2::Event::Headers {
                    stream_id,
                    headers,
                    end_stream,
                } => self.on_headers(stream_id, headers, end_stream),
                h2::Event::Data {
                    stream_id,
                    data,
                    end_stream,
                } => self.on_data(stream_id, data, end_stream),
                h2::Event::Trailers { stream_id, headers } => {
                    let status = status_from(&headers);
                    self.end(stream_id, status, headers);
                }
                h2::Event::StreamReset {
                    stream_id, code, ..
                } => {
                    let grpc = Code::from_h2_reset(code.0).unwrap_or(Code::Internal);
                    let status = Status::new(grpc, format!("stream reset with {code}"));
                    self.end(stream_id, status, Vec::new());
                }
                h2::Event::GoAway { .. } => self.events.push_back(Event::GoAway),
                h2::Event::ConnectionError(e) => {
                    let ids: Vec<CallId> = self.calls.keys().copied().collect();
                    for id in ids {
                        self.end(id, Status::unavailable(format!("{e}")), Vec::new());
                    }
                    self.events.push_back(Event::ConnectionError(e));
                }
                h2::Event::PingAck { .. } => {}
            }
        }
        let calls = &self.calls;
        self.deadlines.sweep(calls.len(), |id, at| {
            calls.get(&id).is_some_and(|c| c.deadline == Some(at))
        });
    }

    fn on_headers(&mut self, id: CallId, headers: Vec<Header>, end_stream: bool) {
        let Some(call) = self.calls.get_mut(&id) else {
            return;
        };
        let mut http_status = None;
        let mut content_type_ok = false;
        for h in &headers {
            match &h.name[..] {
                b":status" => {
                    http_status = std::str::from_utf8(&h.value)
                        .ok()
                        .and_then(|s| s.parse::<u16>().ok())
                }
                b"content-type" => content_type_ok = metadata::is_grpc_content_type(&h.value),
                b"grpc-encoding" => match Encoding::from_header(Some(&h.value)) {
                    Ok(e) => call.encoding = e,
                    Err(status) => return self.abort(id, status),
                },
                _ => {}
            }
        }
        if http_status != Some(200) {
            let status = Status::from_http_status(http_status.unwrap_or(0));
            return self.abort(id, status);
        }
        if end_stream {
            // Trailers-Only.
            let status = status_from(&headers);
            return self.end(id, status, headers);
        }
        if !content_type_ok {
            return self.abort(
                id,
                Status::unknown("response content-type is not application/grpc"),
            );
        }
        call.headers_seen = true;
        self.events.push_back(Event::Headers { id, headers });
    }

    fn on_data(&mut self, id: CallId, data: Bytes, end_stream: bool) {
        let Some(call) = self.calls.get_mut(&id) else {
            return;
        };
        call.deframer.push(data);
        loop {
            let message = match call.deframer.next_message() {
                Ok(Some(m)) => m,
                Ok(None) => break,
                Err(e) => return self.abort(id, e.to_status()),
            };
            match compression::uncompressed_payload(
                call.encoding,
                message,
                self.config.max_recv_message_size,
            ) {
                Ok(message) => self.events.push_back(Event::Message { id, message }),
                Err(status) => return self.abort(id, status),
            }
        }
        if end_stream {
            self.end(
                id,
                Status::internal("server ended the stream without trailers"),
                Vec::new(),
            );
        }
    }

    /// Fail a call on our side: reset the stream and report `status`.
    fn abort(&mut self, id: CallId, status: Status) {
        let _ = self.conn.reset_stream(id, ErrorCode::CANCEL);
        self.end(id, status, Vec::new());
    }

    fn end(&mut self, id: CallId, status: Status, trailers: Vec<Header>) {
        if self.calls.remove(&id).is_some() {
            self.events.push_back(Event::Finished {
                id,
                status,
                trailers,
            });
        }
    }
}

/// The status carried by trailers (or a Trailers-Only response).
fn status_from(headers: &[Header]) -> Status {
    let find = |name: &[u8]| {
        headers
            .iter()
            .find(|h| &h.name[..] == name)
            .map(|h| &h.value[..])
    };
    match find(b"grpc-status") {
        Some(code) => Status::from_header_values(code, find(b"grpc-message")),
        None => Status::internal("response ended without grpc-status"),
    }
}
