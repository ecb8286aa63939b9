//! Header block decoding (RFC 7541 §3, §6).

use bytes::{Bytes, BytesMut};

use super::table::{DynamicTable, STATIC_LEN, STATIC_TABLE};
use super::{huffman, integer, DecodeError, Header, HeaderListStatus};

/// Smallest chunk the Huffman output buffer grows by. Decoded strings are
/// split off one shared buffer, so a block's strings cost about one
/// allocation instead of one each; the chunk bounds how much one long-lived
/// header can keep alive.
const SCRATCH_CHUNK: usize = 1024;

/// Decodes the peer's header blocks; one per connection.
#[derive(Debug)]
pub struct Decoder {
    table: DynamicTable,
    /// The SETTINGS_HEADER_TABLE_SIZE we advertise: the ceiling for the
    /// peer's size updates.
    max_table_size: usize,
    /// We lowered our limit below the table's size; the next block must start
    /// with a size update.
    update_required: bool,
    scratch: BytesMut,
}

impl Default for Decoder {
    /// A decoder for the protocol's default 4096-byte table.
    fn default() -> Self {
        Self::new(4096)
    }
}

impl Decoder {
    /// `max_table_size`: the SETTINGS_HEADER_TABLE_SIZE we advertise (default
    /// 4096). The table starts at that size, as the peer's encoder assumes.
    pub fn new(max_table_size: usize) -> Self {
        Self {
            table: DynamicTable::new(max_table_size),
            max_table_size,
            update_required: false,
            scratch: BytesMut::new(),
        }
    }

    /// Our advertised limit changed (takes effect once the peer acked our
    /// SETTINGS). Lowering it below the table's current maximum shrinks the
    /// table now and obliges the peer to open its next block with a size
    /// update (§4.2).
    pub fn set_max_table_size(&mut self, max: usize) {
        self.max_table_size = max;
        if max < self.table.max_size() {
            self.table.set_max_size(max);
            self.update_required = true;
        }
    }

    /// Bytes the dynamic table holds now, as §4.1 counts them.
    pub fn table_size(&self) -> usize {
        self.table.size()
    }

    /// Number of entries in the dynamic table.
    pub fn table_len(&self) -> usize {
        self.table.len()
    }

    /// Decode one complete header block (HEADERS + CONTINUATION fragments
    /// concatenated) and append its fields to `out`.
    ///
    /// Once the running list size (sum of [`Header::size`]) would exceed
    /// `max_header_list_size`, fields are no longer appended, which bounds
    /// memory, but decoding goes on so the dynamic table stays in sync, and
    /// the result is [`HeaderListStatus::TooLarge`].
    ///
    /// Plain literal strings are zero-copy slices of `block` (so they, and
    /// table entries made from them, keep `block` alive). On error, `out` may
    /// hold a prefix of the block's fields; the connection is done anyway.
    pub fn decode(
        &mut self,
        block: &Bytes,
        max_header_list_size: usize,
        out: &mut Vec<Header>,
    ) -> Result<HeaderListStatus, DecodeError> {
        let buf: &[u8] = block;
        let mut pos = 0;
        let mut list_size = 0usize;
        let mut too_large = false;
        let mut at_start = true;

        while let Some(&first) = buf.get(pos) {
            let header = if first & 0x80 != 0 {
                // Indexed field (§6.1).
                let index = integer::decode(buf, &mut pos, 7)?;
                let (name, value) = self.entry(index)?;
                Header {
                    name,
                    value,
                    sensitive: false,
                }
            } else if first & 0x40 != 0 {
                // Literal with incremental indexing (§6.2.1).
                let (name, value) = self.literal(block, &mut pos, 6)?;
                self.table.insert(name.clone(), value.clone());
                Header {
                    name,
                    value,
                    sensitive: false,
                }
            } else if first & 0x20 != 0 {
                // Dynamic table size update (§6.3); only before any field (§4.2).
                if !at_start {
                    return Err(DecodeError::TableSizeUpdateNotAtStart);
                }
                let size = integer::decode(buf, &mut pos, 5)?;
                if size > self.max_table_size {
                    return Err(DecodeError::TableSizeUpdateTooLarge);
                }
                self.table.set_max_size(size);
                self.update_required = false;
                continue;
            } else {
                // Literal without indexing (§6.2.2) or never indexed (§6.2.3);
                // the latter stays marked so a re-encoder keeps it unindexed.
                let (name, value) = self.literal(block, &mut pos, 4)?;
                Header {
                    name,
                    value,
                    sensitive: first & 0x10 != 0,
                }
            };
            if at_start {
                if self.update_required {
                    return Err(DecodeError::TableSizeUpdateMissing);
                }
                at_start = false;
            }
            list_size = list_size.saturating_add(header.size());
            if list_size > max_header_list_size {
                too_large = true;
            }
            if !too_large {
                out.push(header);
            }
        }
        if self.update_required {
            return Err(DecodeError::TableSizeUpdateMissing);
        }
        Ok(if too_large {
            HeaderListStatus::TooLarge
        } else {
            HeaderListStatus::Complete { size: list_size }
        })
    }

