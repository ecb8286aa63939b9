//! From an OCI spec to the [`Plan`] the child carries out: every path,
//! flag, id and capability mask worked out in the parent, where allocation,
//! logging and error messages are free.

use std::collections::HashSet;
use std::ffi::{CString, OsStr};
use std::fs;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};
use std::str::FromStr;

use nix::errno::Errno;
use nix::fcntl::{open, OFlag};
use nix::libc;
use nix::sys::stat::Mode;
use oci_spec::runtime::{
    Capabilities, LinuxDeviceType, LinuxNamespaceType, PosixRlimitType, Process, Spec,
};
use seccompiler::BpfProgram;
use tracing::warn;

use super::child::{CapsPlan, DevicePlan, MountPlan, Plan, RootfsPlan};
use super::{cgroup, seccomp, Error};

pub(crate) fn cstring(s: impl AsRef<OsStr>) -> Result<CString, Error> {
    CString::new(s.as_ref().as_bytes())
        .map_err(|_| Error::Invalid(format!("NUL byte in {:?}", s.as_ref())))
}

fn io_err(context: impl Into<String>, e: std::io::Error) -> Error {
    Error::io(context, e)
}

fn open_ro(path: &Path) -> Result<OwnedFd, Error> {
    open(path, OFlag::O_RDONLY | OFlag::O_CLOEXEC, Mode::empty())
        .map_err(|e| Error::sys(format!("open {}", path.display()), e))
}

/// Descriptors the plan refers to by number; they must stay open in the
/// parent until the fork, and are closed in the parent right after.
#[derive(Default)]
pub(crate) struct Held {
    pub fds: Vec<OwnedFd>,
}

impl Held {
    pub fn keep(&mut self, fd: OwnedFd) -> libc::c_int {
        let raw = fd.as_raw_fd();
        self.fds.push(fd);
        raw
    }
}

fn ns_flag(t: LinuxNamespaceType) -> Option<libc::c_int> {
    Some(match t {
        LinuxNamespaceType::Mount => libc::CLONE_NEWNS,
        LinuxNamespaceType::Cgroup => libc::CLONE_NEWCGROUP,
        LinuxNamespaceType::Uts => libc::CLONE_NEWUTS,
        LinuxNamespaceType::Ipc => libc::CLONE_NEWIPC,
        LinuxNamespaceType::Pid => libc::CLONE_NEWPID,
        LinuxNamespaceType::Network => libc::CLONE_NEWNET,
        LinuxNamespaceType::User | LinuxNamespaceType::Time => return None,
    })
}

/// Namespaces to join: (open fd, CLONE_NEW* type), the mount one last.
pub(crate) type Setns = Vec<(libc::c_int, libc::c_int)>;

/// Namespaces of a new container: those joined by path, the CLONE_NEW*
/// flags of those created, and whether it has a UTS namespace.
pub(crate) fn namespaces_for_create(
    spec: &Spec,
    held: &mut Held,
) -> Result<(Setns, libc::c_int, bool), Error> {
    let mut setns = Vec::new();
    let mut mnt = None;
    let mut unshare = 0;
    let mut has_uts = false;
    for ns in spec
        .linux()
        .as_ref()
        .and_then(|l| l.namespaces().as_ref())
        .into_iter()
        .flatten()
    {
        let Some(flag) = ns_flag(ns.typ()) else {
            return Err(Error::Unsupported(format!(
                "{:?} namespaces are not supported",
                ns.typ()
            )));
        };
        if flag == libc::CLONE_NEWUTS {
            has_uts = true;
        }
        match ns.path() {
            Some(p) if !p.as_os_str().is_empty() => {
                let fd = held.keep(open_ro(p)?);
                if flag == libc::CLONE_NEWNS {
                    mnt = Some((fd, flag));
                } else {
                    setns.push((fd, flag));
                }
            }
            _ => unshare |= flag,
        }
    }
    // The container's mounts and pivot_root must never happen in the
    // caller's mount namespace.
    if mnt.is_none() && unshare & libc::CLONE_NEWNS == 0 {
        return Err(Error::Invalid("the spec has no mount namespace".into()));
    }
    // Joining a mount namespace changes our root: last.
    setns.extend(mnt);
    Ok((setns, unshare, has_uts))
}

