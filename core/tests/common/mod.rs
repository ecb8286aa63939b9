//! Test-only glue for the interop tests: drives a core [`Server`] or
//! [`Client`] over a real tokio socket, plus helpers shared by the server-
//! and client-role test files. The core never sees tokio; everything here
//! is the "driver" its module docs describe: read → `recv(bytes, now)` →
//! drain events → commands → `poll_transmit()` → sleep until readable,
//! writable or `poll_timeout()`.

#![allow(dead_code)] // each test file uses its own part of this module

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use crisp_core::grpc::client::{self, Client};
use crisp_core::grpc::server::{self, Server};
use crisp_core::h2::ConnectionError;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

/// The common face of the core's two call-level state machines, so one
/// driver loop serves both.
pub trait Endpoint {
    type Event;
    fn recv(&mut self, data: &[u8], now: Instant) -> Result<(), ConnectionError>;
    fn poll_event(&mut self) -> Option<Self::Event>;
    fn poll_transmit(&mut self) -> Option<Bytes>;
    fn poll_timeout(&self) -> Option<Instant>;
    fn handle_timeout(&mut self, now: Instant);
    fn is_closed(&self) -> bool;
}

impl Endpoint for Server {
    type Event = server::Event;
    fn recv(&mut self, data: &[u8], now: Instant) -> Result<(), ConnectionError> {
        Server::recv(self, data, now)
    }
    fn poll_event(&mut self) -> Option<server::Event> {
        Server::poll_event(self)
    }
    fn poll_transmit(&mut self) -> Option<Bytes> {
        Server::poll_transmit(self)
    }
    fn poll_timeout(&self) -> Option<Instant> {
        Server::poll_timeout(self)
    }
    fn handle_timeout(&mut self, now: Instant) {
        Server::handle_timeout(self, now)
    }
    fn is_closed(&self) -> bool {
        Server::is_closed(self)
    }
}

impl Endpoint for Client {
    type Event = client::Event;
    fn recv(&mut self, data: &[u8], now: Instant) -> Result<(), ConnectionError> {
        Client::recv(self, data, now)
    }
    fn poll_event(&mut self) -> Option<client::Event> {
        Client::poll_event(self)
    }
    fn poll_transmit(&mut self) -> Option<Bytes> {
        Client::poll_transmit(self)
    }
    fn poll_timeout(&self) -> Option<Instant> {
        Client::poll_timeout(self)
    }
    fn handle_timeout(&mut self, now: Instant) {
        Client::handle_timeout(self, now)
    }
    fn is_closed(&self) -> bool {
        Client::is_closed(self)
    }
}

/// The application on top of an endpoint. A plain closure
/// `FnMut(&mut E, E::Event, Instant)` is one.
pub trait App<E: Endpoint> {
    /// One event from the endpoint; answer with commands on `ep`.
    fn on_event(&mut self, ep: &mut E, event: E::Event, now: Instant);
    /// Called once per turn of the loop after the events: start calls,
    /// produce more output as windows drain, and so on.
    fn on_idle(&mut self, _ep: &mut E, _now: Instant) {}
    /// True when the application has finished; the driver then flushes
    /// what is left to write and returns.
    fn done(&self, _ep: &E) -> bool {
        false
    }
}

impl<E: Endpoint, F: FnMut(&mut E, E::Event, Instant)> App<E> for F {
    fn on_event(&mut self, ep: &mut E, event: E::Event, now: Instant) {
        self(ep, event, now)
    }
}

/// Why [`drive`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// The peer closed the socket (EOF or a read/write error).
    PeerClosed,
    /// The endpoint reported `is_closed()` (GOAWAY exchanged, or failed).
    EndpointClosed,
    /// The application said it was done.
    AppDone,
}

