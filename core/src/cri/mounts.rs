//! The CRI's rules for `ContainerConfig.mounts`, checked before any host
//! work: a request crisp cannot honour is `INVALID_ARGUMENT` naming the
//! field (containerd 2's `WithMounts` and image-volume rules are the
//! reference).
//!
//! * `container_path` is absolute.
//! * A host path mount names its `host_path`; an image volume (`image`
//!   set) names an image, has no `host_path`, is `readonly`, and its
//!   `image_sub_path` is a relative path that stays inside the image.
//! * `recursive_read_only` needs `readonly` and `PROPAGATION_PRIVATE`.
//! * `uidMappings`/`gidMappings` (idmapped mounts) need a user namespace,
//!   which crisp does not create: refused.
//! * `selinux_relabel` is accepted and has no effect: crisp does not drive
//!   SELinux, as containerd on a host without it.

use crisp_proto::cri;

use crate::grpc::Status;

/// Check every mount of a CreateContainer request.
pub fn check_mounts(mounts: &[cri::Mount]) -> Result<(), Status> {
    for (i, m) in mounts.iter().enumerate() {
        check_mount(i, m)?;
    }
    Ok(())
}

fn check_mount(i: usize, m: &cri::Mount) -> Result<(), Status> {
    let bad = |field: &str, why: &str| {
        Err(Status::invalid_argument(format!(
            "mounts[{i}].{field} ({:?}): {why}",
            m.container_path
        )))
    };
    if !m.container_path.starts_with('/') {
        return bad("container_path", "must be an absolute path");
    }
    match &m.image {
        Some(image) => {
            if image.image.is_empty() {
                return bad("image.image", "an image volume must name an image");
            }
            if !m.host_path.is_empty() {
                return bad("host_path", "must be empty for an image volume");
            }
            if !m.readonly {
                return bad("readonly", "an image volume must be read-only");
            }
            if m.image_sub_path.starts_with('/') {
                return bad("image_sub_path", "must be a relative path");
            }
            if m.image_sub_path.split('/').any(|c| c == "..") {
                return bad("image_sub_path", "must not contain '..'");
            }
        }
        None => {
            if m.host_path.is_empty() {
                return bad("host_path", "a mount needs a host path or an image");
            }
            if !m.image_sub_path.is_empty() {
                return bad("image_sub_path", "is only for image volumes");
            }
        }
    }
    if m.recursive_read_only {
        if !m.readonly {
            return bad(
                "recursive_read_only",
                "a recursive read-only mount must also be readonly",
            );
        }
        if m.propagation != cri::MountPropagation::PropagationPrivate as i32 {
            return bad(
                "recursive_read_only",
                "a recursive read-only mount needs PROPAGATION_PRIVATE",
            );
        }
    }
    if !m.uid_mappings.is_empty() {
        return bad(
            "uidMappings",
            "idmapped mounts need a user namespace, which crisp does not support",
        );
    }
    if !m.gid_mappings.is_empty() {
        return bad(
            "gidMappings",
            "idmapped mounts need a user namespace, which crisp does not support",
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(path: &str) -> cri::Mount {
        cri::Mount {
            container_path: "/mnt".into(),
            host_path: path.into(),
            ..Default::default()
        }
    }

    fn refused(m: cri::Mount, field: &str) {
        let st = check_mounts(&[host("/ok"), m]).unwrap_err();
        assert_eq!(st.code, crate::grpc::Code::InvalidArgument);
        assert!(
            st.message.starts_with(&format!("mounts[1].{field} ")),
            "{}",
            st.message
        );
    }

    #[test]
    fn plain_mounts_pass() {
        let mut m = host("/data");
        m.readonly = true;
        m.selinux_relabel = true;
        m.propagation = cri::MountPropagation::PropagationBidirectional as i32;
        assert!(check_mounts(&[m]).is_ok());
        assert!(check_mounts(&[]).is_ok());
    }

    #[test]
    fn recursive_read_only_rules() {
        let mut m = host("/data");
        m.recursive_read_only = true;
        m.readonly = true;
        assert!(check_mounts(&[m.clone()]).is_ok());
        let mut rw = m.clone();
        rw.readonly = false;
        refused(rw, "recursive_read_only");
        for p in [
            cri::MountPropagation::PropagationHostToContainer,
            cri::MountPropagation::PropagationBidirectional,
        ] {
            let mut shared = m.clone();
            shared.propagation = p as i32;
            refused(shared, "recursive_read_only");
        }
    }

    #[test]
    fn image_volume_rules() {
        let image = |r: &str| {
            Some(cri::ImageSpec {
                image: r.into(),
                ..Default::default()
            })
        };
        let ok = cri::Mount {
            container_path: "/vol".into(),
            image: image("busybox"),
            image_sub_path: "etc/ssl".into(),
            readonly: true,
            ..Default::default()
        };
        assert!(check_mounts(std::slice::from_ref(&ok)).is_ok());
        let mut m = ok.clone();
        m.image = image("");
        refused(m, "image.image");
        let mut m = ok.clone();
        m.host_path = "/x".into();
        refused(m, "host_path");
        let mut m = ok.clone();
        m.readonly = false;
        refused(m, "readonly");
        for sub in ["/etc", "../x", "a/../../b", ".."] {
            let mut m = ok.clone();
            m.image_sub_path = sub.into();
            refused(m, "image_sub_path");
        }
        let mut m = host("/x");
        m.image_sub_path = "a".into();
        refused(m, "image_sub_path");
    }

    #[test]
    fn other_refusals() {
        refused(host(""), "host_path");
        let mut m = host("/x");
        m.container_path = "rel".into();
        refused(m, "container_path");
        let mut m = host("/x");
        m.uid_mappings = vec![cri::IdMapping {
            host_id: 1000,
            container_id: 0,
            length: 1,
        }];
        refused(m, "uidMappings");
        let mut m = host("/x");
        m.gid_mappings = vec![cri::IdMapping::default()];
        refused(m, "gidMappings");
    }
}
