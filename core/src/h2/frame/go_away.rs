//! GOAWAY (RFC 9113 §6.8).

use bytes::{BufMut, Bytes, BytesMut};

use super::{be_u32, kind, len_u32, require_connection, Head};
use crate::h2::error::{ConnectionError, ErrorCode};
use crate::h2::StreamId;

/// A GOAWAY frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GoAway {
    /// The highest stream the sender may have processed (reserved bit
    /// masked off).
    pub last_stream_id: StreamId,
    pub code: ErrorCode,
    /// Opaque diagnostic data; a zero-copy slice of the payload.
    pub debug_data: Bytes,
}

impl GoAway {
    /// A GOAWAY without debug data.
    pub fn new(last_stream_id: StreamId, code: ErrorCode) -> Self {
        GoAway {
            last_stream_id,
            code,
            debug_data: Bytes::new(),
        }
    }

    /// Decode a GOAWAY payload: non-zero stream → PROTOCOL_ERROR, shorter
    /// than 8 → FRAME_SIZE_ERROR, both connection errors.
    pub fn decode(head: &Head, mut payload: Bytes) -> Result<GoAway, ConnectionError> {
        require_connection(head, "GOAWAY on a non-zero stream")?;
        if payload.len() < 8 {
            return Err(ConnectionError::frame_size("GOAWAY shorter than 8 bytes"));
        }
        let last_stream_id = StreamId::new(be_u32(&payload));
        let code = ErrorCode(be_u32(payload.get(4..).unwrap_or_default()));
        let _ = payload.split_to(8);
        Ok(GoAway {
            last_stream_id,
            code,
            debug_data: payload,
        })
    }

    /// Append the whole frame to `dst`.
    pub fn encode(&self, dst: &mut BytesMut) {
        Head {
            length: len_u32(self.debug_data.len()).saturating_add(8),
            kind: kind::GOAWAY,
            flags: 0,
            stream_id: StreamId::ZERO,
        }
        .encode(dst);
        dst.put_u32(self.last_stream_id.get());
        dst.put_u32(self.code.0);
        dst.extend_from_slice(&self.debug_data);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(stream_id: u32, len: usize) -> Head {
        Head::for_test(kind::GOAWAY, 0, stream_id, len)
    }

    #[test]
    fn decode_with_debug_data() {
        let p = Bytes::from_static(b"\x80\x00\x00\x05\x00\x00\x00\x0bcalm down");
        let f = GoAway::decode(&head(0, p.len()), p).unwrap();
        assert_eq!(f.last_stream_id, 5);
        assert_eq!(f.code, ErrorCode::ENHANCE_YOUR_CALM);
        assert_eq!(&f.debug_data[..], b"calm down");
    }

    #[test]
    fn errors() {
        let e = GoAway::decode(&head(1, 8), Bytes::from(vec![0; 8])).unwrap_err();
        assert_eq!(e.code, ErrorCode::PROTOCOL_ERROR);
        for len in [0usize, 4, 7] {
            let e = GoAway::decode(&head(0, len), Bytes::from(vec![0; len])).unwrap_err();
            assert_eq!(e.code, ErrorCode::FRAME_SIZE_ERROR);
        }
    }
}
