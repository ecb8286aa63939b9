//! The host side of the CRI state machine: carrying out its actions
//! (pod sandboxes, their network, containers and their monitors, records)
//! on worker threads, and what crispd observes at start to restore it.
//!
//! Layout on disk:
//!
//! ```text
//! <state_dir>/cri/pod-<id>, container-<id>   the state machine's records (protobuf)
//! <state_dir>/cri/net/<id>.json              CNI networks set up for a pod (for DEL after a crash)
//! <state_dir>/containers/<id>/{upper,work}   a container's writable layer
//! <runtime_dir>/pods/<id>/                   pid, ns/{net,ipc,uts,pid}, hostname, hosts, resolv.conf
//! <runtime_dir>/containers/<id>/             config.json, seccomp.bpf, rootfs/, sock (monitor), exit.json
//! ```
//!
//! `sandbox.json` (in the pod's directory) and `meta.json` (in the
//! container's) are written before anything else is made for the object:
//! at start, one of these without a record is an orphan of a crash, and
//! [`reclaim`] removes what it describes.

pub mod cni;
pub mod container;
pub mod monitor;
pub mod mounts;
pub mod reclaim;
pub mod sandbox;
pub mod spare;

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crisp_core::cri::{Action, Observation, Outcome, Record, RecordKey};
use crisp_core::grpc::Status;
use crisp_executor::cgroup::{self, Cgroups};
use crisp_executor::seccomp;
use crisp_image::ImageService;
use prost::Message;

use crate::config::Config;
use crate::error::StartError;
use crate::oci_spec as spec;
use crate::persist;

/// Compile the RuntimeDefault profile (for the default capabilities) once,
/// on a thread of its own: a process's first compile takes ~5 ms, which
/// the first container that asks for it would otherwise wait. Done when
/// the first pod comes, not at start: the code and heap it touches are
/// ~1 MiB of RSS that an idle crispd does without.
fn warm_seccomp() {
    static WARM: std::sync::Once = std::sync::Once::new();
    WARM.call_once(|| {
        let _ = std::thread::Builder::new()
            .name("seccomp-warm".into())
            .spawn(|| {
                if let Ok(caps) = spec::capabilities(&Default::default()) {
                    let caps = caps.into_iter().collect();
                    let _ = seccomp::compile_cached(&seccomp::runtime_default(&caps));
                }
            });
    });
}

/// What the action jobs share.
pub struct Host {
    pub config: Arc<Config>,
    /// This binary, re-executed as sandbox holders and monitors.
    pub exe: PathBuf,
    pub images: Arc<ImageService>,
    /// The host's cgroups (v1 or v2), the executor's implementation.
    pub cgroups: Box<dyn Cgroups>,
    /// Container monitors, one started ahead of need.
    pub monitors: spare::Monitors,
}

impl Host {
    pub fn new(config: Arc<Config>, images: Arc<ImageService>) -> Result<Self, StartError> {
        let exe = std::env::current_exe().map_err(StartError::Exe)?;
        let cgroups = cgroup::detect().map_err(StartError::Cgroups)?;
        Ok(Self {
            config,
            monitors: spare::Monitors::new(exe.clone()),
            exe,
            images,
            cgroups,
        })
    }

    pub fn records_dir(&self) -> PathBuf {
        self.config.state_dir.join("cri")
    }

    pub fn pod_dir(&self, id: &str) -> PathBuf {
        self.config.runtime_dir.join("pods").join(id)
    }

    pub fn net_state(&self, id: &str) -> PathBuf {
        self.records_dir().join("net").join(format!("{id}.json"))
    }

    pub fn ctr_dir(&self, id: &str) -> PathBuf {
        self.config.runtime_dir.join("containers").join(id)
    }

    pub fn ctr_state_dir(&self, id: &str) -> PathBuf {
        self.config.state_dir.join("containers").join(id)
    }

    fn record_path(&self, key: &RecordKey) -> PathBuf {
        self.records_dir()
            .join(format!("{}-{}", key.kind(), key.id()))
    }

