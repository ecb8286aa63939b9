//! The container's init (create) or the exec'd process (exec): from the
//! `clone` in [`super::intermediate`] to `execve`.
//!
//! The system calls here read the [`Plan`], which this process holds as its
//! own copy (cloned without CLONE_VM), and locals; strings are
//! NUL-terminated `CStr`s borrowed for the call. The process has one thread
//! and allocates nothing.

use std::ffi::{c_int, c_ulong, CStr};

use nix::libc;

use super::{bytes, check, errno, fail, fail_with, send, Plan, RootfsPlan, Step};
use super::{TAG_ERROR, TAG_READY};

/// The container's init (create) or the exec'd process (exec).
///
/// # Safety
/// Only in the process created by `clone` in [`super::intermediate`]: one
/// thread with its own copy of `plan`. It duplicates over descriptors 0-2
/// and closes others, which owners in that copied memory believe open, and
/// never returns (it `execve`s or `_exit`s).
pub(crate) unsafe fn init(plan: &Plan) -> ! {
    reset_signals(plan);

    let is_create = plan.start_r >= 0;
    if is_create || plan.terminal {
        // SAFETY: setsid(2) takes no arguments.
        if unsafe { libc::setsid() } < 0 {
            fail(plan, Step::Setsid, b"");
        }
    }
    // SAFETY: this is the cloned container process (our caller's contract).
    unsafe { setup_stdio(plan) };

    if let Some(adj) = &plan.oom_score_adj {
        write_file(plan, c"/proc/self/oom_score_adj", adj, Step::OomScoreAdj);
    }

    if let Some(r) = &plan.rootfs {
        setup_rootfs(plan, r);
    }

    if let Some(h) = &plan.hostname {
        // SAFETY: `h` is readable for the length passed.
        if unsafe { libc::sethostname(h.as_ptr(), h.as_bytes().len()) } != 0 {
            fail(plan, Step::Hostname, bytes(h));
        }
    }
    for &(res, soft, hard) in &plan.rlimits {
        let lim = libc::rlimit {
            rlim_cur: soft,
            rlim_max: hard,
        };
        // SAFETY: setrlimit(2) only reads the local `lim`.
        if unsafe { libc::setrlimit(res as _, &lim) } != 0 {
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
        // SAFETY: umask(2) takes and returns a mode.
        unsafe { libc::umask(m) };
    }
    // SAFETY: chdir(2) with a NUL-terminated path.
    if unsafe { libc::chdir(plan.cwd.as_ptr()) } != 0 {
        fail(plan, Step::Chdir, bytes(&plan.cwd));
    }
    let exe = find_executable(plan);
    if plan.no_new_privs {
        // SAFETY: prctl(2) with integer arguments only.
        if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
            fail(plan, Step::NoNewPrivs, b"");
        }
    }

    if is_create {
        wait_for_start(plan);
    }

    // With no_new_privs, as close to execve as possible: the profile
    // need allow little more than execve.
    if plan.no_new_privs {
        install_seccomp(plan);
    }
    // SAFETY: `exe` borrows from the plan; `argv_ptrs` and `envp_ptrs` are
    // null-terminated arrays of pointers into `plan.argv` and `plan.envp`
    // (plan.rs), all alive until execve replaces this image.
    unsafe {
        libc::execve(
            exe.as_ptr(),
            plan.argv_ptrs.as_ptr(),
            plan.envp_ptrs.as_ptr(),
        )
    };
    send(
        plan.sync_w,
        TAG_ERROR,
        Step::Exec as u16,
        errno(),
        bytes(&plan.argv0),
    );
    // SAFETY: ends the process without running atexit handlers or
    // destructors (they belong to the parent's copy of this memory).
    unsafe { libc::_exit(127) }
}

/// crispd blocks signals it reads through a signalfd; the container must
/// start with none blocked and none ignored.
fn reset_signals(plan: &Plan) {
    // SAFETY: an all-zero `sigset_t` is a valid value of this plain C
    // struct; sigemptyset and sigprocmask only touch the local set.
    let rc = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut())
    };
    if rc != 0 {
        fail(plan, Step::Signals, b"");
    }
    for sig in 1..=libc::SIGRTMAX() {
        if sig != libc::SIGKILL && sig != libc::SIGSTOP {
            // SAFETY: SIG_DFL installs no handler, so no code of ours can
            // run on a signal.
            unsafe { libc::signal(sig, libc::SIG_DFL) };
        }
    }
}

