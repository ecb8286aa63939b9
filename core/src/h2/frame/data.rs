//! DATA (RFC 9113 §6.1).

use bytes::{BufMut, Bytes, BytesMut};

use super::{flags, kind, len_u32, require_stream, strip_padding, take_pad_len, zeros, Head};
use crate::h2::error::ConnectionError;
use crate::h2::StreamId;

/// A DATA frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Data {
    pub stream_id: StreamId,
    /// The body bytes, padding stripped; a zero-copy slice of the payload.
    pub data: Bytes,
    pub end_stream: bool,
    /// The whole payload length including the pad length byte and padding:
    /// what flow control counts (§6.9). Set by [`Data::decode`],
    /// [`Data::new`] and [`Data::with_padding`]; not consulted by encoding.
    pub flow_len: u32,
    /// Received: the padding length, if PADDED was set. Sending: pad with
    /// this many zero bytes (and set PADDED).
    pub pad_len: Option<u8>,
}

impl Data {
    /// An unpadded DATA frame.
    pub fn new(stream_id: StreamId, data: Bytes, end_stream: bool) -> Self {
        let flow_len = len_u32(data.len());
        Data {
            stream_id,
            data,
            end_stream,
            flow_len,
            pad_len: None,
        }
    }

    /// Pad with `pad_len` zero bytes, updating `flow_len`.
    pub fn with_padding(mut self, pad_len: u8) -> Self {
        self.pad_len = Some(pad_len);
        self.flow_len = self.payload_len();
        self
    }

    /// Decode a DATA payload (the head's kind must be DATA).
    pub fn decode(head: &Head, mut payload: Bytes) -> Result<Data, ConnectionError> {
        require_stream(head, "DATA on stream 0")?;
        let flow_len = len_u32(payload.len());
        let pad_len = take_pad_len(head, &mut payload)?;
        strip_padding(&mut payload, pad_len)?;
        Ok(Data {
            stream_id: head.stream_id,
            data: payload,
            end_stream: head.has_flag(flags::END_STREAM),
            flow_len,
            pad_len,
        })
    }

    /// Length of the payload this frame encodes to (data plus, if padded,
    /// the pad length byte and the padding).
    pub fn payload_len(&self) -> u32 {
        let pad = match self.pad_len {
            Some(p) => 1 + u32::from(p),
            None => 0,
        };
        len_u32(self.data.len()).saturating_add(pad)
    }

    /// The frame header for this frame.
    pub fn head(&self) -> Head {
        let mut f = 0;
        if self.end_stream {
            f |= flags::END_STREAM;
        }
        if self.pad_len.is_some() {
            f |= flags::PADDED;
        }
        Head {
            length: self.payload_len(),
            kind: kind::DATA,
            flags: f,
            stream_id: self.stream_id,
        }
    }

    /// Write the frame header and, if padded, the pad length byte. The
    /// caller then sends `self.data` and then [`Data::padding`], which lets
    /// the body go out without being copied.
    pub fn encode_head(&self, dst: &mut BytesMut) {
        self.head().encode(dst);
        if let Some(p) = self.pad_len {
            dst.put_u8(p);
        }
    }

    /// The trailing padding (zeros) to send after the data.
    pub fn padding(&self) -> &'static [u8] {
        zeros(self.pad_len.unwrap_or(0))
    }

    /// Append the whole frame to `dst`, copying the data.
    pub fn encode(&self, dst: &mut BytesMut) {
        self.encode_head(dst);
        dst.extend_from_slice(&self.data);
        dst.extend_from_slice(self.padding());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::h2::error::ErrorCode;

    fn head(flags: u8, stream_id: u32, len: usize) -> Head {
        Head::for_test(kind::DATA, flags, stream_id, len)
    }

    #[test]
    fn plain() {
        let d = Data::decode(&head(flags::END_STREAM, 1, 3), Bytes::from_static(b"abc")).unwrap();
        assert_eq!(
            d,
            Data::new(StreamId::new(1), Bytes::from_static(b"abc"), true)
        );
        assert_eq!(d.flow_len, 3);
    }

    #[test]
    fn padded_strips_padding_and_counts_it_for_flow_control() {
        let p = Bytes::from_static(b"\x02abc\0\0");
        let d = Data::decode(&head(flags::PADDED, 3, p.len()), p).unwrap();
        assert_eq!(&d.data[..], b"abc");
        assert_eq!(d.pad_len, Some(2));
        assert_eq!(d.flow_len, 6);
        assert!(!d.end_stream);
    }

    #[test]
    fn padding_filling_the_rest_is_allowed() {
        let p = Bytes::from_static(b"\x02\0\0");
        let d = Data::decode(&head(flags::PADDED, 3, 3), p).unwrap();
        assert!(d.data.is_empty());
        assert_eq!(d.flow_len, 3);
    }

    #[test]
    fn padding_too_long_is_protocol_error() {
        let p = Bytes::from_static(b"\x03\0\0");
        let e = Data::decode(&head(flags::PADDED, 3, 3), p).unwrap_err();
        assert_eq!(e.code, ErrorCode::PROTOCOL_ERROR);
    }

    #[test]
    fn padded_empty_is_frame_size_error() {
        let e = Data::decode(&head(flags::PADDED, 3, 0), Bytes::new()).unwrap_err();
        assert_eq!(e.code, ErrorCode::FRAME_SIZE_ERROR);
    }

    #[test]
    fn stream_zero_is_protocol_error() {
        let e = Data::decode(&head(0, 0, 1), Bytes::from_static(b"x")).unwrap_err();
        assert_eq!(e.code, ErrorCode::PROTOCOL_ERROR);
    }

    #[test]
    fn zero_copy() {
        let p = Bytes::from(b"\x01hello\0".to_vec());
        let base = p.as_ptr() as usize;
        let d = Data::decode(&head(flags::PADDED, 1, p.len()), p).unwrap();
        assert_eq!(d.data.as_ptr() as usize, base + 1);
    }

    #[test]
    fn encode_head_then_chain() {
        let d = Data::new(StreamId::new(5), Bytes::from_static(b"body"), true).with_padding(3);
        assert_eq!(d.flow_len, 8);
        let mut head_buf = BytesMut::new();
        d.encode_head(&mut head_buf);
        assert_eq!(head_buf.len(), 10);
        let mut whole = BytesMut::new();
        d.encode(&mut whole);
        let mut chained = head_buf.to_vec();
        chained.extend_from_slice(&d.data);
        chained.extend_from_slice(d.padding());
        assert_eq!(&whole[..], &chained[..]);
        assert_eq!(
            &whole[..],
            b"\x00\x00\x08\x00\x09\x00\x00\x00\x05\x03body\0\0\0"
        );
    }
}
