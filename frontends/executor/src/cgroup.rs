//! Cgroups: one small interface, a v1 and a v2 implementation, chosen at
//! start from what the host mounts.
//!
//! Both drive the cgroup filesystem directly (crisp's "cgroupfs" driver).
//! crispd holds one, detected at start, for pod cgroups and stats
//! (`pods::Host::cgroups`); the executor and each container's monitor
//! detect their own the same way.
//! Paths given to the trait are relative to the cgroup root(s), with or
//! without a leading `/` (`kubepods/pod1/ctr` and `/kubepods/pod1/ctr` are
//! the same cgroup).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use oci_spec::runtime::LinuxResources;

use super::Error;

/// Usage figures for stats calls.
#[derive(Clone, Copy, Debug, Default)]
pub struct Usage {
    /// CPU time used, in nanoseconds.
    pub cpu_usage_ns: u64,
    /// Memory charged to the cgroup, page cache included.
    pub memory_usage_bytes: u64,
    /// Usage less inactive file pages, as kubelet computes it.
    pub memory_working_set_bytes: u64,
    /// Processes (and threads) in the cgroup.
    pub pids: u64,
}

/// A cgroup hierarchy (v1 or v2) that creates, fills, limits, measures
/// and removes cgroups named by paths relative to its root.
pub trait Cgroups: Send + Sync {
    /// Create the cgroup `path` (relative to the root) with `resources`.
    fn create(&self, path: &str, resources: &LinuxResources) -> Result<(), Error>;
    /// Move `pid` into the cgroup.
    fn add(&self, path: &str, pid: i32) -> Result<(), Error>;
    /// Apply changed limits to a live cgroup (UpdateContainerResources).
    fn update(&self, path: &str, resources: &LinuxResources) -> Result<(), Error>;
    /// What the cgroup uses now (stats calls).
    fn usage(&self, path: &str) -> Result<Usage, Error>;
    /// Whether the kernel OOM-killed a process in the cgroup.
    fn oom_killed(&self, path: &str) -> bool;
    /// Remove the (empty) cgroup; idempotent.
    fn remove(&self, path: &str) -> Result<(), Error>;
    /// SIGKILL every process in the cgroup and its descendants, and wait
    /// until none is left (at most [`KILL_WAIT`]), as runc's `kill --all`:
    /// with a host or pod-shared PID namespace, the death of a container's
    /// init takes nothing else with it. v2: `cgroup.kill` (Linux 5.14),
    /// else freeze, SIGKILL every pid, thaw; v1: the same through the
    /// freezer hierarchy. A missing cgroup has nothing to kill. The root
    /// cgroup is refused.
    fn kill_all(&self, path: &str) -> Result<(), Error>;
    /// Whether the cgroup exists (in any hierarchy).
    fn exists(&self, path: &str) -> bool;
    /// The `cgroup.procs` file of `path` in every hierarchy: writing a pid
    /// (or `0`, "myself") to each moves a process into the cgroup. The
    /// executor opens them before it forks, so that the container's
    /// process is born in its cgroup.
    fn procs_files(&self, path: &str) -> Vec<PathBuf>;
    /// The files through which a *single-threaded* process moves itself
    /// into the cgroup by writing `0` to each (the executor's intermediate
    /// child, the sandbox holder's parent). On v1 these are the `tasks`
    /// files: moving only the calling thread (pid 0 in `tasks`) skips the
    /// global threadgroup lock, whose writer waits for an RCU grace period
    /// (7-15 ms on our VMs) each time it is taken after an idle spell,
    /// while a `cgroup.procs` write takes it always. For a single-threaded
    /// process the thread is the whole process. On v2, `cgroup.procs`.
    fn self_attach_files(&self, path: &str) -> Vec<PathBuf>;
    /// "v1" or "v2", for logs and status.
    fn version(&self) -> &'static str;
    /// Every figure stats and metrics calls report (CPU, memory, block IO,
    /// pressure), read fresh; a figure this kernel or hierarchy does not
    /// expose is `None` (or absent). Fails only when the cgroup is gone.
    fn stats(&self, path: &str) -> Result<Stats, Error>;
}

/// The implementation matching this host's cgroup layout: cgroup v2 when
/// `/sys/fs/cgroup` is the unified hierarchy (it has `cgroup.controllers`),
/// else v1 (a hybrid layout, with a cgroup2 mount at
/// `/sys/fs/cgroup/unified`, counts as v1: resources live in the v1
/// hierarchies).
///
/// The layout is read once per process (a host does not remount its
/// cgroup hierarchies under a running runtime); a failed detection is
/// tried again next time.
pub fn detect() -> Result<Box<dyn Cgroups>, Error> {
    static LAYOUT: std::sync::OnceLock<Layout> = std::sync::OnceLock::new();
    let layout = match LAYOUT.get() {
        Some(l) => l,
        None => {
            let l = detect_layout()?;
            LAYOUT.get_or_init(|| l)
        }
    };
    Ok(match layout {
        Layout::V1(v1) => Box::new(v1.clone()),
        Layout::V2(v2) => Box::new(v2.clone()),
    })
}

enum Layout {
    V1(V1),
    V2(V2),
}

fn detect_layout() -> Result<Layout, Error> {
    let root = Path::new("/sys/fs/cgroup");
    if root.join("cgroup.controllers").exists() {
        return Ok(Layout::V2(V2::at(root)));
    }
    let mountinfo = fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| io_error("read /proc/self/mountinfo", e))?;
    let v1 = V1::from_mountinfo(&mountinfo);
    if v1.hierarchies.is_empty() {
        return Err(Error::Host(
            "no cgroup v1 or v2 hierarchy is mounted".into(),
        ));
    }
    Ok(Layout::V1(v1))
}

fn io_error(context: impl Into<String>, e: io::Error) -> Error {
    Error::io(context, e)
}

fn rel(path: &str) -> &str {
    path.trim_start_matches('/')
}

fn write_file(path: &Path, value: &str) -> Result<(), Error> {
    fs::write(path, value)
        .map_err(|e| io_error(format!("write {value:?} to {}", path.display()), e))
}

fn read_u64(path: &Path) -> Result<u64, Error> {
    let s =
        fs::read_to_string(path).map_err(|e| io_error(format!("read {}", path.display()), e))?;
    s.trim()
        .parse()
        .map_err(|_| Error::Host(format!("{}: not a number: {:?}", path.display(), s.trim())))
}