/// Tell the creator we are ready and block until it says start (one byte
/// on the start pipe); exit without running if it goes away.
fn wait_for_start(plan: &Plan) {
    send(plan.sync_w, TAG_READY, 0, 0, b"");
    let mut b = 0u8;
    let n = loop {
        // SAFETY: reads at most one byte into the local `b`.
        let n = unsafe { libc::read(plan.start_r, (&mut b as *mut u8).cast(), 1) };
        if n < 0 && errno() == libc::EINTR {
            continue;
        }
        break n;
    };
    if n != 1 {
        // The creator went away or gave up on us: never run.
        // SAFETY: as at the end of `init`.
        unsafe { libc::_exit(1) };
    }
    // SAFETY: the start pipe's read end is ours and not used again.
    unsafe { libc::close(plan.start_r) };
}

/// Make descriptors 0-2 the container's stdio and close the sources.
///
/// # Safety
/// Only in the container's process (see [`init`]): it replaces and closes
/// descriptors that owners in the parent's copy of memory believe open.
unsafe fn setup_stdio(plan: &Plan) {
    let (i, o, e) = if plan.terminal {
        (plan.stdout, plan.stdout, plan.stdout)
    } else {
        (plan.stdin, plan.stdout, plan.stderr)
    };
    // Lift sources out of 0..=2 first so no dup2 clobbers another.
    let mut src = [i, o, e];
    for s in src.iter_mut() {
        if (0..3).contains(s) {
            // SAFETY: F_DUPFD_CLOEXEC takes an integer argument.
            let n = unsafe { libc::fcntl(*s, libc::F_DUPFD_CLOEXEC, 3) };
            if n < 0 {
                fail(plan, Step::Stdio, b"");
            }
            *s = n;
        }
    }
    for (target, s) in src.iter().enumerate() {
        // SAFETY: replacing 0-2 is the caller's contract.
        if unsafe { libc::dup2(*s, target as c_int) } < 0 {
            fail(plan, Step::Stdio, b"");
        }
    }
    for s in src {
        if s > 2 && s != plan.sync_w && s != plan.start_r {
            // SAFETY: the source is now duplicated and not used again.
            unsafe { libc::close(s) };
        }
    }
    if plan.terminal {
        // SAFETY: TIOCSCTTY takes an integer argument.
        if unsafe { libc::ioctl(0, libc::TIOCSCTTY, 0) } != 0 {
            fail(plan, Step::Tty, b"");
        }
    }
}

/// Write `value` to the existing file at `path`.
fn write_file(plan: &Plan, path: &CStr, value: &CStr, step: Step) {
    // SAFETY: open(2) with a NUL-terminated path; the descriptor is ours.
    let fd = unsafe { libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC) };
    if fd < 0 {
        fail(plan, step, path.to_bytes());
    }
    let v = value.to_bytes();
    // SAFETY: `v` is readable for the length passed.
    if unsafe { libc::write(fd, v.as_ptr().cast(), v.len()) } < 0 {
        fail(plan, step, path.to_bytes());
    }
    // SAFETY: the descriptor opened above, not used again.
    unsafe { libc::close(fd) };
}

/// mount(2); `None` is a null pointer. Returns its result (errno is set).
fn sys_mount(
    src: Option<&CStr>,
    target: &CStr,
    fstype: Option<&CStr>,
    flags: c_ulong,
    data: Option<&CStr>,
) -> c_int {
    let ptr = |c: Option<&CStr>| c.map_or(std::ptr::null(), CStr::as_ptr);
    // SAFETY: every pointer is a NUL-terminated string borrowed for the
    // call, or null where mount(2) accepts one (source, fstype, data).
    unsafe {
        libc::mount(
            ptr(src),
            target.as_ptr(),
            ptr(fstype),
            flags,
            ptr(data).cast(),
        )
    }
}

/// mount(2), failing `step` with `target` as the detail.
fn mount(
    plan: &Plan,
    src: Option<&CStr>,
    target: &CStr,
    fstype: Option<&CStr>,
    flags: c_ulong,
    data: Option<&CStr>,
    step: Step,
) {
    if sys_mount(src, target, fstype, flags, data) != 0 {
        fail(plan, step, target.to_bytes());
    }
}

