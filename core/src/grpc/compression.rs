//! Per-message compression (`grpc-encoding`, `grpc-accept-encoding`).
//!
//! We support `identity` and `gzip`. The gzip codec is flate2's pure-Rust
//! backend working on in-memory buffers: its `Read`/`Write` adaptors wrap
//! slices and `BytesMut`, so no I/O happens here. Each message is compressed
//! on its own (gRPC keeps no compression context across messages).

use std::fmt;
use std::io::{Read, Write};

use bytes::{BufMut, Bytes, BytesMut};

use super::codec::Message;
use super::status::Status;

/// The `grpc-accept-encoding` value we send, listing what we can decode.
pub const ACCEPT_ENCODING: &str = "identity,gzip";

/// A message encoding we understand.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Encoding {
    #[default]
    Identity,
    Gzip,
}

impl Encoding {
    /// Parses a `grpc-encoding` value. Content-codings are
    /// case-insensitive tokens; surrounding whitespace is ignored. An
    /// encoding we do not support is `UNIMPLEMENTED`, and the caller should
    /// answer with `grpc-accept-encoding: ` [`ACCEPT_ENCODING`].
    pub fn parse(v: &[u8]) -> Result<Encoding, Status> {
        let token = v.trim_ascii();
        if token.eq_ignore_ascii_case(b"identity") {
            Ok(Encoding::Identity)
        } else if token.eq_ignore_ascii_case(b"gzip") {
            Ok(Encoding::Gzip)
        } else {
            Err(Status::unimplemented(format!(
                "message encoding {:?} is not supported (supported: {ACCEPT_ENCODING})",
                String::from_utf8_lossy(v)
            )))
        }
    }

    /// As `parse`, with an absent header meaning `identity`.
    pub fn from_header(v: Option<&[u8]>) -> Result<Encoding, Status> {
        v.map_or(Ok(Encoding::Identity), Encoding::parse)
    }

    /// The header token.
    pub const fn as_str(self) -> &'static str {
        match self {
            Encoding::Identity => "identity",
            Encoding::Gzip => "gzip",
        }
    }

    /// Whether a peer's `grpc-accept-encoding` list names this encoding.
    /// Identity is always acceptable.
    pub fn accepted_by(self, accept_encoding: &[u8]) -> bool {
        self == Encoding::Identity
            || accept_encoding.split(|&b| b == b',').any(|t| {
                t.trim_ascii()
                    .eq_ignore_ascii_case(self.as_str().as_bytes())
            })
    }
}

impl fmt::Display for Encoding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Decompresses one message payload, refusing (`RESOURCE_EXHAUSTED`) as
/// soon as the output would exceed `max_size` bytes, so a small compressed
/// message cannot expand without bound. A payload flagged compressed on a
/// stream whose encoding is `identity` is a protocol violation
/// (`INTERNAL`), as is corrupt gzip data.
pub fn decompress(encoding: Encoding, payload: &[u8], max_size: usize) -> Result<Bytes, Status> {
    match encoding {
        Encoding::Identity => Err(Status::internal(
            "message has the compressed flag set but grpc-encoding is identity",
        )),
        Encoding::Gzip => {
            let limit = u64::try_from(max_size)
                .unwrap_or(u64::MAX)
                .saturating_add(1);
            let mut out = Vec::with_capacity(payload.len().saturating_mul(2).min(max_size));
            let mut decoder = flate2::read::GzDecoder::new(payload).take(limit);
            decoder
                .read_to_end(&mut out)
                .map_err(|e| Status::internal(format!("failed to decompress gzip message: {e}")))?;
            if out.len() > max_size {
                return Err(Status::resource_exhausted(format!(
                    "decompressed message exceeds the limit of {max_size} bytes"
                )));
            }
            Ok(Bytes::from(out))
        }
    }
}

/// The uncompressed payload of a received message: the payload itself
/// (no copy) when it is not compressed, else its decompression.
pub fn uncompressed_payload(
    encoding: Encoding,
    message: Message,
    max_size: usize,
) -> Result<Bytes, Status> {
    if message.compressed {
        decompress(encoding, &message.payload, max_size)
    } else {
        Ok(message.payload)
    }
}

