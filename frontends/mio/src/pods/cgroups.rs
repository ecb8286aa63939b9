//! Pod-level cgroups through the cgroup filesystem: the directories a pod
//! sandbox and its containers live under, in every mounted hierarchy (v1
//! controllers and the v2 tree). Container limits are the executor's.

use std::fs;
use std::path::PathBuf;

/// The mounted cgroup hierarchies.
#[derive(Clone, Debug, Default)]
pub struct Layout {
    /// Mount points of every hierarchy (v1 ones and the v2 one).
    pub roots: Vec<PathBuf>,
    /// The v2 mount point, if any.
    pub unified: Option<PathBuf>,
    /// v1 mount points by controller name (cpu, cpuacct, memory, ...).
    pub v1: Vec<(String, PathBuf)>,
}

impl Layout {
    pub fn detect() -> Self {
        let mut l = Layout::default();
        let Ok(info) = fs::read_to_string("/proc/self/mountinfo") else {
            return l;
        };
        for line in info.lines() {
            let Some((pre, post)) = line.split_once(" - ") else {
                continue;
            };
            let pre: Vec<&str> = pre.split(' ').collect();
            let post: Vec<&str> = post.split(' ').collect();
            let (Some(mnt), Some(fstype)) = (pre.get(4), post.first()) else {
                continue;
            };
            let mnt = PathBuf::from(*mnt);
            match *fstype {
                "cgroup2" if l.unified.is_none() => {
                    l.unified = Some(mnt.clone());
                    l.roots.push(mnt);
                }
                "cgroup" => {
                    if l.roots.contains(&mnt) {
                        continue;
                    }
                    let opts = post.get(2).copied().unwrap_or("");
                    for o in opts.split(',') {
                        if matches!(
                            o,
                            "cpu"
                                | "cpuacct"
                                | "cpuset"
                                | "memory"
                                | "pids"
                                | "devices"
                                | "freezer"
                                | "blkio"
                                | "hugetlb"
                                | "net_cls"
                                | "net_prio"
                                | "perf_event"
                        ) || o.starts_with("name=")
                        {
                            l.v1.push((o.to_owned(), mnt.clone()));
                        }
                    }
                    l.roots.push(mnt);
                }
                _ => {}
            }
        }
        l
    }

    fn dirs(&self, rel: &str) -> Vec<PathBuf> {
        let rel = rel.trim_start_matches('/');
        self.roots.iter().map(|r| r.join(rel)).collect()
    }

    /// Create `rel` in every hierarchy. Returns whether it was new
    /// anywhere. cpuset needs its parent's cpus and mems copied down.
    pub fn create(&self, rel: &str) -> std::io::Result<bool> {
        let mut created = false;
        for d in self.dirs(rel) {
            if !d.exists() {
                fs::create_dir_all(&d)?;
                created = true;
            }
        }
        if let Some((_, root)) = self.v1.iter().find(|(c, _)| c == "cpuset") {
            // Walk down from the root, filling empty cpus/mems.
            let mut cur = root.clone();
            for part in rel.trim_start_matches('/').split('/') {
                if part.is_empty() {
                    continue;
                }
                let parent = cur.clone();
                cur = cur.join(part);
                for f in ["cpuset.cpus", "cpuset.mems"] {
                    let mine = fs::read_to_string(cur.join(f)).unwrap_or_default();
                    if mine.trim().is_empty() {
                        let theirs = fs::read_to_string(parent.join(f)).unwrap_or_default();
                        let _ = fs::write(cur.join(f), theirs.trim());
                    }
                }
            }
        }
        Ok(created)
    }

    /// Move `pid` into `rel` in every hierarchy.
    pub fn add(&self, rel: &str, pid: u32) -> std::io::Result<()> {
        for d in self.dirs(rel) {
            fs::write(d.join("cgroup.procs"), pid.to_string())?;
        }
        Ok(())
    }

