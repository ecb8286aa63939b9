//! From a CRI container request to an OCI runtime spec, with the defaults
//! containerd applies (capabilities, masked and read-only paths, mounts,
//! devices, seccomp RuntimeDefault).

use std::path::Path;

use crisp_proto::cri;
use oci_spec::image::ImageConfiguration;

use super::{Error, PodFiles, PodNamespaces, Spec};

/// Everything the spec depends on besides the request itself.
pub struct SpecInput<'a> {
    pub container_id: &'a str,
    pub config: &'a cri::ContainerConfig,
    pub sandbox: &'a cri::PodSandboxConfig,
    pub image: &'a ImageConfiguration,
    /// The mounted root filesystem.
    pub rootfs: &'a Path,
    pub namespaces: &'a PodNamespaces,
    pub files: &'a PodFiles,
    /// The container's cgroup, relative to the cgroup root(s).
    pub cgroup_path: &'a str,
}

/// Build the OCI spec for a container.
pub fn container_spec(input: &SpecInput<'_>) -> Result<Spec, Error> {
    let _ = input;
    Err(Error::new(
        "building container specs is not implemented yet",
    ))
}
