//! The server side of gRPC over one HTTP/2 connection, with no I/O.
//!
//! It wraps an [`h2::Connection`](crate::h2::Connection) and speaks in calls
//! rather than streams: requests are validated (method, content-type, te,
//! encoding, timeout) and routed by `:path` through the CRI method table;
//! messages are de-framed and size-checked; deadlines are tracked against
//! the time the driver passes in. Whatever is wrong with a request is
//! answered here, so the application only sees calls it can serve.
//!
//! The calling order is the connection's: [`Server::recv`], then drain
//! [`Server::poll_event`], answer with [`Server::respond`] /
//! [`Server::send_message`] / [`Server::finish`], write out
//! [`Server::poll_transmit`], and wake at [`Server::poll_timeout`].

use std::collections::HashMap;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use crisp_proto::methods::{self, CallKind, MethodDesc};

use super::codec::{self, Deframer};
use super::compression::{self, Encoding, ACCEPT_ENCODING};
use super::deadline::{self, Deadlines};
use super::json::JsonCodec;
use super::metadata;
use super::status::{Code, Status};
use super::timeout;
use crate::h2::{self, ConnectionError, ErrorCode, Header, StreamId};

/// Settings of one gRPC server connection.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    pub h2: h2::Config,
    /// Largest request message accepted (after decompression).
    pub max_recv_message_size: usize,
    /// Maps a `:path` to its method; the CRI table unless a test or another
    /// service supplies its own.
    pub router: fn(&[u8]) -> Option<&'static MethodDesc>,
    /// Serve `application/grpc+json` with this codec; without one such
    /// requests are refused (415) like any other unknown codec.
    pub json: Option<JsonCodec>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            h2: h2::Config::default(),
            max_recv_message_size: codec::DEFAULT_MAX_RECV_MESSAGE_SIZE,
            router: methods::lookup,
            json: None,
        }
    }
}

/// A call is named by its HTTP/2 stream id.
pub type CallId = StreamId;

/// What the application needs to know about a call. Its request headers
/// (metadata) stay with the server: [`Server::request_headers`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CallInfo {
    pub id: CallId,
    pub method: &'static MethodDesc,
    /// When the call must be over, from `grpc-timeout`.
    pub deadline: Option<Instant>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A unary or server-streaming call with its one request message,
    /// complete: the client has finished sending.
    Request {
        call: CallInfo,
        message: Bytes,
    },
    /// A client-streaming or bidirectional call started; its messages
    /// follow as [`Event::Message`], then [`Event::HalfClose`].
    StreamStarted {
        call: CallInfo,
    },
    Message {
        id: CallId,
        message: Bytes,
    },
    /// The client will send no more messages on this call.
    HalfClose {
        id: CallId,
    },
    /// The call is over without the application's answer: the client
    /// cancelled it (`Cancelled`), its deadline passed (`DeadlineExceeded`,
    /// already answered), or its request stream was bad (answered). Drop
    /// any work for it; further commands on it fail.
    Cancelled {
        id: CallId,
        code: Code,
    },
    /// The client sent GOAWAY.
    GoAway,
    /// The connection failed; every call on it is gone.
    ConnectionError(ConnectionError),
}

/// A command on a call that is not (or no longer) possible.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CallError {
    /// No such call: finished, cancelled, or never existed.
    UnknownCall,
    /// The response message could not be framed (over 4 GiB).
    MessageTooLarge,
    /// The response could not be written in the call's codec (JSON); the
    /// call was ended with INTERNAL.
    Transcode,
}

/// A call's `content-type`, which names its message codec; the response
/// carries the same.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ContentType {
    /// `application/grpc`: protobuf.
    Grpc,
    /// `application/grpc+proto`.
    Proto,
    /// `application/grpc+json`: the proto3 JSON mapping.
    Json,
}

