//! Length-prefixed message framing (PROTOCOL-HTTP2, "Length-Prefixed-Message").
//!
//! Each message on a gRPC stream is a 1-byte compressed flag (0 or 1), a
//! 4-byte big-endian length, then that many bytes of payload. DATA frame
//! boundaries bear no relation to message boundaries, so [`Deframer`]
//! accepts payloads split anywhere and hands back whole messages.

use std::collections::VecDeque;
use std::fmt;

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::status::Status;

/// Bytes before each message: the compressed flag and the length.
pub const PREFIX_LEN: usize = 5;

/// Our default receive limit. gRPC libraries mostly default to 4 MiB; we
/// match the 16 MiB that kubelet's CRI client allows itself.
pub const DEFAULT_MAX_RECV_MESSAGE_SIZE: usize = 16 * 1024 * 1024;

/// One complete message off the wire. `payload` is still compressed when
/// `compressed` is set; see [`super::compression::decompress`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    pub compressed: bool,
    pub payload: Bytes,
}

/// What can be wrong with the received message stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeframeError {
    /// A prefix announced a message longer than the receive limit.
    TooLarge { len: usize, max: usize },
    /// The compressed-flag byte was neither 0 nor 1.
    InvalidFlag(u8),
    /// The stream ended with part of a message still buffered; `buffered`
    /// counts the bytes received of it (prefix included) and `expected` the
    /// full size, once the prefix was complete.
    Truncated {
        buffered: usize,
        expected: Option<usize>,
    },
}

impl DeframeError {
    /// The status a call fails with because of this error.
    pub fn to_status(&self) -> Status {
        match *self {
            DeframeError::TooLarge { len, max } => Status::resource_exhausted(format!(
                "received message of {len} bytes exceeds the limit of {max} bytes"
            )),
            DeframeError::InvalidFlag(flag) => Status::internal(format!(
                "invalid compressed flag {flag} in message prefix (must be 0 or 1)"
            )),
            DeframeError::Truncated {
                buffered,
                expected: Some(expected),
            } => Status::internal(format!(
                "stream ended inside a message: received {buffered} of {expected} bytes"
            )),
            DeframeError::Truncated {
                buffered,
                expected: None,
            } => Status::internal(format!(
                "stream ended inside a message prefix: received {buffered} of {PREFIX_LEN} bytes"
            )),
        }
    }
}

impl fmt::Display for DeframeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_status().message)
    }
}

impl std::error::Error for DeframeError {}

/// A parsed message prefix.
#[derive(Clone, Copy, Debug)]
struct Header {
    compressed: bool,
    len: usize,
}

/// Splits a stream of DATA payloads into messages.
///
/// Call [`Deframer::push`] with each DATA payload, then
/// [`Deframer::next_message`] until it returns `Ok(None)`. When the stream
/// ends, [`Deframer::finish`] (or `is_empty`) tells whether a partial
/// message was left behind.
///
/// A message that lies inside one pushed chunk comes back as a slice of
/// that chunk, without copying. A message spanning chunks is gathered into
/// a buffer sized from its prefix; the chunks it came from are released as
/// soon as they are copied, so many tiny DATA frames cannot pin memory.
/// A prefix announcing more than the limit fails as soon as it is seen,
/// before any of the payload is buffered. After an error the deframer stays
/// failed: it discards further input and keeps returning the error.
#[derive(Debug)]
pub struct Deframer {
    max_message_size: usize,
    /// Pushed chunks not yet examined, each non-empty.
    queue: Chunks,
    /// Total bytes in `queue`.
    queued: usize,
    /// A prefix being gathered across chunks.
    prefix: [u8; PREFIX_LEN],
    prefix_len: usize,
    /// The current message's prefix, once complete.
    header: Option<Header>,
    /// The payload so far of a message that spans chunks.
    partial: BytesMut,
    failed: Option<DeframeError>,
}

/// A FIFO of chunks that holds the first one inline: a unary call's
/// message usually arrives in one DATA frame, and then queueing it costs no
/// allocation. Invariant: `head` is empty only when `rest` is.
#[derive(Debug, Default)]
struct Chunks {
    head: Option<Bytes>,
    rest: VecDeque<Bytes>,
}

impl Chunks {
    fn push_back(&mut self, b: Bytes) {
        if self.head.is_none() {
            self.head = Some(b);
        } else {
            self.rest.push_back(b);
        }
    }

