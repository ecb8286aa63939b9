//! The code that runs between `fork` and `execve`.
//!
//! Everything here works on a [`Plan`] that the parent prepared before it
//! forked: paths are `CString`s, flags are numbers, the seccomp filters are
//! compiled BPF, argv and envp are pointer arrays. The child only makes
//! system calls (through `libc`), reads the plan, and never allocates,
//! locks, formats or unwinds, so it is safe to run in the child of a
//! multi-threaded parent (crispd's worker threads, the test harness).
//!
//! Two processes run this code. The *intermediate* child (forked by the
//! caller) closes the descriptors it must not hold, joins the cgroup, joins
//! namespaces by path and unshares new ones, then `clone(CLONE_PARENT)`s the
//! *init* (a sibling, so the caller stays the container's parent, and the
//! first process of a new PID namespace), reports the init's pid and exits.
//! The init sets up the container and waits for the start signal before
//! `execve`.
//!
//! Failures are reported on the sync pipe as fixed-layout records (see
//! [`Record`]) and the process `_exit`s.

use std::ffi::{c_char, c_int, c_ulong, CStr, CString};

use nix::libc;
use seccompiler::BpfProgram;

/// What the init of a new container sets up in its root filesystem before
/// `pivot_root`, and after it.
pub(crate) struct RootfsPlan {
    /// The root filesystem (host path), already mounted.
    pub root: CString,
    /// The mounts holding `root` and its parent: made private (after
    /// `propagation`) so that pivot_root accepts them and nothing mounted
    /// on the rootfs reaches the host.
    pub private_mounts: Vec<CString>,
    /// Propagation applied recursively to `/` first (MS_SLAVE, MS_PRIVATE
    /// or, for `rshared`, MS_SHARED; with MS_REC).
    pub propagation: c_ulong,
    /// After pivot_root, when the spec asks for `rshared`.
    pub shared_after_pivot: bool,
    pub mounts: Vec<MountPlan>,
    /// Directories the device nodes go in (e.g. /dev/net), outermost first.
    pub device_dirs: Vec<CString>,
    pub devices: Vec<DevicePlan>,
    /// (target, link path under root).
    pub symlinks: Vec<(CString, CString)>,
    /// After pivot_root: (`/proc/sys/...`, value).
    pub sysctls: Vec<(CString, CString)>,
    pub masked: Vec<CString>,
    pub readonly: Vec<CString>,
    pub readonly_root: bool,
}

pub(crate) struct MountPlan {
    /// Directories to create first (host paths, outermost first).
    pub mkdirs: Vec<CString>,
    pub target: CString,
    /// Create a file (not a directory) at `target`: a bind of a file.
    pub target_is_file: bool,
    pub source: CString,
    pub fstype: Option<CString>,
    pub flags: c_ulong,
    pub data: Option<CString>,
    /// For binds: flags to re-apply with MS_REMOUNT (ro, nosuid, ...).
    pub remount: Option<c_ulong>,
    /// MS_PRIVATE / MS_SLAVE / MS_SHARED (| MS_REC), or 0.
    pub propagation: c_ulong,
    /// Make the mount and every mount below it read-only, last.
    pub recursive_readonly: bool,
}

pub(crate) struct DevicePlan {
    pub path: CString,
    pub mode: libc::mode_t,
    pub dev: libc::dev_t,
    pub uid: libc::uid_t,
    pub gid: libc::gid_t,
}

pub(crate) struct CapsPlan {
    /// Capabilities kept in the bounding set (bit n = capability n).
    pub bounding: u64,
    pub effective: u64,
    pub permitted: u64,
    pub inheritable: u64,
    pub ambient: Vec<u32>,
    /// The highest capability number the kernel knows.
    pub last_cap: u32,
}

