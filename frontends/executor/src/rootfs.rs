//! A container's root filesystem: an overlay of the image's unpacked
//! layers with a per-container writable layer.

use std::ffi::{CString, OsStr};
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::mount::{mount, umount2, MntFlags, MsFlags};

use super::Error;

/// An overlay filesystem for a container's root: read-only image layers
/// under a writable layer.
pub struct Overlay {
    /// Image layers, topmost first.
    pub lower: Vec<PathBuf>,
    /// The writable layer (overlayfs `upperdir`).
    pub upper: PathBuf,
    /// overlayfs's scratch directory (`workdir`), on the upper's filesystem.
    pub work: PathBuf,
    /// Where the overlay is mounted.
    pub target: PathBuf,
}

/// The kernel copies mount data into one page: longer option strings are
/// refused (or truncated by older kernels).
const MAX_MOUNT_DATA: usize = 4095;

/// Mount the overlay at `o.target` (creating the directories it needs).
///
/// With many layers the `lowerdir=` list can outgrow the page the kernel
/// takes mount options in. Then the overlay is mounted from a child process
/// that `chdir`s to the layers' common parent and names them relatively
/// (the working directory is process-wide, so crispd's own threads never
/// see it change); if even that is too long, through the new mount API,
/// one `lowerdir+` at a time (Linux 6.8+).
pub fn mount_overlay(o: &Overlay) -> Result<(), Error> {
    if o.lower.is_empty() {
        return Err(Error::Invalid("overlay: no lower layer".into()));
    }
    for dir in [&o.upper, &o.work, &o.target] {
        fs::create_dir_all(dir)
            .map_err(|e| Error::io(format!("overlay: mkdir {}", dir.display()), e))?;
    }
    for l in &o.lower {
        check_option_path(l)?;
    }
    check_option_path(&o.upper)?;
    check_option_path(&o.work)?;

    let lowers: Vec<&OsStr> = o.lower.iter().map(|p| p.as_os_str()).collect();
    let data = options(&lowers, &o.upper, &o.work);
    if data.len() <= MAX_MOUNT_DATA {
        return mount_data(&o.target, &data);
    }
    if let Some(common) = common_parent(&o.lower) {
        let rel: Vec<&OsStr> = o
            .lower
            .iter()
            .map(|p| {
                p.strip_prefix(&common)
                    .map_or(p.as_os_str(), |r| r.as_os_str())
            })
            .collect();
        let data = options(&rel, &o.upper, &o.work);
        if data.len() <= MAX_MOUNT_DATA {
            return mount_in_dir(&common, &o.target, &data);
        }
    }
    mount_fsconfig(o)
}

/// overlayfs splits its options at `,` and `:` (and `\` escapes): refuse
/// paths that would be misread rather than mount the wrong tree.
fn check_option_path(p: &Path) -> Result<(), Error> {
    if p.as_os_str()
        .as_bytes()
        .iter()
        .any(|b| matches!(b, b',' | b':' | b'\\'))
    {
        return Err(Error::Invalid(format!(
            "overlay: path {} contains ',', ':' or '\\'",
            p.display()
        )));
    }
    Ok(())
}

fn options(lowers: &[&OsStr], upper: &Path, work: &Path) -> Vec<u8> {
    let mut d = b"lowerdir=".to_vec();
    for (i, l) in lowers.iter().enumerate() {
        if i > 0 {
            d.push(b':');
        }
        d.extend_from_slice(l.as_bytes());
    }
    d.extend_from_slice(b",upperdir=");
    d.extend_from_slice(upper.as_os_str().as_bytes());
    d.extend_from_slice(b",workdir=");
    d.extend_from_slice(work.as_os_str().as_bytes());
    d
}

/// The deepest directory holding every path (None if only `/`).
fn common_parent(paths: &[PathBuf]) -> Option<PathBuf> {
    let first = paths.first()?.parent()?;
    let mut common: PathBuf = first.to_path_buf();
    for p in &paths[1..] {
        while !p.starts_with(&common) {
            if !common.pop() {
                return None;
            }
        }
    }
    (common != Path::new("/") && !common.as_os_str().is_empty()).then_some(common)
}

