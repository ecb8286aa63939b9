//! Seccomp: the RuntimeDefault profile, Localhost profiles (OCI or Docker
//! JSON), and their compilation to BPF.
//!
//! Profiles are kept as OCI `LinuxSeccomp` in the spec. [`compile`] turns
//! one into BPF programs with seccompiler. seccompiler's filters have one
//! "match" and one "mismatch" action, while an OCI profile gives each rule
//! its own; so a profile becomes a small stack of filters, which the kernel
//! runs all of, keeping the most restrictive answer (and, between equal
//! ones, the answer of the filter installed last):
//!
//! 1. a base filter: every syscall that has a rule → allow, anything else →
//!    the default action;
//! 2. one filter per other action A (errno ENOSYS, kill, trap, ...): the
//!    rules with action A → A, anything else → allow.
//!
//! Compiling is slow for a process that has not compiled before (~5 ms for
//! RuntimeDefault: every syscall name is probed once), so crispd compiles
//! with [`compile_cached`], which keeps what it compiled, and hands a
//! container's monitor the programs ready-made ([`encode`], [`decode`]).

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::Path;
use std::sync::{Arc, Mutex};

use oci_spec::runtime::{
    LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArg, LinuxSeccompArgBuilder, LinuxSeccompBuilder,
    LinuxSeccompOperator, LinuxSyscall, LinuxSyscallBuilder,
};
use seccompiler::{BpfProgram, TargetArch};
use serde_json::{json, Value};

use super::Error;

const EPERM: u32 = 1;
const ENOSYS: u32 = 38;

