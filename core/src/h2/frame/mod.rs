//! HTTP/2 frames: parsing and encoding (RFC 9113 §4, §6).
//!
//! [`Head`] is the 9-byte frame header; [`decode`] turns a header plus its
//! complete payload into a validated [`Frame`]; [`FrameReader`] pulls whole
//! frames out of a receive buffer, enforcing our SETTINGS_MAX_FRAME_SIZE
//! before the payload is buffered. Every frame type also encodes itself.
//!
//! Decoding is zero-copy: DATA payloads and field block fragments are slices
//! of the payload [`Bytes`]. Nothing here panics on any input.
//!
//! The checks done here are the ones that need only the frame itself (§6):
//! stream identifier zero or not, lengths, padding, setting values. Checks
//! that need connection or stream state (stream states, CONTINUATION
//! sequencing, flow-control windows) belong to the connection.
//!
//! Every error on a frame that carries a field block (HEADERS, PUSH_PROMISE,
//! CONTINUATION) is a connection error: such a frame must reach the HPACK
//! decoder for the connection to stay usable, so it is never discarded alone.

mod continuation;
mod data;
mod go_away;
mod head;
mod headers;
mod ping;
mod priority;
mod push_promise;
mod reader;
mod rst_stream;
mod settings;
mod unknown;
mod window_update;

pub use continuation::Continuation;
pub use data::Data;
pub use go_away::GoAway;
pub use head::Head;
pub use headers::Headers;
pub use ping::Ping;
pub use priority::{Priority, PrioritySpec};
pub use push_promise::PushPromise;
pub use reader::FrameReader;
pub use rst_stream::RstStream;
pub use settings::Settings;
pub use unknown::Unknown;
pub use window_update::WindowUpdate;

use bytes::{Bytes, BytesMut};

use super::error::{ConnectionError, ProtocolError};
use super::StreamId;

/// Length of the frame header.
pub const HEADER_LEN: usize = 9;
/// SETTINGS_MAX_FRAME_SIZE until the peer says otherwise (§6.5.2).
pub const DEFAULT_MAX_FRAME_SIZE: u32 = 16_384;
/// The largest SETTINGS_MAX_FRAME_SIZE allowed (§6.5.2).
pub const MAX_MAX_FRAME_SIZE: u32 = (1 << 24) - 1;
/// The largest flow-control window (§6.9.1).
pub const MAX_WINDOW_SIZE: u32 = (1 << 31) - 1;
/// The client connection preface (§3.4).
pub const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Frame type codes (§6, §11.2).
pub mod kind {
    pub const DATA: u8 = 0x0;
    pub const HEADERS: u8 = 0x1;
    pub const PRIORITY: u8 = 0x2;
    pub const RST_STREAM: u8 = 0x3;
    pub const SETTINGS: u8 = 0x4;
    pub const PUSH_PROMISE: u8 = 0x5;
    pub const PING: u8 = 0x6;
    pub const GOAWAY: u8 = 0x7;
    pub const WINDOW_UPDATE: u8 = 0x8;
    pub const CONTINUATION: u8 = 0x9;
}

/// Frame flags (§6). Their meaning depends on the frame type; flags a frame
/// type does not define are ignored on receipt and never sent.
pub mod flags {
    /// DATA, HEADERS.
    pub const END_STREAM: u8 = 0x1;
    /// SETTINGS, PING.
    pub const ACK: u8 = 0x1;
    /// HEADERS, PUSH_PROMISE, CONTINUATION.
    pub const END_HEADERS: u8 = 0x4;
    /// DATA, HEADERS, PUSH_PROMISE.
    pub const PADDED: u8 = 0x8;
    /// HEADERS.
    pub const PRIORITY: u8 = 0x20;
}

/// A decoded frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    Data(Data),
    Headers(Headers),
    Priority(Priority),
    RstStream(RstStream),
    Settings(Settings),
    PushPromise(PushPromise),
    Ping(Ping),
    GoAway(GoAway),
    WindowUpdate(WindowUpdate),
    Continuation(Continuation),
    /// A frame of a type this implementation does not know; to be ignored
    /// (§5.5) except that it may not interrupt a field block.
    Unknown(Unknown),
}

impl Frame {
    /// Append the whole frame (header and payload) to `dst`.
    pub fn encode(&self, dst: &mut BytesMut) {
        match self {
            Frame::Data(f) => f.encode(dst),
            Frame::Headers(f) => f.encode(dst),
            Frame::Priority(f) => f.encode(dst),
            Frame::RstStream(f) => f.encode(dst),
            Frame::Settings(f) => f.encode(dst),
            Frame::PushPromise(f) => f.encode(dst),
            Frame::Ping(f) => f.encode(dst),
            Frame::GoAway(f) => f.encode(dst),
            Frame::WindowUpdate(f) => f.encode(dst),
            Frame::Continuation(f) => f.encode(dst),
            Frame::Unknown(f) => f.encode(dst),
        }
    }

    /// The stream the frame is on; 0 for connection-level frames.
    pub fn stream_id(&self) -> StreamId {
        match self {
            Frame::Data(f) => f.stream_id,
            Frame::Headers(f) => f.stream_id,
            Frame::Priority(f) => f.stream_id,
            Frame::RstStream(f) => f.stream_id,
            Frame::Settings(_) | Frame::Ping(_) | Frame::GoAway(_) => StreamId::ZERO,
            Frame::PushPromise(f) => f.stream_id,
            Frame::WindowUpdate(f) => f.stream_id,
            Frame::Continuation(f) => f.stream_id,
            Frame::Unknown(f) => f.stream_id,
        }
    }

