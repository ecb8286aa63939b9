//! SPDY/3.1 status codes and the two kinds of protocol error.
//!
//! As in the HTTP/2 module, an error confined to one stream (answered with
//! RST_STREAM; the session carries on) and an error that ends the session
//! (answered with GOAWAY) are distinct types, so one cannot be handled as
//! the other by accident.

use std::fmt;

/// A RST_STREAM status code (SPDY/3.1 §2.4.2). Unknown codes are kept.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct RstStatus(pub u32);

impl RstStatus {
    pub const PROTOCOL_ERROR: Self = Self(1);
    pub const INVALID_STREAM: Self = Self(2);
    pub const REFUSED_STREAM: Self = Self(3);
    pub const UNSUPPORTED_VERSION: Self = Self(4);
    pub const CANCEL: Self = Self(5);
    pub const INTERNAL_ERROR: Self = Self(6);
    pub const FLOW_CONTROL_ERROR: Self = Self(7);
    pub const STREAM_IN_USE: Self = Self(8);
    pub const STREAM_ALREADY_CLOSED: Self = Self(9);
    pub const FRAME_TOO_LARGE: Self = Self(11);

    pub fn name(self) -> Option<&'static str> {
        Some(match self.0 {
            1 => "PROTOCOL_ERROR",
            2 => "INVALID_STREAM",
            3 => "REFUSED_STREAM",
            4 => "UNSUPPORTED_VERSION",
            5 => "CANCEL",
            6 => "INTERNAL_ERROR",
            7 => "FLOW_CONTROL_ERROR",
            8 => "STREAM_IN_USE",
            9 => "STREAM_ALREADY_CLOSED",
            10 => "INVALID_CREDENTIALS",
            11 => "FRAME_TOO_LARGE",
            _ => return None,
        })
    }
}

impl fmt::Debug for RstStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(n) => f.write_str(n),
            None => write!(f, "RstStatus({})", self.0),
        }
    }
}

/// A GOAWAY status code (SPDY/3.1 §2.6.6).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct GoAwayStatus(pub u32);

impl GoAwayStatus {
    pub const OK: Self = Self(0);
    pub const PROTOCOL_ERROR: Self = Self(1);
    pub const INTERNAL_ERROR: Self = Self(2);
}

impl fmt::Debug for GoAwayStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            0 => f.write_str("OK"),
            1 => f.write_str("PROTOCOL_ERROR"),
            2 => f.write_str("INTERNAL_ERROR"),
            n => write!(f, "GoAwayStatus({n})"),
        }
    }
}

/// A violation that ends the session: GOAWAY with `status`, no more input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectionError {
    pub status: GoAwayStatus,
    /// What was wrong, for logs.
    pub reason: &'static str,
}

impl ConnectionError {
    pub const fn protocol(reason: &'static str) -> Self {
        Self {
            status: GoAwayStatus::PROTOCOL_ERROR,
            reason,
        }
    }
    pub const fn internal(reason: &'static str) -> Self {
        Self {
            status: GoAwayStatus::INTERNAL_ERROR,
            reason,
        }
    }
}

impl fmt::Display for ConnectionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SPDY session error {:?}: {}", self.status, self.reason)
    }
}

impl std::error::Error for ConnectionError {}

/// A violation on one stream: RST_STREAM with `status`; the session lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StreamError {
    pub stream_id: u32,
    pub status: RstStatus,
    pub reason: &'static str,
}

impl fmt::Display for StreamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "SPDY stream {} error {:?}: {}",
            self.stream_id, self.status, self.reason
        )
    }
}

impl std::error::Error for StreamError {}
