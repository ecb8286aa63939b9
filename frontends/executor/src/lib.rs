#![warn(missing_docs)]
//! crisp's OCI runtime: runs a container from an OCI runtime [`Spec`]
//! without runc. It knows the OCI runtime spec, not the CRI: crispd
//! translates CRI requests into a spec (its `oci_spec` module).
//!
//! The caller mounts the container's root filesystem ([`rootfs`]); this
//! crate carries the spec out with nix syscalls: namespaces, mounts,
//! pivot_root, capabilities, seccomp ([`seccomp`]), rlimits, user and
//! groups ([`create`]), in a cgroup ([`cgroup`]). A container is created
//! stopped before `execve` and released by [`Created::start`], matching
//! CRI's CreateContainer / StartContainer; [`exec`] runs another process
//! in a running container.
//!
//! The calling process becomes the container's parent: in crispd that is
//! the container's monitor process, which outlives crispd restarts.

use std::fmt;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

pub use oci_spec::runtime::Spec;

pub mod cgroup;
mod child;
mod plan;
pub mod rootfs;
pub mod seccomp;

/// Why a container could not be set up.
#[derive(Debug)]
pub enum Error {
    /// A system call failed.
    Sys {
        /// What failed, e.g. `mount /proc` or `exec: /bin/sh`.
        context: String,
        /// The kernel's answer.
        errno: nix::errno::Errno,
    },
    /// The entrypoint is a bare name that no `$PATH` directory holds.
    ExecutableNotFound {
        /// The name, as the spec gives it.
        name: String,
    },
    /// The spec (or an argument) is malformed or asks for the impossible:
    /// no process, a relative path, a NUL byte, a bad sysctl name.
    Invalid(String),
    /// The spec asks for what this executor does not do, e.g. a namespace
    /// type it does not know or `SCMP_ACT_NOTIFY`.
    Unsupported(String),
    /// The container's setup process died or spoke out of turn, with no
    /// errno to say why.
    Setup(String),
    /// The host is not as needed, or a host-side step failed without an
    /// errno: no cgroup hierarchy, a cgroup gone, an unreadable file.
    Host(String),
}

impl Error {
    /// A failed system call.
    pub fn sys(context: impl Into<String>, errno: nix::errno::Errno) -> Self {
        Self::Sys {
            context: context.into(),
            errno,
        }
    }

    /// A failed file operation: [`Error::Sys`] when it carries an errno,
    /// else [`Error::Host`] with `context` alone.
    pub fn io(context: impl Into<String>, e: std::io::Error) -> Self {
        match e.raw_os_error() {
            Some(raw) => Self::sys(context, nix::errno::Errno::from_raw(raw)),
            None => Self::Host(context.into()),
        }
    }

    /// The system call's error, when one failed.
    pub fn errno(&self) -> Option<nix::errno::Errno> {
        match self {
            Self::Sys { errno, .. } => Some(*errno),
            _ => None,
        }
    }

    /// What failed, without the errno's text.
    pub fn context(&self) -> std::borrow::Cow<'_, str> {
        match self {
            Self::Sys { context, .. } => context.into(),
            Self::ExecutableNotFound { name } => {
                format!("exec: {name:?}: executable file not found in $PATH").into()
            }
            Self::Invalid(s) | Self::Unsupported(s) | Self::Setup(s) | Self::Host(s) => s.into(),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Sys { context, errno } => write!(f, "{context}: {errno}"),
            _ => f.write_str(&self.context()),
        }
    }
}

impl std::error::Error for Error {}

/// Where the container's standard streams go. With `terminal` set in the
/// spec, `stdout` is the pty's replica side and the others are ignored.
pub struct Stdio {
    /// The container's stdin; `None`: `/dev/null`.
    pub stdin: Option<OwnedFd>,
    /// The container's stdout (or the pty replica).
    pub stdout: OwnedFd,
    /// The container's stderr.
    pub stderr: OwnedFd,
}

/// A container process that is fully set up and waits, before `execve`,
/// for [`Created::start`].
///
/// The process is a child of the caller of [`create`] (cloned with
/// `CLONE_PARENT` by a short-lived intermediate child), so the caller waits
/// for it with `waitpid(pid)`. Dropping a `Created` without starting it
/// makes the process exit with status 1 without running anything; it still
/// has to be reaped.
pub struct Created {
    /// The container's init, as the caller's child (its pid in the
    /// caller's PID namespace).
    pub pid: nix::unistd::Pid,
    /// Writing one byte here (then closing it) lets the process exec.
    start: OwnedFd,
    /// The child's report channel: closed (close-on-exec) once it execs, or
    /// carrying the reason it could not.
    sync: OwnedFd,
}

