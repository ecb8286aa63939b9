//! Cgroups: one small interface, a v1 and a v2 implementation, chosen at
//! start from what the host mounts.

use oci_spec::runtime::LinuxResources;

use super::Error;

/// Usage figures for stats calls.
#[derive(Clone, Copy, Debug, Default)]
pub struct Usage {
    pub cpu_usage_ns: u64,
    pub memory_usage_bytes: u64,
    pub memory_working_set_bytes: u64,
    pub pids: u64,
}

pub trait Cgroups: Send + Sync {
    /// Create the cgroup `path` (relative to the root) with `resources`.
    fn create(&self, path: &str, resources: &LinuxResources) -> Result<(), Error>;
    /// Move `pid` into the cgroup.
    fn add(&self, path: &str, pid: i32) -> Result<(), Error>;
    /// Apply changed limits to a live cgroup (UpdateContainerResources).
    fn update(&self, path: &str, resources: &LinuxResources) -> Result<(), Error>;
    fn usage(&self, path: &str) -> Result<Usage, Error>;
    /// Whether the kernel OOM-killed a process in the cgroup.
    fn oom_killed(&self, path: &str) -> bool;
    /// Remove the (empty) cgroup; idempotent.
    fn remove(&self, path: &str) -> Result<(), Error>;
}

/// The implementation matching this host's cgroup layout.
pub fn detect() -> Result<Box<dyn Cgroups>, Error> {
    Err(Error::new("cgroups are not implemented yet"))
}
