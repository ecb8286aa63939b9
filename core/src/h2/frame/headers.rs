//! HEADERS (RFC 9113 §6.2).

use bytes::{BufMut, Bytes, BytesMut};

use super::{
    flags, kind, len_u32, require_stream, strip_padding, take_pad_len, zeros, Head, PrioritySpec,
};
use crate::h2::error::ConnectionError;
use crate::h2::StreamId;

/// A HEADERS frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Headers {
    pub stream_id: StreamId,
    /// The field block fragment (HPACK), padding and priority removed.
    pub fragment: Bytes,
    pub end_stream: bool,
    /// If false, CONTINUATION frames on this stream follow.
    pub end_headers: bool,
    /// Present if the PRIORITY flag was (or is to be) set.
    pub priority: Option<PrioritySpec>,
    /// Received: the padding length, if PADDED was set. Sending: pad with
    /// this many zero bytes.
    pub pad_len: Option<u8>,
}

impl Headers {
    /// A HEADERS frame without priority or padding.
    pub fn new(stream_id: StreamId, fragment: Bytes, end_stream: bool, end_headers: bool) -> Self {
        Headers {
            stream_id,
            fragment,
            end_stream,
            end_headers,
            priority: None,
            pad_len: None,
        }
    }

    /// Decode a HEADERS payload.
    ///
    /// All errors are connection errors. In particular a self-dependency,
    /// which §5.3.1 of RFC 7540 calls a stream error, is reported as a
    /// connection PROTOCOL_ERROR (allowed by §5.4.1): the field block must
    /// not be dropped without being decoded, or HPACK state would diverge.
    pub fn decode(head: &Head, mut payload: Bytes) -> Result<Headers, ConnectionError> {
        require_stream(head, "HEADERS on stream 0")?;
        let pad_len = take_pad_len(head, &mut payload)?;
        let priority = if head.has_flag(flags::PRIORITY) {
            let spec = PrioritySpec::parse(&payload).ok_or(ConnectionError::frame_size(
                "HEADERS too short for its priority fields",
            ))?;
            let _ = payload.split_to(PrioritySpec::LEN);
            if spec.dependency == head.stream_id {
                return Err(ConnectionError::protocol("stream depends on itself"));
            }
            Some(spec)
        } else {
            None
        };
        strip_padding(&mut payload, pad_len)?;
        Ok(Headers {
            stream_id: head.stream_id,
            fragment: payload,
            end_stream: head.has_flag(flags::END_STREAM),
            end_headers: head.has_flag(flags::END_HEADERS),
            priority,
            pad_len,
        })
    }

    /// The frame header for this frame.
    pub fn head(&self) -> Head {
        let mut f = 0;
        let mut len = len_u32(self.fragment.len());
        if self.end_stream {
            f |= flags::END_STREAM;
        }
        if self.end_headers {
            f |= flags::END_HEADERS;
        }
        if let Some(p) = self.pad_len {
            f |= flags::PADDED;
            len = len.saturating_add(1 + u32::from(p));
        }
        if self.priority.is_some() {
            f |= flags::PRIORITY;
            len = len.saturating_add(PrioritySpec::LEN as u32);
        }
        Head {
            length: len,
            kind: kind::HEADERS,
            flags: f,
            stream_id: self.stream_id,
        }
    }

    /// Append the whole frame to `dst`.
    pub fn encode(&self, dst: &mut BytesMut) {
        self.head().encode(dst);
        if let Some(p) = self.pad_len {
            dst.put_u8(p);
        }
        if let Some(spec) = &self.priority {
            spec.encode(dst);
        }
        dst.extend_from_slice(&self.fragment);
        dst.extend_from_slice(zeros(self.pad_len.unwrap_or(0)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::h2::error::ErrorCode;

    fn head(flags: u8, stream_id: u32, len: usize) -> Head {
        Head::for_test(kind::HEADERS, flags, stream_id, len)
    }

    #[test]
    fn padded_with_priority() {
        // pad 2, dep 0x80000003 (exclusive, 3), weight 9, fragment "ab", 2 pad
        let p = Bytes::from_static(b"\x02\x80\x00\x00\x03\x09ab\0\0");
        let h = Headers::decode(
            &head(
                flags::PADDED | flags::PRIORITY | flags::END_HEADERS,
                5,
                p.len(),
            ),
            p,
        )
        .unwrap();
        assert_eq!(&h.fragment[..], b"ab");
        assert_eq!(h.pad_len, Some(2));
        assert!(h.end_headers && !h.end_stream);
        assert_eq!(
            h.priority,
            Some(PrioritySpec {
                dependency: StreamId::new(3),
                exclusive: true,
                weight: 9
            })
        );
    }

    #[test]
    fn stream_zero_is_protocol_error() {
        let e = Headers::decode(&head(flags::END_HEADERS, 0, 1), Bytes::from_static(b"\x82"))
            .unwrap_err();
        assert_eq!(e.code, ErrorCode::PROTOCOL_ERROR);
    }

    #[test]
    fn padding_exceeding_fragment_is_protocol_error() {
        // pad 17 with 16 bytes left: the h2spec case.
        let mut v = vec![17u8];
        v.extend_from_slice(&[0x82; 16]);
        let e = Headers::decode(&head(flags::PADDED, 1, v.len()), Bytes::from(v)).unwrap_err();
        assert_eq!(e.code, ErrorCode::PROTOCOL_ERROR);
        // The priority fields do not count as room for padding.
        let p = Bytes::from_static(b"\x01\x00\x00\x00\x00\x10");
        let e = Headers::decode(&head(flags::PADDED | flags::PRIORITY, 1, 6), p).unwrap_err();
        assert_eq!(e.code, ErrorCode::PROTOCOL_ERROR);
    }

    #[test]
    fn too_short_is_frame_size_error() {
        let e = Headers::decode(&head(flags::PADDED, 1, 0), Bytes::new()).unwrap_err();
        assert_eq!(e.code, ErrorCode::FRAME_SIZE_ERROR);
        let p = Bytes::from_static(b"\x00\x00\x00\x01");
        let e = Headers::decode(&head(flags::PRIORITY, 1, 4), p).unwrap_err();
        assert_eq!(e.code, ErrorCode::FRAME_SIZE_ERROR);
        let p = Bytes::from_static(b"\x00\x00\x00\x00\x01");
        let e = Headers::decode(&head(flags::PADDED | flags::PRIORITY, 1, 5), p).unwrap_err();
        assert_eq!(e.code, ErrorCode::FRAME_SIZE_ERROR);
    }

    #[test]
    fn self_dependency_is_protocol_error() {
        let p = Bytes::from_static(b"\x00\x00\x00\x03\x10\x82");
        let e = Headers::decode(&head(flags::PRIORITY, 3, 6), p).unwrap_err();
        assert_eq!(e.code, ErrorCode::PROTOCOL_ERROR);
    }

    #[test]
    fn unknown_flags_ignored() {
        let all_but = !(flags::PADDED | flags::PRIORITY);
        let h = Headers::decode(&head(all_but, 1, 1), Bytes::from_static(b"\x82")).unwrap();
        assert!(h.end_stream && h.end_headers);
        assert_eq!(h.priority, None);
    }
}