struct Call {
    method: &'static MethodDesc,
    content: ContentType,
    deadline: Option<Instant>,
    encoding: Encoding,
    deframer: Deframer,
    /// Unary kinds: the one request, held until the client half-closes.
    request: Option<Bytes>,
    /// Set once the application was told about the call.
    announced: bool,
    headers_sent: bool,
    /// Info held back until a unary request is complete.
    pending: Option<CallInfo>,
    /// The request headers, until the call ends; then the list goes back to
    /// the connection for reuse.
    headers: Vec<Header>,
}

/// A gRPC server connection.
pub struct Server {
    conn: h2::Connection,
    config: ServerConfig,
    calls: HashMap<CallId, Call, std::hash::BuildHasherDefault<h2::StreamIdHasher>>,
    /// Deadlines, earliest first; entries of finished calls are skipped.
    deadlines: Deadlines,
    /// Requests that are not gRPC at all (method, content-type, te): their
    /// body is read and dropped, and the HTTP error answers once it ends.
    refused: HashMap<CallId, Reject, std::hash::BuildHasherDefault<h2::StreamIdHasher>>,
    events: std::collections::VecDeque<Event>,
    buf: BytesMut,
}

impl Server {
    pub fn new(config: ServerConfig) -> Self {
        Self {
            conn: h2::Connection::server(config.h2.clone()),
            config,
            calls: HashMap::default(),
            deadlines: Deadlines::default(),
            refused: HashMap::default(),
            events: std::collections::VecDeque::new(),
            buf: BytesMut::new(),
        }
    }

    /// The HTTP/2 connection underneath, for its getters.
    pub fn connection(&self) -> &h2::Connection {
        &self.conn
    }

    /// Calls in progress.
    pub fn active_calls(&self) -> usize {
        self.calls.len()
    }

    pub fn is_closed(&self) -> bool {
        self.conn.is_closed()
    }

    /// The request headers of a call in progress (pseudo-headers included),
    /// for its metadata; `None` once the call is finished or cancelled.
    pub fn request_headers(&self, id: CallId) -> Option<&[Header]> {
        self.calls.get(&id).map(|c| &c.headers[..])
    }

    // ---- Inputs ----

    /// Feed bytes read from the client.
    pub fn recv(&mut self, data: &[u8], now: Instant) -> Result<(), ConnectionError> {
        let result = self.conn.recv(data, now);
        self.pump(now);
        result
    }

