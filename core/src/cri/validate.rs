//! What crisp checks in a RunPodSandbox or CreateContainer request before
//! any host work: the CRI's own rules (a group needs a user), and every
//! field crisp cannot honour, refused with `INVALID_ARGUMENT` naming it
//! rather than ignored.
//!
//! Fields crisp does not act on and does not refuse, and why:
//!
//! * the sandbox's `run_as_user`, `run_as_group`, `supplemental_groups`
//!   (and policy), `readonly_rootfs`, `seccomp`, `apparmor` and
//!   `selinux_options` configure containerd's pause container. crisp's
//!   sandbox holder is crispd itself, running no image code, so there is
//!   nothing to apply them to (the group-needs-a-user rule is still
//!   checked, as containerd does);
//! * `linux.overhead` and `linux.resources` of the sandbox are
//!   informational (containerd records them as annotations);
//! * `windows` settings, on Linux (containerd ignores them too);
//! * AppArmor and SELinux settings on a host without AppArmor or SELinux
//!   (containerd ignores them there too), except a `Localhost` AppArmor
//!   profile, which containerd refuses on such a host; see
//!   [`HostSupport`].
//!
//! `stdin`, `stdin_once` and `tty` are honoured by the container's monitor
//! (a stdin pipe or a pty that attached clients feed), so nothing here
//! checks them.

use crisp_proto::cri;

use crate::grpc::Status;

/// What the host offers that the rules depend on, detected by the
/// frontend at start (`/sys/kernel/security/apparmor`, `/sys/fs/selinux`).
/// crisp applies neither AppArmor profiles nor SELinux labels: where the
/// host has the feature, a request for it is refused; where it lacks it,
/// the request is ignored, as containerd does.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HostSupport {
    pub apparmor: bool,
    pub selinux: bool,
}

fn invalid(field: &str, why: &str) -> Status {
    Status::invalid_argument(format!("{field}: {why}"))
}

fn sandbox_security(config: &cri::PodSandboxConfig) -> Option<&cri::LinuxSandboxSecurityContext> {
    config
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
}

fn container_security(
    config: &cri::ContainerConfig,
) -> Option<&cri::LinuxContainerSecurityContext> {
    config
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
}

/// The CRI's rule that a group needs a user; `user` is whether one is set,
/// `users` says what counts as one.
fn group_needs_user(sc: &str, group: bool, user: bool, users: &str) -> Result<(), Status> {
    if group && !user {
        return Err(invalid(
            &format!("{sc}.run_as_group"),
            &format!("a group is set without {users}"),
        ));
    }
    Ok(())
}

/// RunPodSandbox's config, before the sandbox is made.
pub fn sandbox_config(config: &cri::PodSandboxConfig, host: HostSupport) -> Result<(), Status> {
    let Some(sc) = sandbox_security(config) else {
        return Ok(());
    };
    const SC: &str = "PodSandboxConfig.linux.security_context";
    group_needs_user(
        SC,
        sc.run_as_group.is_some(),
        sc.run_as_user.is_some(),
        "run_as_user",
    )?;
    if let Some(ns) = &sc.namespace_options {
        if ns.pid == cri::NamespaceMode::Target as i32 {
            return Err(invalid(
                &format!("{SC}.namespace_options.pid"),
                "mode TARGET names a container; a pod sandbox has none to join",
            ));
        }
        namespace_options(ns, &format!("{SC}.namespace_options"))?;
    }
    apparmor(sc.apparmor.as_ref(), "", &format!("{SC}.apparmor"), host)?;
    selinux(
        sc.selinux_options.as_ref(),
        &format!("{SC}.selinux_options"),
        host,
    )?;
    supplemental_groups_policy(sc.supplemental_groups_policy, SC)?;
    Ok(())
}

