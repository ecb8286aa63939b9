//! `hpack_decoder` and `hpack_differential`: HPACK blocks from the input.
//!
//! Input (shared by both targets, so their corpora are interchangeable):
//! `[initial table size selector]`, then records
//! `[ctl][len: u16 BE][len bytes of header block]` (a short last block takes
//! what is left). In `ctl`, bit 7 asks for a SETTINGS_HEADER_TABLE_SIZE
//! change to `TABLE_SIZES[ctl & 15]` before the block, and bits 4..=6 pick
//! the max header list size from `LIMITS`.

use std::borrow::Cow;

use bytes::{Bytes, BytesMut};
use crisp_core::h2::hpack::{DecodeError, Decoder, Encoder, Header, HeaderListStatus};
use loona_hpack::decoder::{DecoderError, IntegerDecodingError};

use crate::util::{take_u16, take_u8};

pub const TABLE_SIZES: [usize; 16] = [
    4096, 0, 31, 32, 33, 64, 100, 128, 256, 512, 1000, 2048, 4095, 4097, 8192, 16_384,
];
pub const LIMITS: [usize; 8] = [usize::MAX, 0, 32, 64, 100, 256, 1024, 16_384];

/// Decoded lists larger than this are not re-encoded (the round trips
/// would cost more than they find: a 1-byte indexed field can stand for a
/// 16 KiB table entry).
const ROUND_TRIP_MAX: usize = 64 * 1024;

pub struct Op {
    pub table_size: Option<usize>,
    pub limit: usize,
    pub block: Bytes,
}

/// Parse the input into the initial table size and the blocks.
pub fn parse(mut data: &[u8]) -> (usize, Vec<Op>) {
    let initial = take_u8(&mut data).map_or(4096, |b| TABLE_SIZES[usize::from(b & 15)]);
    let mut ops = Vec::new();
    while let Some(ctl) = take_u8(&mut data) {
        let len = take_u16(&mut data).map_or(data.len(), usize::from);
        let (block, rest) = data.split_at(len.min(data.len()));
        data = rest;
        ops.push(Op {
            table_size: (ctl & 0x80 != 0).then(|| TABLE_SIZES[usize::from(ctl & 15)]),
            limit: LIMITS[usize::from((ctl >> 4) & 7)],
            block: Bytes::copy_from_slice(block),
        });
    }
    (initial, ops)
}

fn list_size(list: &[Header]) -> usize {
    list.iter().map(Header::size).sum()
}

/// Our decoder on arbitrary blocks.
///
/// Two decoders run in lockstep, one with the record's header list limit
/// and one without: they must agree on success, on errors and on the
/// table; the limited list must be a prefix of the full one, complete
/// exactly when the full list fits the limit, and never over the limit.
/// The table never exceeds our advertised size. Whatever was decoded is
/// re-encoded with our encoder and must decode to the same list.
pub fn hpack_decoder(data: &[u8]) {
    let (initial, ops) = parse(data);
    let mut limited = Decoder::new(initial);
    let mut full = Decoder::new(initial);
    let mut setting = initial;
    let mut encoder = Encoder::new();
    let mut redecoder = Decoder::new(4096);
    for op in ops {
        if let Some(size) = op.table_size {
            limited.set_max_table_size(size);
            full.set_max_table_size(size);
            setting = size;
        }
        let mut part = Vec::new();
        let mut all = Vec::new();
        let a = limited.decode(&op.block, op.limit, &mut part);
        let b = full.decode(&op.block, usize::MAX, &mut all);
        match (a, b) {
            (Err(ea), Err(eb)) => {
                assert_eq!(ea, eb);
                // A decoding error ends the connection.
                return;
            }
            (Ok(status), Ok(HeaderListStatus::Complete { size })) => {
                assert_eq!(size, list_size(&all));
                match status {
                    HeaderListStatus::Complete { size: s } => {
                        assert_eq!(s, size);
                        assert!(size <= op.limit);
                        assert_eq!(part, all);
                    }
                    HeaderListStatus::TooLarge => {
                        assert!(size > op.limit, "TooLarge but {size} <= {}", op.limit);
                        assert!(list_size(&part) <= op.limit);
                        assert!(all.starts_with(&part), "limited list is not a prefix");
                        // Fields stop at the first one that does not fit.
                        let next = &all[part.len()];
                        assert!(list_size(&part) + next.size() > op.limit);
                    }
                }
                if size <= ROUND_TRIP_MAX {
                    round_trip(&mut encoder, &mut redecoder, &all);
                }
            }
            (a, b) => panic!("the list limit changed the outcome: {a:?} vs {b:?}"),
        }
        assert_eq!(limited.table_size(), full.table_size());
        assert_eq!(limited.table_len(), full.table_len());
        assert!(
            full.table_size() <= setting,
            "table over the advertised size"
        );
    }
}