/// Namespaces of a running container, for exec: each of its namespaces
/// that differs from ours.
pub(crate) fn namespaces_for_exec(pid: i32, held: &mut Held) -> Result<Setns, Error> {
    let mut out = Vec::new();
    for (name, flag) in [
        ("cgroup", libc::CLONE_NEWCGROUP),
        ("ipc", libc::CLONE_NEWIPC),
        ("uts", libc::CLONE_NEWUTS),
        ("net", libc::CLONE_NEWNET),
        ("pid", libc::CLONE_NEWPID),
        ("mnt", libc::CLONE_NEWNS),
    ] {
        let theirs = PathBuf::from(format!("/proc/{pid}/ns/{name}"));
        let ours = PathBuf::from(format!("/proc/self/ns/{name}"));
        let (Ok(t), Ok(o)) = (fs::metadata(&theirs), fs::metadata(&ours)) else {
            if !theirs.exists() && Path::new(&format!("/proc/{pid}")).exists() {
                continue; // namespace type unknown to this kernel
            }
            return Err(Error::sys(format!("container process {pid}"), Errno::ESRCH));
        };
        if (t.dev(), t.ino()) == (o.dev(), o.ino()) {
            continue;
        }
        out.push((held.keep(open_ro(&theirs)?), flag));
    }
    Ok(out)
}

/// Parsed OCI mount options.
#[derive(Default, Debug, PartialEq)]
pub(crate) struct MountOptions {
    pub flags: libc::c_ulong,
    pub clear: libc::c_ulong,
    pub propagation: libc::c_ulong,
    pub bind: bool,
    /// `rro`: read-only, every submount too (`mount_setattr`).
    pub recursive_readonly: bool,
    pub data: Vec<String>,
}

pub(crate) fn parse_options(opts: &[String]) -> MountOptions {
    let mut m = MountOptions::default();
    for o in opts {
        let (set, clear): (libc::c_ulong, libc::c_ulong) = match o.as_str() {
            "ro" => (libc::MS_RDONLY, 0),
            "rro" => {
                m.recursive_readonly = true;
                (libc::MS_RDONLY, 0)
            }
            "rw" => (0, libc::MS_RDONLY),
            "nosuid" => (libc::MS_NOSUID, 0),
            "suid" => (0, libc::MS_NOSUID),
            "nodev" => (libc::MS_NODEV, 0),
            "dev" => (0, libc::MS_NODEV),
            "noexec" => (libc::MS_NOEXEC, 0),
            "exec" => (0, libc::MS_NOEXEC),
            "sync" => (libc::MS_SYNCHRONOUS, 0),
            "async" => (0, libc::MS_SYNCHRONOUS),
            "dirsync" => (libc::MS_DIRSYNC, 0),
            "mand" => (libc::MS_MANDLOCK, 0),
            "nomand" => (0, libc::MS_MANDLOCK),
            "noatime" => (libc::MS_NOATIME, 0),
            "atime" => (0, libc::MS_NOATIME),
            "nodiratime" => (libc::MS_NODIRATIME, 0),
            "diratime" => (0, libc::MS_NODIRATIME),
            "relatime" => (libc::MS_RELATIME, 0),
            "norelatime" => (0, libc::MS_RELATIME),
            "strictatime" => (libc::MS_STRICTATIME, 0),
            "nostrictatime" => (0, libc::MS_STRICTATIME),
            "bind" => {
                m.bind = true;
                (0, 0)
            }
            "rbind" => {
                m.bind = true;
                (libc::MS_REC, 0)
            }
            "private" => {
                m.propagation = libc::MS_PRIVATE;
                (0, 0)
            }
            "rprivate" => {
                m.propagation = libc::MS_PRIVATE | libc::MS_REC;
                (0, 0)
            }
            "slave" => {
                m.propagation = libc::MS_SLAVE;
                (0, 0)
            }
            "rslave" => {
                m.propagation = libc::MS_SLAVE | libc::MS_REC;
                (0, 0)
            }
            "shared" => {
                m.propagation = libc::MS_SHARED;
                (0, 0)
            }
            "rshared" => {
                m.propagation = libc::MS_SHARED | libc::MS_REC;
                (0, 0)
            }
            "unbindable" => {
                m.propagation = libc::MS_UNBINDABLE;
                (0, 0)
            }
            "runbindable" => {
                m.propagation = libc::MS_UNBINDABLE | libc::MS_REC;
                (0, 0)
            }
            other => {
                m.data.push(other.to_string());
                (0, 0)
            }
        };
        m.flags = (m.flags | set) & !clear;
        m.clear |= clear;
    }
    m
}