    /// Carry out one action (blocking). `StopContainer` may wait its whole
    /// grace period: run it on a thread of its own.
    pub fn run(&self, action: Action) -> Outcome {
        let result = match action {
            Action::WriteRecord(r) => self.write_record(&r),
            Action::DeleteRecord(key) => self.delete_record(&key),
            Action::CreateSandbox {
                pod_id,
                config,
                runtime_handler,
                ..
            } => {
                return match sandbox::create(self, &pod_id, &config, &runtime_handler) {
                    Ok(c) => {
                        // Its containers come next: have a monitor ready,
                        // and the default seccomp profile compiled.
                        self.monitors.refill();
                        warm_seccomp();
                        Outcome::SandboxCreated(c)
                    }
                    Err(st) => Outcome::Failed(st),
                };
            }
            Action::StopSandbox { pod_id } => sandbox::stop(self, &pod_id),
            Action::RemoveSandbox { pod_id } => sandbox::remove(self, &pod_id),
            Action::CreateContainer {
                container_id,
                pod_id,
                config,
                sandbox_config,
                image,
                log_path,
                ..
            } => {
                let new = container::NewContainer {
                    id: &container_id,
                    pod_id: &pod_id,
                    config: &config,
                    sandbox_config: &sandbox_config,
                    image: &image.image,
                    log_path: &log_path,
                };
                return match container::create(self, &new) {
                    Ok(created) => Outcome::ContainerCreated {
                        image_ref: created.image_ref,
                        image_id: created.image_id,
                        image_volumes: created.image_volumes,
                        user: Some(created.user),
                        image_stop_signal: created.image_stop_signal,
                    },
                    Err(st) => Outcome::Failed(st),
                };
            }
            Action::StartContainer { container_id, .. } => {
                return match container::start(self, &container_id) {
                    Ok((pid, started_at)) => Outcome::ContainerStarted { pid, started_at },
                    Err(st) => Outcome::Failed(st),
                }
            }
            Action::StopContainer {
                container_id,
                timeout,
                stop_signal,
                ..
            } => {
                return match container::stop(self, &container_id, timeout, stop_signal) {
                    Ok(exit) => Outcome::ContainerExited(exit),
                    Err(st) => Outcome::Failed(st),
                }
            }
            Action::RemoveContainer { container_id, .. } => container::remove(self, &container_id),
            Action::UpdateContainerResources {
                container_id,
                resources,
                ..
            } => container::update_resources(self, &container_id, &resources),
        };
        match result {
            Ok(()) => Outcome::Done,
            Err(st) => Outcome::Failed(st),
        }
    }

    fn write_record(&self, r: &Record) -> Result<(), Status> {
        let Some(key) = r.key() else {
            return Err(Status::internal("a record of no kind"));
        };
        let path = self.record_path(&key);
        persist::write_slotted(&path, &r.encode_to_vec())
            .map_err(|e| write_failed(format_args!("cannot write {key} to {}", path.display()), &e))
    }

