//! HTTP/2 error codes and the two kinds of protocol error.
//!
//! RFC 9113 §5.4 separates errors that poison the whole connection (answered
//! with GOAWAY, then the connection closes) from errors confined to one stream
//! (answered with RST_STREAM; the connection carries on). They are distinct
//! types here so that code handling a stream error cannot accidentally tear
//! down the connection, and vice versa.

use std::fmt;

use super::StreamId;

/// An HTTP/2 error code (RFC 9113 §7). Unknown codes are kept as received.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ErrorCode(pub u32);

impl ErrorCode {
    pub const NO_ERROR: Self = Self(0x0);
    pub const PROTOCOL_ERROR: Self = Self(0x1);
    pub const INTERNAL_ERROR: Self = Self(0x2);
    pub const FLOW_CONTROL_ERROR: Self = Self(0x3);
    pub const SETTINGS_TIMEOUT: Self = Self(0x4);
    pub const STREAM_CLOSED: Self = Self(0x5);
    pub const FRAME_SIZE_ERROR: Self = Self(0x6);
    pub const REFUSED_STREAM: Self = Self(0x7);
    pub const CANCEL: Self = Self(0x8);
    pub const COMPRESSION_ERROR: Self = Self(0x9);
    pub const CONNECT_ERROR: Self = Self(0xa);
    pub const ENHANCE_YOUR_CALM: Self = Self(0xb);
    pub const INADEQUATE_SECURITY: Self = Self(0xc);
    pub const HTTP_1_1_REQUIRED: Self = Self(0xd);

    /// The name the RFC gives this code, if it is one the RFC defines.
    pub fn name(self) -> Option<&'static str> {
        Some(match self.0 {
            0x0 => "NO_ERROR",
            0x1 => "PROTOCOL_ERROR",
            0x2 => "INTERNAL_ERROR",
            0x3 => "FLOW_CONTROL_ERROR",
            0x4 => "SETTINGS_TIMEOUT",
            0x5 => "STREAM_CLOSED",
            0x6 => "FRAME_SIZE_ERROR",
            0x7 => "REFUSED_STREAM",
            0x8 => "CANCEL",
            0x9 => "COMPRESSION_ERROR",
            0xa => "CONNECT_ERROR",
            0xb => "ENHANCE_YOUR_CALM",
            0xc => "INADEQUATE_SECURITY",
            0xd => "HTTP_1_1_REQUIRED",
            _ => return None,
        })
    }
}

impl fmt::Debug for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => f.write_str(name),
            None => write!(f, "ErrorCode({:#x})", self.0),
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// A violation that ends the connection: we send GOAWAY with `code` and close.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectionError {
    pub code: ErrorCode,
    /// What was wrong, for logs and the GOAWAY debug data.
    pub reason: &'static str,
}

impl ConnectionError {
    pub const fn new(code: ErrorCode, reason: &'static str) -> Self {
        Self { code, reason }
    }
    pub const fn protocol(reason: &'static str) -> Self {
        Self::new(ErrorCode::PROTOCOL_ERROR, reason)
    }
    pub const fn frame_size(reason: &'static str) -> Self {
        Self::new(ErrorCode::FRAME_SIZE_ERROR, reason)
    }
}

impl fmt::Display for ConnectionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "connection error {}: {}", self.code, self.reason)
    }
}

impl std::error::Error for ConnectionError {}

/// A violation confined to one stream: we send RST_STREAM with `code`; the
/// connection and its other streams are unaffected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StreamError {
    pub stream_id: StreamId,
    pub code: ErrorCode,
    pub reason: &'static str,
}

impl StreamError {
    pub const fn new(stream_id: StreamId, code: ErrorCode, reason: &'static str) -> Self {
        Self {
            stream_id,
            code,
            reason,
        }
    }
}

impl fmt::Display for StreamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "stream {} error {}: {}",
            self.stream_id, self.code, self.reason
        )
    }
}

impl std::error::Error for StreamError {}

/// Either kind of protocol error, for code (such as the frame decoder) that
/// can produce both. Callers match on it and act on each arm separately.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProtocolError {
    Connection(ConnectionError),
    Stream(StreamError),
}

impl From<ConnectionError> for ProtocolError {
    fn from(e: ConnectionError) -> Self {
        Self::Connection(e)
    }
}

impl From<StreamError> for ProtocolError {
    fn from(e: StreamError) -> Self {
        Self::Stream(e)
    }
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Connection(e) => e.fmt(f),
            Self::Stream(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for ProtocolError {}
