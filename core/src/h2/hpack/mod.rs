//! HPACK header compression (RFC 7541).
//!
//! [`Decoder`] turns header blocks from the peer into [`Header`]s; [`Encoder`]
//! does the reverse for ours. Each side keeps its own dynamic table, which is
//! why one of each lives per connection and why every block must go through
//! them in order: a skipped or failed block desynchronises the tables, so any
//! [`DecodeError`] is a connection error (COMPRESSION_ERROR).
//!
//! HPACK only moves bytes: checking that names are lowercase tokens, that
//! pseudo-headers come first and so on (RFC 9113 §8.2) is the caller's job.

mod decoder;
mod encoder;
mod huffman;
mod integer;
#[cfg(any(test, feature = "sim"))]
pub mod rfc7541;
mod table;

use std::fmt;

use bytes::Bytes;

pub use decoder::Decoder;
pub use encoder::Encoder;

use super::error::{ConnectionError, ErrorCode};

/// One header field. Names are lowercase bytes as on the wire.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    pub name: Bytes,
    pub value: Bytes,
    /// Never index (RFC 7541 §7.1.3): the encoder sends it as a never-indexed
    /// literal so no intermediary stores it in a compression table, which
    /// would expose it to CRIME-style probing.
    pub sensitive: bool,
}

impl Header {
    pub fn new(name: impl Into<Bytes>, value: impl Into<Bytes>) -> Self {
        Self {
            name: name.into(),
            value: value.into(),
            sensitive: false,
        }
    }

    /// A header whose bytes need no allocation. `const`, so fixed header
    /// blocks can live in `static`s and be sent without building a list.
    pub const fn from_static(name: &'static str, value: &'static str) -> Self {
        Self {
            name: Bytes::from_static(name.as_bytes()),
            value: Bytes::from_static(value.as_bytes()),
            sensitive: false,
        }
    }

    /// The same header, marked never-indexed.
    pub fn sensitive(mut self) -> Self {
        self.sensitive = true;
        self
    }

    /// Size as HPACK and SETTINGS_MAX_HEADER_LIST_SIZE count it:
    /// name + value + 32 (§4.1).
    pub fn size(&self) -> usize {
        table::entry_size(&self.name, &self.value)
    }
}

/// A malformed header block. Every variant is a COMPRESSION_ERROR on the
/// whole connection (RFC 9113 §4.3): the dynamic tables can no longer be
/// trusted to agree.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// A prefix integer above 2^32 - 1 or with too many continuation bytes.
    IntegerOverflow,
    /// The block ended inside a representation or a string.
    Truncated,
    /// Index 0, or an index past the end of the static and dynamic tables.
    InvalidIndex,
    /// A Huffman string containing EOS or with bad padding.
    InvalidHuffman,
    /// A dynamic table size update above our SETTINGS_HEADER_TABLE_SIZE.
    TableSizeUpdateTooLarge,
    /// A dynamic table size update after a header field in the same block.
    TableSizeUpdateNotAtStart,
    /// We lowered SETTINGS_HEADER_TABLE_SIZE below the table's size and the
    /// next block did not open with the size update the peer owes us (§4.2).
    TableSizeUpdateMissing,
}

impl DecodeError {
    /// Short description, suitable as GOAWAY debug data.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::IntegerOverflow => "hpack: integer overflow",
            Self::Truncated => "hpack: truncated header block",
            Self::InvalidIndex => "hpack: invalid table index",
            Self::InvalidHuffman => "hpack: invalid huffman string",
            Self::TableSizeUpdateTooLarge => "hpack: table size update above limit",
            Self::TableSizeUpdateNotAtStart => "hpack: table size update not at block start",
            Self::TableSizeUpdateMissing => "hpack: required table size update missing",
        }
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.reason())
    }
}

impl std::error::Error for DecodeError {}

impl From<DecodeError> for ConnectionError {
    fn from(e: DecodeError) -> Self {
        ConnectionError::new(ErrorCode::COMPRESSION_ERROR, e.reason())
    }
}