    fn delete_record(&self, key: &RecordKey) -> Result<(), Status> {
        let path = self.record_path(key);
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => {
                return Err(Status::internal(format!(
                    "cannot delete {key} ({}): {e}",
                    path.display()
                )))
            }
        }
        if let Some(dir) = path.parent() {
            let _ = fs::File::open(dir).and_then(|d| d.sync_all());
        }
        Ok(())
    }

    /// Every record on disk, with warnings about those that do not decode.
    pub fn load_records(&self) -> (Vec<Record>, Vec<String>) {
        let mut out = Vec::new();
        let mut warnings = Vec::new();
        let Ok(dir) = fs::read_dir(self.records_dir()) else {
            return (out, warnings);
        };
        for entry in dir.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !(name.starts_with("pod-") || name.starts_with("container-")) {
                continue;
            }
            let mut buf = Vec::new();
            let read = fs::File::open(entry.path()).and_then(|mut f| f.read_to_end(&mut buf));
            if let Err(e) = read {
                warnings.push(format!("cannot read record {name}: {e}"));
                continue;
            }
            let data = match persist::read_slotted(&buf) {
                Ok(d) => d,
                Err(e) => {
                    warnings.push(format!("cannot read record {name}: {e}"));
                    continue;
                }
            };
            match Record::decode(data) {
                Ok(r) => out.push(r),
                Err(e) => warnings.push(format!("cannot decode record {name}: {e}")),
            }
        }
        (out, warnings)
    }

    /// What the host says about the recorded objects: live sandbox
    /// holders, and each container's monitor (running, exited, gone).
    pub fn observe(&self, records: &[Record]) -> Vec<Observation> {
        use crisp_core::cri::RecordKind;
        let mut obs = Vec::new();
        for r in records {
            match &r.kind {
                Some(RecordKind::Pod(p)) if sandbox::alive(self, &p.id).is_some() => {
                    obs.push(Observation::SandboxAlive { id: p.id.clone() });
                }
                // Its holder died while crispd was away: the pod is
                // NOTREADY, and what runs in it stops, as it would have
                // at once (see `sandbox::watch`).
                Some(RecordKind::Pod(p)) if p.phase == crisp_core::cri::PodPhase::Ready as i32 => {
                    sandbox::stop_containers(self, &p.id);
                }
                Some(RecordKind::Container(c)) => {
                    let observed = container::observe(self, &c.id);
                    // Started, and neither its monitor nor its exit is
                    // there: what may still run of it is unwatched, and
                    // ends (the state machine reports the exit unknown).
                    if observed.is_none() && c.started_at > 0 && c.finished_at == 0 {
                        if let Err(e) = container::kill_leftovers(self, &c.id) {
                            tracing::warn!(container = %c.id, error = %e.message, "restore");
                        }
                    }
                    if let Some(observed) = observed {
                        // Exited while crispd was away: what it left
                        // behind goes now, as it would have at once.
                        if matches!(observed, crisp_core::cri::Observed::Exited(_)) {
                            if let Err(e) = container::kill_leftovers(self, &c.id) {
                                tracing::warn!(container = %c.id, error = %e.message, "restore");
                            }
                        }
                        obs.push(Observation::Container {
                            id: c.id.clone(),
                            observed,
                        });
                    }
                }
                Some(RecordKind::Pod(_)) | None => {}
            }
        }
        obs
    }
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

/// End every process in `cgroup` and below it, waiting until they are
/// gone (see [`Cgroups::kill_all`]).
pub fn kill_cgroup(host: &Host, cgroup: &str) -> Result<(), Status> {
    host.cgroups
        .kill_all(cgroup)
        .map_err(|e| exec_status(&format!("cannot end the processes of cgroup {cgroup}"), &e))
}

/// Remove a cgroup crisp made, ending first whatever still runs in it and
/// removing the cgroups below it (a container's or holder's cgroup left
/// behind by a crash, or one a privileged container made): a busy cgroup
/// is killed, then removed, never refused for ever.
pub fn remove_cgroup(host: &Host, cgroup: &str) -> Result<(), Status> {
    kill_cgroup(host, cgroup)?;
    remove_cgroup_below(host, cgroup, 0)
}

/// Remove `cgroup` and its descendants, deepest first (their processes
/// already ended).
fn remove_cgroup_below(host: &Host, cgroup: &str, depth: usize) -> Result<(), Status> {
    if depth < 32 {
        for child in cgroup_children(host, cgroup) {
            remove_cgroup_below(host, &format!("{cgroup}/{child}"), depth + 1)?;
        }
    }
    host.cgroups
        .remove(cgroup)
        .map_err(|e| exec_status(&format!("cannot remove cgroup {cgroup}"), &e))
}

/// The names of the cgroups directly below `cgroup`, in any hierarchy.
pub fn cgroup_children(host: &Host, cgroup: &str) -> Vec<String> {
    let mut names = std::collections::BTreeSet::new();
    for procs in host.cgroups.procs_files(cgroup) {
        let Some(dir) = procs.parent() else { continue };
        let Ok(entries) = fs::read_dir(dir) else {
            continue;
        };
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                names.insert(e.file_name().to_string_lossy().into_owned());
            }
        }
    }
    names.into_iter().collect()
}

