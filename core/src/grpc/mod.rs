//! gRPC over HTTP/2 (the gRPC PROTOCOL-HTTP2 specification).
//!
//! The modules here are the protocol's building blocks, each free of I/O:
//! status codes and `grpc-message` encoding ([`status`]), length-prefixed
//! message framing ([`codec`]), per-message compression ([`compression`]),
//! `grpc-timeout` ([`timeout`]) and header checks ([`metadata`]). On top of
//! them, [`server`] and [`client`] turn one HTTP/2 connection's streams
//! into calls. [`health`] and [`reflection`] answer gRPC's standard
//! health and server reflection services; [`json`] is the
//! `application/grpc+json` codec.

pub mod client;
pub mod codec;
pub mod compression;
pub mod deadline;
pub mod health;
pub mod json;
pub mod metadata;
pub mod reflection;
pub mod server;
pub mod status;
pub mod timeout;

pub use codec::{DeframeError, Deframer, EncodeError, Message};
pub use compression::{Encoding, ACCEPT_ENCODING};
pub use metadata::is_grpc_content_type;
pub use status::{Code, Status};
pub use timeout::{encode_timeout, parse_timeout, EncodedTimeout, InvalidTimeout};
