//! SPDY/3.1, sans-I/O: the transport of `kubectl exec`, `attach` and
//! `port-forward` (and of crictl's) to a container runtime's streaming
//! server, after the HTTP/1.1 upgrade in [`crate::upgrade`].
//!
//! [`frame`] lays out frames, [`headers`] encodes header blocks and keeps
//! the per-direction zlib streams with the SPDY [`dictionary`], and
//! [`connection`] is the session state machine, fed with bytes and the
//! time, for either role (the client role drives the server in
//! `core/tests/spdy_session.rs`).

pub mod connection;
pub mod dictionary;
pub mod error;
pub mod frame;
pub mod headers;

pub use connection::{Config, Connection, Event, Role, UsageError, DEFAULT_WINDOW};
pub use error::{ConnectionError, GoAwayStatus, RstStatus, StreamError};
pub use headers::{header, HeaderList};