pub(crate) struct Plan {
    /// Descriptors the intermediate child keeps (sorted); every other
    /// descriptor above 2 is closed, so that a container never holds another
    /// container's pipes while it waits to start.
    pub keep_fds: Vec<c_int>,
    pub stdin: c_int,
    pub stdout: c_int,
    pub stderr: c_int,
    pub terminal: bool,
    pub sync_w: c_int,
    /// The start pipe's read end (create), or -1 (exec: no wait).
    pub start_r: c_int,
    /// Open `cgroup.procs` files: the intermediate child writes "0" to each.
    pub cgroup_procs: Vec<c_int>,
    /// (fd, CLONE_NEW* type), the mount namespace last.
    pub setns: Vec<(c_int, c_int)>,
    pub unshare: c_int,
    pub oom_score_adj: Option<CString>,
    pub rootfs: Option<RootfsPlan>,
    pub hostname: Option<CString>,
    pub rlimits: Vec<(c_int, libc::rlim_t, libc::rlim_t)>,
    pub uid: libc::uid_t,
    pub gid: libc::gid_t,
    pub groups: Vec<libc::gid_t>,
    pub umask: Option<libc::mode_t>,
    pub caps: Option<CapsPlan>,
    pub no_new_privs: bool,
    pub seccomp: Vec<BpfProgram>,
    pub cwd: CString,
    /// argv[0] as given, for error messages.
    pub argv0: CString,
    /// Where argv[0] may be: itself when it has a `/`, else each `PATH`
    /// directory joined with it.
    pub exe_candidates: Vec<CString>,
    pub argv: Vec<CString>,
    pub argv_ptrs: Vec<*const c_char>,
    pub envp: Vec<CString>,
    pub envp_ptrs: Vec<*const c_char>,
}

/// The steps a child reports failures of.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u16)]
pub(crate) enum Step {
    CloseFds = 1,
    Cgroup,
    Setns,
    Unshare,
    Clone,
    Signals,
    Setsid,
    Stdio,
    Tty,
    OomScoreAdj,
    Propagation,
    BindRoot,
    Mkdir,
    Mount,
    Remount,
    MountPropagation,
    Mknod,
    Symlink,
    PivotRoot,
    Sysctl,
    MaskPath,
    ReadonlyPath,
    ReadonlyRoot,
    Hostname,
    Rlimit,
    Bounding,
    Groups,
    Setgid,
    Setuid,
    Capset,
    Ambient,
    NoNewPrivs,
    Seccomp,
    Chdir,
    Executable,
    Start,
    Exec,
    RecursiveReadonly,
}

impl Step {
    pub fn from_u16(v: u16) -> Option<Self> {
        use Step::*;
        const ALL: [Step; 38] = [
            CloseFds,
            Cgroup,
            Setns,
            Unshare,
            Clone,
            Signals,
            Setsid,
            Stdio,
            Tty,
            OomScoreAdj,
            Propagation,
            BindRoot,
            Mkdir,
            Mount,
            Remount,
            MountPropagation,
            Mknod,
            Symlink,
            PivotRoot,
            Sysctl,
            MaskPath,
            ReadonlyPath,
            ReadonlyRoot,
            Hostname,
            Rlimit,
            Bounding,
            Groups,
            Setgid,
            Setuid,
            Capset,
            Ambient,
            NoNewPrivs,
            Seccomp,
            Chdir,
            Executable,
            Start,
            Exec,
            RecursiveReadonly,
        ];
        ALL.iter().copied().find(|s| *s as u16 == v)
    }

    pub fn describe(self) -> &'static str {
        use Step::*;
        match self {
            CloseFds => "close inherited descriptors",
            Cgroup => "join cgroup",
            Setns => "join namespace",
            Unshare => "create namespaces",
            Clone => "clone container init",
            Signals => "reset signals",
            Setsid => "setsid",
            Stdio => "set up stdio",
            Tty => "set controlling terminal",
            OomScoreAdj => "write oom_score_adj",
            Propagation => "set root mount propagation",
            BindRoot => "bind rootfs",
            Mkdir => "create mount point",
            Mount => "mount",
            Remount => "remount",
            MountPropagation => "set mount propagation",
            Mknod => "create device",
            Symlink => "create symlink",
            PivotRoot => "pivot_root",
            Sysctl => "write sysctl",
            MaskPath => "mask path",
            ReadonlyPath => "make path read-only",
            ReadonlyRoot => "make rootfs read-only",
            Hostname => "set hostname",
            Rlimit => "set rlimit",
            Bounding => "drop bounding capabilities",
            Groups => "setgroups",
            Setgid => "setgid",
            Setuid => "setuid",
            Capset => "set capabilities",
            Ambient => "raise ambient capabilities",
            NoNewPrivs => "set no_new_privs",
            Seccomp => "install seccomp filter",
            Chdir => "chdir to working directory",
            Executable => "exec",
            Start => "wait for start",
            Exec => "exec",
            RecursiveReadonly => "make mount recursively read-only",
        }
    }
}