/// Create the directory `path` unless something is there.
fn mkdir(plan: &Plan, path: &CStr) {
    // SAFETY: mkdir(2) with a NUL-terminated path.
    if unsafe { libc::mkdir(path.as_ptr(), 0o755) } != 0 && errno() != libc::EEXIST {
        fail(plan, Step::Mkdir, path.to_bytes());
    }
}

/// The file type bits (`S_IFMT`) of `path`, or `None` with errno set.
fn file_type(path: &CStr) -> Option<libc::mode_t> {
    // SAFETY: an all-zero `stat` is a valid value of this plain C struct;
    // stat(2) writes only into it.
    let (rc, st) = unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        (libc::stat(path.as_ptr(), &mut st), st)
    };
    (rc == 0).then_some(st.st_mode & libc::S_IFMT)
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
fn set_recursive_readonly(plan: &Plan, target: &CStr) {
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

/// The flags of the mount at `path` that a bind remount must keep.
fn mount_flags(path: &CStr) -> c_ulong {
    // SAFETY: an all-zero `statvfs` is a valid value of this plain C
    // struct; statvfs(3) writes only into it.
    let (rc, st) = unsafe {
        let mut st: libc::statvfs = std::mem::zeroed();
        (libc::statvfs(path.as_ptr(), &mut st), st)
    };
    if rc != 0 {
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

/// Mounts, devices and links under the new root, `pivot_root` into it, then
/// sysctls, masked and read-only paths inside it.
fn setup_rootfs(plan: &Plan, r: &RootfsPlan) {
    // Nothing we mount may propagate back to the host, except below
    // a bidirectional (rshared) bind.
    mount(
        plan,
        None,
        c"/",
        None,
        r.propagation,
        None,
        Step::Propagation,
    );
    for m in &r.private_mounts {
        mount(
            plan,
            None,
            m,
            None,
            libc::MS_PRIVATE,
            None,
            Step::Propagation,
        );
    }
    // pivot_root needs the new root to be a mount point.
    mount(
        plan,
        Some(&r.root),
        &r.root,
        None,
        libc::MS_BIND | libc::MS_REC,
        None,
        Step::BindRoot,
    );
    make_mounts(plan, r);
    make_devices(plan, r);
    pivot_root(plan, r);
    if r.shared_after_pivot {
        mount(
            plan,
            None,
            c"/",
            None,
            libc::MS_SHARED | libc::MS_REC,
            None,
            Step::Propagation,
        );
    }
    for (path, value) in &r.sysctls {
        write_file(plan, path, value, Step::Sysctl);
    }
    mask_paths(plan, r);
    readonly_paths(plan, r);
}

/// The spec's mounts, in order, with their mount points.
fn make_mounts(plan: &Plan, r: &RootfsPlan) {
    for m in &r.mounts {
        for d in &m.mkdirs {
            mkdir(plan, d);
        }
        if m.target_is_file {
            // SAFETY: open(2) with a NUL-terminated path; the descriptor
            // is ours and closed at once.
            let fd = unsafe {
                libc::open(
                    m.target.as_ptr(),
                    libc::O_CREAT | libc::O_WRONLY | libc::O_CLOEXEC | libc::O_NOFOLLOW,
                    0o644,
                )
            };
            if fd >= 0 {
                // SAFETY: the descriptor opened above.
                unsafe { libc::close(fd) };
            } else if errno() != libc::EEXIST && errno() != libc::EISDIR {
                fail(plan, Step::Mkdir, bytes(&m.target));
            }
        } else {
            mkdir(plan, &m.target);
        }
        mount(
            plan,
            Some(&m.source),
            &m.target,
            m.fstype.as_deref(),
            m.flags,
            m.data.as_deref(),
            Step::Mount,
        );
        if let Some(flags) = m.remount {
            let keep = mount_flags(&m.target) & !libc::MS_RDONLY;
            mount(
                plan,
                None,
                &m.target,
                None,
                libc::MS_BIND | libc::MS_REMOUNT | flags | keep,
                None,
                Step::Remount,
            );
        }
        if m.propagation != 0 {
            mount(
                plan,
                None,
                &m.target,
                None,
                m.propagation,
                None,
                Step::MountPropagation,
            );
        }
        if m.recursive_readonly {
            set_recursive_readonly(plan, &m.target);
        }
    }
}

/// Device nodes (and their directories) and symlinks.
fn make_devices(plan: &Plan, r: &RootfsPlan) {
    for d in &r.device_dirs {
        mkdir(plan, d);
    }
    for d in &r.devices {
        // SAFETY: mknod(2) with a NUL-terminated path and integers.
        if unsafe { libc::mknod(d.path.as_ptr(), d.mode, d.dev) } != 0 {
            if errno() != libc::EEXIST {
                fail(plan, Step::Mknod, bytes(&d.path));
            }
        } else {
            // SAFETY: chown(2) with a NUL-terminated path and integers.
            if unsafe { libc::chown(d.path.as_ptr(), d.uid, d.gid) } != 0 {
                fail(plan, Step::Mknod, bytes(&d.path));
            }
        }
    }
    for (target, link) in &r.symlinks {
        // SAFETY: symlink(2) with two NUL-terminated paths.
        if unsafe { libc::symlink(target.as_ptr(), link.as_ptr()) } != 0 && errno() != libc::EEXIST
        {
            fail(plan, Step::Symlink, bytes(link));
        }
    }
}

/// Open a directory for fchdir; the descriptor is ours (close-on-exec).
fn open_dir(path: &CStr) -> c_int {
    // SAFETY: open(2) with a NUL-terminated path.
    unsafe {
        libc::open(
            path.as_ptr(),
            libc::O_DIRECTORY | libc::O_RDONLY | libc::O_CLOEXEC,
        )
    }
}

/// pivot_root(".", ".") stacks the old root on the new one; detach it
/// (after making it a slave, so the unmount stays here).
fn pivot_root(plan: &Plan, r: &RootfsPlan) {
    let old = open_dir(c"/");
    let new = open_dir(&r.root);
    // SAFETY: fchdir(2) takes a descriptor (an invalid one fails EBADF).
    if old < 0 || new < 0 || unsafe { libc::fchdir(new) } != 0 {
        fail(plan, Step::PivotRoot, bytes(&r.root));
    }
    // SAFETY: pivot_root(2) with two NUL-terminated paths.
    if unsafe { libc::syscall(libc::SYS_pivot_root, c".".as_ptr(), c".".as_ptr()) } != 0 {
        fail(plan, Step::PivotRoot, bytes(&r.root));
    }
    // SAFETY: fchdir(2) takes a descriptor.
    let mut ok = unsafe { libc::fchdir(old) } == 0;
    ok = ok && sys_mount(None, c".", None, libc::MS_SLAVE | libc::MS_REC, None) == 0;
    // SAFETY: umount2(2) with a NUL-terminated path and flags.
    ok = ok && unsafe { libc::umount2(c".".as_ptr(), libc::MNT_DETACH) } == 0;
    // SAFETY: chdir(2) with a NUL-terminated path.
    ok = ok && unsafe { libc::chdir(c"/".as_ptr()) } == 0;
    if !ok {
        fail(plan, Step::PivotRoot, b"detach old root");
    }
    // SAFETY: the two descriptors opened above, not used again.
    unsafe {
        libc::close(old);
        libc::close(new);
    }
}

/// Hide the spec's masked paths: a read-only tmpfs over a directory,
/// /dev/null over anything else.
fn mask_paths(plan: &Plan, r: &RootfsPlan) {
    for p in &r.masked {
        let Some(kind) = file_type(p) else {
            if errno() == libc::ENOENT {
                continue;
            }
            fail(plan, Step::MaskPath, bytes(p));
        };
        if kind == libc::S_IFDIR {
            mount(
                plan,
                Some(c"tmpfs"),
                p,
                Some(c"tmpfs"),
                libc::MS_RDONLY,
                None,
                Step::MaskPath,
            );
        } else {
            mount(
                plan,
                Some(c"/dev/null"),
                p,
                None,
                libc::MS_BIND,
                None,
                Step::MaskPath,
            );
        }
    }
}

/// Bind the spec's read-only paths onto themselves read-only, then the root.
fn readonly_paths(plan: &Plan, r: &RootfsPlan) {
    for p in &r.readonly {
        if sys_mount(Some(p), p, None, libc::MS_BIND | libc::MS_REC, None) != 0 {
            if errno() == libc::ENOENT {
                continue;
            }
            fail(plan, Step::ReadonlyPath, bytes(p));
        }
        let flags =
            libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY | libc::MS_REC | mount_flags(p);
        mount(plan, Some(p), p, None, flags, None, Step::ReadonlyPath);
    }
    if r.readonly_root {
        let flags = libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY | mount_flags(c"/");
        mount(plan, None, c"/", None, flags, None, Step::ReadonlyRoot);
    }
}

/// Capabilities, groups, gid and uid, in the order that keeps the
/// capabilities the spec asks for across the uid change.
fn set_identity(plan: &Plan) {
    if let Some(c) = &plan.caps {
        for cap in 0..=c.last_cap {
            if c.bounding & (1u64 << cap) != 0 {
                continue;
            }
            // SAFETY: prctl(2) with integer arguments only.
            let rc = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as c_ulong, 0, 0, 0) };
            if rc != 0 && errno() != libc::EINVAL {
                fail(plan, Step::Bounding, b"");
            }
        }
        // Keep the permitted set across the uid change; the sets are
        // then set explicitly.
        // SAFETY: prctl(2) with integer arguments only.
        unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0) };
    }
    // SAFETY: `groups` is readable for the length passed.
    if unsafe { libc::setgroups(plan.groups.len(), plan.groups.as_ptr()) } != 0 {
        fail(plan, Step::Groups, b"");
    }
    // SAFETY: setresgid(2) takes integers (libc applies it to the only
    // thread).
    if unsafe { libc::setresgid(plan.gid, plan.gid, plan.gid) } != 0 {
        fail(plan, Step::Setgid, b"");
    }
    // SAFETY: as setresgid.
    if unsafe { libc::setresuid(plan.uid, plan.uid, plan.uid) } != 0 {
        fail(plan, Step::Setuid, b"");
    }
    if let Some(c) = &plan.caps {
        // SAFETY: prctl(2) with integer arguments only.
        unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, 0, 0, 0, 0) };
        set_capabilities(plan, c);
    }
}

