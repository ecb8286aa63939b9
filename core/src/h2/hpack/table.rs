//! The static table (RFC 7541 Appendix A) and the dynamic table (§2.3.2, §4).

use std::collections::VecDeque;

use bytes::Bytes;

/// Per-entry overhead the RFC adds to name and value lengths (§4.1), an
/// estimate of what an implementation spends on bookkeeping per entry.
pub const ENTRY_OVERHEAD: usize = 32;

/// Number of static entries; dynamic indices start right after.
pub const STATIC_LEN: usize = 61;

/// The static table; HPACK index `i` (1-based) is `STATIC_TABLE[i - 1]`.
pub static STATIC_TABLE: [(&str, &str); STATIC_LEN] = [
    (":authority", ""),
    (":method", "GET"),
    (":method", "POST"),
    (":path", "/"),
    (":path", "/index.html"),
    (":scheme", "http"),
    (":scheme", "https"),
    (":status", "200"),
    (":status", "204"),
    (":status", "206"),
    (":status", "304"),
    (":status", "400"),
    (":status", "404"),
    (":status", "500"),
    ("accept-charset", ""),
    ("accept-encoding", "gzip, deflate"),
    ("accept-language", ""),
    ("accept-ranges", ""),
    ("accept", ""),
    ("access-control-allow-origin", ""),
    ("age", ""),
    ("allow", ""),
    ("authorization", ""),
    ("cache-control", ""),
    ("content-disposition", ""),
    ("content-encoding", ""),
    ("content-language", ""),
    ("content-length", ""),
    ("content-location", ""),
    ("content-range", ""),
    ("content-type", ""),
    ("cookie", ""),
    ("date", ""),
    ("etag", ""),
    ("expect", ""),
    ("expires", ""),
    ("from", ""),
    ("host", ""),
    ("if-match", ""),
    ("if-modified-since", ""),
    ("if-none-match", ""),
    ("if-range", ""),
    ("if-unmodified-since", ""),
    ("last-modified", ""),
    ("link", ""),
    ("location", ""),
    ("max-forwards", ""),
    ("proxy-authenticate", ""),
    ("proxy-authorization", ""),
    ("range", ""),
    ("referer", ""),
    ("refresh", ""),
    ("retry-after", ""),
    ("server", ""),
    ("set-cookie", ""),
    ("strict-transport-security", ""),
    ("transfer-encoding", ""),
    ("user-agent", ""),
    ("vary", ""),
    ("via", ""),
    ("www-authenticate", ""),
];

/// Static index of the first entry with this name and how many entries share
/// it (entries with one name are contiguous). A match on the length first keeps
/// the encoder's lookup to a jump plus a few short compares per header.
pub fn static_name_range(name: &[u8]) -> Option<(usize, usize)> {
    let found = match name.len() {
        3 => match name {
            b"age" => (21, 1),
            b"via" => (60, 1),
            _ => return None,
        },
        4 => match name {
            b"date" => (33, 1),
            b"etag" => (34, 1),
            b"from" => (37, 1),
            b"host" => (38, 1),
            b"link" => (45, 1),
            b"vary" => (59, 1),
            _ => return None,
        },
        5 => match name {
            b":path" => (4, 2),
            b"allow" => (22, 1),
            b"range" => (50, 1),
            _ => return None,
        },
        6 => match name {
            b"accept" => (19, 1),
            b"cookie" => (32, 1),
            b"expect" => (35, 1),
            b"server" => (54, 1),
            _ => return None,
        },
        7 => match name {
            b":method" => (2, 2),
            b":scheme" => (6, 2),
            b":status" => (8, 7),
            b"expires" => (36, 1),
            b"referer" => (51, 1),
            b"refresh" => (52, 1),
            _ => return None,
        },
        8 => match name {
            b"if-match" => (39, 1),
            b"if-range" => (42, 1),
            b"location" => (46, 1),
            _ => return None,
        },
        10 => match name {
            b":authority" => (1, 1),
            b"set-cookie" => (55, 1),
            b"user-agent" => (58, 1),
            _ => return None,
        },
        11 => match name {
            b"retry-after" => (53, 1),
            _ => return None,
        },
        12 => match name {
            b"content-type" => (31, 1),
            b"max-forwards" => (47, 1),
            _ => return None,
        },
        13 => match name {
            b"accept-ranges" => (18, 1),
            b"authorization" => (23, 1),
            b"cache-control" => (24, 1),
            b"content-range" => (30, 1),
            b"if-none-match" => (41, 1),
            b"last-modified" => (44, 1),
            _ => return None,
        },
        14 => match name {
            b"accept-charset" => (15, 1),
            b"content-length" => (28, 1),
            _ => return None,
        },
        15 => match name {
            b"accept-encoding" => (16, 1),
            b"accept-language" => (17, 1),
            _ => return None,
        },
        16 => match name {
            b"content-encoding" => (26, 1),
            b"content-language" => (27, 1),
            b"content-location" => (29, 1),
            b"www-authenticate" => (61, 1),
            _ => return None,
        },
        17 => match name {
            b"if-modified-since" => (40, 1),
            b"transfer-encoding" => (57, 1),
            _ => return None,
        },
        18 => match name {
            b"proxy-authenticate" => (48, 1),
            _ => return None,
        },
        19 => match name {
            b"content-disposition" => (25, 1),
            b"if-unmodified-since" => (43, 1),
            b"proxy-authorization" => (49, 1),
            _ => return None,
        },
        25 => match name {
            b"strict-transport-security" => (56, 1),
            _ => return None,
        },
        27 => match name {
            b"access-control-allow-origin" => (20, 1),
            _ => return None,
        },
        _ => return None,
    };
    Some(found)
}