/// `dest` (absolute, in the container) as a host path under `root`,
/// following symlinks the way the container would see them (an absolute
/// link target is relative to `root`, `..` never leaves it). Below a
/// directory that an earlier mount covers (`covered`, container paths), the
/// image's files are hidden, so the rest is taken literally.
pub(crate) fn resolve_in_root(root: &Path, dest: &Path, covered: &[PathBuf]) -> PathBuf {
    let mut parts: Vec<PathBuf> = Vec::new(); // resolved container components
    let mut pending: Vec<std::ffi::OsString> = dest
        .components()
        .rev()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_os_string()),
            Component::ParentDir => Some("..".into()),
            _ => None,
        })
        .collect();
    let mut hops = 0;
    while let Some(name) = pending.pop() {
        if name == ".." {
            parts.pop();
            continue;
        }
        let mut container: PathBuf = PathBuf::from("/");
        container.extend(parts.iter());
        container.push(&name);
        let literal = covered
            .iter()
            .any(|c| container.starts_with(c) && container != *c);
        let host = root.join(container.strip_prefix("/").unwrap_or(&container));
        if !literal && hops < 40 {
            if let Ok(target) = fs::read_link(&host) {
                hops += 1;
                if target.is_absolute() {
                    parts.clear();
                }
                for c in target.components().rev() {
                    match c {
                        Component::Normal(n) => pending.push(n.to_os_string()),
                        Component::ParentDir => pending.push("..".into()),
                        _ => {}
                    }
                }
                continue;
            }
        }
        parts.push(PathBuf::from(name));
    }
    let mut out = root.to_path_buf();
    out.extend(parts.iter());
    out
}

/// The mount point holding each of `paths` (longest prefix in mountinfo).
fn mount_points_of(paths: &[&Path]) -> Vec<PathBuf> {
    let mi = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let points: Vec<PathBuf> = cgroup::parse_mountinfo(&mi)
        .into_iter()
        .map(|(mp, _, _)| PathBuf::from(mp))
        .collect();
    paths
        .iter()
        .map(|path| {
            points
                .iter()
                .filter(|mp| path.starts_with(mp))
                .max_by_key(|mp| mp.as_os_str().len())
                .cloned()
                .unwrap_or_else(|| PathBuf::from("/"))
        })
        .collect()
}

fn mkdirs_between(root: &Path, target: &Path) -> Result<Vec<CString>, Error> {
    let mut out = Vec::new();
    let Ok(rel) = target.strip_prefix(root) else {
        return Ok(out);
    };
    let mut cur = root.to_path_buf();
    let comps: Vec<_> = rel.components().collect();
    for c in comps.iter().take(comps.len().saturating_sub(1)) {
        cur.push(c);
        out.push(cstring(&cur)?);
    }
    Ok(out)
}

const DEFAULT_DEVICES: &[(&str, u64, u64)] = &[
    ("/dev/null", 1, 3),
    ("/dev/zero", 1, 5),
    ("/dev/full", 1, 7),
    ("/dev/random", 1, 8),
    ("/dev/urandom", 1, 9),
    ("/dev/tty", 5, 0),
];

