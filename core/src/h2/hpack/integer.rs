//! Prefix-coded integers (RFC 7541 §5.1).

use bytes::{BufMut, BytesMut};

use super::DecodeError;

/// Largest value we accept. Nothing legitimate in HPACK (indices, string
/// lengths, table sizes) comes near it, and capping here keeps every later
/// addition free of overflow.
pub const MAX_VALUE: u64 = u32::MAX as u64;

/// Reads an integer whose first byte is `buf[*pos]`, using the low
/// `prefix_bits` (1..=8) bits of that byte, and advances `pos` past it.
#[inline]
pub fn decode(buf: &[u8], pos: &mut usize, prefix_bits: u32) -> Result<usize, DecodeError> {
    let first = *buf.get(*pos).ok_or(DecodeError::Truncated)?;
    *pos += 1;
    let max_prefix = 0xffu8 >> (8 - prefix_bits);
    let mut value = u64::from(first & max_prefix);
    if value < u64::from(max_prefix) {
        return Ok(value as usize);
    }
    let mut shift = 0u32;
    loop {
        let b = *buf.get(*pos).ok_or(DecodeError::Truncated)?;
        *pos += 1;
        value += u64::from(b & 0x7f) << shift;
        if value > MAX_VALUE {
            return Err(DecodeError::IntegerOverflow);
        }
        if b & 0x80 == 0 {
            return usize::try_from(value).map_err(|_| DecodeError::IntegerOverflow);
        }
        shift += 7;
        // Five continuation bytes carry 35 bits; more can only be padding
        // zeros, which would let a peer stall us with an endless integer.
        if shift > 28 {
            return Err(DecodeError::IntegerOverflow);
        }
    }
}

/// Writes `value` with the top bits of the first byte set to `flags`.
#[inline]
pub fn encode(dst: &mut BytesMut, flags: u8, prefix_bits: u32, value: usize) {
    let max_prefix = 0xffu8 >> (8 - prefix_bits);
    if value < usize::from(max_prefix) {
        dst.put_u8(flags | value as u8);
        return;
    }
    dst.put_u8(flags | max_prefix);
    let mut rest = value - usize::from(max_prefix);
    while rest >= 0x80 {
        dst.put_u8(0x80 | (rest & 0x7f) as u8);
        rest >>= 7;
    }
    dst.put_u8(rest as u8);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(prefix: u32, value: usize) -> Vec<u8> {
        let mut b = BytesMut::new();
        encode(&mut b, 0, prefix, value);
        b.to_vec()
    }

    fn dec(prefix: u32, bytes: &[u8]) -> Result<(usize, usize), DecodeError> {
        let mut pos = 0;
        decode(bytes, &mut pos, prefix).map(|v| (v, pos))
    }

    #[test]
    fn c_1_1_ten_with_5_bit_prefix() {
        assert_eq!(enc(5, 10), [0x0a]);
        assert_eq!(dec(5, &[0x0a]), Ok((10, 1)));
    }

    #[test]
    fn c_1_2_1337_with_5_bit_prefix() {
        assert_eq!(enc(5, 1337), [0x1f, 0x9a, 0x0a]);
        assert_eq!(dec(5, &[0x1f, 0x9a, 0x0a]), Ok((1337, 3)));
    }

    #[test]
    fn c_1_3_42_at_octet_boundary() {
        assert_eq!(enc(8, 42), [0x2a]);
        assert_eq!(dec(8, &[0x2a]), Ok((42, 1)));
    }

    #[test]
    fn flags_above_the_prefix_are_kept_and_ignored() {
        let mut b = BytesMut::new();
        encode(&mut b, 0xe0, 5, 1337);
        assert_eq!(&b[..], [0xff, 0x9a, 0x0a]);
        assert_eq!(dec(5, &b), Ok((1337, 3)));
    }

    #[test]
    fn round_trips_at_boundaries() {
        for prefix in 1..=8 {
            let m = (1usize << prefix) - 1;
            for v in [
                0,
                1,
                m - 1,
                m,
                m + 1,
                m + 127,
                m + 128,
                1 << 20,
                u32::MAX as usize,
            ] {
                let bytes = enc(prefix, v);
                assert_eq!(
                    dec(prefix, &bytes),
                    Ok((v, bytes.len())),
                    "prefix {prefix} value {v}"
                );
            }
        }
    }

    #[test]
    fn rejects_values_over_the_cap() {
        // 2^32 with a 5-bit prefix: 31 + 4294967265.
        let bytes = enc(5, (u32::MAX as usize) + 1);
        assert_eq!(dec(5, &bytes), Err(DecodeError::IntegerOverflow));
        assert_eq!(
            dec(
                5,
                &[0x1f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f]
            ),
            Err(DecodeError::IntegerOverflow)
        );
    }

    #[test]
    fn rejects_endless_zero_continuations() {
        let mut bytes = vec![0x1f];
        bytes.extend(std::iter::repeat_n(0x80, 100));
        bytes.push(0);
        assert_eq!(dec(5, &bytes), Err(DecodeError::IntegerOverflow));
    }

    #[test]
    fn truncated() {
        assert_eq!(dec(5, &[]), Err(DecodeError::Truncated));
        assert_eq!(dec(5, &[0x1f]), Err(DecodeError::Truncated));
        assert_eq!(dec(5, &[0x1f, 0x80]), Err(DecodeError::Truncated));
    }
}