/// The value of `key` in a flat-keyed file (`memory.stat`, `cpu.stat`,
/// `memory.events`, `memory.oom_control`).
fn keyed(content: &str, key: &str) -> Option<u64> {
    content.lines().find_map(|l| {
        let mut it = l.split_whitespace();
        (it.next() == Some(key)).then(|| it.next()?.parse().ok())?
    })
}

/// `rmdir`, retried while the kernel still counts exiting tasks.
fn rmdir_retry(dir: &Path) -> Result<(), Error> {
    let mut delay = Duration::from_millis(5);
    for attempt in 0.. {
        match fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(Errno::EBUSY as i32) && attempt < 40 => {
                thread::sleep(delay);
                delay = (delay * 2).min(Duration::from_millis(200));
            }
            Err(e) => return Err(io_error(format!("rmdir {}", dir.display()), e)),
        }
    }
    unreachable!()
}

/// How long [`Cgroups::kill_all`] waits for the killed processes to go.
pub const KILL_WAIT: Duration = Duration::from_secs(10);

/// The pids in the cgroup `dir` and its descendants (appended to `out`).
/// A cgroup that is gone, or goes while it is read, holds none.
fn tree_pids(dir: &Path, out: &mut Vec<i32>, depth: usize) -> Result<(), Error> {
    let procs = dir.join("cgroup.procs");
    match fs::read_to_string(&procs) {
        Ok(s) => out.extend(s.lines().filter_map(|l| l.trim().parse::<i32>().ok())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_error(format!("read {}", procs.display()), e)),
    }
    if depth >= 64 {
        return Ok(());
    }
    let entries = match fs::read_dir(dir) {
        Ok(d) => d,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_error(format!("list {}", dir.display()), e)),
    };
    for entry in entries.flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            tree_pids(&entry.path(), out, depth + 1)?;
        }
    }
    Ok(())
}

/// SIGKILL each pid; one that is already gone is no error.
fn sigkill_each(pids: &[i32]) {
    use nix::sys::signal::{kill, Signal};
    for &pid in pids.iter().filter(|p| **p > 0) {
        let _ = kill(nix::unistd::Pid::from_raw(pid), Signal::SIGKILL);
    }
}

/// Refuse to kill all of the root cgroup: that is every process of the
/// host.
fn refuse_root(path: &str) -> Result<(), Error> {
    if rel(path).trim_matches('/').is_empty() {
        return Err(Error::Invalid(
            "refusing to kill every process of the root cgroup".into(),
        ));
    }
    Ok(())
}

/// Run `round` (which kills every process it finds) and wait until `list`
/// finds none left, or fail after [`KILL_WAIT`] naming those left. A
/// killed process stays listed until it has finished exiting; another
/// round runs only when a process appears that no round has seen (one
/// forked before a round without a freezer could stop it).
fn kill_until_empty(
    what: &str,
    mut list: impl FnMut() -> Result<Vec<i32>, Error>,
    mut round: impl FnMut() -> Result<(), Error>,
) -> Result<(), Error> {
    let deadline = Instant::now() + KILL_WAIT;
    let mut pause = Duration::from_millis(1);
    let mut seen = std::collections::HashSet::new();
    loop {
        let mut pids = list()?;
        if pids.is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            pids.sort_unstable();
            pids.dedup();
            return Err(Error::sys(
                format!(
                    "processes {pids:?} of cgroup {what} still there {}s after SIGKILL",
                    KILL_WAIT.as_secs()
                ),
                Errno::EBUSY,
            ));
        }
        if pids.iter().any(|p| !seen.contains(p)) {
            round()?;
            seen.extend(pids);
        }
        thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(20));
    }
}

/// Poll `is_done` until it holds or a second has passed: a freezer may
/// take a moment (a task in an uninterruptible sleep), and killing goes on
/// regardless (SIGKILL reaches the tasks once they are thawed).
fn wait_for(mut is_done: impl FnMut() -> bool) {
    let until = Instant::now() + Duration::from_secs(1);
    while !is_done() && Instant::now() < until {
        thread::sleep(Duration::from_millis(1));
    }
}

/// One cgroup v1 hierarchy: where it is mounted, which controllers it has.
#[derive(Clone, Debug)]
pub struct Hierarchy {
    /// Where the hierarchy is mounted.
    pub mount: PathBuf,
    /// `cpu`, `memory`, ..., or `name=systemd` for a named hierarchy.
    pub controllers: Vec<String>,
}

/// cgroup v1: one directory per hierarchy.
#[derive(Clone, Debug)]
pub struct V1 {
    /// Every mounted hierarchy.
    pub hierarchies: Vec<Hierarchy>,
}

const V1_CONTROLLERS: &[&str] = &[
    "cpu",
    "cpuacct",
    "cpuset",
    "memory",
    "devices",
    "freezer",
    "net_cls",
    "net_prio",
    "blkio",
    "perf_event",
    "hugetlb",
    "pids",
    "rdma",
    "misc",
];

/// Undo mountinfo's octal escapes (`\040` for a space).
pub(crate) fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Mount point, filesystem type and super options of each mountinfo line.
pub(crate) fn parse_mountinfo(content: &str) -> Vec<(String, String, String)> {
    content
        .lines()
        .filter_map(|line| {
            let (pre, post) = line.split_once(" - ")?;
            let mount_point = pre.split(' ').nth(4)?;
            let mut post = post.split(' ');
            let fstype = post.next()?;
            let _source = post.next()?;
            let super_opts = post.next().unwrap_or("");
            Some((
                unescape_mountinfo(mount_point),
                fstype.to_string(),
                super_opts.to_string(),
            ))
        })
        .collect()
}

impl V1 {
    /// The v1 hierarchies mounted in `mountinfo` (first mount of each).
    pub fn from_mountinfo(mountinfo: &str) -> Self {
        let mut hierarchies: Vec<Hierarchy> = Vec::new();
        for (mount_point, fstype, opts) in parse_mountinfo(mountinfo) {
            if fstype != "cgroup" {
                continue;
            }
            let mut controllers: Vec<String> = opts
                .split(',')
                .filter(|o| V1_CONTROLLERS.contains(o) || o.starts_with("name="))
                .map(str::to_string)
                .collect();
            controllers.sort();
            if controllers.is_empty() || hierarchies.iter().any(|h| h.controllers == controllers) {
                continue;
            }
            hierarchies.push(Hierarchy {
                mount: PathBuf::from(mount_point),
                controllers,
            });
        }
        Self { hierarchies }
    }