pub(crate) fn rootfs_plan(spec: &Spec) -> Result<RootfsPlan, Error> {
    let root_spec = spec
        .root()
        .as_ref()
        .ok_or_else(|| Error::Invalid("spec has no root".into()))?;
    let root = fs::canonicalize(root_spec.path())
        .map_err(|e| io_err(format!("rootfs {}", root_spec.path().display()), e))?;
    let linux = spec.linux().as_ref();
    // As runc: `rshared` makes the whole tree shared before the binds, so
    // that a bind of a shared host mount joins the host's peer group (a
    // bind of a slave would only be another slave) and mounts propagate
    // both ways; the default, `rslave`, lets nothing out.
    let (propagation, shared_after_pivot) = match linux
        .and_then(|l| l.rootfs_propagation().as_deref())
        .unwrap_or("")
    {
        "private" | "rprivate" => (libc::MS_PRIVATE | libc::MS_REC, false),
        "shared" | "rshared" => (libc::MS_SHARED | libc::MS_REC, true),
        _ => (libc::MS_SLAVE | libc::MS_REC, false),
    };
    // The mount holding the rootfs (the overlay itself when the rootfs is
    // a mount point) and the one holding its parent are made private:
    // pivot_root refuses a shared parent, and the bind of the rootfs onto
    // itself, and every mount on it, must not propagate to the host.
    let parent = root.parent().unwrap_or(Path::new("/"));
    let mut private_mounts: Vec<CString> = Vec::new();
    for mp in mount_points_of(&[&root, parent]) {
        let mp = cstring(mp)?;
        if !private_mounts.contains(&mp) {
            private_mounts.push(mp);
        }
    }

    let mut mounts = Vec::new();
    let mut covered: Vec<PathBuf> = Vec::new();
    let mut dev_mounted = false;
    let mut pts_mounted = false;
    for m in spec.mounts().iter().flatten() {
        let dest = m.destination();
        if !dest.is_absolute() {
            return Err(Error::Invalid(format!(
                "mount destination {} is not absolute",
                dest.display()
            )));
        }
        let opts = parse_options(m.options().as_deref().unwrap_or(&[]));
        let typ = m.typ().as_deref().unwrap_or("");
        if typ == "cgroup" || typ == "cgroup2" {
            cgroup_mounts(spec, &root, dest, &covered, &mut mounts)?;
            covered.push(dest.clone());
            continue;
        }
        let target = resolve_in_root(&root, dest, &covered);
        let bind = opts.bind || typ == "bind";
        let source = m.source().clone().unwrap_or_default();
        let mut target_is_file = false;
        if bind {
            let md = fs::metadata(&source)
                .map_err(|e| io_err(format!("mount source {}", source.display()), e))?;
            target_is_file = !md.is_dir();
        }
        let data = (!opts.data.is_empty()).then(|| opts.data.join(","));
        let (flags, remount) = if bind {
            let extra = opts.flags & !libc::MS_REC;
            (
                libc::MS_BIND | (opts.flags & libc::MS_REC),
                (extra != 0).then_some(extra),
            )
        } else {
            (opts.flags, None)
        };
        mounts.push(MountPlan {
            mkdirs: mkdirs_between(&root, &target)?,
            target: cstring(&target)?,
            target_is_file,
            source: cstring(&source)?,
            fstype: if bind { None } else { Some(cstring(typ)?) },
            flags,
            data: data.map(cstring).transpose()?,
            remount,
            propagation: opts.propagation,
            recursive_readonly: opts.recursive_readonly,
        });
        if dest == Path::new("/dev") {
            dev_mounted = true;
        }
        if dest == Path::new("/dev/pts") {
            pts_mounted = true;
        }
        covered.push(dest.clone());
    }

    let mut devices = Vec::new();
    let mut device_dirs = Vec::new();
    let mut symlinks = Vec::new();
    if dev_mounted {
        let host = |p: &str| root.join(p.trim_start_matches('/'));
        let mut seen = HashSet::new();
        for d in linux
            .and_then(|l| l.devices().as_ref())
            .into_iter()
            .flatten()
        {
            let kind = match d.typ() {
                LinuxDeviceType::C | LinuxDeviceType::U => libc::S_IFCHR,
                LinuxDeviceType::B => libc::S_IFBLK,
                LinuxDeviceType::P => libc::S_IFIFO,
                LinuxDeviceType::A => continue,
            };
            seen.insert(d.path().clone());
            let host_path = host(&d.path().to_string_lossy());
            for dir in mkdirs_between(&root, &host_path)? {
                if !device_dirs.contains(&dir) {
                    device_dirs.push(dir);
                }
            }
            devices.push(DevicePlan {
                path: cstring(&host_path)?,
                mode: kind | (d.file_mode().unwrap_or(0o666) & 0o7777),
                dev: libc::makedev(d.major() as u32, d.minor() as u32),
                uid: d.uid().unwrap_or(0),
                gid: d.gid().unwrap_or(0),
            });
        }
        for (path, major, minor) in DEFAULT_DEVICES {
            if seen.contains(Path::new(path)) {
                continue;
            }
            devices.push(DevicePlan {
                path: cstring(host(path))?,
                mode: libc::S_IFCHR | 0o666,
                dev: libc::makedev(*major as u32, *minor as u32),
                uid: 0,
                gid: 0,
            });
        }
        for (target, link) in [
            ("/proc/self/fd", "/dev/fd"),
            ("/proc/self/fd/0", "/dev/stdin"),
            ("/proc/self/fd/1", "/dev/stdout"),
            ("/proc/self/fd/2", "/dev/stderr"),
            ("/proc/kcore", "/dev/core"),
        ] {
            symlinks.push((cstring(target)?, cstring(host(link))?));
        }
        if pts_mounted {
            symlinks.push((cstring("pts/ptmx")?, cstring(host("/dev/ptmx"))?));
        }
    }

    let mut sysctls = Vec::new();
    if let Some(map) = linux.and_then(|l| l.sysctl().as_ref()) {
        let mut keys: Vec<_> = map.keys().collect();
        keys.sort();
        for k in keys {
            if k.contains("..") || k.starts_with('/') {
                return Err(Error::Invalid(format!("sysctl {k:?}: invalid name")));
            }
            let path = format!("/proc/sys/{}", k.replace('.', "/"));
            sysctls.push((cstring(path)?, cstring(&map[k])?));
        }
    }
    let list = |v: Option<&Vec<String>>| -> Result<Vec<CString>, Error> {
        v.into_iter().flatten().map(cstring).collect()
    };
    Ok(RootfsPlan {
        root: cstring(&root)?,
        private_mounts,
        propagation,
        shared_after_pivot,
        mounts,
        device_dirs,
        devices,
        symlinks,
        sysctls,
        masked: list(linux.and_then(|l| l.masked_paths().as_ref()))?,
        readonly: list(linux.and_then(|l| l.readonly_paths().as_ref()))?,
        readonly_root: root_spec.readonly().unwrap_or(false),
    })
}