/// One message on the sync pipe: a 10-byte header (tag, 0, step u16, value
/// i32, detail length u16, little-endian) and the detail bytes. Written with
/// one `write` (well under PIPE_BUF, so never interleaved).
pub(crate) const TAG_PID: u8 = b'P';
pub(crate) const TAG_READY: u8 = b'R';
pub(crate) const TAG_ERROR: u8 = b'E';
pub(crate) const HEADER: usize = 10;
const MAX_DETAIL: usize = 1024;

pub(crate) struct Record {
    pub tag: u8,
    pub step: u16,
    pub value: i32,
    pub detail: Vec<u8>,
}

fn send(fd: c_int, tag: u8, step: u16, value: i32, detail: &[u8]) {
    let mut buf = [0u8; HEADER + MAX_DETAIL];
    let n = detail.len().min(MAX_DETAIL);
    buf[0] = tag;
    buf[2..4].copy_from_slice(&step.to_le_bytes());
    buf[4..8].copy_from_slice(&value.to_le_bytes());
    buf[8..10].copy_from_slice(&(n as u16).to_le_bytes());
    buf[HEADER..HEADER + n].copy_from_slice(&detail[..n]);
    // SAFETY: writes from a live stack buffer.
    unsafe {
        libc::write(fd, buf.as_ptr().cast(), HEADER + n);
    }
}

fn errno() -> i32 {
    // SAFETY: reads the calling thread's errno.
    unsafe { *libc::__errno_location() }
}

/// Report `step` failed with the current errno and exit.
fn fail(plan: &Plan, step: Step, detail: &[u8]) -> ! {
    fail_with(plan, step, errno(), detail)
}

fn fail_with(plan: &Plan, step: Step, err: i32, detail: &[u8]) -> ! {
    send(plan.sync_w, TAG_ERROR, step as u16, err, detail);
    // SAFETY: ends the process without running atexit handlers or
    // destructors (they belong to the parent's copy of this memory).
    unsafe { libc::_exit(1) }
}

fn check(plan: &Plan, rc: libc::c_long, step: Step, detail: &[u8]) {
    if rc < 0 {
        fail(plan, step, detail);
    }
}

/// Close every descriptor above 2 except `keep` (sorted).
fn close_others(keep: &[c_int]) -> Result<(), i32> {
    let mut lo: u32 = 3;
    let close_range = |lo: u32, hi: u32| -> Result<(), i32> {
        // SAFETY: closes descriptors of this (single-threaded) child only.
        let rc = unsafe { libc::syscall(libc::SYS_close_range, lo, hi, 0) };
        if rc == 0 {
            return Ok(());
        }
        if errno() != libc::ENOSYS {
            return Err(errno());
        }
        // Before Linux 5.9: close one by one up to a sane bound.
        for fd in lo..=hi.min(65_535) {
            // SAFETY: as above.
            unsafe { libc::close(fd as c_int) };
        }
        Ok(())
    };
    for &k in keep {
        if k < 0 {
            continue;
        }
        let k = k as u32;
        if k >= lo {
            if k > lo {
                close_range(lo, k - 1)?;
            }
            lo = k + 1;
        }
    }
    close_range(lo, u32::MAX)
}

