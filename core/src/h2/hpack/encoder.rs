//! Header block encoding (RFC 7541 §6).

use bytes::BytesMut;

use super::table::{entry_size, static_find, DynamicTable, StaticMatch, STATIC_LEN};
use super::{huffman, integer, Header};

/// The most table we are willing to keep per connection for the peer's
/// decoder, whatever larger size it offers; also the protocol default.
const MAX_TABLE_SIZE: usize = 4096;

/// Encodes our header blocks; one per connection.
#[derive(Debug)]
pub struct Encoder {
    table: DynamicTable,
    /// Size changes not yet announced: the smallest size chosen since the
    /// last block, and the latest one (§4.2 wants both when they differ).
    pending_update: Option<(usize, usize)>,
    huffman: bool,
}

impl Default for Encoder {
    fn default() -> Self {
        Self::new()
    }
}

impl Encoder {
    /// An encoder for a peer with the default 4096-byte table.
    pub fn new() -> Self {
        Self {
            table: DynamicTable::new(MAX_TABLE_SIZE),
            pending_update: None,
            huffman: true,
        }
    }

    /// The peer's SETTINGS_HEADER_TABLE_SIZE changed. We use up to
    /// `min(max, 4096)` and announce it at the start of the next block (§6.3);
    /// if it went down and up again in between, the minimum is announced
    /// first so the peer's decoder evicts what it must.
    pub fn set_max_table_size(&mut self, max: usize) {
        let size = max.min(MAX_TABLE_SIZE);
        self.pending_update = match self.pending_update {
            None if size == self.table.max_size() => None,
            None => Some((size, size)),
            Some((min, _)) => Some((min.min(size), size)),
        };
    }

    /// Bytes our model of the peer's dynamic table holds now.
    pub fn table_size(&self) -> usize {
        self.table.size()
    }

    /// Encode a header block into `dst`.
    ///
    /// Full table matches become indexed fields. Otherwise the field is a
    /// literal, reusing a table name if there is one: never-indexed if
    /// sensitive; indexed if its entry would take at most half the table (so
    /// one big value cannot flush everything else) and its name is not one
    /// whose values rarely repeat; else plain. Strings are Huffman-coded only
    /// when that is strictly shorter, since plain strings decode zero-copy.
    pub fn encode<'h>(
        &mut self,
        headers: impl IntoIterator<Item = &'h Header>,
        dst: &mut BytesMut,
    ) {
        if let Some((min, last)) = self.pending_update.take() {
            if min < last {
                integer::encode(dst, 0x20, 5, min);
                self.table.set_max_size(min);
            }
            integer::encode(dst, 0x20, 5, last);
            self.table.set_max_size(last);
        }
        for h in headers {
            self.encode_one(h, dst);
        }
    }

    fn encode_one(&mut self, h: &Header, dst: &mut BytesMut) {
        let (name, value) = (&h.name[..], &h.value[..]);
        let mut name_index = 0;
        match static_find(name, value) {
            Some(StaticMatch::Full(i)) if !h.sensitive => {
                integer::encode(dst, 0x80, 7, i);
                return;
            }
            Some(StaticMatch::Full(i) | StaticMatch::Name(i)) => name_index = i,
            None => {}
        }
        for (i, (n, v)) in self.table.iter().enumerate() {
            if n[..] != *name {
                continue;
            }
            if !h.sensitive && v[..] == *value {
                integer::encode(dst, 0x80, 7, STATIC_LEN + 1 + i);
                return;
            }
            if name_index == 0 {
                name_index = STATIC_LEN + 1 + i;
                if h.sensitive {
                    break;
                }
            }
        }

        let index = !h.sensitive
            && entry_size(name, value) <= self.table.max_size() / 2
            && !values_rarely_repeat(name);
        let (flags, prefix_bits) = if h.sensitive {
            (0x10, 4)
        } else if index {
            (0x40, 6)
        } else {
            (0x00, 4)
        };
        integer::encode(dst, flags, prefix_bits, name_index);
        if name_index == 0 {
            self.string(name, dst);
        }
        self.string(value, dst);
        if index {
            self.table.insert(h.name.clone(), h.value.clone());
        }
    }

    fn string(&self, s: &[u8], dst: &mut BytesMut) {
        if self.huffman {
            let len = huffman::encoded_len(s);
            if len < s.len() {
                integer::encode(dst, 0x80, 7, len);
                let start = dst.len();
                dst.resize(start + len, 0);
                huffman::encode_into(s, dst.get_mut(start..).unwrap_or_default());
                return;
            }
        }
        integer::encode(dst, 0, 7, s.len());
        dst.extend_from_slice(s);
    }
}

/// Headers whose values are mostly new each time: indexing them would only
/// evict entries that do repeat.
fn values_rarely_repeat(name: &[u8]) -> bool {
    matches!(name, b"content-length" | b"grpc-timeout")
}