    /// The cgroup directory of `path` in the hierarchy holding `controller`.
    fn dir(&self, controller: &str, path: &str) -> Option<PathBuf> {
        self.hierarchies
            .iter()
            .find(|h| h.controllers.iter().any(|c| c == controller))
            .map(|h| h.mount.join(rel(path)))
    }

    /// A new cpuset cgroup starts with empty `cpus` and `mems`, and takes no
    /// task until they are set: copy them down from the parent, level by
    /// level.
    fn init_cpuset(&self, path: &str) -> Result<(), Error> {
        let Some(h) = self
            .hierarchies
            .iter()
            .find(|h| h.controllers.iter().any(|c| c == "cpuset"))
        else {
            return Ok(());
        };
        let mut dir = h.mount.clone();
        for part in rel(path).split('/').filter(|p| !p.is_empty()) {
            let parent = dir.clone();
            dir.push(part);
            for file in ["cpuset.cpus", "cpuset.mems"] {
                let cur = fs::read_to_string(dir.join(file)).unwrap_or_default();
                if cur.trim().is_empty() {
                    let from_parent = fs::read_to_string(parent.join(file)).map_err(|e| {
                        io_error(format!("read {}", parent.join(file).display()), e)
                    })?;
                    write_file(&dir.join(file), from_parent.trim())?;
                }
            }
        }
        Ok(())
    }

    fn set_memory(&self, dir: &Path, limit: Option<i64>, swap: Option<i64>) -> Result<(), Error> {
        let mem = dir.join("memory.limit_in_bytes");
        let memsw = dir.join("memory.memsw.limit_in_bytes");
        let has_memsw = memsw.exists();
        let fmt = |v: i64| {
            if v < 0 {
                "-1".to_string()
            } else {
                v.to_string()
            }
        };
        match (limit, swap.filter(|_| has_memsw)) {
            (Some(l), Some(s)) => {
                // memsw must stay >= mem at every step: which one goes first
                // depends on whether the limits grow or shrink.
                if write_file(&mem, &fmt(l)).is_ok() {
                    write_file(&memsw, &fmt(s))
                } else {
                    write_file(&memsw, &fmt(s))?;
                    write_file(&mem, &fmt(l))
                }
            }
            (Some(l), None) => write_file(&mem, &fmt(l)),
            (None, Some(s)) => write_file(&memsw, &fmt(s)),
            (None, None) => Ok(()),
        }
    }

    fn apply(&self, path: &str, r: &LinuxResources) -> Result<(), Error> {
        if let Some(cpu) = r.cpu() {
            if let Some(dir) = self.dir("cpu", path) {
                if let Some(shares) = cpu.shares().filter(|s| *s > 0) {
                    write_file(&dir.join("cpu.shares"), &shares.to_string())?;
                }
                if let Some(period) = cpu.period().filter(|p| *p > 0) {
                    write_file(&dir.join("cpu.cfs_period_us"), &period.to_string())?;
                }
                if let Some(quota) = cpu.quota().filter(|q| *q != 0) {
                    let q = if quota < 0 { -1 } else { quota };
                    write_file(&dir.join("cpu.cfs_quota_us"), &q.to_string())?;
                }
            }
            if let Some(dir) = self.dir("cpuset", path) {
                if let Some(cpus) = cpu.cpus().as_deref().filter(|s| !s.is_empty()) {
                    write_file(&dir.join("cpuset.cpus"), cpus)?;
                }
                if let Some(mems) = cpu.mems().as_deref().filter(|s| !s.is_empty()) {
                    write_file(&dir.join("cpuset.mems"), mems)?;
                }
            }
        }
        if let (Some(mem), Some(dir)) = (r.memory(), self.dir("memory", path)) {
            self.set_memory(
                &dir,
                mem.limit().filter(|l| *l != 0),
                mem.swap().filter(|s| *s != 0),
            )?;
        }
        if let (Some(pids), Some(dir)) = (r.pids(), self.dir("pids", path)) {
            let v = if pids.limit() > 0 {
                pids.limit().to_string()
            } else {
                "max".into()
            };
            write_file(&dir.join("pids.max"), &v)?;
        }
        if let (Some(limits), Some(dir)) = (r.hugepage_limits(), self.dir("hugetlb", path)) {
            for l in limits {
                let file = dir.join(format!("hugetlb.{}.limit_in_bytes", l.page_size()));
                write_file(&file, &l.limit().to_string())?;
            }
        }
        if let (Some(rules), Some(dir)) = (r.devices(), self.dir("devices", path)) {
            for rule in rules {
                let file = if rule.allow() {
                    "devices.allow"
                } else {
                    "devices.deny"
                };
                let line = rule.to_string();
                let line = if rule.access().is_none() {
                    format!("{line}rwm")
                } else {
                    line
                };
                write_file(&dir.join(file), &line)?;
            }
        }
        Ok(())
    }
}

impl Cgroups for V1 {
    fn create(&self, path: &str, resources: &LinuxResources) -> Result<(), Error> {
        for h in &self.hierarchies {
            let dir = h.mount.join(rel(path));
            fs::create_dir_all(&dir)
                .map_err(|e| io_error(format!("mkdir {}", dir.display()), e))?;
        }
        self.init_cpuset(path)?;
        self.apply(path, resources)
    }

    fn add(&self, path: &str, pid: i32) -> Result<(), Error> {
        for file in self.procs_files(path) {
            write_file(&file, &pid.to_string())?;
        }
        Ok(())
    }

    fn update(&self, path: &str, resources: &LinuxResources) -> Result<(), Error> {
        self.apply(path, resources)
    }

    fn usage(&self, path: &str) -> Result<Usage, Error> {
        let mut u = Usage::default();
        if let Some(dir) = self.dir("cpuacct", path) {
            u.cpu_usage_ns = read_u64(&dir.join("cpuacct.usage"))?;
        }
        if let Some(dir) = self.dir("memory", path) {
            u.memory_usage_bytes = read_u64(&dir.join("memory.usage_in_bytes"))?;
            let stat = fs::read_to_string(dir.join("memory.stat")).unwrap_or_default();
            let inactive = keyed(&stat, "total_inactive_file").unwrap_or(0);
            u.memory_working_set_bytes = u.memory_usage_bytes.saturating_sub(inactive);
        }
        if let Some(dir) = self.dir("pids", path) {
            u.pids = read_u64(&dir.join("pids.current")).unwrap_or(0);
        }
        Ok(u)
    }