/// The intermediate child: namespaces and cgroup, then clone the init.
///
/// # Safety
/// To be called only in a freshly forked child, with `init` prepared by the
/// parent before the fork.
pub(crate) unsafe fn intermediate(
    plan: &Plan,
    init: nix::sched::CloneCb<'_>,
    stack: &mut [u8],
) -> ! {
    if let Err(e) = close_others(&plan.keep_fds) {
        fail_with(plan, Step::CloseFds, e, b"");
    }
    for &fd in &plan.cgroup_procs {
        // SAFETY: writes two bytes from a static string to an open fd.
        let rc = unsafe { libc::write(fd, c"0".as_ptr().cast(), 1) };
        check(plan, rc as libc::c_long, Step::Cgroup, b"");
        // SAFETY: the fd is ours and not used again.
        unsafe { libc::close(fd) };
    }
    for &(fd, nstype) in &plan.setns {
        // SAFETY: plain syscall.
        let rc = unsafe { libc::setns(fd, nstype) };
        check(plan, rc as libc::c_long, Step::Setns, ns_name(nstype));
        // SAFETY: the fd is ours and not used again.
        unsafe { libc::close(fd) };
    }
    if plan.unshare != 0 {
        // SAFETY: plain syscall; this child has a single thread.
        let rc = unsafe { libc::unshare(plan.unshare) };
        check(plan, rc as libc::c_long, Step::Unshare, b"");
    }
    // CLONE_PARENT: the init is the caller's child, not ours, so the caller
    // waits for it; after an unshare(CLONE_NEWPID) it is the namespace's
    // first process.
    // SAFETY: `init` and `stack` were prepared before the fork; the new
    // process has its own copy of this memory (no CLONE_VM).
    let pid = match unsafe {
        nix::sched::clone(
            init,
            stack,
            nix::sched::CloneFlags::CLONE_PARENT,
            Some(libc::SIGCHLD),
        )
    } {
        Ok(pid) => pid.as_raw(),
        Err(e) => fail_with(plan, Step::Clone, e as i32, b""),
    };
    send(plan.sync_w, TAG_PID, 0, pid, b"");
    // SAFETY: see `fail_with`.
    unsafe { libc::_exit(0) }
}

fn ns_name(nstype: c_int) -> &'static [u8] {
    match nstype {
        libc::CLONE_NEWNET => b"net",
        libc::CLONE_NEWIPC => b"ipc",
        libc::CLONE_NEWUTS => b"uts",
        libc::CLONE_NEWPID => b"pid",
        libc::CLONE_NEWNS => b"mnt",
        libc::CLONE_NEWCGROUP => b"cgroup",
        _ => b"?",
    }
}

fn bytes(c: &CString) -> &[u8] {
    c.as_bytes()
}

/// The container's init (create) or the exec'd process (exec).
///
/// # Safety
/// Runs in the process created by `clone` in [`intermediate`].
pub(crate) unsafe fn init(plan: &Plan) -> ! {
    // SAFETY (whole function): system calls on memory owned by `plan`,
    // which lives (as a copy) in this process; no allocation.
    unsafe {
        // crispd blocks signals it reads through a signalfd; the container
        // must start with none blocked and none ignored.
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        if libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut()) != 0 {
            fail(plan, Step::Signals, b"");
        }
        for sig in 1..=libc::SIGRTMAX() {
            if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                libc::signal(sig, libc::SIG_DFL);
            }
        }

        let is_create = plan.start_r >= 0;
        if (is_create || plan.terminal) && libc::setsid() < 0 {
            fail(plan, Step::Setsid, b"");
        }
        setup_stdio(plan);

        if let Some(adj) = &plan.oom_score_adj {
            write_file(plan, c"/proc/self/oom_score_adj", adj, Step::OomScoreAdj);
        }

        if let Some(r) = &plan.rootfs {
            setup_rootfs(plan, r);
        }

        if let Some(h) = &plan.hostname {
            if libc::sethostname(h.as_ptr(), h.as_bytes().len()) != 0 {
                fail(plan, Step::Hostname, bytes(h));
            }
        }
        for &(res, soft, hard) in &plan.rlimits {
            let lim = libc::rlimit {
                rlim_cur: soft,
                rlim_max: hard,
            };
            if libc::setrlimit(res as _, &lim) != 0 {
                fail(plan, Step::Rlimit, b"");
            }
        }

        // Without no_new_privs the filter needs CAP_SYS_ADMIN: install it
        // while we still have it (as runc does); the profile must then allow
        // what follows (setuid, capset, chdir, read, execve).
        if !plan.no_new_privs {
            install_seccomp(plan);
        }
        set_identity(plan);
        if let Some(m) = plan.umask {
            libc::umask(m);
        }
        if libc::chdir(plan.cwd.as_ptr()) != 0 {
            fail(plan, Step::Chdir, bytes(&plan.cwd));
        }
        let exe = find_executable(plan);
        if plan.no_new_privs && libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
            fail(plan, Step::NoNewPrivs, b"");
        }

        if is_create {
            send(plan.sync_w, TAG_READY, 0, 0, b"");
            let mut b = 0u8;
            let n = loop {
                let n = libc::read(plan.start_r, (&mut b as *mut u8).cast(), 1);
                if n < 0 && errno() == libc::EINTR {
                    continue;
                }
                break n;
            };
            if n != 1 {
                // The creator went away or gave up on us: never run.
                libc::_exit(1);
            }
            libc::close(plan.start_r);
        }

        // With no_new_privs, as close to execve as possible: the profile
        // need allow little more than execve.
        if plan.no_new_privs {
            install_seccomp(plan);
        }
        libc::execve(exe, plan.argv_ptrs.as_ptr(), plan.envp_ptrs.as_ptr());
        send(
            plan.sync_w,
            TAG_ERROR,
            Step::Exec as u16,
            errno(),
            bytes(&plan.argv0),
        );
        libc::_exit(127)
    }
}

