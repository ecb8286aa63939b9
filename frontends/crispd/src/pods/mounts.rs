//! The host's part of a container's CRI mounts (the CRI rules themselves
//! are checked in the core, `crisp_core::cri::mounts`): whether the host
//! can give a mount the propagation it asks for, whether the kernel can
//! make a bind recursively read-only, and image volumes.
//!
//! An image volume is mounted, as containerd does, as an overlay of the
//! image's layers at `<runtime_dir>/containers/<id>/volumes/<image id>`
//! (its empty upper layer under `<state_dir>/containers/<id>/volumes/`),
//! made read-only, and bound read-only into the container from there (or
//! from its `image_sub_path`); once per image and container, however many
//! mounts use it. RemoveContainer unmounts it.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crisp_core::cri::ImageVolume;
use crisp_core::grpc::Status;
use crisp_executor::{self as executor, rootfs};
use crisp_proto::cri;
use nix::errno::Errno;
use nix::libc;
use nix::mount::{mount, MsFlags};

use super::{exec_status, internal, Host};

/// Whether this kernel has `mount_setattr` (Linux 5.12), which recursive
/// read-only mounts need. Asked once.
pub fn recursive_read_only_supported() -> bool {
    static SUPPORTED: OnceLock<bool> = OnceLock::new();
    *SUPPORTED.get_or_init(|| {
        // An invalid call: EBADF or EINVAL where the system call exists.
        // SAFETY: a valid empty C string and null attributes of size 0,
        // which the kernel refuses without reading.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_mount_setattr,
                -1,
                c"".as_ptr(),
                0,
                std::ptr::null::<u8>(),
                0,
            )
        };
        rc == 0 || Errno::last() != Errno::ENOSYS
    })
}