/// Allowed for every container (Docker's and containerd's default list).
const ALLOWED: &[&str] = &[
    "accept",
    "accept4",
    "access",
    "adjtimex",
    "alarm",
    "bind",
    "brk",
    "cachestat",
    "capget",
    "capset",
    "chdir",
    "chmod",
    "chown",
    "chown32",
    "clock_adjtime",
    "clock_adjtime64",
    "clock_getres",
    "clock_getres_time64",
    "clock_gettime",
    "clock_gettime64",
    "clock_nanosleep",
    "clock_nanosleep_time64",
    "close",
    "close_range",
    "connect",
    "copy_file_range",
    "creat",
    "dup",
    "dup2",
    "dup3",
    "epoll_create",
    "epoll_create1",
    "epoll_ctl",
    "epoll_ctl_old",
    "epoll_pwait",
    "epoll_pwait2",
    "epoll_wait",
    "epoll_wait_old",
    "eventfd",
    "eventfd2",
    "execve",
    "execveat",
    "exit",
    "exit_group",
    "faccessat",
    "faccessat2",
    "fadvise64",
    "fadvise64_64",
    "fallocate",
    "fanotify_mark",
    "fchdir",
    "fchmod",
    "fchmodat",
    "fchmodat2",
    "fchown",
    "fchown32",
    "fchownat",
    "fcntl",
    "fcntl64",
    "fdatasync",
    "fgetxattr",
    "flistxattr",
    "flock",
    "fork",
    "fremovexattr",
    "fsetxattr",
    "fstat",
    "fstat64",
    "fstatat64",
    "fstatfs",
    "fstatfs64",
    "fsync",
    "ftruncate",
    "ftruncate64",
    "futex",
    "futex_requeue",
    "futex_time64",
    "futex_wait",
    "futex_waitv",
    "futex_wake",
    "futimesat",
    "getcpu",
    "getcwd",
    "getdents",
    "getdents64",
    "getegid",
    "getegid32",
    "geteuid",
    "geteuid32",
    "getgid",
    "getgid32",
    "getgroups",
    "getgroups32",
    "getitimer",
    "getpeername",
    "getpgid",
    "getpgrp",
    "getpid",
    "getppid",
    "getpriority",
    "getrandom",
    "getresgid",
    "getresgid32",
    "getresuid",
    "getresuid32",
    "getrlimit",
    "get_robust_list",
    "getrusage",
    "getsid",
    "getsockname",
    "getsockopt",
    "get_thread_area",
    "gettid",
    "gettimeofday",
    "getuid",
    "getuid32",
    "getxattr",
    "getxattrat",
    "inotify_add_watch",
    "inotify_init",
    "inotify_init1",
    "inotify_rm_watch",
    "io_cancel",
    "ioctl",
    "io_destroy",
    "io_getevents",
    "io_pgetevents",
    "io_pgetevents_time64",
    "ioprio_get",
    "ioprio_set",
    "io_setup",
    "io_submit",
    "ipc",
    "kill",
    "landlock_add_rule",
    "landlock_create_ruleset",
    "landlock_restrict_self",
    "lchown",
    "lchown32",
    "lgetxattr",
    "link",
    "linkat",
    "listen",
    "listmount",
    "listxattr",
    "listxattrat",
    "llistxattr",
    "_llseek",
    "lremovexattr",
    "lseek",
    "lsetxattr",
    "lstat",
    "lstat64",
    "madvise",
    "map_shadow_stack",
    "membarrier",
    "memfd_create",
    "memfd_secret",
    "mincore",
    "mkdir",
    "mkdirat",
    "mknod",
    "mknodat",
    "mlock",
    "mlock2",
    "mlockall",
    "mmap",
    "mmap2",
    "mprotect",
    "mq_getsetattr",
    "mq_notify",
    "mq_open",
    "mq_timedreceive",
    "mq_timedreceive_time64",
    "mq_timedsend",
    "mq_timedsend_time64",
    "mq_unlink",
    "mremap",
    "mseal",
    "msgctl",
    "msgget",
    "msgrcv",
    "msgsnd",
    "msync",
    "munlock",
    "munlockall",
    "munmap",
    "name_to_handle_at",
    "nanosleep",
    "newfstatat",
    "_newselect",
    "open",
    "openat",
    "openat2",
    "pause",
    "pidfd_open",
    "pidfd_send_signal",
    "pipe",
    "pipe2",
    "pkey_alloc",
    "pkey_free",
    "pkey_mprotect",
    "poll",
    "ppoll",
    "ppoll_time64",
    "prctl",
    "pread64",
    "preadv",
    "preadv2",
    "prlimit64",
    "process_mrelease",
    "pselect6",
    "pselect6_time64",
    "pwrite64",
    "pwritev",
    "pwritev2",
    "read",
    "readahead",
    "readlink",
    "readlinkat",
    "readv",
    "recv",
    "recvfrom",
    "recvmmsg",
    "recvmmsg_time64",
    "recvmsg",
    "remap_file_pages",
    "removexattr",
    "removexattrat",
    "rename",
    "renameat",
    "renameat2",
    "restart_syscall",
    "riscv_hwprobe",
    "rmdir",
    "rseq",
    "rt_sigaction",
    "rt_sigpending",
    "rt_sigprocmask",
    "rt_sigqueueinfo",
    "rt_sigreturn",
    "rt_sigsuspend",
    "rt_sigtimedwait",
    "rt_sigtimedwait_time64",
    "rt_tgsigqueueinfo",
    "sched_getaffinity",
    "sched_getattr",
    "sched_getparam",
    "sched_get_priority_max",
    "sched_get_priority_min",
    "sched_getscheduler",
    "sched_rr_get_interval",
    "sched_rr_get_interval_time64",
    "sched_setaffinity",
    "sched_setattr",
    "sched_setparam",
    "sched_setscheduler",
    "sched_yield",
    "seccomp",
    "select",
    "semctl",
    "semget",
    "semop",
    "semtimedop",
    "semtimedop_time64",
    "send",
    "sendfile",
    "sendfile64",
    "sendmmsg",
    "sendmsg",
    "sendto",
    "setfsgid",
    "setfsgid32",
    "setfsuid",
    "setfsuid32",
    "setgid",
    "setgid32",
    "setgroups",
    "setgroups32",
    "setitimer",
    "setpgid",
    "setpriority",
    "setregid",
    "setregid32",
    "setresgid",
    "setresgid32",
    "setresuid",
    "setresuid32",
    "setreuid",
    "setreuid32",
    "setrlimit",
    "set_robust_list",
    "setsid",
    "setsockopt",
    "set_thread_area",
    "set_tid_address",
    "setuid",
    "setuid32",
    "setxattr",
    "setxattrat",
    "shmat",
    "shmctl",
    "shmdt",
    "shmget",
    "shutdown",
    "sigaltstack",
    "signalfd",
    "signalfd4",
    "sigprocmask",
    "sigreturn",
    "socketcall",
    "socketpair",
    "splice",
    "stat",
    "stat64",
    "statfs",
    "statfs64",
    "statmount",
    "statx",
    "symlink",
    "symlinkat",
    "sync",
    "sync_file_range",
    "syncfs",
    "sysinfo",
    "tee",
    "tgkill",
    "time",
    "timer_create",
    "timer_delete",
    "timer_getoverrun",
    "timer_gettime",
    "timer_gettime64",
    "timer_settime",
    "timer_settime64",
    "timerfd_create",
    "timerfd_gettime",
    "timerfd_gettime64",
    "timerfd_settime",
    "timerfd_settime64",
    "times",
    "tkill",
    "truncate",
    "truncate64",
    "ugetrlimit",
    "umask",
    "uname",
    "unlink",
    "unlinkat",
    "uretprobe",
    "utime",
    "utimensat",
    "utimensat_time64",
    "utimes",
    "vfork",
    "vmsplice",
    "wait4",
    "waitid",
    "waitpid",
    "write",
    "writev",
    // Safe to allow since Linux 4.8 (seccomp can no longer be bypassed
    // with ptrace).
    "process_vm_readv",
    "process_vm_writev",
    "ptrace",
];

