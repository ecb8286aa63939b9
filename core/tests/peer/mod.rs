//! A scripted peer that drives one `h2::Connection` with hand-built frames
//! and reads back what it writes, for the conformance and property tests.
//!
//! The peer keeps its own HPACK encoder (for the header blocks it sends) and
//! decoder (for the ones the connection sends), so every block on the wire
//! is really decoded and the two dynamic tables must stay in step. Output
//! that does not parse as frames, or header blocks that do not decode, fail
//! the test at once.
#![allow(dead_code)]

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use crisp_core::h2::frame::{self, Frame, FrameReader};
use crisp_core::h2::hpack;
use crisp_core::h2::{
    Config, Connection, ConnectionError, ErrorCode, Event, Header, Role, StreamId,
};

/// PING payload used to check that a connection still answers.
pub const ALIVE: [u8; 8] = *b"alive?!!";

pub fn h(name: &str, value: &str) -> Header {
    Header::new(
        Bytes::copy_from_slice(name.as_bytes()),
        Bytes::copy_from_slice(value.as_bytes()),
    )
}

/// A well-formed gRPC request header block.
pub fn request() -> Vec<Header> {
    vec![
        h(":method", "POST"),
        h(":scheme", "http"),
        h(":path", "/runtime.v1.RuntimeService/Version"),
        h(":authority", "localhost"),
        h("content-type", "application/grpc"),
        h("te", "trailers"),
    ]
}

/// A request with `extra` appended.
pub fn request_with(extra: &[(&str, &str)]) -> Vec<Header> {
    let mut r = request();
    r.extend(extra.iter().map(|(n, v)| h(n, v)));
    r
}

pub fn response() -> Vec<Header> {
    vec![h(":status", "200"), h("content-type", "application/grpc")]
}

pub fn trailers() -> Vec<Header> {
    vec![h("grpc-status", "0")]
}

/// One frame's bytes, built by hand (any type, flags and payload).
pub fn raw(kind: u8, flags: u8, stream_id: u32, payload: &[u8]) -> Vec<u8> {
    let mut b = BytesMut::new();
    frame::Head {
        length: payload.len() as u32,
        kind,
        flags,
        stream_id: StreamId::new(stream_id),
    }
    .encode(&mut b);
    b.extend_from_slice(payload);
    b.to_vec()
}

pub fn encode(frames: &[Frame]) -> Vec<u8> {
    let mut b = BytesMut::new();
    for f in frames {
        f.encode(&mut b);
    }
    b.to_vec()
}

/// A header block the connection sent, decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Block {
    pub stream_id: StreamId,
    pub headers: Vec<Header>,
    pub end_stream: bool,
    /// HEADERS plus CONTINUATION frames it took.
    pub frames: usize,
    /// The first byte of the HPACK block (to see table size updates).
    pub first_byte: Option<u8>,
}

impl Block {
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|h| h.name == name.as_bytes())
            .map(|h| &h.value[..])
    }
}

/// How the connection answered a violation the RFC lets it treat either
/// as a stream error or as a connection error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answer {
    Stream,
    Connection,
}

struct PartialBlock {
    stream_id: StreamId,
    end_stream: bool,
    block: BytesMut,
    frames: usize,
}

pub struct Peer {
    pub conn: Connection,
    pub now: Instant,
    /// Encodes the header blocks we send.
    pub encoder: hpack::Encoder,
    /// Decodes the header blocks the connection sends.
    pub decoder: hpack::Decoder,
    reader: FrameReader,
    rx: BytesMut,
    preface_pending: bool,
    partial: Option<PartialBlock>,
    /// Every header block the connection sent, in order.
    pub blocks: Vec<Block>,
    /// The last error `recv` returned.
    pub recv_error: Option<ConnectionError>,
}

impl Peer {
    pub fn new(conn: Connection) -> Self {
        let preface_pending = conn.role() == Role::Client;
        Self {
            conn,
            now: Instant::now(),
            encoder: hpack::Encoder::new(),
            decoder: hpack::Decoder::new(4096),
            reader: FrameReader::default(),
            rx: BytesMut::new(),
            preface_pending,
            partial: None,
            blocks: Vec::new(),
            recv_error: None,
        }
    }