fn mount_data(target: &Path, data: &[u8]) -> Result<(), Error> {
    let data = CString::new(data).map_err(|_| Error::Invalid("overlay: NUL in a path".into()))?;
    mount(
        Some("overlay"),
        target,
        Some("overlay"),
        MsFlags::empty(),
        Some(data.as_c_str()),
    )
    .map_err(|e| Error::sys(format!("mount overlay at {}", target.display()), e))
}

/// Mount with relative lower paths from a child whose working directory is
/// `dir`. The child shares our mount namespace, so the mount is ours.
fn mount_in_dir(dir: &Path, target: &Path, data: &[u8]) -> Result<(), Error> {
    let dir_c = CString::new(dir.as_os_str().as_bytes())
        .map_err(|_| Error::Invalid("overlay: NUL in a path".into()))?;
    let target_c = CString::new(target.as_os_str().as_bytes())
        .map_err(|_| Error::Invalid("overlay: NUL in a path".into()))?;
    let data_c = CString::new(data).map_err(|_| Error::Invalid("overlay: NUL in a path".into()))?;
    let overlay = c"overlay";
    // SAFETY: the child only calls chdir, mount and _exit on memory prepared
    // before the fork: async-signal-safe.
    match unsafe { nix::unistd::fork() } {
        // SAFETY: in the forked child: chdir and mount on the NUL-terminated
        // strings built above, errno read through its thread-local pointer,
        // then _exit without running the parent's destructors.
        Ok(nix::unistd::ForkResult::Child) => unsafe {
            let mut rc = 1;
            if libc::chdir(dir_c.as_ptr()) == 0
                && libc::mount(
                    overlay.as_ptr(),
                    target_c.as_ptr(),
                    overlay.as_ptr(),
                    0,
                    data_c.as_ptr().cast(),
                ) == 0
            {
                rc = 0;
            } else {
                rc += *libc::__errno_location();
            }
            libc::_exit(rc.min(255));
        },
        Ok(nix::unistd::ForkResult::Parent { child }) => {
            match nix::sys::wait::waitpid(child, None) {
                Ok(nix::sys::wait::WaitStatus::Exited(_, 0)) => Ok(()),
                Ok(nix::sys::wait::WaitStatus::Exited(_, code)) => Err(Error::sys(
                    format!(
                        "mount overlay at {} (relative to {})",
                        target.display(),
                        dir.display()
                    ),
                    Errno::from_raw(code - 1),
                )),
                other => Err(Error::Host(format!("overlay mount helper: {other:?}"))),
            }
        }
        Err(e) => Err(Error::sys("fork overlay mount helper", e)),
    }
}

use nix::libc;

const FSCONFIG_SET_STRING: libc::c_uint = 1;
const FSCONFIG_CMD_CREATE: libc::c_uint = 6;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;

