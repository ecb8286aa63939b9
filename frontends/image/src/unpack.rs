//! Unpack one image layer (a tar stream) into a directory that is ready
//! to be an overlayfs lower layer.
//!
//! * OCI whiteouts become overlayfs ones: `.wh.NAME` becomes a 0/0
//!   character device `NAME`, and `.wh..wh..opq` marks its directory
//!   opaque (`trusted.overlay.opaque=y`). A directory that replaces a
//!   whiteout in the same layer is made opaque too, so the lower
//!   directory it hides stays hidden.
//! * Ownership (when running as root), modes including setuid, setgid
//!   and sticky, modification times, extended attributes (PAX
//!   `SCHILY.xattr.*`; `trusted.overlay.*` from the archive is dropped
//!   so a layer cannot forge overlay metadata), device nodes, FIFOs, hard
//!   links and symbolic links are kept.
//! * Names are read as containerd reads them: an absolute name (`/bin/sh`,
//!   as `tar -P` and some build tools write) is relative to the layer
//!   root, and so is an absolute hard-link target; `.` and empty
//!   components are dropped, and `..` is resolved lexically (`a/../b` is
//!   `b`). An entry that names the root itself (`/` or `./`, which umoci
//!   and `tar -C dir .` write) is skipped, as containerd's `archive.Apply`
//!   skips every entry that resolves to the root: the layer root keeps the
//!   mode and owner the store gave it. Missing parents are created 0755
//!   (containerd's default); a later entry for the same path replaces the
//!   earlier one, except that a directory over a directory keeps its
//!   content and takes the new metadata. A stream that ends without the
//!   end-of-archive blocks, or inside the last file's padding, ends the
//!   archive (Go's archive/tar, which containerd uses, reads it so; umoci
//!   0.4 writes such layers).
//! * Nothing lands outside the layer directory. A `..` that would climb
//!   above the root is refused (containerd clamps it at the root instead;
//!   no honest writer produces one). Every path is resolved one component
//!   at a time from a directory descriptor of the root with `O_NOFOLLOW`,
//!   and every change is made with `*at` calls on the parent's
//!   descriptor, so the final component is never followed. A symbolic
//!   link met on the way (a directory entry earlier in the same layer) is
//!   followed only if its target is relative and stays within the root;
//!   anything else is refused. Hard links may only point at paths inside
//!   the layer.
//!
//! The caller gives a fresh, empty directory and renames it into place
//! only when unpacking and every digest check succeeded.

use std::cell::Cell;
use std::collections::VecDeque;
use std::ffi::{OsStr, OsString};
use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::Path;
use std::rc::Rc;

use nix::errno::Errno;
use nix::fcntl::AtFlags;
use nix::fcntl::{openat, readlinkat, OFlag};
use nix::sys::stat::{
    fchmod, fstatat, futimens, makedev, mkdirat, mknodat, utimensat, FileStat, Mode, SFlag,
    UtimensatFlags,
};
use nix::sys::time::TimeSpec;
use nix::unistd::{fchown, fchownat, linkat, symlinkat, unlinkat, Gid, Uid, UnlinkatFlags};

/// The overlayfs name of an opaque directory's attribute.
pub const OPAQUE_XATTR: &str = "trusted.overlay.opaque";
const WHITEOUT_PREFIX: &str = ".wh.";
const OPAQUE_MARKER: &str = ".wh..wh..opq";
/// The mode of a directory the archive needs but does not list (a file
/// before its directory), as containerd gives it.
const DEFAULT_DIR_MODE: u32 = 0o755;
/// Symbolic links followed while resolving one path, as Linux allows.
const MAX_SYMLINKS: usize = 40;
/// Deepest directory an entry may be in. Resolution keeps a descriptor
/// per level, and removal recurses per level: both stay bounded. (Linux's
/// PATH_MAX allows at most 2048 levels to be reached by path anyway.)
const MAX_DEPTH: usize = 512;

/// How to unpack.
#[derive(Clone, Copy, Debug)]
pub struct Options {
    /// Give entries the archive's owners (needs CAP_CHOWN: crispd runs as
    /// root). Off, everything belongs to the caller.
    pub chown: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            chown: nix::unistd::geteuid().is_root(),
        }
    }
}

/// What a layer held.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub entries: u64,
    /// Bytes of regular file content written.
    pub bytes: u64,
}

/// Why a layer could not be unpacked.
#[derive(Debug)]
pub enum UnpackError {
    /// The entry would reach outside the layer directory.
    Escape { entry: String, reason: String },
    /// The archive itself is malformed.
    Archive(io::Error),
    /// Creating or changing an entry failed.
    Io { entry: String, error: io::Error },
}

impl fmt::Display for UnpackError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Escape { entry, reason } => {
                write!(f, "layer entry {entry:?} refused: {reason}")
            }
            Self::Archive(e) => write!(f, "malformed layer archive: {e}"),
            Self::Io { entry, error } => write!(f, "cannot unpack layer entry {entry:?}: {error}"),
        }
    }
}

impl std::error::Error for UnpackError {}

impl UnpackError {
    pub fn is_escape(&self) -> bool {
        matches!(self, Self::Escape { .. })
    }

    /// The filesystem ran out of space (or inodes).
    pub fn is_no_space(&self) -> bool {
        match self {
            Self::Io { error, .. } | Self::Archive(error) => {
                error.raw_os_error() == Some(nix::libc::ENOSPC)
            }
            Self::Escape { .. } => false,
        }
    }
}

type Result<T> = std::result::Result<T, UnpackError>;

/// Unpack the tar stream `reader` into the directory `root`. Reads up to
/// the archive's end marker; the caller drains what follows (padding) if
/// it hashes the stream.
pub fn unpack<R: Read>(reader: R, root: &Path, opts: Options) -> Result<Stats> {
    let root_fd: OwnedFd = File::open(root)
        .map_err(|error| UnpackError::Io {
            entry: root.display().to_string(),
            error,
        })?
        .into();
    let mut u = Unpacker {
        root: root_fd,
        opts,
        stats: Stats::default(),
        dir_times: Vec::new(),
    };
    let end = Rc::new(Cell::new(None));
    let mut archive = tar::Archive::new(PadAtEof::new(reader, Rc::clone(&end)));
    let entries = archive.entries().map_err(UnpackError::Archive)?;
    for entry in entries {
        let mut entry = entry.map_err(UnpackError::Archive)?;
        let data_end = entry.raw_file_position() + entry.header().entry_size().unwrap_or(0);
        u.entry(&mut entry)?;
        // Padding may be missing after the last entry, never its data.
        if let Some(len) = end.get() {
            if data_end > len {
                return Err(UnpackError::Archive(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!(
                        "archive truncated: entry {:?} needs {data_end} bytes, the stream has {len}",
                        String::from_utf8_lossy(&entry.path_bytes())
                    ),
                )));
            }
        }
        u.stats.entries += 1;
    }
    u.finish()?;
    Ok(u.stats)
}

/// Reads a tar stream and, where it ends short of its last entry's padding
/// or of the end-of-archive blocks, supplies the zeros that are missing.
/// Some layer writers stop right after the last file's data; Go's
/// `archive/tar` (and so containerd) reads such a stream to its end without
/// error, and so do we. Where the real stream ended is recorded, so that
/// the unpacker can refuse an entry whose data was cut short.
struct PadAtEof<R> {
    inner: R,
    /// Bytes read from `inner` so far.
    pos: u64,
    /// Zero bytes still to supply once `inner` has ended.
    zeros_left: Option<u64>,
    /// Set to `pos` when `inner` ends.
    end: Rc<Cell<Option<u64>>>,
}