fn round_trip(encoder: &mut Encoder, decoder: &mut Decoder, list: &[Header]) {
    let mut wire = BytesMut::new();
    encoder.encode(list, &mut wire);
    let mut back = Vec::new();
    let status = decoder
        .decode(&wire.freeze(), usize::MAX, &mut back)
        .unwrap_or_else(|e| panic!("our encoding of {list:?} fails to decode: {e}"));
    assert_eq!(
        status,
        HeaderListStatus::Complete {
            size: list_size(list)
        }
    );
    // Never-indexed fields stay never-indexed, the others are not marked.
    assert_eq!(back, list, "encode/decode round trip");
    assert_eq!(encoder.table_size(), decoder.table_size());
}

/// The dynamic table size updates at the start of a block, in order (the
/// bytes up to the first non-update representation).
fn leading_size_updates(block: &[u8]) -> Vec<usize> {
    let mut out = Vec::new();
    let mut pos = 0;
    while let Some(&b) = block.get(pos) {
        if b & 0xe0 != 0x20 {
            break;
        }
        match prefix_int(block, &mut pos, 5) {
            Some(v) => out.push(v),
            None => break,
        }
    }
    out
}

/// RFC 7541 §5.1 integer (no limits beyond overflow; only used on blocks
/// our decoder accepted).
fn prefix_int(buf: &[u8], pos: &mut usize, bits: u32) -> Option<usize> {
    let max = (1usize << bits) - 1;
    let mut v = usize::from(*buf.get(*pos)?) & max;
    *pos += 1;
    if v < max {
        return Some(v);
    }
    let mut shift = 0u32;
    loop {
        let b = *buf.get(*pos)?;
        *pos += 1;
        v = v.checked_add(usize::from(b & 0x7f).checked_shl(shift)?)?;
        if b & 0x80 == 0 {
            return Some(v);
        }
        shift += 7;
    }
}

/// How loona-hpack's decoding of one block went, compared field by field
/// with ours as it goes (nothing is copied).
struct LoonaRun {
    result: Result<(), DecoderError>,
    count: usize,
    mismatch: Option<usize>,
}

fn loona_compare(
    dec: &mut loona_hpack::Decoder<'static>,
    block: &[u8],
    ours: &[Header],
) -> LoonaRun {
    let mut count = 0;
    let mut mismatch = None;
    let result = dec.decode_with_cb(block, |name: Cow<[u8]>, value: Cow<[u8]>| {
        if mismatch.is_none() {
            match ours.get(count) {
                Some(h) if h.name[..] == name[..] && h.value[..] == value[..] => {}
                // Past our (limited) list there is nothing to compare with.
                None => {}
                Some(_) => mismatch = Some(count),
            }
        }
        count += 1;
    });
    LoonaRun {
        result,
        count,
        mismatch,
    }
}