/// CreateContainer's config, before the container is made.
pub fn container_config(config: &cri::ContainerConfig, host: HostSupport) -> Result<(), Status> {
    if cri::Signal::try_from(config.stop_signal).is_err() {
        return Err(invalid(
            "ContainerConfig.stop_signal",
            &format!("{} is not a Signal value", config.stop_signal),
        ));
    }
    if let Some(d) = config.cdi_devices.first() {
        return Err(invalid(
            "ContainerConfig.CDI_devices",
            &format!(
                "crisp does not support CDI devices (asked for {:?})",
                d.name
            ),
        ));
    }
    for (i, d) in config.devices.iter().enumerate() {
        if !d.host_path.starts_with('/') {
            return Err(invalid(
                &format!("ContainerConfig.devices[{i}].host_path"),
                &format!("{:?} is not an absolute path", d.host_path),
            ));
        }
        if !d.permissions.chars().all(|c| matches!(c, 'r' | 'w' | 'm')) {
            return Err(invalid(
                &format!("ContainerConfig.devices[{i}].permissions"),
                &format!("{:?} is not made of r, w and m", d.permissions),
            ));
        }
    }
    // The other mount rules are in `super::mounts`.
    for (i, m) in config.mounts.iter().enumerate() {
        if m.selinux_relabel && host.selinux {
            return Err(invalid(
                &format!("ContainerConfig.mounts[{i}].selinux_relabel"),
                "crisp does not apply SELinux labels",
            ));
        }
    }
    let Some(sc) = container_security(config) else {
        return Ok(());
    };
    const SC: &str = "ContainerConfig.linux.security_context";
    group_needs_user(
        SC,
        sc.run_as_group.is_some(),
        sc.run_as_user.is_some() || !sc.run_as_username.is_empty(),
        "run_as_user or run_as_username",
    )?;
    for (name, id) in [
        ("run_as_user", sc.run_as_user.as_ref().map(|v| v.value)),
        ("run_as_group", sc.run_as_group.as_ref().map(|v| v.value)),
    ] {
        if let Some(id) = id.filter(|id| u32::try_from(*id).is_err()) {
            return Err(invalid(
                &format!("{SC}.{name}"),
                &format!("{id} is not a valid ID"),
            ));
        }
    }
    if let Some(g) = sc
        .supplemental_groups
        .iter()
        .find(|g| u32::try_from(**g).is_err())
    {
        return Err(invalid(
            &format!("{SC}.supplemental_groups"),
            &format!("{g} is not a valid group ID"),
        ));
    }
    supplemental_groups_policy(sc.supplemental_groups_policy, SC)?;
    if let Some(caps) = &sc.capabilities {
        capabilities(caps, &format!("{SC}.capabilities"))?;
    }
    if let Some(ns) = &sc.namespace_options {
        namespace_options(ns, &format!("{SC}.namespace_options"))?;
    }
    #[allow(deprecated)]
    let old_apparmor = sc.apparmor_profile.as_str();
    apparmor(
        sc.apparmor.as_ref(),
        old_apparmor,
        &format!("{SC}.apparmor"),
        host,
    )?;
    selinux(
        sc.selinux_options.as_ref(),
        &format!("{SC}.selinux_options"),
        host,
    )?;
    Ok(())
}

/// A privileged container only in a privileged sandbox (containerd: "no
/// privileged container allowed in sandbox"); kubelet marks the sandbox
/// privileged when any of its containers is.
pub fn privilege(
    config: &cri::ContainerConfig,
    sandbox: &cri::PodSandboxConfig,
) -> Result<(), Status> {
    let ctr = container_security(config).is_some_and(|s| s.privileged);
    let pod = sandbox_security(sandbox).is_some_and(|s| s.privileged);
    if ctr && !pod {
        return Err(invalid(
            "ContainerConfig.linux.security_context.privileged",
            "the pod sandbox is not privileged (its security_context.privileged)",
        ));
    }
    Ok(())
}

