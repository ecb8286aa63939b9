//! Why crispd could not start, or stopped serving. `main` prints these
//! and exits; the texts are what an operator (and tests/crispd) reads.

use std::fmt;
use std::io;
use std::path::PathBuf;

use nix::errno::Errno;

use crate::config::ConfigError;

#[derive(Debug)]
pub enum StartError {
    /// A file or socket operation failed; `what` says which, e.g.
    /// `create /run/crisp` or `listen on tcp://127.0.0.1:1234`.
    Io { what: String, source: io::Error },
    /// A system call failed; `what` as for [`StartError::Io`].
    Sys { what: String, errno: Errno },
    /// Another crispd holds the runtime directory's lock.
    Locked { path: PathBuf, errno: Errno },
    /// A live process other than us serves the CRI socket.
    SocketInUse { path: PathBuf, pid: i32 },
    /// `socket_group` names no group.
    UnknownGroup(String),
    /// The configuration (`tcp_listen`) is unusable.
    Config(ConfigError),
    /// `/proc/self/exe` could not be read: crispd re-executes itself as
    /// sandbox holders and monitors.
    Exe(io::Error),
    /// No usable cgroup hierarchy.
    Cgroups(crisp_executor::Error),
    /// The image service could not start.
    Images(crisp_image::OpenError),
    /// The compiled schema cannot be served by reflection.
    Reflection(crisp_core::grpc::reflection::IndexError),
    /// Waiting for events failed while serving.
    Poll(io::Error),
    /// `[tls]`'s files do not make a TLS configuration.
    Tls(crate::tls::TlsError),
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Io { what, source } => write!(f, "cannot {what}: {source}"),
            Self::Sys { what, errno } => write!(f, "cannot {what}: {errno}"),
            Self::Locked { path, errno } => write!(
                f,
                "another crispd is running ({} is locked: {errno}); refusing to start",
                path.display()
            ),
            Self::SocketInUse { path, pid } => write!(
                f,
                "{} is served by another process (pid {pid}); refusing to start",
                path.display()
            ),
            Self::UnknownGroup(group) => write!(f, "unknown socket_group {group:?}"),
            Self::Config(e) => e.fmt(f),
            Self::Exe(e) => write!(f, "cannot find crispd's binary: {e}"),
            Self::Cgroups(e) => write!(f, "cgroups: {e}"),
            Self::Images(e) => e.fmt(f),
            Self::Reflection(e) => write!(f, "server reflection: {e}"),
            Self::Poll(e) => write!(f, "poll failed: {e}"),
            Self::Tls(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for StartError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Io { source, .. } | Self::Exe(source) | Self::Poll(source) => Some(source),
            Self::Sys { errno, .. } | Self::Locked { errno, .. } => Some(errno),
            Self::Config(e) => Some(e),
            Self::Cgroups(e) => Some(e),
            Self::Images(e) => Some(e),
            Self::Reflection(e) => Some(e),
            Self::Tls(e) => Some(e),
            Self::SocketInUse { .. } | Self::UnknownGroup(_) => None,
        }
    }
}

impl From<ConfigError> for StartError {
    fn from(e: ConfigError) -> Self {
        Self::Config(e)
    }
}

/// `map_err` for an io::Error: `cannot {what}: {e}`.
pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(io::Error) -> StartError {
    let what = what.into();
    move |source| StartError::Io { what, source }
}

/// `map_err` for an errno: `cannot {what}: {errno}`.
pub(crate) fn sys(what: impl Into<String>) -> impl FnOnce(Errno) -> StartError {
    let what = what.into();
    move |errno| StartError::Sys { what, errno }
}