impl<R> PadAtEof<R> {
    fn new(inner: R, end: Rc<Cell<Option<u64>>>) -> Self {
        PadAtEof {
            inner,
            pos: 0,
            zeros_left: None,
            end,
        }
    }
}

impl<R: Read> Read for PadAtEof<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.zeros_left.is_none() {
            let n = self.inner.read(buf)?;
            if n > 0 || buf.is_empty() {
                self.pos += n as u64;
                return Ok(n);
            }
            // To the next block boundary, then two zero blocks.
            let to_boundary = (512 - self.pos % 512) % 512;
            self.zeros_left = Some(to_boundary + 1024);
            self.end.set(Some(self.pos));
        }
        let left = self.zeros_left.unwrap_or(0);
        let n = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        buf[..n].fill(0);
        self.zeros_left = Some(left - n as u64);
        Ok(n)
    }
}

struct Unpacker {
    root: OwnedFd,
    opts: Options,
    stats: Stats,
    /// Directories' times, set last: creating entries inside a directory
    /// changes its mtime.
    dir_times: Vec<(Vec<OsString>, TimeSpec)>,
}

/// Metadata of one entry, from its header and PAX records.
struct Meta {
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: TimeSpec,
    xattrs: Vec<(OsString, Vec<u8>)>,
}

enum Kind {
    Dir,
    File,
    Symlink(OsString),
    HardLink(Vec<OsString>),
    Char(u32, u32),
    Block(u32, u32),
    Fifo,
}

