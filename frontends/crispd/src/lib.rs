//! crispd: serves the Kubernetes CRI (gRPC over HTTP/2) on a Unix socket.
//! This library is the daemon; `main.rs` parses the command line and
//! calls into it.
//!
//! A reader following one call: `event_loop` accepts and polls sockets,
//! `conn` feeds their bytes (through TLS on a `[tls]` TCP listener, and
//! checking each TCP call's credentials with `auth`) to the core's gRPC server state machine and
//! writes its output, `dispatch` checks the caller and answers the method.
//! The CRI's runtime calls go through `cri_host` to `pods`, which runs
//! containers with `crisp_executor` from the OCI spec `oci_spec` makes;
//! `exits` tells it when they (and pod holders) exit. Image calls go to
//! `crisp_image`. gRPC health and server reflection are `discovery`.

pub mod auth;
pub mod cli_client;
pub mod config;
pub mod conn;
pub mod cri_host;
pub mod discovery;
pub mod dispatch;
pub mod error;
pub mod event_loop;
pub mod exits;
pub mod host;
pub mod metrics;
pub mod oci_spec;
pub mod persist;
pub mod pods;
pub mod policy;
pub mod pull_bars;
pub mod streaming;
pub mod tls;
pub mod workers;

#[cfg(test)]
mod executor_tests;
