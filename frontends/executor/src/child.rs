//! The code that runs between `fork` and `execve`.
//!
//! Everything here works on a [`Plan`] that the parent prepared before it
//! forked: paths are `CString`s, flags are numbers, the seccomp filters are
//! compiled BPF, argv and envp are pointer arrays. The child only makes
//! system calls (through `libc`), reads the plan, and never allocates,
//! locks, formats or unwinds, so it is safe to run in the child of a
//! multi-threaded parent (crispd's worker threads, the test harness).
//!
//! Two processes run this code. The *intermediate* child
//! (`child/intermediate.rs`, forked by the caller) closes the descriptors it
//! must not hold, joins the cgroup, joins namespaces by path and unshares
//! new ones, then `clone(CLONE_PARENT)`s the *init* (a sibling, so the
//! caller stays the container's parent, and the first process of a new PID
//! namespace), reports the init's pid and exits. The init (`child/init.rs`)
//! sets up the container and waits for the start signal before `execve`.
//! This file holds what both share: the plan and the failure records.
//!
//! Failures are reported on the sync pipe as fixed-layout records (see
//! [`Record`]) and the process `_exit`s.

use std::ffi::{c_char, c_int, c_ulong, CString};

use nix::libc;
use seccompiler::BpfProgram;

mod init;
mod intermediate;

pub(crate) use init::init;
pub(crate) use intermediate::intermediate;

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

/// Declares [`Step`] (numbered from 1 in the order given: the number is
/// what the sync pipe carries), the list of every step and each one's
/// description, from one list, so that the three cannot drift apart.
macro_rules! steps {
    ($first:ident => $first_what:literal, $($step:ident => $what:literal,)*) => {
        /// The steps a child reports failures of.
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        #[repr(u16)]
        pub(crate) enum Step {
            $first = 1,
            $($step,)*
        }

        impl Step {
            const ALL: &[Step] = &[Step::$first, $(Step::$step,)*];

            pub fn from_u16(v: u16) -> Option<Self> {
                Self::ALL.iter().copied().find(|s| *s as u16 == v)
            }

            pub fn describe(self) -> &'static str {
                match self {
                    Step::$first => $first_what,
                    $(Step::$step => $what,)*
                }
            }
        }
    };
}

steps! {
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
    // SAFETY: `buf` is a live local, readable for the length passed.
    unsafe {
        libc::write(fd, buf.as_ptr().cast(), HEADER + n);
    }
}

fn errno() -> i32 {
    // SAFETY: __errno_location returns a valid pointer to the calling
    // thread's errno.
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

fn bytes(c: &CString) -> &[u8] {
    c.as_bytes()
}