unsafe fn setup_stdio(plan: &Plan) {
    // SAFETY: dup2/fcntl/close on descriptors this process holds.
    unsafe {
        let (i, o, e) = if plan.terminal {
            (plan.stdout, plan.stdout, plan.stdout)
        } else {
            (plan.stdin, plan.stdout, plan.stderr)
        };
        // Lift sources out of 0..=2 first so no dup2 clobbers another.
        let mut src = [i, o, e];
        for s in src.iter_mut() {
            if (0..3).contains(s) {
                let n = libc::fcntl(*s, libc::F_DUPFD_CLOEXEC, 3);
                if n < 0 {
                    fail(plan, Step::Stdio, b"");
                }
                *s = n;
            }
        }
        for (target, s) in src.iter().enumerate() {
            if libc::dup2(*s, target as c_int) < 0 {
                fail(plan, Step::Stdio, b"");
            }
        }
        for s in src {
            if s > 2 && s != plan.sync_w && s != plan.start_r {
                libc::close(s);
            }
        }
        if plan.terminal && libc::ioctl(0, libc::TIOCSCTTY, 0) != 0 {
            fail(plan, Step::Tty, b"");
        }
    }
}

unsafe fn write_file(plan: &Plan, path: &CStr, value: &CStr, step: Step) {
    // SAFETY: open/write/close with NUL-terminated strings from the plan.
    unsafe {
        let fd = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
        if fd < 0 {
            fail(plan, step, path.to_bytes());
        }
        let v = value.to_bytes();
        if libc::write(fd, v.as_ptr().cast(), v.len()) < 0 {
            fail(plan, step, path.to_bytes());
        }
        libc::close(fd);
    }
}

unsafe fn mount(
    plan: &Plan,
    src: *const c_char,
    target: &CStr,
    fstype: *const c_char,
    flags: c_ulong,
    data: *const c_char,
    step: Step,
) {
    // SAFETY: mount(2) with NUL-terminated strings or nulls.
    let rc = unsafe { libc::mount(src, target.as_ptr(), fstype, flags, data.cast()) };
    if rc != 0 {
        fail(plan, step, target.to_bytes());
    }
}

/// `struct mount_attr` of `mount_setattr(2)`.
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

const MOUNT_ATTR_RDONLY: u64 = 0x1;

/// Make `target` and every mount below it read-only (Linux 5.12+).
unsafe fn set_recursive_readonly(plan: &Plan, target: &CStr) {
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_RDONLY,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    // SAFETY: `target` is NUL-terminated and `attr` a live local of the
    // size passed; the kernel only reads them.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            libc::AT_FDCWD,
            target.as_ptr(),
            libc::AT_RECURSIVE as c_ulong,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    check(plan, rc, Step::RecursiveReadonly, target.to_bytes());
}