impl Created {
    /// The start and report descriptors, for a monitor that hands them to
    /// the program it execs (crispd's tiny monitor), which then
    /// does what [`Created::start`] does.
    pub fn fds(&self) -> (BorrowedFd<'_>, BorrowedFd<'_>) {
        (self.start.as_fd(), self.sync.as_fd())
    }

    /// Release the process into the container's entrypoint. Returns once
    /// the process has called `execve` successfully, or with the reason it
    /// failed (the process then exits with status 127; the caller reaps it).
    pub fn start(self) -> Result<(), Error> {
        let Created { pid, start, sync } = self;
        match nix::unistd::write(&start, b"s") {
            Ok(_) => {}
            Err(e) => return Err(Error::sys(format!("start container process {pid}"), e)),
        }
        drop(start);
        match read_record(&sync)? {
            None => Ok(()),
            Some(r) => Err(record_error(&r)),
        }
    }
}

/// The stack the container's init starts on (a copy of the intermediate
/// child's heap; pages are touched only as used).
const INIT_STACK: usize = 1 << 20;

/// Set up the container described by `spec` in a new child of the calling
/// process. `spec.root.path` is the already mounted root filesystem.
/// Namespaces listed with a path are joined (the pod's), the others are
/// created. The child stops before `execve` until `Created::start`.
///
/// When the spec names a cgroup (`linux.cgroupsPath`), it is created with
/// `linux.resources` and the process is born in it; a failed create
/// removes it again. The executable is looked up (in the spec's `PATH`)
/// before this returns, so a missing binary fails here, as with runc.
pub fn create(spec: &Spec, stdio: Stdio) -> Result<Created, Error> {
    create_with(spec, stdio, CgroupSetup::Create, None)
}

/// Who makes the container's cgroup.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CgroupSetup {
    /// [`create`] makes it with the spec's resources (and removes it if
    /// the container cannot be created).
    Create,
    /// The caller made it already, with the spec's resources, and removes
    /// it: crispd does, while it mounts the rootfs.
    Made,
}

/// [`create`], with the cgroup made by the caller or not, and with the
/// spec's seccomp profile compiled by the caller ([`seccomp::decode`]) or
/// not (`None`: compiled here).
pub fn create_with(
    spec: &Spec,
    stdio: Stdio,
    setup: CgroupSetup,
    seccomp: Option<Vec<seccompiler::BpfProgram>>,
) -> Result<Created, Error> {
    let process = spec
        .process()
        .as_ref()
        .ok_or_else(|| Error::Invalid("spec has no process".into()))?;
    let linux = spec.linux().as_ref();
    let cgroup = match linux.and_then(|l| l.cgroups_path().as_ref()) {
        Some(path) => {
            let path = path.to_string_lossy().into_owned();
            let cg = cgroup::detect()?;
            if setup == CgroupSetup::Create {
                let resources = linux
                    .and_then(|l| l.resources().clone())
                    .unwrap_or_default();
                cg.create(&path, &resources)?;
            }
            Some((cg, path))
        }
        None => None,
    };
    let result = create_in(
        spec,
        process,
        stdio,
        seccomp,
        cgroup.as_ref().map(|(cg, p)| (cg.as_ref(), p.as_str())),
    );
    if result.is_err() && setup == CgroupSetup::Create {
        if let Some((cg, path)) = &cgroup {
            if let Err(e) = cg.remove(path) {
                tracing::warn!(cgroup = %path, error = %e, "removing the cgroup of a failed container");
            }
        }
    }
    result
}