    /// The frame type code (see [`kind`]).
    pub fn kind(&self) -> u8 {
        match self {
            Frame::Data(_) => kind::DATA,
            Frame::Headers(_) => kind::HEADERS,
            Frame::Priority(_) => kind::PRIORITY,
            Frame::RstStream(_) => kind::RST_STREAM,
            Frame::Settings(_) => kind::SETTINGS,
            Frame::PushPromise(_) => kind::PUSH_PROMISE,
            Frame::Ping(_) => kind::PING,
            Frame::GoAway(_) => kind::GOAWAY,
            Frame::WindowUpdate(_) => kind::WINDOW_UPDATE,
            Frame::Continuation(_) => kind::CONTINUATION,
            Frame::Unknown(f) => f.kind,
        }
    }
}

macro_rules! from_impls {
    ($($variant:ident),*) => {
        $(impl From<$variant> for Frame {
            fn from(f: $variant) -> Self {
                Frame::$variant(f)
            }
        })*
    };
}
from_impls!(
    Data,
    Headers,
    Priority,
    RstStream,
    Settings,
    PushPromise,
    Ping,
    GoAway,
    WindowUpdate,
    Continuation,
    Unknown
);

/// Decode one frame whose 9-byte head has been parsed and whose full payload
/// is given. Bodies and fragments are zero-copy slices of `payload`.
///
/// `payload.len()` is authoritative; `head.length` is not consulted (the
/// caller is expected to have cut exactly that many bytes, as
/// [`FrameReader`] does). The frame size limit is the reader's job.
pub fn decode(head: Head, payload: Bytes) -> Result<Frame, ProtocolError> {
    Ok(match head.kind {
        kind::DATA => Data::decode(&head, payload)?.into(),
        kind::HEADERS => Headers::decode(&head, payload)?.into(),
        kind::PRIORITY => Priority::decode(&head, payload)?.into(),
        kind::RST_STREAM => RstStream::decode(&head, payload)?.into(),
        kind::SETTINGS => Settings::decode(&head, payload)?.into(),
        kind::PUSH_PROMISE => PushPromise::decode(&head, payload)?.into(),
        kind::PING => Ping::decode(&head, payload)?.into(),
        kind::GOAWAY => GoAway::decode(&head, payload)?.into(),
        kind::WINDOW_UPDATE => WindowUpdate::decode(&head, payload)?.into(),
        kind::CONTINUATION => Continuation::decode(&head, payload)?.into(),
        _ => Unknown::decode(&head, payload).into(),
    })
}

// ---- helpers shared by the frame modules ----

/// Zeros to pad with: at most 255 bytes of padding are possible.
static ZEROS: [u8; 255] = [0; 255];

/// `n` zero bytes of padding, as a static slice.
fn zeros(n: u8) -> &'static [u8] {
    ZEROS.get(..usize::from(n)).unwrap_or(&ZEROS)
}

/// Frames that belong to a stream may not use stream 0 (§6.1–6.4, 6.6, 6.10).
fn require_stream(head: &Head, reason: &'static str) -> Result<(), ConnectionError> {
    if head.stream_id.is_zero() {
        Err(ConnectionError::protocol(reason))
    } else {
        Ok(())
    }
}

/// Connection-level frames must use stream 0 (§6.5, 6.7, 6.8).
fn require_connection(head: &Head, reason: &'static str) -> Result<(), ConnectionError> {
    if !head.stream_id.is_zero() {
        Err(ConnectionError::protocol(reason))
    } else {
        Ok(())
    }
}

/// If PADDED is set, remove and return the Pad Length byte. A padded frame
/// too short to hold it is a FRAME_SIZE_ERROR (§4.2: too small to contain
/// mandatory frame data).
fn take_pad_len(head: &Head, payload: &mut Bytes) -> Result<Option<u8>, ConnectionError> {
    if !head.has_flag(flags::PADDED) {
        return Ok(None);
    }
    match payload.first() {
        Some(&n) => {
            let _ = payload.split_to(1);
            Ok(Some(n))
        }
        None => Err(ConnectionError::frame_size(
            "padded frame too short for the pad length",
        )),
    }
}

/// Remove `pad` trailing bytes of padding. Padding longer than what remains
/// is a connection PROTOCOL_ERROR (§6.1, §6.2, §6.6). Padding content is not
/// checked (a receiver MAY treat non-zero padding as an error; we don't).
fn strip_padding(payload: &mut Bytes, pad: Option<u8>) -> Result<(), ConnectionError> {
    let Some(pad) = pad else { return Ok(()) };
    let pad = usize::from(pad);
    match payload.len().checked_sub(pad) {
        Some(keep) => {
            payload.truncate(keep);
            Ok(())
        }
        None => Err(ConnectionError::protocol(
            "padding exceeds the frame payload",
        )),
    }
}

/// Big-endian u32 from the first four bytes; callers check the length first
/// (shorter input yields 0 rather than a panic).
fn be_u32(b: &[u8]) -> u32 {
    match b {
        [a, b, c, d, ..] => u32::from_be_bytes([*a, *b, *c, *d]),
        _ => 0,
    }
}

/// A length as u32 for the frame header, saturating (oversized frames are
/// the caller's bug; see [`Head::encode`]).
fn len_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests;