/// `/sys/fs/cgroup` in the container: its own cgroup, read-only. On v2 a
/// bind of its directory; on v1 a tmpfs with a bind of its directory in
/// each hierarchy (what runc does without a cgroup namespace).
fn cgroup_mounts(
    spec: &Spec,
    root: &Path,
    dest: &Path,
    covered: &[PathBuf],
    mounts: &mut Vec<MountPlan>,
) -> Result<(), Error> {
    let path = spec
        .linux()
        .as_ref()
        .and_then(|l| l.cgroups_path().as_ref())
        .map(|p| p.to_string_lossy().into_owned());
    let Some(path) = path else {
        return Ok(());
    };
    let target = resolve_in_root(root, dest, covered);
    let ro = libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
    let cg = cgroup::detect()?;
    let bind = |src: PathBuf, target: PathBuf| -> Result<MountPlan, Error> {
        Ok(MountPlan {
            mkdirs: mkdirs_between(root, &target)?,
            target: cstring(&target)?,
            target_is_file: false,
            source: cstring(src)?,
            fstype: None,
            flags: libc::MS_BIND,
            data: None,
            remount: Some(ro),
            propagation: 0,
            recursive_readonly: false,
        })
    };
    let dirs: Vec<PathBuf> = cg
        .procs_files(&path)
        .into_iter()
        .filter_map(|f| f.parent().map(Path::to_path_buf))
        .collect();
    if cg.version() == "v2" {
        if let Some(d) = dirs.first() {
            mounts.push(bind(d.clone(), target)?);
        }
        return Ok(());
    }
    mounts.push(MountPlan {
        mkdirs: mkdirs_between(root, &target)?,
        target: cstring(&target)?,
        target_is_file: false,
        source: cstring("tmpfs")?,
        fstype: Some(cstring("tmpfs")?),
        flags: libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
        data: Some(cstring("mode=755")?),
        remount: None,
        propagation: 0,
        recursive_readonly: false,
    });
    let rel = path.trim_start_matches('/');
    for d in dirs {
        // .../<hierarchy mount>/<path>: the hierarchy's name is the mount
        // point's last component.
        let mount_dir = d
            .ancestors()
            .nth(Path::new(rel).components().count())
            .and_then(Path::file_name)
            .map(Path::new)
            .unwrap_or(Path::new("unknown"));
        mounts.push(bind(d.clone(), target.join(mount_dir))?);
    }
    // Then the tmpfs itself read-only.
    mounts.push(MountPlan {
        mkdirs: Vec::new(),
        target: cstring(&target)?,
        target_is_file: false,
        source: cstring("")?,
        fstype: None,
        flags: libc::MS_REMOUNT | ro,
        data: None,
        remount: None,
        propagation: 0,
        recursive_readonly: false,
    });
    Ok(())
}