    fn oom_killed(&self, path: &str) -> bool {
        let Some(dir) = self.dir("memory", path) else {
            return false;
        };
        let oom_control = fs::read_to_string(dir.join("memory.oom_control")).unwrap_or_default();
        match keyed(&oom_control, "oom_kill") {
            Some(n) => n > 0,
            // Kernels before 4.13 have no kill counter: the limit having
            // been hit is the best sign left.
            None => read_u64(&dir.join("memory.failcnt")).is_ok_and(|n| n > 0),
        }
    }

    fn remove(&self, path: &str) -> Result<(), Error> {
        let mut first_err = None;
        for h in &self.hierarchies {
            if let Err(e) = rmdir_retry(&h.mount.join(rel(path))) {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    fn kill_all(&self, path: &str) -> Result<(), Error> {
        refuse_root(path)?;
        let list = || {
            let mut pids = Vec::new();
            for h in &self.hierarchies {
                tree_pids(&h.mount.join(rel(path)), &mut pids, 0)?;
            }
            pids.sort_unstable();
            pids.dedup();
            Ok(pids)
        };
        let freezer = self.dir("freezer", path).filter(|d| d.is_dir());
        kill_until_empty(path, list, || {
            // Frozen, the tasks cannot fork between the listing and the
            // kill; without a freezer hierarchy, the rounds catch up.
            let state = freezer.as_ref().map(|d| d.join("freezer.state"));
            if let Some(state) = &state {
                if write_file(state, "FROZEN").is_ok() {
                    wait_for(|| fs::read_to_string(state).is_ok_and(|s| s.trim() == "FROZEN"));
                }
            }
            let pids = list();
            if let Ok(pids) = &pids {
                sigkill_each(pids);
            }
            if let Some(state) = &state {
                let _ = write_file(state, "THAWED");
            }
            pids.map(drop)
        })
    }

    fn exists(&self, path: &str) -> bool {
        self.hierarchies
            .iter()
            .any(|h| h.mount.join(rel(path)).is_dir())
    }

    fn procs_files(&self, path: &str) -> Vec<PathBuf> {
        self.hierarchies
            .iter()
            .map(|h| h.mount.join(rel(path)).join("cgroup.procs"))
            .collect()
    }

    fn self_attach_files(&self, path: &str) -> Vec<PathBuf> {
        self.hierarchies
            .iter()
            .map(|h| h.mount.join(rel(path)).join("tasks"))
            .collect()
    }

    fn version(&self) -> &'static str {
        "v1"
    }

    fn stats(&self, path: &str) -> Result<Stats, Error> {
        if !self.exists(path) {
            return Err(Error::Host(format!("cgroup {path} does not exist")));
        }
        let read = |controller: &str, file: &str| {
            self.dir(controller, path)
                .and_then(|d| fs::read_to_string(d.join(file)).ok())
        };
        let num = |controller: &str, file: &str| read(controller, file)?.trim().parse::<u64>().ok();
        let mut st = Stats::default();
        if let Some(usage_ns) = num("cpuacct", "cpuacct.usage") {
            let throttling = read("cpu", "cpu.stat").unwrap_or_default();
            st.cpu = Some(CpuStats {
                usage_ns,
                user_ns: num("cpuacct", "cpuacct.usage_user"),
                system_ns: num("cpuacct", "cpuacct.usage_sys"),
                periods: keyed(&throttling, "nr_periods"),
                throttled_periods: keyed(&throttling, "nr_throttled"),
                throttled_ns: keyed(&throttling, "throttled_time"),
            });
        }
        if let Some(usage) = num("memory", "memory.usage_in_bytes") {
            let stat = read("memory", "memory.stat").unwrap_or_default();
            let inactive = keyed(&stat, "total_inactive_file").unwrap_or(0);
            // A v1 "no limit" is the largest page-aligned long.
            let limit = num("memory", "memory.limit_in_bytes").filter(|l| *l < 1 << 62);
            let oom = read("memory", "memory.oom_control").unwrap_or_default();
            st.memory = Some(MemoryStats {
                usage_bytes: usage,
                working_set_bytes: usage.saturating_sub(inactive),
                rss_bytes: keyed(&stat, "total_rss"),
                cache_bytes: keyed(&stat, "total_cache"),
                mapped_file_bytes: keyed(&stat, "total_mapped_file"),
                max_usage_bytes: num("memory", "memory.max_usage_in_bytes"),
                failcnt: num("memory", "memory.failcnt"),
                page_faults: keyed(&stat, "total_pgfault"),
                major_page_faults: keyed(&stat, "total_pgmajfault"),
                swap_bytes: num("memory", "memory.memsw.usage_in_bytes")
                    .map(|memsw| memsw.saturating_sub(usage)),
                limit_bytes: limit,
                oom_kills: keyed(&oom, "oom_kill"),
            });
        }
        st.pids = num("pids", "pids.current");
        if let Some(bytes) = read("blkio", "blkio.throttle.io_service_bytes_recursive") {
            let ops = read("blkio", "blkio.throttle.io_serviced_recursive").unwrap_or_default();
            st.io = blkio_devices(&bytes, &ops);
        }
        // PSI lives in cgroup v2; a v1 hierarchy shows it only where the
        // kernel puts `*.pressure` files into it.
        let pressure = |file: &str| {
            self.hierarchies
                .iter()
                .find_map(|h| fs::read_to_string(h.mount.join(rel(path)).join(file)).ok())
                .and_then(|c| parse_pressure(&c))
        };
        st.cpu_pressure = pressure("cpu.pressure");
        st.memory_pressure = pressure("memory.pressure");
        st.io_pressure = pressure("io.pressure");
        Ok(st)
    }
}

/// cgroup v2: one unified tree.
#[derive(Clone, Debug)]
pub struct V2 {
    /// Where the unified hierarchy is mounted: `/sys/fs/cgroup`, or the
    /// `unified` mount of a hybrid v1 host.
    pub root: PathBuf,
}

/// containerd's (runc's) mapping of cgroup v1 `cpu.shares` [2, 262144] to
/// v2 `cpu.weight` [1, 10000].
pub fn shares_to_weight(shares: u64) -> u64 {
    if shares == 0 {
        return 0;
    }
    1 + (shares.clamp(2, 262_144) - 2) * 9999 / 262_142
}

impl V2 {
    /// The unified hierarchy at `root`.
    pub fn at(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    fn dir(&self, path: &str) -> PathBuf {
        self.root.join(rel(path))
    }

    fn pids(&self, path: &str) -> Result<Vec<i32>, Error> {
        let mut pids = Vec::new();
        tree_pids(&self.dir(path), &mut pids, 0)?;
        Ok(pids)
    }

    /// [`Cgroups::kill_all`] without `cgroup.kill` (kernels before 5.14):
    /// freeze (`cgroup.freeze`, the subtree with it), SIGKILL every pid,
    /// thaw. Public so that it is tested where the kernel has
    /// `cgroup.kill` too.
    pub fn kill_all_frozen(&self, path: &str) -> Result<(), Error> {
        refuse_root(path)?;
        let dir = self.dir(path);
        let freeze = dir.join("cgroup.freeze");
        let events = dir.join("cgroup.events");
        kill_until_empty(
            path,
            || self.pids(path),
            || {
                if write_file(&freeze, "1").is_ok() {
                    wait_for(|| {
                        fs::read_to_string(&events).map_or(true, |s| keyed(&s, "frozen") == Some(1))
                    });
                }
                let pids = self.pids(path);
                if let Ok(pids) = &pids {
                    sigkill_each(pids);
                }
                let _ = write_file(&freeze, "0");
                pids.map(drop)
            },
        )
    }

    /// Enable in every ancestor's `cgroup.subtree_control` the controllers
    /// the leaf needs (those the ancestor has available).
    fn enable_controllers(&self, path: &str) -> Result<(), Error> {
        let wanted = ["cpu", "cpuset", "memory", "pids", "hugetlb", "io"];
        let mut dir = self.root.clone();
        for part in rel(path).split('/').filter(|p| !p.is_empty()) {
            let available = fs::read_to_string(dir.join("cgroup.controllers")).unwrap_or_default();
            let enabled =
                fs::read_to_string(dir.join("cgroup.subtree_control")).unwrap_or_default();
            for c in wanted {
                let has = |s: &str| s.split_whitespace().any(|x| x == c);
                if has(&available) && !has(&enabled) {
                    // A controller may refuse (e.g. cpu with realtime
                    // tasks); the limit that needs it then fails loudly.
                    let _ = fs::write(dir.join("cgroup.subtree_control"), format!("+{c}"));
                }
            }
            dir.push(part);
        }
        Ok(())
    }

    fn apply(&self, path: &str, r: &LinuxResources) -> Result<(), Error> {
        let dir = self.dir(path);
        if let Some(cpu) = r.cpu() {
            if let Some(shares) = cpu.shares().filter(|s| *s > 0) {
                write_file(
                    &dir.join("cpu.weight"),
                    &shares_to_weight(shares).to_string(),
                )?;
            }
            let quota = cpu.quota().filter(|q| *q != 0);
            let period = cpu.period().filter(|p| *p > 0);
            if quota.is_some() || period.is_some() {
                let q = match quota {
                    Some(q) if q > 0 => q.to_string(),
                    _ => "max".to_string(),
                };
                let p = period.unwrap_or(100_000);
                write_file(&dir.join("cpu.max"), &format!("{q} {p}"))?;
            }
            if let Some(cpus) = cpu.cpus().as_deref().filter(|s| !s.is_empty()) {
                write_file(&dir.join("cpuset.cpus"), cpus)?;
            }
            if let Some(mems) = cpu.mems().as_deref().filter(|s| !s.is_empty()) {
                write_file(&dir.join("cpuset.mems"), mems)?;
            }
        }
        if let Some(mem) = r.memory() {
            let limit = mem.limit().filter(|l| *l != 0);
            if let Some(l) = limit {
                let v = if l < 0 {
                    "max".to_string()
                } else {
                    l.to_string()
                };
                write_file(&dir.join("memory.max"), &v)?;
            }
            // OCI's swap is memory+swap; v2's memory.swap.max is swap alone.
            if let Some(s) = mem.swap().filter(|s| *s != 0) {
                let v = match limit {
                    _ if s < 0 => Some("max".to_string()),
                    Some(l) if l > 0 && s >= l => Some((s - l).to_string()),
                    _ => None,
                };
                let file = dir.join("memory.swap.max");
                if let (Some(v), true) = (v, file.exists()) {
                    write_file(&file, &v)?;
                }
            }
        }
        if let Some(pids) = r.pids() {
            let v = if pids.limit() > 0 {
                pids.limit().to_string()
            } else {
                "max".into()
            };
            write_file(&dir.join("pids.max"), &v)?;
        }
        if let Some(limits) = r.hugepage_limits() {
            for l in limits {
                write_file(
                    &dir.join(format!("hugetlb.{}.max", l.page_size())),
                    &l.limit().to_string(),
                )?;
            }
        }
        if let Some(unified) = r.unified() {
            let mut keys: Vec<_> = unified.keys().collect();
            keys.sort();
            for k in keys {
                if k.contains('/') || k.starts_with('.') {
                    return Err(Error::Invalid(format!(
                        "unified resource {k:?}: not a cgroup file name"
                    )));
                }
                write_file(&dir.join(k), &unified[k])?;
            }
        }
        Ok(())
    }
}

impl Cgroups for V2 {
    fn create(&self, path: &str, resources: &LinuxResources) -> Result<(), Error> {
        let dir = self.dir(path);
        fs::create_dir_all(&dir).map_err(|e| io_error(format!("mkdir {}", dir.display()), e))?;
        self.enable_controllers(path)?;
        self.apply(path, resources)
    }

    fn add(&self, path: &str, pid: i32) -> Result<(), Error> {
        write_file(&self.dir(path).join("cgroup.procs"), &pid.to_string())
    }

    fn update(&self, path: &str, resources: &LinuxResources) -> Result<(), Error> {
        self.apply(path, resources)
    }

    fn usage(&self, path: &str) -> Result<Usage, Error> {
        let dir = self.dir(path);
        let mut u = Usage::default();
        let cpu_stat = fs::read_to_string(dir.join("cpu.stat"))
            .map_err(|e| io_error(format!("read {}", dir.join("cpu.stat").display()), e))?;
        u.cpu_usage_ns = keyed(&cpu_stat, "usage_usec").unwrap_or(0) * 1000;
        if let Ok(cur) = read_u64(&dir.join("memory.current")) {
            u.memory_usage_bytes = cur;
            let stat = fs::read_to_string(dir.join("memory.stat")).unwrap_or_default();
            let inactive = keyed(&stat, "inactive_file").unwrap_or(0);
            u.memory_working_set_bytes = cur.saturating_sub(inactive);
        }
        u.pids = read_u64(&dir.join("pids.current")).unwrap_or(0);
        Ok(u)
    }

    fn oom_killed(&self, path: &str) -> bool {
        let events = fs::read_to_string(self.dir(path).join("memory.events")).unwrap_or_default();
        keyed(&events, "oom_kill").is_some_and(|n| n > 0)
    }

    fn remove(&self, path: &str) -> Result<(), Error> {
        rmdir_retry(&self.dir(path))
    }

    fn kill_all(&self, path: &str) -> Result<(), Error> {
        refuse_root(path)?;
        let kill = self.dir(path).join("cgroup.kill");
        if !kill.exists() {
            return self.kill_all_frozen(path);
        }
        // The kernel kills the whole subtree at once, new forks included.
        kill_until_empty(
            path,
            || self.pids(path),
            || {
                match fs::write(&kill, "1") {
                    Ok(()) => Ok(()),
                    // Gone meanwhile: nothing left to kill.
                    Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
                    Err(e) => Err(io_error(format!("write \"1\" to {}", kill.display()), e)),
                }
            },
        )
    }

    fn exists(&self, path: &str) -> bool {
        self.dir(path).is_dir()
    }

    fn procs_files(&self, path: &str) -> Vec<PathBuf> {
        vec![self.dir(path).join("cgroup.procs")]
    }

    fn self_attach_files(&self, path: &str) -> Vec<PathBuf> {
        self.procs_files(path)
    }

    fn version(&self) -> &'static str {
        "v2"
    }

    fn stats(&self, path: &str) -> Result<Stats, Error> {
        let dir = self.dir(path);
        if !dir.is_dir() {
            return Err(Error::Host(format!("cgroup {path} does not exist")));
        }
        let read = |file: &str| fs::read_to_string(dir.join(file)).ok();
        let num = |file: &str| read(file)?.trim().parse::<u64>().ok();
        let usec = |v: Option<u64>| v.map(|v| v.saturating_mul(1000));
        let mut st = Stats::default();
        if let Some(cpu) = read("cpu.stat") {
            st.cpu = Some(CpuStats {
                usage_ns: keyed(&cpu, "usage_usec").unwrap_or(0).saturating_mul(1000),
                user_ns: usec(keyed(&cpu, "user_usec")),
                system_ns: usec(keyed(&cpu, "system_usec")),
                periods: keyed(&cpu, "nr_periods"),
                throttled_periods: keyed(&cpu, "nr_throttled"),
                throttled_ns: usec(keyed(&cpu, "throttled_usec")),
            });
        }
        if let Some(usage) = num("memory.current") {
            let stat = read("memory.stat").unwrap_or_default();
            let inactive = keyed(&stat, "inactive_file").unwrap_or(0);
            let events = read("memory.events").unwrap_or_default();
            st.memory = Some(MemoryStats {
                usage_bytes: usage,
                working_set_bytes: usage.saturating_sub(inactive),
                rss_bytes: keyed(&stat, "anon"),
                cache_bytes: keyed(&stat, "file"),
                mapped_file_bytes: keyed(&stat, "file_mapped"),
                max_usage_bytes: num("memory.peak"),
                // The times usage hit the limit (v1's failcnt).
                failcnt: keyed(&events, "max"),
                page_faults: keyed(&stat, "pgfault"),
                major_page_faults: keyed(&stat, "pgmajfault"),
                swap_bytes: num("memory.swap.current"),
                // "max" does not parse: no limit.
                limit_bytes: num("memory.max"),
                oom_kills: keyed(&events, "oom_kill"),
            });
        }
        st.pids = num("pids.current");
        if let Some(io) = read("io.stat") {
            st.io = io_stat_devices(&io);
        }
        st.cpu_pressure = read("cpu.pressure").and_then(|c| parse_pressure(&c));
        st.memory_pressure = read("memory.pressure").and_then(|c| parse_pressure(&c));
        st.io_pressure = read("io.pressure").and_then(|c| parse_pressure(&c));
        Ok(st)
    }
}

/// What [`Cgroups::stats`] reads. A figure the kernel does not offer (a
/// controller not enabled, an older kernel) is `None`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Stats {
    /// CPU time and throttling (v1 `cpuacct`/`cpu`, v2 `cpu.stat`).
    pub cpu: Option<CpuStats>,
    /// Memory use and events (v1 `memory`, v2 `memory.*`).
    pub memory: Option<MemoryStats>,
    /// Processes (and threads) in the cgroup (`pids.current`).
    pub pids: Option<u64>,
    /// Block IO per device (v1 `blkio.throttle.*_recursive`, v2 `io.stat`).
    pub io: Vec<IoDevice>,
    /// CPU pressure stall information (v2 `cpu.pressure`).
    pub cpu_pressure: Option<Pressure>,
    /// Memory pressure stall information (v2 `memory.pressure`).
    pub memory_pressure: Option<Pressure>,
    /// IO pressure stall information (v2 `io.pressure`).
    pub io_pressure: Option<Pressure>,
}

/// CPU time used by the cgroup, and its CFS bandwidth throttling.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CpuStats {
    /// CPU time used, nanoseconds.
    pub usage_ns: u64,
    /// CPU time in user mode, nanoseconds.
    pub user_ns: Option<u64>,
    /// CPU time in kernel mode, nanoseconds.
    pub system_ns: Option<u64>,
    /// CFS bandwidth periods, throttled periods and time (`cpu.stat`).
    pub periods: Option<u64>,
    /// Periods in which the cgroup was throttled.
    pub throttled_periods: Option<u64>,
    /// Time the cgroup was throttled, nanoseconds.
    pub throttled_ns: Option<u64>,
}

