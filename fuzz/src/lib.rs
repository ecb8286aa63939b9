//! Fuzz targets for crisp-core (HTTP/2, gRPC, CRI, and the streaming
//! server's SPDY, WebSocket and upgrade parsing), crisp-proto,
//! crisp-image's layer unpacker and crispd's record files; gRPC server
//! reflection and health requests; the `application/grpc+json` codec.
//!
//! Each target is a plain function over bytes so that the libFuzzer
//! binaries in `fuzz_targets/` and the corpus replay test in
//! `tests/replay.rs` run exactly the same code. A target returns normally
//! when the input is fine (or uninteresting) and panics when it finds a
//! crash or a wrong result in the code under test.

mod cri;
mod deframer;
mod frames;
mod hpack;
mod json;
mod lifecycle;
mod records;
mod reflection;
mod server;
mod streaming;
mod unpack;
pub mod util;

pub use cri::cri_decode;
pub use deframer::grpc_deframer;
pub use frames::frame_decoder;
pub use hpack::{hpack_decoder, hpack_differential};
pub use json::grpc_json;
pub use lifecycle::cri_lifecycle;
pub use records::record_slots;
pub use reflection::reflection_request;
pub use server::{server_bytes, server_frames, server_frames_input, server_frames_stats, Stats};
pub use streaming::{spdy_frames, streaming_session, upgrade_request, websocket_frames};
pub use unpack::image_unpack;

/// A fuzz target: panics when it finds a bug.
pub type Target = fn(&[u8]);

/// Every target, by name, for the replay test and the seed generator.
pub const TARGETS: &[(&str, Target)] = &[
    ("frame_decoder", frame_decoder),
    ("hpack_decoder", hpack_decoder),
    ("hpack_differential", hpack_differential),
    ("grpc_deframer", grpc_deframer),
    ("server_bytes", server_bytes),
    ("server_frames", server_frames),
    ("cri_decode", cri_decode),
    ("cri_lifecycle", cri_lifecycle),
    ("image_unpack", image_unpack),
    ("record_slots", record_slots),
    ("spdy_frames", spdy_frames),
    ("websocket_frames", websocket_frames),
    ("upgrade_request", upgrade_request),
    ("streaming_session", streaming_session),
    ("reflection_request", reflection_request),
    ("grpc_json", grpc_json),
];