/// Appends `payload` compressed with `encoding` to `dst` (copied as-is for
/// `identity`).
pub fn compress(encoding: Encoding, payload: &[u8], dst: &mut BytesMut) -> Result<(), Status> {
    match encoding {
        Encoding::Identity => {
            dst.extend_from_slice(payload);
            Ok(())
        }
        Encoding::Gzip => {
            let mut enc =
                flate2::write::GzEncoder::new(dst.writer(), flate2::Compression::default());
            enc.write_all(payload)
                .and_then(|()| enc.try_finish())
                .map_err(|e| Status::internal(format!("failed to gzip message: {e}")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grpc::Code;
    use proptest::prelude::*;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut b = BytesMut::new();
        compress(Encoding::Gzip, data, &mut b).unwrap();
        b.to_vec()
    }

    #[test]
    fn parse_encodings() {
        assert_eq!(Encoding::parse(b"identity"), Ok(Encoding::Identity));
        assert_eq!(Encoding::parse(b"gzip"), Ok(Encoding::Gzip));
        assert_eq!(Encoding::parse(b" GZIP "), Ok(Encoding::Gzip));
        assert_eq!(Encoding::from_header(None), Ok(Encoding::Identity));
        let err = Encoding::parse(b"snappy").unwrap_err();
        assert_eq!(err.code, Code::Unimplemented);
        assert!(err.message.contains("snappy"));
        assert_eq!(Encoding::parse(b"").unwrap_err().code, Code::Unimplemented);
        assert_eq!(ACCEPT_ENCODING, "identity,gzip");
        for e in [Encoding::Identity, Encoding::Gzip] {
            assert_eq!(Encoding::parse(e.as_str().as_bytes()), Ok(e));
        }
    }

    #[test]
    fn accept_encoding_lists() {
        assert!(Encoding::Gzip.accepted_by(b"identity, deflate,gzip"));
        assert!(Encoding::Gzip.accepted_by(b"GZip"));
        assert!(!Encoding::Gzip.accepted_by(b"identity,deflate"));
        assert!(!Encoding::Gzip.accepted_by(b"gzipx"));
        assert!(Encoding::Identity.accepted_by(b""));
    }

    #[test]
    fn gzip_round_trip() {
        let data: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        let z = gzip(&data);
        assert!(z.len() < data.len());
        assert_eq!(
            &decompress(Encoding::Gzip, &z, data.len()).unwrap()[..],
            &data[..]
        );
        assert_eq!(
            decompress(Encoding::Gzip, &z, data.len() - 1)
                .unwrap_err()
                .code,
            Code::ResourceExhausted
        );
        assert_eq!(&decompress(Encoding::Gzip, &gzip(b""), 0).unwrap()[..], b"");
    }

    #[test]
    fn gzip_bomb_stops_at_limit() {
        // 64 MiB of zeros compresses to about 64 KiB.
        let mut b = BytesMut::new();
        {
            let mut enc =
                flate2::write::GzEncoder::new((&mut b).writer(), flate2::Compression::best());
            let block = vec![0u8; 1 << 20];
            for _ in 0..64 {
                enc.write_all(&block).unwrap();
            }
            enc.finish().unwrap();
        }
        assert!(b.len() < 1 << 20);
        let limit = 1 << 20;
        let err = decompress(Encoding::Gzip, &b, limit).unwrap_err();
        assert_eq!(err.code, Code::ResourceExhausted);
        assert!(err.message.contains(&limit.to_string()));
    }

    #[test]
    fn corrupt_and_misflagged_payloads() {
        let err = decompress(Encoding::Gzip, b"not gzip at all", 100).unwrap_err();
        assert_eq!(err.code, Code::Internal);
        let mut z = gzip(b"hello world");
        let n = z.len();
        z[n - 5] ^= 0xff; // corrupt the CRC/length trailer
        assert_eq!(
            decompress(Encoding::Gzip, &z, 100).unwrap_err().code,
            Code::Internal
        );
        assert_eq!(
            decompress(Encoding::Identity, b"x", 100).unwrap_err().code,
            Code::Internal
        );
    }

    #[test]
    fn uncompressed_payload_is_zero_copy() {
        let payload = Bytes::from_static(b"plain");
        let m = Message {
            compressed: false,
            payload: payload.clone(),
        };
        let out = uncompressed_payload(Encoding::Gzip, m, 100).unwrap();
        assert_eq!(out.as_ptr(), payload.as_ptr());
        let m = Message {
            compressed: true,
            payload: Bytes::from(gzip(b"zipped")),
        };
        assert_eq!(
            &uncompressed_payload(Encoding::Gzip, m, 100).unwrap()[..],
            b"zipped"
        );
    }

    #[test]
    fn identity_compress_copies() {
        let mut b = BytesMut::new();
        compress(Encoding::Identity, b"abc", &mut b).unwrap();
        assert_eq!(&b[..], b"abc");
    }

    proptest! {
        #[test]
        fn random_input_never_panics(raw in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = decompress(Encoding::Gzip, &raw, 1024);
            let _ = Encoding::parse(&raw);
        }

        #[test]
        fn gzip_round_trips(data in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let z = gzip(&data);
            prop_assert_eq!(&decompress(Encoding::Gzip, &z, data.len()).unwrap()[..], &data[..]);
        }
    }
}
