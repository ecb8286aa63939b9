//! The `grpc-timeout` header: `TimeoutValue TimeoutUnit`, where the value is
//! 1 to 8 ASCII digits and the unit one of `H M S m u n` (hours, minutes,
//! seconds, milliseconds, microseconds, nanoseconds).
//!
//! Only durations live here. The caller turns one into a deadline as
//! `now + duration` with the time it was handed; nothing here reads a clock.

use std::fmt;
use std::time::Duration;

use super::status::Status;

/// Longest allowed `TimeoutValue`.
pub const MAX_TIMEOUT_DIGITS: usize = 8;
const MAX_VALUE: u64 = 99_999_999;

/// A `grpc-timeout` value that does not follow the grammar.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InvalidTimeout;

impl InvalidTimeout {
    /// The status a server fails the call with (as grpc-go does, INTERNAL).
    pub fn to_status(&self) -> Status {
        Status::internal("malformed grpc-timeout header")
    }
}

impl fmt::Display for InvalidTimeout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("malformed grpc-timeout header")
    }
}

impl std::error::Error for InvalidTimeout {}

/// Parses a `grpc-timeout` header value. Strict about the grammar (no
/// whitespace, sign or extra characters), except that a zero value is
/// accepted and means the deadline has already passed.
pub fn parse_timeout(v: &[u8]) -> Result<Duration, InvalidTimeout> {
    let Some((&unit, digits)) = v.split_last() else {
        return Err(InvalidTimeout);
    };
    if digits.is_empty() || digits.len() > MAX_TIMEOUT_DIGITS {
        return Err(InvalidTimeout);
    }
    let mut n: u64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return Err(InvalidTimeout);
        }
        n = n * 10 + u64::from(d - b'0');
    }
    // At most 99_999_999 hours: about 3.6e11 seconds, well inside a u64.
    Ok(match unit {
        b'H' => Duration::from_secs(n * 3600),
        b'M' => Duration::from_secs(n * 60),
        b'S' => Duration::from_secs(n),
        b'm' => Duration::from_millis(n),
        b'u' => Duration::from_micros(n),
        b'n' => Duration::from_nanos(n),
        _ => return Err(InvalidTimeout),
    })
}

/// An encoded `grpc-timeout` value, held inline (at most 8 digits and a
/// unit), so encoding allocates nothing.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct EncodedTimeout {
    buf: [u8; MAX_TIMEOUT_DIGITS + 1],
    len: u8,
}

impl EncodedTimeout {
    pub fn as_bytes(&self) -> &[u8] {
        self.buf.get(..usize::from(self.len)).unwrap_or_default()
    }

    pub fn as_str(&self) -> &str {
        // Only ASCII digits and a unit letter are ever written.
        std::str::from_utf8(self.as_bytes()).unwrap_or("")
    }
}

impl AsRef<[u8]> for EncodedTimeout {
    fn as_ref(&self) -> &[u8] {
        self.as_bytes()
    }
}

impl fmt::Debug for EncodedTimeout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EncodedTimeout({:?})", self.as_str())
    }
}

