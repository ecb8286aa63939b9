//! Well-formedness of HTTP messages carried in header blocks (RFC 9113 §8).
//!
//! A malformed request or response is a stream error of type
//! PROTOCOL_ERROR; these checks return the reason, and the connection turns
//! it into a RST_STREAM.

use super::hpack::Header;

/// Which part of an HTTP message a header block carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlockKind {
    Request,
    Response,
    Trailers,
}

/// What the checks learned that the connection needs later.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BlockInfo {
    /// The declared `content-length`, which DATA must then add up to.
    pub content_length: Option<u64>,
    /// A 1xx response: more response headers follow.
    pub informational: bool,
}

/// Headers that only make sense on a single HTTP/1.1 hop (RFC 9113 §8.2.2).
const CONNECTION_SPECIFIC: [&[u8]; 5] = [
    b"connection",
    b"keep-alive",
    b"proxy-connection",
    b"transfer-encoding",
    b"upgrade",
];

pub fn check(headers: &[Header], kind: BlockKind) -> Result<BlockInfo, &'static str> {
    let mut info = BlockInfo::default();
    let mut regular_seen = false;
    // Bit set of pseudo-headers seen: method, scheme, path, authority, status, protocol.
    let mut pseudo = 0u8;
    let mut method_connect = false;
    let mut authority: Option<&[u8]> = None;
    let mut host: Option<&[u8]> = None;

    for h in headers {
        let name = &h.name[..];
        let Some(&first) = name.first() else {
            return Err("empty header name");
        };
        check_value(&h.value)?;
        if first == b':' {
            if regular_seen {
                return Err("pseudo-header after a regular header");
            }
            let bit = match (kind, name) {
                (BlockKind::Request, b":method") => 1,
                (BlockKind::Request, b":scheme") => 2,
                (BlockKind::Request, b":path") => 4,
                (BlockKind::Request, b":authority") => 8,
                (BlockKind::Request, b":protocol") => 32,
                (BlockKind::Response, b":status") => 16,
                (BlockKind::Trailers, _) => return Err("pseudo-header in trailers"),
                _ => return Err("unknown or misplaced pseudo-header"),
            };
            if pseudo & bit != 0 {
                return Err("duplicate pseudo-header");
            }
            pseudo |= bit;
            match bit {
                1 => method_connect = &h.value[..] == b"CONNECT",
                8 => authority = Some(&h.value[..]),
                4 if h.value.is_empty() => return Err("empty :path"),
                16 => {
                    let v = &h.value[..];
                    if v.len() != 3 || !v.iter().all(u8::is_ascii_digit) {
                        return Err("invalid :status");
                    }
                    info.informational = v.first() == Some(&b'1');
                }
                _ => {}
            }
            continue;
        }
        regular_seen = true;
        check_name(name)?;
        if CONNECTION_SPECIFIC.contains(&name) {
            return Err("connection-specific header field");
        }
        if name == b"te" && &h.value[..] != b"trailers" {
            return Err("te header with a value other than trailers");
        }
        if name == b"host" && kind == BlockKind::Request {
            host = Some(&h.value[..]);
        }
        if name == b"content-length" {
            let n = parse_content_length(&h.value).ok_or("invalid content-length")?;
            if info.content_length.is_some_and(|prev| prev != n) {
                return Err("conflicting content-length values");
            }
            info.content_length = Some(n);
        }
    }

    // RFC 9113 §8.3.1: a Host that names another entity than :authority
    // makes the request malformed (host names compare case-insensitively).
    if let (Some(a), Some(h)) = (authority, host) {
        if !a.eq_ignore_ascii_case(h) {
            return Err("host differs from :authority");
        }
    }

    match kind {
        BlockKind::Request if method_connect => {
            if pseudo & (2 | 4) != 0 && pseudo & 32 == 0 {
                return Err("CONNECT request with :scheme or :path");
            }
            if pseudo & 8 == 0 {
                return Err("CONNECT request without :authority");
            }
        }
        BlockKind::Request => {
            if pseudo & 1 == 0 {
                return Err("request without :method");
            }
            if pseudo & 32 != 0 {
                return Err(":protocol in a request other than CONNECT");
            }
            if pseudo & 2 == 0 {
                return Err("request without :scheme");
            }
            if pseudo & 4 == 0 {
                return Err("request without :path");
            }
        }
        BlockKind::Response if pseudo & 16 == 0 => return Err("response without :status"),
        _ => {}
    }
    Ok(info)
}

/// Field names are lowercase tokens (RFC 9110 §5.1, RFC 9113 §8.2.1).
fn check_name(name: &[u8]) -> Result<(), &'static str> {
    // One table load per byte instead of a chain of range tests.
    if name.iter().all(|&b| is_name_char(b)) {
        return Ok(());
    }
    Err(if name.iter().any(u8::is_ascii_uppercase) {
        "uppercase header name"
    } else {
        "invalid character in header name"
    })
}

/// Whether `b` may appear in a field name.
#[inline]
fn is_name_char(b: u8) -> bool {
    NAME_CHARS.get(usize::from(b)).copied().unwrap_or(false)
}

/// The bytes a field name may hold: lowercase token characters.
#[allow(
    clippy::indexing_slicing,
    reason = "evaluated at compile time: an index out of bounds fails the build"
)]
static NAME_CHARS: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        t[b] = matches!(c,
            b'a'..=b'z' | b'0'..=b'9' | b'!' | b'#' | b'$' | b'%' | b'&' | b'\'' | b'*'
            | b'+' | b'-' | b'.' | b'^' | b'_' | b'`' | b'|' | b'~');
        b += 1;
    }
    t
};

/// Values carry no NUL, CR or LF and no surrounding whitespace.
fn check_value(value: &[u8]) -> Result<(), &'static str> {
    if value.iter().any(|&b| b == 0 || b == b'\r' || b == b'\n') {
        return Err("invalid character in header value");
    }
    if let (Some(first), Some(last)) = (value.first(), value.last()) {
        if matches!(first, b' ' | b'\t') || matches!(last, b' ' | b'\t') {
            return Err("header value with surrounding whitespace");
        }
    }
    Ok(())
}

fn parse_content_length(v: &[u8]) -> Option<u64> {
    if v.is_empty() || v.len() > 19 {
        return None;
    }
    let mut n = 0u64;
    for &b in v {
        if !b.is_ascii_digit() {
            return None;
        }
        n = n * 10 + u64::from(b - b'0');
    }
    Some(n)
}