    /// A server that has seen nothing yet.
    pub fn raw_server(config: Config) -> Self {
        Self::new(Connection::server(config))
    }

    /// A server past the preface and the SETTINGS exchange, both ways.
    pub fn server() -> Self {
        Self::server_with(Config::default())
    }

    pub fn server_with(config: Config) -> Self {
        let mut p = Self::raw_server(config);
        p.recv_bytes(frame::PREFACE).unwrap();
        p.send(frame::Settings::default()).unwrap();
        let out = p.output();
        let settings = out
            .iter()
            .filter(|f| matches!(f, Frame::Settings(s) if !s.ack))
            .count();
        let acks = out
            .iter()
            .filter(|f| matches!(f, Frame::Settings(s) if s.ack))
            .count();
        assert_eq!((settings, acks), (1, 1), "handshake output: {out:?}");
        p.send(frame::Settings::ack()).unwrap();
        assert_eq!(p.output(), vec![]);
        assert_eq!(p.events(), vec![]);
        p
    }

    /// A client that has sent its preface and SETTINGS and nothing else.
    pub fn raw_client(config: Config) -> Self {
        Self::new(Connection::client(config))
    }

    /// A client past the SETTINGS exchange, both ways.
    pub fn client() -> Self {
        Self::client_with(Config::default())
    }

    pub fn client_with(config: Config) -> Self {
        let mut p = Self::raw_client(config);
        let out = p.output();
        assert!(
            matches!(out.first(), Some(Frame::Settings(s)) if !s.ack),
            "client starts with SETTINGS: {out:?}"
        );
        p.send_all(vec![
            frame::Settings::default().into(),
            frame::Settings::ack().into(),
        ])
        .unwrap();
        let out = p.output();
        assert_eq!(out, vec![frame::Settings::ack().into()]);
        assert_eq!(p.events(), vec![]);
        p
    }

    // ---- Input ----

    pub fn recv_bytes(&mut self, bytes: &[u8]) -> Result<(), ConnectionError> {
        let r = self.conn.recv(bytes, self.now);
        if let Err(e) = r {
            self.recv_error = Some(e);
        }
        r
    }

    pub fn send(&mut self, f: impl Into<Frame>) -> Result<(), ConnectionError> {
        let f: Frame = f.into();
        self.recv_bytes(&encode(&[f]))
    }

    /// Several frames in one `recv` call.
    pub fn send_all(&mut self, frames: Vec<Frame>) -> Result<(), ConnectionError> {
        self.recv_bytes(&encode(&frames))
    }

    /// HPACK-encode a header block with our encoder.
    pub fn block(&mut self, headers: &[Header]) -> Bytes {
        let mut b = BytesMut::new();
        self.encoder.encode(headers, &mut b);
        b.freeze()
    }

    pub fn headers_frame(
        &mut self,
        stream_id: impl Into<StreamId>,
        headers: &[Header],
        end_stream: bool,
    ) -> frame::Headers {
        let stream_id = stream_id.into();
        let block = self.block(headers);
        frame::Headers::new(stream_id, block, end_stream, true)
    }

    /// Send a header block, split into HEADERS + CONTINUATION frames of at
    /// most 16384 bytes if need be.
    pub fn send_headers(
        &mut self,
        stream_id: impl Into<StreamId>,
        headers: &[Header],
        end_stream: bool,
    ) -> Result<(), ConnectionError> {
        let stream_id = stream_id.into();
        const MAX: usize = frame::DEFAULT_MAX_FRAME_SIZE as usize;
        let mut block = self.block(headers);
        if block.len() <= MAX {
            return self.send(frame::Headers::new(stream_id, block, end_stream, true));
        }
        let first = block.split_to(MAX);
        let mut frames = vec![frame::Headers::new(stream_id, first, end_stream, false).into()];
        while !block.is_empty() {
            let fragment = block.split_to(block.len().min(MAX));
            frames.push(
                frame::Continuation {
                    stream_id,
                    fragment,
                    end_headers: block.is_empty(),
                }
                .into(),
            );
        }
        self.send_all(frames)
    }