/// The propagation fields of the mount holding `path`, from
/// `/proc/self/mountinfo`: (mount point, optional fields such as
/// `shared:3 master:1`).
fn mount_of(path: &Path, mountinfo: &str) -> Option<(String, String)> {
    let mut best: Option<(String, String)> = None;
    for line in mountinfo.lines() {
        let Some((pre, _)) = line.split_once(" - ") else {
            continue;
        };
        let fields: Vec<&str> = pre.split(' ').collect();
        let Some(mount_point) = fields.get(4).map(|m| unescape(m)) else {
            continue;
        };
        let optional = fields.get(6..).map(|o| o.join(" ")).unwrap_or_default();
        // A later line over the same mount point is mounted on top.
        if path.starts_with(&mount_point)
            && best
                .as_ref()
                .is_none_or(|(b, _)| mount_point.len() >= b.len())
        {
            best = Some((mount_point, optional));
        }
    }
    best
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(u8::is_ascii_digit) {
            let n = b[i + 1..i + 4]
                .iter()
                .fold(0u32, |n, d| n * 8 + u32::from(d - b'0'));
            out.push(n as u8);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `path` with its symbolic links resolved, as far as it exists (a
/// missing host path is created later, as containerd does).
fn resolve_existing(path: &Path) -> PathBuf {
    let mut rest = Vec::new();
    let mut cur = path.to_path_buf();
    loop {
        if let Ok(real) = fs::canonicalize(&cur) {
            let mut out = real;
            out.extend(rest.iter().rev());
            return out;
        }
        match (cur.file_name().map(|n| n.to_os_string()), cur.parent()) {
            (Some(name), Some(parent)) => {
                rest.push(name);
                cur = parent.to_path_buf();
            }
            _ => return path.to_path_buf(),
        }
    }
}

/// What the host must offer for each mount: a shared source mount for
/// `PROPAGATION_BIDIRECTIONAL`, a shared or slave one for
/// `PROPAGATION_HOST_TO_CONTAINER` (else mounts could not propagate, and
/// containerd refuses the same), and `mount_setattr` for
/// `recursive_read_only`.
pub fn check_host(mounts: &[cri::Mount]) -> Result<(), Status> {
    let needs_mountinfo = mounts
        .iter()
        .any(|m| m.propagation != cri::MountPropagation::PropagationPrivate as i32);
    let mountinfo = if needs_mountinfo {
        fs::read_to_string("/proc/self/mountinfo")
            .map_err(|e| internal("read /proc/self/mountinfo", e))?
    } else {
        String::new()
    };
    for (i, m) in mounts.iter().enumerate() {
        if m.recursive_read_only && !recursive_read_only_supported() {
            return Err(Status::invalid_argument(format!(
                "mounts[{i}].recursive_read_only ({:?}): this kernel has no mount_setattr (Linux 5.12)",
                m.container_path
            )));
        }
        let (want, what) = match cri::MountPropagation::try_from(m.propagation) {
            Ok(cri::MountPropagation::PropagationBidirectional) => (&["shared:"][..], "shared"),
            Ok(cri::MountPropagation::PropagationHostToContainer) => {
                (&["shared:", "master:"][..], "shared or slave")
            }
            _ => continue,
        };
        let source = resolve_existing(Path::new(&m.host_path));
        let (mount_point, optional) = mount_of(&source, &mountinfo).unwrap_or_default();
        if !optional
            .split(' ')
            .any(|o| want.iter().any(|w| o.starts_with(w)))
        {
            return Err(Status::failed_precondition(format!(
                "mounts[{i}].propagation ({:?}): host path {} is on mount {mount_point}, which is not a {what} mount (make it one, e.g. `mount --make-rshared {mount_point}`)",
                m.container_path,
                source.display(),
            )));
        }
    }
    Ok(())
}

fn volumes_dir(host: &Host, id: &str) -> PathBuf {
    host.ctr_dir(id).join("volumes")
}

/// Mount the container's image volumes on the host; their mounts'
/// `host_path` is then where each is, so the spec binds them like any
/// host path. An image that is not in the store fails, as with
/// containerd: image volumes are pulled beforehand (kubelet does).
pub fn mount_image_volumes(
    host: &Host,
    id: &str,
    mounts: &mut [cri::Mount],
) -> Result<Vec<ImageVolume>, Status> {
    let mut out = Vec::new();
    let mut mounted: Vec<String> = Vec::new();
    for (i, m) in mounts.iter_mut().enumerate() {
        let Some(image) = &m.image else { continue };
        let (record, layers, _) = host.images.resolve(&image.image).map_err(|e| {
            let st = e.to_status();
            Status::new(
                st.code,
                format!(
                    "mounts[{i}].image ({:?}): {} (image volumes must be pulled first)",
                    m.container_path, st.message
                ),
            )
        })?;
        // One mount per image, however many mounts use it.
        let name = record.id.rsplit(':').next().unwrap_or(&record.id);
        let target = volumes_dir(host, id).join(name);
        if !mounted.contains(&record.id) {
            let state = host.ctr_state_dir(id).join("volumes").join(name);
            rootfs::mount_overlay(&rootfs::Overlay {
                lower: layers,
                upper: state.join("upper"),
                work: state.join("work"),
                target: target.clone(),
            })
            .map_err(|e| exec_status(&format!("mount image volume mounts[{i}]"), &e))?;
            mounted.push(record.id.clone());
            mount(
                None::<&str>,
                &target,
                None::<&str>,
                MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
                None::<&str>,
            )
            .map_err(|e| {
                exec_status(
                    &format!("make image volume mounts[{i}] read-only"),
                    &executor::Error::sys(target.display().to_string(), e),
                )
            })?;
        }
        let source = if m.image_sub_path.is_empty() {
            target
        } else {
            let sub = executor::resolve_in_root(&target, &Path::new("/").join(&m.image_sub_path));
            if !sub.is_dir() {
                return Err(Status::invalid_argument(format!(
                    "mounts[{i}].image_sub_path ({:?}): {:?} is not a directory in image {}",
                    m.container_path, m.image_sub_path, record.id
                )));
            }
            sub
        };
        m.host_path = source.to_string_lossy().into_owned();
        out.push(ImageVolume {
            index: i,
            host_path: m.host_path.clone(),
            image_id: record.id.clone(),
        });
    }
    Ok(out)
}

/// Unmount every image volume of a container (idempotent), before its
/// directories are removed: a removal must never walk into an image.
pub fn unmount_image_volumes(host: &Host, id: &str) -> Result<(), Status> {
    let dir = volumes_dir(host, id);
    let entries = match fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(internal(format!("read {}", dir.display()), e)),
    };
    for entry in entries.flatten() {
        let path = entry.path();
        rootfs::unmount(&path).map_err(|e| exec_status("unmount an image volume", &e))?;
        // Still a mount point (stacked twice)? Then leave the directory.
        rootfs::unmount(&path).map_err(|e| exec_status("unmount an image volume", &e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO: &str = "\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
30 22 0:40 / /mnt/shared rw shared:7 - tmpfs none rw
31 22 0:41 / /mnt/slave rw master:7 - tmpfs none rw
32 22 0:42 / /mnt/private rw - tmpfs none rw
33 32 0:43 / /mnt/private rw shared:9 - tmpfs none rw
34 22 0:44 / /mnt/with\\040space rw - tmpfs none rw
";

    #[test]
    fn mount_lookup() {
        let m = |p: &str| mount_of(Path::new(p), MOUNTINFO).unwrap();
        assert_eq!(
            m("/mnt/shared/a/b"),
            ("/mnt/shared".into(), "shared:7".into())
        );
        assert_eq!(m("/mnt/slave"), ("/mnt/slave".into(), "master:7".into()));
        assert_eq!(m("/mnt/sharedx"), ("/".into(), "shared:1".into()));
        // Stacked: the later (upper) one.
        assert_eq!(
            m("/mnt/private/x"),
            ("/mnt/private".into(), "shared:9".into())
        );
        assert_eq!(
            m("/mnt/with space/x"),
            ("/mnt/with space".into(), String::new())
        );
    }

    #[test]
    fn unresolved_tail_is_kept() {
        let p = resolve_existing(Path::new("/proc/self/../nonexistent/x"));
        assert!(p.ends_with("nonexistent/x"), "{}", p.display());
        assert!(!p.to_string_lossy().contains(".."));
    }
}
