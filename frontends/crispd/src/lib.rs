//! crispd's library target: the parts of the daemon that other crates
//! (fuzz targets, benchmarks) reach. The daemon itself is `main.rs`.

pub mod image {
    /// See `image/unpack.rs`.
    pub mod unpack;
}

/// See `persist.rs` (the record files' slots are fuzzed).
pub mod persist;