    /// Open a stream with the standard request (server role).
    pub fn open(&mut self, stream_id: impl Into<StreamId>, end_stream: bool) {
        self.send_headers(stream_id, &request(), end_stream)
            .expect("request accepted");
    }

    pub fn send_data(
        &mut self,
        stream_id: impl Into<StreamId>,
        data: &[u8],
        end_stream: bool,
    ) -> Result<(), ConnectionError> {
        let stream_id = stream_id.into();
        self.send(frame::Data::new(
            stream_id,
            Bytes::copy_from_slice(data),
            end_stream,
        ))
    }

    pub fn advance(&mut self, d: Duration) {
        self.now += d;
    }

    // ---- Output ----

    /// Everything the connection has to send, parsed into frames. Header
    /// blocks are decoded (see [`Peer::blocks`]).
    pub fn output(&mut self) -> Vec<Frame> {
        while let Some(b) = self.conn.poll_transmit() {
            assert!(!b.is_empty(), "poll_transmit returned an empty chunk");
            self.rx.extend_from_slice(&b);
        }
        if self.preface_pending {
            assert!(
                self.rx.len() >= frame::PREFACE.len(),
                "client output must start with the preface"
            );
            assert_eq!(&self.rx[..frame::PREFACE.len()], &frame::PREFACE[..]);
            let _ = self.rx.split_to(frame::PREFACE.len());
            self.preface_pending = false;
        }
        let mut frames = Vec::new();
        loop {
            match self.reader.read(&mut self.rx) {
                Ok(Some(f)) => {
                    self.track_block(&f);
                    frames.push(f);
                }
                Ok(None) => break,
                Err(e) => panic!("the connection wrote an invalid frame: {e} (after {frames:?})"),
            }
        }
        assert!(
            self.rx.is_empty(),
            "the connection wrote a partial frame: {:?}",
            &self.rx[..]
        );
        frames
    }

    fn track_block(&mut self, f: &Frame) {
        match f {
            Frame::Headers(h) => {
                assert!(
                    self.partial.is_none(),
                    "HEADERS inside another header block"
                );
                self.partial = Some(PartialBlock {
                    stream_id: h.stream_id,
                    end_stream: h.end_stream,
                    block: BytesMut::from(&h.fragment[..]),
                    frames: 1,
                });
                if h.end_headers {
                    self.finish_block();
                }
            }
            Frame::Continuation(c) => {
                let p = self
                    .partial
                    .as_mut()
                    .expect("CONTINUATION outside a header block");
                assert_eq!(p.stream_id, c.stream_id, "CONTINUATION on another stream");
                p.block.extend_from_slice(&c.fragment);
                p.frames += 1;
                if c.end_headers {
                    self.finish_block();
                }
            }
            other => assert!(
                self.partial.is_none(),
                "{other:?} interrupts a header block"
            ),
        }
    }

    fn finish_block(&mut self) {
        let p = self.partial.take().unwrap();
        let block = p.block.freeze();
        let mut headers = Vec::new();
        self.decoder
            .decode(&block, usize::MAX, &mut headers)
            .expect("the connection's header block decodes");
        self.blocks.push(Block {
            stream_id: p.stream_id,
            headers,
            end_stream: p.end_stream,
            frames: p.frames,
            first_byte: block.first().copied(),
        });
    }

    pub fn events(&mut self) -> Vec<Event> {
        std::iter::from_fn(|| self.conn.poll_event()).collect()
    }

    /// Our SETTINGS_MAX_FRAME_SIZE as the connection must respect it.
    pub fn set_max_frame_size(&mut self, n: u32) {
        self.reader.set_max_frame_size(n);
    }

    // ---- Assertions ----