/// Memory the cgroup uses, its limit and its memory events.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MemoryStats {
    /// Memory charged to the cgroup, page cache included.
    pub usage_bytes: u64,
    /// Usage minus inactive file pages, as kubelet and cAdvisor count it.
    pub working_set_bytes: u64,
    /// Anonymous memory (v1 `total_rss`, v2 `anon`).
    pub rss_bytes: Option<u64>,
    /// Page cache (v1 `total_cache`, v2 `file`).
    pub cache_bytes: Option<u64>,
    /// Mapped file pages (v1 `total_mapped_file`, v2 `file_mapped`).
    pub mapped_file_bytes: Option<u64>,
    /// The highest usage seen (v1 `max_usage_in_bytes`, v2 `memory.peak`).
    pub max_usage_bytes: Option<u64>,
    /// The times usage hit the limit (v1 `failcnt`, v2 `memory.events` `max`).
    pub failcnt: Option<u64>,
    /// Page faults.
    pub page_faults: Option<u64>,
    /// Major page faults (read from disk).
    pub major_page_faults: Option<u64>,
    /// Swap used (v1 memsw usage less memory usage, v2 `memory.swap.current`).
    pub swap_bytes: Option<u64>,
    /// The memory limit; `None`: no limit.
    pub limit_bytes: Option<u64>,
    /// Processes the kernel OOM-killed in the cgroup.
    pub oom_kills: Option<u64>,
}

