//! Per-stream state (RFC 9113 §5.1) and the bookkeeping of closed streams.
//!
//! A stream is kept in the connection's table while either direction is
//! open or it still has frames queued to send. The RFC's states are the
//! product of two halves, one per direction: [`RecvState`] (the peer's
//! side) and [`SendState`] (ours). "open" is both halves open; "half-closed
//! (remote)" is `RecvState::Closed`; "half-closed (local)" is
//! `SendState::Closed`; both closed and nothing queued is "closed", and the
//! stream leaves the table. "idle" streams are never in the table (the
//! connection tells them apart by id), and "reserved" ones do not exist:
//! push is refused.

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

/// The peer's half of a stream: what it has sent us.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecvState {
    /// No header block from the peer yet: a stream we opened, waiting for
    /// the response.
    AwaitingHeaders,
    /// The peer's headers arrived; DATA and trailers may follow.
    Open,
    /// The peer sent END_STREAM ("half-closed (remote)"); anything more on
    /// the stream is a STREAM_CLOSED error.
    Closed,
}

impl RecvState {
    /// After the peer's initial header block.
    pub fn after_headers(end_stream: bool) -> Self {
        if end_stream {
            Self::Closed
        } else {
            Self::Open
        }
    }
}

/// Our half of a stream: what the application queued and what of it left.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SendState {
    /// Nothing queued yet (a server before its response headers).
    Idle,
    /// Headers queued; DATA and trailers may follow.
    Open,
    /// END_STREAM is queued but not all on the wire yet; nothing more may
    /// be queued.
    Ending,
    /// END_STREAM went out ("half-closed (local)").
    Closed,
}

impl SendState {
    /// After queueing a frame that may carry END_STREAM.
    pub fn after_queueing(end_stream: bool) -> Self {
        if end_stream {
            Self::Ending
        } else {
            Self::Open
        }
    }

    /// Whether END_STREAM was queued (it may still be waiting to be sent).
    pub fn is_ended(self) -> bool {
        matches!(self, Self::Ending | Self::Closed)
    }
}

#[derive(Debug)]
pub struct Stream {
    pub id: StreamId,
    // Receive side.
    pub recv: RecvState,
    pub recv_window: RecvWindow,
    pub content_length: Option<u64>,
    pub data_received: u64,
    // Send side.
    pub send: SendState,
    pub send_window: Window,
    pub queue: VecDeque<Outgoing>,
    pub queued_bytes: usize,
    /// On the connection's ready list (avoids duplicates there). Not a
    /// protocol state: scheduling bookkeeping.
    pub scheduled: bool,
    /// Reset with this code once our side is sent: we answered early and do
    /// not want the rest of the peer's side.
    pub reset_when_sent: Option<ErrorCode>,
}

impl Stream {
    /// A stream with neither half started; the caller records the header
    /// block that opens it.
    pub fn new(id: StreamId, send_window: u32, recv_window: u32) -> Self {
        Self {
            id,
            recv: RecvState::AwaitingHeaders,
            recv_window: RecvWindow::new(recv_window),
            content_length: None,
            data_received: 0,
            send: SendState::Idle,
            send_window: Window::new(send_window),
            queue: VecDeque::new(),
            queued_bytes: 0,
            scheduled: false,
            reset_when_sent: None,
        }
    }

    /// Both halves closed and nothing left to send: the stream is closed.
    pub fn is_done(&self) -> bool {
        self.recv == RecvState::Closed && self.send == SendState::Closed && self.queue.is_empty()
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
    fn halves_close_independently() {
        let mut s = Stream::new(StreamId::new(1), 10, 10);
        assert!(!s.is_done());
        s.recv = RecvState::after_headers(true);
        assert_eq!(s.recv, RecvState::Closed);
        s.send = SendState::after_queueing(true);
        assert!(
            s.send.is_ended() && !s.is_done(),
            "END_STREAM queued, not sent"
        );
        s.send = SendState::Closed;
        assert!(s.is_done());
        assert!(!SendState::after_queueing(false).is_ended());
    }

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
