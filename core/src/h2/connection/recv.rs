//! Receiving: bytes to frames, frames to stream and connection state,
//! events for the application, and the errors of RFC 9113 §5.4.

use std::time::Instant;

use bytes::{Bytes, BytesMut};

use super::{Connection, Event, PartialBlock, Phase, Role, Settings};
use crate::h2::error::{ConnectionError, ErrorCode, ProtocolError, StreamError};
use crate::h2::frame::{self, Frame};
use crate::h2::hpack::{Header, HeaderListStatus};
use crate::h2::message::{self, BlockKind};
use crate::h2::stream::{Closed, RecvState, Stream};
use crate::h2::StreamId;

impl Connection {
    pub(super) fn process(&mut self, now: Instant) -> Result<(), ConnectionError> {
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

    pub(super) fn is_remote_id(&self, id: StreamId) -> bool {
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
        if self.streams.contains_key(&id) {
            self.on_block_in_stream(id, headers, end_stream, too_large, now)
        } else {
            self.on_block_without_stream(id, headers, end_stream, too_large, now)
        }
    }

    /// A header block on a stream in the table: a response (we are the
    /// client) or trailers.
    fn on_block_in_stream(
        &mut self,
        id: StreamId,
        headers: Vec<Header>,
        end_stream: bool,
        too_large: bool,
        now: Instant,
    ) -> Result<(), ConnectionError> {
        let Some(stream) = self.streams.get(&id) else {
            return Ok(());
        };
        let kind = match stream.recv {
            RecvState::Closed if stream.reset_when_sent.is_some() => {
                // Trailers of a request answered unread (see on_data).
                self.recycle_headers(headers);
                return Ok(());
            }
            RecvState::Closed => {
                return self.stream_error(
                    StreamError::new(id, ErrorCode::STREAM_CLOSED, "HEADERS after END_STREAM"),
                    now,
                );
            }
            RecvState::AwaitingHeaders => BlockKind::Response,
            RecvState::Open => BlockKind::Trailers,
        };
        if too_large {
            return self.malformed(id, "header list too large", now);
        }
        if kind == BlockKind::Trailers && !end_stream {
            return self.malformed(id, "trailers without END_STREAM", now);
        }
        let info = match message::check(&headers, kind) {
            Ok(info) => info,
            Err(reason) => return self.malformed(id, reason, now),
        };
        if kind == BlockKind::Trailers {
            self.on_trailers(id, headers, now)
        } else {
            self.on_response(id, headers, info, end_stream, now)
        }
    }

    /// Client: the response's header block, already checked.
    fn on_response(
        &mut self,
        id: StreamId,
        headers: Vec<Header>,
        info: message::BlockInfo,
        end_stream: bool,
        now: Instant,
    ) -> Result<(), ConnectionError> {
        if info.informational {
            if end_stream {
                return self.malformed(id, "1xx response with END_STREAM", now);
            }
            self.recycle_headers(headers);
            return Ok(());
        }
        let Some(stream) = self.streams.get_mut(&id) else {
            return Ok(());
        };
        stream.recv = RecvState::after_headers(end_stream);
        stream.content_length = info.content_length;
        if end_stream && info.content_length.is_some_and(|n| n != 0) {
            return self.malformed(id, "DATA shorter than content-length", now);
        }
        self.events.push_back(Event::Headers {
            stream_id: id,
            headers,
            end_stream,
        });
        if end_stream {
            self.finish_if_done(id);
        }
        Ok(())
    }

    /// Trailers, already checked: they end the peer's side.
    fn on_trailers(
        &mut self,
        id: StreamId,
        headers: Vec<Header>,
        now: Instant,
    ) -> Result<(), ConnectionError> {
        let Some(stream) = self.streams.get_mut(&id) else {
            return Ok(());
        };
        stream.recv = RecvState::Closed;
        if stream
            .content_length
            .is_some_and(|n| n != stream.data_received)
        {
            return self.malformed(id, "DATA shorter than content-length", now);
        }
        self.events.push_back(Event::Trailers {
            stream_id: id,
            headers,
        });
        self.finish_if_done(id);
        Ok(())
    }

    /// A header block on a stream not in the table: a new one the peer
    /// opens, or one that is closed (how decides the answer).
    fn on_block_without_stream(
        &mut self,
        id: StreamId,
        headers: Vec<Header>,
        end_stream: bool,
        too_large: bool,
        now: Instant,
    ) -> Result<(), ConnectionError> {
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
            Err(reason) => return self.malformed(id, reason, now),
        };
        if end_stream && info.content_length.is_some_and(|n| n != 0) {
            return self.malformed(id, "DATA shorter than content-length", now);
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

    /// A stream error PROTOCOL_ERROR on `id`: a malformed message (RFC 9113
    /// §8.1.1).
    fn malformed(
        &mut self,
        id: StreamId,
        reason: &'static str,
        now: Instant,
    ) -> Result<(), ConnectionError> {
        self.stream_error(StreamError::new(id, ErrorCode::PROTOCOL_ERROR, reason), now)
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
    pub(super) fn fail(&mut self, e: ConnectionError) {
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
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Inactive {
    Idle,
    Closed(Option<Closed>),
}

fn too_large_block() -> ConnectionError {
    ConnectionError::new(ErrorCode::ENHANCE_YOUR_CALM, "header block too large")
}