/// Block IO of one device, as `major:minor`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct IoDevice {
    /// The device's major number.
    pub major: u32,
    /// The device's minor number.
    pub minor: u32,
    /// Bytes read.
    pub read_bytes: u64,
    /// Bytes written.
    pub write_bytes: u64,
    /// Read operations.
    pub reads: u64,
    /// Write operations.
    pub writes: u64,
}

/// A `*.pressure` file: the `some` and `full` lines (a kernel before 5.13
/// has no `full` line for CPU).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Pressure {
    /// Time some tasks stalled.
    pub some: PressureLine,
    /// Time all non-idle tasks stalled at once.
    pub full: Option<PressureLine>,
}

/// One line of a `*.pressure` file.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PressureLine {
    /// Share of time stalled over the last 10 seconds, percent.
    pub avg10: f64,
    /// Share of time stalled over the last 60 seconds, percent.
    pub avg60: f64,
    /// Share of time stalled over the last 300 seconds, percent.
    pub avg300: f64,
    /// Total stall time, microseconds (as the kernel counts it).
    pub total_us: u64,
}

/// `some avg10=0.00 avg60=0.00 avg300=0.00 total=0` and its `full` twin.
pub fn parse_pressure(content: &str) -> Option<Pressure> {
    let line = |kind: &str| {
        let l = content.lines().find(|l| l.starts_with(kind))?;
        let mut p = PressureLine::default();
        for field in l.split_whitespace().skip(1) {
            let (k, v) = field.split_once('=')?;
            match k {
                "avg10" => p.avg10 = v.parse().ok()?,
                "avg60" => p.avg60 = v.parse().ok()?,
                "avg300" => p.avg300 = v.parse().ok()?,
                "total" => p.total_us = v.parse().ok()?,
                _ => {}
            }
        }
        Some(p)
    };
    Some(Pressure {
        some: line("some ")?,
        full: line("full "),
    })
}

