//! SPDY/3 header blocks: the name/value block format (SPDY/3.1 §2.6.10)
//! and its zlib compression with the SPDY dictionary.
//!
//! Each direction of a session is one zlib stream: every header block is a
//! piece of it ending at a sync flush, so the compressor and decompressor
//! live as long as the connection and a block can only be inflated after
//! all the blocks before it. A block that fails to inflate (or that we
//! refuse to inflate fully) leaves the two ends out of step: that is a
//! session error, never a stream error.

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

use super::dictionary::DICTIONARY;
use super::frame::be_u32;

/// Decoded headers, names lower-case, in the order they came. A value may
/// hold several values separated by NUL, as the protocol allows.
pub type HeaderList = Vec<(String, String)>;

/// The value of header `name` (lower-case), if present.
pub fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

/// The uncompressed block for `headers` (names are sent lower-case).
pub fn encode_block(headers: &[(String, String)]) -> Vec<u8> {
    let len: usize = headers.iter().map(|(n, v)| 8 + n.len() + v.len()).sum();
    let mut out = Vec::with_capacity(4 + len);
    out.extend_from_slice(&u32::try_from(headers.len()).unwrap_or(0).to_be_bytes());
    for (name, value) in headers {
        out.extend_from_slice(&u32::try_from(name.len()).unwrap_or(0).to_be_bytes());
        out.extend(name.bytes().map(|b| b.to_ascii_lowercase()));
        out.extend_from_slice(&u32::try_from(value.len()).unwrap_or(0).to_be_bytes());
        out.extend_from_slice(value.as_bytes());
    }
    out
}

/// Parses an uncompressed block. Errors are the peer's, for one stream.
pub fn decode_block(b: &[u8]) -> Result<HeaderList, &'static str> {
    let count = be_u32(b, 0).ok_or("header block too short")? as usize;
    // Every pair takes at least 8 bytes: a count the block cannot hold is
    // refused before anything is allocated for it.
    if count > b.len() / 8 {
        return Err("header count larger than the block");
    }
    let mut out: HeaderList = Vec::with_capacity(count);
    let mut pos = 4usize;
    let take = |pos: &mut usize| -> Result<&[u8], &'static str> {
        let len = be_u32(b, *pos).ok_or("truncated header block")? as usize;
        let start = pos.checked_add(4).ok_or("truncated header block")?;
        let end = start.checked_add(len).ok_or("truncated header block")?;
        let s = b.get(start..end).ok_or("truncated header block")?;
        *pos = end;
        Ok(s)
    };
    for _ in 0..count {
        let name = take(&mut pos)?;
        let value = take(&mut pos)?;
        if name.is_empty() {
            return Err("empty header name");
        }
        if name.iter().any(|c| c.is_ascii_uppercase()) {
            return Err("upper-case header name");
        }
        let name = std::str::from_utf8(name).map_err(|_| "header name not UTF-8")?;
        let value = std::str::from_utf8(value).map_err(|_| "header value not UTF-8")?;
        if out.iter().any(|(n, _)| n == name) {
            return Err("duplicate header name");
        }
        out.push((name.to_string(), value.to_string()));
    }
    if pos != b.len() {
        return Err("bytes after the last header");
    }
    Ok(out)
}

/// Why a compressed block could not be inflated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InflateError {
    /// Not valid zlib data (or the wrong dictionary).
    Corrupt,
    /// It inflates past the configured limit.
    TooLarge,
}

/// The receiving half of header compression.
pub struct Inflater {
    zlib: Decompress,
}

impl Default for Inflater {
    fn default() -> Self {
        Self::new()
    }
}

impl Inflater {
    pub fn new() -> Self {
        Self {
            zlib: Decompress::new(true),
        }
    }

    /// Inflates one header block into `out`, which may grow to `max` bytes.
    pub fn inflate(
        &mut self,
        input: &[u8],
        max: usize,
        out: &mut Vec<u8>,
    ) -> Result<(), InflateError> {
        let mut chunk = [0u8; 4096];
        let mut pos = 0usize;
        loop {
            let rest = input.get(pos..).unwrap_or(&[]);
            let (in0, out0) = (self.zlib.total_in(), self.zlib.total_out());
            let result = self
                .zlib
                .decompress(rest, &mut chunk, FlushDecompress::Sync);
            let used = usize::try_from(self.zlib.total_in() - in0).unwrap_or(usize::MAX);
            let made = usize::try_from(self.zlib.total_out() - out0).unwrap_or(usize::MAX);
            pos = pos.saturating_add(used);
            let produced = chunk.get(..made).ok_or(InflateError::Corrupt)?;
            if out.len().saturating_add(made) > max {
                return Err(InflateError::TooLarge);
            }
            out.extend_from_slice(produced);
            match result {
                Err(e) if e.needs_dictionary().is_some() => {
                    self.zlib
                        .set_dictionary(&DICTIONARY)
                        .map_err(|_| InflateError::Corrupt)?;
                }
                Err(_) => return Err(InflateError::Corrupt),
                Ok(Status::StreamEnd) => {
                    // The peer ended its zlib stream: nothing may follow.
                    return if pos >= input.len() {
                        Ok(())
                    } else {
                        Err(InflateError::Corrupt)
                    };
                }
                Ok(_) => {
                    if pos >= input.len() && made < chunk.len() {
                        return Ok(());
                    }
                    if used == 0 && made == 0 {
                        // A block that does not end at a flush point.
                        return Err(InflateError::Corrupt);
                    }
                }
            }
        }
    }
}

