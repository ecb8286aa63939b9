//! WINDOW_UPDATE (RFC 9113 §6.9).

use bytes::{BufMut, Bytes, BytesMut};

use super::head::STREAM_ID_MASK;
use super::{be_u32, kind, Head};
use crate::h2::error::{ConnectionError, ErrorCode, ProtocolError, StreamError};
use crate::h2::StreamId;

/// A WINDOW_UPDATE frame; stream 0 updates the connection window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WindowUpdate {
    pub stream_id: StreamId,
    /// 1..=2^31-1 (reserved bit masked off).
    pub increment: u32,
}

impl WindowUpdate {
    pub fn new(stream_id: StreamId, increment: u32) -> Self {
        WindowUpdate {
            stream_id,
            increment,
        }
    }

    /// Decode a WINDOW_UPDATE payload: length not 4 → connection
    /// FRAME_SIZE_ERROR; increment 0 → PROTOCOL_ERROR, a stream error on a
    /// stream and a connection error on stream 0.
    pub fn decode(head: &Head, payload: Bytes) -> Result<WindowUpdate, ProtocolError> {
        if payload.len() != 4 {
            return Err(ConnectionError::frame_size("WINDOW_UPDATE length is not 4").into());
        }
        let increment = be_u32(&payload) & STREAM_ID_MASK;
        if increment == 0 {
            const REASON: &str = "WINDOW_UPDATE increment of 0";
            return Err(if head.stream_id == 0 {
                ConnectionError::protocol(REASON).into()
            } else {
                StreamError::new(head.stream_id, ErrorCode::PROTOCOL_ERROR, REASON).into()
            });
        }
        Ok(WindowUpdate {
            stream_id: head.stream_id,
            increment,
        })
    }

    /// Append the whole frame to `dst`.
    pub fn encode(&self, dst: &mut BytesMut) {
        Head {
            length: 4,
            kind: kind::WINDOW_UPDATE,
            flags: 0,
            stream_id: self.stream_id,
        }
        .encode(dst);
        dst.put_u32(self.increment & STREAM_ID_MASK);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(stream_id: u32, len: usize) -> Head {
        Head::for_test(kind::WINDOW_UPDATE, 0, stream_id, len)
    }

    #[test]
    fn reserved_bit_ignored() {
        let f = WindowUpdate::decode(&head(0, 4), Bytes::from_static(&[0xff; 4])).unwrap();
        assert_eq!(
            f,
            WindowUpdate::new(StreamId::new(0), super::super::MAX_WINDOW_SIZE)
        );
    }

    #[test]
    fn zero_increment() {
        let zero = Bytes::from_static(&[0x80, 0, 0, 0]);
        match WindowUpdate::decode(&head(0, 4), zero.clone()).unwrap_err() {
            ProtocolError::Connection(e) => assert_eq!(e.code, ErrorCode::PROTOCOL_ERROR),
            e => panic!("{e:?}"),
        }
        match WindowUpdate::decode(&head(9, 4), zero).unwrap_err() {
            ProtocolError::Stream(e) => {
                assert_eq!(
                    (e.stream_id, e.code),
                    (StreamId::new(9), ErrorCode::PROTOCOL_ERROR)
                )
            }
            e => panic!("{e:?}"),
        }
    }

    #[test]
    fn bad_length_is_connection_frame_size_error() {
        for (sid, len) in [(0, 3usize), (1, 5), (1, 0)] {
            match WindowUpdate::decode(&head(sid, len), Bytes::from(vec![1; len])).unwrap_err() {
                ProtocolError::Connection(e) => assert_eq!(e.code, ErrorCode::FRAME_SIZE_ERROR),
                e => panic!("{e:?}"),
            }
        }
    }
}