fn rlimit_resource(t: PosixRlimitType) -> libc::c_int {
    use PosixRlimitType::*;
    (match t {
        RlimitCpu => libc::RLIMIT_CPU,
        RlimitFsize => libc::RLIMIT_FSIZE,
        RlimitData => libc::RLIMIT_DATA,
        RlimitStack => libc::RLIMIT_STACK,
        RlimitCore => libc::RLIMIT_CORE,
        RlimitRss => libc::RLIMIT_RSS,
        RlimitNproc => libc::RLIMIT_NPROC,
        RlimitNofile => libc::RLIMIT_NOFILE,
        RlimitMemlock => libc::RLIMIT_MEMLOCK,
        RlimitAs => libc::RLIMIT_AS,
        RlimitLocks => libc::RLIMIT_LOCKS,
        RlimitSigpending => libc::RLIMIT_SIGPENDING,
        RlimitMsgqueue => libc::RLIMIT_MSGQUEUE,
        RlimitNice => libc::RLIMIT_NICE,
        RlimitRtprio => libc::RLIMIT_RTPRIO,
        RlimitRttime => libc::RLIMIT_RTTIME,
    }) as libc::c_int
}

fn has_cap(cap: caps::Capability) -> bool {
    caps::has_cap(None, caps::CapSet::Effective, cap).unwrap_or(false)
}

/// Limits above our own hard limit need CAP_SYS_RESOURCE: without it, keep
/// ours and say so rather than fail the container.
fn rlimits(process: &Process) -> Vec<(libc::c_int, libc::rlim_t, libc::rlim_t)> {
    let can_raise = has_cap(caps::Capability::CAP_SYS_RESOURCE);
    let mut out = Vec::new();
    for r in process.rlimits().iter().flatten() {
        let res = rlimit_resource(r.typ());
        let (mut soft, mut hard) = (r.soft(), r.hard());
        if !can_raise {
            let mut cur = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            // SAFETY: getrlimit into a local.
            if unsafe { libc::getrlimit(res as _, &mut cur) } == 0 && hard > cur.rlim_max {
                warn!(
                    resource = ?r.typ(),
                    requested = hard,
                    kept = cur.rlim_max,
                    "rlimit above crispd's own hard limit without CAP_SYS_RESOURCE: clamped"
                );
                hard = cur.rlim_max;
                soft = soft.min(hard);
            }
        }
        out.push((res, soft, hard));
    }
    out
}

