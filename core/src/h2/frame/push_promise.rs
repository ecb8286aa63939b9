//! PUSH_PROMISE (RFC 9113 §6.6).

use bytes::{BufMut, Bytes, BytesMut};

use super::{be_u32, flags, kind, len_u32, require_stream, strip_padding, take_pad_len, Head};
use crate::h2::error::ConnectionError;
use crate::h2::StreamId;

/// A PUSH_PROMISE frame. Padding is stripped on receipt and never sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PushPromise {
    pub stream_id: StreamId,
    /// The promised stream (reserved bit masked off).
    pub promised_id: StreamId,
    /// The field block fragment, padding removed.
    pub fragment: Bytes,
    pub end_headers: bool,
}

impl PushPromise {
    /// Decode a PUSH_PROMISE payload. All errors are connection errors.
    /// Whether push is allowed at all, and whether the promised id is valid,
    /// is for the connection to judge.
    pub fn decode(head: &Head, mut payload: Bytes) -> Result<PushPromise, ConnectionError> {
        require_stream(head, "PUSH_PROMISE on stream 0")?;
        let pad_len = take_pad_len(head, &mut payload)?;
        if payload.len() < 4 {
            return Err(ConnectionError::frame_size(
                "PUSH_PROMISE too short for the promised stream id",
            ));
        }
        let promised_id = StreamId::new(be_u32(&payload));
        let _ = payload.split_to(4);
        strip_padding(&mut payload, pad_len)?;
        Ok(PushPromise {
            stream_id: head.stream_id,
            promised_id,
            fragment: payload,
            end_headers: head.has_flag(flags::END_HEADERS),
        })
    }

    /// Append the whole frame to `dst`.
    pub fn encode(&self, dst: &mut BytesMut) {
        Head {
            length: len_u32(self.fragment.len()).saturating_add(4),
            kind: kind::PUSH_PROMISE,
            flags: if self.end_headers {
                flags::END_HEADERS
            } else {
                0
            },
            stream_id: self.stream_id,
        }
        .encode(dst);
        dst.put_u32(self.promised_id.get());
        dst.extend_from_slice(&self.fragment);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::h2::error::ErrorCode;

    fn head(flags: u8, stream_id: u32, len: usize) -> Head {
        Head::for_test(kind::PUSH_PROMISE, flags, stream_id, len)
    }

    #[test]
    fn padded() {
        let p = Bytes::from_static(b"\x01\x80\x00\x00\x02ab\0");
        let f = PushPromise::decode(&head(flags::PADDED | flags::END_HEADERS, 1, 8), p).unwrap();
        assert_eq!(f.promised_id, 2);
        assert_eq!(&f.fragment[..], b"ab");
        assert!(f.end_headers);
    }

    #[test]
    fn errors() {
        let e = PushPromise::decode(&head(0, 0, 4), Bytes::from_static(&[0, 0, 0, 2])).unwrap_err();
        assert_eq!(e.code, ErrorCode::PROTOCOL_ERROR);
        let e = PushPromise::decode(&head(0, 1, 3), Bytes::from_static(&[0, 0, 2])).unwrap_err();
        assert_eq!(e.code, ErrorCode::FRAME_SIZE_ERROR);
        let e = PushPromise::decode(
            &head(flags::PADDED, 1, 4),
            Bytes::from_static(&[0, 0, 0, 2]),
        )
        .unwrap_err();
        assert_eq!(e.code, ErrorCode::FRAME_SIZE_ERROR);
        let p = Bytes::from_static(b"\x02\x00\x00\x00\x02a");
        let e = PushPromise::decode(&head(flags::PADDED, 1, 6), p).unwrap_err();
        assert_eq!(e.code, ErrorCode::PROTOCOL_ERROR);
    }
}
