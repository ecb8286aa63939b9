//! PING (RFC 9113 §6.7).

use bytes::{Bytes, BytesMut};

use super::{flags, kind, require_connection, Head};
use crate::h2::error::ConnectionError;
use crate::h2::StreamId;

/// A PING frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ping {
    pub ack: bool,
    pub payload: [u8; 8],
}

impl Ping {
    /// A PING to send.
    pub fn new(payload: [u8; 8]) -> Self {
        Ping {
            ack: false,
            payload,
        }
    }

    /// The answer to a received PING.
    pub fn pong(payload: [u8; 8]) -> Self {
        Ping { ack: true, payload }
    }

    /// Decode a PING payload: non-zero stream → PROTOCOL_ERROR, length not 8
    /// → FRAME_SIZE_ERROR, both connection errors.
    pub fn decode(head: &Head, payload: Bytes) -> Result<Ping, ConnectionError> {
        require_connection(head, "PING on a non-zero stream")?;
        let payload: [u8; 8] = payload[..]
            .try_into()
            .map_err(|_| ConnectionError::frame_size("PING length is not 8"))?;
        Ok(Ping {
            ack: head.has_flag(flags::ACK),
            payload,
        })
    }

    /// Append the whole frame to `dst`.
    pub fn encode(&self, dst: &mut BytesMut) {
        Head {
            length: 8,
            kind: kind::PING,
            flags: if self.ack { flags::ACK } else { 0 },
            stream_id: StreamId::ZERO,
        }
        .encode(dst);
        dst.extend_from_slice(&self.payload);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::h2::error::ErrorCode;

    fn head(flags: u8, stream_id: u32, len: usize) -> Head {
        Head::for_test(kind::PING, flags, stream_id, len)
    }

    #[test]
    fn decode_ack() {
        let f = Ping::decode(&head(flags::ACK, 0, 8), Bytes::from_static(b"12345678")).unwrap();
        assert_eq!(f, Ping::pong(*b"12345678"));
    }

    #[test]
    fn errors() {
        let e = Ping::decode(&head(0, 1, 8), Bytes::from_static(b"12345678")).unwrap_err();
        assert_eq!(e.code, ErrorCode::PROTOCOL_ERROR);
        for len in [0usize, 7, 9] {
            let e = Ping::decode(&head(0, 0, len), Bytes::from(vec![0; len])).unwrap_err();
            assert_eq!(e.code, ErrorCode::FRAME_SIZE_ERROR);
        }
    }
}