    fn front_mut(&mut self) -> Option<&mut Bytes> {
        self.head.as_mut()
    }

    fn pop_front(&mut self) {
        self.head = self.rest.pop_front();
    }
}

impl Deframer {
    pub fn new(max_message_size: usize) -> Self {
        Deframer {
            max_message_size,
            queue: Chunks::default(),
            queued: 0,
            prefix: [0; PREFIX_LEN],
            prefix_len: 0,
            header: None,
            partial: BytesMut::new(),
            failed: None,
        }
    }

    pub fn max_message_size(&self) -> usize {
        self.max_message_size
    }

    /// Queues one DATA payload. Cheap: the bytes are examined by
    /// `next_message`, except that a message prefix at the head of the
    /// stream is checked at once so an oversized message is refused before
    /// its payload is held.
    pub fn push(&mut self, data: Bytes) {
        if self.failed.is_some() || data.is_empty() {
            return;
        }
        self.queued += data.len();
        self.queue.push_back(data);
        if self.header.is_none() {
            if let Err(e) = self.read_prefix() {
                self.fail(e);
            }
        }
    }

    /// The next complete message, `Ok(None)` if more input is needed.
    pub fn next_message(&mut self) -> Result<Option<Message>, DeframeError> {
        if let Some(e) = self.failed {
            return Err(e);
        }
        let header = match self.header {
            Some(h) => h,
            None => match self.read_prefix() {
                Ok(Some(h)) => h,
                Ok(None) => return Ok(None),
                Err(e) => {
                    self.fail(e);
                    return Err(e);
                }
            },
        };

        // Whole payload inside the front chunk: hand out a slice of it.
        if self.partial.is_empty() {
            if let Some(front) = self.queue.front_mut() {
                if front.len() >= header.len {
                    let payload = front.split_to(header.len);
                    if front.is_empty() {
                        self.queue.pop_front();
                    }
                    self.queued -= header.len;
                    return Ok(Some(self.complete(header, payload)));
                }
            } else if header.len == 0 {
                return Ok(Some(self.complete(header, Bytes::new())));
            }
            // Spans chunks: size the buffer once, from the prefix (bounded
            // by the limit checked in `read_prefix`).
            self.partial.reserve(header.len);
        }

        // Gather into `partial`, releasing each chunk as it is copied.
        while self.partial.len() < header.len {
            let Some(front) = self.queue.front_mut() else {
                return Ok(None);
            };
            let take = (header.len - self.partial.len()).min(front.len());
            self.partial
                .extend_from_slice(front.get(..take).unwrap_or_default());
            front.advance(take);
            if front.is_empty() {
                self.queue.pop_front();
            }
            self.queued -= take;
        }
        let payload = self.partial.split().freeze();
        Ok(Some(self.complete(header, payload)))
    }

    /// Bytes held that are not yet part of a returned message, including a
    /// partially received prefix or payload.
    pub fn buffered(&self) -> usize {
        self.queued + self.prefix_len + self.partial.len()
    }

    /// True when no byte of an unfinished message is held. At END_STREAM,
    /// after draining `next_message`, anything else is a truncated message.
    pub fn is_empty(&self) -> bool {
        self.buffered() == 0
    }

    /// For END_STREAM: drains nothing, but reports a truncated message if
    /// one is held (call after `next_message` returned `Ok(None)`).
    pub fn finish(&self) -> Result<(), DeframeError> {
        if let Some(e) = self.failed {
            return Err(e);
        }
        if self.is_empty() {
            return Ok(());
        }
        Err(DeframeError::Truncated {
            buffered: self.buffered(),
            expected: self.header.map(|h| PREFIX_LEN + h.len),
        })
    }

    fn complete(&mut self, header: Header, payload: Bytes) -> Message {
        self.header = None;
        self.prefix_len = 0;
        Message {
            compressed: header.compressed,
            payload,
        }
    }

    fn fail(&mut self, e: DeframeError) {
        self.failed = Some(e);
        self.header = None;
        self.prefix_len = 0;
        self.queue = Chunks::default();
        self.queued = 0;
        self.partial = BytesMut::new();
    }