    /// Name and value at an HPACK index: 1..=61 static, then dynamic.
    #[inline]
    fn entry(&self, index: usize) -> Result<(Bytes, Bytes), DecodeError> {
        if let Some(&(name, value)) = index.checked_sub(1).and_then(|i| STATIC_TABLE.get(i)) {
            return Ok((
                Bytes::from_static(name.as_bytes()),
                Bytes::from_static(value.as_bytes()),
            ));
        }
        index
            .checked_sub(STATIC_LEN + 1)
            .and_then(|i| self.table.get(i))
            .cloned()
            .ok_or(DecodeError::InvalidIndex)
    }

    /// A literal representation: name index (0 = literal name) in the low
    /// `prefix_bits` of the first byte, then the strings.
    #[inline]
    fn literal(
        &mut self,
        block: &Bytes,
        pos: &mut usize,
        prefix_bits: u32,
    ) -> Result<(Bytes, Bytes), DecodeError> {
        let index = integer::decode(block, pos, prefix_bits)?;
        let name = if index == 0 {
            self.string(block, pos)?
        } else {
            self.entry(index)?.0
        };
        let value = self.string(block, pos)?;
        Ok((name, value))
    }

    /// A string literal (§5.2). Its length is checked against what is left
    /// of the block before anything is allocated for it.
    fn string(&mut self, block: &Bytes, pos: &mut usize) -> Result<Bytes, DecodeError> {
        let buf: &[u8] = block;
        let huffman = buf.get(*pos).ok_or(DecodeError::Truncated)? & 0x80 != 0;
        let len = integer::decode(buf, pos, 7)?;
        let start = *pos;
        let end = start
            .checked_add(len)
            .filter(|&end| end <= buf.len())
            .ok_or(DecodeError::Truncated)?;
        *pos = end;
        if !huffman {
            return Ok(block.slice(start..end));
        }
        let src = buf.get(start..end).ok_or(DecodeError::Truncated)?;
        let bound = huffman::max_decoded_len(src.len());
        if self.scratch.capacity() < bound {
            self.scratch.reserve(bound.max(SCRATCH_CHUNK));
        }
        self.scratch.resize(bound, 0);
        let n =
            huffman::decode(src, &mut self.scratch[..]).map_err(|_| DecodeError::InvalidHuffman)?;
        self.scratch.truncate(n);
        Ok(self.scratch.split().freeze())
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::h2::hpack::rfc7541::{C3, C4, C5, C6};

    pub(crate) fn hex(s: &str) -> Bytes {
        let digits: Vec<u8> = s.bytes().filter(u8::is_ascii_hexdigit).collect();
        digits
            .chunks(2)
            .map(|p| u8::from_str_radix(std::str::from_utf8(p).unwrap(), 16).unwrap())
            .collect::<Vec<u8>>()
            .into()
    }

    fn pairs(headers: &[Header]) -> Vec<(&[u8], &[u8])> {
        headers
            .iter()
            .map(|h| (&h.name[..], &h.value[..]))
            .collect()
    }

    fn table(d: &Decoder) -> Vec<(&[u8], &[u8])> {
        d.table.iter().map(|(n, v)| (&n[..], &v[..])).collect()
    }

    fn decode_ok(d: &mut Decoder, block: &str) -> Vec<Header> {
        let mut out = Vec::new();
        let status = d.decode(&hex(block), usize::MAX, &mut out).unwrap();
        let size = out.iter().map(Header::size).sum();
        assert_eq!(status, HeaderListStatus::Complete { size });
        out
    }

    fn decode_err(d: &mut Decoder, block: &str) -> DecodeError {
        d.decode(&hex(block), usize::MAX, &mut Vec::new())
            .unwrap_err()
    }

    #[test]
    fn c_2_1_literal_with_indexing() {
        let mut d = Decoder::new(4096);
        let out = decode_ok(
            &mut d,
            "400a 6375 7374 6f6d 2d6b 6579 0d63 7573 746f 6d2d 6865 6164 6572",
        );
        assert_eq!(pairs(&out), [(&b"custom-key"[..], &b"custom-header"[..])]);
        assert_eq!(table(&d), [(&b"custom-key"[..], &b"custom-header"[..])]);
        assert_eq!(d.table_size(), 55);
    }

    #[test]
    fn c_2_2_literal_without_indexing() {
        let mut d = Decoder::new(4096);
        let out = decode_ok(&mut d, "040c 2f73 616d 706c 652f 7061 7468");
        assert_eq!(pairs(&out), [(&b":path"[..], &b"/sample/path"[..])]);
        assert!(!out[0].sensitive);
        assert_eq!(d.table_len(), 0);
    }

    #[test]
    fn c_2_3_literal_never_indexed() {
        let mut d = Decoder::new(4096);
        let out = decode_ok(&mut d, "1008 7061 7373 776f 7264 0673 6563 7265 74");
        assert_eq!(pairs(&out), [(&b"password"[..], &b"secret"[..])]);
        assert!(out[0].sensitive);
        assert_eq!(d.table_len(), 0);
    }

    #[test]
    fn c_2_4_indexed() {
        let mut d = Decoder::new(4096);
        let out = decode_ok(&mut d, "82");
        assert_eq!(pairs(&out), [(&b":method"[..], &b"GET"[..])]);
        assert_eq!(d.table_len(), 0);
    }

    type Pairs = &'static [(&'static str, &'static str)];

    fn check(d: &mut Decoder, block: &str, headers: Pairs, table_after: Pairs, size: usize) {
        let out = decode_ok(d, block);
        let want: Vec<(&[u8], &[u8])> = headers
            .iter()
            .map(|(n, v)| (n.as_bytes(), v.as_bytes()))
            .collect();
        assert_eq!(pairs(&out), want, "headers of {block}");
        let want: Vec<(&[u8], &[u8])> = table_after
            .iter()
            .map(|(n, v)| (n.as_bytes(), v.as_bytes()))
            .collect();
        assert_eq!(table(d), want, "table after {block}");
        assert_eq!(d.table_size(), size);
    }

    pub(crate) const REQ1: Pairs = &[
        (":method", "GET"),
        (":scheme", "http"),
        (":path", "/"),
        (":authority", "www.example.com"),
    ];
    pub(crate) const REQ2: Pairs = &[
        (":method", "GET"),
        (":scheme", "http"),
        (":path", "/"),
        (":authority", "www.example.com"),
        ("cache-control", "no-cache"),
    ];
    pub(crate) const REQ3: Pairs = &[
        (":method", "GET"),
        (":scheme", "https"),
        (":path", "/index.html"),
        (":authority", "www.example.com"),
        ("custom-key", "custom-value"),
    ];
    const REQ_T1: Pairs = &[(":authority", "www.example.com")];
    const REQ_T2: Pairs = &[
        ("cache-control", "no-cache"),
        (":authority", "www.example.com"),
    ];
    const REQ_T3: Pairs = &[
        ("custom-key", "custom-value"),
        ("cache-control", "no-cache"),
        (":authority", "www.example.com"),
    ];

    fn requests(blocks: [&str; 3]) {
        let mut d = Decoder::new(4096);
        check(&mut d, blocks[0], REQ1, REQ_T1, 57);
        check(&mut d, blocks[1], REQ2, REQ_T2, 110);
        check(&mut d, blocks[2], REQ3, REQ_T3, 164);
    }

    #[test]
    fn c_3_requests_without_huffman() {
        requests(C3);
    }

    #[test]
    fn c_4_requests_with_huffman() {
        requests(C4);
    }

    pub(crate) const RESP1: Pairs = &[
        (":status", "302"),
        ("cache-control", "private"),
        ("date", "Mon, 21 Oct 2013 20:13:21 GMT"),
        ("location", "https://www.example.com"),
    ];
    pub(crate) const RESP2: Pairs = &[
        (":status", "307"),
        ("cache-control", "private"),
        ("date", "Mon, 21 Oct 2013 20:13:21 GMT"),
        ("location", "https://www.example.com"),
    ];
    pub(crate) const RESP3: Pairs = &[
        (":status", "200"),
        ("cache-control", "private"),
        ("date", "Mon, 21 Oct 2013 20:13:22 GMT"),
        ("location", "https://www.example.com"),
        ("content-encoding", "gzip"),
        (
            "set-cookie",
            "foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1",
        ),
    ];
    const RESP_T1: Pairs = &[
        ("location", "https://www.example.com"),
        ("date", "Mon, 21 Oct 2013 20:13:21 GMT"),
        ("cache-control", "private"),
        (":status", "302"),
    ];
    const RESP_T2: Pairs = &[
        (":status", "307"),
        ("location", "https://www.example.com"),
        ("date", "Mon, 21 Oct 2013 20:13:21 GMT"),
        ("cache-control", "private"),
    ];
    const RESP_T3: Pairs = &[
        (
            "set-cookie",
            "foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1",
        ),
        ("content-encoding", "gzip"),
        ("date", "Mon, 21 Oct 2013 20:13:22 GMT"),
    ];

    fn responses(blocks: [&str; 3]) {
        let mut d = Decoder::new(256);
        check(&mut d, blocks[0], RESP1, RESP_T1, 222);
        check(&mut d, blocks[1], RESP2, RESP_T2, 222);
        check(&mut d, blocks[2], RESP3, RESP_T3, 215);
    }

    #[test]
    fn c_5_responses_without_huffman() {
        responses(C5);
    }

    #[test]
    fn c_6_responses_with_huffman() {
        responses(C6);
    }

    #[test]
    fn plain_literals_are_slices_of_the_block() {
        let block = hex("400a 6375 7374 6f6d 2d6b 6579 0d63 7573 746f 6d2d 6865 6164 6572");
        let mut out = Vec::new();
        Decoder::new(4096)
            .decode(&block, usize::MAX, &mut out)
            .unwrap();
        let range = block.as_ptr_range();
        assert!(range.contains(&out[0].name.as_ptr()));
        assert!(range.contains(&out[0].value.as_ptr()));
    }

    #[test]
    fn size_updates() {
        let mut d = Decoder::new(4096);
        decode_ok(
            &mut d,
            "400a 6375 7374 6f6d 2d6b 6579 0d63 7573 746f 6d2d 6865 6164 6572",
        );
        assert_eq!(d.table_size(), 55);
        // To 0 empties the table; then back up to the limit (4096 = 3fe11f).
        decode_ok(&mut d, "20 3fe11f 82");
        assert_eq!((d.table_len(), d.table.max_size()), (0, 4096));
        assert_eq!(
            decode_err(&mut d, "3fe21f"),
            DecodeError::TableSizeUpdateTooLarge
        );
        let mut d = Decoder::new(4096);
        assert_eq!(
            decode_err(&mut d, "82 20"),
            DecodeError::TableSizeUpdateNotAtStart
        );
    }

    #[test]
    fn lowering_our_limit_evicts_and_requires_an_update() {
        let mut d = Decoder::new(4096);
        decode_ok(
            &mut d,
            "400a 6375 7374 6f6d 2d6b 6579 0d63 7573 746f 6d2d 6865 6164 6572",
        );
        d.set_max_table_size(40);
        assert_eq!(d.table_len(), 0);
        assert_eq!(
            decode_err(&mut d, "82"),
            DecodeError::TableSizeUpdateMissing
        );

        let mut d = Decoder::new(4096);
        d.set_max_table_size(100);
        assert_eq!(decode_err(&mut d, ""), DecodeError::TableSizeUpdateMissing);
        decode_ok(&mut d, "3f45 82");
        assert_eq!(d.table.max_size(), 100);
        // Raising it again needs nothing from the peer.
        d.set_max_table_size(4096);
        decode_ok(&mut d, "82");
        assert_eq!(d.table.max_size(), 100);
    }

    #[test]
    fn invalid_indices() {
        let mut d = Decoder::new(4096);
        assert_eq!(decode_err(&mut d, "80"), DecodeError::InvalidIndex);
        assert_eq!(decode_err(&mut d, "be"), DecodeError::InvalidIndex);
        assert_eq!(decode_err(&mut d, "7f00 0161"), DecodeError::InvalidIndex);
        assert_eq!(
            decode_err(&mut d, "ff ffff ffff 0f"),
            DecodeError::IntegerOverflow
        );
    }

    #[test]
    fn truncated_strings() {
        let mut d = Decoder::new(4096);
        assert_eq!(decode_err(&mut d, "0005 6162"), DecodeError::Truncated);
        assert_eq!(decode_err(&mut d, "0001 61"), DecodeError::Truncated);
        assert_eq!(decode_err(&mut d, "40"), DecodeError::Truncated);
        // A huge claimed length fails before anything is reserved for it.
        assert_eq!(
            decode_err(&mut d, "00 ff ffff ffff 07"),
            DecodeError::Truncated
        );
        assert_eq!(d.scratch.capacity(), 0);
    }

    #[test]
    fn invalid_huffman() {
        let mut d = Decoder::new(4096);
        // EOS (30 ones) inside the string.
        assert_eq!(
            decode_err(&mut d, "0001 61 84 ffff ffff"),
            DecodeError::InvalidHuffman
        );
        // 'a' (00011) then padding 000: not all ones.
        assert_eq!(
            decode_err(&mut d, "0001 61 81 18"),
            DecodeError::InvalidHuffman
        );
    }

    #[test]
    fn header_list_limit_bounds_out_and_keeps_the_table_in_sync() {
        // One 4000-byte value indexed, then 10000 references to it.
        let mut block = BytesMut::new();
        block.extend_from_slice(&[0x40, 0x01, b'x']);
        integer::encode(&mut block, 0, 7, 4000);
        block.extend_from_slice(&[b'v'; 4000]);
        block.extend_from_slice(&[0xbe; 10_000]);
        let block = block.freeze();

        let mut d = Decoder::new(4096);
        let mut out = Vec::new();
        let status = d.decode(&block, 16 * 1024, &mut out).unwrap();
        assert_eq!(status, HeaderListStatus::TooLarge);
        assert_eq!(out.len(), 4);
        assert!(out.iter().map(Header::size).sum::<usize>() <= 16 * 1024);
        // The table saw the insertion despite the dropped fields.
        assert_eq!(d.table_size(), 4033);
        let out = decode_ok(&mut d, "be");
        assert_eq!(out[0].value.len(), 4000);
    }

    #[test]
    fn entry_larger_than_table_empties_it() {
        let mut d = Decoder::new(60);
        decode_ok(&mut d, "4001 6101 62");
        assert_eq!(d.table_size(), 34);
        decode_ok(&mut d, "4002 6363 0264 64");
        assert_eq!(table(&d), [(&b"cc"[..], &b"dd"[..])]);
        assert_eq!(d.table_size(), 36);
        // 32 + 16 + 16 = 64 > 60.
        let mut block = vec![0x40, 0x10];
        block.extend_from_slice(b"0123456789abcdef");
        block.push(0x10);
        block.extend_from_slice(b"0123456789abcdef");
        let mut out = Vec::new();
        d.decode(&block.into(), usize::MAX, &mut out).unwrap();
        assert_eq!(out.len(), 1);
        assert_eq!((d.table_len(), d.table_size()), (0, 0));
    }
}