/// Linux's capabilities, in number order (`capability.h`, up to 6.x).
const CAPABILITIES: &[&str] = &[
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "LINUX_IMMUTABLE",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_ADMIN",
    "NET_RAW",
    "IPC_LOCK",
    "IPC_OWNER",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_CHROOT",
    "SYS_PTRACE",
    "SYS_PACCT",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_NICE",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "MKNOD",
    "LEASE",
    "AUDIT_WRITE",
    "AUDIT_CONTROL",
    "SETFCAP",
    "MAC_OVERRIDE",
    "MAC_ADMIN",
    "SYSLOG",
    "WAKE_ALARM",
    "BLOCK_SUSPEND",
    "AUDIT_READ",
    "PERFMON",
    "BPF",
    "CHECKPOINT_RESTORE",
];

/// Capability names as kubelet passes them (`NET_ADMIN`, `CAP_NET_ADMIN`,
/// any case; `ALL` to add or drop): an unknown one, dropped, would leave
/// the capability in place without a word.
fn capabilities(caps: &cri::Capability, field: &str) -> Result<(), Status> {
    for (list, names, all_ok) in [
        ("add_capabilities", &caps.add_capabilities, true),
        ("drop_capabilities", &caps.drop_capabilities, true),
        (
            "add_ambient_capabilities",
            &caps.add_ambient_capabilities,
            false,
        ),
    ] {
        for (i, name) in names.iter().enumerate() {
            let upper = name.trim().to_ascii_uppercase();
            let bare = upper.strip_prefix("CAP_").unwrap_or(&upper);
            if !(CAPABILITIES.contains(&bare) || all_ok && upper == "ALL") {
                return Err(invalid(
                    &format!("{field}.{list}[{i}]"),
                    &format!("{name:?} is not a Linux capability"),
                ));
            }
        }
    }
    Ok(())
}

fn supplemental_groups_policy(policy: i32, sc: &str) -> Result<(), Status> {
    if cri::SupplementalGroupsPolicy::try_from(policy).is_err() {
        return Err(invalid(
            &format!("{sc}.supplemental_groups_policy"),
            &format!("{policy} is neither Merge nor Strict"),
        ));
    }
    Ok(())
}

/// User namespaces: only NODE (the host's, as when the option is absent).
/// containerd also refuses mappings with NODE.
fn namespace_options(ns: &cri::NamespaceOption, field: &str) -> Result<(), Status> {
    let Some(userns) = &ns.userns_options else {
        return Ok(());
    };
    let field = format!("{field}.userns_options");
    match cri::NamespaceMode::try_from(userns.mode) {
        Ok(cri::NamespaceMode::Node) => {
            if !userns.uids.is_empty() || !userns.gids.is_empty() {
                return Err(invalid(
                    &field,
                    "uid and gid mappings need mode POD; mode NODE takes none",
                ));
            }
            Ok(())
        }
        Ok(mode) => Err(invalid(
            &format!("{field}.mode"),
            &format!(
                "user namespaces are not supported (mode {}); only NODE, the host's user namespace",
                mode.as_str_name()
            ),
        )),
        Err(_) => Err(invalid(
            &format!("{field}.mode"),
            &format!("{} is not a NamespaceMode", userns.mode),
        )),
    }
}

/// AppArmor: crisp loads no profile. On a host without AppArmor only a
/// `Localhost` profile is refused (containerd: "apparmor is not
/// supported"); on a host with it, anything but `Unconfined` is.
fn apparmor(
    profile: Option<&cri::SecurityProfile>,
    old: &str,
    field: &str,
    host: HostSupport,
) -> Result<(), Status> {
    use cri::security_profile::ProfileType;
    let kind = match profile {
        Some(p) => ProfileType::try_from(p.profile_type).ok(),
        None if old.is_empty() => return Ok(()),
        None if old == "unconfined" => Some(ProfileType::Unconfined),
        None if old == "runtime/default" => Some(ProfileType::RuntimeDefault),
        None => Some(ProfileType::Localhost),
    };
    let refused = match kind {
        None => return Err(invalid(field, "unknown profile type")),
        Some(ProfileType::Unconfined) => false,
        Some(ProfileType::Localhost) => true,
        Some(ProfileType::RuntimeDefault) => host.apparmor,
    };
    if refused {
        let why = if host.apparmor {
            "crisp does not apply AppArmor profiles"
        } else {
            "this host has no AppArmor"
        };
        return Err(invalid(field, why));
    }
    Ok(())
}