/// The new mount API: `fsopen("overlay")`, one `lowerdir+` per layer (no
/// length limit; Linux 6.8+), `fsmount`, `move_mount`.
fn mount_fsconfig(o: &Overlay) -> Result<(), Error> {
    let err = |what: &str| {
        Error::sys(
            format!(
                "mount overlay of {} layers at {} ({what})",
                o.lower.len(),
                o.target.display()
            ),
            Errno::last(),
        )
    };
    let cstr = |p: &Path| {
        CString::new(p.as_os_str().as_bytes())
            .map_err(|_| Error::Invalid("overlay: NUL in a path".into()))
    };
    // SAFETY: fsopen(2) with a NUL-terminated name and no flags.
    let fs_fd = unsafe { libc::syscall(libc::SYS_fsopen, c"overlay".as_ptr(), 0) } as libc::c_int;
    if fs_fd < 0 {
        return Err(err("fsopen"));
    }
    // SAFETY: the descriptor fsopen just returned, owned by nobody else.
    let fs_fd = unsafe { std::os::fd::OwnedFd::from_raw_fd_checked(fs_fd) };
    let set = |key: &std::ffi::CStr, value: &CString| {
        // SAFETY: fsconfig(2) on our descriptor with two NUL-terminated
        // strings borrowed for the call.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_fsconfig,
                fs_fd.raw(),
                FSCONFIG_SET_STRING,
                key.as_ptr(),
                value.as_ptr(),
                0,
            )
        };
        rc == 0
    };
    // lowerdir+ appends below the layers given so far: topmost first.
    for l in &o.lower {
        if !set(c"lowerdir+", &cstr(l)?) {
            return Err(err("fsconfig lowerdir+"));
        }
    }
    if !set(c"upperdir", &cstr(&o.upper)?) || !set(c"workdir", &cstr(&o.work)?) {
        return Err(err("fsconfig upperdir/workdir"));
    }
    let null: *const libc::c_char = std::ptr::null();
    // SAFETY: FSCONFIG_CMD_CREATE takes null key and value.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            fs_fd.raw(),
            FSCONFIG_CMD_CREATE,
            null,
            null,
            0,
        )
    };
    if rc != 0 {
        return Err(err("fsconfig create"));
    }
    // SAFETY: fsmount(2) on our descriptor with integer flags.
    let mnt_fd = unsafe { libc::syscall(libc::SYS_fsmount, fs_fd.raw(), 0, 0) } as libc::c_int;
    if mnt_fd < 0 {
        return Err(err("fsmount"));
    }
    // SAFETY: the descriptor fsmount just returned, owned by nobody else.
    let mnt_fd = unsafe { std::os::fd::OwnedFd::from_raw_fd_checked(mnt_fd) };
    let target = cstr(&o.target)?;
    // SAFETY: move_mount(2) from our descriptor (empty path) to a
    // NUL-terminated target borrowed for the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            mnt_fd.raw(),
            c"".as_ptr(),
            libc::AT_FDCWD,
            target.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        )
    };
    if rc != 0 {
        return Err(err("move_mount"));
    }
    Ok(())
}

trait FdExt {
    /// # Safety
    /// `fd` must be an open descriptor nobody else owns.
    unsafe fn from_raw_fd_checked(fd: libc::c_int) -> Self;
    fn raw(&self) -> libc::c_int;
}

impl FdExt for std::os::fd::OwnedFd {
    unsafe fn from_raw_fd_checked(fd: libc::c_int) -> Self {
        // SAFETY: per the caller's contract.
        unsafe { std::os::fd::FromRawFd::from_raw_fd(fd) }
    }
    fn raw(&self) -> libc::c_int {
        std::os::fd::AsRawFd::as_raw_fd(self)
    }
}

/// Unmount a container's root filesystem (lazily if busy); idempotent.
pub fn unmount(target: &Path) -> Result<(), Error> {
    match umount2(target, MntFlags::empty()) {
        Ok(()) | Err(Errno::EINVAL) | Err(Errno::ENOENT) => Ok(()),
        Err(Errno::EBUSY) => match umount2(target, MntFlags::MNT_DETACH) {
            Ok(()) | Err(Errno::EINVAL) => Ok(()),
            Err(e) => Err(Error::sys(
                format!("unmount {} (detached)", target.display()),
                e,
            )),
        },
        Err(e) => Err(Error::sys(format!("unmount {}", target.display()), e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn common_parent_of_layers() {
        let l = |s: &str| PathBuf::from(s);
        assert_eq!(
            common_parent(&[
                l("/var/lib/crisp/layers/a/fs"),
                l("/var/lib/crisp/layers/b/fs")
            ]),
            Some(l("/var/lib/crisp/layers"))
        );
        assert_eq!(common_parent(&[l("/a/x"), l("/b/y")]), None);
    }

    #[test]
    fn options_string() {
        let d = options(
            &[OsStr::new("/l1"), OsStr::new("/l2")],
            Path::new("/u"),
            Path::new("/w"),
        );
        assert_eq!(d, b"lowerdir=/l1:/l2,upperdir=/u,workdir=/w");
    }
}
