//! Request and response header checks for gRPC, and the base64 form of
//! binary (`-bin`) metadata (PROTOCOL-HTTP2, "Requests").

use std::fmt;

/// Header names the gRPC layer reads or writes itself.
pub mod names {
    pub const CONTENT_TYPE: &str = "content-type";
    pub const TE: &str = "te";
    pub const USER_AGENT: &str = "user-agent";
    pub const GRPC_TIMEOUT: &str = "grpc-timeout";
    pub const GRPC_ENCODING: &str = "grpc-encoding";
    pub const GRPC_ACCEPT_ENCODING: &str = "grpc-accept-encoding";
    pub const GRPC_MESSAGE_TYPE: &str = "grpc-message-type";
    pub const GRPC_STATUS: &str = "grpc-status";
    pub const GRPC_MESSAGE: &str = "grpc-message";
    pub const GRPC_STATUS_DETAILS_BIN: &str = "grpc-status-details-bin";
}

/// The content-type we send.
pub const CONTENT_TYPE_GRPC: &str = "application/grpc";
/// The content-types of the answers to `+proto` and `+json` requests.
pub const CONTENT_TYPE_GRPC_PROTO: &str = "application/grpc+proto";
pub const CONTENT_TYPE_GRPC_JSON: &str = "application/grpc+json";

/// The codec a gRPC `content-type` names: the `+subtype` (`proto`,
/// `json`), or `None` for plain `application/grpc` (protobuf). Parameters
/// after `;` and spaces are ignored.
pub fn content_subtype(v: &[u8]) -> Option<&[u8]> {
    let rest = v.get(CONTENT_TYPE_GRPC.len()..)?;
    let rest = rest.strip_prefix(b"+")?;
    let end = rest.iter().position(|&b| b == b';').unwrap_or(rest.len());
    rest.get(..end).map(<[u8]>::trim_ascii)
}

/// Whether a `content-type` value names gRPC: `application/grpc` alone, or
/// followed by a `+subtype` (`+proto`, `+json`, ...) or by `;` parameters.
/// The type is matched case-insensitively, as media types are. Servers
/// answer anything else with HTTP 415.
pub fn is_grpc_content_type(v: &[u8]) -> bool {
    let prefix = CONTENT_TYPE_GRPC.as_bytes();
    if !v
        .get(..prefix.len())
        .is_some_and(|head| head.eq_ignore_ascii_case(prefix))
    {
        return false;
    }
    matches!(v.get(prefix.len()), None | Some(b'+') | Some(b';'))
}

/// Whether the `te` header value is `trailers`, as gRPC requests must send.
pub fn is_te_trailers(v: &[u8]) -> bool {
    v.trim_ascii().eq_ignore_ascii_case(b"trailers")
}

/// Whether a received header belongs to the protocol rather than the
/// application, and so must not be handed up (or passed on) as custom
/// metadata: pseudo-headers, the call-definition and status headers, and
/// HTTP/1 connection-specific headers.
pub fn is_reserved_header(name: &[u8]) -> bool {
    if name.first() == Some(&b':') {
        return true;
    }
    const RESERVED: &[&str] = &[
        names::CONTENT_TYPE,
        names::TE,
        names::GRPC_TIMEOUT,
        names::GRPC_ENCODING,
        names::GRPC_ACCEPT_ENCODING,
        names::GRPC_MESSAGE_TYPE,
        names::GRPC_STATUS,
        names::GRPC_MESSAGE,
        names::GRPC_STATUS_DETAILS_BIN,
        "connection",
        "keep-alive",
        "proxy-connection",
        "transfer-encoding",
        "upgrade",
    ];
    RESERVED
        .iter()
        .any(|r| name.eq_ignore_ascii_case(r.as_bytes()))
}