/// Allowed when the container has the capability.
const BY_CAPABILITY: &[(&str, &[&str])] = &[
    ("CAP_DAC_READ_SEARCH", &["open_by_handle_at"]),
    (
        "CAP_SYS_ADMIN",
        &[
            "bpf",
            "clone",
            "clone3",
            "fanotify_init",
            "fsconfig",
            "fsmount",
            "fsopen",
            "fspick",
            "lookup_dcookie",
            "lsm_get_self_attr",
            "lsm_list_modules",
            "lsm_set_self_attr",
            "mount",
            "mount_setattr",
            "move_mount",
            "open_tree",
            "perf_event_open",
            "quotactl",
            "quotactl_fd",
            "setdomainname",
            "sethostname",
            "setns",
            "syslog",
            "umount",
            "umount2",
            "unshare",
        ],
    ),
    ("CAP_SYS_BOOT", &["reboot"]),
    ("CAP_SYS_CHROOT", &["chroot"]),
    (
        "CAP_SYS_MODULE",
        &["delete_module", "init_module", "finit_module"],
    ),
    ("CAP_SYS_PACCT", &["acct"]),
    (
        "CAP_SYS_PTRACE",
        &[
            "kcmp",
            "pidfd_getfd",
            "process_madvise",
            "process_vm_readv",
            "process_vm_writev",
            "ptrace",
        ],
    ),
    ("CAP_SYS_RAWIO", &["iopl", "ioperm"]),
    (
        "CAP_SYS_TIME",
        &["settimeofday", "stime", "clock_settime", "clock_settime64"],
    ),
    ("CAP_SYS_TTY_CONFIG", &["vhangup"]),
    (
        "CAP_SYS_NICE",
        &[
            "get_mempolicy",
            "mbind",
            "set_mempolicy",
            "set_mempolicy_home_node",
        ],
    ),
    ("CAP_SYSLOG", &["syslog"]),
    ("CAP_BPF", &["bpf"]),
    ("CAP_PERFMON", &["perf_event_open"]),
];