/// Mount points at or below `path` (from `/proc/self/mountinfo`), the
/// deepest first, each as many times as it is stacked.
pub fn mounts_under(path: &Path) -> Vec<PathBuf> {
    let Ok(info) = fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    let mut found: Vec<PathBuf> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(unescape_mount_path(p)))
        .filter(|p| p.starts_with(path))
        .collect();
    found.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    found
}

/// mountinfo writes space, tab, newline and backslash as `\ooo`.
fn unescape_mount_path(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = b
            .get(i + 1..i + 4)
            .filter(|o| o.iter().all(|c| (b'0'..=b'7').contains(c)));
        match (b[i], octal) {
            (b'\\', Some(o)) => {
                let v = o.iter().fold(0u32, |v, c| v * 8 + u32::from(c - b'0'));
                out.push(u8::try_from(v).unwrap_or(b'?'));
                i += 4;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Detach every mount at or below `path` (a directory crisp is about to
/// remove); returns how many it detached.
pub fn unmount_all_under(path: &Path) -> Result<usize, Status> {
    let found = mounts_under(path);
    for p in &found {
        match nix::mount::umount2(p, nix::mount::MntFlags::MNT_DETACH) {
            Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => {}
            Err(e) => return Err(internal(format!("cannot unmount {}", p.display()), e)),
        }
    }
    Ok(found.len())
}

/// Which of AppArmor and SELinux this host runs, as runc and go-selinux
/// detect them; the CRI rules refuse what crisp would have to apply.
pub fn host_support() -> crisp_core::cri::HostSupport {
    let apparmor = Path::new("/sys/kernel/security/apparmor").exists()
        && fs::read("/sys/module/apparmor/parameters/enabled")
            .is_ok_and(|b| b.first() == Some(&b'Y'));
    let selinux = Path::new("/sys/fs/selinux/enforce").exists();
    crisp_core::cri::HostSupport { apparmor, selinux }
}

/// Unix nanoseconds now.
pub fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

/// A status for a host failure, naming what failed.
pub fn internal(what: impl std::fmt::Display, e: impl std::fmt::Display) -> Status {
    Status::internal(format!("{what}: {e}"))
}

/// A failed write's status: RESOURCE_EXHAUSTED when the filesystem is full
/// (ENOSPC) or the quota spent (EDQUOT), so that callers can tell a full
/// disk, which passes, from a fault; else INTERNAL. `what` names the path.
pub fn write_failed(what: impl std::fmt::Display, e: &std::io::Error) -> Status {
    match e.raw_os_error() {
        Some(nix::libc::ENOSPC | nix::libc::EDQUOT) => Status::new(
            crisp_core::grpc::Code::ResourceExhausted,
            format!("{what}: {e}"),
        ),
        _ => internal(what, e),
    }
}

/// The executor's errors: its "not implemented yet" placeholders answer
/// UNIMPLEMENTED (never a fake success), the rest INTERNAL.
pub fn exec_status(what: &str, e: &crisp_executor::Error) -> Status {
    if e.context().contains("not implemented") {
        Status::unimplemented(format!("{what}: {e} (crisp's executor is not merged yet)"))
    } else {
        Status::internal(format!("{what}: {e}"))
    }
}

/// Remove a directory tree, ignoring one that is already gone.
pub fn remove_tree(path: &Path) -> Result<(), Status> {
    match fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(internal(format!("cannot remove {}", path.display()), e)),
    }
}

/// SIGKILL the process `pid` if it is alive and its command line mentions
/// `needle`, then wait until it has exited (at most `timeout`). The wait
/// is a `poll` on a pidfd (which also pins the pid, so a reused pid is
/// never signalled): it returns as soon as the process is gone, where a
/// polling loop would sleep past it. Falls back to polling `/proc` on
/// kernels without pidfds (before 5.3).
pub fn kill_and_wait(pid: u32, needle: &str, timeout: std::time::Duration) {
    use nix::libc;
    use std::os::fd::AsRawFd;
    use std::time::Instant;
    if pid == 0 || pid > i32::MAX as u32 {
        return;
    }
    let Ok(fd) = pidfd_open(pid as i32) else {
        if !process_matches(pid, needle) {
            return;
        }
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
        let until = Instant::now() + timeout;
        while process_matches(pid, needle) && Instant::now() < until {
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        return;
    };
    if !process_matches(pid, needle) {
        return;
    }
    // SAFETY: pidfd_send_signal(pidfd, sig, info = NULL, flags = 0).
    unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            fd.as_raw_fd(),
            libc::SIGKILL,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        );
    }
    let until = Instant::now() + timeout;
    loop {
        let left = until.saturating_duration_since(Instant::now());
        let ms = i32::try_from(left.as_millis()).unwrap_or(i32::MAX);
        let mut pfd = libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let n = unsafe { libc::poll(&mut pfd, 1, ms) };
        if n < 0 && nix::errno::Errno::last() == nix::errno::Errno::EINTR {
            continue;
        }
        if n == 0 && !left.is_zero() {
            continue;
        }
        return;
    }
}

/// A non-blocking pidfd of process `pid`: readable once it has exited,
/// and it pins the pid (kernels from 5.3; an error before).
pub fn pidfd_open(pid: i32) -> std::io::Result<std::os::fd::OwnedFd> {
    use nix::libc;
    use std::os::fd::FromRawFd;
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor.
    let raw = unsafe {
        libc::syscall(
            libc::SYS_pidfd_open,
            pid as libc::pid_t,
            libc::O_NONBLOCK as libc::c_uint,
        )
    };
    if raw < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a descriptor pidfd_open just returned, owned by nobody else.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(raw as i32) })
}