/// Whether `name` is a valid custom-metadata name: one or more of
/// `0-9 a-z _ - .` (HTTP/2 header names arrive lower-case).
pub fn is_valid_metadata_name(name: &[u8]) -> bool {
    !name.is_empty()
        && name
            .iter()
            .all(|&b| matches!(b, b'0'..=b'9' | b'a'..=b'z' | b'_' | b'-' | b'.'))
}

/// Whether `v` is a valid ASCII metadata value: printable ASCII and space.
/// (Receivers should still tolerate other valid HTTP field values.)
pub fn is_valid_ascii_value(v: &[u8]) -> bool {
    v.iter().all(|&b| (0x20..=0x7e).contains(&b))
}

/// Whether a metadata name denotes a binary value (base64 on the wire).
pub fn is_binary_header(name: &[u8]) -> bool {
    name.len() > 4
        && name
            .get(name.len() - 4..)
            .is_some_and(|suffix| suffix.eq_ignore_ascii_case(b"-bin"))
}

/// Splits a received binary header value into its values: duplicate
/// headers may have been joined with ',', so split before decoding.
pub fn split_binary_values(v: &[u8]) -> impl Iterator<Item = &[u8]> {
    v.split(|&b| b == b',').map(<[u8]>::trim_ascii)
}

/// A binary metadata value that is not valid base64.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InvalidBase64;

impl fmt::Display for InvalidBase64 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("invalid base64 in binary metadata value")
    }
}

impl std::error::Error for InvalidBase64 {}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

fn b64_value(c: u8) -> Option<u32> {
    Some(u32::from(match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => return None,
    }))
}

/// Decodes one binary metadata value (standard base64 alphabet, padded or
/// not, as the spec requires receivers to accept).
pub fn decode_base64(v: &[u8]) -> Result<Vec<u8>, InvalidBase64> {
    let body = v
        .strip_suffix(b"==")
        .or_else(|| v.strip_suffix(b"="))
        .unwrap_or(v);
    if body.len() != v.len() && v.len() % 4 != 0 {
        return Err(InvalidBase64);
    }
    if body.len() % 4 == 1 {
        return Err(InvalidBase64);
    }
    let mut out = Vec::with_capacity(body.len() / 4 * 3 + 2);
    for group in body.chunks(4) {
        let mut n: u32 = 0;
        for &c in group {
            n = n << 6 | b64_value(c).ok_or(InvalidBase64)?;
        }
        // Left-align the 6-bit digits in 24 bits, then take whole bytes.
        n <<= 6 * (4 - group.len() as u32);
        let bytes = n.to_be_bytes();
        out.extend_from_slice(bytes.get(1..group.len()).unwrap_or_default());
    }
    Ok(out)
}

