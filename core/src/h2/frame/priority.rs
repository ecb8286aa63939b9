//! PRIORITY (RFC 9113 §6.3) and the priority fields HEADERS may carry.
//!
//! RFC 9113 deprecates this priority scheme, but the frames must still be
//! parsed and validated.

use bytes::{BufMut, Bytes, BytesMut};

use super::head::STREAM_ID_MASK;
use super::{be_u32, kind, require_stream, Head};
use crate::h2::error::{ErrorCode, ProtocolError, StreamError};
use crate::h2::StreamId;

/// Stream dependency, exclusive flag and weight (§5.3 of RFC 7540).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PrioritySpec {
    /// The stream this one depends on (31 bits).
    pub dependency: StreamId,
    pub exclusive: bool,
    /// The wire value, 0..=255, meaning a weight of 1..=256.
    pub weight: u8,
}

impl PrioritySpec {
    /// Length of the fields on the wire.
    pub const LEN: usize = 5;

    /// Parse the 5 priority bytes; `None` if `b` is shorter than that.
    pub fn parse(b: &[u8]) -> Option<PrioritySpec> {
        let weight = *b.get(4)?;
        let word = be_u32(b);
        Some(PrioritySpec {
            dependency: StreamId::new(word),
            exclusive: word & !STREAM_ID_MASK != 0,
            weight,
        })
    }

    /// Append the 5 priority bytes.
    pub fn encode(&self, dst: &mut BytesMut) {
        let e = if self.exclusive { !STREAM_ID_MASK } else { 0 };
        dst.put_u32(self.dependency.get() | e);
        dst.put_u8(self.weight);
    }
}

/// A PRIORITY frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Priority {
    pub stream_id: StreamId,
    pub spec: PrioritySpec,
}

impl Priority {
    /// Decode a PRIORITY payload.
    ///
    /// Stream 0 is a connection PROTOCOL_ERROR; a length other than 5 a
    /// stream FRAME_SIZE_ERROR; a dependency on itself a stream
    /// PROTOCOL_ERROR (§5.3.1 of RFC 7540).
    pub fn decode(head: &Head, payload: Bytes) -> Result<Priority, ProtocolError> {
        require_stream(head, "PRIORITY on stream 0")?;
        let spec = match PrioritySpec::parse(&payload) {
            Some(spec) if payload.len() == PrioritySpec::LEN => spec,
            _ => {
                return Err(StreamError::new(
                    head.stream_id,
                    ErrorCode::FRAME_SIZE_ERROR,
                    "PRIORITY length is not 5",
                )
                .into())
            }
        };
        if spec.dependency == head.stream_id {
            return Err(StreamError::new(
                head.stream_id,
                ErrorCode::PROTOCOL_ERROR,
                "stream depends on itself",
            )
            .into());
        }
        Ok(Priority {
            stream_id: head.stream_id,
            spec,
        })
    }

    /// Append the whole frame to `dst`.
    pub fn encode(&self, dst: &mut BytesMut) {
        Head {
            length: PrioritySpec::LEN as u32,
            kind: kind::PRIORITY,
            flags: 0,
            stream_id: self.stream_id,
        }
        .encode(dst);
        self.spec.encode(dst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::h2::error::ConnectionError;

    fn head(stream_id: u32, len: usize) -> Head {
        Head::for_test(kind::PRIORITY, 0, stream_id, len)
    }

    #[test]
    fn parse_exclusive_and_weight() {
        let p = Bytes::from_static(&[0x80, 0, 0, 3, 255]);
        let f = Priority::decode(&head(5, 5), p).unwrap();
        assert_eq!(
            f.spec,
            PrioritySpec {
                dependency: StreamId::new(3),
                exclusive: true,
                weight: 255
            }
        );
    }

    #[test]
    fn wrong_length_is_stream_frame_size_error() {
        for len in [0usize, 4, 6] {
            let p = Bytes::from(vec![0u8; len]);
            let e = Priority::decode(&head(7, len), p).unwrap_err();
            assert_eq!(
                e,
                ProtocolError::Stream(StreamError::new(
                    StreamId::new(7),
                    ErrorCode::FRAME_SIZE_ERROR,
                    "PRIORITY length is not 5"
                ))
            );
        }
    }

    #[test]
    fn self_dependency_is_stream_protocol_error() {
        let p = Bytes::from_static(&[0, 0, 0, 7, 16]);
        match Priority::decode(&head(7, 5), p).unwrap_err() {
            ProtocolError::Stream(e) => {
                assert_eq!(
                    (e.stream_id, e.code),
                    (StreamId::new(7), ErrorCode::PROTOCOL_ERROR)
                )
            }
            other => panic!("{other:?}"),
        }
        // The exclusive bit does not hide a self-dependency.
        let p = Bytes::from_static(&[0x80, 0, 0, 7, 16]);
        assert!(Priority::decode(&head(7, 5), p).is_err());
    }

    #[test]
    fn stream_zero_is_connection_protocol_error() {
        let p = Bytes::from_static(&[0, 0, 0, 1, 16]);
        assert_eq!(
            Priority::decode(&head(0, 5), p).unwrap_err(),
            ProtocolError::Connection(ConnectionError::protocol("PRIORITY on stream 0"))
        );
    }
}