impl Unpacker {
    fn entry<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>) -> Result<()> {
        let raw_path = entry.path_bytes().into_owned();
        let name = String::from_utf8_lossy(&raw_path).into_owned();
        let et = entry.header().entry_type();
        if et.is_pax_global_extensions()
            || et.is_gnu_longname()
            || et.is_gnu_longlink()
            || et.is_pax_local_extensions()
        {
            return Ok(());
        }
        let components = normalize_path(&raw_path).map_err(|reason| UnpackError::Escape {
            entry: name.clone(),
            reason: reason.to_string(),
        })?;
        let meta = self.meta(entry, &name)?;
        let kind = match et {
            tar::EntryType::Directory => Kind::Dir,
            tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse => {
                Kind::File
            }
            tar::EntryType::Symlink => {
                let target = entry.link_name_bytes().unwrap_or_default().into_owned();
                Kind::Symlink(OsString::from_vec(target))
            }
            tar::EntryType::Link => {
                let target = entry.link_name_bytes().unwrap_or_default().into_owned();
                let target = normalize_path(&target).map_err(|reason| UnpackError::Escape {
                    entry: name.clone(),
                    reason: format!("hard link target: {reason}"),
                })?;
                if target.is_empty() {
                    return Err(UnpackError::Escape {
                        entry: name,
                        reason: "hard link to the layer root".into(),
                    });
                }
                Kind::HardLink(target)
            }
            tar::EntryType::Char | tar::EntryType::Block => {
                let h = entry.header();
                let major = h.device_major().ok().flatten().unwrap_or(0);
                let minor = h.device_minor().ok().flatten().unwrap_or(0);
                if et == tar::EntryType::Char {
                    Kind::Char(major, minor)
                } else {
                    Kind::Block(major, minor)
                }
            }
            tar::EntryType::Fifo => Kind::Fifo,
            other => {
                tracing::debug!(entry = %name, kind = ?other, "skipping unsupported tar entry type");
                return Ok(());
            }
        };

        // The layer root itself ("/", "./", "a/.."): skipped, as containerd
        // does. The root's mode and owner stay what the store made them.
        let Some((base, parents)) = components.split_last() else {
            tracing::debug!(entry = %name, "skipping a layer entry that names the layer root");
            return Ok(());
        };
        let base_bytes = base.as_bytes();

        // Whiteouts.
        if base_bytes.starts_with(WHITEOUT_PREFIX.as_bytes()) {
            let parent = self.resolve_dir(parents, true, &name)?;
            if base_bytes == OPAQUE_MARKER.as_bytes() {
                set_opaque(parent.as_fd()).map_err(|e| io_err(&name, e))?;
            } else if base_bytes.starts_with(b".wh..wh.") {
                // aufs bookkeeping (.wh..wh.plnk, .wh..wh.aufs): not content.
            } else {
                let hidden = OsStr::from_bytes(&base_bytes[WHITEOUT_PREFIX.len()..]);
                self.whiteout(parent.as_fd(), hidden, &name)?;
            }
            return Ok(());
        }

        let parent = self.resolve_dir(parents, true, &name)?;
        let pfd = parent.as_fd();
        let existing = lstat_at(pfd, base).map_err(|e| io_err(&name, e))?;
        match kind {
            Kind::Dir => {
                let mut opaque = false;
                match &existing {
                    Some(st) if is_dir(st) => {}
                    Some(st) => {
                        opaque = is_whiteout(st);
                        remove_at(pfd, base).map_err(|e| io_err(&name, e))?;
                        mkdirat(pfd, base.as_os_str(), Mode::from_bits_truncate(0o700))
                            .map_err(|e| io_err(&name, e.into()))?;
                    }
                    None => mkdirat(pfd, base.as_os_str(), Mode::from_bits_truncate(0o700))
                        .map_err(|e| io_err(&name, e.into()))?,
                }
                let dir = open_dir_at(pfd, base).map_err(|e| io_err(&name, e))?;
                self.set_meta_fd(dir.as_fd(), &meta, &name)?;
                if opaque {
                    set_opaque(dir.as_fd()).map_err(|e| io_err(&name, e))?;
                }
                self.dir_times.push((components.clone(), meta.mtime));
            }
            Kind::File => {
                if existing.is_some() {
                    remove_at(pfd, base).map_err(|e| io_err(&name, e))?;
                }
                let fd = openat(
                    pfd,
                    base.as_os_str(),
                    OFlag::O_CREAT
                        | OFlag::O_EXCL
                        | OFlag::O_WRONLY
                        | OFlag::O_NOFOLLOW
                        | OFlag::O_CLOEXEC,
                    Mode::from_bits_truncate(0o600),
                )
                .map_err(|e| io_err(&name, e.into()))?;
                let mut file = File::from(fd);
                let n = copy_data(entry, &mut file, &name)?;
                self.stats.bytes += n;
                self.set_meta_fd(file.as_fd(), &meta, &name)?;
                futimens(file.as_fd(), &meta.mtime, &meta.mtime)
                    .map_err(|e| io_err(&name, e.into()))?;
            }
            Kind::Symlink(target) => {
                if existing.is_some() {
                    remove_at(pfd, base).map_err(|e| io_err(&name, e))?;
                }
                symlinkat(target.as_os_str(), pfd, base.as_os_str())
                    .map_err(|e| io_err(&name, e.into()))?;
                self.set_meta_at(pfd, base, &meta, &name, false)?;
            }
            Kind::HardLink(target) => {
                let Some((tbase, tparents)) = target.split_last() else {
                    unreachable!("checked above");
                };
                if target == components {
                    return Ok(());
                }
                let tparent = self.resolve_dir(tparents, false, &name)?;
                match lstat_at(tparent.as_fd(), tbase).map_err(|e| io_err(&name, e))? {
                    None => {
                        return Err(io_err(
                            &name,
                            io::Error::new(
                                io::ErrorKind::NotFound,
                                "hard link target is not in this layer",
                            ),
                        ))
                    }
                    Some(st) if is_dir(&st) => {
                        return Err(io_err(&name, io::Error::other("hard link to a directory")))
                    }
                    Some(_) => {}
                }
                if existing.is_some() {
                    remove_at(pfd, base).map_err(|e| io_err(&name, e))?;
                }
                linkat(
                    tparent.as_fd(),
                    tbase.as_os_str(),
                    pfd,
                    base.as_os_str(),
                    AtFlags::empty(),
                )
                .map_err(|e| io_err(&name, e.into()))?;
            }
            Kind::Char(..) | Kind::Block(..) | Kind::Fifo => {
                if existing.is_some() {
                    remove_at(pfd, base).map_err(|e| io_err(&name, e))?;
                }
                let (sflag, dev) = match kind {
                    Kind::Char(ma, mi) => (SFlag::S_IFCHR, makedev(ma.into(), mi.into())),
                    Kind::Block(ma, mi) => (SFlag::S_IFBLK, makedev(ma.into(), mi.into())),
                    _ => (SFlag::S_IFIFO, 0),
                };
                mknodat(
                    pfd,
                    base.as_os_str(),
                    sflag,
                    Mode::from_bits_truncate(0o600),
                    dev,
                )
                .map_err(|e| io_err(&name, e.into()))?;
                // Never opened: a device node is not for us to touch. Its
                // metadata is set through the parent (just created by
                // mknodat, so not a symlink).
                self.set_meta_at(pfd, base, &meta, &name, true)?;
            }
        }
        Ok(())
    }

    /// `.wh.NAME` in a directory: hide the lower layers' NAME. If this
    /// layer already has NAME, that entry hides the lower one already; a
    /// directory is made opaque so the lower directory's content stays
    /// hidden too.
    fn whiteout(&mut self, parent: BorrowedFd<'_>, hidden: &OsStr, name: &str) -> Result<()> {
        if hidden.is_empty() || hidden == "." || hidden == ".." || hidden.as_bytes().contains(&b'/')
        {
            return Err(UnpackError::Escape {
                entry: name.to_owned(),
                reason: "whiteout of an invalid name".into(),
            });
        }
        match lstat_at(parent, hidden).map_err(|e| io_err(name, e))? {
            None => mknodat(
                parent,
                hidden,
                SFlag::S_IFCHR,
                Mode::from_bits_truncate(0o000),
                makedev(0, 0),
            )
            .map_err(|e| io_err(name, e.into())),
            Some(st) if is_dir(&st) => {
                let dir = open_dir_at(parent, hidden).map_err(|e| io_err(name, e))?;
                set_opaque(dir.as_fd()).map_err(|e| io_err(name, e))
            }
            Some(_) => Ok(()),
        }
    }

    fn meta<R: Read>(&self, entry: &mut tar::Entry<'_, R>, name: &str) -> Result<Meta> {
        let h = entry.header();
        let bad = |what: &str, e: io::Error| UnpackError::Escape {
            entry: name.to_owned(),
            reason: format!("bad {what} in header: {e}"),
        };
        let mode = h.mode().map_err(|e| bad("mode", e))? & 0o7777;
        let mut uid = h.uid().unwrap_or(0);
        let mut gid = h.gid().unwrap_or(0);
        let mut mtime = TimeSpec::new(h.mtime().unwrap_or(0).min(i64::MAX as u64) as i64, 0);
        let mut xattrs = Vec::new();
        if let Ok(Some(pax)) = entry.pax_extensions() {
            for ext in pax.flatten() {
                let key = ext.key_bytes();
                let value = ext.value_bytes();
                let num = || {
                    std::str::from_utf8(value)
                        .ok()
                        .and_then(|v| v.parse::<u64>().ok())
                };
                match key {
                    b"uid" => uid = num().unwrap_or(uid),
                    b"gid" => gid = num().unwrap_or(gid),
                    b"mtime" => {
                        if let Some(t) = parse_pax_time(value) {
                            mtime = t;
                        }
                    }
                    _ => {
                        if let Some(x) = key.strip_prefix(b"SCHILY.xattr.") {
                            if !x.starts_with(b"trusted.overlay.") && !x.is_empty() {
                                xattrs.push((OsString::from_vec(x.to_vec()), value.to_vec()));
                            }
                        }
                    }
                }
            }
        }
        Ok(Meta {
            mode,
            uid: u32::try_from(uid).map_err(|_| bad("uid", io::Error::other(uid.to_string())))?,
            gid: u32::try_from(gid).map_err(|_| bad("gid", io::Error::other(gid.to_string())))?,
            mtime,
            xattrs,
        })
    }

    /// Owner, then mode (chown clears setuid/setgid), then xattrs.
    fn set_meta_fd(&self, fd: BorrowedFd<'_>, meta: &Meta, name: &str) -> Result<()> {
        if self.opts.chown {
            fchown(
                fd,
                Some(Uid::from_raw(meta.uid)),
                Some(Gid::from_raw(meta.gid)),
            )
            .map_err(|e| io_err(name, e.into()))?;
        }
        fchmod(fd, Mode::from_bits_truncate(meta.mode)).map_err(|e| io_err(name, e.into()))?;
        for (key, value) in &meta.xattrs {
            set_xattr_fd(fd, key, value).map_err(|e| io_err(name, e))?;
        }
        Ok(())
    }

    /// The metadata of an entry never opened (a symlink or a device
    /// node), set on `base` in `parent` without following it: owner, then
    /// with `chmod` the mode (chown clears setuid/setgid; a symlink has
    /// none), xattrs, mtime (and atime) last.
    fn set_meta_at(
        &self,
        parent: BorrowedFd<'_>,
        base: &OsStr,
        meta: &Meta,
        name: &str,
        chmod: bool,
    ) -> Result<()> {
        if self.opts.chown {
            fchownat(
                parent,
                base,
                Some(Uid::from_raw(meta.uid)),
                Some(Gid::from_raw(meta.gid)),
                AtFlags::AT_SYMLINK_NOFOLLOW,
            )
            .map_err(|e| io_err(name, e.into()))?;
        }
        if chmod {
            // Just created by mknodat, so not a symlink to follow.
            nix::sys::stat::fchmodat(
                parent,
                base,
                Mode::from_bits_truncate(meta.mode),
                nix::sys::stat::FchmodatFlags::FollowSymlink,
            )
            .map_err(|e| io_err(name, e.into()))?;
        }
        self.xattrs_at(parent, base, meta, name)?;
        utimensat(
            parent,
            base,
            &meta.mtime,
            &meta.mtime,
            UtimensatFlags::NoFollowSymlink,
        )
        .map_err(|e| io_err(name, e.into()))
    }

    /// Extended attributes of a symlink or device node, set on the entry
    /// itself (lsetxattr through the parent descriptor's /proc path: the
    /// parent is already verified, and the last component is not
    /// followed).
    fn xattrs_at(
        &self,
        parent: BorrowedFd<'_>,
        base: &OsStr,
        meta: &Meta,
        name: &str,
    ) -> Result<()> {
        if meta.xattrs.is_empty() {
            return Ok(());
        }
        use std::os::fd::AsRawFd;
        let path = Path::new("/proc/self/fd")
            .join(parent.as_raw_fd().to_string())
            .join(base);
        for (key, value) in &meta.xattrs {
            match xattr::set(&path, key, value) {
                Ok(()) => {}
                // user.* is not allowed on symlinks and devices; the
                // kernel says so with EPERM. Not worth failing a pull.
                Err(e) if e.raw_os_error() == Some(Errno::EPERM as i32) => {
                    tracing::debug!(entry = name, xattr = ?key, "xattr not settable on this file type");
                }
                Err(e) => return Err(io_err(name, e)),
            }
        }
        Ok(())
    }

    /// The directory at `components` below the root, as a descriptor.
    /// Missing directories are created (0755, owned by the caller) when
    /// `create`; a symbolic link on the way is followed only within the
    /// root.
    fn resolve_dir(&self, components: &[OsString], create: bool, name: &str) -> Result<OwnedFd> {
        let escape = |reason: String| UnpackError::Escape {
            entry: name.to_owned(),
            reason,
        };
        let mut stack: Vec<OwnedFd> = vec![self.root.try_clone().map_err(|e| io_err(name, e))?];
        let mut queue: VecDeque<OsString> = components.iter().cloned().collect();
        let mut walked: Vec<OsString> = Vec::new();
        let mut hops = 0;
        while let Some(comp) = queue.pop_front() {
            let bytes = comp.as_bytes();
            if bytes.is_empty() || bytes == b"." {
                continue;
            }
            if bytes == b".." {
                if stack.len() == 1 {
                    return Err(escape(format!(
                        "a symbolic link on its path climbs out of the layer (at /{})",
                        display_path(&walked)
                    )));
                }
                stack.pop();
                walked.pop();
                continue;
            }
            let cur = stack.last().expect("root stays on the stack");
            let st = lstat_at(cur.as_fd(), &comp).map_err(|e| io_err(name, e))?;
            let mut created = false;
            match st {
                None if create => {
                    match mkdirat(
                        cur.as_fd(),
                        comp.as_os_str(),
                        Mode::from_bits_truncate(DEFAULT_DIR_MODE),
                    ) {
                        Ok(()) => created = true,
                        Err(Errno::EEXIST) => {}
                        Err(e) => return Err(io_err(name, e.into())),
                    }
                }
                None => {
                    return Err(io_err(
                        name,
                        io::Error::new(
                            io::ErrorKind::NotFound,
                            format!(
                                "/{} is not in this layer",
                                display_path(&walked_with(&walked, &comp))
                            ),
                        ),
                    ))
                }
                Some(st) if is_symlink(&st) => {
                    hops += 1;
                    if hops > MAX_SYMLINKS {
                        return Err(escape("too many levels of symbolic links".into()));
                    }
                    let target = readlinkat(cur.as_fd(), comp.as_os_str())
                        .map_err(|e| io_err(name, e.into()))?;
                    let tb = target.as_bytes();
                    if tb.starts_with(b"/") {
                        return Err(escape(format!(
                            "path component /{} is a symbolic link to the absolute path {:?}, which points outside the layer",
                            display_path(&walked_with(&walked, &comp)),
                            target
                        )));
                    }
                    for part in tb.split(|&b| b == b'/').rev() {
                        queue.push_front(OsString::from_vec(part.to_vec()));
                    }
                    continue;
                }
                Some(st) if !is_dir(&st) => {
                    return Err(io_err(
                        name,
                        io::Error::other(format!(
                            "/{} is not a directory",
                            display_path(&walked_with(&walked, &comp))
                        )),
                    ))
                }
                Some(_) => {}
            }
            if stack.len() > MAX_DEPTH {
                return Err(escape(format!("path deeper than {MAX_DEPTH} directories")));
            }
            let fd = open_dir_at(cur.as_fd(), &comp).map_err(|e| io_err(name, e))?;
            if created {
                // 0755 whatever the umask, as containerd makes a missing
                // parent; a later entry for it sets its own metadata.
                fchmod(fd.as_fd(), Mode::from_bits_truncate(DEFAULT_DIR_MODE))
                    .map_err(|e| io_err(name, e.into()))?;
            }
            stack.push(fd);
            walked.push(comp);
        }
        Ok(stack.pop().expect("root stays on the stack"))
    }

    fn finish(&mut self) -> Result<()> {
        // Deepest first does not matter: setting a directory's times does
        // not change its parent's.
        let times = std::mem::take(&mut self.dir_times);
        for (components, mtime) in times.iter().rev() {
            let Some((base, parents)) = components.split_last() else {
                futimens(self.root.as_fd(), mtime, mtime).map_err(|e| io_err(".", e.into()))?;
                continue;
            };
            let name = display_path(components);
            // Resolve without creating; a directory replaced later in the
            // layer may be gone, which is fine.
            let Ok(parent) = self.resolve_dir(parents, false, &name) else {
                continue;
            };
            match utimensat(
                parent.as_fd(),
                base.as_os_str(),
                mtime,
                mtime,
                UtimensatFlags::NoFollowSymlink,
            ) {
                Ok(()) | Err(Errno::ENOENT) => {}
                Err(e) => return Err(io_err(&name, e.into())),
            }
        }
        Ok(())
    }
}