/// `major:minor`.
fn device(s: &str) -> Option<(u32, u32)> {
    let (major, minor) = s.split_once(':')?;
    Some((major.parse().ok()?, minor.parse().ok()?))
}

/// The device's entry in `devices`, added on first sight.
fn device_entry(devices: &mut Vec<IoDevice>, (major, minor): (u32, u32)) -> &mut IoDevice {
    let i = match devices
        .iter()
        .position(|d| d.major == major && d.minor == minor)
    {
        Some(i) => i,
        None => {
            devices.push(IoDevice {
                major,
                minor,
                ..Default::default()
            });
            devices.len() - 1
        }
    };
    &mut devices[i]
}

/// v2 `io.stat`: `8:0 rbytes=1 wbytes=2 rios=3 wios=4 dbytes=0 dios=0`.
pub fn io_stat_devices(content: &str) -> Vec<IoDevice> {
    let mut devices = Vec::new();
    for line in content.lines() {
        let mut fields = line.split_whitespace();
        let Some(dev) = fields.next().and_then(device) else {
            continue;
        };
        let d = device_entry(&mut devices, dev);
        for f in fields {
            let Some((k, v)) = f.split_once('=') else {
                continue;
            };
            let v = v.parse().unwrap_or(0);
            match k {
                "rbytes" => d.read_bytes = v,
                "wbytes" => d.write_bytes = v,
                "rios" => d.reads = v,
                "wios" => d.writes = v,
                _ => {}
            }
        }
    }
    devices
}

/// v1 `blkio.throttle.io_service_bytes_recursive` and
/// `..._io_serviced_recursive`: `8:0 Read 4096` lines (and a `Total`).
pub fn blkio_devices(bytes: &str, ops: &str) -> Vec<IoDevice> {
    let mut devices = Vec::new();
    for (content, is_bytes) in [(bytes, true), (ops, false)] {
        for line in content.lines() {
            let mut fields = line.split_whitespace();
            let (Some(dev), Some(op), Some(v)) = (
                fields.next().and_then(device),
                fields.next(),
                fields.next().and_then(|v| v.parse::<u64>().ok()),
            ) else {
                continue;
            };
            let d = device_entry(&mut devices, dev);
            match (op, is_bytes) {
                ("Read", true) => d.read_bytes = v,
                ("Write", true) => d.write_bytes = v,
                ("Read", false) => d.reads = v,
                ("Write", false) => d.writes = v,
                _ => {}
            }
        }
    }
    devices
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_map_to_weights_like_containerd() {
        assert_eq!(shares_to_weight(0), 0);
        assert_eq!(shares_to_weight(2), 1);
        assert_eq!(shares_to_weight(1024), 39);
        assert_eq!(shares_to_weight(262_144), 10_000);
    }

    #[test]
    fn mountinfo_hierarchies() {
        let mi = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
99 31 0:32 / /mnt/my\\040mem rw,relatime - cgroup cgroup rw,memory
";
        let v1 = V1::from_mountinfo(mi);
        let names: Vec<_> = v1
            .hierarchies
            .iter()
            .map(|h| h.controllers.join(","))
            .collect();
        assert_eq!(names, ["cpu,cpuacct", "memory", "name=systemd"]);
        assert_eq!(
            v1.dir("cpuacct", "/a/b"),
            Some(PathBuf::from("/sys/fs/cgroup/cpu,cpuacct/a/b"))
        );
        assert_eq!(v1.dir("pids", "a"), None);
        assert_eq!(unescape_mountinfo("/mnt/my\\040mem"), "/mnt/my mem");
    }

    #[test]
    fn keyed_files() {
        let s = "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n";
        assert_eq!(keyed(s, "oom_kill"), Some(3));
        assert_eq!(keyed(s, "missing"), None);
    }
}