    /// Moves bytes from the queue into `prefix` until it is complete, then
    /// validates it and records `header`.
    fn read_prefix(&mut self) -> Result<Option<Header>, DeframeError> {
        while self.prefix_len < PREFIX_LEN {
            let Some(front) = self.queue.front_mut() else {
                return Ok(None);
            };
            let take = (PREFIX_LEN - self.prefix_len).min(front.len());
            let dst = self.prefix.get_mut(self.prefix_len..self.prefix_len + take);
            if let (Some(dst), Some(src)) = (dst, front.get(..take)) {
                dst.copy_from_slice(src);
            }
            front.advance(take);
            if front.is_empty() {
                self.queue.pop_front();
            }
            self.queued -= take;
            self.prefix_len += take;
        }
        let compressed = match self.prefix[0] {
            0 => false,
            1 => true,
            flag => return Err(DeframeError::InvalidFlag(flag)),
        };
        let raw_len = u32::from_be_bytes([
            self.prefix[1],
            self.prefix[2],
            self.prefix[3],
            self.prefix[4],
        ]);
        // A u32 always fits in usize on the targets we build for; saturate
        // rather than truncate if it ever did not.
        let len = usize::try_from(raw_len).unwrap_or(usize::MAX);
        if len > self.max_message_size {
            return Err(DeframeError::TooLarge {
                len,
                max: self.max_message_size,
            });
        }
        let header = Header { compressed, len };
        self.header = Some(header);
        Ok(Some(header))
    }
}

impl Default for Deframer {
    fn default() -> Self {
        Deframer::new(DEFAULT_MAX_RECV_MESSAGE_SIZE)
    }
}

/// An outgoing message cannot be framed: its length does not fit the
/// 32-bit length field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EncodeError {
    pub len: usize,
}

impl EncodeError {
    pub fn to_status(&self) -> Status {
        Status::resource_exhausted(format!(
            "message of {} bytes is too large to send (limit {} bytes)",
            self.len,
            u32::MAX
        ))
    }
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_status().message)
    }
}

impl std::error::Error for EncodeError {}

/// Appends a message prefix for a payload of `len` bytes.
pub fn encode_prefix(compressed: bool, len: usize, dst: &mut BytesMut) -> Result<(), EncodeError> {
    let len32 = u32::try_from(len).map_err(|_| EncodeError { len })?;
    dst.reserve(PREFIX_LEN);
    dst.put_u8(u8::from(compressed));
    dst.put_u32(len32);
    Ok(())
}

/// Appends a prefixed, already-encoded (and possibly compressed) payload.
pub fn encode_payload(
    compressed: bool,
    payload: &[u8],
    dst: &mut BytesMut,
) -> Result<(), EncodeError> {
    dst.reserve(PREFIX_LEN + payload.len());
    encode_prefix(compressed, payload.len(), dst)?;
    dst.extend_from_slice(payload);
    Ok(())
}