/// Copy a file's content with a large buffer (io::copy's 8 KiB means a
/// write per 8 KiB). Read errors are the archive's, write errors ours.
fn copy_data<R: Read>(from: &mut R, to: &mut File, name: &str) -> Result<u64> {
    use std::io::Write;
    let mut buf = vec![0u8; 128 << 10];
    let mut total = 0u64;
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(UnpackError::Archive(e)),
        };
        to.write_all(&buf[..n]).map_err(|e| io_err(name, e))?;
        total += n as u64;
    }
}

/// An archive name (or hard-link target) as components below the layer
/// root, resolved lexically as containerd's `filepath.Clean` does: a
/// leading `/` is the root, `.` and empty components are dropped, `..`
/// drops the component before it. A `..` with nothing left to drop would
/// climb above the root: refused. An empty result is the root itself.
fn normalize_path(raw: &[u8]) -> std::result::Result<Vec<OsString>, ClimbsAboveRoot> {
    let mut out: Vec<OsString> = Vec::new();
    for part in raw.split(|&b| b == b'/') {
        match part {
            b"" | b"." => {}
            b".." => {
                if out.pop().is_none() {
                    return Err(ClimbsAboveRoot);
                }
            }
            p => out.push(OsString::from_vec(p.to_vec())),
        }
    }
    Ok(out)
}

/// A `..` in an archive path with no component left to drop.
#[derive(Debug)]
struct ClimbsAboveRoot;

impl fmt::Display for ClimbsAboveRoot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("'..' climbs above the layer root")
    }
}

fn display_path(c: &[OsString]) -> String {
    c.iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join("/")
}

fn walked_with(walked: &[OsString], comp: &OsStr) -> Vec<OsString> {
    let mut v = walked.to_vec();
    v.push(comp.to_owned());
    v
}

fn io_err(entry: &str, error: io::Error) -> UnpackError {
    UnpackError::Io {
        entry: entry.to_owned(),
        error,
    }
}

/// PAX times are decimal seconds with an optional fraction.
fn parse_pax_time(v: &[u8]) -> Option<TimeSpec> {
    let s = std::str::from_utf8(v).ok()?;
    let (secs, frac) = s.split_once('.').unwrap_or((s, ""));
    let secs: i64 = secs.parse().ok()?;
    let mut nanos: i64 = 0;
    let digits: String = frac.chars().take(9).collect();
    if !digits.is_empty() {
        nanos = digits.parse().ok()?;
        for _ in digits.len()..9 {
            nanos *= 10;
        }
    }
    Some(TimeSpec::new(secs, if secs < 0 { -nanos } else { nanos }))
}

