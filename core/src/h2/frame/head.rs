//! The 9-byte frame header (RFC 9113 §4.1).

use bytes::{BufMut, BytesMut};

use super::HEADER_LEN;

pub(crate) use crate::h2::stream_id::STREAM_ID_MASK;
use crate::h2::StreamId;

/// The largest value the 24-bit length field can hold.
const LENGTH_MASK: u32 = 0x00ff_ffff;

/// A parsed frame header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Head {
    /// Payload length (24 bits on the wire).
    pub length: u32,
    /// Frame type; see [`super::kind`].
    pub kind: u8,
    /// Frame flags; see [`super::flags`].
    pub flags: u8,
    /// Stream identifier with the reserved bit masked off.
    pub stream_id: StreamId,
}

impl Head {
    /// Parse a header. Every 9-byte input is a valid header; the reserved bit
    /// of the stream identifier is dropped.
    pub fn parse(buf: &[u8; HEADER_LEN]) -> Head {
        Head {
            length: u32::from_be_bytes([0, buf[0], buf[1], buf[2]]),
            kind: buf[3],
            flags: buf[4],
            stream_id: StreamId::new(u32::from_be_bytes([buf[5], buf[6], buf[7], buf[8]])),
        }
    }

    /// Append the 9 header bytes to `dst`. The reserved bit is sent as 0.
    ///
    /// `length` must fit in 24 bits (and should not exceed the peer's
    /// SETTINGS_MAX_FRAME_SIZE); higher bits are dropped rather than
    /// panicking.
    pub fn encode(&self, dst: &mut BytesMut) {
        let len = (self.length & LENGTH_MASK).to_be_bytes();
        dst.reserve(HEADER_LEN);
        dst.put_slice(&len[1..]);
        dst.put_u8(self.kind);
        dst.put_u8(self.flags);
        dst.put_u32(self.stream_id.get());
    }

    /// Whether `flag` (one of [`super::flags`]) is set.
    pub fn has_flag(&self, flag: u8) -> bool {
        self.flags & flag == flag
    }
}

#[cfg(test)]
impl Head {
    /// A frame header for the frame parsers' tests.
    pub(crate) fn for_test(kind: u8, flags: u8, stream_id: u32, length: usize) -> Head {
        Head {
            length: length as u32,
            kind,
            flags,
            stream_id: StreamId::new(stream_id),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_fields() {
        let h = Head::parse(&[0x01, 0x02, 0x03, 0x04, 0x05, 0x80, 0x00, 0x00, 0x07]);
        assert_eq!(
            h,
            Head {
                length: 0x010203,
                kind: 4,
                flags: 5,
                stream_id: StreamId::new(7), // reserved bit dropped
            }
        );
    }

    #[test]
    fn round_trip() {
        let h = Head {
            length: 0xff_ffff,
            kind: 0xfe,
            flags: 0xab,
            stream_id: StreamId::MAX,
        };
        let mut b = BytesMut::new();
        h.encode(&mut b);
        assert_eq!(b.len(), HEADER_LEN);
        let arr: [u8; HEADER_LEN] = b[..].try_into().unwrap();
        assert_eq!(Head::parse(&arr), h);
    }

    #[test]
    fn encode_clears_reserved_bit() {
        let h = Head {
            length: 0,
            kind: 0,
            flags: 0,
            stream_id: StreamId::new(0xffff_ffff),
        };
        let mut b = BytesMut::new();
        h.encode(&mut b);
        assert_eq!(&b[5..], &[0x7f, 0xff, 0xff, 0xff]);
    }
}
