//! RST_STREAM (RFC 9113 §6.4).

use bytes::{BufMut, Bytes, BytesMut};

use super::{be_u32, kind, require_stream, Head};
use crate::h2::error::{ConnectionError, ErrorCode};
use crate::h2::StreamId;

/// A RST_STREAM frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RstStream {
    pub stream_id: StreamId,
    pub code: ErrorCode,
}

impl RstStream {
    pub fn new(stream_id: StreamId, code: ErrorCode) -> Self {
        RstStream { stream_id, code }
    }

    /// Decode a RST_STREAM payload: stream 0 is a PROTOCOL_ERROR, a length
    /// other than 4 a FRAME_SIZE_ERROR, both connection errors.
    pub fn decode(head: &Head, payload: Bytes) -> Result<RstStream, ConnectionError> {
        require_stream(head, "RST_STREAM on stream 0")?;
        if payload.len() != 4 {
            return Err(ConnectionError::frame_size("RST_STREAM length is not 4"));
        }
        Ok(RstStream {
            stream_id: head.stream_id,
            code: ErrorCode(be_u32(&payload)),
        })
    }

    /// Append the whole frame to `dst`.
    pub fn encode(&self, dst: &mut BytesMut) {
        Head {
            length: 4,
            kind: kind::RST_STREAM,
            flags: 0,
            stream_id: self.stream_id,
        }
        .encode(dst);
        dst.put_u32(self.code.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(stream_id: u32, len: usize) -> Head {
        Head::for_test(kind::RST_STREAM, 0, stream_id, len)
    }

    #[test]
    fn decode_keeps_unknown_codes() {
        let f = RstStream::decode(&head(1, 4), Bytes::from_static(&[0, 0, 1, 0])).unwrap();
        assert_eq!(f, RstStream::new(StreamId::new(1), ErrorCode(0x100)));
    }

    #[test]
    fn errors() {
        let e = RstStream::decode(&head(0, 4), Bytes::from_static(&[0, 0, 0, 8])).unwrap_err();
        assert_eq!(e.code, ErrorCode::PROTOCOL_ERROR);
        for len in [0usize, 3, 5] {
            let e = RstStream::decode(&head(1, len), Bytes::from(vec![0; len])).unwrap_err();
            assert_eq!(e.code, ErrorCode::FRAME_SIZE_ERROR);
        }
    }
}
