//! Pulling whole frames out of a receive buffer.

use bytes::BytesMut;

use super::{decode, Frame, Head, DEFAULT_MAX_FRAME_SIZE, HEADER_LEN, MAX_MAX_FRAME_SIZE};
use crate::h2::error::{ConnectionError, ProtocolError};

/// Incremental frame reader. Holds only the frame size limit; the bytes stay
/// in the caller's buffer until a whole frame is there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FrameReader {
    max_frame_size: u32,
}

impl Default for FrameReader {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_FRAME_SIZE)
    }
}

impl FrameReader {
    /// A reader accepting payloads of up to `max_frame_size` bytes, clamped
    /// to the range SETTINGS_MAX_FRAME_SIZE allows (16384..=2^24-1).
    pub fn new(max_frame_size: u32) -> Self {
        FrameReader {
            max_frame_size: clamp(max_frame_size),
        }
    }

    /// Change the limit: our SETTINGS_MAX_FRAME_SIZE, once the peer has
    /// acknowledged it. Clamped like [`FrameReader::new`].
    pub fn set_max_frame_size(&mut self, n: u32) {
        self.max_frame_size = clamp(n);
    }

    /// The current limit.
    pub fn max_frame_size(&self) -> u32 {
        self.max_frame_size
    }

    /// Take the next frame off the front of `buf`.
    ///
    /// `Ok(None)`: more bytes are needed (nothing is consumed). A header
    /// announcing more than the limit fails at once with a connection
    /// FRAME_SIZE_ERROR, without waiting for the payload (§4.2). Otherwise,
    /// once the whole frame is buffered, its bytes are split off `buf` and
    /// decoded, the payload frozen without copying. The frame's bytes are
    /// consumed even when decoding fails, so after a stream error the
    /// caller can go on reading.
    pub fn read(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, ProtocolError> {
        let Some(head) = buf.first_chunk::<HEADER_LEN>() else {
            return Ok(None);
        };
        let head = Head::parse(head);
        if head.length > self.max_frame_size {
            return Err(
                ConnectionError::frame_size("frame larger than SETTINGS_MAX_FRAME_SIZE").into(),
            );
        }
        // At most 2^24-1 + 9: no overflow on any platform Rust supports
        // with a usize of 32 bits or more.
        let len = head.length as usize;
        let total = HEADER_LEN + len;
        if buf.len() < total {
            buf.reserve(total - buf.len());
            return Ok(None);
        }
        let _ = buf.split_to(HEADER_LEN);
        let payload = buf.split_to(len).freeze();
        decode(head, payload).map(Some)
    }
}

fn clamp(n: u32) -> u32 {
    n.clamp(DEFAULT_MAX_FRAME_SIZE, MAX_MAX_FRAME_SIZE)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::h2::error::ErrorCode;
    use crate::h2::frame::{Data, Ping};
    use crate::h2::StreamId;
    use bytes::Bytes;

    #[test]
    fn needs_more_then_yields() {
        let mut wire = BytesMut::new();
        Ping::new(*b"abcdefgh").encode(&mut wire);
        let all = wire.clone();
        let mut r = FrameReader::default();
        let mut buf = BytesMut::new();
        for (i, b) in all.iter().enumerate() {
            assert_eq!(r.read(&mut buf).unwrap(), None, "at {i}");
            assert_eq!(buf.len(), i, "nothing consumed");
            buf.extend_from_slice(&[*b]);
        }
        assert_eq!(
            r.read(&mut buf).unwrap(),
            Some(Ping::new(*b"abcdefgh").into())
        );
        assert!(buf.is_empty());
        assert_eq!(r.read(&mut buf).unwrap(), None);
    }

    #[test]
    fn oversized_head_fails_after_nine_bytes() {
        let mut r = FrameReader::default();
        // 16_385 bytes announced, DATA on stream 1: only the head is there.
        let mut buf = BytesMut::from(&b"\x00\x40\x01\x00\x00\x00\x00\x00\x01"[..]);
        let e = r.read(&mut buf).unwrap_err();
        assert_eq!(
            e,
            ProtocolError::Connection(ConnectionError::frame_size(
                "frame larger than SETTINGS_MAX_FRAME_SIZE"
            ))
        );
        // The largest length the field can hold, on an unknown frame type.
        let mut buf = BytesMut::from(&b"\xff\xff\xff\xee\x00\x00\x00\x00\x00"[..]);
        match r.read(&mut buf).unwrap_err() {
            ProtocolError::Connection(e) => assert_eq!(e.code, ErrorCode::FRAME_SIZE_ERROR),
            e => panic!("{e:?}"),
        }
        // Eight bytes are not yet a head.
        let mut buf = BytesMut::from(&b"\xff\xff\xff\xee\x00\x00\x00\x00"[..]);
        assert_eq!(r.read(&mut buf).unwrap(), None);
    }

    #[test]
    fn limit_follows_settings() {
        let mut r = FrameReader::new(0);
        assert_eq!(r.max_frame_size(), DEFAULT_MAX_FRAME_SIZE);
        r.set_max_frame_size(u32::MAX);
        assert_eq!(r.max_frame_size(), MAX_MAX_FRAME_SIZE);
        r.set_max_frame_size(20_000);
        let body = Bytes::from(vec![7u8; 20_000]);
        let mut buf = BytesMut::new();
        Data::new(StreamId::new(1), body.clone(), false).encode(&mut buf);
        let got = r.read(&mut buf).unwrap().unwrap();
        assert_eq!(got, Data::new(StreamId::new(1), body, false).into());
        r.set_max_frame_size(DEFAULT_MAX_FRAME_SIZE);
        Data::new(StreamId::new(1), Bytes::from(vec![7u8; 16_385]), false).encode(&mut buf);
        assert!(r.read(&mut buf).is_err());
    }

    #[test]
    fn exactly_max_is_accepted() {
        let mut r = FrameReader::default();
        let mut buf = BytesMut::new();
        Data::new(StreamId::new(1), Bytes::from(vec![0u8; 16_384]), true).encode(&mut buf);
        assert!(matches!(r.read(&mut buf), Ok(Some(_))));
    }

    #[test]
    fn data_payload_is_zero_copy() {
        let mut r = FrameReader::default();
        let mut buf = BytesMut::new();
        Data::new(StreamId::new(1), Bytes::from_static(b"hello"), false).encode(&mut buf);
        let base = buf.as_ptr() as usize;
        let Some(Frame::Data(d)) = r.read(&mut buf).unwrap() else {
            panic!()
        };
        assert_eq!(d.data.as_ptr() as usize, base + HEADER_LEN);
    }

    #[test]
    fn bytes_consumed_on_stream_error() {
        let mut r = FrameReader::default();
        let mut buf = BytesMut::new();
        // WINDOW_UPDATE increment 0 on stream 1, then a PING.
        buf.extend_from_slice(b"\x00\x00\x04\x08\x00\x00\x00\x00\x01\x00\x00\x00\x00");
        Ping::new([1; 8]).encode(&mut buf);
        assert!(matches!(r.read(&mut buf), Err(ProtocolError::Stream(_))));
        assert_eq!(r.read(&mut buf).unwrap(), Some(Ping::new([1; 8]).into()));
    }
}
