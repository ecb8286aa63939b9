//! Facts about the host that crispd reports: the cgroup layout and whether
//! a CNI network configuration is present.

use std::path::Path;

/// How cgroups are mounted. Most nodes today are unified (v2); this
/// project's CI machine is hybrid (v1 controllers plus a v2 mount).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CgroupMode {
    /// Pure cgroup v2 at /sys/fs/cgroup.
    Unified,
    /// cgroup v1 controllers, with a v2 hierarchy at /sys/fs/cgroup/unified.
    Hybrid,
    /// cgroup v1 only.
    Legacy,
}

impl CgroupMode {
    pub fn detect() -> Self {
        let root = Path::new("/sys/fs/cgroup");
        if root.join("cgroup.controllers").exists() {
            CgroupMode::Unified
        } else if root.join("unified/cgroup.controllers").exists() {
            CgroupMode::Hybrid
        } else {
            CgroupMode::Legacy
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            CgroupMode::Unified => "v2",
            CgroupMode::Hybrid => "hybrid",
            CgroupMode::Legacy => "v1",
        }
    }
}

/// The first CNI network configuration in `dir`, in the order CNI uses
/// (lexical), if there is one.
pub fn cni_config(dir: &Path) -> Option<std::path::PathBuf> {
    let mut found: Vec<_> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            matches!(
                p.extension().and_then(|e| e.to_str()),
                Some("conf" | "conflist" | "json")
            )
        })
        .collect();
    found.sort();
    found.into_iter().next()
}
