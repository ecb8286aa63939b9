//! gRPC status codes, the `Status` carried in trailers, and the
//! percent-encoding used by the `grpc-message` header.
//!
//! The code numbers and names follow gRPC's `statuscodes.md`; the
//! `grpc-message` encoding and the synthesis of a status from a non-200 HTTP
//! response follow PROTOCOL-HTTP2 and `http-grpc-status-mapping.md`.

use std::fmt;

use bytes::Bytes;

/// A gRPC status code. The discriminants are the wire values sent in
/// `grpc-status`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Code {
    Ok = 0,
    Cancelled = 1,
    Unknown = 2,
    InvalidArgument = 3,
    DeadlineExceeded = 4,
    NotFound = 5,
    AlreadyExists = 6,
    PermissionDenied = 7,
    ResourceExhausted = 8,
    FailedPrecondition = 9,
    Aborted = 10,
    OutOfRange = 11,
    Unimplemented = 12,
    Internal = 13,
    Unavailable = 14,
    DataLoss = 15,
    Unauthenticated = 16,
}

impl Code {
    /// Every code, in wire order.
    pub const ALL: [Code; 17] = [
        Code::Ok,
        Code::Cancelled,
        Code::Unknown,
        Code::InvalidArgument,
        Code::DeadlineExceeded,
        Code::NotFound,
        Code::AlreadyExists,
        Code::PermissionDenied,
        Code::ResourceExhausted,
        Code::FailedPrecondition,
        Code::Aborted,
        Code::OutOfRange,
        Code::Unimplemented,
        Code::Internal,
        Code::Unavailable,
        Code::DataLoss,
        Code::Unauthenticated,
    ];

    /// The code for a wire value; values gRPC does not define map to
    /// `Unknown`, as the spec asks of receivers.
    pub fn from_u32(v: u32) -> Code {
        usize::try_from(v)
            .ok()
            .and_then(|i| Self::ALL.get(i))
            .copied()
            .unwrap_or(Code::Unknown)
    }

    /// The numeric wire value.
    pub const fn as_u32(self) -> u32 {
        self as u32
    }

    /// The decimal wire form for the `grpc-status` header ("0" to "16").
    pub const fn as_str(self) -> &'static str {
        match self {
            Code::Ok => "0",
            Code::Cancelled => "1",
            Code::Unknown => "2",
            Code::InvalidArgument => "3",
            Code::DeadlineExceeded => "4",
            Code::NotFound => "5",
            Code::AlreadyExists => "6",
            Code::PermissionDenied => "7",
            Code::ResourceExhausted => "8",
            Code::FailedPrecondition => "9",
            Code::Aborted => "10",
            Code::OutOfRange => "11",
            Code::Unimplemented => "12",
            Code::Internal => "13",
            Code::Unavailable => "14",
            Code::DataLoss => "15",
            Code::Unauthenticated => "16",
        }
    }

    /// The canonical upper-case name, e.g. `"INVALID_ARGUMENT"`.
    pub const fn name(self) -> &'static str {
        match self {
            Code::Ok => "OK",
            Code::Cancelled => "CANCELLED",
            Code::Unknown => "UNKNOWN",
            Code::InvalidArgument => "INVALID_ARGUMENT",
            Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
            Code::NotFound => "NOT_FOUND",
            Code::AlreadyExists => "ALREADY_EXISTS",
            Code::PermissionDenied => "PERMISSION_DENIED",
            Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
            Code::FailedPrecondition => "FAILED_PRECONDITION",
            Code::Aborted => "ABORTED",
            Code::OutOfRange => "OUT_OF_RANGE",
            Code::Unimplemented => "UNIMPLEMENTED",
            Code::Internal => "INTERNAL",
            Code::Unavailable => "UNAVAILABLE",
            Code::DataLoss => "DATA_LOSS",
            Code::Unauthenticated => "UNAUTHENTICATED",
        }
    }

    /// Parses a received `grpc-status` header value. The spec sends plain
    /// decimal; anything that is not 1 to 10 ASCII digits (or overflows a
    /// u32) is `None`, and the caller synthesises a status of its own.
    /// Well-formed numbers gRPC does not define map to `Unknown`.
    pub fn from_header(v: &[u8]) -> Option<Code> {
        if v.is_empty() || v.len() > 10 {
            return None;
        }
        let mut n: u64 = 0;
        for &b in v {
            if !b.is_ascii_digit() {
                return None;
            }
            n = n * 10 + u64::from(b - b'0');
        }
        u32::try_from(n).ok().map(Code::from_u32)
    }

    /// The code to report for a response whose `:status` is not 200
    /// (gRPC's HTTP-to-gRPC status mapping).
    pub const fn from_http_status(status: u16) -> Code {
        match status {
            400 => Code::Internal,
            401 => Code::Unauthenticated,
            403 => Code::PermissionDenied,
            404 => Code::Unimplemented,
            429 | 502 | 503 | 504 => Code::Unavailable,
            _ => Code::Unknown,
        }
    }

    /// The code for a stream reset by the peer with the given HTTP/2 error
    /// code (PROTOCOL-HTTP2, "Errors"). `None` for STREAM_CLOSED, which has
    /// no call to report to. CANCEL maps to `Cancelled`; a server receiving
    /// it from a client treats it as the client cancelling the call.
    pub const fn from_h2_reset(error_code: u32) -> Option<Code> {
        Some(match error_code {
            // NO_ERROR, PROTOCOL_ERROR, INTERNAL_ERROR, FLOW_CONTROL_ERROR,
            // SETTINGS_TIMEOUT, FRAME_SIZE_ERROR, COMPRESSION_ERROR,
            // CONNECT_ERROR
            0x0..=0x4 | 0x6 | 0x9 | 0xa => Code::Internal,
            0x5 => return None,
            0x7 => Code::Unavailable,       // REFUSED_STREAM
            0x8 => Code::Cancelled,         // CANCEL
            0xb => Code::ResourceExhausted, // ENHANCE_YOUR_CALM
            0xc => Code::PermissionDenied,  // INADEQUATE_SECURITY
            _ => Code::Unknown,
        })
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl From<u32> for Code {
    fn from(v: u32) -> Self {
        Code::from_u32(v)
    }
}

/// The outcome of a call: a code and a human-readable message (unencoded
/// UTF-8; [`encode_message`] produces the header form).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    pub code: Code,
    pub message: String,
}

