//! crisp-core: the pure state machine at the heart of crisp.
//!
//! Bytes and the current time go in; events, bytes to send and the next
//! deadline come out. Nothing here touches a socket, a file, a thread or a
//! clock, which is what makes the core deterministic in tests, fuzzable and
//! benchmarkable without I/O.
#![forbid(unsafe_code)]
// No panics in the core outside tests: whatever a peer or the host sends
// must come back as an error, never abort the daemon.
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing,
        clippy::unreachable
    )
)]

pub mod cri;
pub mod grpc;
pub mod h2;
mod json;
pub mod remotecommand;
pub mod spdy;
pub mod streaming;
pub mod upgrade;
pub mod websocket;