#[cfg(test)]
mod tests {
    use super::super::decoder::tests::{hex, REQ1, REQ2, REQ3, RESP1, RESP2, RESP3};
    use super::super::rfc7541::{C3, C4, C5, C6};
    use super::super::Decoder;
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> Vec<Header> {
        pairs
            .iter()
            .map(|&(n, v)| Header::from_static(n, v))
            .collect()
    }

    fn encode(e: &mut Encoder, h: &[Header]) -> BytesMut {
        let mut dst = BytesMut::new();
        e.encode(h, &mut dst);
        dst
    }

    fn table(e: &Encoder) -> Vec<(&[u8], &[u8])> {
        e.table.iter().map(|(n, v)| (&n[..], &v[..])).collect()
    }

    /// Encoding the RFC's header lists gives the RFC's bytes, and decoding
    /// them leaves the peer's table equal to our model of it.
    fn sequence(
        table_size: usize,
        huffman: bool,
        lists: [&[(&'static str, &'static str)]; 3],
        blocks: [&str; 3],
        exact: bool,
    ) {
        let mut e = Encoder::new();
        e.huffman = huffman;
        if table_size != MAX_TABLE_SIZE {
            // Set the size directly: the RFC examples carry no size update.
            e.table.set_max_size(table_size);
        }
        let mut d = Decoder::new(table_size);
        for (list, block) in lists.into_iter().zip(blocks) {
            let list = headers(list);
            let bytes = encode(&mut e, &list).freeze();
            if exact {
                assert_eq!(bytes, hex(block));
            }
            let mut out = Vec::new();
            d.decode(&bytes, usize::MAX, &mut out).unwrap();
            assert_eq!(out, list);
            assert_eq!(e.table_size(), d.table_size());
        }
    }

    #[test]
    fn c_3_requests_without_huffman() {
        sequence(4096, false, [REQ1, REQ2, REQ3], C3, true);
    }

    #[test]
    fn c_4_requests_with_huffman() {
        sequence(4096, true, [REQ1, REQ2, REQ3], C4, true);
    }

    #[test]
    fn c_5_responses_without_huffman() {
        sequence(256, false, [RESP1, RESP2, RESP3], C5, true);
    }

    #[test]
    fn c_6_responses_with_huffman() {
        // Not byte-exact: the RFC Huffman-codes "307" although that saves
        // nothing, where we keep it plain.
        sequence(256, true, [RESP1, RESP2, RESP3], C6, false);
        let mut e = Encoder::new();
        e.table.set_max_size(256);
        assert_eq!(encode(&mut e, &headers(RESP1)).freeze(), hex(C6[0]));
    }

    #[test]
    fn sensitive_headers_are_never_indexed() {
        let mut e = Encoder::new();
        e.huffman = false;
        let h = [Header::from_static("password", "secret").sensitive()];
        assert_eq!(
            encode(&mut e, &h).freeze(),
            hex("1008 7061 7373 776f 7264 0673 6563 7265 74")
        );
        // A sensitive field is not sent as an index even when the table has it.
        let h = [Header::from_static(":method", "GET").sensitive()];
        assert_eq!(&encode(&mut e, &h)[..], hex("1203 4745 54"));
        assert_eq!(e.table_size(), 0);
    }

    #[test]
    fn big_and_volatile_values_are_not_indexed() {
        let mut e = Encoder::new();
        let big = Header::new("x-big", vec![b'a'; 2100]);
        let len = Header::from_static("content-length", "123");
        encode(&mut e, &[big, len]);
        assert_eq!(e.table_size(), 0);
    }

    #[test]
    fn size_updates_are_announced_at_block_start() {
        let mut e = Encoder::new();
        e.huffman = false;
        let custom = [Header::from_static("custom-key", "custom-header")];
        encode(&mut e, &custom);
        assert_eq!(e.table_size(), 55);
        // Down to 0 and back up to 100: both announced, table flushed.
        e.set_max_table_size(0);
        e.set_max_table_size(100);
        let get = [Header::from_static(":method", "GET")];
        assert_eq!(&encode(&mut e, &get)[..], hex("20 3f45 82"));
        assert_eq!((e.table_size(), e.table.max_size()), (0, 100));
        // Larger offers are capped at 4096 (3fe11f); the same size again is silent.
        e.set_max_table_size(65536);
        assert_eq!(&encode(&mut e, &get)[..], hex("3fe11f 82"));
        e.set_max_table_size(8192);
        assert_eq!(&encode(&mut e, &get)[..], hex("82"));
        // A lowered size alone is announced once.
        e.set_max_table_size(1000);
        e.set_max_table_size(2000);
        e.set_max_table_size(3000);
        assert_eq!(&encode(&mut e, &get)[..], hex("3fc9 07 3f99 17 82"));
        assert_eq!(table(&e), []);
    }
}