/// Differential: our decoder against loona-hpack on the same blocks and
/// settings; then our encoder's output decoded by loona-hpack, and
/// loona-hpack's encoder's output decoded by us.
///
/// Known, legitimate differences, where the comparison stops or is
/// relaxed (each one is our decoder following RFC 7541 where loona-hpack
/// is more lenient, or the reverse where the RFC allows both):
/// * `TableSizeUpdateMissing`: after we lower SETTINGS_HEADER_TABLE_SIZE
///   below the table size, §4.2 requires the next block to start with a
///   size update; loona-hpack does not enforce that. Stop.
/// * `TableSizeUpdateNotAtStart`: §4.2 allows size updates only at the
///   start of a block; loona-hpack accepts them anywhere. Stop.
/// * loona-hpack rejects integers with more than four continuation bytes
///   (`TooManyOctets`); we accept five as long as the value fits in 32
///   bits (§5.1 sets no limit; a padded small value is legal). Stop when
///   loona-hpack rejects a block for that alone.
/// * loona-hpack rejects a block whose last representation is a size
///   update (`SizeUpdateAtEnd`); §4.2 allows a block of nothing but size
///   updates, which is the only way such a block can reach the end with
///   us. Both tables took the update, so the comparison goes on.
/// * Our header list limit is not applied here (usize::MAX); it is a
///   connection policy, not decoding, and `hpack_decoder` checks it. Lists
///   above a 1 MiB budget are compared only up to the budget (a 1-byte
///   indexed field can stand for a 16 KiB entry).
/// * SETTINGS_HEADER_TABLE_SIZE raised: we keep the table's current
///   maximum until the peer's size update (§4.2: only the encoder changes
///   it); loona-hpack's `set_max_table_size` would resize at once, so only
///   its allowed maximum is raised. Lowered below the current maximum:
///   both shrink the table now.
pub fn hpack_differential(data: &[u8]) {
    const BUDGET: usize = 1 << 20;
    let (initial, ops) = parse(data);
    let mut ours = Decoder::new(initial);
    let mut loona = loona_hpack::Decoder::new();
    loona.set_max_allowed_table_size(initial);
    loona.set_max_table_size(initial);
    // The table's current maximum, as both decoders have it.
    let mut table_max = initial;

    // Round trips: our encoder -> loona, loona's encoder -> us.
    let mut encoder = Encoder::new();
    let mut loona_dec = loona_hpack::Decoder::new();
    let mut loona_enc = loona_hpack::Encoder::new();
    let mut our_dec = Decoder::new(4096);

    for op in ops {
        if let Some(size) = op.table_size {
            ours.set_max_table_size(size);
            loona.set_max_allowed_table_size(size);
            if size < table_max {
                loona.set_max_table_size(size);
                table_max = size;
            }
            encoder.set_max_table_size(size);
            // Our encoder announces at most min(setting, 4096).
            loona_dec.set_max_allowed_table_size(size.min(4096));
        }
        let mut list = Vec::new();
        let mine = ours.decode(&op.block, BUDGET, &mut list);
        let theirs = loona_compare(&mut loona, &op.block, &list);
        match (&mine, &theirs.result) {
            (
                Err(DecodeError::TableSizeUpdateMissing | DecodeError::TableSizeUpdateNotAtStart),
                _,
            ) => return,
            (
                Ok(_),
                Err(DecoderError::IntegerDecodingError(IntegerDecodingError::TooManyOctets)),
            ) => return,
            (Ok(_), Err(DecoderError::SizeUpdateAtEnd)) => {
                assert!(list.is_empty(), "SizeUpdateAtEnd after fields: {list:?}");
                assert!(
                    !leading_size_updates(&op.block).is_empty(),
                    "loona saw a trailing size update we did not"
                );
            }
            (Ok(status), Ok(())) => {
                assert_eq!(
                    theirs.mismatch, None,
                    "field {:?} differs; ours: {list:?}",
                    theirs.mismatch
                );
                match status {
                    HeaderListStatus::Complete { .. } => {
                        assert_eq!(theirs.count, list.len(), "field count differs")
                    }
                    HeaderListStatus::TooLarge => assert!(theirs.count > list.len()),
                }
            }
            (Err(_), Err(_)) => return,
            (mine, theirs) => panic!(
                "ours {mine:?}, loona-hpack {theirs:?} on {:02x?}",
                &op.block[..]
            ),
        }
        if let Some(&last) = leading_size_updates(&op.block).last() {
            table_max = last;
        }
        if matches!(mine, Ok(HeaderListStatus::Complete { size }) if size <= ROUND_TRIP_MAX) {
            to_loona(&mut encoder, &mut loona_dec, &list);
            from_loona(&mut loona_enc, &mut our_dec, &list);
        }
    }
}

/// Our encoder's output must decode identically with loona-hpack.
fn to_loona(encoder: &mut Encoder, dec: &mut loona_hpack::Decoder<'static>, list: &[Header]) {
    if list.is_empty() {
        // A block of only a pending size update would trip loona-hpack's
        // SizeUpdateAtEnd; the update goes out with the next block.
        return;
    }
    let mut wire = BytesMut::new();
    encoder.encode(list, &mut wire);
    let run = loona_compare(dec, &wire, list);
    assert_eq!(
        run.result,
        Ok(()),
        "loona-hpack rejects our encoding of {list:?}"
    );
    assert_eq!(
        run.mismatch, None,
        "loona-hpack decodes our {list:?} differently"
    );
    assert_eq!(run.count, list.len());
}

/// loona-hpack's encoder's output must decode identically with ours.
fn from_loona(enc: &mut loona_hpack::Encoder<'static>, dec: &mut Decoder, list: &[Header]) {
    let wire = enc.encode(list.iter().map(|h| (&h.name[..], &h.value[..])));
    let mut back = Vec::new();
    dec.decode(&Bytes::from(wire), usize::MAX, &mut back)
        .unwrap_or_else(|e| panic!("we reject loona-hpack's encoding of {list:?}: {e}"));
    assert_eq!(back.len(), list.len());
    for (a, b) in back.iter().zip(list) {
        assert_eq!((&a.name, &a.value), (&b.name, &b.value));
    }
}
