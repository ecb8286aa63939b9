//! Deterministic helpers shared by the targets.

/// A small deterministic PRNG (SplitMix64), seeded from the input so a
/// crashing input replays exactly.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed ^ 0x9e37_79b9_7f4a_7c15)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform-ish in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// A chunk length: often tiny (to split headers and prefixes), sometimes
    /// empty, sometimes large.
    pub fn chunk_len(&mut self) -> usize {
        match self.below(16) {
            0 => 0,
            1..=6 => 1 + self.below(8),
            7..=11 => 1 + self.below(64),
            12..=14 => 1 + self.below(1024),
            _ => 1 + self.below(1 << 16),
        }
    }
}

/// Split `data` into consecutive chunks (some possibly empty) whose sizes
/// come from `rng`. Concatenated, they are `data`.
pub fn chunks<'a>(data: &'a [u8], rng: &mut Rng) -> Vec<&'a [u8]> {
    let mut out = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        let n = rng.chunk_len().min(rest.len());
        let (a, b) = rest.split_at(n);
        out.push(a);
        rest = b;
    }
    out
}

/// Big-endian u16 at the front of `data`, if there are two bytes.
pub fn take_u16(data: &mut &[u8]) -> Option<u16> {
    let (head, rest) = data.split_first_chunk::<2>()?;
    *data = rest;
    Some(u16::from_be_bytes(*head))
}

/// One byte off the front of `data`.
pub fn take_u8(data: &mut &[u8]) -> Option<u8> {
    let (&b, rest) = data.split_first()?;
    *data = rest;
    Some(b)
}