macro_rules! status_ctors {
    ($($(#[$doc:meta])* $fn_name:ident => $code:ident;)*) => {
        $(
            $(#[$doc])*
            pub fn $fn_name(message: impl Into<String>) -> Status {
                Status::new(Code::$code, message)
            }
        )*
    };
}

impl Status {
    pub fn new(code: Code, message: impl Into<String>) -> Status {
        Status {
            code,
            message: message.into(),
        }
    }

    /// Success, with no message.
    pub fn ok() -> Status {
        Status::new(Code::Ok, String::new())
    }

    status_ctors! {
        cancelled => Cancelled;
        unknown => Unknown;
        invalid_argument => InvalidArgument;
        deadline_exceeded => DeadlineExceeded;
        not_found => NotFound;
        already_exists => AlreadyExists;
        permission_denied => PermissionDenied;
        resource_exhausted => ResourceExhausted;
        failed_precondition => FailedPrecondition;
        aborted => Aborted;
        out_of_range => OutOfRange;
        unimplemented => Unimplemented;
        internal => Internal;
        unavailable => Unavailable;
        data_loss => DataLoss;
        unauthenticated => Unauthenticated;
    }

    pub fn is_ok(&self) -> bool {
        self.code == Code::Ok
    }

    /// The status a client reports for a response whose `:status` is not
    /// 200 and which carries no `grpc-status` of its own.
    pub fn from_http_status(status: u16) -> Status {
        Status::new(
            Code::from_http_status(status),
            format!("unexpected HTTP status {status} in gRPC response"),
        )
    }

    /// Builds a status from received `grpc-status` / `grpc-message` values.
    /// A malformed `grpc-status` yields `Unknown`, keeping the raw value in
    /// the message so nothing is silently lost.
    pub fn from_header_values(grpc_status: &[u8], grpc_message: Option<&[u8]>) -> Status {
        let message = grpc_message.map(decode_message).unwrap_or_default();
        match Code::from_header(grpc_status) {
            Some(code) => Status::new(code, message),
            None => Status::unknown(format!(
                "malformed grpc-status {:?}: {}",
                String::from_utf8_lossy(grpc_status),
                message
            )),
        }
    }

    /// The percent-encoded `grpc-message` header value for this status.
    pub fn encoded_message(&self) -> Bytes {
        encode_message_bytes(&self.message)
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.message.is_empty() {
            f.write_str(self.code.name())
        } else {
            write!(f, "{}: {}", self.code.name(), self.message)
        }
    }
}

impl std::error::Error for Status {}

/// Whether a byte may appear unescaped in `grpc-message`: space and visible
/// ASCII, except '%'.
#[inline]
fn is_unreserved(b: u8) -> bool {
    (0x20..=0x7e).contains(&b) && b != b'%'
}

const HEX_UPPER: &[u8; 16] = b"0123456789ABCDEF";

/// The upper-case hex digit of a nibble (the low 4 bits of `n`).
fn hex_digit(n: u8) -> u8 {
    HEX_UPPER.get(usize::from(n & 0xf)).copied().unwrap_or(b'0')
}

/// Appends the percent-encoded form of `msg` (its UTF-8 bytes, each byte
/// outside 0x20..=0x7E and each '%' written as `%XX`, upper-case hex).
pub fn encode_message(msg: &str, dst: &mut Vec<u8>) {
    let bytes = msg.as_bytes();
    let escaped = bytes.iter().filter(|&&b| !is_unreserved(b)).count();
    dst.reserve(bytes.len() + 2 * escaped);
    for &b in bytes {
        if is_unreserved(b) {
            dst.push(b);
        } else {
            dst.extend_from_slice(&[b'%', hex_digit(b >> 4), hex_digit(b & 0xf)]);
        }
    }
}

/// The percent-encoded form of `msg` as `Bytes`, ready for a header value.
pub fn encode_message_bytes(msg: &str) -> Bytes {
    if msg.bytes().all(is_unreserved) {
        return Bytes::copy_from_slice(msg.as_bytes());
    }
    let mut out = Vec::new();
    encode_message(msg, &mut out);
    Bytes::from(out)
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'A'..=b'F' => Some(b - b'A' + 10),
        b'a'..=b'f' => Some(b - b'a' + 10),
        _ => None,
    }
}

/// Decodes a received `grpc-message` value. Never fails, as the spec
/// requires: a '%' not followed by two hex digits is kept literally, and
/// byte sequences that are not UTF-8 become U+FFFD.
pub fn decode_message(raw: &[u8]) -> String {
    if !raw.contains(&b'%') {
        return String::from_utf8_lossy(raw).into_owned();
    }
    let mut out = Vec::with_capacity(raw.len());
    let mut rest = raw;
    while let [b, tail @ ..] = rest {
        if let (b'%', [hi, lo, after @ ..]) = (b, tail) {
            if let (Some(hi), Some(lo)) = (hex_value(*hi), hex_value(*lo)) {
                out.push(hi << 4 | lo);
                rest = after;
                continue;
            }
        }
        out.push(*b);
        rest = tail;
    }
    match String::from_utf8(out) {
        Ok(s) => s,
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn enc(s: &str) -> String {
        let mut v = Vec::new();
        encode_message(s, &mut v);
        String::from_utf8(v).unwrap()
    }

    #[test]
    fn every_code_round_trips() {
        for (i, &code) in Code::ALL.iter().enumerate() {
            assert_eq!(code as u32, i as u32);
            assert_eq!(Code::from_u32(code.as_u32()), code);
            assert_eq!(code.as_str(), i.to_string());
            assert_eq!(Code::from_header(code.as_str().as_bytes()), Some(code));
        }
        assert_eq!(Code::from_u32(17), Code::Unknown);
        assert_eq!(Code::from_u32(u32::MAX), Code::Unknown);
        assert_eq!(Code::InvalidArgument.name(), "INVALID_ARGUMENT");
        assert_eq!(Code::Ok.to_string(), "OK");
    }

    #[test]
    fn grpc_status_header_parsing() {
        assert_eq!(Code::from_header(b"99"), Some(Code::Unknown));
        assert_eq!(Code::from_header(b"4294967295"), Some(Code::Unknown));
        assert_eq!(Code::from_header(b"4294967296"), None);
        assert_eq!(Code::from_header(b"99999999999"), None);
        assert_eq!(Code::from_header(b""), None);
        assert_eq!(Code::from_header(b" 0"), None);
        assert_eq!(Code::from_header(b"-1"), None);
        let s = Status::from_header_values(b"x", Some(b"boom"));
        assert_eq!(s.code, Code::Unknown);
        assert!(s.message.contains("boom"));
        let s = Status::from_header_values(b"5", Some(b"no%20such"));
        assert_eq!(s, Status::not_found("no such"));
    }

    #[test]
    fn constructors_and_display() {
        assert!(Status::ok().is_ok());
        assert_eq!(Status::unimplemented("x").code, Code::Unimplemented);
        assert_eq!(Status::unauthenticated("x").code, Code::Unauthenticated);
        assert_eq!(Status::data_loss("x").code, Code::DataLoss);
        assert_eq!(
            Status::invalid_argument("bad").to_string(),
            "INVALID_ARGUMENT: bad"
        );
        assert_eq!(Status::ok().to_string(), "OK");
    }

    #[test]
    fn http_status_mapping() {
        assert_eq!(Code::from_http_status(400), Code::Internal);
        assert_eq!(Code::from_http_status(401), Code::Unauthenticated);
        assert_eq!(Code::from_http_status(403), Code::PermissionDenied);
        assert_eq!(Code::from_http_status(404), Code::Unimplemented);
        for s in [429, 502, 503, 504] {
            assert_eq!(Code::from_http_status(s), Code::Unavailable);
        }
        for s in [200, 301, 415, 500, 0, u16::MAX] {
            assert_eq!(Code::from_http_status(s), Code::Unknown);
        }
        let st = Status::from_http_status(503);
        assert_eq!(st.code, Code::Unavailable);
        assert!(st.message.contains("503"));
    }

    #[test]
    fn h2_reset_mapping() {
        assert_eq!(Code::from_h2_reset(0), Some(Code::Internal));
        assert_eq!(Code::from_h2_reset(5), None);
        assert_eq!(Code::from_h2_reset(7), Some(Code::Unavailable));
        assert_eq!(Code::from_h2_reset(8), Some(Code::Cancelled));
        assert_eq!(Code::from_h2_reset(0xb), Some(Code::ResourceExhausted));
        assert_eq!(Code::from_h2_reset(0xc), Some(Code::PermissionDenied));
        assert_eq!(Code::from_h2_reset(0xff), Some(Code::Unknown));
    }

    #[test]
    fn percent_encoding_examples() {
        assert_eq!(enc("plain text ~!"), "plain text ~!");
        assert_eq!(enc("100%"), "100%25");
        assert_eq!(enc("a\nb\t"), "a%0Ab%09");
        assert_eq!(enc("\u{7f}"), "%7F");
        assert_eq!(enc("café"), "caf%C3%A9");
        assert_eq!(enc("🚀"), "%F0%9F%9A%80");
        assert_eq!(enc(""), "");
        assert_eq!(
            &Status::internal("50% ok").encoded_message()[..],
            b"50%25 ok"
        );
        assert_eq!(&encode_message_bytes("abc")[..], b"abc");
    }

    #[test]
    fn percent_decoding_is_lenient() {
        assert_eq!(decode_message(b"caf%C3%A9"), "café");
        assert_eq!(decode_message(b"caf%c3%a9"), "café");
        assert_eq!(decode_message(b"100%"), "100%");
        assert_eq!(decode_message(b"100%2"), "100%2");
        assert_eq!(decode_message(b"%zz%4"), "%zz%4");
        assert_eq!(decode_message(b"%%41"), "%A");
        assert_eq!(decode_message(b"%FF"), "\u{fffd}");
        assert_eq!(decode_message(b"a\xffb"), "a\u{fffd}b");
        assert_eq!(decode_message(b""), "");
    }

    proptest! {
        #[test]
        fn percent_round_trip(s in any::<String>()) {
            let mut v = Vec::new();
            encode_message(&s, &mut v);
            prop_assert!(v.iter().all(|&b| (0x20..=0x7e).contains(&b)));
            prop_assert_eq!(decode_message(&v), s.clone());
            prop_assert_eq!(&encode_message_bytes(&s)[..], &v[..]);
        }

        #[test]
        fn decode_never_panics(raw in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode_message(&raw);
            let _ = Code::from_header(&raw);
        }
    }
}