#[cfg(test)]
mod stats_tests {
    use super::*;

    #[test]
    fn pressure_files() {
        let cpu = "some avg10=1.50 avg60=0.25 avg300=0.00 total=123456\n\
                   full avg10=0.00 avg60=0.00 avg300=0.00 total=42\n";
        let p = parse_pressure(cpu).unwrap();
        assert_eq!(p.some.avg10, 1.5);
        assert_eq!(p.some.avg60, 0.25);
        assert_eq!(p.some.total_us, 123_456);
        assert_eq!(p.full.unwrap().total_us, 42);
        // Kernels before 5.13: no `full` line for CPU.
        let old = parse_pressure("some avg10=0.00 avg60=0.00 avg300=0.00 total=7\n").unwrap();
        assert_eq!((old.some.total_us, old.full), (7, None));
        assert_eq!(parse_pressure(""), None);
        assert_eq!(parse_pressure("some avg10=x total=1"), None);
    }

    #[test]
    fn io_files() {
        let v2 = "8:0 rbytes=4096 wbytes=8192 rios=1 wios=2 dbytes=0 dios=0\n\
                  253:1 rbytes=1 wbytes=0 rios=1 wios=0 dbytes=0 dios=0\n";
        let d = io_stat_devices(v2);
        assert_eq!(d.len(), 2);
        assert_eq!(
            (
                d[0].major,
                d[0].minor,
                d[0].read_bytes,
                d[0].write_bytes,
                d[0].reads,
                d[0].writes
            ),
            (8, 0, 4096, 8192, 1, 2)
        );
        assert_eq!((d[1].major, d[1].minor), (253, 1));
        let bytes = "8:0 Read 4096\n8:0 Write 512\n8:0 Sync 0\n8:0 Total 4608\nTotal 4608\n";
        let ops = "8:0 Read 3\n8:0 Write 1\n8:0 Total 4\nTotal 4\n";
        let d = blkio_devices(bytes, ops);
        assert_eq!(d.len(), 1);
        assert_eq!(
            (d[0].read_bytes, d[0].write_bytes, d[0].reads, d[0].writes),
            (4096, 512, 3, 1)
        );
    }

    /// The v2 reader on files laid out as the kernel writes them.
    #[test]
    fn v2_stats_from_files() {
        let root = std::env::temp_dir().join(format!("crisp-cg-stats-{}", std::process::id()));
        let dir = root.join("pod/ctr");
        fs::create_dir_all(&dir).unwrap();
        let files = [
            ("cpu.stat", "usage_usec 2500\nuser_usec 2000\nsystem_usec 500\nnr_periods 10\nnr_throttled 3\nthrottled_usec 7\n"),
            ("memory.current", "1000000\n"),
            ("memory.stat", "anon 300000\nfile 600000\nfile_mapped 1000\ninactive_file 400000\npgfault 11\npgmajfault 2\n"),
            ("memory.events", "low 0\nhigh 0\nmax 4\noom 1\noom_kill 1\n"),
            ("memory.max", "max\n"),
            ("memory.swap.current", "0\n"),
            ("pids.current", "3\n"),
            ("io.stat", "8:0 rbytes=10 wbytes=20 rios=1 wios=2 dbytes=0 dios=0\n"),
            ("memory.pressure", "some avg10=0.00 avg60=0.00 avg300=0.00 total=5\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=4\n"),
        ];
        for (f, c) in files {
            fs::write(dir.join(f), c).unwrap();
        }
        let st = V2::at(&root).stats("/pod/ctr").unwrap();
        let cpu = st.cpu.unwrap();
        assert_eq!(cpu.usage_ns, 2_500_000);
        assert_eq!(
            (cpu.user_ns, cpu.system_ns),
            (Some(2_000_000), Some(500_000))
        );
        assert_eq!(
            (cpu.periods, cpu.throttled_periods, cpu.throttled_ns),
            (Some(10), Some(3), Some(7000))
        );
        let mem = st.memory.unwrap();
        assert_eq!(
            (mem.usage_bytes, mem.working_set_bytes),
            (1_000_000, 600_000)
        );
        assert_eq!(
            (mem.rss_bytes, mem.cache_bytes),
            (Some(300_000), Some(600_000))
        );
        assert_eq!(
            (mem.failcnt, mem.oom_kills, mem.limit_bytes),
            (Some(4), Some(1), None)
        );
        assert_eq!(
            (mem.page_faults, mem.major_page_faults),
            (Some(11), Some(2))
        );
        assert_eq!(st.pids, Some(3));
        assert_eq!(st.io.len(), 1);
        assert_eq!(st.memory_pressure.unwrap().some.total_us, 5);
        // What the kernel does not expose stays unset.
        assert_eq!((st.cpu_pressure, st.io_pressure), (None, None));
        assert!(V2::at(&root).stats("/gone").is_err());
        fs::remove_dir_all(&root).unwrap();
    }

    /// The unified hierarchy's own PSI files, where the host mounts one
    /// (pure v2, or hybrid at /sys/fs/cgroup/unified): the kernel's format.
    #[test]
    fn real_pressure_files_parse() {
        for root in ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"] {
            let Ok(cpu) = fs::read_to_string(Path::new(root).join("cpu.pressure")) else {
                continue;
            };
            let p = parse_pressure(&cpu).expect("the kernel's cpu.pressure parses");
            assert!(p.some.avg10 >= 0.0);
            let st = V2::at(root).stats("/").unwrap();
            assert!(st.cpu_pressure.is_some() && st.io_pressure.is_some());
        }
    }
}