/// Sets a terminal's window size (`TIOCSWINSZ` on a pty).
pub fn set_window_size(fd: std::os::fd::BorrowedFd<'_>, width: u16, height: u16) {
    use std::os::fd::AsRawFd;
    let ws = nix::libc::winsize {
        ws_row: height,
        ws_col: width,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one winsize that lives for the call.
    unsafe { nix::libc::ioctl(fd.as_raw_fd(), nix::libc::TIOCSWINSZ, &ws) };
}

/// A descriptor that becomes readable when the process `pid`, whose
/// command line mentions `needle`, exits (a pidfd, for the event loop to
/// poll); `None` when it is not alive, or is another process. The pidfd
/// pins the process, so a reused pid is never taken for it. An error:
/// no pidfds here (kernels before 5.3).
pub fn exit_fd(pid: u32, needle: &str) -> std::io::Result<Option<std::os::fd::OwnedFd>> {
    use nix::libc;

    if pid == 0 || pid > i32::MAX as u32 {
        return Ok(None);
    }
    let fd = match pidfd_open(pid as i32) {
        Ok(fd) => fd,
        Err(e) if e.raw_os_error() == Some(libc::ESRCH) => return Ok(None),
        Err(e) => return Err(e),
    };
    // Checked once the pid is pinned: still the process we mean.
    Ok(process_matches(pid, needle).then_some(fd))
}

/// Whether `pid` is alive and its command line mentions `needle`.
pub fn process_matches(pid: u32, needle: &str) -> bool {
    if pid == 0 {
        return false;
    }
    let Ok(cmdline) = fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    if let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) {
        // A zombie holds nothing.
        if let Some(rest) = stat.rsplit_once(") ") {
            if rest.1.starts_with('Z') {
                return false;
            }
        }
    }
    cmdline
        .split(|&b| b == 0)
        .any(|arg| arg == needle.as_bytes())
}

/// 32 bytes from the kernel's random source, for IDs.
pub fn entropy() -> [u8; 32] {
    let mut buf = [0u8; 32];
    if let Err(e) = fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut buf)) {
        // Never expected on Linux; the state machine rejects repeats.
        tracing::error!(error = %e, "cannot read /dev/urandom");
    }
    buf
}

/// Exit code of a container whose end could not be observed.
pub const UNKNOWN_CODE: i32 = 255;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_paths_unescaped() {
        assert_eq!(unescape_mount_path("/run/a\\040b"), "/run/a b");
        assert_eq!(unescape_mount_path("/x\\134y\\011"), "/x\\y\t");
        // Not an octal escape: kept as written.
        assert_eq!(unescape_mount_path("/x\\9y\\"), "/x\\9y\\");
    }
}
