//! HTTP/2 (RFC 9113) with HPACK (RFC 7541), sans-I/O.
//!
//! [`frame`] parses and encodes frames, [`hpack`] compresses header blocks,
//! [`flow`] keeps windows, [`stream`] holds per-stream state, [`message`]
//! checks that requests and responses are well formed, and [`connection`]
//! ties them into a state machine fed with bytes and the time.

pub mod connection;
pub mod error;
pub mod flow;
pub mod frame;
pub mod hpack;
pub mod message;
pub mod stream;
mod stream_id;

pub use connection::{Config, Connection, Event, HeaderList, Role, UsageError};
pub use error::{ConnectionError, ErrorCode, ProtocolError, StreamError};
pub use hpack::Header;
pub use stream::StreamIdHasher;
pub use stream_id::StreamId;