/// Allowed on one architecture (Go's names, as in the Docker profile).
const BY_ARCH: &[(&str, &[&str])] = &[
    ("amd64", &["arch_prctl", "modify_ldt"]),
    (
        "arm64",
        &[
            "arm_fadvise64_64",
            "arm_sync_file_range",
            "sync_file_range2",
            "breakpoint",
            "cacheflush",
            "set_tls",
        ],
    ),
    ("riscv64", &["riscv_flush_icache"]),
];

/// Socket families a container may create: all but the removed ones,
/// AF_ALG (kernel crypto API) and AF_VSOCK (host/guest channel). Families
/// 1..=11 are allowed as the range `< 12`; the others one by one.
const SOCKET_FAMILIES_BELOW: u64 = 12;
const SOCKET_FAMILIES: &[u64] = &[
    13, 14, 15, 16, 17, 18, 21, 22, 24, 26, 27, 28, 29, 30, 31, 32, 33, 35, 36, 39, 41, 42, 43, 44,
    45,
];

/// Values `personality(2)` may be called with.
const PERSONALITIES: &[u64] = &[0x0, 0x0008, 0x20000, 0x20008, 0xffff_ffff];

/// CLONE_NEWNS | NEWUTS | NEWIPC | NEWUSER | NEWPID | NEWNET | NEWCGROUP.
const CLONE_NAMESPACE_FLAGS: u64 = 0x7E02_0000;

/// Go's name for this architecture (Docker profiles use them).
pub fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "arm" => "arm",
        other => other,
    }
}

fn rule(
    names: &[&str],
    action: LinuxSeccompAction,
    errno: Option<u32>,
    args: Vec<LinuxSeccompArg>,
) -> LinuxSyscall {
    let mut b = LinuxSyscallBuilder::default()
        .names(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        .action(action);
    if let Some(e) = errno {
        b = b.errno_ret(e);
    }
    if !args.is_empty() {
        b = b.args(args);
    }
    b.build().expect("every field of a syscall rule is set")
}

fn arg(
    index: usize,
    value: u64,
    value_two: Option<u64>,
    op: LinuxSeccompOperator,
) -> LinuxSeccompArg {
    let mut b = LinuxSeccompArgBuilder::default()
        .index(index)
        .value(value)
        .op(op);
    if let Some(v) = value_two {
        b = b.value_two(v);
    }
    b.build().expect("every field of a syscall argument is set")
}

/// The RuntimeDefault profile for a container whose bounding set is `caps`
/// (names like `CAP_SYS_ADMIN`): default errno EPERM, an allow-list, more
/// syscalls for some capabilities, as Docker and containerd generate it.
pub fn runtime_default(caps: &HashSet<String>) -> LinuxSeccomp {
    use LinuxSeccompAction::{ScmpActAllow as Allow, ScmpActErrno as Errno};
    let mut rules = vec![rule(ALLOWED, Allow, None, vec![])];
    rules.push(rule(
        &["socket"],
        Allow,
        None,
        vec![arg(
            0,
            SOCKET_FAMILIES_BELOW,
            None,
            LinuxSeccompOperator::ScmpCmpLt,
        )],
    ));
    for &f in SOCKET_FAMILIES {
        rules.push(rule(
            &["socket"],
            Allow,
            None,
            vec![arg(0, f, None, LinuxSeccompOperator::ScmpCmpEq)],
        ));
    }
    for &p in PERSONALITIES {
        rules.push(rule(
            &["personality"],
            Allow,
            None,
            vec![arg(0, p, None, LinuxSeccompOperator::ScmpCmpEq)],
        ));
    }
    for (arch, names) in BY_ARCH {
        if *arch == go_arch() {
            rules.push(rule(names, Allow, None, vec![]));
        }
    }
    for (cap, names) in BY_CAPABILITY {
        if caps.contains(*cap) {
            rules.push(rule(names, Allow, None, vec![]));
        }
    }
    if !caps.contains("CAP_SYS_ADMIN") {
        // clone without namespace flags; clone3's flags are behind a
        // pointer, so it answers ENOSYS and libc falls back to clone.
        let index = if go_arch().starts_with("s390") { 1 } else { 0 };
        rules.push(rule(
            &["clone"],
            Allow,
            None,
            vec![arg(
                index,
                CLONE_NAMESPACE_FLAGS,
                Some(0),
                LinuxSeccompOperator::ScmpCmpMaskedEq,
            )],
        ));
        rules.push(rule(&["clone3"], Errno, Some(ENOSYS), vec![]));
    }
    LinuxSeccompBuilder::default()
        .default_action(Errno)
        .default_errno_ret(EPERM)
        .syscalls(rules)
        .build()
        .expect("every field of the profile is set")
}

/// Read a Localhost profile: OCI `linux.seccomp` JSON, or Docker's format
/// (per-rule `includes`/`excludes` on capabilities and architectures,
/// `archMap`), evaluated for a container whose bounding set is `caps`.
pub fn load_profile(path: &Path, caps: &HashSet<String>) -> Result<LinuxSeccomp, Error> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::io(format!("seccomp profile {}", path.display()), e))?;
    parse_profile(&text, caps)
        .map_err(|e| Error::Invalid(format!("seccomp profile {}: {e}", path.display())))
}

