//! Object IDs: where their entropy comes from, their text form (64
//! lowercase hex digits, as containerd and CRI-O make them), and lookup by
//! full ID or unique prefix, as `crictl` and kubelet use them.

use std::collections::BTreeMap;
use std::ops::Bound;

/// Length of an ID: 32 bytes of entropy as lowercase hex.
pub const ID_LEN: usize = 64;

/// Where new IDs come from. The core reads no randomness itself: the
/// frontend implements this over the OS's random source; tests and fuzzers
/// use [`SeqIds`] or a closure.
///
/// Each call must return fresh bytes. A value that collides with an existing
/// ID is discarded and another drawn (up to [`MAX_DRAWS`] times), so a
/// source that keeps repeating itself makes creation fail with `INTERNAL`
/// rather than loop.
pub trait IdSource {
    /// 32 bytes of entropy for one new ID.
    fn next_entropy(&mut self) -> [u8; 32];
}

impl<F: FnMut() -> [u8; 32]> IdSource for F {
    fn next_entropy(&mut self) -> [u8; 32] {
        self()
    }
}

/// How many draws one creation may use before giving up.
pub const MAX_DRAWS: usize = 16;

/// A deterministic [`IdSource`]: SplitMix64 over a seed and a counter, so
/// the IDs look random (short prefixes are usually unique) but repeat
/// exactly for the same seed.
#[derive(Clone, Debug, Default)]
pub struct SeqIds {
    seed: u64,
    counter: u64,
}

impl SeqIds {
    pub fn new(seed: u64) -> SeqIds {
        SeqIds { seed, counter: 0 }
    }
}

fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl IdSource for SeqIds {
    fn next_entropy(&mut self) -> [u8; 32] {
        self.counter = self.counter.wrapping_add(1);
        let mut state = self.seed ^ self.counter.wrapping_mul(0xa076_1d64_78bd_642f);
        let mut out = [0u8; 32];
        for chunk in out.chunks_mut(8) {
            let word = splitmix64(&mut state).to_be_bytes();
            for (o, w) in chunk.iter_mut().zip(word) {
                *o = w;
            }
        }
        out
    }
}

/// The text form of an ID: 64 lowercase hex digits.
pub fn hex_id(bytes: &[u8; 32]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(ID_LEN);
    for b in bytes {
        // Writing to a String cannot fail.
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// Whether `s` has the form of an ID crisp makes.
pub fn is_valid_id(s: &str) -> bool {
    s.len() == ID_LEN
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The result of looking an object up by ID or prefix.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Lookup<'a> {
    /// Exactly one visible object has this ID or ID prefix.
    Found(&'a str),
    /// None has.
    NotFound,
    /// The prefix matches more than one.
    Ambiguous,
    /// The key was empty.
    Empty,
}

/// Finds the single key of `map` equal to `key` or starting with it, among
/// the entries `visible` accepts. An exact match wins over longer keys
/// sharing the prefix (all IDs have the same length, so this only matters
/// for foreign keys).
pub(crate) fn lookup<'a, V>(
    map: &'a BTreeMap<String, V>,
    key: &str,
    visible: impl Fn(&V) -> bool,
) -> Lookup<'a> {
    if key.is_empty() {
        return Lookup::Empty;
    }
    if let Some((k, v)) = map.get_key_value(key) {
        if visible(v) {
            return Lookup::Found(k.as_str());
        }
    }
    let mut found = None;
    for (k, v) in map.range::<str, _>((Bound::Included(key), Bound::Unbounded)) {
        if !k.starts_with(key) {
            break;
        }
        if !visible(v) {
            continue;
        }
        if found.is_some() {
            return Lookup::Ambiguous;
        }
        found = Some(k.as_str());
    }
    match found {
        Some(k) => Lookup::Found(k),
        None => Lookup::NotFound,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_form() {
        let id = hex_id(&[0xab; 32]);
        assert_eq!(id.len(), ID_LEN);
        assert!(id.chars().all(|c| c == 'a' || c == 'b'));
        assert!(is_valid_id(&id));
        assert!(!is_valid_id(&id.to_uppercase()));
        assert!(!is_valid_id(&id[1..]));
        assert!(!is_valid_id(""));
    }

    #[test]
    fn seq_ids_are_deterministic_and_distinct() {
        let mut a = SeqIds::new(7);
        let mut b = SeqIds::new(7);
        let mut c = SeqIds::new(8);
        let xs: Vec<_> = (0..100).map(|_| a.next_entropy()).collect();
        let ys: Vec<_> = (0..100).map(|_| b.next_entropy()).collect();
        assert_eq!(xs, ys);
        let mut set = std::collections::BTreeSet::new();
        for x in &xs {
            assert!(set.insert(*x));
        }
        assert_ne!(xs[0], c.next_entropy());
    }

    #[test]
    fn prefix_lookup() {
        let mut m = BTreeMap::new();
        m.insert("abc1".to_string(), true);
        m.insert("abc2".to_string(), true);
        m.insert("abd3".to_string(), false);
        m.insert("b".to_string(), true);
        m.insert("bb".to_string(), true);
        let vis = |v: &bool| *v;
        assert_eq!(lookup(&m, "", vis), Lookup::Empty);
        assert_eq!(lookup(&m, "abc", vis), Lookup::Ambiguous);
        assert_eq!(lookup(&m, "abc1", vis), Lookup::Found("abc1"));
        assert_eq!(lookup(&m, "ab", vis), Lookup::Ambiguous);
        // Invisible entries neither match nor make a prefix ambiguous.
        assert_eq!(lookup(&m, "abd", vis), Lookup::NotFound);
        assert_eq!(lookup(&m, "abd3", vis), Lookup::NotFound);
        // An exact match wins.
        assert_eq!(lookup(&m, "b", vis), Lookup::Found("b"));
        assert_eq!(lookup(&m, "c", vis), Lookup::NotFound);
    }
}