    /// The connection failed with `code`: GOAWAY is the last frame it
    /// wrote, it reported the error, and it ignores all further input.
    pub fn expect_goaway(&mut self, code: ErrorCode) -> frame::GoAway {
        let frames = self.output();
        let g = match frames.last() {
            Some(Frame::GoAway(g)) => g.clone(),
            _ => panic!("expected GOAWAY {code:?} last, got {frames:?}"),
        };
        assert_eq!(g.code, code, "GOAWAY code ({:?})", g.debug_data);
        let events = self.events();
        assert!(
            events
                .iter()
                .any(|e| matches!(e, Event::ConnectionError(e) if e.code == code)),
            "no ConnectionError event in {events:?}"
        );
        self.expect_dead();
        g
    }

    /// After a connection error nothing more is read or written.
    pub fn expect_dead(&mut self) {
        assert_eq!(
            self.recv_bytes(&encode(&[frame::Ping::new(ALIVE).into()])),
            Ok(())
        );
        assert_eq!(self.output(), vec![]);
        assert!(self.conn.is_closed());
        assert_eq!(self.conn.poll_timeout(), None);
    }

    /// The connection reset stream `id` with `code` and carries on.
    pub fn expect_rst(&mut self, id: impl Into<StreamId>, code: ErrorCode) -> Vec<Frame> {
        let id = id.into();
        let frames = self.output();
        assert!(
            frames.contains(&frame::RstStream::new(id, code).into()),
            "expected RST_STREAM({id}, {code:?}) in {frames:?}"
        );
        assert!(
            !frames.iter().any(|f| matches!(f, Frame::GoAway(_))),
            "unexpected GOAWAY in {frames:?}"
        );
        assert!(self.recv_error.is_none());
        self.assert_alive();
        frames
    }

    /// Either a RST_STREAM on `id` or a GOAWAY, with `code`: for the cases
    /// where the RFC allows both.
    pub fn expect_stream_or_connection_error(
        &mut self,
        id: impl Into<StreamId>,
        code: ErrorCode,
    ) -> Answer {
        let id = id.into();
        let frames = self.output();
        if let Some(Frame::GoAway(g)) = frames.last() {
            assert_eq!(g.code, code, "GOAWAY code ({:?})", g.debug_data);
            self.expect_dead();
            return Answer::Connection;
        }
        assert!(
            frames.contains(&frame::RstStream::new(id, code).into()),
            "expected RST_STREAM({id}, {code:?}) or GOAWAY in {frames:?}"
        );
        self.assert_alive();
        Answer::Stream
    }

    /// The connection answers a PING: it is alive and reading.
    pub fn assert_alive(&mut self) {
        self.send(frame::Ping::new(ALIVE)).expect("PING accepted");
        let frames = self.output();
        assert!(
            frames.contains(&frame::Ping::pong(ALIVE).into()),
            "no PING ack in {frames:?}"
        );
    }

    /// Nothing written.
    pub fn expect_silence(&mut self) {
        assert_eq!(self.output(), vec![]);
    }
}

// ---- Frame list helpers ----

/// (stream, payload length, END_STREAM) of every DATA frame.
pub fn data_frames(frames: &[Frame]) -> Vec<(u32, usize, bool)> {
    frames
        .iter()
        .filter_map(|f| match f {
            Frame::Data(d) => Some((d.stream_id.get(), d.data.len(), d.end_stream)),
            _ => None,
        })
        .collect()
}

/// Total DATA payload bytes on `stream_id`.
pub fn data_len(frames: &[Frame], stream_id: u32) -> usize {
    data_frames(frames)
        .iter()
        .filter(|(id, _, _)| *id == stream_id)
        .map(|(_, n, _)| n)
        .sum()
}

pub fn rsts(frames: &[Frame]) -> Vec<(u32, ErrorCode)> {
    frames
        .iter()
        .filter_map(|f| match f {
            Frame::RstStream(r) => Some((r.stream_id.get(), r.code)),
            _ => None,
        })
        .collect()
}

pub fn window_updates(frames: &[Frame]) -> Vec<(u32, u32)> {
    frames
        .iter()
        .filter_map(|f| match f {
            Frame::WindowUpdate(w) => Some((w.stream_id.get(), w.increment)),
            _ => None,
        })
        .collect()
}