/// Why a seccomp profile's text is unusable.
#[derive(Debug)]
pub enum ProfileError {
    /// Not JSON, or not the shape of `linux.seccomp`.
    Json(serde_json::Error),
    /// JSON, but not an object.
    NotAnObject,
}

impl fmt::Display for ProfileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Json(e) => e.fmt(f),
            Self::NotAnObject => f.write_str("not a JSON object"),
        }
    }
}

impl std::error::Error for ProfileError {}

/// [`load_profile`] on the profile's text.
pub fn parse_profile(text: &str, caps: &HashSet<String>) -> Result<LinuxSeccomp, ProfileError> {
    let mut v: Value = serde_json::from_str(text).map_err(ProfileError::Json)?;
    let obj = v.as_object_mut().ok_or(ProfileError::NotAnObject)?;
    obj.remove("archMap");
    obj.remove("defaultErrno");
    if let Some(Value::Array(calls)) = obj.get_mut("syscalls") {
        let kept: Vec<Value> = calls
            .drain(..)
            .filter_map(|mut c| {
                let o = c.as_object_mut()?;
                let applies = filter_applies(o.get("includes"), caps, true)
                    && !filter_applies(o.get("excludes"), caps, false);
                if !applies {
                    return None;
                }
                for k in ["includes", "excludes", "comment"] {
                    o.remove(k);
                }
                if let Some(name) = o.remove("name") {
                    o.insert("names".into(), json!([name]));
                }
                Some(c)
            })
            .collect();
        *calls = kept;
    }
    serde_json::from_value(v).map_err(ProfileError::Json)
}

