//! Frames of unknown type (RFC 9113 §4.1, §5.5): kept whole, to be ignored.

use bytes::{Bytes, BytesMut};

use super::{len_u32, Head};
use crate::h2::StreamId;

/// A frame of a type we do not implement.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unknown {
    pub kind: u8,
    pub flags: u8,
    pub stream_id: StreamId,
    pub payload: Bytes,
}

impl Unknown {
    /// Keep the frame as received; it cannot be invalid.
    pub fn decode(head: &Head, payload: Bytes) -> Unknown {
        Unknown {
            kind: head.kind,
            flags: head.flags,
            stream_id: head.stream_id,
            payload,
        }
    }

    /// Append the whole frame to `dst` (useful for tests and extensions).
    pub fn encode(&self, dst: &mut BytesMut) {
        Head {
            length: len_u32(self.payload.len()),
            kind: self.kind,
            flags: self.flags,
            stream_id: self.stream_id,
        }
        .encode(dst);
        dst.extend_from_slice(&self.payload);
    }
}
