//! Shared pieces of crisp's benchmarks: the CRI messages measured at three
//! sizes, the pre-encoded unary `Version` request, and a minimal blocking
//! HTTP/2 client that replays it on one connection (the same client drives
//! crispd, the h2 + tokio baseline and the raw socket floor).

pub mod messages;
pub mod streaming;
pub mod wire;