/// SELinux: crisp applies no labels; ignored on a host without SELinux.
fn selinux(opt: Option<&cri::SeLinuxOption>, field: &str, host: HostSupport) -> Result<(), Status> {
    let set = opt.is_some_and(|o| {
        !(o.user.is_empty() && o.role.is_empty() && o.r#type.is_empty() && o.level.is_empty())
    });
    if set && host.selinux {
        return Err(invalid(field, "crisp does not apply SELinux labels"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grpc::Code;

    fn ctr(sc: cri::LinuxContainerSecurityContext) -> cri::ContainerConfig {
        cri::ContainerConfig {
            linux: Some(cri::LinuxContainerConfig {
                security_context: Some(sc),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn refused(r: Result<(), Status>, field: &str) {
        let st = r.expect_err("should be refused");
        assert_eq!(st.code, Code::InvalidArgument, "{}", st.message);
        assert!(st.message.contains(field), "{:?} lacks {field}", st.message);
    }

    const NONE: HostSupport = HostSupport {
        apparmor: false,
        selinux: false,
    };

    #[test]
    fn a_group_needs_a_user() {
        let g = Some(cri::Int64Value { value: 1002 });
        let sc = cri::LinuxContainerSecurityContext {
            run_as_group: g,
            ..Default::default()
        };
        refused(container_config(&ctr(sc.clone()), NONE), "run_as_group");
        let with_user = cri::LinuxContainerSecurityContext {
            run_as_user: Some(cri::Int64Value { value: 1 }),
            ..sc.clone()
        };
        container_config(&ctr(with_user), NONE).unwrap();
        let with_name = cri::LinuxContainerSecurityContext {
            run_as_username: "www-data".into(),
            ..sc
        };
        container_config(&ctr(with_name), NONE).unwrap();
        let pod = cri::PodSandboxConfig {
            linux: Some(cri::LinuxPodSandboxConfig {
                security_context: Some(cri::LinuxSandboxSecurityContext {
                    run_as_group: g,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        refused(sandbox_config(&pod, NONE), "run_as_group");
    }

    #[test]
    fn privileged_containers_need_a_privileged_sandbox() {
        let c = ctr(cri::LinuxContainerSecurityContext {
            privileged: true,
            ..Default::default()
        });
        let mut pod = cri::PodSandboxConfig::default();
        refused(privilege(&c, &pod), "security_context.privileged");
        pod.linux = Some(cri::LinuxPodSandboxConfig {
            security_context: Some(cri::LinuxSandboxSecurityContext {
                privileged: true,
                ..Default::default()
            }),
            ..Default::default()
        });
        privilege(&c, &pod).unwrap();
        privilege(&ctr(Default::default()), &pod).unwrap();
    }

    #[test]
    fn capability_names() {
        let caps = |add: &[&str], drop: &[&str]| {
            ctr(cri::LinuxContainerSecurityContext {
                capabilities: Some(cri::Capability {
                    add_capabilities: add.iter().map(|s| s.to_string()).collect(),
                    drop_capabilities: drop.iter().map(|s| s.to_string()).collect(),
                    add_ambient_capabilities: vec![],
                }),
                ..Default::default()
            })
        };
        container_config(
            &caps(&["net_admin", "CAP_SYS_TIME", "ALL"], &["all", "bpf"]),
            NONE,
        )
        .unwrap();
        refused(
            container_config(&caps(&[], &["CHOWN", "CAP_SYSADMIN"]), NONE),
            "drop_capabilities[1]",
        );
        refused(
            container_config(&caps(&["NET_FOO"], &[]), NONE),
            "add_capabilities[0]",
        );
    }

    #[test]
    fn user_namespaces_only_node() {
        let userns = |mode: cri::NamespaceMode, uids: Vec<cri::IdMapping>| {
            ctr(cri::LinuxContainerSecurityContext {
                namespace_options: Some(cri::NamespaceOption {
                    userns_options: Some(cri::UserNamespace {
                        mode: mode as i32,
                        uids,
                        gids: vec![],
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            })
        };
        container_config(&userns(cri::NamespaceMode::Node, vec![]), NONE).unwrap();
        for mode in [
            cri::NamespaceMode::Pod,
            cri::NamespaceMode::Container,
            cri::NamespaceMode::Target,
        ] {
            refused(
                container_config(&userns(mode, vec![]), NONE),
                "userns_options.mode",
            );
        }
        let map = cri::IdMapping {
            host_id: 100000,
            container_id: 0,
            length: 65536,
        };
        refused(
            container_config(&userns(cri::NamespaceMode::Node, vec![map]), NONE),
            "userns_options",
        );
    }

    #[test]
    fn fields_crisp_cannot_honour() {
        let mut c = cri::ContainerConfig {
            stop_signal: 999,
            ..Default::default()
        };
        refused(container_config(&c, NONE), "stop_signal");
        c.stop_signal = cri::Signal::Sigusr1 as i32;
        container_config(&c, NONE).unwrap();
        c.cdi_devices = vec![cri::CdiDevice {
            name: "vendor.com/gpu=0".into(),
        }];
        refused(container_config(&c, NONE), "CDI_devices");
        c.cdi_devices.clear();
        c.mounts = vec![
            cri::Mount::default(),
            cri::Mount {
                selinux_relabel: true,
                ..Default::default()
            },
        ];
        container_config(&c, NONE).unwrap();
        let selinux = HostSupport {
            apparmor: false,
            selinux: true,
        };
        refused(container_config(&c, selinux), "mounts[1].selinux_relabel");
        let sc = cri::LinuxContainerSecurityContext {
            supplemental_groups: vec![-1],
            ..Default::default()
        };
        refused(container_config(&ctr(sc), NONE), "supplemental_groups");
        let sc = cri::LinuxContainerSecurityContext {
            supplemental_groups_policy: 7,
            ..Default::default()
        };
        refused(
            container_config(&ctr(sc), NONE),
            "supplemental_groups_policy",
        );
        let mut c = cri::ContainerConfig {
            devices: vec![cri::Device {
                container_path: "/dev/x".into(),
                host_path: "/dev/null".into(),
                permissions: "rw".into(),
            }],
            ..Default::default()
        };
        container_config(&c, NONE).unwrap();
        c.devices[0].permissions = "rwx".into();
        refused(container_config(&c, NONE), "devices[0].permissions");
        c.devices[0].permissions.clear();
        c.devices[0].host_path = "dev/null".into();
        refused(container_config(&c, NONE), "devices[0].host_path");
    }

    #[test]
    fn apparmor_and_selinux_depend_on_the_host() {
        use cri::security_profile::ProfileType;
        let aa = |t: ProfileType| {
            ctr(cri::LinuxContainerSecurityContext {
                apparmor: Some(cri::SecurityProfile {
                    profile_type: t as i32,
                    localhost_ref: "p".into(),
                }),
                selinux_options: Some(cri::SeLinuxOption {
                    level: "s0:c1,c2".into(),
                    ..Default::default()
                }),
                ..Default::default()
            })
        };
        let both = HostSupport {
            apparmor: true,
            selinux: true,
        };
        let only_aa = HostSupport {
            apparmor: true,
            selinux: false,
        };
        container_config(&aa(ProfileType::RuntimeDefault), NONE).unwrap();
        container_config(&aa(ProfileType::Unconfined), NONE).unwrap();
        refused(
            container_config(&aa(ProfileType::Localhost), NONE),
            "security_context.apparmor",
        );
        refused(
            container_config(&aa(ProfileType::RuntimeDefault), only_aa),
            "security_context.apparmor",
        );
        container_config(&aa(ProfileType::Unconfined), only_aa).unwrap();
        refused(
            container_config(&aa(ProfileType::Unconfined), both),
            "selinux_options",
        );
    }
}