/// Run `ep` over `io` until the peer closes the socket, the endpoint
/// closes, or the application is done. Returns both for inspection.
pub async fn drive<E: Endpoint, A: App<E>>(io: UnixStream, mut ep: E, mut app: A) -> (E, A, Exit) {
    let mut io = io;
    let (mut rd, mut wr) = io.split();
    let mut read_buf = vec![0u8; 64 * 1024];
    // Bytes taken from `poll_transmit` and not yet written. We only ask
    // the endpoint for more when this is empty, so a slow peer applies
    // back-pressure instead of growing a buffer here.
    let mut pending = Bytes::new();
    let mut read_open = true;
    let exit = loop {
        let now = Instant::now();
        app.on_idle(&mut ep, now);
        // Commands issued by on_idle may have produced events (errors).
        while let Some(ev) = ep.poll_event() {
            app.on_event(&mut ep, ev, now);
        }
        if pending.is_empty() {
            if let Some(b) = ep.poll_transmit() {
                pending = b;
            }
        }
        if pending.is_empty() {
            if app.done(&ep) {
                break Exit::AppDone;
            }
            if ep.is_closed() {
                break Exit::EndpointClosed;
            }
            if !read_open {
                break Exit::PeerClosed;
            }
        }
        let timeout = ep.poll_timeout();
        let sleep = async {
            match timeout {
                Some(at) => tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            r = rd.read(&mut read_buf), if read_open => match r {
                Ok(0) | Err(_) => read_open = false,
                Ok(n) => {
                    let now = Instant::now();
                    // A connection error is also reported as an event.
                    let _ = ep.recv(&read_buf[..n], now);
                    while let Some(ev) = ep.poll_event() {
                        app.on_event(&mut ep, ev, now);
                    }
                }
            },
            w = wr.write(&pending), if !pending.is_empty() => match w {
                Ok(n) => {
                    let _ = pending.split_to(n);
                }
                Err(_) => break Exit::PeerClosed,
            },
            () = sleep => {
                let now = Instant::now();
                ep.handle_timeout(now);
                while let Some(ev) = ep.poll_event() {
                    app.on_event(&mut ep, ev, now);
                }
            }
        }
    };
    let _ = wr.shutdown().await;
    (ep, app, exit)
}

/// Fail the test instead of hanging when something never completes.
pub async fn within<T>(secs: u64, what: &str, f: impl std::future::Future<Output = T>) -> T {
    match tokio::time::timeout(Duration::from_secs(secs), f).await {
        Ok(v) => v,
        Err(_) => panic!("{what}: did not complete within {secs} s"),
    }
}

// ---- gRPC wire helpers, written independently of the core's codec ----

/// A gRPC length-prefixed message (uncompressed).
pub fn frame(payload: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(5 + payload.len());
    b.extend_from_slice(&[0]);
    b.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    b.extend_from_slice(payload);
    b.freeze()
}

/// Split a complete body of length-prefixed messages; panics on a
/// malformed or truncated body.
pub fn unframe(mut body: &[u8]) -> Vec<Bytes> {
    let mut out = Vec::new();
    while !body.is_empty() {
        assert!(body.len() >= 5, "truncated message prefix");
        assert_eq!(body[0], 0, "unexpected compressed flag");
        let len = u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize;
        assert!(body.len() >= 5 + len, "truncated message");
        out.push(Bytes::copy_from_slice(&body[5..5 + len]));
        body = &body[5 + len..];
    }
    out
}

/// Incremental de-framing for large streams, so a test can check each
/// message as it arrives without holding the whole body.
#[derive(Default)]
pub struct Unframer {
    buf: BytesMut,
}

impl Unframer {
    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }
    pub fn next(&mut self) -> Option<Bytes> {
        if self.buf.len() < 5 {
            return None;
        }
        assert_eq!(self.buf[0], 0, "unexpected compressed flag");
        let len = u32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]) as usize;
        if self.buf.len() < 5 + len {
            return None;
        }
        let _ = self.buf.split_to(5);
        Some(self.buf.split_to(len).freeze())
    }
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }
}

/// Percent-encode a `grpc-message` as the gRPC spec says (bytes outside
/// 0x20..=0x7E, and '%', as %XX), independently of the core's encoder.
pub fn percent_encode(msg: &str) -> String {
    let mut out = String::new();
    for &b in msg.as_bytes() {
        if (0x20..=0x7e).contains(&b) && b != b'%' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Deterministic pseudo-random content for message `index` of a transfer
/// (xorshift64*, a word at a time so debug builds stay quick).
pub fn pattern(seed: u64, index: u64, len: usize) -> Bytes {
    let mut x = (seed ^ index.wrapping_mul(0x9E37_79B9_7F4A_7C15)) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(len);
    Bytes::from(out)
}

/// A cheap checksum over 8-byte words (the tail zero-padded), to report
/// what a peer received in one number.
pub fn checksum(acc: u64, data: &[u8]) -> u64 {
    let mut h = acc;
    let mut chunks = data.chunks_exact(8);
    for c in &mut chunks {
        let w = u64::from_le_bytes(c.try_into().unwrap());
        h = (h ^ w).wrapping_mul(0x0000_0100_0000_01B3).rotate_left(17);
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        let mut w = [0u8; 8];
        w[..rest.len()].copy_from_slice(rest);
        h = (h ^ u64::from_le_bytes(w))
            .wrapping_mul(0x0000_0100_0000_01B3)
            .rotate_left(17);
    }
    h
}

/// Send `data` on an h2 stream, never more than the peer's windows allow:
/// reserve capacity, wait for it, send what was granted.
pub async fn send_flow_controlled(
    send: &mut h2::SendStream<Bytes>,
    mut data: Bytes,
    end: bool,
) -> Result<(), h2::Error> {
    if data.is_empty() {
        return if end {
            send.send_data(Bytes::new(), true)
        } else {
            Ok(())
        };
    }
    while !data.is_empty() {
        send.reserve_capacity(data.len());
        let granted = std::future::poll_fn(|cx| send.poll_capacity(cx))
            .await
            .ok_or_else(|| h2::Error::from(h2::Reason::CANCEL))??;
        if granted == 0 {
            continue;
        }
        let chunk = data.split_to(granted.min(data.len()));
        send.send_data(chunk, end && data.is_empty())?;
    }
    Ok(())
}

/// Read an h2 body to its end, releasing flow-control credit as we go.
pub async fn read_body(body: &mut h2::RecvStream) -> Result<BytesMut, h2::Error> {
    let mut all = BytesMut::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk?;
        body.flow_control().release_capacity(chunk.len())?;
        all.extend_from_slice(&chunk);
    }
    Ok(all)
}
