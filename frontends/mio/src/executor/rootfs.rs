//! A container's root filesystem: an overlay of the image's unpacked
//! layers with a per-container writable layer.

use std::path::{Path, PathBuf};

use super::Error;

pub struct Overlay {
    /// Image layers, topmost first.
    pub lower: Vec<PathBuf>,
    pub upper: PathBuf,
    pub work: PathBuf,
    pub target: PathBuf,
}

/// Mount the overlay at `o.target` (creating the directories it needs).
pub fn mount_overlay(o: &Overlay) -> Result<(), Error> {
    let _ = o;
    Err(Error::new(
        "mounting root filesystems is not implemented yet",
    ))
}

/// Unmount a container's root filesystem (lazily if busy); idempotent.
pub fn unmount(target: &Path) -> Result<(), Error> {
    let _ = target;
    Ok(())
}