fn create_in(
    spec: &Spec,
    process: &oci_spec::runtime::Process,
    stdio: Stdio,
    seccomp: Option<Vec<seccompiler::BpfProgram>>,
    cgroup: Option<(&dyn cgroup::Cgroups, &str)>,
) -> Result<Created, Error> {
    let mut held = plan::Held::default();
    let mut p = plan::empty_plan();
    plan::process_plan(spec, process, seccomp, &mut p)?;
    let (setns, unshare, has_uts) = plan::namespaces_for_create(spec, &mut held)?;
    p.setns = setns;
    p.unshare = unshare;
    p.rootfs = Some(plan::rootfs_plan(spec)?);
    p.hostname = match spec.hostname().as_deref() {
        Some(h) if !h.is_empty() && has_uts => Some(plan::cstring(h)?),
        _ => None,
    };
    if let Some((cg, path)) = cgroup {
        p.cgroup_procs = plan::cgroup_fds(&cg.self_attach_files(path), &mut held)?;
    }
    let (start_r, start_w) = pipe()?;
    p.start_r = held.keep(start_r);
    let (pid, mut reports) = spawn(p, held, stdio)?;
    match reports.next() {
        Ok(Some(r)) if r.tag == child::TAG_READY => Ok(Created {
            pid,
            start: start_w,
            sync: reports.fd,
        }),
        other => {
            // The init reported an error and exited, or died: reap it.
            let status = reap(pid);
            Err(match other {
                Ok(Some(r)) => record_error(&r),
                Ok(None) => {
                    Error::Setup(format!("container init exited during setup ({status:?})"))
                }
                Err(e) => e,
            })
        }
    }
}

/// A child's reports, with those that arrived before the pid record.
struct Reports {
    fd: OwnedFd,
    early: std::collections::VecDeque<child::Record>,
}

impl Reports {
    fn next(&mut self) -> Result<Option<child::Record>, Error> {
        match self.early.pop_front() {
            Some(r) => Ok(Some(r)),
            None => read_record(&self.fd),
        }
    }
}

/// Fork the intermediate child, which clones the process the plan
/// describes (as our child) and reports its pid. Returns that pid and the
/// reports channel.
///
/// The cloned process runs as soon as it exists, so its first report (an
/// error, or "ready") may reach the pipe before the intermediate's pid
/// record: those are kept for later. An error with no pid record after it
/// (end of file) is the intermediate's own.
fn spawn(
    mut p: child::Plan,
    mut held: plan::Held,
    stdio: Stdio,
) -> Result<(nix::unistd::Pid, Reports), Error> {
    use std::os::fd::AsRawFd;
    let (sync_r, sync_w) = pipe()?;
    p.sync_w = held.keep(sync_w);
    let stdin = match stdio.stdin {
        Some(fd) => fd,
        None => nix::fcntl::open(
            "/dev/null",
            nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .map_err(|e| Error::sys("open /dev/null", e))?,
    };
    p.stdin = held.keep(stdin);
    p.stdout = stdio.stdout.as_raw_fd();
    p.stderr = stdio.stderr.as_raw_fd();
    held.fds.push(stdio.stdout);
    held.fds.push(stdio.stderr);
    p.keep_fds = held.fds.iter().map(|f| f.as_raw_fd()).collect();
    p.keep_fds.sort_unstable();
    p.keep_fds.dedup();

    let plan = &p;
    let init: nix::sched::CloneCb<'_> = Box::new(move || -> isize {
        // SAFETY: runs in the process cloned by `intermediate`.
        unsafe { child::init(plan) }
    });
    let mut stack = vec![0u8; INIT_STACK];
    // SAFETY: the child runs only `child::intermediate`, which makes system
    // calls on the plan prepared above (no allocation, no locks) and exits.
    let forked = unsafe { nix::unistd::fork() }.map_err(|e| Error::sys("fork", e))?;
    let intermediate = match forked {
        nix::unistd::ForkResult::Child => {
            // SAFETY: freshly forked child; see `child::intermediate`.
            unsafe { child::intermediate(plan, init, &mut stack) }
        }
        nix::unistd::ForkResult::Parent { child } => child,
    };
    drop(init);
    drop(held); // our copies of the child's ends and of stdio
    let mut early = std::collections::VecDeque::new();
    let pid = loop {
        match read_record(&sync_r) {
            Ok(Some(r)) if r.tag == child::TAG_PID => break Ok(r.value),
            Ok(Some(r)) => early.push_back(r),
            Ok(None) => {
                break Err(match early.pop_front() {
                    Some(r) => record_error(&r),
                    None => Error::Setup("container setup: intermediate process died".into()),
                })
            }
            Err(e) => break Err(e),
        }
    };
    let _ = reap(intermediate);
    Ok((
        nix::unistd::Pid::from_raw(pid?),
        Reports { fd: sync_r, early },
    ))
}

/// Wait for our child `pid` to exit.
fn reap(pid: nix::unistd::Pid) -> nix::Result<nix::sys::wait::WaitStatus> {
    loop {
        match nix::sys::wait::waitpid(pid, None) {
            Err(nix::errno::Errno::EINTR) => continue,
            other => return other,
        }
    }
}