fn ptr(c: &Option<CString>) -> *const c_char {
    c.as_ref().map_or(std::ptr::null(), |c| c.as_ptr())
}

/// The flags of the mount at `path` that a bind remount must keep.
unsafe fn mount_flags(path: &CStr) -> c_ulong {
    // SAFETY: statvfs into a zeroed local.
    unsafe {
        let mut st: libc::statvfs = std::mem::zeroed();
        if libc::statvfs(path.as_ptr(), &mut st) != 0 {
            return 0;
        }
        let f = st.f_flag;
        let mut m = 0;
        for (st_flag, ms_flag) in [
            (libc::ST_NOSUID, libc::MS_NOSUID),
            (libc::ST_NODEV, libc::MS_NODEV),
            (libc::ST_NOEXEC, libc::MS_NOEXEC),
            (libc::ST_NOATIME, libc::MS_NOATIME),
            (libc::ST_NODIRATIME, libc::MS_NODIRATIME),
            (libc::ST_RELATIME, libc::MS_RELATIME),
            (libc::ST_RDONLY, libc::MS_RDONLY),
        ] {
            if f & st_flag != 0 {
                m |= ms_flag;
            }
        }
        m
    }
}

unsafe fn setup_rootfs(plan: &Plan, r: &RootfsPlan) {
    let null = std::ptr::null::<c_char>();
    // SAFETY (whole function): mount(2) family calls and file creation on
    // NUL-terminated paths from the plan.
    unsafe {
        // Nothing we mount may propagate back to the host, except below
        // a bidirectional (rshared) bind.
        mount(
            plan,
            null,
            c"/",
            null,
            r.propagation,
            null,
            Step::Propagation,
        );
        for m in &r.private_mounts {
            if libc::mount(null, m.as_ptr(), null, libc::MS_PRIVATE, null.cast()) != 0 {
                fail(plan, Step::Propagation, bytes(m));
            }
        }
        // pivot_root needs the new root to be a mount point.
        mount(
            plan,
            r.root.as_ptr(),
            &r.root,
            null,
            libc::MS_BIND | libc::MS_REC,
            null,
            Step::BindRoot,
        );

        for m in &r.mounts {
            for d in &m.mkdirs {
                if libc::mkdir(d.as_ptr(), 0o755) != 0 && errno() != libc::EEXIST {
                    fail(plan, Step::Mkdir, bytes(d));
                }
            }
            if m.target_is_file {
                let fd = libc::open(
                    m.target.as_ptr(),
                    libc::O_CREAT | libc::O_WRONLY | libc::O_CLOEXEC | libc::O_NOFOLLOW,
                    0o644,
                );
                if fd >= 0 {
                    libc::close(fd);
                } else if errno() != libc::EEXIST && errno() != libc::EISDIR {
                    fail(plan, Step::Mkdir, bytes(&m.target));
                }
            } else if libc::mkdir(m.target.as_ptr(), 0o755) != 0 && errno() != libc::EEXIST {
                fail(plan, Step::Mkdir, bytes(&m.target));
            }
            mount(
                plan,
                m.source.as_ptr(),
                &m.target,
                ptr(&m.fstype),
                m.flags,
                ptr(&m.data),
                Step::Mount,
            );
            if let Some(flags) = m.remount {
                let keep = mount_flags(&m.target) & !libc::MS_RDONLY;
                mount(
                    plan,
                    null,
                    &m.target,
                    null,
                    libc::MS_BIND | libc::MS_REMOUNT | flags | keep,
                    null,
                    Step::Remount,
                );
            }
            if m.propagation != 0 {
                mount(
                    plan,
                    null,
                    &m.target,
                    null,
                    m.propagation,
                    null,
                    Step::MountPropagation,
                );
            }
            if m.recursive_readonly {
                set_recursive_readonly(plan, &m.target);
            }
        }

        for d in &r.device_dirs {
            if libc::mkdir(d.as_ptr(), 0o755) != 0 && errno() != libc::EEXIST {
                fail(plan, Step::Mkdir, bytes(d));
            }
        }
        for d in &r.devices {
            if libc::mknod(d.path.as_ptr(), d.mode, d.dev) != 0 {
                if errno() != libc::EEXIST {
                    fail(plan, Step::Mknod, bytes(&d.path));
                }
            } else if libc::chown(d.path.as_ptr(), d.uid, d.gid) != 0 {
                fail(plan, Step::Mknod, bytes(&d.path));
            }
        }
        for (target, link) in &r.symlinks {
            if libc::symlink(target.as_ptr(), link.as_ptr()) != 0 && errno() != libc::EEXIST {
                fail(plan, Step::Symlink, bytes(link));
            }
        }

        // pivot_root(".", ".") stacks the old root on the new one; detach
        // it (after making it a slave, so the unmount stays here).
        let old = libc::open(
            c"/".as_ptr(),
            libc::O_DIRECTORY | libc::O_RDONLY | libc::O_CLOEXEC,
        );
        let new = libc::open(
            r.root.as_ptr(),
            libc::O_DIRECTORY | libc::O_RDONLY | libc::O_CLOEXEC,
        );
        if old < 0 || new < 0 || libc::fchdir(new) != 0 {
            fail(plan, Step::PivotRoot, bytes(&r.root));
        }
        if libc::syscall(libc::SYS_pivot_root, c".".as_ptr(), c".".as_ptr()) != 0 {
            fail(plan, Step::PivotRoot, bytes(&r.root));
        }
        if libc::fchdir(old) != 0
            || libc::mount(
                null,
                c".".as_ptr(),
                null,
                libc::MS_SLAVE | libc::MS_REC,
                null.cast(),
            ) != 0
            || libc::umount2(c".".as_ptr(), libc::MNT_DETACH) != 0
            || libc::chdir(c"/".as_ptr()) != 0
        {
            fail(plan, Step::PivotRoot, b"detach old root");
        }
        libc::close(old);
        libc::close(new);
        if r.shared_after_pivot {
            mount(
                plan,
                null,
                c"/",
                null,
                libc::MS_SHARED | libc::MS_REC,
                null,
                Step::Propagation,
            );
        }

        for (path, value) in &r.sysctls {
            write_file(plan, path, value, Step::Sysctl);
        }
        for p in &r.masked {
            let mut st: libc::stat = std::mem::zeroed();
            if libc::stat(p.as_ptr(), &mut st) != 0 {
                if errno() == libc::ENOENT {
                    continue;
                }
                fail(plan, Step::MaskPath, bytes(p));
            }
            let rc = if st.st_mode & libc::S_IFMT == libc::S_IFDIR {
                libc::mount(
                    c"tmpfs".as_ptr(),
                    p.as_ptr(),
                    c"tmpfs".as_ptr(),
                    libc::MS_RDONLY,
                    null.cast(),
                )
            } else {
                libc::mount(
                    c"/dev/null".as_ptr(),
                    p.as_ptr(),
                    null,
                    libc::MS_BIND,
                    null.cast(),
                )
            };
            if rc != 0 {
                fail(plan, Step::MaskPath, bytes(p));
            }
        }
        for p in &r.readonly {
            if libc::mount(
                p.as_ptr(),
                p.as_ptr(),
                null,
                libc::MS_BIND | libc::MS_REC,
                null.cast(),
            ) != 0
            {
                if errno() == libc::ENOENT {
                    continue;
                }
                fail(plan, Step::ReadonlyPath, bytes(p));
            }
            let flags =
                libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY | libc::MS_REC | mount_flags(p);
            if libc::mount(p.as_ptr(), p.as_ptr(), null, flags, null.cast()) != 0 {
                fail(plan, Step::ReadonlyPath, bytes(p));
            }
        }
        if r.readonly_root {
            let flags = libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY | mount_flags(c"/");
            mount(plan, null, c"/", null, flags, null, Step::ReadonlyRoot);
        }
    }
}