    /// Remove `rel` (which must be empty) everywhere; gone is fine.
    /// Retries briefly: a killed process leaves its cgroup a moment later.
    pub fn remove(&self, rel: &str) -> std::io::Result<()> {
        let mut last = Ok(());
        for d in self.dirs(rel) {
            let mut tries = 0;
            loop {
                match fs::remove_dir(&d) {
                    Ok(()) => break,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
                    Err(e) if tries < 50 && e.raw_os_error() == Some(libc_ebusy()) => {
                        tries += 1;
                        std::thread::sleep(std::time::Duration::from_millis(20));
                    }
                    Err(e) => {
                        last = Err(e);
                        break;
                    }
                }
            }
        }
        last
    }

    /// Whether `rel` exists in any hierarchy (for cleanup checks).
    #[allow(dead_code)]
    pub fn exists(&self, rel: &str) -> bool {
        self.dirs(rel).iter().any(|d| d.exists())
    }

    /// CPU time (ns) and memory working set (bytes) of `rel`, where the
    /// hierarchy reports them.
    pub fn usage(&self, rel: &str) -> (Option<u64>, Option<u64>) {
        let rel = rel.trim_start_matches('/');
        let read = |p: PathBuf| -> Option<u64> { fs::read_to_string(p).ok()?.trim().parse().ok() };
        let stat = |p: PathBuf, key: &str| -> Option<u64> {
            let s = fs::read_to_string(p).ok()?;
            s.lines().find_map(|l| {
                let (k, v) = l.split_once(' ')?;
                (k == key).then(|| v.trim().parse().ok()).flatten()
            })
        };
        let v1 = |c: &str| {
            self.v1
                .iter()
                .find(|(n, _)| n == c)
                .map(|(_, p)| p.join(rel))
        };
        let mut cpu = v1("cpuacct").and_then(|d| read(d.join("cpuacct.usage")));
        let mut mem = v1("memory").and_then(|d| {
            let usage = read(d.join("memory.usage_in_bytes"))?;
            let inactive = stat(d.join("memory.stat"), "total_inactive_file").unwrap_or(0);
            Some(usage.saturating_sub(inactive))
        });
        if let Some(u) = &self.unified {
            let d = u.join(rel);
            if cpu.is_none() {
                cpu = stat(d.join("cpu.stat"), "usage_usec").map(|us| us * 1000);
            }
            if mem.is_none() {
                mem = read(d.join("memory.current")).map(|usage| {
                    let inactive = stat(d.join("memory.stat"), "inactive_file").unwrap_or(0);
                    usage.saturating_sub(inactive)
                });
            }
        }
        (cpu, mem)
    }

    /// Whether the kernel OOM-killed a process in `rel`.
    pub fn oom_killed(&self, rel: &str) -> bool {
        let rel = rel.trim_start_matches('/');
        let count = |p: PathBuf, key: &str| -> u64 {
            fs::read_to_string(p)
                .ok()
                .and_then(|s| {
                    s.lines().find_map(|l| {
                        let (k, v) = l.split_once(' ')?;
                        (k == key).then(|| v.trim().parse().ok()).flatten()
                    })
                })
                .unwrap_or(0)
        };
        if let Some((_, m)) = self.v1.iter().find(|(n, _)| n == "memory") {
            if count(m.join(rel).join("memory.oom_control"), "oom_kill") > 0 {
                return true;
            }
        }
        if let Some(u) = &self.unified {
            if count(u.join(rel).join("memory.events"), "oom_kill") > 0 {
                return true;
            }
        }
        false
    }
}

fn libc_ebusy() -> i32 {
    nix::errno::Errno::EBUSY as i32
}

/// The pod's cgroup: the sandbox config's `cgroup_parent`, or
/// `/crisp/<pod id>` without one.
pub fn pod_cgroup(parent: &str, pod_id: &str) -> String {
    if parent.trim_matches('/').is_empty() {
        format!("/crisp/{pod_id}")
    } else {
        format!("/{}", parent.trim_matches('/'))
    }
}

/// The sandbox holder's cgroup, inside the pod's.
pub fn sandbox_cgroup(pod_cgroup: &str, pod_id: &str) -> String {
    format!("{pod_cgroup}/crisp-{pod_id}")
}

/// A container's cgroup, inside the pod's.
pub fn container_cgroup(pod_cgroup: &str, ctr_id: &str) -> String {
    format!("{pod_cgroup}/crisp-{ctr_id}")
}
