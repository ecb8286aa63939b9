//! Per-stream state (RFC 9113 §5.1) and the bookkeeping of closed streams.
//!
//! A stream is kept in the connection's table while either direction is
//! open or it still has frames queued to send. The RFC's states map onto
//! two flags: `recv_closed` (the peer sent END_STREAM: half-closed remote)
//! and `send_closed` (we sent END_STREAM: half-closed local); both set and
//! nothing queued means closed, and the stream leaves the table.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};

use bytes::Bytes;

use super::error::ErrorCode;
use super::flow::{RecvWindow, Window};
use super::StreamId;

/// Something a stream wants to send, in order.
#[derive(Debug)]
pub enum Outgoing {
    /// Encoded at transmit time, so HPACK state follows wire order.
    Headers {
        headers: super::connection::HeaderList,
        end_stream: bool,
    },
    Data {
        data: Bytes,
        end_stream: bool,
    },
}

#[derive(Debug)]
pub struct Stream {
    pub id: StreamId,
    /// Opened by the peer (a request, for a server).
    pub remote_initiated: bool,
    // Receive side.
    pub recv_window: RecvWindow,
    pub headers_received: bool,
    pub recv_closed: bool,
    pub content_length: Option<u64>,
    pub data_received: u64,
    // Send side.
    pub send_window: Window,
    pub queue: VecDeque<Outgoing>,
    pub queued_bytes: usize,
    /// The application queued END_STREAM; nothing more may be queued.
    pub send_ended: bool,
    /// END_STREAM went out on the wire.
    pub send_closed: bool,
    pub headers_queued: bool,
    /// On the connection's ready list (avoids duplicates there).
    pub scheduled: bool,
    /// Reset with this code once our side is sent: we answered early and do
    /// not want the rest of the peer's side.
    pub reset_when_sent: Option<ErrorCode>,
}

impl Stream {
    pub fn new(id: StreamId, remote_initiated: bool, send_window: u32, recv_window: u32) -> Self {
        Self {
            id,
            remote_initiated,
            recv_window: RecvWindow::new(recv_window),
            headers_received: false,
            recv_closed: false,
            content_length: None,
            data_received: 0,
            send_window: Window::new(send_window),
            queue: VecDeque::new(),
            queued_bytes: 0,
            send_ended: false,
            send_closed: false,
            headers_queued: false,
            scheduled: false,
            reset_when_sent: None,
        }
    }

    pub fn is_done(&self) -> bool {
        self.recv_closed && self.send_closed && self.queue.is_empty()
    }
}

/// How a stream we no longer track came to be closed; it decides how late
/// frames on it are answered (RFC 9113 §5.1, "closed").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Closed {
    /// We sent RST_STREAM: frames already in flight are ignored.
    LocalReset,
    /// The peer sent RST_STREAM: further frames are a stream error.
    RemoteReset,
    /// Both sides ended normally: further frames are a connection error.
    Ended,
}

/// A bounded memory of recently closed streams. Older ones are forgotten;
/// frames on those are treated as on a stream that ended normally.
#[derive(Debug)]
pub struct ClosedStreams {
    ring: VecDeque<(StreamId, Closed)>,
    capacity: usize,
}

impl ClosedStreams {
    pub fn new(capacity: usize) -> Self {
        Self {
            ring: VecDeque::with_capacity(capacity.min(64)),
            capacity,
        }
    }

    pub fn insert(&mut self, id: StreamId, how: Closed) {
        if self.ring.len() == self.capacity {
            self.ring.pop_front();
        }
        self.ring.push_back((id, how));
    }

    pub fn get(&self, id: StreamId) -> Option<Closed> {
        // Newest first: the likely hit is a stream closed a moment ago.
        self.ring
            .iter()
            .rev()
            .find(|(i, _)| *i == id)
            .map(|&(_, how)| how)
    }
}

/// Stream ids are small distinct integers; hashing them with SipHash buys
/// nothing. This hasher spreads them with one multiplication.
#[derive(Default)]
pub struct StreamIdHasher(u64);

impl Hasher for StreamIdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8 | u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
    fn write_u32(&mut self, n: u32) {
        self.0 = u64::from(n).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
    fn write_usize(&mut self, n: usize) {
        self.0 = (n as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

pub type StreamMap = HashMap<StreamId, Stream, BuildHasherDefault<StreamIdHasher>>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closed_streams_forget_the_oldest() {
        let mut c = ClosedStreams::new(2);
        c.insert(StreamId::new(1), Closed::Ended);
        c.insert(StreamId::new(3), Closed::LocalReset);
        c.insert(StreamId::new(5), Closed::RemoteReset);
        assert_eq!(c.get(StreamId::new(1)), None);
        assert_eq!(c.get(StreamId::new(3)), Some(Closed::LocalReset));
        assert_eq!(c.get(StreamId::new(5)), Some(Closed::RemoteReset));
    }
}