    /// Expire deadlines and the connection's own timers.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.conn.handle_timeout(now);
        while let Some((at, id)) = self.deadlines.pop_due(now) {
            if self.calls.get(&id).is_some_and(|c| c.deadline == Some(at)) {
                // The status is a complete response: refuse the rest of the
                // request with NO_ERROR (RFC 9113 §8.1). CANCEL would make
                // clients (grpcio) report CANCELLED instead of the status.
                self.fail_call(
                    id,
                    Status::deadline_exceeded("deadline exceeded"),
                    ErrorCode::NO_ERROR,
                );
                self.events.push_back(Event::Cancelled {
                    id,
                    code: Code::DeadlineExceeded,
                });
            }
        }
        self.pump(now);
    }

    // ---- Commands ----

    /// Answer a unary call: one message and an OK status.
    pub fn respond<M: prost::Message>(&mut self, id: CallId, message: &M) -> Result<(), CallError> {
        self.send_message(id, message)?;
        self.finish(id, &Status::ok())
    }

    /// Send one response message (server-streaming calls send several).
    pub fn send_message<M: prost::Message>(
        &mut self,
        id: CallId,
        message: &M,
    ) -> Result<(), CallError> {
        let call = self.calls.get(&id).ok_or(CallError::UnknownCall)?;
        if call.content == ContentType::Json {
            return self.send_encoded(id, &message.encode_to_vec());
        }
        let mut buf = std::mem::take(&mut self.buf);
        let framed = codec::encode_message(message, &mut buf);
        let payload = buf.split().freeze();
        self.buf = buf;
        framed.map_err(|_| CallError::MessageTooLarge)?;
        self.send_framed(id, payload)
    }

    /// Send a response message already encoded as protobuf bytes (written
    /// as JSON for an `application/grpc+json` call).
    pub fn send_encoded(&mut self, id: CallId, message: &[u8]) -> Result<(), CallError> {
        let call = self.calls.get(&id).ok_or(CallError::UnknownCall)?;
        let json = match (&self.config.json, call.content) {
            (Some(codec), ContentType::Json) => {
                match codec.to_json(call.method.response_type, message) {
                    Ok(json) => Some(json),
                    Err(status) => {
                        self.fail_call(id, status, ErrorCode::NO_ERROR);
                        return Err(CallError::Transcode);
                    }
                }
            }
            _ => None,
        };
        let message = json.as_deref().unwrap_or(message);
        let mut buf = std::mem::take(&mut self.buf);
        let framed = codec::encode_payload(false, message, &mut buf);
        let payload = buf.split().freeze();
        self.buf = buf;
        framed.map_err(|_| CallError::MessageTooLarge)?;
        self.send_framed(id, payload)
    }

    fn send_framed(&mut self, id: CallId, payload: Bytes) -> Result<(), CallError> {
        let call = self.calls.get_mut(&id).ok_or(CallError::UnknownCall)?;
        if !call.headers_sent {
            call.headers_sent = true;
            self.conn
                .send_headers(id, response_headers(call.content), false)
                .map_err(|_| CallError::UnknownCall)?;
        }
        self.conn
            .send_data(id, payload, false)
            .map_err(|_| CallError::UnknownCall)
    }

    /// End a call with `status` (trailers, or a Trailers-Only response when
    /// nothing was sent yet).
    pub fn finish(&mut self, id: CallId, status: &Status) -> Result<(), CallError> {
        let call = self.calls.remove(&id).ok_or(CallError::UnknownCall)?;
        let (headers_sent, content) = (call.headers_sent, call.content);
        self.conn.recycle_headers(call.headers);
        let sent = match (
            headers_sent,
            status.code == Code::Ok && status.message.is_empty(),
        ) {
            (true, true) => self.conn.send_trailers(id, &OK_TRAILERS),
            (false, true) => self.conn.send_headers(id, ok_trailers_only(content), true),
            (true, false) => self.conn.send_trailers(id, status_headers(status)),
            (false, false) => {
                let mut block = response_headers(content).to_vec();
                block.extend(status_headers(status));
                self.conn.send_headers(id, block, true)
            }
        };
        // Answered before the client finished sending: refuse the rest.
        let _ = self.conn.reset_after_send(id, ErrorCode::NO_ERROR);
        sent.map_err(|_| CallError::UnknownCall)
    }

    /// Graceful shutdown: GOAWAY; calls in progress may finish.
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

    /// Like `poll_transmit`, appending into the caller's buffer.
    pub fn transmit_into(&mut self, dst: &mut BytesMut) -> usize {
        self.conn.transmit_into(dst)
    }

    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        deadline::earliest(self.conn.poll_timeout(), self.deadlines.next())
    }

    // ---- Turning stream events into call events ----

    fn pump(&mut self, now: Instant) {
        while let Some(ev) = self.conn.poll_event() {
            match ev {
                h2::Event::Headers {
                    stream_id,
                    headers,
                    end_stream,
                } => self.on_request(stream_id, headers, end_stream, now),
                h2::Event::Data {
                    stream_id,
                    data,
                    end_stream,
                } => self.on_data(stream_id, data, end_stream),
                h2::Event::Trailers { stream_id, headers } => {
                    self.conn.recycle_headers(headers);
                    self.on_end(stream_id)
                }
                h2::Event::StreamReset { stream_id, .. } => {
                    self.refused.remove(&stream_id);
                    if let Some(call) = self.calls.remove(&stream_id) {
                        self.conn.recycle_headers(call.headers);
                        if call.announced {
                            self.events.push_back(Event::Cancelled {
                                id: stream_id,
                                code: Code::Cancelled,
                            });
                        }
                    }
                }
                h2::Event::GoAway { .. } => self.events.push_back(Event::GoAway),
                h2::Event::ConnectionError(e) => {
                    for (id, call) in self.calls.drain() {
                        if call.announced {
                            self.events.push_back(Event::Cancelled {
                                id,
                                code: Code::Unavailable,
                            });
                        }
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

    fn on_request(&mut self, id: CallId, headers: Vec<Header>, end_stream: bool, now: Instant) {
        match self.validate(&headers, now) {
            Ok((method, content, encoding, deadline)) => {
                let info = CallInfo {
                    id,
                    method,
                    deadline,
                };
                let streaming_request = matches!(
                    method.kind,
                    CallKind::ClientStreaming | CallKind::BidiStreaming
                );
                let mut call = Call {
                    method,
                    content,
                    deadline,
                    encoding,
                    deframer: Deframer::new(self.config.max_recv_message_size),
                    request: None,
                    announced: streaming_request,
                    headers_sent: false,
                    pending: None,
                    headers,
                };
                if streaming_request {
                    self.events.push_back(Event::StreamStarted { call: info });
                } else {
                    call.pending = Some(info);
                }
                if let Some(at) = deadline {
                    self.deadlines.push(at, id);
                }
                self.calls.insert(id, call);
                if end_stream {
                    self.on_end(id);
                }
            }
            Err(reject) if reject.http_status != "200" => {
                self.conn.recycle_headers(headers);
                // Not a gRPC request: answer as an HTTP server would, after
                // the whole request, with a body saying what was wrong.
                if end_stream {
                    self.answer_refused(id, reject);
                } else {
                    self.refused.insert(id, reject);
                }
            }
            Err(reject) => {
                self.conn.recycle_headers(headers);
                let mut block = vec![
                    Header::new(
                        Bytes::from_static(b":status"),
                        Bytes::from_static(reject.http_status.as_bytes()),
                    ),
                    Header::from_static("content-type", metadata::CONTENT_TYPE_GRPC),
                ];
                if reject.status.code == Code::Unimplemented && reject.accept_encoding {
                    block.push(Header::from_static("grpc-accept-encoding", ACCEPT_ENCODING));
                }
                block.extend(status_headers(&reject.status));
                let _ = self.conn.send_headers(id, block, true);
                let _ = self.conn.reset_after_send(id, ErrorCode::NO_ERROR);
            }
        }
    }

    /// Check a request's headers; on success, its method, message encoding
    /// and deadline.
    fn validate(
        &self,
        headers: &[Header],
        now: Instant,
    ) -> Result<(&'static MethodDesc, ContentType, Encoding, Option<Instant>), Reject> {
        let mut method = None;
        let mut path = None;
        let mut content_type = None;
        let mut te = None;
        let mut encoding = None;
        let mut grpc_timeout = None;
        for h in headers {
            match &h.name[..] {
                b":method" => method = Some(&h.value[..]),
                b":path" => path = Some(&h.value[..]),
                b"content-type" => content_type = Some(&h.value[..]),
                b"te" => te = Some(&h.value[..]),
                b"grpc-encoding" => encoding = Some(&h.value[..]),
                b"grpc-timeout" => grpc_timeout = Some(&h.value[..]),
                _ => {}
            }
        }
        if method != Some(b"POST") {
            return Err(Reject::http(
                "405",
                Status::internal("gRPC requires the POST method"),
            ));
        }
        if !content_type.is_some_and(metadata::is_grpc_content_type) {
            return Err(Reject::http(
                "415",
                Status::internal("content-type must be application/grpc"),
            ));
        }
        let content = match content_type.map(metadata::content_subtype) {
            Some(None) => ContentType::Grpc,
            Some(Some(sub)) if sub.eq_ignore_ascii_case(b"proto") => ContentType::Proto,
            Some(Some(sub)) if sub.eq_ignore_ascii_case(b"json") && self.config.json.is_some() => {
                ContentType::Json
            }
            _ => {
                return Err(Reject::http(
                    "415",
                    Status::internal(format!(
                        "unsupported content-type {}: the codecs served are {}",
                        String::from_utf8_lossy(content_type.unwrap_or_default()),
                        if self.config.json.is_some() {
                            "application/grpc (+proto) and application/grpc+json"
                        } else {
                            "application/grpc (+proto)"
                        }
                    )),
                ))
            }
        };
        if !te.is_some_and(metadata::is_te_trailers) {
            return Err(Reject::http(
                "400",
                Status::internal("te: trailers is required"),
            ));
        }
        let path = path.unwrap_or_default();
        let Some(desc) = (self.config.router)(path) else {
            return Err(Reject::grpc(Status::unimplemented(format!(
                "unknown method {}",
                String::from_utf8_lossy(path)
            ))));
        };
        let encoding = Encoding::from_header(encoding).map_err(|status| Reject {
            http_status: "200",
            status,
            accept_encoding: true,
        })?;
        let deadline = match grpc_timeout {
            None => None,
            Some(v) => {
                let d = timeout::parse_timeout(v).map_err(|e| Reject::grpc(e.to_status()))?;
                Some(
                    now.checked_add(d)
                        .unwrap_or(now + std::time::Duration::from_secs(u32::MAX.into())),
                )
            }
        };
        Ok((desc, content, encoding, deadline))
    }

    fn on_data(&mut self, id: CallId, data: Bytes, end_stream: bool) {
        let Some(call) = self.calls.get_mut(&id) else {
            if end_stream {
                self.on_end(id);
            }
            return;
        };
        call.deframer.push(data);
        loop {
            let message = match call.deframer.next_message() {
                Ok(Some(m)) => m,
                Ok(None) => break,
                Err(e) => return self.reject_stream(id, e.to_status()),
            };
            let payload = if message.compressed && call.encoding == Encoding::Identity {
                Err(Status::internal(
                    "compressed flag set without a grpc-encoding",
                ))
            } else {
                compression::uncompressed_payload(
                    call.encoding,
                    message,
                    self.config.max_recv_message_size,
                )
            };
            let payload = match (payload, &self.config.json) {
                (Ok(p), Some(json)) if call.content == ContentType::Json => {
                    match json.to_proto(call.method.request_type, &p) {
                        Ok(proto) => Bytes::from(proto),
                        Err(status) => return self.reject_stream(id, status),
                    }
                }
                (Ok(p), _) => p,
                (Err(status), _) => return self.reject_stream(id, status),
            };
            if call.announced {
                self.events.push_back(Event::Message {
                    id,
                    message: payload,
                });
            } else if call.request.is_some() {
                let name = call.method.name;
                return self.reject_stream(
                    id,
                    Status::unimplemented(format!("{name} takes exactly one request message")),
                );
            } else {
                call.request = Some(payload);
            }
        }
        if end_stream {
            self.on_end(id);
        }
    }

    /// The client finished sending.
    fn on_end(&mut self, id: CallId) {
        if let Some(reject) = self.refused.remove(&id) {
            return self.answer_refused(id, reject);
        }
        let Some(call) = self.calls.get_mut(&id) else {
            return;
        };
        if let Err(e) = call.deframer.finish() {
            return self.reject_stream(id, e.to_status());
        }
        if call.announced {
            self.events.push_back(Event::HalfClose { id });
            return;
        }
        let Some(message) = call.request.take() else {
            let name = call.method.name;
            return self.reject_stream(
                id,
                Status::unimplemented(format!(
                    "{name} takes exactly one request message, got none"
                )),
            );
        };
        if let Some(info) = call.pending.take() {
            call.announced = true;
            self.events.push_back(Event::Request {
                call: info,
                message,
            });
        }
    }

    /// Answer a request that is not gRPC: its HTTP status, and the reason
    /// both as `grpc-status`/`grpc-message` and as a plain-text body.
    fn answer_refused(&mut self, id: CallId, reject: Reject) {
        let mut block = vec![
            Header::new(
                Bytes::from_static(b":status"),
                Bytes::from_static(reject.http_status.as_bytes()),
            ),
            Header::from_static("content-type", "text/plain; charset=utf-8"),
        ];
        block.extend(status_headers(&reject.status));
        let body = Bytes::from(format!("crispd serves gRPC: {}\n", reject.status.message));
        let _ = self.conn.send_headers(id, block, false);
        let _ = self.conn.send_data(id, body, true);
    }

    /// The request stream was bad: answer with `status`, tell the
    /// application if it knew of the call.
    fn reject_stream(&mut self, id: CallId, status: Status) {
        let announced = self.calls.get(&id).is_some_and(|c| c.announced);
        self.fail_call(id, status, ErrorCode::NO_ERROR);
        if announced {
            self.events.push_back(Event::Cancelled {
                id,
                code: Code::Cancelled,
            });
        }
    }

    fn fail_call(&mut self, id: CallId, status: Status, reset: ErrorCode) {
        let _ = self.finish(id, &status);
        let _ = self.conn.reset_after_send(id, reset);
    }
}

/// Why a request is refused before it reaches the application.
struct Reject {
    http_status: &'static str,
    status: Status,
    accept_encoding: bool,
}

impl Reject {
    fn http(http_status: &'static str, status: Status) -> Self {
        Self {
            http_status,
            status,
            accept_encoding: false,
        }
    }
    fn grpc(status: Status) -> Self {
        Self::http("200", status)
    }
}

/// The response headers of every answered call (one block per content
/// type), and the blocks of an OK status without a message: sent from
/// these statics, so answering a call builds no header list.
static RESPONSE_HEADERS: [[Header; 2]; 3] = [
    [
        Header::from_static(":status", "200"),
        Header::from_static("content-type", metadata::CONTENT_TYPE_GRPC),
    ],
    [
        Header::from_static(":status", "200"),
        Header::from_static("content-type", metadata::CONTENT_TYPE_GRPC_PROTO),
    ],
    [
        Header::from_static(":status", "200"),
        Header::from_static("content-type", metadata::CONTENT_TYPE_GRPC_JSON),
    ],
];
static OK_TRAILERS: [Header; 1] = [Header::from_static("grpc-status", "0")];
static OK_TRAILERS_ONLY: [[Header; 3]; 3] = [
    [
        Header::from_static(":status", "200"),
        Header::from_static("content-type", metadata::CONTENT_TYPE_GRPC),
        Header::from_static("grpc-status", "0"),
    ],
    [
        Header::from_static(":status", "200"),
        Header::from_static("content-type", metadata::CONTENT_TYPE_GRPC_PROTO),
        Header::from_static("grpc-status", "0"),
    ],
    [
        Header::from_static(":status", "200"),
        Header::from_static("content-type", metadata::CONTENT_TYPE_GRPC_JSON),
        Header::from_static("grpc-status", "0"),
    ],
];

fn response_headers(content: ContentType) -> &'static [Header] {
    let [grpc, proto, json] = &RESPONSE_HEADERS;
    match content {
        ContentType::Grpc => grpc,
        ContentType::Proto => proto,
        ContentType::Json => json,
    }
}

fn ok_trailers_only(content: ContentType) -> &'static [Header] {
    let [grpc, proto, json] = &OK_TRAILERS_ONLY;
    match content {
        ContentType::Grpc => grpc,
        ContentType::Proto => proto,
        ContentType::Json => json,
    }
}

fn status_headers(status: &Status) -> Vec<Header> {
    let mut block = Vec::with_capacity(2);
    block.push(Header::new(
        Bytes::from_static(b"grpc-status"),
        Bytes::from_static(status.code.as_str().as_bytes()),
    ));
    if !status.message.is_empty() {
        block.push(Header::new(
            Bytes::from_static(b"grpc-message"),
            status.encoded_message(),
        ));
    }
    block
}