/// Where a header stands against the static table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StaticMatch {
    /// Name and value both match this index.
    Full(usize),
    /// Only the name matches; this is its first index.
    Name(usize),
}

/// Finds the best static entry for a header, if the name is there at all.
pub fn static_find(name: &[u8], value: &[u8]) -> Option<StaticMatch> {
    let (first, count) = static_name_range(name)?;
    let exact = STATIC_TABLE
        .get(first - 1..first - 1 + count)
        .and_then(|entries| entries.iter().position(|e| e.1.as_bytes() == value));
    Some(match exact {
        Some(offset) => StaticMatch::Full(first + offset),
        None => StaticMatch::Name(first),
    })
}

/// Size of an entry as the RFC counts it (§4.1).
#[inline]
pub fn entry_size(name: &[u8], value: &[u8]) -> usize {
    name.len() + value.len() + ENTRY_OVERHEAD
}

/// The dynamic table, shared in shape by encoder and decoder: newest entry at
/// the front (HPACK index 62), eviction from the back.
#[derive(Debug)]
pub struct DynamicTable {
    entries: VecDeque<(Bytes, Bytes)>,
    size: usize,
    max_size: usize,
}

impl DynamicTable {
    pub fn new(max_size: usize) -> Self {
        Self {
            entries: VecDeque::new(),
            size: 0,
            max_size,
        }
    }

    /// Sum of the entry sizes now in the table.
    pub fn size(&self) -> usize {
        self.size
    }

    pub fn max_size(&self) -> usize {
        self.max_size
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Entry `i`, counting from the newest (HPACK index `i + 62`).
    #[inline]
    pub fn get(&self, i: usize) -> Option<&(Bytes, Bytes)> {
        self.entries.get(i)
    }

    /// Entries from newest to oldest.
    pub fn iter(&self) -> impl Iterator<Item = &(Bytes, Bytes)> {
        self.entries.iter()
    }

    /// A size update (§4.3): evict until the table fits.
    pub fn set_max_size(&mut self, max_size: usize) {
        self.max_size = max_size;
        self.evict_to(max_size);
    }

    /// Adds an entry, evicting the oldest as needed (§4.4). An entry larger
    /// than the whole table is not an error: it empties the table.
    pub fn insert(&mut self, name: Bytes, value: Bytes) {
        let size = entry_size(&name, &value);
        if size > self.max_size {
            self.entries.clear();
            self.size = 0;
            return;
        }
        self.evict_to(self.max_size - size);
        self.entries.push_front((name, value));
        self.size += size;
    }

    fn evict_to(&mut self, target: usize) {
        while self.size > target {
            match self.entries.pop_back() {
                Some((n, v)) => self.size -= entry_size(&n, &v),
                None => {
                    // Unreachable while `size` is kept in step with the
                    // entries; resetting is the safe answer if not.
                    self.size = 0;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_lookup_agrees_with_the_table() {
        for (i, &(name, value)) in STATIC_TABLE.iter().enumerate() {
            let (first, count) = static_name_range(name.as_bytes()).unwrap();
            assert!((first..first + count).contains(&(i + 1)), "{name}");
            assert_eq!(STATIC_TABLE[first - 1].0, name);
            assert!(first == 1 || STATIC_TABLE[first - 2].0 != name);
            assert_ne!(STATIC_TABLE.get(first - 1 + count).map(|e| e.0), Some(name));
            assert_eq!(
                static_find(name.as_bytes(), value.as_bytes()),
                Some(StaticMatch::Full(i + 1))
            );
        }
        assert_eq!(static_find(b":status", b"418"), Some(StaticMatch::Name(8)));
        assert_eq!(static_find(b"accept", b"*/*"), Some(StaticMatch::Name(19)));
        assert_eq!(static_find(b"x-custom", b""), None);
        assert_eq!(static_find(b":Method", b"GET"), None);
    }

    #[test]
    fn eviction_and_oversized_entries() {
        let mut t = DynamicTable::new(60);
        t.insert("a".into(), "b".into());
        assert_eq!((t.len(), t.size()), (1, 34));
        t.insert("cc".into(), "dd".into());
        assert_eq!((t.len(), t.size()), (1, 36));
        assert_eq!(t.get(0).map(|e| &e.0[..]), Some(&b"cc"[..]));
        t.insert("0123456789abcdef".into(), "0123456789abcdef".into());
        assert_eq!((t.len(), t.size()), (0, 0));
        t.insert("a".into(), "b".into());
        t.set_max_size(100);
        t.insert("c".into(), "d".into());
        assert_eq!(t.get(1).map(|e| &e.0[..]), Some(&b"a"[..]));
        t.set_max_size(40);
        assert_eq!((t.len(), t.size()), (1, 34));
        assert_eq!(t.get(0).map(|e| &e.0[..]), Some(&b"c"[..]));
        t.set_max_size(0);
        assert_eq!((t.len(), t.size()), (0, 0));
    }
}