/// The sending half of header compression.
pub struct Deflater {
    zlib: Compress,
}

impl Default for Deflater {
    fn default() -> Self {
        Self::new()
    }
}

impl Deflater {
    pub fn new() -> Self {
        let mut zlib = Compress::new(Compression::default(), true);
        // Set before the first byte is compressed, as zlib requires; it
        // cannot fail then (the dictionary is non-empty and fixed).
        let _ = zlib.set_dictionary(&DICTIONARY);
        Self { zlib }
    }

    /// Compresses one block, ending it at a sync flush.
    pub fn deflate(&mut self, plain: &[u8], out: &mut Vec<u8>) -> Result<(), &'static str> {
        let mut pos = 0usize;
        // A sync flush of n bytes never needs more than a few rounds of
        // this size; the bound only guards against a zlib that stalls.
        for _ in 0..1024 {
            out.reserve(plain.len() / 2 + 64);
            let in0 = self.zlib.total_in();
            let rest = plain.get(pos..).unwrap_or(&[]);
            self.zlib
                .compress_vec(rest, out, FlushCompress::Sync)
                .map_err(|_| "header compression failed")?;
            let used = usize::try_from(self.zlib.total_in() - in0).unwrap_or(usize::MAX);
            pos = pos.saturating_add(used);
            if pos >= plain.len() && out.len() < out.capacity() {
                return Ok(());
            }
        }
        Err("header compression made no progress")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pairs: &[(&str, &str)]) -> HeaderList {
        pairs
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn blocks_round_trip_through_one_zlib_stream() {
        let mut d = Deflater::new();
        let mut i = Inflater::new();
        for round in 0..5 {
            let headers = h(&[
                ("streamtype", "stdout"),
                ("port", "8080"),
                ("requestid", &round.to_string()),
            ]);
            let mut wire = Vec::new();
            d.deflate(&encode_block(&headers), &mut wire).unwrap();
            assert_eq!(&wire[wire.len() - 4..], &[0, 0, 0xff, 0xff]);
            let mut plain = Vec::new();
            i.inflate(&wire, 16 * 1024, &mut plain).unwrap();
            assert_eq!(decode_block(&plain).unwrap(), headers);
        }
    }

    #[test]
    fn python_zlib_with_the_dictionary_interoperates() {
        // A block compressed by CPython's zlib (compressobj with zdict = the
        // SPDY/3 dictionary, Z_SYNC_FLUSH) for {"streamtype": "error"}.
        let wire: &[u8] = PY_BLOCK;
        let mut plain = Vec::new();
        Inflater::new().inflate(wire, 1024, &mut plain).unwrap();
        assert_eq!(decode_block(&plain).unwrap(), h(&[("streamtype", "error")]));
    }

    /// Generated once with `python3 -c 'import zlib; c = zlib.compressobj(zdict=D);
    /// print(list(c.compress(block) + c.flush(zlib.Z_SYNC_FLUSH)))'` (zlib 1.2.13).
    /// Its bytes 2..6 are the dictionary's Adler-32.
    const PY_BLOCK: &[u8] = &[
        0x78, 0xbb, 0xe3, 0xc6, 0xa7, 0xc2, 0x02, 0xa6, 0x23, 0x46, 0x70, 0x3a, 0x2b, 0x29, 0x4a,
        0x4d, 0xcc, 0x85, 0x16, 0x25, 0xac, 0xa9, 0xa0, 0x80, 0x06, 0x00, 0x00, 0x00, 0xff, 0xff,
    ];

    #[test]
    fn limits_and_garbage() {
        let mut d = Deflater::new();
        let big = h(&[("x", &"a".repeat(100_000))]);
        let mut wire = Vec::new();
        d.deflate(&encode_block(&big), &mut wire).unwrap();
        assert!(wire.len() < 2000, "{}", wire.len());
        let mut plain = Vec::new();
        assert_eq!(
            Inflater::new().inflate(&wire, 16 * 1024, &mut plain),
            Err(InflateError::TooLarge)
        );
        assert!(plain.len() <= 16 * 1024);
        assert_eq!(
            Inflater::new().inflate(b"\x00\x01garbage", 1024, &mut Vec::new()),
            Err(InflateError::Corrupt)
        );
    }

    #[test]
    fn bad_blocks() {
        let ok = encode_block(&h(&[("a", "1")]));
        assert!(decode_block(&ok).is_ok());
        assert!(decode_block(&encode_block(&h(&[("", "1")]))).is_err());
        assert!(decode_block(&encode_block(&h(&[("a", "1"), ("a", "2")]))).is_err());
        let mut upper = ok.clone();
        upper[8] = b'A';
        assert!(decode_block(&upper).is_err());
        assert!(decode_block(&[0, 0, 0, 1]).is_err());
        assert!(decode_block(&[0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0]).is_err());
        let mut trailing = ok.clone();
        trailing.push(0);
        assert!(decode_block(&trailing).is_err());
        assert!(decode_block(&ok[..ok.len() - 1]).is_err());
    }
}