/// How a successfully decoded block compares with our header list limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeaderListStatus {
    /// Every field was appended; `size` is the list size as §4.1 counts it.
    Complete { size: usize },
    /// The list exceeded the limit; decoding continued to keep the table in
    /// sync but headers past the limit were dropped.
    TooLarge,
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use proptest::prelude::*;

    /// Headers drawn from a small pool so that blocks hit the static table,
    /// the dynamic table, name-only matches and fresh literals alike.
    fn header() -> impl Strategy<Value = Header> {
        let name = prop_oneof![
            Just(&b":method"[..]).prop_map(Bytes::from_static),
            Just(&b":path"[..]).prop_map(Bytes::from_static),
            Just(&b"content-type"[..]).prop_map(Bytes::from_static),
            Just(&b"x-a"[..]).prop_map(Bytes::from_static),
            Just(&b"grpc-timeout"[..]).prop_map(Bytes::from_static),
            proptest::collection::vec(any::<u8>(), 0..12).prop_map(Bytes::from),
        ];
        let value = prop_oneof![
            Just(&b"GET"[..]).prop_map(Bytes::from_static),
            Just(&b"/"[..]).prop_map(Bytes::from_static),
            Just(&b"application/grpc"[..]).prop_map(Bytes::from_static),
            proptest::collection::vec(any::<u8>(), 0..24).prop_map(Bytes::from),
            proptest::collection::vec(any::<u8>(), 0..3000).prop_map(Bytes::from),
        ];
        (name, value, proptest::bool::weighted(0.1)).prop_map(|(name, value, sensitive)| Header {
            name,
            value,
            sensitive,
        })
    }

    /// One step of a connection: a settings change or a header block.
    #[derive(Debug, Clone)]
    enum Step {
        TableSize(usize),
        Block(Vec<Header>),
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            1 => prop_oneof![Just(0usize), 0usize..300, Just(4096), 4096usize..10_000]
                .prop_map(Step::TableSize),
            6 => proptest::collection::vec(header(), 0..12).prop_map(Step::Block),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        #[test]
        fn encode_decode_round_trip(steps in proptest::collection::vec(step(), 1..12)) {
            let mut encoder = Encoder::new();
            let mut decoder = Decoder::new(4096);
            for step in steps {
                match step {
                    Step::TableSize(size) => {
                        // Both sides learn the value; the encoder's size
                        // update in its next block tells the decoder what it
                        // picked.
                        encoder.set_max_table_size(size);
                        decoder.set_max_table_size(size);
                    }
                    Step::Block(headers) => {
                        let mut dst = BytesMut::new();
                        encoder.encode(&headers, &mut dst);
                        let mut out = Vec::new();
                        let status = decoder.decode(&dst.freeze(), usize::MAX, &mut out);
                        let size = headers.iter().map(Header::size).sum();
                        prop_assert_eq!(status, Ok(HeaderListStatus::Complete { size }));
                        for (got, want) in out.iter().zip(&headers) {
                            prop_assert_eq!(&got.name, &want.name);
                            prop_assert_eq!(&got.value, &want.value);
                            // Only never-indexed literals carry the flag back.
                            prop_assert!(!want.sensitive || got.sensitive);
                        }
                        prop_assert_eq!(out.len(), headers.len());
                        prop_assert_eq!(encoder.table_size(), decoder.table_size());
                    }
                }
            }
        }

        #[test]
        fn arbitrary_input_never_panics(
            blocks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 1..6),
            limit in 0usize..400,
        ) {
            let mut decoder = Decoder::new(256);
            for block in blocks {
                let mut out = Vec::new();
                let block = Bytes::from(block);
                match decoder.decode(&block, limit, &mut out) {
                    Ok(_) => prop_assert!(out.iter().map(Header::size).sum::<usize>() <= limit),
                    Err(e) => prop_assert!(!e.reason().is_empty()),
                }
                prop_assert!(decoder.table_size() <= 256);
            }
        }

        #[test]
        fn mutated_valid_blocks_never_panic(
            headers in proptest::collection::vec(header(), 1..8),
            flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..4),
        ) {
            let mut dst = BytesMut::new();
            Encoder::new().encode(&headers, &mut dst);
            for (at, x) in flips {
                let len = dst.len();
                dst[at % len] ^= x;
            }
            let _ = Decoder::new(4096).decode(&dst.freeze(), usize::MAX, &mut Vec::new());
        }
    }

    #[test]
    fn errors_map_to_compression_error() {
        let e: ConnectionError = DecodeError::InvalidIndex.into();
        assert_eq!(e.code, ErrorCode::COMPRESSION_ERROR);
        assert_eq!(
            DecodeError::Truncated.to_string(),
            "hpack: truncated header block"
        );
    }

    #[test]
    fn header_size_counts_the_overhead() {
        assert_eq!(Header::from_static("ab", "cde").size(), 37);
        assert!(!Header::new("a", "b").sensitive);
        assert!(Header::new("a", "b").sensitive().sensitive);
    }
}
