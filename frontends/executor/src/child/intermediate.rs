//! The intermediate child: closes what it must not hold, joins the cgroup
//! and the namespaces, then clones the container's init as a sibling.

use std::ffi::c_int;

use nix::libc;

use super::{check, errno, fail_with, send, Plan, Step, TAG_PID};

/// Close every descriptor above 2 except `keep` (sorted).
///
/// # Safety
/// Only in a freshly forked, single-threaded child: it closes descriptors
/// that owners in the parent's copy of memory (`OwnedFd`s, files) still
/// believe open, which is sound only because that memory is never used
/// again before `execve` or `_exit`.
unsafe fn close_others(keep: &[c_int]) -> Result<(), i32> {
    let mut lo: u32 = 3;
    let close_range = |lo: u32, hi: u32| -> Result<(), i32> {
        // SAFETY: close_range(2) takes plain integers; closing descriptors
        // nobody here uses again is the caller's contract.
        let rc = unsafe { libc::syscall(libc::SYS_close_range, lo, hi, 0) };
        if rc == 0 {
            return Ok(());
        }
        if errno() != libc::ENOSYS {
            return Err(errno());
        }
        // Before Linux 5.9: close one by one up to a sane bound.
        for fd in lo..=hi.min(65_535) {
            // SAFETY: as above; a descriptor that is not open fails EBADF.
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
    // SAFETY: a freshly forked child (our caller's contract).
    if let Err(e) = unsafe { close_others(&plan.keep_fds) } {
        fail_with(plan, Step::CloseFds, e, b"");
    }
    for &fd in &plan.cgroup_procs {
        // SAFETY: writes one byte of a static string to a descriptor the
        // plan holds open for this child.
        let rc = unsafe { libc::write(fd, c"0".as_ptr().cast(), 1) };
        check(plan, rc as libc::c_long, Step::Cgroup, b"");
        // SAFETY: the fd is ours and not used again.
        unsafe { libc::close(fd) };
    }
    for &(fd, nstype) in &plan.setns {
        // SAFETY: setns(2) takes a descriptor and a flag; this child has a
        // single thread, as joining a mount or user namespace requires.
        let rc = unsafe { libc::setns(fd, nstype) };
        check(plan, rc as libc::c_long, Step::Setns, ns_name(nstype));
        // SAFETY: the fd is ours and not used again.
        unsafe { libc::close(fd) };
    }
    if plan.unshare != 0 {
        // SAFETY: unshare(2) takes flags; this child has a single thread.
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
    // SAFETY: ends the process without running atexit handlers or
    // destructors (they belong to the parent's copy of this memory).
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