/// Docker's filters. `includes` applies when *all* its conditions hold (and
/// when absent); `excludes` applies when *any* holds.
fn filter_applies(f: Option<&Value>, caps: &HashSet<String>, include: bool) -> bool {
    let Some(f) = f.and_then(Value::as_object) else {
        return include;
    };
    let list = |k: &str| -> Vec<String> {
        f.get(k)
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    let fcaps = list("caps");
    let arches = list("arches");
    if include {
        fcaps.iter().all(|c| caps.contains(c))
            && (arches.is_empty() || arches.iter().any(|a| a == go_arch()))
    } else {
        fcaps.iter().any(|c| caps.contains(c)) || arches.iter().any(|a| a == go_arch())
    }
}

fn target_arch() -> Result<TargetArch, Error> {
    TargetArch::try_from(std::env::consts::ARCH)
        .map_err(|e| Error::Unsupported(format!("seccomp: unsupported architecture: {e}")))
}

/// Whether seccompiler knows `name` on `arch`. Profiles list syscalls of
/// every architecture and newer kernels; like runc with libseccomp, names
/// unknown here are skipped.
fn known_syscall(name: &str, arch: TargetArch) -> bool {
    static CACHE: Mutex<Option<HashMap<String, bool>>> = Mutex::new(None);
    let mut cache = CACHE.lock().unwrap_or_else(|e| e.into_inner());
    let map = cache.get_or_insert_with(HashMap::new);
    if let Some(&k) = map.get(name) {
        return k;
    }
    let probe = json!({"p": {"mismatch_action": "allow", "match_action": "trap", "filter": [{"syscall": name}]}});
    let ok = seccompiler::compile_from_json(probe.to_string().as_bytes(), arch).is_ok();
    map.insert(name.to_string(), ok);
    ok
}

fn action_json(action: LinuxSeccompAction, errno: Option<u32>) -> Result<Value, Error> {
    use LinuxSeccompAction::*;
    Ok(match action {
        ScmpActAllow => json!("allow"),
        ScmpActErrno => json!({"errno": errno.unwrap_or(EPERM)}),
        ScmpActKill | ScmpActKillThread => json!("kill_thread"),
        ScmpActKillProcess => json!("kill_process"),
        ScmpActTrap => json!("trap"),
        ScmpActTrace => json!({"trace": errno.unwrap_or(EPERM)}),
        ScmpActLog => json!("log"),
        ScmpActNotify => {
            return Err(Error::Unsupported(
                "seccomp: SCMP_ACT_NOTIFY is not supported".into(),
            ))
        }
    })
}

fn arg_json(a: &LinuxSeccompArg) -> Value {
    use LinuxSeccompOperator::*;
    let (op, val) = match a.op() {
        ScmpCmpNe => (json!("ne"), a.value()),
        ScmpCmpLt => (json!("lt"), a.value()),
        ScmpCmpLe => (json!("le"), a.value()),
        ScmpCmpEq => (json!("eq"), a.value()),
        ScmpCmpGe => (json!("ge"), a.value()),
        ScmpCmpGt => (json!("gt"), a.value()),
        // OCI: (arg & value) == valueTwo.
        ScmpCmpMaskedEq => (json!({"masked_eq": a.value()}), a.value_two().unwrap_or(0)),
    };
    json!({"index": a.index(), "type": "qword", "op": op, "val": val})
}

struct Rule {
    name: String,
    args: Vec<Value>,
}

/// seccompiler rules: per syscall, an unconditional rule wins over
/// conditional ones (which are ORed).
fn rules_json(rules: &[Rule]) -> Value {
    let mut order: Vec<&str> = Vec::new();
    let mut by_name: HashMap<&str, Vec<&Rule>> = HashMap::new();
    for r in rules {
        by_name
            .entry(&r.name)
            .or_insert_with(|| {
                order.push(&r.name);
                Vec::new()
            })
            .push(r);
    }
    let mut out = Vec::new();
    for name in order {
        let rs = &by_name[name];
        if rs.iter().any(|r| r.args.is_empty()) {
            out.push(json!({"syscall": name}));
        } else {
            for r in rs {
                out.push(json!({"syscall": name, "args": r.args}));
            }
        }
    }
    Value::Array(out)
}

/// Compile `profile` into BPF programs, to be installed in order.
pub fn compile(profile: &LinuxSeccomp) -> Result<Vec<BpfProgram>, Error> {
    let arch = target_arch()?;
    let default = action_json(profile.default_action(), profile.default_errno_ret())?;
    let allow = json!("allow");
    let mut all: Vec<Rule> = Vec::new();
    let mut by_action: Vec<(Value, Vec<Rule>)> = Vec::new();
    for sc in profile.syscalls().iter().flatten() {
        let action = action_json(sc.action(), sc.errno_ret())?;
        if action == default {
            continue;
        }
        let args: Vec<Value> = sc.args().iter().flatten().map(arg_json).collect();
        for name in sc.names() {
            if !known_syscall(name, arch) {
                continue;
            }
            all.push(Rule {
                name: name.clone(),
                args: args.clone(),
            });
            if action != allow {
                let slot = match by_action.iter().position(|(a, _)| *a == action) {
                    Some(i) => i,
                    None => {
                        by_action.push((action.clone(), Vec::new()));
                        by_action.len() - 1
                    }
                };
                by_action[slot].1.push(Rule {
                    name: name.clone(),
                    args: args.clone(),
                });
            }
        }
    }
    let mut filters: Vec<Value> = Vec::new();
    if default != allow {
        filters.push(json!({"mismatch_action": default, "match_action": "allow", "filter": rules_json(&all)}));
    }
    for (action, rules) in &by_action {
        filters.push(json!({"mismatch_action": "allow", "match_action": action, "filter": rules_json(rules)}));
    }
    let map: serde_json::Map<String, Value> = filters
        .into_iter()
        .enumerate()
        .map(|(i, f)| (format!("f{i:03}"), f))
        .collect();
    let n = map.len();
    let mut compiled =
        seccompiler::compile_from_json(Value::Object(map).to_string().as_bytes(), arch)
            .map_err(|e| Error::Invalid(format!("seccomp: {e}")))?;
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let prog = compiled
            .remove(&format!("f{i:03}"))
            .ok_or_else(|| Error::Host("seccomp: a compiled filter is missing".into()))?;
        if prog.len() > 4096 {
            return Err(Error::Invalid(format!(
                "seccomp: filter of {} instructions exceeds the kernel's 4096",
                prog.len()
            )));
        }
        out.push(prog);
    }
    Ok(out)
}