/// The effective, permitted and inheritable sets, then the ambient set.
fn set_capabilities(plan: &Plan, c: &super::CapsPlan) {
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
    // SAFETY: capset(2) reads the local header and the two data structs
    // that version 3 asks for, laid out as the kernel's (repr(C)).
    if unsafe { libc::syscall(libc::SYS_capset, &hdr, data.as_ptr()) } != 0 {
        fail(plan, Step::Capset, b"");
    }
    // SAFETY: prctl(2) with integer arguments only.
    unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL as c_ulong,
            0,
            0,
            0,
        )
    };
    for &cap in &c.ambient {
        // SAFETY: prctl(2) with integer arguments only.
        let rc = unsafe {
            libc::prctl(
                libc::PR_CAP_AMBIENT,
                libc::PR_CAP_AMBIENT_RAISE as c_ulong,
                cap as c_ulong,
                0,
                0,
            )
        };
        if rc != 0 {
            fail(plan, Step::Ambient, b"");
        }
    }
}

/// Install the plan's seccomp filters, in order.
fn install_seccomp(plan: &Plan) {
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
        // SAFETY: `fprog` points at `prog`'s `len` instructions, both live
        // for the call; the kernel copies the program.
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
fn find_executable(plan: &Plan) -> &CStr {
    let mut err = libc::ENOENT;
    for c in &plan.exe_candidates {
        match file_type(c) {
            None => {
                if errno() != libc::ENOENT && errno() != libc::ENOTDIR {
                    err = errno();
                }
                continue;
            }
            Some(kind) if kind != libc::S_IFREG => {
                err = libc::EACCES;
                continue;
            }
            Some(_) => {}
        }
        // SAFETY: access(2) with a NUL-terminated path.
        if unsafe { libc::access(c.as_ptr(), libc::X_OK) } != 0 {
            err = errno();
            continue;
        }
        return c;
    }
    fail_with(plan, Step::Executable, err, bytes(&plan.argv0))
}