unsafe fn set_identity(plan: &Plan) {
    // SAFETY (whole function): credential syscalls with plain integers and
    // pointers into the plan.
    unsafe {
        if let Some(c) = &plan.caps {
            for cap in 0..=c.last_cap {
                if c.bounding & (1u64 << cap) == 0
                    && libc::prctl(libc::PR_CAPBSET_DROP, cap as c_ulong, 0, 0, 0) != 0
                    && errno() != libc::EINVAL
                {
                    fail(plan, Step::Bounding, b"");
                }
            }
            // Keep the permitted set across the uid change; the sets are
            // then set explicitly.
            libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0);
        }
        if libc::setgroups(plan.groups.len(), plan.groups.as_ptr()) != 0 {
            fail(plan, Step::Groups, b"");
        }
        if libc::setresgid(plan.gid, plan.gid, plan.gid) != 0 {
            fail(plan, Step::Setgid, b"");
        }
        if libc::setresuid(plan.uid, plan.uid, plan.uid) != 0 {
            fail(plan, Step::Setuid, b"");
        }
        if let Some(c) = &plan.caps {
            libc::prctl(libc::PR_SET_KEEPCAPS, 0, 0, 0, 0);
            #[repr(C)]
            struct Header {
                version: u32,
                pid: c_int,
            }
            #[repr(C)]
            #[derive(Clone, Copy)]
            struct Data {
                effective: u32,
                permitted: u32,
                inheritable: u32,
            }
            let hdr = Header {
                version: 0x2008_0522, // _LINUX_CAPABILITY_VERSION_3
                pid: 0,
            };
            let data = [
                Data {
                    effective: c.effective as u32,
                    permitted: c.permitted as u32,
                    inheritable: c.inheritable as u32,
                },
                Data {
                    effective: (c.effective >> 32) as u32,
                    permitted: (c.permitted >> 32) as u32,
                    inheritable: (c.inheritable >> 32) as u32,
                },
            ];
            if libc::syscall(libc::SYS_capset, &hdr, data.as_ptr()) != 0 {
                fail(plan, Step::Capset, b"");
            }
            libc::prctl(
                libc::PR_CAP_AMBIENT,
                libc::PR_CAP_AMBIENT_CLEAR_ALL as c_ulong,
                0,
                0,
                0,
            );
            for &cap in &c.ambient {
                if libc::prctl(
                    libc::PR_CAP_AMBIENT,
                    libc::PR_CAP_AMBIENT_RAISE as c_ulong,
                    cap as c_ulong,
                    0,
                    0,
                ) != 0
                {
                    fail(plan, Step::Ambient, b"");
                }
            }
        }
    }
}

