//! Stream identifiers (RFC 9113 §5.1.1).

use std::fmt;

/// Mask for the 31-bit stream identifier; the top bit is reserved (§4.1),
/// ignored on receipt and sent as 0.
pub(crate) const STREAM_ID_MASK: u32 = 0x7fff_ffff;

/// An HTTP/2 stream identifier: 31 bits, odd for streams a client opens,
/// even for a server's, 0 for frames about the connection itself.
///
/// A type of its own so that a stream id is never mixed up with a length,
/// a window or an error code. Compares equal to the `u32` it holds, which
/// keeps tests short (`assert_eq!(goaway.last_stream_id, 3)`).
#[derive(Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StreamId(u32);

impl StreamId {
    /// Stream 0: the connection as a whole (SETTINGS, PING, GOAWAY, and
    /// connection-level WINDOW_UPDATE).
    pub const ZERO: StreamId = StreamId(0);
    /// The largest stream identifier, 2^31 - 1.
    pub const MAX: StreamId = StreamId(STREAM_ID_MASK);

    /// The id with this value. The reserved top bit is dropped, as a
    /// receiver does (§4.1).
    pub const fn new(id: u32) -> Self {
        Self(id & STREAM_ID_MASK)
    }

    /// The id as a number.
    pub const fn get(self) -> u32 {
        self.0
    }

    /// Stream 0, the connection itself.
    pub const fn is_zero(self) -> bool {
        self.0 == 0
    }

    /// Whether a client opens this stream (odd ids); 0 is neither side's.
    pub const fn is_client_initiated(self) -> bool {
        self.0 % 2 == 1
    }

    /// Whether a server opens this stream (even ids other than 0).
    pub const fn is_server_initiated(self) -> bool {
        self.0 != 0 && self.0 % 2 == 0
    }

    /// The next id the same endpoint may open (two further on), or `None`
    /// when the id space is used up.
    pub const fn next(self) -> Option<StreamId> {
        match self.0.checked_add(2) {
            Some(n) if n <= STREAM_ID_MASK => Some(StreamId(n)),
            _ => None,
        }
    }
}

impl From<u32> for StreamId {
    fn from(id: u32) -> Self {
        Self::new(id)
    }
}

impl From<StreamId> for u32 {
    fn from(id: StreamId) -> Self {
        id.0
    }
}

impl PartialEq<u32> for StreamId {
    fn eq(&self, other: &u32) -> bool {
        self.0 == *other
    }
}

impl PartialEq<StreamId> for u32 {
    fn eq(&self, other: &StreamId) -> bool {
        *self == other.0
    }
}

impl fmt::Debug for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StreamId({})", self.0)
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_bit_is_dropped() {
        assert_eq!(StreamId::new(0x8000_0005), 5);
        assert_eq!(StreamId::from(0xffff_ffff), StreamId::MAX);
    }

    #[test]
    fn sides_and_next() {
        assert!(StreamId::new(1).is_client_initiated());
        assert!(StreamId::new(2).is_server_initiated());
        assert!(!StreamId::ZERO.is_client_initiated() && !StreamId::ZERO.is_server_initiated());
        assert_eq!(StreamId::new(1).next(), Some(StreamId::new(3)));
        assert_eq!(StreamId::MAX.next(), None);
        assert_eq!(
            StreamId::new(STREAM_ID_MASK - 2).next(),
            Some(StreamId::MAX)
        );
    }
}