/// oom_score_adj below crispd's own needs CAP_SYS_RESOURCE: clamp.
fn oom_score_adj(process: &Process) -> Result<Option<CString>, Error> {
    let Some(mut adj) = process.oom_score_adj() else {
        return Ok(None);
    };
    adj = adj.clamp(-1000, 1000);
    if !has_cap(caps::Capability::CAP_SYS_RESOURCE) {
        let own: i32 = fs::read_to_string("/proc/self/oom_score_adj")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0);
        if adj < own {
            warn!(
                requested = adj,
                kept = own,
                "oom_score_adj below crispd's own without CAP_SYS_RESOURCE: clamped"
            );
            adj = own;
        }
    }
    Ok(Some(cstring(adj.to_string())?))
}

pub(crate) fn cap_index(c: &oci_spec::runtime::Capability) -> Option<u32> {
    let name = format!("CAP_{c}");
    caps::Capability::from_str(&name)
        .ok()
        .map(|c| c.index() as u32)
}

fn mask(set: &Option<Capabilities>) -> u64 {
    set.iter()
        .flatten()
        .filter_map(cap_index)
        .fold(0u64, |m, i| m | (1u64 << i))
}

fn caps_plan(process: &Process) -> Option<CapsPlan> {
    let c = process.capabilities().as_ref()?;
    let last_cap: u32 = fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(40);
    // We can only hand out what we have.
    let ours = caps::read(None, caps::CapSet::Permitted)
        .map(|s| s.iter().fold(0u64, |m, c| m | c.bitmask()))
        .unwrap_or(u64::MAX);
    let ambient_mask = mask(c.ambient());
    let wanted = mask(c.permitted()) | mask(c.effective()) | mask(c.inheritable()) | ambient_mask;
    if wanted & !ours != 0 {
        warn!(
            missing = format!("{:#x}", wanted & !ours),
            "capabilities crispd does not have itself are left out"
        );
    }
    let ambient: Vec<u32> = (0..64)
        .filter(|i| ambient_mask & ours & (1u64 << i) != 0)
        .collect();
    Some(CapsPlan {
        bounding: mask(c.bounding()),
        effective: mask(c.effective()) & ours,
        permitted: (mask(c.permitted()) | ambient_mask) & ours,
        inheritable: (mask(c.inheritable()) | ambient_mask) & ours,
        ambient,
        last_cap,
    })
}

const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Everything about the process itself (create and exec alike).
/// `seccomp`: the spec's seccomp profile compiled already, if the caller
/// has it; else it is compiled here.
pub(crate) fn process_plan(
    spec: &Spec,
    process: &Process,
    seccomp: Option<Vec<BpfProgram>>,
    plan: &mut Plan,
) -> Result<(), Error> {
    let args = process.args().as_deref().unwrap_or(&[]);
    let argv0 = args
        .first()
        .ok_or_else(|| Error::Invalid("process has no args".into()))?;
    let env = process.env().as_deref().unwrap_or(&[]);
    plan.argv = args.iter().map(cstring).collect::<Result<_, _>>()?;
    plan.envp = env.iter().map(cstring).collect::<Result<_, _>>()?;
    plan.argv_ptrs = plan
        .argv
        .iter()
        .map(|c| c.as_ptr())
        .chain([std::ptr::null()])
        .collect();
    plan.envp_ptrs = plan
        .envp
        .iter()
        .map(|c| c.as_ptr())
        .chain([std::ptr::null()])
        .collect();
    plan.argv0 = cstring(argv0)?;
    plan.exe_candidates = if argv0.contains('/') {
        vec![cstring(argv0)?]
    } else {
        let path = env
            .iter()
            .rev()
            .find_map(|e| e.strip_prefix("PATH="))
            .unwrap_or(DEFAULT_PATH);
        path.split(':')
            .map(|d| if d.is_empty() { "." } else { d })
            .map(|d| cstring(format!("{d}/{argv0}")))
            .collect::<Result<_, _>>()?
    };
    let cwd = process.cwd();
    if !cwd.is_absolute() {
        return Err(Error::Invalid(format!(
            "cwd {} is not absolute",
            cwd.display()
        )));
    }
    plan.cwd = cstring(cwd)?;
    plan.terminal = process.terminal().unwrap_or(false);
    let user = process.user();
    plan.uid = user.uid();
    plan.gid = user.gid();
    plan.groups = user.additional_gids().clone().unwrap_or_default();
    plan.umask = user.umask();
    plan.rlimits = rlimits(process);
    plan.caps = caps_plan(process);
    plan.no_new_privs = process.no_new_privileges().unwrap_or(false);
    plan.seccomp = match (
        spec.linux().as_ref().and_then(|l| l.seccomp().as_ref()),
        seccomp,
    ) {
        (Some(_), Some(compiled)) => compiled,
        (Some(profile), None) => seccomp::compile_cached(profile)?.to_vec(),
        (None, _) => Vec::new(),
    };
    plan.oom_score_adj = oom_score_adj(process)?;
    Ok(())
}