unsafe fn install_seccomp(plan: &Plan) {
    #[repr(C)]
    struct SockFprog {
        len: u16,
        filter: *const seccompiler::sock_filter,
    }
    for prog in &plan.seccomp {
        let fprog = SockFprog {
            len: prog.len() as u16,
            filter: prog.as_ptr(),
        };
        // SAFETY: the kernel copies the program; `prog` outlives the call.
        // Not seccompiler::apply_filter: it always sets no_new_privs, which
        // the spec may not want (setuid binaries in the container).
        let rc = unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER,
                0,
                &fprog as *const SockFprog,
            )
        };
        if rc != 0 {
            fail(plan, Step::Seccomp, b"");
        }
    }
}

/// The first candidate that is an executable regular file; runc checks
/// this before the start signal, so a missing binary fails CreateContainer.
unsafe fn find_executable(plan: &Plan) -> *const c_char {
    let mut err = libc::ENOENT;
    for c in &plan.exe_candidates {
        // SAFETY: stat/access on NUL-terminated paths.
        unsafe {
            let mut st: libc::stat = std::mem::zeroed();
            if libc::stat(c.as_ptr(), &mut st) != 0 {
                if errno() != libc::ENOENT && errno() != libc::ENOTDIR {
                    err = errno();
                }
                continue;
            }
            if st.st_mode & libc::S_IFMT != libc::S_IFREG {
                err = libc::EACCES;
                continue;
            }
            if libc::access(c.as_ptr(), libc::X_OK) != 0 {
                err = errno();
                continue;
            }
            return c.as_ptr();
        }
    }
    fail_with(plan, Step::Executable, err, bytes(&plan.argv0))
}