/// Appends the unpadded standard base64 form of `data`, as the spec asks
/// senders to emit.
pub fn encode_base64(data: &[u8], dst: &mut Vec<u8>) {
    dst.reserve(data.len().div_ceil(3) * 4);
    for group in data.chunks(3) {
        let mut b = [0u8; 3];
        for (slot, &byte) in b.iter_mut().zip(group) {
            *slot = byte;
        }
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for i in 0..=group.len() {
            let digit = (n >> (18 - 6 * i) & 0x3f) as usize;
            dst.push(B64.get(digit).copied().unwrap_or(b'A'));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn content_subtypes() {
        for (v, sub) in [
            (&b"application/grpc"[..], None),
            (b"application/grpc;charset=utf-8", None),
            (b"application/grpc+proto", Some(&b"proto"[..])),
            (b"application/grpc+json", Some(b"json")),
            (b"application/grpc+json; charset=utf-8", Some(b"json")),
            (b"Application/GRPC+JSON", Some(b"JSON")),
            (b"application/grpc+", Some(b"")),
            (b"application/grpc+thrift", Some(b"thrift")),
        ] {
            assert_eq!(content_subtype(v), sub, "{:?}", String::from_utf8_lossy(v));
        }
    }

    #[test]
    fn content_types() {
        for ok in [
            &b"application/grpc"[..],
            b"application/grpc+proto",
            b"application/grpc+json",
            b"application/grpc;charset=utf-8",
            b"Application/GRPC+proto",
        ] {
            assert!(is_grpc_content_type(ok), "{ok:?}");
        }
        for bad in [
            &b""[..],
            b"application/grp",
            b"application/grpcx",
            b"application/grpc-web",
            b"application/json",
            b" application/grpc",
            b"text/plain",
        ] {
            assert!(!is_grpc_content_type(bad), "{bad:?}");
        }
    }

    #[test]
    fn te_header() {
        assert!(is_te_trailers(b"trailers"));
        assert!(!is_te_trailers(b"gzip"));
    }

    #[test]
    fn reserved_names() {
        for r in [
            &b":path"[..],
            b":authority",
            b"content-type",
            b"te",
            b"grpc-timeout",
            b"grpc-status",
            b"grpc-message",
            b"grpc-status-details-bin",
            b"connection",
        ] {
            assert!(is_reserved_header(r), "{r:?}");
        }
        for m in [
            &b"authorization"[..],
            b"x-trace-bin",
            b"user-agent",
            b"grpc-custom",
        ] {
            assert!(!is_reserved_header(m), "{m:?}");
        }
    }

    #[test]
    fn names_and_values() {
        assert!(is_valid_metadata_name(b"x-my_key.1"));
        assert!(!is_valid_metadata_name(b""));
        assert!(!is_valid_metadata_name(b"X-Upper"));
        assert!(!is_valid_metadata_name(b"a b"));
        assert!(is_valid_ascii_value(b"hello world ~"));
        assert!(!is_valid_ascii_value(b"tab\there"));
        assert!(is_binary_header(b"trace-proto-bin"));
        assert!(!is_binary_header(b"-bin"));
        assert!(!is_binary_header(b"binary"));
    }

    #[test]
    fn base64_known_values() {
        let mut v = Vec::new();
        encode_base64(b"foobar", &mut v);
        assert_eq!(v, b"Zm9vYmFy");
        v.clear();
        encode_base64(b"fooba", &mut v);
        assert_eq!(v, b"Zm9vYmE");
        v.clear();
        encode_base64(b"f", &mut v);
        assert_eq!(v, b"Zg");
        assert_eq!(decode_base64(b"Zg==").unwrap(), b"f");
        assert_eq!(decode_base64(b"Zg").unwrap(), b"f");
        assert_eq!(decode_base64(b"Zm9vYmE=").unwrap(), b"fooba");
        assert_eq!(decode_base64(b"Zm9vYmE").unwrap(), b"fooba");
        assert_eq!(decode_base64(b"").unwrap(), b"");
        for bad in [
            &b"Z"[..],
            b"Zg=",
            b"Z===",
            b"Zm9v!",
            b"Zm 9",
            b"=",
            b"Zg===",
        ] {
            assert_eq!(decode_base64(bad), Err(InvalidBase64), "{bad:?}");
        }
        let parts: Vec<_> = split_binary_values(b"Zg, Zm9v").collect();
        assert_eq!(parts, [&b"Zg"[..], b"Zm9v"]);
    }

    proptest! {
        #[test]
        fn base64_round_trip(data in proptest::collection::vec(any::<u8>(), 0..100)) {
            let mut enc = Vec::new();
            encode_base64(&data, &mut enc);
            prop_assert!(!enc.contains(&b'='));
            prop_assert_eq!(decode_base64(&enc).unwrap(), data.clone());
            while enc.len() % 4 != 0 {
                enc.push(b'=');
            }
            prop_assert_eq!(decode_base64(&enc).unwrap(), data);
        }

        #[test]
        fn random_input_never_panics(raw in proptest::collection::vec(any::<u8>(), 0..40)) {
            let _ = decode_base64(&raw);
            let _ = is_grpc_content_type(&raw);
            let _ = is_reserved_header(&raw);
            let _ = is_binary_header(&raw);
        }
    }
}