/// [`compile`], keeping the programs of the last few profiles compiled in
/// this process: containers of a node mostly share one or two profiles.
pub fn compile_cached(profile: &LinuxSeccomp) -> Result<Arc<[BpfProgram]>, Error> {
    const KEEP: usize = 16;
    static CACHE: Mutex<Vec<(String, Arc<[BpfProgram]>)>> = Mutex::new(Vec::new());
    let key = serde_json::to_string(profile)
        .map_err(|e| Error::Host(format!("seccomp: encode the profile: {e}")))?;
    let lock = || CACHE.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, progs)) = lock().iter().find(|(k, _)| *k == key) {
        return Ok(progs.clone());
    }
    // Not under the lock: another thread's hit need not wait for this.
    let progs: Arc<[BpfProgram]> = compile(profile)?.into();
    let mut cache = lock();
    if cache.len() >= KEEP {
        cache.remove(0);
    }
    cache.push((key, progs.clone()));
    Ok(progs)
}

/// Size of one BPF instruction in [`encode`]'s format.
const INSN: usize = 8;

/// Compiled programs as bytes, for the container's monitor: per program
/// its instruction count (u32), then each instruction's code (u16), jt,
/// jf (u8) and k (u32), all little-endian.
pub fn encode(programs: &[BpfProgram]) -> Vec<u8> {
    let len = programs.iter().map(|p| 4 + p.len() * INSN).sum();
    let mut out = Vec::with_capacity(len);
    for prog in programs {
        out.extend_from_slice(&(prog.len() as u32).to_le_bytes());
        for insn in prog {
            out.extend_from_slice(&insn.code.to_le_bytes());
            out.push(insn.jt);
            out.push(insn.jf);
            out.extend_from_slice(&insn.k.to_le_bytes());
        }
    }
    out
}