fn lstat_at(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<Option<FileStat>> {
    match fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(Some(st)),
        Err(Errno::ENOENT) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

fn file_type(st: &FileStat) -> SFlag {
    SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits())
}

fn is_dir(st: &FileStat) -> bool {
    file_type(st) == SFlag::S_IFDIR
}

fn is_symlink(st: &FileStat) -> bool {
    file_type(st) == SFlag::S_IFLNK
}

/// An overlayfs whiteout: a character device 0/0.
fn is_whiteout(st: &FileStat) -> bool {
    file_type(st) == SFlag::S_IFCHR && st.st_rdev == 0
}

fn open_dir_at(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<OwnedFd> {
    Ok(openat(
        dir,
        name,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?)
}

fn set_opaque(dir: BorrowedFd<'_>) -> io::Result<()> {
    set_xattr_fd(dir, OsStr::new(OPAQUE_XATTR), b"y")
}

fn set_xattr_fd(fd: BorrowedFd<'_>, key: &OsStr, value: &[u8]) -> io::Result<()> {
    use xattr::FileExt;
    // A borrowed descriptor as a File without taking ownership.
    let file = File::from(fd.try_clone_to_owned()?);
    file.set_xattr(key, value)
}

/// Remove `name` in `dir`, recursively if it is a directory, never
/// following symbolic links.
pub(crate) fn remove_at(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<()> {
    let Some(st) = lstat_at(dir, name)? else {
        return Ok(());
    };
    if !is_dir(&st) {
        return match unlinkat(dir, name, UnlinkatFlags::NoRemoveDir) {
            Ok(()) | Err(Errno::ENOENT) => Ok(()),
            Err(e) => Err(e.into()),
        };
    }
    let fd = open_dir_at(dir, name)?;
    let children: Vec<OsString> = {
        let mut d = nix::dir::Dir::from_fd(fd.try_clone()?)?;
        d.iter()
            .filter_map(|e| e.ok())
            .map(|e| OsString::from_vec(e.file_name().to_bytes().to_vec()))
            .filter(|n| n != "." && n != "..")
            .collect()
    };
    for child in children {
        remove_at(fd.as_fd(), &child)?;
    }
    match unlinkat(dir, name, UnlinkatFlags::RemoveDir) {
        Ok(()) | Err(Errno::ENOENT) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Remove a directory tree at `path` without following symbolic links
/// inside it.
pub fn remove_tree(path: &Path) -> io::Result<()> {
    let parent = path.parent().unwrap_or(Path::new("/"));
    let Some(name) = path.file_name() else {
        return Err(io::Error::other("cannot remove a root"));
    };
    let pfd: OwnedFd = File::open(parent)?.into();
    remove_at(pfd.as_fd(), name)
}

/// Fuzz entry point: unpack arbitrary bytes into a scratch directory and
/// check that nothing appeared outside it. Panics if something did.
pub fn fuzz_unpack(data: &[u8]) {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let base = std::env::temp_dir().join(format!(
        "crisp-fuzz-unpack-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let root = base.join("root");
    let sentinel = base.join("outside");
    std::fs::create_dir_all(&root).expect("scratch dir");
    std::fs::write(&sentinel, b"untouched").expect("sentinel");
    let _ = unpack(data, &root, Options::default());
    let mut names: Vec<_> = std::fs::read_dir(&base)
        .expect("scratch dir")
        .map(|e| e.expect("entry").file_name())
        .collect();
    names.sort();
    assert_eq!(
        names,
        vec![OsString::from("outside"), OsString::from("root")]
    );
    assert_eq!(std::fs::read(&sentinel).expect("sentinel"), b"untouched");
    assert!(std::fs::symlink_metadata(&root).expect("root").is_dir());
    remove_tree(&base).expect("cleanup");
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
    use std::path::PathBuf;

    struct Scratch(PathBuf);

    impl Scratch {
        fn new(tag: &str) -> Self {
            use std::sync::atomic::{AtomicU64, Ordering};
            static N: AtomicU64 = AtomicU64::new(0);
            let p = std::env::temp_dir().join(format!(
                "crisp-unpack-{tag}-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            std::fs::create_dir_all(p.join("root")).unwrap();
            Self(p)
        }
        fn root(&self) -> PathBuf {
            self.0.join("root")
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = remove_tree(&self.0);
        }
    }

    /// A tar archive built entry by entry, with raw names so that hostile
    /// paths can be written.
    #[derive(Default)]
    struct Tar(Vec<u8>);

    impl Tar {
        fn header(kind: tar::EntryType, name: &str, mode: u32, size: u64) -> tar::Header {
            let mut h = tar::Header::new_gnu();
            assert!(name.len() < 100);
            h.as_mut_bytes()[..100].fill(0);
            h.as_mut_bytes()[..name.len()].copy_from_slice(name.as_bytes());
            h.set_entry_type(kind);
            h.set_mode(mode);
            h.set_size(size);
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(1_700_000_000);
            h
        }
        fn push(&mut self, mut h: tar::Header, data: &[u8]) -> &mut Self {
            h.set_cksum();
            self.0.extend_from_slice(h.as_bytes());
            self.0.extend_from_slice(data);
            let pad = (512 - data.len() % 512) % 512;
            self.0.extend(std::iter::repeat_n(0u8, pad));
            self
        }
        fn dir(&mut self, name: &str) -> &mut Self {
            self.push(Self::header(tar::EntryType::Directory, name, 0o755, 0), b"")
        }
        fn file(&mut self, name: &str, data: &[u8]) -> &mut Self {
            self.push(
                Self::header(tar::EntryType::Regular, name, 0o644, data.len() as u64),
                data,
            )
        }
        fn file_mode(&mut self, name: &str, mode: u32, uid: u64) -> &mut Self {
            let mut h = Self::header(tar::EntryType::Regular, name, mode, 1);
            h.set_uid(uid);
            h.set_gid(uid);
            self.push(h, b"x")
        }
        fn link(&mut self, kind: tar::EntryType, name: &str, target: &str) -> &mut Self {
            let mut h = Self::header(kind, name, 0o777, 0);
            let b = h.as_mut_bytes();
            b[157..257].fill(0);
            b[157..157 + target.len()].copy_from_slice(target.as_bytes());
            self.push(h, b"")
        }
        fn device(
            &mut self,
            kind: tar::EntryType,
            name: &str,
            major: u32,
            minor: u32,
        ) -> &mut Self {
            let mut h = Self::header(kind, name, 0o620, 0);
            h.set_device_major(major).unwrap();
            h.set_device_minor(minor).unwrap();
            self.push(h, b"")
        }
        /// A PAX extended header with one record, `key=value`, for the
        /// next entry.
        fn pax(&mut self, key: &str, value: &str) -> &mut Self {
            // The record's length counts its own digits.
            let body = format!(" {key}={value}\n");
            let mut len = body.len() + 1;
            while format!("{len}{body}").len() != len {
                len += 1;
            }
            let data = format!("{len}{body}");
            let h = Self::header(tar::EntryType::XHeader, "pax", 0o644, data.len() as u64);
            self.push(h, data.as_bytes())
        }
        fn pax_xattr(&mut self, key: &str, value: &str) -> &mut Self {
            self.pax(&format!("SCHILY.xattr.{key}"), value)
        }
        fn bytes(&self) -> Vec<u8> {
            let mut v = self.0.clone();
            v.extend(std::iter::repeat_n(0u8, 1024));
            v
        }
    }

    fn unpack_into(s: &Scratch, t: &Tar) -> Result<Stats> {
        unpack(&t.bytes()[..], &s.root(), Options::default())
    }

    fn is_root() -> bool {
        nix::unistd::geteuid().is_root()
    }

    /// Fails a root-only test (they are `#[ignore]`d unless asked for) that
    /// was asked for without root, instead of letting it pass unrun.
    fn require_root() {
        assert!(is_root(), "this test needs root");
    }

    #[test]
    fn files_dirs_modes_owners() {
        let s = Scratch::new("basic");
        let mut t = Tar::default();
        t.dir("./").dir("bin/").file("bin/hello", b"hi\n");
        t.file_mode("bin/suid", 0o4755, 0);
        t.file_mode("bin/sgid", 0o2711, 1000);
        t.dir("tmp/");
        t.push(
            Tar::header(tar::EntryType::Directory, "tmp/sticky/", 0o1777, 0),
            b"",
        );
        t.file("implicit/parent/file", b"p");
        let stats = unpack_into(&s, &t).unwrap();
        assert_eq!(stats.bytes, 3 + 1 + 1 + 1);
        let r = s.root();
        assert_eq!(std::fs::read(r.join("bin/hello")).unwrap(), b"hi\n");
        let m = std::fs::metadata(r.join("bin/suid")).unwrap();
        assert_eq!(m.permissions().mode() & 0o7777, 0o4755);
        let m = std::fs::metadata(r.join("bin/sgid")).unwrap();
        assert_eq!(m.permissions().mode() & 0o7777, 0o2711);
        if is_root() {
            assert_eq!((m.uid(), m.gid()), (1000, 1000));
        }
        let m = std::fs::metadata(r.join("tmp/sticky")).unwrap();
        assert_eq!(m.permissions().mode() & 0o7777, 0o1777);
        assert_eq!(m.mtime(), 1_700_000_000);
        assert_eq!(
            std::fs::metadata(r.join("bin/hello")).unwrap().mtime(),
            1_700_000_000
        );
        assert_eq!(std::fs::read(r.join("implicit/parent/file")).unwrap(), b"p");
    }

    #[test]
    #[ignore = "needs root (mknod, trusted xattrs): run as root with --include-ignored (scripts/test does)"]
    fn whiteouts_become_overlay_devices() {
        require_root();
        let s = Scratch::new("wh");
        let mut t = Tar::default();
        t.dir("etc/")
            .file("etc/.wh.passwd", b"")
            .file("etc/keep", b"k");
        t.file(".wh.gone-dir", b"");
        let stats = unpack_into(&s, &t).unwrap();
        assert_eq!(stats.entries, 4);
        let r = s.root();
        let m = std::fs::symlink_metadata(r.join("etc/passwd")).unwrap();
        assert!(m.file_type().is_char_device());
        assert_eq!(m.rdev(), 0);
        assert!(std::fs::symlink_metadata(r.join("gone-dir"))
            .unwrap()
            .file_type()
            .is_char_device());
        assert!(!r.join("etc/.wh.passwd").exists());
        assert!(!r.join(".wh.gone-dir").exists());
    }

    #[test]
    #[ignore = "needs root (mknod, trusted xattrs): run as root with --include-ignored (scripts/test does)"]
    fn opaque_dirs() {
        require_root();
        let s = Scratch::new("opq");
        let mut t = Tar::default();
        t.dir("var/")
            .dir("var/cache/")
            .file("var/cache/.wh..wh..opq", b"");
        t.file("var/cache/new", b"n");
        // A directory replacing a whiteout of the same layer is opaque.
        t.file(".wh.data", b"").dir("data/").file("data/x", b"x");
        // aufs bookkeeping is skipped.
        t.dir(".wh..wh.plnk/");
        unpack_into(&s, &t).unwrap();
        let r = s.root();
        assert_eq!(
            xattr::get(r.join("var/cache"), OPAQUE_XATTR)
                .unwrap()
                .as_deref(),
            Some(&b"y"[..])
        );
        assert!(!r.join("var/cache/.wh..wh..opq").exists());
        assert_eq!(xattr::get(r.join("var"), OPAQUE_XATTR).unwrap(), None);
        assert!(r.join("data").is_dir());
        assert_eq!(
            xattr::get(r.join("data"), OPAQUE_XATTR).unwrap().as_deref(),
            Some(&b"y"[..])
        );
        assert!(!r.join(".wh..wh.plnk").exists());
    }

    #[test]
    #[ignore = "needs root (mknod, trusted xattrs): run as root with --include-ignored (scripts/test does)"]
    fn whiteout_of_a_dir_of_the_same_layer_makes_it_opaque() {
        require_root();
        let s = Scratch::new("wh-same");
        let mut t = Tar::default();
        t.dir("d/").file("d/f", b"f").file(".wh.d", b"");
        unpack_into(&s, &t).unwrap();
        assert_eq!(
            xattr::get(s.root().join("d"), OPAQUE_XATTR)
                .unwrap()
                .as_deref(),
            Some(&b"y"[..])
        );
    }

    #[test]
    fn hard_links_symlinks_devices_fifos() {
        let s = Scratch::new("links");
        let mut t = Tar::default();
        t.file("a", b"data");
        t.link(tar::EntryType::Link, "b", "a");
        t.link(tar::EntryType::Link, "./c", "./a");
        t.link(tar::EntryType::Symlink, "sym", "a");
        t.link(tar::EntryType::Symlink, "abs", "/etc/passwd");
        t.link(tar::EntryType::Symlink, "up", "../../../../etc");
        t.device(tar::EntryType::Fifo, "fifo", 0, 0);
        if is_root() {
            t.device(tar::EntryType::Char, "null", 1, 3);
            t.device(tar::EntryType::Block, "loop0", 7, 0);
        }
        unpack_into(&s, &t).unwrap();
        let r = s.root();
        let a = std::fs::metadata(r.join("a")).unwrap();
        let b = std::fs::metadata(r.join("b")).unwrap();
        assert_eq!(a.ino(), b.ino());
        assert_eq!(a.nlink(), 3);
        assert_eq!(std::fs::read_link(r.join("sym")).unwrap(), Path::new("a"));
        // Symlinks are stored as written: they are resolved later, inside
        // the container's root.
        assert_eq!(
            std::fs::read_link(r.join("abs")).unwrap(),
            Path::new("/etc/passwd")
        );
        assert_eq!(
            std::fs::read_link(r.join("up")).unwrap(),
            Path::new("../../../../etc")
        );
        assert!(std::fs::symlink_metadata(r.join("fifo"))
            .unwrap()
            .file_type()
            .is_fifo());
        if is_root() {
            let m = std::fs::symlink_metadata(r.join("null")).unwrap();
            assert!(m.file_type().is_char_device());
            assert_eq!(m.rdev(), makedev(1, 3));
            assert_eq!(m.permissions().mode() & 0o7777, 0o620);
            let m = std::fs::symlink_metadata(r.join("loop0")).unwrap();
            assert!(m.file_type().is_block_device());
        }
    }

    #[test]
    fn later_entries_replace_earlier_ones() {
        let s = Scratch::new("replace");
        let mut t = Tar::default();
        t.file("x", b"old").file("x", b"new");
        t.dir("d/").file("d/inner", b"i").file("d", b"now a file");
        t.file("f", b"f").dir("f/");
        t.link(tar::EntryType::Symlink, "s", "x")
            .file("s", b"file over symlink");
        unpack_into(&s, &t).unwrap();
        let r = s.root();
        assert_eq!(std::fs::read(r.join("x")).unwrap(), b"new");
        assert_eq!(std::fs::read(r.join("d")).unwrap(), b"now a file");
        assert!(r.join("f").is_dir());
        assert!(!std::fs::symlink_metadata(r.join("s"))
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(std::fs::read(r.join("x")).unwrap(), b"new");
    }

    #[test]
    #[ignore = "needs root (mknod, trusted xattrs): run as root with --include-ignored (scripts/test does)"]
    fn xattrs_are_kept_but_overlay_ones_dropped() {
        require_root();
        let s = Scratch::new("xattr");
        let mut t = Tar::default();
        t.pax_xattr("user.crisp", "hello").file("f", b"f");
        t.pax_xattr("trusted.overlay.redirect", "/etc").dir("d/");
        unpack_into(&s, &t).unwrap();
        let r = s.root();
        assert_eq!(
            xattr::get(r.join("f"), "user.crisp").unwrap().as_deref(),
            Some(&b"hello"[..])
        );
        assert_eq!(
            xattr::get(r.join("d"), "trusted.overlay.redirect").unwrap(),
            None
        );
    }

    fn assert_escape(t: &Tar, what: &str) {
        let s = Scratch::new("escape");
        std::fs::write(s.0.join("victim"), b"safe").unwrap();
        let err = unpack_into(&s, t).unwrap_err();
        assert!(
            err.is_escape(),
            "{what}: expected an escape error, got {err}"
        );
        assert_eq!(
            std::fs::read(s.0.join("victim")).unwrap(),
            b"safe",
            "{what}"
        );
        let outside: Vec<_> = std::fs::read_dir(&s.0)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(outside.len(), 2, "{outside:?}");
    }

    #[test]
    fn dot_dot_above_the_root_is_refused() {
        for name in [
            "../victim",
            "a/../../victim",
            "/../victim",
            "./a/b/../../../victim",
        ] {
            let mut t = Tar::default();
            t.dir("a/").file(name, b"pwned");
            assert_escape(&t, name);
        }
        // Hard-link targets likewise, absolute or not.
        for target in ["../victim", "/../victim", "a/../../victim"] {
            let mut t = Tar::default();
            t.dir("a/").link(tar::EntryType::Link, "h", target);
            assert_escape(&t, target);
        }
    }

    #[test]
    fn names_are_resolved_lexically_below_the_root() {
        let ok = |raw: &str, want: &[&str]| {
            let got = normalize_path(raw.as_bytes()).unwrap_or_else(|e| panic!("{raw}: {e}"));
            let want: Vec<OsString> = want.iter().map(OsString::from).collect();
            assert_eq!(got, want, "{raw}");
        };
        ok("bin/sh", &["bin", "sh"]);
        ok("/bin/sh", &["bin", "sh"]);
        ok("//bin//sh/", &["bin", "sh"]);
        ok("./bin/./sh", &["bin", "sh"]);
        ok("a/../b", &["b"]);
        ok("/a/b/../../c/", &["c"]);
        ok("a/b/..", &["a"]);
        ok("..a/b..", &["..a", "b.."]);
        for root in ["", "/", ".", "./", "//", "/.", "a/..", "/a/b/../../"] {
            ok(root, &[]);
        }
        for bad in [
            "..",
            "../x",
            "/../x",
            "a/../../x",
            "./../x",
            "a/b/../../../x",
            "/..",
        ] {
            let err = normalize_path(bad.as_bytes()).unwrap_err();
            assert!(err.to_string().contains("climbs above"), "{bad}: {err}");
        }
    }

    #[test]
    fn absolute_names_land_below_the_root() {
        // What `tar -P` writes: absolute names and hard-link targets.
        let s = Scratch::new("abs");
        let mut t = Tar::default();
        t.dir("/").dir("/bin/").file("/bin/busybox", b"elf");
        t.link(tar::EntryType::Link, "/bin/sh", "/bin/busybox");
        t.link(tar::EntryType::Link, "bin/ls", "/bin/busybox");
        t.link(tar::EntryType::Link, "/bin/cat", "bin/busybox");
        t.file("/tmp/crisp-abs-victim", b"inside");
        unpack_into(&s, &t).unwrap();
        let r = s.root();
        assert!(!Path::new("/tmp/crisp-abs-victim").exists());
        assert_eq!(
            std::fs::read(r.join("tmp/crisp-abs-victim")).unwrap(),
            b"inside"
        );
        let ino = std::fs::metadata(r.join("bin/busybox")).unwrap().ino();
        for name in ["bin/sh", "bin/ls", "bin/cat"] {
            assert_eq!(
                std::fs::metadata(r.join(name)).unwrap().ino(),
                ino,
                "{name}"
            );
        }
    }

    #[test]
    fn dot_dot_inside_the_root_is_resolved() {
        let s = Scratch::new("dotdot-ok");
        let mut t = Tar::default();
        t.dir("a/").file("a/../b", b"b").file("a/x/../y", b"y");
        t.file("/c/../d", b"d");
        t.link(tar::EntryType::Link, "e", "a/../b");
        unpack_into(&s, &t).unwrap();
        let r = s.root();
        assert_eq!(std::fs::read(r.join("b")).unwrap(), b"b");
        assert_eq!(std::fs::read(r.join("a/y")).unwrap(), b"y");
        assert_eq!(std::fs::read(r.join("d")).unwrap(), b"d");
        assert_eq!(
            std::fs::metadata(r.join("e")).unwrap().ino(),
            std::fs::metadata(r.join("b")).unwrap().ino()
        );
        // The lexical resolution creates nothing on the way.
        assert!(!r.join("a/x").exists() && !r.join("c").exists());
    }

    #[test]
    fn root_entries_are_skipped() {
        // umoci writes "/", `tar -C dir .` writes "./": containerd skips
        // every entry that resolves to the root, and so do we.
        for root_name in ["/", "./", ".", "a/..", "//"] {
            let s = Scratch::new("rootentry");
            let r = s.root();
            std::fs::set_permissions(&r, std::fs::Permissions::from_mode(0o755)).unwrap();
            let before = std::fs::metadata(&r).unwrap();
            let mut t = Tar::default();
            let mut h = Tar::header(tar::EntryType::Directory, root_name, 0o700, 0);
            h.set_uid(1234);
            h.set_gid(1234);
            h.set_mtime(1);
            t.push(h, b"");
            t.dir("bin/").file("bin/x", b"x");
            let stats = unpack_into(&s, &t).unwrap();
            assert_eq!(stats.entries, 3, "{root_name}");
            let after = std::fs::metadata(&r).unwrap();
            assert_eq!(after.permissions().mode() & 0o7777, 0o755, "{root_name}");
            assert_eq!((after.uid(), after.gid()), (before.uid(), before.gid()));
            assert_ne!(after.mtime(), 1);
            assert_eq!(std::fs::read(r.join("bin/x")).unwrap(), b"x");
        }
        // Whatever its type: a file or a hard link named "/" is skipped too.
        let s = Scratch::new("rootfile");
        let mut t = Tar::default();
        t.file("/", b"not a dir").file("a", b"a");
        t.link(tar::EntryType::Link, "./", "a");
        unpack_into(&s, &t).unwrap();
        assert!(s.root().is_dir());
        assert_eq!(std::fs::read(s.root().join("a")).unwrap(), b"a");
    }

    #[test]
    fn missing_end_of_archive_is_the_end() {
        // No end-of-archive blocks.
        let s = Scratch::new("noeof");
        let mut t = Tar::default();
        t.dir("d/").file("d/f", b"0123456789");
        let raw = t.0.clone();
        unpack(&raw[..], &s.root(), Options::default()).unwrap();
        assert_eq!(std::fs::read(s.root().join("d/f")).unwrap(), b"0123456789");
        // Not even the last file's padding (umoci 0.4), or part of it.
        let data_end = raw.len() - (512 - 10);
        for cut in [data_end, data_end + 1, raw.len() - 1] {
            let s = Scratch::new("nopad");
            unpack(&raw[..cut], &s.root(), Options::default())
                .unwrap_or_else(|e| panic!("cut at {cut}: {e}"));
            assert_eq!(std::fs::read(s.root().join("d/f")).unwrap(), b"0123456789");
        }
        // One zero block instead of two.
        let s = Scratch::new("onezero");
        let mut one = raw.clone();
        one.extend([0u8; 512]);
        unpack(&one[..], &s.root(), Options::default()).unwrap();
        // A stream cut inside file data or inside a header is truncated.
        for cut in [data_end - 1, 512 + 1, raw.len() - 512 - 10 - 100] {
            let s = Scratch::new("cut");
            let err = unpack(&raw[..cut], &s.root(), Options::default()).unwrap_err();
            assert!(
                matches!(err, UnpackError::Archive(_)),
                "cut at {cut}: {err}"
            );
        }
    }

    #[test]
    fn a_file_before_its_directory() {
        let s = Scratch::new("order");
        let mut t = Tar::default();
        t.file("a/b/c/f", b"f");
        t.push(
            Tar::header(tar::EntryType::Directory, "a/b/", 0o710, 0),
            b"",
        );
        unpack_into(&s, &t).unwrap();
        let r = s.root();
        assert_eq!(std::fs::read(r.join("a/b/c/f")).unwrap(), b"f");
        let mode = |p: &str| std::fs::metadata(r.join(p)).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode("a"), 0o755);
        assert_eq!(mode("a/b"), 0o710);
        assert_eq!(mode("a/b/c"), 0o755);
        assert_eq!(
            std::fs::metadata(r.join("a/b")).unwrap().mtime(),
            1_700_000_000
        );
    }

    #[test]
    fn a_directory_over_a_directory_keeps_its_content() {
        let s = Scratch::new("dirdir");
        let mut t = Tar::default();
        t.dir("d/").file("d/keep", b"k");
        t.push(Tar::header(tar::EntryType::Directory, "/d", 0o700, 0), b"");
        t.file("f", b"old").file("./f", b"new");
        t.file("l", b"x").link(tar::EntryType::Symlink, "/l", "f");
        unpack_into(&s, &t).unwrap();
        let r = s.root();
        assert_eq!(std::fs::read(r.join("d/keep")).unwrap(), b"k");
        let m = std::fs::metadata(r.join("d")).unwrap();
        assert_eq!(m.permissions().mode() & 0o7777, 0o700);
        assert_eq!(std::fs::read(r.join("f")).unwrap(), b"new");
        assert_eq!(std::fs::read_link(r.join("l")).unwrap(), Path::new("f"));
    }

    #[test]
    fn writes_through_escaping_symlinks_are_refused() {
        use tar::EntryType::{Link, Symlink};
        /// What a case is, and how its layer is built.
        type Case = (&'static str, fn(&mut Tar));
        let cases: [Case; 7] = [
            ("relative link climbing out, then a write through it", |t| {
                t.link(Symlink, "evil", "..").file("evil/victim", b"pwned");
            }),
            ("absolute link, then a write through it", |t| {
                t.link(Symlink, "etc", "/tmp")
                    .file("etc/crisp-victim", b"pwned");
            }),
            ("chained links", |t| {
                t.dir("a/").link(Symlink, "a/b", "../c");
                t.link(Symlink, "c", "a/../..").file("a/b/victim", b"pwned");
            }),
            ("a loop", |t| {
                t.link(Symlink, "l1", "l2").link(Symlink, "l2", "l1");
                t.file("l1/x", b"x");
            }),
            ("hard link out", |t| {
                t.link(Link, "h", "../victim");
            }),
            (
                "absolute names do not make an absolute link safe to write through",
                |t| {
                    t.link(Symlink, "/etc", "/tmp")
                        .file("/etc/crisp-victim", b"pwned");
                },
            ),
            ("a hard link through a link that leads out", |t| {
                t.link(Symlink, "out", "..").link(Link, "/h", "/out/victim");
            }),
        ];
        for (what, build) in cases {
            let mut t = Tar::default();
            build(&mut t);
            assert_escape(&t, what);
            assert!(!Path::new("/tmp/crisp-victim").exists(), "{what}");
        }
    }

    #[test]
    fn symlinks_inside_the_root_are_followed_inside() {
        let s = Scratch::new("inside");
        let mut t = Tar::default();
        t.dir("usr/")
            .dir("usr/lib/")
            .link(tar::EntryType::Symlink, "lib", "usr/lib");
        t.file("lib/libc.so", b"elf");
        t.dir("x/").link(tar::EntryType::Symlink, "x/up", "../usr");
        t.file("x/up/share", b"s");
        unpack_into(&s, &t).unwrap();
        let r = s.root();
        assert_eq!(std::fs::read(r.join("usr/lib/libc.so")).unwrap(), b"elf");
        assert_eq!(std::fs::read(r.join("usr/share")).unwrap(), b"s");
        assert!(std::fs::symlink_metadata(r.join("lib"))
            .unwrap()
            .file_type()
            .is_symlink());
    }

    #[test]
    fn a_final_symlink_is_replaced_not_followed() {
        let s = Scratch::new("final");
        std::fs::write(s.0.join("victim"), b"safe").unwrap();
        let mut t = Tar::default();
        t.link(tar::EntryType::Symlink, "f", "../victim")
            .file("f", b"pwned");
        unpack_into(&s, &t).unwrap();
        assert_eq!(std::fs::read(s.0.join("victim")).unwrap(), b"safe");
        assert_eq!(std::fs::read(s.root().join("f")).unwrap(), b"pwned");
    }

    #[test]
    fn absurdly_deep_paths_are_refused() {
        let s = Scratch::new("deep");
        let mut t = Tar::default();
        // A PAX path record: 600 levels.
        let deep = "d/".repeat(600) + "f";
        t.pax("path", &deep);
        t.file("placeholder", b"x");
        let err = unpack_into(&s, &t).unwrap_err();
        assert!(err.is_escape(), "{err}");
    }

    #[test]
    fn malformed_archives_fail_cleanly() {
        let s = Scratch::new("bad");
        let garbage = vec![0x41u8; 2048];
        assert!(unpack(&garbage[..], &s.root(), Options::default()).is_err());
        // Truncated file data.
        let mut t = Tar::default();
        t.file("f", &[1u8; 4096]);
        let bytes = t.bytes();
        assert!(unpack(&bytes[..1024], &s.root(), Options::default()).is_err());
    }

    #[test]
    fn archives_that_stop_after_the_last_data_are_read_whole() {
        // As some writers leave layers: no padding after the last file's
        // data and no end-of-archive blocks (Go's archive/tar reads these).
        let s = Scratch::new("unpadded");
        let mut t = Tar::default();
        t.dir("d")
            .file("d/a", b"first")
            .file("d/b", b"last, unpadded");
        let full = t.0.clone();
        let cut = full.len() - (512 - b"last, unpadded".len());
        let stats = unpack(&full[..cut], &s.root(), Options::default()).expect("unpack");
        assert_eq!(stats.entries, 3);
        assert_eq!(
            std::fs::read(s.root().join("d/b")).unwrap(),
            b"last, unpadded"
        );
        // Padding kept, end blocks missing.
        let s = Scratch::new("no-end-blocks");
        let stats = unpack(&full[..], &s.root(), Options::default()).expect("unpack");
        assert_eq!(stats.entries, 3);
        assert_eq!(std::fs::read(s.root().join("d/a")).unwrap(), b"first");
        // One byte of the last file's data missing: refused.
        let s = Scratch::new("short-data");
        let err = unpack(&full[..cut - 1], &s.root(), Options::default()).unwrap_err();
        assert!(err.to_string().contains("truncated"), "{err}");
    }

    #[test]
    fn fuzz_entry_point_holds_on_hostile_inputs() {
        let mut t = Tar::default();
        t.link(tar::EntryType::Symlink, "evil", "..")
            .file("evil/outside-file", b"x");
        fuzz_unpack(&t.bytes());
        let mut t = Tar::default();
        t.file("../outside-file", b"x").file("ok", b"ok");
        fuzz_unpack(&t.bytes());
        fuzz_unpack(b"");
        fuzz_unpack(&[0xffu8; 1500]);
    }
}