fn pipe() -> Result<(OwnedFd, OwnedFd), Error> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| Error::sys("pipe", e))
}

fn read_exact_or_eof(fd: &OwnedFd, buf: &mut [u8]) -> Result<bool, Error> {
    let mut got = 0;
    while got < buf.len() {
        match nix::unistd::read(fd, &mut buf[got..]) {
            Ok(0) if got == 0 => return Ok(false),
            Ok(0) => return Err(Error::Setup("container setup: truncated report".into())),
            Ok(n) => got += n,
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(Error::sys("read container setup report", e)),
        }
    }
    Ok(true)
}

/// The next report of a child, or None at end of file.
fn read_record(fd: &OwnedFd) -> Result<Option<child::Record>, Error> {
    let mut h = [0u8; child::HEADER];
    if !read_exact_or_eof(fd, &mut h)? {
        return Ok(None);
    }
    let len = u16::from_le_bytes([h[8], h[9]]) as usize;
    let mut detail = vec![0u8; len];
    if len > 0 && !read_exact_or_eof(fd, &mut detail)? {
        return Err(Error::Setup("container setup: truncated report".into()));
    }
    Ok(Some(child::Record {
        tag: h[0],
        step: u16::from_le_bytes([h[2], h[3]]),
        value: i32::from_le_bytes([h[4], h[5], h[6], h[7]]),
        detail,
    }))
}

fn record_error(r: &child::Record) -> Error {
    if r.tag != child::TAG_ERROR {
        return Error::Setup(format!(
            "container setup: unexpected report {:?}",
            r.tag as char
        ));
    }
    let errno = nix::errno::Errno::from_raw(r.value);
    let detail = String::from_utf8_lossy(&r.detail).into_owned();
    let step = child::Step::from_u16(r.step);
    match step {
        Some(child::Step::Executable | child::Step::Exec) => {
            if !detail.contains('/') && errno == nix::errno::Errno::ENOENT {
                Error::ExecutableNotFound { name: detail }
            } else {
                Error::sys(format!("exec: {detail}"), errno)
            }
        }
        Some(s) => Error::sys(
            if detail.is_empty() {
                s.describe().to_string()
            } else {
                format!("{} {detail}", s.describe())
            },
            errno,
        ),
        None => Error::sys(format!("container setup step {}", r.step), errno),
    }
}

/// Run `process` inside a running container (whose init is `container_pid`):
/// its namespaces, its cgroup, the process's user, env, capabilities and
/// seccomp profile. Used by ExecSync. Returns the new process's pid; the
/// caller waits for it. Returns once the process has exec'd (or with the
/// reason it could not, e.g. a missing executable).
pub fn exec(
    container_pid: nix::unistd::Pid,
    spec: &Spec,
    process: &oci_spec::runtime::Process,
    stdio: Stdio,
) -> Result<nix::unistd::Pid, Error> {
    let mut held = plan::Held::default();
    let mut p = plan::empty_plan();
    plan::process_plan(spec, process, None, &mut p)?;
    p.setns = plan::namespaces_for_exec(container_pid.as_raw(), &mut held)?;
    if let Some(path) = spec
        .linux()
        .as_ref()
        .and_then(|l| l.cgroups_path().as_ref())
    {
        let cg = cgroup::detect()?;
        let path = path.to_string_lossy();
        p.cgroup_procs = plan::cgroup_fds(&cg.self_attach_files(&path), &mut held)?;
    }
    let (pid, mut reports) = spawn(p, held, stdio)?;
    match reports.next() {
        Ok(None) => Ok(pid),
        other => {
            let _ = reap(pid);
            Err(match other {
                Ok(Some(r)) => record_error(&r),
                Ok(None) => unreachable!(),
                Err(e) => e,
            })
        }
    }
}

/// `path` (absolute, in the container) as a host path under the root
/// filesystem `root`, following symlinks the way the container would see
/// them (an absolute link target is relative to `root`, `..` never leaves
/// it): where to read the image's `/etc/passwd`, for example.
pub fn resolve_in_root(root: &Path, path: &Path) -> PathBuf {
    plan::resolve_in_root(root, path, &[])
}

/// Whether anything is mounted at `path` or below it (for cleanup checks:
/// after `rootfs::unmount`, nothing should be).
pub fn is_mounted(path: &Path) -> bool {
    let Ok(mountinfo) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    cgroup::parse_mountinfo(&mountinfo)
        .iter()
        .any(|(mount_point, _, _)| Path::new(mount_point).starts_with(path))
}
