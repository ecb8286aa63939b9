//! crisp-core: the pure state machine at the heart of crisp.
//!
//! Bytes and the current time go in; events, bytes to send and the next
//! deadline come out. Nothing here touches a socket, a file, a thread or a
//! clock, which is what makes the core deterministic in tests, fuzzable and
//! benchmarkable without I/O.
#![forbid(unsafe_code)]

pub mod cri;
pub mod grpc;
pub mod h2;