/// Appends `msg` protobuf-encoded behind an uncompressed prefix, encoding
/// in place: at most one allocation, none if `dst` already has room.
pub fn encode_message<M: prost::Message>(msg: &M, dst: &mut BytesMut) -> Result<(), EncodeError> {
    // One pass to size the message, one to write it: `encode` would size
    // it again to check room that the reserve below already made (and a
    // `BytesMut` grows anyway).
    let len = msg.encoded_len();
    encode_prefix(false, len, dst)?;
    dst.reserve(len);
    msg.encode_raw(dst);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn frame(compressed: bool, payload: &[u8]) -> Vec<u8> {
        let mut b = BytesMut::new();
        encode_payload(compressed, payload, &mut b).unwrap();
        b.to_vec()
    }

    fn drain(d: &mut Deframer) -> Result<Vec<Message>, DeframeError> {
        let mut out = Vec::new();
        while let Some(m) = d.next_message()? {
            out.push(m);
        }
        Ok(out)
    }

    fn three_messages() -> (Vec<u8>, Vec<Message>) {
        let msgs = vec![
            Message {
                compressed: false,
                payload: Bytes::from_static(b"hello"),
            },
            Message {
                compressed: true,
                payload: Bytes::new(),
            },
            Message {
                compressed: false,
                payload: Bytes::from((0..=255u8).collect::<Vec<_>>()),
            },
        ];
        let mut wire = Vec::new();
        for m in &msgs {
            wire.extend(frame(m.compressed, &m.payload));
        }
        (wire, msgs)
    }

    #[test]
    fn prefix_layout() {
        let mut b = BytesMut::new();
        encode_prefix(true, 0x0102_0304, &mut b).unwrap();
        assert_eq!(&b[..], &[1, 1, 2, 3, 4]);
        #[cfg(target_pointer_width = "64")]
        assert_eq!(
            encode_prefix(false, u32::MAX as usize + 1, &mut b),
            Err(EncodeError {
                len: u32::MAX as usize + 1
            })
        );
        assert_eq!(b.len(), 5);
    }

    #[test]
    fn whole_stream_in_one_chunk() {
        let (wire, msgs) = three_messages();
        let mut d = Deframer::new(1024);
        d.push(Bytes::from(wire));
        assert_eq!(drain(&mut d).unwrap(), msgs);
        assert!(d.is_empty());
        assert_eq!(d.finish(), Ok(()));
    }

    #[test]
    fn every_two_way_and_three_way_split() {
        let (wire, msgs) = three_messages();
        for i in 0..=wire.len() {
            for j in i..=wire.len() {
                let mut d = Deframer::new(1024);
                let mut got = Vec::new();
                for part in [&wire[..i], &wire[i..j], &wire[j..]] {
                    d.push(Bytes::copy_from_slice(part));
                    got.extend(drain(&mut d).unwrap());
                }
                assert_eq!(got, msgs, "split at {i},{j}");
                assert!(d.is_empty());
            }
        }
    }

    #[test]
    fn pushes_without_draining_in_between() {
        let (wire, msgs) = three_messages();
        let mut d = Deframer::new(1024);
        for b in &wire {
            d.push(Bytes::copy_from_slice(&[*b]));
        }
        assert_eq!(d.buffered(), wire.len());
        assert_eq!(drain(&mut d).unwrap(), msgs);
        assert_eq!(d.buffered(), 0);
    }

    #[test]
    fn zero_copy_when_not_spanning() {
        let (wire, _) = three_messages();
        let chunk = Bytes::from(wire);
        let range = chunk.as_ptr() as usize..chunk.as_ptr() as usize + chunk.len();
        let mut d = Deframer::new(1024);
        d.push(chunk.clone());
        for m in drain(&mut d).unwrap() {
            if !m.payload.is_empty() {
                assert!(range.contains(&(m.payload.as_ptr() as usize)));
            }
        }

        // Prefix split from the payload: the payload is still a slice.
        let msg = frame(false, b"payload bytes");
        let (head, body) = msg.split_at(3);
        let body = Bytes::copy_from_slice(body);
        let body_range = body.as_ptr() as usize..body.as_ptr() as usize + body.len();
        let mut d = Deframer::new(1024);
        d.push(Bytes::copy_from_slice(head));
        assert_eq!(d.next_message(), Ok(None));
        d.push(body);
        let m = d.next_message().unwrap().unwrap();
        assert_eq!(&m.payload[..], b"payload bytes");
        assert!(body_range.contains(&(m.payload.as_ptr() as usize)));
    }

    #[test]
    fn too_large_prefix_fails_before_buffering() {
        let mut d = Deframer::new(10);
        d.push(Bytes::from(frame(false, &[0; 10])));
        assert_eq!(drain(&mut d).unwrap().len(), 1);

        let mut d = Deframer::new(10);
        // Only the prefix has arrived; it fails at once, in push.
        d.push(Bytes::from_static(&[0, 0, 0, 0, 11]));
        assert_eq!(d.buffered(), 0);
        d.push(Bytes::from(vec![0; 1000]));
        assert_eq!(d.buffered(), 0, "input after failure is discarded");
        let err = d.next_message().unwrap_err();
        assert_eq!(err, DeframeError::TooLarge { len: 11, max: 10 });
        assert_eq!(err.to_status().code, crate::grpc::Code::ResourceExhausted);
        assert_eq!(d.next_message(), Err(err), "failure is sticky");

        let mut d = Deframer::new(DEFAULT_MAX_RECV_MESSAGE_SIZE);
        d.push(Bytes::from_static(&[0, 0xff, 0xff]));
        d.push(Bytes::from_static(&[0xff, 0xff]));
        assert_eq!(
            d.next_message(),
            Err(DeframeError::TooLarge {
                len: u32::MAX as usize,
                max: DEFAULT_MAX_RECV_MESSAGE_SIZE
            })
        );
    }

    #[test]
    fn later_oversized_message_fails_in_next_message() {
        let mut wire = frame(false, b"ok");
        wire.extend([0, 0, 0, 1, 0]);
        let mut d = Deframer::new(100);
        d.push(Bytes::from(wire));
        assert_eq!(&d.next_message().unwrap().unwrap().payload[..], b"ok");
        assert_eq!(
            d.next_message(),
            Err(DeframeError::TooLarge { len: 256, max: 100 })
        );
        assert_eq!(d.buffered(), 0);
    }

    #[test]
    fn spanning_message_is_reserved_once_from_prefix() {
        let payload = vec![7u8; 300];
        let wire = frame(false, &payload);
        let mut d = Deframer::new(1024);
        d.push(Bytes::copy_from_slice(&wire[..10]));
        assert_eq!(d.next_message(), Ok(None));
        assert!(d.partial.capacity() >= 300);
        for c in wire[10..].chunks(7) {
            d.push(Bytes::copy_from_slice(c));
        }
        assert_eq!(
            &d.next_message().unwrap().unwrap().payload[..],
            &payload[..]
        );
        assert!(d.is_empty());
    }

    #[test]
    fn invalid_flag() {
        let mut d = Deframer::new(100);
        d.push(Bytes::from_static(&[2, 0, 0, 0, 0]));
        let err = d.next_message().unwrap_err();
        assert_eq!(err, DeframeError::InvalidFlag(2));
        assert_eq!(err.to_status().code, crate::grpc::Code::Internal);
        assert!(err.to_string().contains("compressed flag"));
    }

    #[test]
    fn truncated_at_end_of_stream() {
        let mut d = Deframer::new(100);
        d.push(Bytes::from_static(&[0, 0, 0]));
        assert_eq!(d.next_message(), Ok(None));
        assert!(!d.is_empty());
        assert_eq!(
            d.finish(),
            Err(DeframeError::Truncated {
                buffered: 3,
                expected: None
            })
        );

        let mut d = Deframer::new(100);
        d.push(Bytes::from_static(&[0, 0, 0, 0, 4, b'a', b'b']));
        assert_eq!(d.next_message(), Ok(None));
        let err = d.finish().unwrap_err();
        assert_eq!(
            err,
            DeframeError::Truncated {
                buffered: 7,
                expected: Some(9)
            }
        );
        assert_eq!(err.to_status().code, crate::grpc::Code::Internal);
        assert!(err.to_string().contains("7 of 9"));
    }

    #[test]
    fn encode_message_prost() {
        // prost implements `Message` for `String` (as a StringValue), which
        // is enough to exercise the encoder.
        let msg = "a string value".to_owned();
        let mut dst = BytesMut::new();
        encode_message(&msg, &mut dst).unwrap();
        assert_eq!(dst.len(), PREFIX_LEN + prost::Message::encoded_len(&msg));
        let mut d = Deframer::default();
        d.push(dst.freeze());
        let m = d.next_message().unwrap().unwrap();
        assert!(!m.compressed);
        let back: String = prost::Message::decode(m.payload).unwrap();
        assert_eq!(back, msg);

        // Encoding in place: no reallocation when dst has room.
        let mut dst = BytesMut::with_capacity(256);
        let ptr = dst.as_ptr();
        encode_message(&msg, &mut dst).unwrap();
        assert_eq!(dst.as_ptr(), ptr);
    }

    proptest! {
        #[test]
        fn any_split_yields_same_messages(
            cuts in proptest::collection::vec(0usize..300, 0..8),
        ) {
            let (wire, msgs) = three_messages();
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % (wire.len() + 1)).collect();
            cuts.sort_unstable();
            let mut d = Deframer::new(1024);
            let mut got = Vec::new();
            let mut last = 0;
            for c in cuts.into_iter().chain([wire.len()]) {
                d.push(Bytes::copy_from_slice(&wire[last..c]));
                got.extend(drain(&mut d).unwrap());
                last = c;
            }
            prop_assert_eq!(got, msgs);
            prop_assert!(d.finish().is_ok());
        }

        #[test]
        fn random_bytes_never_panic(
            chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 0..10),
            max in 0usize..64,
        ) {
            let mut d = Deframer::new(max);
            let mut total_out = 0;
            let total_in: usize = chunks.iter().map(Vec::len).sum();
            for c in chunks {
                d.push(Bytes::from(c));
                loop {
                    match d.next_message() {
                        Ok(Some(m)) => {
                            prop_assert!(m.payload.len() <= max);
                            total_out += PREFIX_LEN + m.payload.len();
                        }
                        Ok(None) => break,
                        Err(e) => {
                            let _ = e.to_status();
                            break;
                        }
                    }
                }
                prop_assert!(d.buffered() <= total_in);
            }
            if d.finish().is_ok() {
                prop_assert_eq!(total_out, total_in);
            }
        }
    }
}
