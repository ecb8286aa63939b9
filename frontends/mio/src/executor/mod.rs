//! The host side of a container: a small OCI runtime inside crispd.
//!
//! crispd turns a CRI `ContainerConfig` (plus the image's config and the
//! pod's namespaces) into an OCI runtime [`Spec`] ([`spec`]), mounts the
//! container's root filesystem ([`rootfs`]), and carries the spec out with
//! nix syscalls: namespaces, mounts, pivot_root, capabilities, seccomp,
//! rlimits, user and groups ([`create`]), in a cgroup ([`cgroup`]). A
//! container is created stopped before `execve` and released by
//! [`Created::start`], matching CRI's CreateContainer / StartContainer.
//!
//! The calling process becomes the container's parent: in crispd that is
//! the container's monitor process, which outlives crispd restarts.
#![allow(dead_code)]

use std::fmt;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

pub use oci_spec::runtime::Spec;

pub mod cgroup;
pub mod rootfs;
pub mod spec;

/// Why a container could not be set up.
#[derive(Debug)]
pub struct Error {
    pub context: String,
    pub errno: Option<nix::errno::Errno>,
}

impl Error {
    pub fn new(context: impl Into<String>) -> Self {
        Self {
            context: context.into(),
            errno: None,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.errno {
            Some(e) => write!(f, "{}: {e}", self.context),
            None => f.write_str(&self.context),
        }
    }
}

impl std::error::Error for Error {}

/// Where the container's standard streams go. With `terminal` set in the
/// spec, `stdout` is the pty's replica side and the others are ignored.
pub struct Stdio {
    pub stdin: Option<OwnedFd>,
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
}

/// A container process that is fully set up and waits, before `execve`,
/// for [`Created::start`].
pub struct Created {
    pub pid: nix::unistd::Pid,
    /// Writing one byte here (then closing it) lets the process exec.
    start: OwnedFd,
}

impl Created {
    /// Release the process into the container's entrypoint.
    pub fn start(self) -> Result<(), Error> {
        Err(Error::new("starting containers is not implemented yet"))
    }
}

/// Set up the container described by `spec` in a new child of the calling
/// process. `spec.root.path` is the already mounted root filesystem.
/// Namespaces listed with a path are joined (the pod's), the others are
/// created. The child stops before `execve` until `Created::start`.
pub fn create(spec: &Spec, stdio: Stdio) -> Result<Created, Error> {
    let _ = (spec, stdio);
    Err(Error::new("creating containers is not implemented yet"))
}

/// Run `process` inside a running container (whose init is `container_pid`):
/// its namespaces, its cgroup, the process's user, env, capabilities and
/// seccomp profile. Used by ExecSync. Returns the new process's pid; the
/// caller waits for it.
pub fn exec(
    container_pid: nix::unistd::Pid,
    spec: &Spec,
    process: &oci_spec::runtime::Process,
    stdio: Stdio,
) -> Result<nix::unistd::Pid, Error> {
    let _ = (container_pid, spec, process, stdio);
    Err(Error::new("exec in containers is not implemented yet"))
}

/// Paths of the pod's namespaces a container joins.
#[derive(Clone, Debug, Default)]
pub struct PodNamespaces {
    pub net: Option<PathBuf>,
    pub ipc: Option<PathBuf>,
    pub uts: Option<PathBuf>,
    /// Set when the pod shares one PID namespace among its containers.
    pub pid: Option<PathBuf>,
}

/// Files crispd writes per pod and bind-mounts into each container.
#[derive(Clone, Debug, Default)]
pub struct PodFiles {
    pub hostname: Option<PathBuf>,
    pub hosts: Option<PathBuf>,
    pub resolv_conf: Option<PathBuf>,
}

/// Whether `path` lies on an overlay mount we made (for cleanup checks).
pub fn is_mounted(path: &Path) -> bool {
    let _ = path;
    false
}