/// The programs [`encode`] wrote, checked: whole instructions, none empty
/// and none longer than the kernel takes.
pub fn decode(mut bytes: &[u8]) -> Result<Vec<BpfProgram>, Error> {
    let bad = |why: &str| Error::Host(format!("seccomp: bad compiled programs: {why}"));
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let (count, rest) = bytes
            .split_first_chunk::<4>()
            .ok_or_else(|| bad("truncated count"))?;
        let count = u32::from_le_bytes(*count) as usize;
        if count == 0 || count > 4096 {
            return Err(bad(&format!("a program of {count} instructions")));
        }
        let body = rest
            .get(..count * INSN)
            .ok_or_else(|| bad("truncated program"))?;
        let prog = body
            .chunks_exact(INSN)
            .map(|i| seccompiler::sock_filter {
                code: u16::from_le_bytes([i[0], i[1]]),
                jt: i[2],
                jf: i[3],
                k: u32::from_le_bytes([i[4], i[5], i[6], i[7]]),
            })
            .collect();
        out.push(prog);
        bytes = &rest[count * INSN..];
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps(names: &[&str]) -> HashSet<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn compiled_programs_survive_encoding_and_are_kept() {
        let p = runtime_default(&caps(&["CAP_CHOWN"]));
        let progs = compile_cached(&p).unwrap();
        assert_eq!(&*progs, &compile(&p).unwrap()[..]);
        assert!(Arc::ptr_eq(&progs, &compile_cached(&p).unwrap()));
        let bytes = encode(&progs);
        assert_eq!(decode(&bytes).unwrap(), progs.to_vec());
        assert!(decode(&bytes[..bytes.len() - 1]).is_err());
        assert!(decode(&[0, 0, 0, 0]).is_err());
        assert!(decode(&[1, 0]).is_err());
        assert_eq!(decode(&[]).unwrap(), Vec::<BpfProgram>::new());
    }

    #[test]
    fn default_profile_compiles() {
        let p = runtime_default(&caps(&["CAP_CHOWN"]));
        let progs = compile(&p).unwrap();
        // base filter + the ENOSYS filter for clone3.
        assert_eq!(progs.len(), 2);
        let with_admin = compile(&runtime_default(&caps(&["CAP_SYS_ADMIN"]))).unwrap();
        assert_eq!(with_admin.len(), 1);
    }

    #[test]
    fn docker_format_includes_and_excludes() {
        let text = r#"{
            "defaultAction": "SCMP_ACT_ERRNO",
            "archMap": [{"architecture": "SCMP_ARCH_X86_64", "subArchitectures": []}],
            "syscalls": [
                {"names": ["read", "write"], "action": "SCMP_ACT_ALLOW"},
                {"names": ["mount"], "action": "SCMP_ACT_ALLOW", "includes": {"caps": ["CAP_SYS_ADMIN"]}},
                {"name": "clone3", "action": "SCMP_ACT_ERRNO", "errnoRet": 38, "excludes": {"caps": ["CAP_SYS_ADMIN"]}}
            ]
        }"#;
        let p = parse_profile(text, &caps(&[])).unwrap();
        let names: Vec<_> = p
            .syscalls()
            .iter()
            .flatten()
            .flat_map(|s| s.names().clone())
            .collect();
        assert_eq!(names, ["read", "write", "clone3"]);
        let p = parse_profile(text, &caps(&["CAP_SYS_ADMIN"])).unwrap();
        let names: Vec<_> = p
            .syscalls()
            .iter()
            .flatten()
            .flat_map(|s| s.names().clone())
            .collect();
        assert_eq!(names, ["read", "write", "mount"]);
        assert!(compile(&p).is_ok());
    }

    #[test]
    fn unknown_names_are_skipped() {
        let p = LinuxSeccompBuilder::default()
            .default_action(LinuxSeccompAction::ScmpActAllow)
            .syscalls(vec![rule(
                &["no_such_syscall", "unshare"],
                LinuxSeccompAction::ScmpActErrno,
                None,
                vec![],
            )])
            .build()
            .unwrap();
        assert_eq!(compile(&p).unwrap().len(), 1);
    }
}
