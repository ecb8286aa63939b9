//! HTTP/2 (RFC 9113) with HPACK (RFC 7541), sans-I/O.

pub mod error;
pub mod frame;
pub mod hpack;