impl fmt::Display for EncodedTimeout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Encodes a duration for `grpc-timeout`, in the finest unit whose value
/// fits in 8 digits. When a coarser unit is needed the value is rounded up,
/// so the peer never sees a shorter timeout than asked for; durations past
/// 99,999,999 hours are capped there.
pub fn encode_timeout(d: Duration) -> EncodedTimeout {
    const UNITS: [(u128, u8); 6] = [
        (1, b'n'),
        (1_000, b'u'),
        (1_000_000, b'm'),
        (1_000_000_000, b'S'),
        (60_000_000_000, b'M'),
        (3_600_000_000_000, b'H'),
    ];
    let nanos = d.as_nanos();
    let (value, unit) = UNITS
        .iter()
        .map(|&(per, unit)| (nanos.div_ceil(per), unit))
        .find(|&(v, _)| v <= u128::from(MAX_VALUE))
        .unwrap_or((u128::from(MAX_VALUE), b'H'));
    // `value` is at most MAX_VALUE here.
    let mut value = u64::try_from(value).unwrap_or(MAX_VALUE);

    // The digits, most significant first, then the unit.
    let ndigits = value
        .checked_ilog10()
        .map_or(1, |log| log as usize + 1)
        .min(MAX_TIMEOUT_DIGITS);
    let mut buf = [0u8; MAX_TIMEOUT_DIGITS + 1];
    for slot in buf.iter_mut().take(ndigits).rev() {
        *slot = b'0' + (value % 10) as u8;
        value /= 10;
    }
    if let Some(slot) = buf.get_mut(ndigits) {
        *slot = unit;
    }
    EncodedTimeout {
        buf,
        len: (ndigits + 1) as u8,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn p(s: &str) -> Result<Duration, InvalidTimeout> {
        parse_timeout(s.as_bytes())
    }

    #[test]
    fn each_unit() {
        assert_eq!(p("2H"), Ok(Duration::from_secs(7200)));
        assert_eq!(p("3M"), Ok(Duration::from_secs(180)));
        assert_eq!(p("1S"), Ok(Duration::from_secs(1)));
        assert_eq!(p("250m"), Ok(Duration::from_millis(250)));
        assert_eq!(p("17u"), Ok(Duration::from_micros(17)));
        assert_eq!(p("999n"), Ok(Duration::from_nanos(999)));
        assert_eq!(p("0S"), Ok(Duration::ZERO));
        assert_eq!(p("00000001m"), Ok(Duration::from_millis(1)));
        assert_eq!(p("99999999H"), Ok(Duration::from_secs(99_999_999 * 3600)));
    }

    #[test]
    fn malformed_rejected() {
        for bad in [
            "",
            "S",
            "m",
            "123",
            "123456789S",
            "1x",
            "1s",
            "1h",
            "-1S",
            "+1S",
            " 1S",
            "1S ",
            "1 S",
            "1.5S",
            "1SS",
            "abcS",
            "٣S",
        ] {
            assert_eq!(p(bad), Err(InvalidTimeout), "{bad:?}");
        }
        assert_eq!(InvalidTimeout.to_status().code, crate::grpc::Code::Internal);
    }

    #[test]
    fn encode_examples() {
        assert_eq!(encode_timeout(Duration::ZERO).as_str(), "0n");
        assert_eq!(
            encode_timeout(Duration::from_nanos(99_999_999)).as_str(),
            "99999999n"
        );
        assert_eq!(
            encode_timeout(Duration::from_millis(100)).as_str(),
            "100000u"
        );
        assert_eq!(encode_timeout(Duration::from_secs(1)).as_str(), "1000000u");
        assert_eq!(encode_timeout(Duration::from_secs(100)).as_str(), "100000m");
        assert_eq!(
            encode_timeout(Duration::from_secs(200_000)).as_str(),
            "200000S"
        );
        // Rounded up, never down.
        assert_eq!(
            encode_timeout(Duration::from_nanos(100_000_001)).as_str(),
            "100001u"
        );
        assert_eq!(encode_timeout(Duration::MAX).as_str(), "99999999H");
        assert_eq!(
            encode_timeout(Duration::from_secs(3600 * 200_000_000)).as_str(),
            "99999999H"
        );
        assert_eq!(
            encode_timeout(Duration::from_secs(1)).as_bytes(),
            b"1000000u"
        );
    }

    proptest! {
        #[test]
        fn encode_then_parse(secs in 0u64..359_999_996_400, nanos in 0u32..1_000_000_000) {
            let d = Duration::new(secs, nanos);
            let enc = encode_timeout(d);
            prop_assert!(enc.as_bytes().len() <= MAX_TIMEOUT_DIGITS + 1);
            let back = parse_timeout(enc.as_bytes()).unwrap();
            prop_assert!(back >= d);
            // Rounding up costs less than one step of the chosen unit,
            // which is at most 1/99,999,999 of the value + 1 unit.
            let slack = back - d;
            prop_assert!(slack <= d / 99_999_999 + Duration::from_secs(3600));
        }

        #[test]
        fn exact_when_representable(v in 0u64..=99_999_999, unit in 0usize..6) {
            let s = format!("{v}{}", ["n", "u", "m", "S", "M", "H"][unit]);
            let d = parse_timeout(s.as_bytes()).unwrap();
            prop_assert_eq!(parse_timeout(encode_timeout(d).as_bytes()).unwrap(), d);
        }

        #[test]
        fn random_bytes_never_panic(raw in proptest::collection::vec(any::<u8>(), 0..12)) {
            let _ = parse_timeout(&raw);
        }
    }
}
