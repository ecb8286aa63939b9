//! CONTINUATION (RFC 9113 §6.10).

use bytes::{Bytes, BytesMut};

use super::{flags, kind, len_u32, require_stream, Head};
use crate::h2::error::ConnectionError;
use crate::h2::StreamId;

/// A CONTINUATION frame. That it follows a HEADERS or PUSH_PROMISE on the
/// same stream without END_HEADERS is for the connection to check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Continuation {
    pub stream_id: StreamId,
    pub fragment: Bytes,
    pub end_headers: bool,
}

impl Continuation {
    /// Decode a CONTINUATION payload: stream 0 is a connection PROTOCOL_ERROR.
    pub fn decode(head: &Head, payload: Bytes) -> Result<Continuation, ConnectionError> {
        require_stream(head, "CONTINUATION on stream 0")?;
        Ok(Continuation {
            stream_id: head.stream_id,
            fragment: payload,
            end_headers: head.has_flag(flags::END_HEADERS),
        })
    }

    /// Append the whole frame to `dst`.
    pub fn encode(&self, dst: &mut BytesMut) {
        Head {
            length: len_u32(self.fragment.len()),
            kind: kind::CONTINUATION,
            flags: if self.end_headers {
                flags::END_HEADERS
            } else {
                0
            },
            stream_id: self.stream_id,
        }
        .encode(dst);
        dst.extend_from_slice(&self.fragment);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::h2::error::ErrorCode;

    fn head(flags: u8, stream_id: u32) -> Head {
        Head::for_test(kind::CONTINUATION, flags, stream_id, 1)
    }

    #[test]
    fn decode() {
        let f =
            Continuation::decode(&head(flags::END_HEADERS, 3), Bytes::from_static(b"x")).unwrap();
        assert!(f.end_headers);
        assert_eq!(&f.fragment[..], b"x");
        // PADDED means nothing on CONTINUATION.
        let f = Continuation::decode(&head(flags::PADDED, 3), Bytes::from_static(b"x")).unwrap();
        assert!(!f.end_headers);
        assert_eq!(&f.fragment[..], b"x");
    }

    #[test]
    fn stream_zero_is_protocol_error() {
        let e = Continuation::decode(&head(0, 0), Bytes::from_static(b"x")).unwrap_err();
        assert_eq!(e.code, ErrorCode::PROTOCOL_ERROR);
    }
}