pub(crate) fn empty_plan() -> Plan {
    Plan {
        keep_fds: Vec::new(),
        stdin: -1,
        stdout: -1,
        stderr: -1,
        terminal: false,
        sync_w: -1,
        start_r: -1,
        cgroup_procs: Vec::new(),
        setns: Vec::new(),
        unshare: 0,
        oom_score_adj: None,
        rootfs: None,
        hostname: None,
        rlimits: Vec::new(),
        uid: 0,
        gid: 0,
        groups: Vec::new(),
        umask: None,
        caps: None,
        no_new_privs: false,
        seccomp: Vec::new(),
        cwd: CString::default(),
        argv0: CString::default(),
        exe_candidates: Vec::new(),
        argv: Vec::new(),
        argv_ptrs: Vec::new(),
        envp: Vec::new(),
        envp_ptrs: Vec::new(),
    }
}

/// Open each file of `Cgroups::self_attach_files` for writing (the
/// intermediate child writes `0` to each).
pub(crate) fn cgroup_fds(files: &[PathBuf], held: &mut Held) -> Result<Vec<libc::c_int>, Error> {
    files
        .iter()
        .map(|f| {
            open(f, OFlag::O_WRONLY | OFlag::O_CLOEXEC, Mode::empty())
                .map(|fd| held.keep(fd))
                .map_err(|e| Error::sys(format!("open {}", f.display()), e))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options() {
        let o = parse_options(&["rbind".into(), "ro".into(), "rslave".into()]);
        assert!(o.bind);
        assert_eq!(o.flags, libc::MS_REC | libc::MS_RDONLY);
        assert_eq!(o.propagation, libc::MS_SLAVE | libc::MS_REC);
        assert!(!o.recursive_readonly);
        let o = parse_options(&["rbind".into(), "rprivate".into(), "rro".into()]);
        assert_eq!(o.flags, libc::MS_REC | libc::MS_RDONLY);
        assert!(o.recursive_readonly);
        let o = parse_options(&["nosuid".into(), "mode=755".into(), "size=65536k".into()]);
        assert_eq!(o.flags, libc::MS_NOSUID);
        assert_eq!(o.data, ["mode=755", "size=65536k"]);
    }

    #[test]
    fn resolve_follows_links_inside_root() {
        let dir = std::env::temp_dir().join(format!("crisp-resolve-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("etc")).unwrap();
        fs::create_dir_all(dir.join("run/systemd")).unwrap();
        std::os::unix::fs::symlink("/run/systemd/resolv.conf", dir.join("etc/resolv.conf"))
            .unwrap();
        std::os::unix::fs::symlink("../../../../../..", dir.join("etc/up")).unwrap();
        assert_eq!(
            resolve_in_root(&dir, Path::new("/etc/resolv.conf"), &[]),
            dir.join("run/systemd/resolv.conf")
        );
        assert_eq!(
            resolve_in_root(&dir, Path::new("/etc/up/x"), &[]),
            dir.join("x")
        );
        // Below an earlier mount, literally.
        assert_eq!(
            resolve_in_root(
                &dir,
                Path::new("/etc/resolv.conf"),
                &[PathBuf::from("/etc")]
            ),
            dir.join("etc/resolv.conf")
        );
        fs::remove_dir_all(&dir).unwrap();
    }
}
